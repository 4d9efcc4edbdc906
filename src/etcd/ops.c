/* ops.c - kv, txn and lease calls, and acquire/release built on txn. */
#include "client.h"

#include <inttypes.h>
#include <string.h>

int etcd_put(struct etcd *e, const char *key, const void *value, size_t len,
	     int64_t lease, uint64_t deadline, int64_t *revision,
	     struct ferr *err)
{
	json_t *reply = NULL;
	int64_t rev;
	int rc;

	if (etcd_call(e, ETCD_PATH_PUT,
		      etcd_req_put(e->cfg.prefix, key, value, len, lease, err),
		      deadline, false, &reply, err) < 0)
		return -1;
	rc = etcd_parse_put(reply, &rev, err);
	json_decref(reply);
	if (rc == 0 && revision)
		*revision = rev;
	return rc;
}

/* A range call: key alone, or every key under it. */
static int range(struct etcd *e, const char *key, bool prefix, size_t limit,
		 uint64_t deadline, struct etcd_kvs *out, struct ferr *err)
{
	json_t *reply = NULL;
	int rc;

	if (limit > ETCD_RANGE_KVS_MAX)
		return ferr_set(err, FERR_INVALID, "range limit over %d",
				ETCD_RANGE_KVS_MAX);
	if (etcd_call(e, ETCD_PATH_RANGE,
		      etcd_req_range(e->cfg.prefix, key, prefix,
				     limit ? limit : ETCD_RANGE_KVS_MAX, err),
		      deadline, false, &reply, err) < 0)
		return -1;
	rc = etcd_parse_range(reply, e->cfg.prefix, out, err);
	json_decref(reply);
	return rc;
}

int etcd_get(struct etcd *e, const char *key, uint64_t deadline,
	     struct etcd_kv *kv, bool *found, int64_t *revision,
	     struct ferr *err)
{
	struct etcd_kvs r = { 0 };

	if (range(e, key, false, 0, deadline, &r, err) < 0)
		return -1;
	if (r.n > 1 || (r.n == 1 && strcmp(r.kv[0].key, key))) {
		etcd_kvs_clear(&r);
		return ferr_set(err, FERR_IO, "get %.64s: the answer is for "
				"another key", key);
	}
	*found = r.n == 1;
	if (r.n == 1) {
		*kv = r.kv[0];
		r.n = 0;
	}
	if (revision)
		*revision = r.revision;
	etcd_kvs_clear(&r);
	return 0;
}

int etcd_range_prefix(struct etcd *e, const char *prefix, size_t limit,
		      uint64_t deadline, struct etcd_kvs *out,
		      struct ferr *err)
{
	return range(e, prefix, true, limit, deadline, out, err);
}

int etcd_delete(struct etcd *e, const char *key, bool prefix,
		uint64_t deadline, int64_t *deleted, int64_t *revision,
		struct ferr *err)
{
	json_t *reply = NULL;
	int64_t d, rev;
	int rc;

	if (etcd_call(e, ETCD_PATH_DELETE,
		      etcd_req_delete(e->cfg.prefix, key, prefix, err),
		      deadline, false, &reply, err) < 0)
		return -1;
	rc = etcd_parse_delete(reply, &d, &rev, err);
	json_decref(reply);
	if (rc == 0 && deleted)
		*deleted = d;
	if (rc == 0 && revision)
		*revision = rev;
	return rc;
}

int etcd_txn(struct etcd *e, const struct etcd_txn *txn, uint64_t deadline,
	     struct etcd_txn_result *res, struct ferr *err)
{
	json_t *reply = NULL;
	int rc;

	if (etcd_call(e, ETCD_PATH_TXN, etcd_req_txn(e->cfg.prefix, txn, err),
		      deadline, false, &reply, err) < 0)
		return -1;
	rc = etcd_parse_txn(reply, e->cfg.prefix, txn, res, err);
	json_decref(reply);
	return rc;
}

/* One lease call on path; the answer names lease id (0: any, for grant). */
static int lease_call(struct etcd *e, const char *path, int64_t id,
		      int64_t ttl, bool stream, uint64_t deadline,
		      int64_t *got_id, int64_t *got_ttl, int64_t *granted,
		      struct ferr *err)
{
	json_t *reply = NULL;
	int rc;

	if (etcd_call(e, path, etcd_req_lease(id, ttl, err), deadline, stream,
		      &reply, err) < 0)
		return -1;
	rc = etcd_parse_lease(reply, id, got_id, got_ttl, granted, err);
	json_decref(reply);
	return rc;
}

int etcd_lease_grant(struct etcd *e, int64_t ttl_s, uint64_t deadline,
		     int64_t *id, int64_t *granted_ttl, struct ferr *err)
{
	int64_t got_id, ttl;

	if (ttl_s < 1 || ttl_s > ETCD_LEASE_TTL_S_MAX)
		return ferr_set(err, FERR_INVALID,
				"lease TTL %" PRId64 " s not in 1..%d", ttl_s,
				ETCD_LEASE_TTL_S_MAX);
	if (lease_call(e, ETCD_PATH_LEASE_GRANT, 0, ttl_s, false, deadline,
		       &got_id, &ttl, NULL, err) < 0)
		return -1;
	if (ttl < ttl_s)
		return ferr_set(err, FERR_IO,
				"lease grant: TTL %" PRId64 " s for %" PRId64
				" s asked", ttl, ttl_s);
	*id = got_id;
	if (granted_ttl)
		*granted_ttl = ttl;
	return 0;
}

int etcd_lease_keepalive(struct etcd *e, int64_t id, uint64_t deadline,
			 int64_t *ttl, struct ferr *err)
{
	int64_t got_id, t;

	if (id <= 0)
		return ferr_set(err, FERR_INVALID, "lease id %" PRId64, id);
	if (lease_call(e, ETCD_PATH_LEASE_KEEPALIVE, id, 0, true, deadline,
		       &got_id, &t, NULL, err) < 0)
		return -1;
	/* an expired or revoked lease answers without a TTL */
	if (t <= 0)
		return ferr_set(err, FERR_NOT_FOUND,
				"etcd lease %" PRId64 " has expired", id);
	if (ttl)
		*ttl = t;
	return 0;
}

int etcd_lease_revoke(struct etcd *e, int64_t id, uint64_t deadline,
		      struct ferr *err)
{
	struct ferr e2 = { 0 };
	json_t *reply = NULL;
	struct etcd_header h;
	int rc;

	if (id <= 0)
		return ferr_set(err, FERR_INVALID, "lease id %" PRId64, id);
	if (etcd_call(e, ETCD_PATH_LEASE_REVOKE, etcd_req_lease(id, 0, &e2),
		      deadline, false, &reply, &e2) < 0) {
		if (e2.code == FERR_NOT_FOUND)
			return 0; /* gone already: the outcome we want */
		if (err)
			*err = e2;
		return -1;
	}
	rc = etcd_parse_header(reply, &h, err);
	json_decref(reply);
	return rc;
}

int etcd_lease_ttl(struct etcd *e, int64_t id, uint64_t deadline,
		   int64_t *ttl, int64_t *granted, struct ferr *err)
{
	int64_t got_id, t, g;

	if (id <= 0)
		return ferr_set(err, FERR_INVALID, "lease id %" PRId64, id);
	if (lease_call(e, ETCD_PATH_LEASE_TTL, id, 0, false, deadline, &got_id,
		       &t, &g, err) < 0)
		return -1;
	if (t < 0)
		return ferr_set(err, FERR_NOT_FOUND,
				"etcd lease %" PRId64 " has expired", id);
	*ttl = t;
	if (granted)
		*granted = g;
	return 0;
}

int etcd_acquire(struct etcd *e, const char *key, const void *value,
		 size_t len, int64_t lease, uint64_t deadline,
		 struct etcd_claim *claim, struct ferr *err)
{
	const struct etcd_cmp cmp = { .key = key, .target = ETCD_CMP_CREATE,
				      .result = ETCD_EQUAL, .number = 0 };
	const struct etcd_op put = { .type = ETCD_OP_PUT, .key = key,
				     .value = value, .value_len = len,
				     .lease = lease };
	const struct etcd_op get = { .type = ETCD_OP_GET, .key = key };
	const struct etcd_op success[] = { put, get };
	const struct etcd_txn txn = { &cmp, 1, success, 2, &get, 1 };
	struct etcd_txn_result r = { 0 };
	struct etcd_kvs *kvs;

	if (lease <= 0)
		return ferr_set(err, FERR_INVALID,
				"acquire %.64s: a lease is required", key);
	if (etcd_txn(e, &txn, deadline, &r, err) < 0)
		return -1;
	kvs = &r.ops[r.n_ops - 1].kvs;
	if (kvs->n != 1) {
		/* both branches read the key in the same txn: it exists */
		etcd_txn_result_clear(&r);
		return ferr_set(err, FERR_IO,
				"acquire %.64s: the txn read no key", key);
	}
	memset(claim, 0, sizeof(*claim));
	claim->holder = kvs->kv[0];
	kvs->n = 0;
	claim->won = claim->holder.lease == lease;
	claim->revision = claim->holder.create_revision;
	etcd_txn_result_clear(&r);
	return 0;
}

int etcd_release(struct etcd *e, const char *key, int64_t lease,
		 uint64_t deadline, bool *released, struct ferr *err)
{
	const struct etcd_cmp cmp = { .key = key, .target = ETCD_CMP_LEASE,
				      .result = ETCD_EQUAL, .number = lease };
	const struct etcd_op del = { .type = ETCD_OP_DELETE, .key = key };
	const struct etcd_txn txn = { &cmp, 1, &del, 1, NULL, 0 };
	struct etcd_txn_result r = { 0 };

	if (lease <= 0)
		return ferr_set(err, FERR_INVALID,
				"release %.64s: a lease is required", key);
	if (etcd_txn(e, &txn, deadline, &r, err) < 0)
		return -1;
	if (released)
		*released = r.succeeded && r.ops[0].deleted == 1;
	etcd_txn_result_clear(&r);
	return 0;
}
