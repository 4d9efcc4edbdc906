/* parse.c - strict checks of the gateway's answers (pure; see codec.h).
 * Every field read is type-, range- and size-checked; fields this client
 * does not read are ignored, so a newer etcd that adds some still works. */
#include "codec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void etcd_kv_clear(struct etcd_kv *kv)
{
	if (!kv)
		return;
	free(kv->key);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

void etcd_kvs_clear(struct etcd_kvs *kvs)
{
	if (!kvs)
		return;
	for (size_t i = 0; i < kvs->n; i++)
		etcd_kv_clear(&kvs->kv[i]);
	free(kvs->kv);
	memset(kvs, 0, sizeof(*kvs));
}

void etcd_txn_result_clear(struct etcd_txn_result *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_ops; i++)
		etcd_kvs_clear(&r->ops[i].kvs);
	free(r->ops);
	memset(r, 0, sizeof(*r));
}

void etcd_watch_msg_clear(struct etcd_watch_msg *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++)
		etcd_kv_clear(&m->ev[i].kv);
	free(m->ev);
	memset(m, 0, sizeof(*m));
}

/* obj[key] as an object (absent: NULL and 0; present but not an object:
 * FERR_IO). */
static int get_obj(const json_t *obj, const char *key, const char *what,
		   json_t **out, struct ferr *err)
{
	json_t *v = json_object_get(obj, key);

	if (v && !json_is_object(v))
		return ferr_set(err, FERR_IO, "%s.%s must be an object", what,
				key);
	*out = v;
	return 0;
}

/* obj[key] as an array of at most max entries (absent: empty). */
static int get_array(const json_t *obj, const char *key, const char *what,
		     size_t max, json_t **out, size_t *n, struct ferr *err)
{
	json_t *v = json_object_get(obj, key);

	if (v && !json_is_array(v))
		return ferr_set(err, FERR_IO, "%s.%s must be an array", what,
				key);
	if (v && json_array_size(v) > max)
		return ferr_set(err, FERR_IO, "%s.%s has more than %zu entries",
				what, key, max);
	*out = v;
	*n = v ? json_array_size(v) : 0;
	return 0;
}

static int get_bool(const json_t *obj, const char *key, const char *what,
		    bool *out, struct ferr *err)
{
	*out = false;
	if (json_get_bool(obj, key, what, out, err) < 0) {
		err->code = FERR_IO;
		return -1;
	}
	return 0;
}

/* obj[key] as a string of at most max bytes (absent: *out unchanged). */
static int get_str(const json_t *obj, const char *key, const char *what,
		   size_t max, const char **out, struct ferr *err)
{
	if (json_get_string(obj, key, what, max, out, err) < 0) {
		err->code = FERR_IO;
		return -1;
	}
	return 0;
}

int etcd_parse_header(const json_t *resp, struct etcd_header *h,
		      struct ferr *err)
{
	struct etcd_header out;
	json_t *hdr = NULL;

	if (!json_is_object(resp))
		return ferr_set(err, FERR_IO, "etcd answer is not an object");
	if (get_obj(resp, "header", "etcd answer", &hdr, err) < 0)
		return -1;
	if (!hdr)
		return ferr_set(err, FERR_IO, "etcd answer has no header");
	if (etcd_json_uint64(hdr, "cluster_id", "header", &out.cluster_id,
			     err) < 0 ||
	    etcd_json_uint64(hdr, "member_id", "header", &out.member_id, err) <
		    0 ||
	    etcd_json_int64(hdr, "revision", "header", 0, &out.revision, err) <
		    0 ||
	    etcd_json_uint64(hdr, "raft_term", "header", &out.raft_term, err) <
		    0)
		return -1;
	if (!out.cluster_id || !out.member_id)
		return ferr_set(err, FERR_IO,
				"etcd answer's header has no cluster or "
				"member id");
	*h = out;
	return 0;
}

/* A base64 key from the server: it must decode to "<prefix>/<valid
 * relative key>" (or an empty relative key when allow_empty). Returns
 * the relative part, malloc'd. */
static char *server_key(const char *b64, size_t len, const char *prefix,
			const char *what, struct ferr *err)
{
	size_t plen = strlen(prefix), n = 0;
	unsigned char *full = NULL;
	struct ferr kerr;
	char *rel = NULL;

	if (etcd_b64_decode(b64, len, ETCD_FULL_KEY_MAX - 1, what, &full, &n,
			    err) < 0)
		return NULL;
	if (n <= plen || memcmp(full, prefix, plen) || full[plen] != '/' ||
	    memchr(full, '\0', n)) {
		ferr_set(err, FERR_IO, "%s is not under the prefix %s", what,
			 prefix);
		goto out;
	}
	if (etcd_key_check((char *)full + plen + 1, false, &kerr) < 0) {
		ferr_set(err, FERR_IO, "%s: %s", what, kerr.msg);
		goto out;
	}
	rel = strdup((char *)full + plen + 1);
	if (!rel)
		ferr_set(err, FERR_INTERNAL, "out of memory");
out:
	free(full);
	return rel;
}

/* The kv of a delete event carries only key and mod_revision. */
static int parse_kv(const json_t *obj, const char *prefix, bool deleted,
		    struct etcd_kv *kv, struct ferr *err)
{
	struct etcd_kv out = { 0 };
	const char *s = NULL;

	if (!json_is_object(obj))
		return ferr_set(err, FERR_IO, "kv must be an object");
	if (get_str(obj, "key", "kv", ETCD_FULL_KEY_MAX / 3 * 4 + 4, &s, err) <
		    0)
		return -1;
	if (!s)
		return ferr_set(err, FERR_IO, "kv.key is missing");
	if (etcd_json_int64(obj, "create_revision", "kv", deleted ? 0 : 1,
			    &out.create_revision, err) < 0 ||
	    etcd_json_int64(obj, "mod_revision", "kv", 1, &out.mod_revision,
			    err) < 0 ||
	    etcd_json_int64(obj, "version", "kv", deleted ? 0 : 1, &out.version,
			    err) < 0 ||
	    etcd_json_int64(obj, "lease", "kv", 0, &out.lease, err) < 0)
		return -1;
	if (out.create_revision > out.mod_revision)
		return ferr_set(err, FERR_IO,
				"kv.create_revision %" PRId64
				" is after its mod_revision %" PRId64,
				out.create_revision, out.mod_revision);
	out.key = server_key(s, strlen(s), prefix, "kv.key", err);
	if (!out.key)
		return -1;
	s = "";
	if (get_str(obj, "value", "kv", ETCD_VALUE_MAX / 3 * 4 + 4, &s, err) <
		    0 ||
	    etcd_b64_decode(s, strlen(s), ETCD_VALUE_MAX, "kv.value",
			    &out.value, &out.value_len, err) < 0)
		goto fail;
	*kv = out;
	return 0;
fail:
	etcd_kv_clear(&out);
	return -1;
}

/* The body of a range answer read at store revision rev. */
static int parse_range_body(const json_t *resp, const char *prefix,
			    int64_t rev, struct etcd_kvs *out,
			    struct ferr *err)
{
	struct etcd_kvs r = { 0 };
	json_t *arr;
	size_t n;

	if (get_array(resp, "kvs", "range", ETCD_RANGE_KVS_MAX, &arr, &n, err) <
		    0 ||
	    etcd_json_int64(resp, "count", "range", 0, &r.count, err) < 0 ||
	    get_bool(resp, "more", "range", &r.more, err) < 0)
		return -1;
	if ((int64_t)n > r.count || (r.more && (int64_t)n == r.count))
		return ferr_set(err, FERR_IO,
				"range: %zu kvs do not fit count %" PRId64
				" (more: %d)", n, r.count, r.more);
	r.revision = rev;
	if (n && !(r.kv = calloc(n, sizeof(*r.kv))))
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	for (; r.n < n; r.n++) {
		struct etcd_kv *kv = &r.kv[r.n];

		if (parse_kv(json_array_get(arr, r.n), prefix, false, kv,
			     err) < 0) {
			ferr_wrap(err, "range: kvs[%zu]", r.n);
			goto fail;
		}
		if (kv->mod_revision > rev ||
		    (r.n && strcmp(r.kv[r.n - 1].key, kv->key) >= 0)) {
			ferr_set(err, FERR_IO,
				 "range: kvs[%zu] out of key order or newer "
				 "than the store", r.n);
			r.n++;
			goto fail;
		}
	}
	*out = r;
	return 0;
fail:
	etcd_kvs_clear(&r);
	return -1;
}

int etcd_parse_range(const json_t *resp, const char *prefix,
		     struct etcd_kvs *out, struct ferr *err)
{
	int64_t rev;

	if (etcd_parse_put(resp, &rev, err) < 0)
		return -1;
	return parse_range_body(resp, prefix, rev, out, err);
}

int etcd_parse_put(const json_t *resp, int64_t *revision, struct ferr *err)
{
	struct etcd_header h;

	if (etcd_parse_header(resp, &h, err) < 0)
		return -1;
	if (h.revision < 1)
		return ferr_set(err, FERR_IO, "put: header.revision missing");
	*revision = h.revision;
	return 0;
}

int etcd_parse_delete(const json_t *resp, int64_t *deleted,
		      int64_t *revision, struct ferr *err)
{
	int64_t d;

	if (etcd_json_int64(resp, "deleted", "delete", 0, &d, err) < 0 ||
	    etcd_parse_put(resp, revision, err) < 0)
		return -1;
	*deleted = d;
	return 0;
}

int etcd_parse_txn(const json_t *resp, const char *prefix,
		   const struct etcd_txn *txn, struct etcd_txn_result *out,
		   struct ferr *err)
{
	static const char *const names[] = { "response_put", "response_range",
					     "response_delete_range" };
	struct etcd_txn_result r = { 0 };
	const struct etcd_op *ops;
	size_t want, n;
	json_t *arr;

	if (etcd_parse_put(resp, &r.revision, err) < 0 ||
	    get_bool(resp, "succeeded", "txn", &r.succeeded, err) < 0 ||
	    get_array(resp, "responses", "txn", ETCD_TXN_OPS_MAX, &arr, &n,
		      err) < 0)
		return -1;
	ops = r.succeeded ? txn->success : txn->failure;
	want = r.succeeded ? txn->n_success : txn->n_failure;
	if (n != want)
		return ferr_set(err, FERR_IO,
				"txn: %zu responses for the %zu ops of its %s "
				"branch", n, want,
				r.succeeded ? "success" : "failure");
	if (n && !(r.ops = calloc(n, sizeof(*r.ops))))
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	for (; r.n_ops < n; r.n_ops++) {
		struct etcd_op_result *o = &r.ops[r.n_ops];
		json_t *e = json_array_get(arr, r.n_ops), *inner = NULL;

		o->type = ops[r.n_ops].type;
		if (o->type > ETCD_OP_DELETE) {
			ferr_set(err, FERR_INVALID, "bad txn op type");
			goto fail;
		}
		if (!json_is_object(e) ||
		    get_obj(e, names[o->type], "txn response", &inner, err) < 0 ||
		    !inner) {
			ferr_set(err, FERR_IO, "txn: responses[%zu] is not a %s",
				 r.n_ops, names[o->type]);
			goto fail;
		}
		/* an empty sub-answer may come as {} (defaults omitted) */
		if ((o->type == ETCD_OP_GET &&
		     parse_range_body(inner, prefix, r.revision, &o->kvs,
				      err) < 0) ||
		    (o->type == ETCD_OP_DELETE &&
		     etcd_json_int64(inner, "deleted", "txn delete", 0,
				     &o->deleted, err) < 0)) {
			ferr_wrap(err, "txn: responses[%zu]", r.n_ops);
			goto fail;
		}
	}
	*out = r;
	return 0;
fail:
	etcd_txn_result_clear(&r);
	return -1;
}

int etcd_parse_lease(const json_t *resp, int64_t id, int64_t *got_id,
		     int64_t *ttl, int64_t *granted, struct ferr *err)
{
	struct etcd_header h;
	int64_t i, t, g;

	if (etcd_parse_header(resp, &h, err) < 0 ||
	    etcd_json_int64(resp, "ID", "lease", 1, &i, err) < 0 ||
	    etcd_json_int64(resp, "TTL", "lease", -1, &t, err) < 0 ||
	    etcd_json_int64(resp, "grantedTTL", "lease", 0, &g, err) < 0)
		return -1;
	if (id && i != id)
		return ferr_set(err, FERR_IO,
				"lease: answer for lease %" PRId64
				" instead of %" PRId64, i, id);
	if (t > ETCD_LEASE_TTL_S_MAX * 2LL || g > ETCD_LEASE_TTL_S_MAX * 2LL)
		return ferr_set(err, FERR_IO, "lease: TTL out of range");
	*got_id = i;
	*ttl = t;
	if (granted)
		*granted = g;
	return 0;
}

/* Copy hostile text (up to slen bytes or a NUL) into a message:
 * printable ASCII, truncated to len - 1 bytes. */
static void clean_text(const char *s, size_t slen, char *out, size_t len)
{
	size_t i = 0;

	for (; i < slen && s[i] && i + 1 < len; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	out[i] = '\0';
}

/* Set *err from a gRPC code and message; *retry for the codes another
 * member may answer differently. */
static int grpc_error(json_int_t code, const char *msg, bool *retry,
		      struct ferr *err)
{
	char text[160];
	enum ferr_code fc;

	clean_text(msg, strlen(msg), text, sizeof(text));
	*retry = false;
	switch (code) {
	case ETCD_GRPC_INVALID_ARGUMENT:
		fc = FERR_INVALID;
		break;
	case ETCD_GRPC_NOT_FOUND:
		fc = FERR_NOT_FOUND;
		break;
	case ETCD_GRPC_PERMISSION_DENIED:
		fc = FERR_FORBIDDEN;
		break;
	case ETCD_GRPC_UNAUTHENTICATED:
		fc = FERR_UNAUTH;
		break;
	case ETCD_GRPC_FAILED_PRECONDITION:
	case ETCD_GRPC_OUT_OF_RANGE:
		fc = FERR_CONFLICT;
		break;
	case ETCD_GRPC_DEADLINE_EXCEEDED:
	case ETCD_GRPC_RESOURCE_EXHAUSTED:
	case ETCD_GRPC_UNAVAILABLE:
		*retry = true;
		/* fall through */
	default:
		fc = FERR_UNAVAILABLE;
	}
	return ferr_set(err, fc, "etcd: %s (gRPC code %lld)", text,
			(long long)code);
}

int etcd_parse_error(long status, const char *body, size_t len, bool *retry,
		     struct ferr *err)
{
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
	json_t *code = json_object_get(root, "code");
	json_t *msg = json_object_get(root, "message");
	char text[64];
	int rc;

	if (json_is_integer(code) && json_is_string(msg)) {
		rc = grpc_error(json_integer_value(code), json_string_value(msg),
				retry, err);
	} else {
		/* not the gateway's error object: a proxy, or not etcd */
		*retry = status >= 500;
		clean_text(body, len, text, sizeof(text));
		rc = ferr_set(err, FERR_UNAVAILABLE,
			      "etcd: HTTP status %ld: %s", status, text);
	}
	json_decref(root);
	return rc;
}

int etcd_stream_result(const json_t *line, json_t **result, bool *retry,
		       struct ferr *err)
{
	json_t *e = json_object_get(line, "error");
	json_t *code, *msg;

	*retry = false;
	if (e) {
		/* grpc-gateway's stream error: {grpc_code, http_code,
		 * message, http_status} */
		code = json_object_get(e, "grpc_code");
		msg = json_object_get(e, "message");
		if (!json_is_integer(code) || !json_is_string(msg))
			return ferr_set(err, FERR_IO,
					"etcd stream: malformed error");
		return grpc_error(json_integer_value(code),
				  json_string_value(msg), retry, err);
	}
	*result = json_object_get(line, "result");
	if (!json_is_object(*result))
		return ferr_set(err, FERR_IO,
				"etcd stream: a line without result or error");
	return 0;
}

int etcd_parse_watch_msg(const char *line, size_t len, const char *prefix,
			 struct etcd_watch_msg *out, bool *retry,
			 struct ferr *err)
{
	struct etcd_watch_msg m = { 0 };
	struct etcd_header h;
	json_t *root, *res = NULL, *arr;
	const char *reason = "";
	size_t n;
	int rc = -1;

	*retry = false;
	if (len > ETCD_WATCH_MSG_MAX)
		return ferr_set(err, FERR_IO, "watch: a line over %d bytes",
				ETCD_WATCH_MSG_MAX);
	root = json_parse_object(line, len, "watch line", err);
	if (!root) {
		err->code = FERR_IO;
		return -1;
	}
	if (etcd_stream_result(root, &res, retry, err) < 0 ||
	    etcd_parse_header(res, &h, err) < 0 ||
	    get_bool(res, "created", "watch", &m.created, err) < 0 ||
	    get_bool(res, "canceled", "watch", &m.canceled, err) < 0 ||
	    etcd_json_int64(res, "compact_revision", "watch", 0,
			    &m.compact_revision, err) < 0 ||
	    get_str(res, "cancel_reason", "watch", 4096, &reason, err) < 0 ||
	    get_array(res, "events", "watch", ETCD_WATCH_EVENTS_MAX, &arr, &n,
		      err) < 0)
		goto out;
	m.revision = h.revision;
	clean_text(reason, strlen(reason), m.reason, sizeof(m.reason));
	if (n && !(m.ev = calloc(n, sizeof(*m.ev)))) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	for (; m.n < n; m.n++) {
		json_t *e = json_array_get(arr, m.n), *kv = NULL;
		const char *type = "PUT";
		struct etcd_event *ev = &m.ev[m.n];

		if (!json_is_object(e) ||
		    get_str(e, "type", "event", 16, &type, err) < 0 ||
		    (strcmp(type, "PUT") && strcmp(type, "DELETE")) ||
		    get_obj(e, "kv", "event", &kv, err) < 0 || !kv) {
			ferr_set(err, FERR_IO, "watch: events[%zu] is malformed",
				 m.n);
			goto out;
		}
		ev->type = type[0] == 'D' ? ETCD_EVENT_DELETE : ETCD_EVENT_PUT;
		if (parse_kv(kv, prefix, ev->type == ETCD_EVENT_DELETE, &ev->kv,
			     err) < 0) {
			ferr_wrap(err, "watch: events[%zu]", m.n);
			goto out;
		}
		if (m.n && ev->kv.mod_revision < m.ev[m.n - 1].kv.mod_revision) {
			ferr_set(err, FERR_IO,
				 "watch: events[%zu] out of revision order",
				 m.n);
			m.n++;
			goto out;
		}
	}
	*out = m;
	memset(&m, 0, sizeof(m));
	rc = 0;
out:
	etcd_watch_msg_clear(&m);
	json_decref(root);
	return rc;
}
