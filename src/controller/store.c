/* store.c - the cluster's balancing state: the keys under
 * <prefix>/cluster/ in etcd, mirrored here by a watch so that every
 * controller (and through them ferry ui) sees a change at once; or, with no
 * etcd configured, kept here alone (the mode in STATE_DIR/balancer.mode).
 *
 * Values are JSON objects. The mirror maps each key to {"v": value, "m":
 * mod_revision}; a deleted key stays as a tombstone {"v": null, "m": rev}
 * until the watch has passed that revision, so that a late event never
 * brings an older value back. */
#include "ctl_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODE_FILE "balancer.mode"

/* Lock held. Keep value (stolen) at mod unless the mirror is newer. */
static void cache_put(struct ctl_store *s, const char *key, json_t *value,
		      int64_t mod)
{
	json_t *e = json_object_get(s->kv, key);

	if (e && json_integer_value(json_object_get(e, "m")) >= mod) {
		json_decref(value);
		return;
	}
	json_object_set_new(s->kv, key,
			    json_pack("{s:o?, s:I}", "v", value, "m",
				      (json_int_t)mod));
}

/* Lock held. */
static void cache_prune(struct ctl_store *s, int64_t below)
{
	const char *k;
	json_t *e, *tmp;

	json_object_foreach_safe(s->kv, tmp, k, e)
		if (json_is_null(json_object_get(e, "v")) &&
		    json_integer_value(json_object_get(e, "m")) < below)
			json_object_del(s->kv, k);
}

/* A value from etcd: a JSON object, or NULL (logged) when it is not. */
static json_t *decode(const struct etcd_kv *kv)
{
	struct ferr err;
	json_t *v = json_parse_object((const char *)kv->value, kv->value_len,
				      kv->key, &err);

	if (!v)
		log_warn("controller: etcd key %s ignored: %s", kv->key,
			 err.msg);
	return v;
}

static int on_events(void *arg, const struct etcd_event *ev, size_t n)
{
	struct controller *c = arg;
	struct ctl_store *s = &c->store;
	bool changed = false;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < n; i++) {
		const struct etcd_kv *kv = &ev[i].kv;
		json_t *v = ev[i].type == ETCD_EVENT_PUT ? decode(kv) : NULL;

		if (ev[i].type == ETCD_EVENT_PUT && !v)
			continue;
		cache_put(s, kv->key, v, kv->mod_revision);
		changed = true;
	}
	pthread_mutex_unlock(&s->lock);
	if (changed)
		log_debug("controller: %zu change(s) of the cluster state", n);
	return 0;
}

static void on_ended(void *arg, const struct ferr *why)
{
	struct controller *c = arg;

	log_warn("controller: the watch of the cluster state ended (%s); "
		 "reading it again",
		 why ? why->msg : "stopped");
	pthread_mutex_lock(&c->store.lock);
	c->store.lost = true;
	pthread_mutex_unlock(&c->store.lock);
	ctl_wake(c);
}

int ctl_store_reload(struct controller *c, struct ferr *err)
{
	static const struct etcd_watch_ops ops = { on_events, on_ended };
	struct ctl_store *s = &c->store;
	struct etcd_kvs kvs = { 0 };
	json_t *kv;

	if (!c->etcd)
		return 0;
	etcd_watch_stop(s->watch);
	s->watch = NULL;
	if (etcd_range_prefix(c->etcd, CTL_KEY_CLUSTER, 0, 0, &kvs, err) < 0)
		return -1;
	if (kvs.more) {
		etcd_kvs_clear(&kvs);
		return ferr_set(err, FERR_TOO_LARGE,
				"more than %d keys under %s", ETCD_RANGE_KVS_MAX,
				CTL_KEY_CLUSTER);
	}
	kv = json_object();
	for (size_t i = 0; kv && i < kvs.n; i++) {
		json_t *v = decode(&kvs.kv[i]);

		if (v)
			json_object_set_new(kv, kvs.kv[i].key,
					    json_pack("{s:o, s:I}", "v", v, "m",
						      (json_int_t)kvs.kv[i]
							      .mod_revision));
	}
	if (!kv) {
		etcd_kvs_clear(&kvs);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	pthread_mutex_lock(&s->lock);
	json_decref(s->kv);
	s->kv = kv;
	s->lost = false;
	s->loaded = true;
	pthread_mutex_unlock(&s->lock);
	s->watch = etcd_watch_start(c->etcd, CTL_KEY_CLUSTER, true,
				    kvs.revision + 1, &ops, c, err);
	etcd_kvs_clear(&kvs);
	return s->watch ? 0 : -1;
}

int ctl_store_open(struct controller *c, struct ferr *err)
{
	struct ctl_store *s = &c->store;
	char *text = NULL;
	size_t len = 0;
	struct ferr ignored;

	pthread_mutex_init(&s->lock, NULL);
	s->kv = json_object();
	if (!s->kv)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (c->etcd)
		return 0; /* the controller thread loads it (etcd may be down) */
	if (fmt_checked(s->mode_path, sizeof(s->mode_path), err, "path",
			"%s/%s", c->cfg->state_dir, MODE_FILE) < 0)
		return -1;
	/* a mode set through the API survives restarts */
	if (file_read_all(s->mode_path, 16, &text, &len, &ignored) == 0) {
		if (ctl_mode_parse(text) >= 0)
			cache_put(s, CTL_KEY_MODE,
				  json_pack("{s:s, s:s}", "mode", text, "by",
					    "-"),
				  ++s->local_rev);
		free(text);
	}
	s->loaded = true;
	return 0;
}

void ctl_store_close(struct controller *c)
{
	etcd_watch_stop(c->store.watch);
	c->store.watch = NULL;
	json_decref(c->store.kv);
	c->store.kv = NULL;
	pthread_mutex_destroy(&c->store.lock);
}

json_t *ctl_store_get(struct controller *c, const char *key, int64_t *mod)
{
	struct ctl_store *s = &c->store;
	json_t *e, *v = NULL;

	pthread_mutex_lock(&s->lock);
	e = json_object_get(s->kv, key);
	if (e && !json_is_null(json_object_get(e, "v")))
		v = json_deep_copy(json_object_get(e, "v"));
	if (mod)
		*mod = v ? json_integer_value(json_object_get(e, "m")) : 0;
	pthread_mutex_unlock(&s->lock);
	return v;
}

json_t *ctl_store_list(struct controller *c, const char *prefix)
{
	struct ctl_store *s = &c->store;
	json_t *out = json_object(), *e;
	size_t plen = strlen(prefix);
	const char *k;

	pthread_mutex_lock(&s->lock);
	json_object_foreach(s->kv, k, e)
		if (!strncmp(k, prefix, plen) &&
		    !json_is_null(json_object_get(e, "v")))
			json_object_set_new(out, k + plen, json_deep_copy(e));
	pthread_mutex_unlock(&s->lock);
	return out;
}

/* No etcd: check and apply under the lock. */
static int local_write(struct controller *c, const struct ctl_store_op *ops,
		       size_t n, struct ferr *err)
{
	struct ctl_store *s = &c->store;
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < n && rc == 0; i++) {
		json_t *e = json_object_get(s->kv, ops[i].key);
		int64_t mod = e && !json_is_null(json_object_get(e, "v"))
				      ? json_integer_value(
						json_object_get(e, "m"))
				      : 0;

		if (ops[i].expect_mod >= 0 && ops[i].expect_mod != mod)
			rc = ferr_set(err, FERR_CONFLICT,
				      "%s changed meanwhile", ops[i].key);
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		cache_put(s, ops[i].key, json_deep_copy(ops[i].value),
			  ++s->local_rev);
	cache_prune(s, s->local_rev + 1);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int ctl_store_write(struct controller *c, const struct ctl_store_op *ops,
		    size_t n, bool fenced, struct ferr *err)
{
	struct etcd_cmp cmp[ETCD_TXN_OPS_MAX];
	struct etcd_op op[ETCD_TXN_OPS_MAX];
	struct etcd_op get_leader = { .type = ETCD_OP_GET,
				      .key = CTL_KEY_LEADER };
	struct etcd_txn_result res = { 0 };
	char *text[ETCD_TXN_OPS_MAX] = { 0 };
	size_t ncmp = 0;
	int rc = -1;

	if (n == 0)
		return 0;
	if (n + 1 > ETCD_TXN_OPS_MAX)
		return ferr_set(err, FERR_INVALID, "too many writes at once");
	if (!c->etcd) {
		rc = local_write(c, ops, n, err);
		for (size_t i = 0; rc == 0 && i < n; i++)
			if (!strcmp(ops[i].key, CTL_KEY_MODE) && ops[i].value) {
				const char *m = json_string_value(
					json_object_get(ops[i].value, "mode"));

				rc = file_write_atomic(c->store.mode_path, m,
						       strlen(m), 0600, err);
			}
		return rc;
	}
	if (fenced)
		cmp[ncmp++] = (struct etcd_cmp){ .key = CTL_KEY_LEADER,
						 .target = ETCD_CMP_CREATE,
						 .result = ETCD_EQUAL,
						 .number = c->token };
	for (size_t i = 0; i < n; i++) {
		if (ops[i].expect_mod >= 0)
			cmp[ncmp++] = (struct etcd_cmp){
				.key = ops[i].key,
				.target = ops[i].expect_mod ? ETCD_CMP_MOD
							    : ETCD_CMP_VERSION,
				.result = ETCD_EQUAL,
				.number = ops[i].expect_mod
			};
		op[i] = (struct etcd_op){ .type = ops[i].value ? ETCD_OP_PUT
							       : ETCD_OP_DELETE,
					  .key = ops[i].key };
		if (ops[i].value) {
			text[i] = json_dumps(ops[i].value, JSON_COMPACT);
			if (!text[i]) {
				ferr_set(err, FERR_INTERNAL, "out of memory");
				goto out;
			}
			op[i].value = text[i];
			op[i].value_len = strlen(text[i]);
		}
	}
	if (ncmp > ETCD_TXN_OPS_MAX) {
		ferr_set(err, FERR_INVALID, "too many compares at once");
		goto out;
	}
	if (etcd_txn(c->etcd,
		     &(struct etcd_txn){ .cmp = cmp,
					 .n_cmp = ncmp,
					 .success = op,
					 .n_success = n,
					 .failure = fenced ? &get_leader : NULL,
					 .n_failure = fenced ? 1 : 0 },
		     0, &res, err) < 0)
		goto out;
	if (!res.succeeded) {
		const struct etcd_kvs *l =
			fenced && res.n_ops ? &res.ops[0].kvs : NULL;

		if (l && (l->n == 0 || l->kv[0].create_revision != c->token)) {
			c->deposed = true;
			ferr_set(err, FERR_CONFLICT,
				 "not the leader anymore (token %lld)",
				 (long long)c->token);
		} else {
			ferr_set(err, FERR_CONFLICT,
				 "the cluster state changed meanwhile");
		}
		goto out;
	}
	pthread_mutex_lock(&c->store.lock);
	for (size_t i = 0; i < n; i++)
		cache_put(&c->store, ops[i].key,
			  ops[i].value ? json_deep_copy(ops[i].value) : NULL,
			  res.revision);
	if (c->store.watch)
		cache_prune(&c->store,
			    etcd_watch_next_revision(c->store.watch));
	pthread_mutex_unlock(&c->store.lock);
	rc = 0;
out:
	for (size_t i = 0; i < n; i++)
		free(text[i]);
	etcd_txn_result_clear(&res);
	return rc;
}
