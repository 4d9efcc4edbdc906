/* codec.h - internal: the pure half of the etcd client. It builds gateway
 * requests and checks every answer against etcd_wire.h, with no I/O, so
 * unit tests and the fuzz target reach all of it. Every function is
 * thread-safe (no shared state).
 */
#ifndef FERRY_ETCD_CODEC_H
#define FERRY_ETCD_CODEC_H

#include <jansson.h>

#include "etcd.h"

/* A full key: prefix, '/', relative key, NUL. */
#define ETCD_FULL_KEY_MAX (ETCD_PREFIX_MAX + 1 + ETCD_KEY_MAX + 1)

/* Base64 of len bytes (len <= ETCD_VALUE_MAX), malloc'd, NUL-terminated;
 * NULL when out of memory or too long. */
char *etcd_b64_encode(const void *data, size_t len);

/* Decode standard, padded base64 text of slen bytes into a malloc'd buffer
 * (*out, *out_len bytes, then a NUL) of at most max bytes. Anything else
 * (bad length, alphabet or padding) is FERR_IO naming `what`. */
int etcd_b64_decode(const char *s, size_t slen, size_t max, const char *what,
		    unsigned char **out, size_t *out_len, struct ferr *err);

/* Parse decimal text (optional '-', 1..19 digits, no leading zeros) into an
 * int64 of at least min. 0 or -1. */
int etcd_int64_parse(const char *s, int64_t min, int64_t *out);

/* Field key of obj as an int64 sent as a string (the gateway's habit);
 * absent is 0 (defaults are omitted). A number, a real or text out of
 * [min, INT64_MAX] is FERR_IO naming what.key. */
int etcd_json_int64(const json_t *obj, const char *key, const char *what,
		    int64_t min, int64_t *out, struct ferr *err);

/* The same for uint64 fields (cluster and member ids). */
int etcd_json_uint64(const json_t *obj, const char *key, const char *what,
		     uint64_t *out, struct ferr *err);

/* A new JSON string holding v in decimal (NULL when out of memory). */
json_t *etcd_json_int64_new(int64_t v);

/* Check a relative key (see etcd.h); "" only when allow_empty. */
int etcd_key_check(const char *key, bool allow_empty, struct ferr *err);

/* Check a key prefix (see struct etcd_config). */
int etcd_prefix_check(const char *prefix, struct ferr *err);

/* The header every answer carries. */
struct etcd_header {
	uint64_t cluster_id;
	uint64_t member_id;
	int64_t revision;
	uint64_t raft_term;
};

/* Requests: a new JSON body, or NULL with *err. `prefix` is the
 * configured key prefix. */
json_t *etcd_req_range(const char *prefix, const char *key, bool is_prefix,
		       size_t limit, struct ferr *err);
json_t *etcd_req_put(const char *prefix, const char *key, const void *value,
		     size_t len, int64_t lease, struct ferr *err);
json_t *etcd_req_delete(const char *prefix, const char *key, bool is_prefix,
			struct ferr *err);
json_t *etcd_req_txn(const char *prefix, const struct etcd_txn *txn,
		     struct ferr *err);
/* {"ID": id} and, when ttl > 0, "TTL": ttl (lease grant, keepalive,
 * revoke, time-to-live). */
json_t *etcd_req_lease(int64_t id, int64_t ttl, struct ferr *err);
/* A watch's create_request. */
json_t *etcd_req_watch(const char *prefix, const char *key, bool is_prefix,
		       int64_t start_revision, struct ferr *err);

/* Answers. Each checks types, ranges and sizes of every field it reads and
 * fails with FERR_IO naming the field; *out is untouched on failure. Keys
 * must lie under prefix and come back relative to it. */
int etcd_parse_header(const json_t *resp, struct etcd_header *h,
		      struct ferr *err);
int etcd_parse_range(const json_t *resp, const char *prefix,
		     struct etcd_kvs *out, struct ferr *err);
int etcd_parse_put(const json_t *resp, int64_t *revision, struct ferr *err);
int etcd_parse_delete(const json_t *resp, int64_t *deleted,
		      int64_t *revision, struct ferr *err);
/* The answer must match txn: as many results as the branch that ran has
 * ops, each of the op's type. */
int etcd_parse_txn(const json_t *resp, const char *prefix,
		   const struct etcd_txn *txn, struct etcd_txn_result *out,
		   struct ferr *err);
/* Lease answers (grant, keepalive result, time-to-live): the id must be
 * `id` when id != 0; *ttl and *granted (grantedTTL; may be NULL) are
 * absent-as-0 like every default. */
int etcd_parse_lease(const json_t *resp, int64_t id, int64_t *got_id,
		     int64_t *ttl, int64_t *granted, struct ferr *err);

/* A streamed line {"result": R} or {"error": E}: *result borrows R;
 * E becomes -1 with *err from its code and message (*retry as in
 * etcd_parse_error). */
int etcd_stream_result(const json_t *line, json_t **result, bool *retry,
		       struct ferr *err);

/* A non-200 answer (status, body of len bytes): always returns -1 with
 * *err set from the gRPC code and message. *retry says whether another
 * member may succeed (unavailable, no leader, timed out, overloaded). */
int etcd_parse_error(long status, const char *body, size_t len, bool *retry,
		     struct ferr *err);

/* One line of a watch stream. */
struct etcd_watch_msg {
	int64_t revision;        /* header revision */
	bool created;
	bool canceled;
	int64_t compact_revision;
	char reason[128];        /* cancel_reason, truncated */
	struct etcd_event *ev;
	size_t n;
};

/* Parse one watch line (len bytes, no newline). A streamed error is -1
 * with *retry set as in etcd_parse_error. Events must come in revision
 * order. */
int etcd_parse_watch_msg(const char *line, size_t len, const char *prefix,
			 struct etcd_watch_msg *out, bool *retry,
			 struct ferr *err);
void etcd_watch_msg_clear(struct etcd_watch_msg *m);

#endif
