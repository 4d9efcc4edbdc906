/* etcd.h - ferry's one etcd client, shared by checkpoint HA (owner leases,
 * self-fencing) and controller HA (leader election, fencing tokens, cluster
 * state with watches). See docs/etcd.md.
 *
 * Transport: etcd's v3 JSON gateway (POST /v3/...) over HTTPS with mutual
 * TLS 1.3, through libcurl. Why libcurl and not src/httpc: a watch is one
 * long-lived streaming response read line by line as it arrives, which
 * httpc (one buffered reply per request) cannot deliver; libcurl also keeps
 * connections alive between calls (no TLS handshake per lease keepalive),
 * bounds the connect and TLS phase separately from the transfer (a stopped
 * member is skipped after member_timeout_ms), and its multi interface lets
 * another thread wake a blocked watch at once (curl_multi_wakeup).
 *
 * Every call BLOCKS its thread until the answer or its deadline. ferryd's
 * event loop must never call into this component: run it on a worker
 * thread and hand results back to the loop (as the migration drivers do).
 *
 * Keys: every key given to or returned by this API is relative to the
 * configured prefix: "ha/vm/U/owner" is stored as "<prefix>/ha/vm/U/owner".
 * A relative key is 1..ETCD_KEY_MAX printable ASCII bytes (0x21-0x7e) not
 * starting with '/'. Values are bytes (0..ETCD_VALUE_MAX), returned with a
 * NUL after them for convenience.
 *
 * Deadlines: each call takes an absolute deadline on the now_ms() clock;
 * 0 means now_ms() + the config's timeout_ms. Within it the call tries the
 * endpoints in turn (fail-over): a member that refuses, breaks the
 * connection, fails TLS, answers "unavailable" (no leader, timed out) or
 * stays silent for member_timeout_ms is skipped and the next one tried.
 * A call whose connection broke after it was sent may therefore be applied
 * twice: puts, deletes and compare-and-swap transactions (the compares see
 * the first run) are safe; etcd_acquire and etcd_release are written so.
 *
 * Errors (struct ferr): FERR_INVALID (bad argument), FERR_NOT_FOUND (no
 * such lease), FERR_CONFLICT (revision compacted), FERR_TIMEOUT (deadline
 * passed), FERR_UNAVAILABLE (no member answered usefully; the message
 * names the last member's failure), FERR_IO (the answer broke the wire
 * contract: hostile or not etcd).
 *
 * Thread safety: one struct etcd may be used by any number of threads at
 * once (calls share only the endpoint choice and a pool of connections).
 * etcd_close must come after every call and watch on the handle ended.
 */
#ifndef FERRY_ETCD_H
#define FERRY_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "etcd_wire.h"


/* Where and how to reach the cluster. Paths are absolute or relative to
 * the working directory (config.c resolves them). */
struct etcd_config {
	char endpoints[ETCD_ENDPOINTS_MAX][ETCD_URL_MAX]; /* https://IP:PORT */
	unsigned n_endpoints;          /* 0: etcd not configured */
	char ca_file[FERRY_PATH_MAX];  /* CA the members' certificates are from */
	char cert_file[FERRY_PATH_MAX];/* our client certificate and key */
	char key_file[FERRY_PATH_MAX];
	char prefix[ETCD_PREFIX_MAX];  /* "/ferry": '/', then [A-Za-z0-9._/-],
					  no trailing '/' and no "//" */
	unsigned timeout_ms;           /* a call's deadline when it passes 0 */
	unsigned member_timeout_ms;    /* one member: connect, TLS and answer */
	unsigned lease_ttl_s;          /* for the users of leases (HA, election) */
};

/* Fill *cfg with the defaults: no endpoints, ETCD_PREFIX_DEFAULT and the
 * ETCD_*_DEFAULT times. Thread-safe. */
void etcd_config_defaults(struct etcd_config *cfg);

/* Check one endpoint URL: "https://" + numeric IPv4 or [IPv6] + ":" + port
 * 1..65535, nothing else. 0, or -1 with FERR_INVALID saying why.
 * Thread-safe. */
int etcd_endpoint_check(const char *url, struct ferr *err);

/* Check a whole config (endpoints, prefix syntax, times in range, file
 * names set). 0 or -1 with FERR_INVALID naming the field. Thread-safe. */
int etcd_config_check(const struct etcd_config *cfg, struct ferr *err);

struct etcd;

/* Use pem (a private key in PEM, len bytes, copied) instead of reading
 * key_file, for every client whose key file it is: a key kept sealed by
 * the TPM, whose file no longer exists (tls_key_provide in tls.h does the
 * same for ferry's own TLS). One key; a second call replaces it. Call
 * before any client is opened; etcd_keys_clear() wipes and drops it. */
int etcd_key_provide(const char *key_file, const void *pem, size_t len,
		     struct ferr *err);
void etcd_keys_clear(void);

/* A client for cfg (copied). Checks the config and that the CA,
 * certificate and key files are readable (the key unless provided); it
 * connects on first use. NULL with *err on failure. Thread-safe. */
struct etcd *etcd_open(const struct etcd_config *cfg, struct ferr *err);

/* Free the client and its connections. No call or watch may be running on
 * it. NULL is ignored. */
void etcd_close(struct etcd *e);

/* One key-value pair as etcd stores it. key is relative to the prefix. */
struct etcd_kv {
	char *key;               /* NUL-terminated */
	unsigned char *value;    /* value_len bytes, then a NUL */
	size_t value_len;
	int64_t create_revision; /* revision of the key's creation */
	int64_t mod_revision;    /* revision of its last change */
	int64_t version;         /* changes since creation (1 = just made) */
	int64_t lease;           /* lease it is attached to, 0: none */
};

/* A range's result: kvs in key order and the store's revision. */
struct etcd_kvs {
	struct etcd_kv *kv;
	size_t n;
	int64_t count;           /* keys in the range (may exceed n: limit) */
	bool more;               /* limit cut the range */
	int64_t revision;        /* the store's revision when read */
};

/* Free what a kv / kvs owns and zero it. NULL-safe; thread-safe. */
void etcd_kv_clear(struct etcd_kv *kv);
void etcd_kvs_clear(struct etcd_kvs *kvs);

/* Put key=value, attached to lease (0: none). *revision (may be NULL) gets
 * the revision of the write. Thread-safe. */
int etcd_put(struct etcd *e, const char *key, const void *value, size_t len,
	     int64_t lease, uint64_t deadline, int64_t *revision,
	     struct ferr *err);

/* Read one key (linearizable). *found says whether it exists; when it does
 * *kv gets it (caller clears it). *revision (may be NULL) gets the store's
 * revision. Thread-safe. */
int etcd_get(struct etcd *e, const char *key, uint64_t deadline,
	     struct etcd_kv *kv, bool *found, int64_t *revision,
	     struct ferr *err);

/* Read every key that starts with prefix (relative; "" is the whole
 * configured prefix), at most limit of them (0: ETCD_RANGE_KVS_MAX), in key
 * order, into *out (caller clears it). Thread-safe. */
int etcd_range_prefix(struct etcd *e, const char *prefix, size_t limit,
		      uint64_t deadline, struct etcd_kvs *out,
		      struct ferr *err);

/* Delete key (or, with prefix, every key starting with it). *deleted and
 * *revision (either may be NULL) get the count and the revision after.
 * Thread-safe. */
int etcd_delete(struct etcd *e, const char *key, bool prefix,
		uint64_t deadline, int64_t *deleted, int64_t *revision,
		struct ferr *err);

/* Transactions: if every compare holds, run `success`, else `failure`,
 * atomically at one revision. */
enum etcd_cmp_target {
	ETCD_CMP_VERSION,    /* number: the key's version (0: absent) */
	ETCD_CMP_CREATE,     /* number: its create_revision (0: absent) */
	ETCD_CMP_MOD,        /* number: its mod_revision */
	ETCD_CMP_VALUE,      /* value/value_len */
	ETCD_CMP_LEASE,      /* number: its lease (0: none) */
};
enum etcd_cmp_result { ETCD_EQUAL, ETCD_GREATER, ETCD_LESS, ETCD_NOT_EQUAL };

struct etcd_cmp {
	const char *key;
	enum etcd_cmp_target target;
	enum etcd_cmp_result result;
	int64_t number;
	const void *value;
	size_t value_len;
};

enum etcd_op_type { ETCD_OP_PUT, ETCD_OP_GET, ETCD_OP_DELETE };

struct etcd_op {
	enum etcd_op_type type;
	const char *key;
	bool prefix;             /* GET, DELETE: every key starting with key */
	const void *value;       /* PUT */
	size_t value_len;
	int64_t lease;           /* PUT: attach to this lease (0: none) */
};

struct etcd_txn {
	const struct etcd_cmp *cmp;
	size_t n_cmp;            /* each list at most ETCD_TXN_OPS_MAX */
	const struct etcd_op *success;
	size_t n_success;
	const struct etcd_op *failure;
	size_t n_failure;
};

/* One op's result, in the order of the branch that ran. */
struct etcd_op_result {
	enum etcd_op_type type;
	struct etcd_kvs kvs;     /* GET */
	int64_t deleted;         /* DELETE */
};

struct etcd_txn_result {
	bool succeeded;          /* the compares held: `success` ran */
	int64_t revision;        /* the store's revision after the txn */
	struct etcd_op_result *ops;
	size_t n_ops;
};

/* Free a txn result and zero it. NULL-safe; thread-safe. */
void etcd_txn_result_clear(struct etcd_txn_result *r);

/* Run txn; *res gets the outcome (caller clears it). The answer is checked
 * against the request: as many results as the branch has ops, each of the
 * op's type. Thread-safe. */
int etcd_txn(struct etcd *e, const struct etcd_txn *txn, uint64_t deadline,
	     struct etcd_txn_result *res, struct ferr *err);

/* Leases. Ids are int64 and exceed 2^53: keep them in int64_t. */

/* Grant a lease of ttl_s seconds (1..ETCD_LEASE_TTL_S_MAX). *id gets its
 * id, *granted_ttl (may be NULL) the TTL etcd granted (it may round up to
 * its minimum). Thread-safe. */
int etcd_lease_grant(struct etcd *e, int64_t ttl_s, uint64_t deadline,
		     int64_t *id, int64_t *granted_ttl, struct ferr *err);

/* One keepalive round: renew lease id to its full TTL, which *ttl (may be
 * NULL) gets. A lease that expired or was revoked is FERR_NOT_FOUND: its
 * keys are gone, the holder has lost whatever it held. Thread-safe. */
int etcd_lease_keepalive(struct etcd *e, int64_t id, uint64_t deadline,
			 int64_t *ttl, struct ferr *err);

/* Revoke lease id, deleting every key attached to it at once. A lease
 * that is already gone is success (the outcome is the same), so a retried
 * revoke is safe. Thread-safe. */
int etcd_lease_revoke(struct etcd *e, int64_t id, uint64_t deadline,
		      struct ferr *err);

/* Seconds lease id has left (*ttl) and was granted (*granted, may be
 * NULL). A lease that is gone is FERR_NOT_FOUND. Thread-safe. */
int etcd_lease_ttl(struct etcd *e, int64_t id, uint64_t deadline,
		   int64_t *ttl, int64_t *granted, struct ferr *err);

/* Ownership built on txn. */
struct etcd_claim {
	bool won;          /* the key is attached to my lease */
	int64_t revision;  /* the holder's create_revision: its fencing token;
			      it grows with every new holder */
	struct etcd_kv holder; /* the key as it stands (caller clears it) */
};

/* Acquire key for lease if nobody holds it: one txn that puts key=value
 * with the lease when the key does not exist, and reads the key either
 * way. claim->won is true when the key is (now, or already, e.g. after a
 * retried call) attached to lease; otherwise claim->holder is the other
 * holder. claim->revision is the holder's fencing token. Thread-safe. */
int etcd_acquire(struct etcd *e, const char *key, const void *value,
		 size_t len, int64_t lease, uint64_t deadline,
		 struct etcd_claim *claim, struct ferr *err);

/* Delete key only if it is attached to lease (one txn). *released (may be
 * NULL) says whether this call deleted it (false also when a retried
 * call's first run did). Thread-safe. */
int etcd_release(struct etcd *e, const char *key, int64_t lease,
		 uint64_t deadline, bool *released, struct ferr *err);

/* Watches: a thread of their own streams changes of a key or prefix. */
enum etcd_event_type { ETCD_EVENT_PUT, ETCD_EVENT_DELETE };

struct etcd_event {
	enum etcd_event_type type;
	struct etcd_kv kv;   /* DELETE: key and mod_revision only */
};

struct etcd_watch_ops {
	/* Events in revision order, each delivered exactly once even across
	 * reconnects. Return 0 to go on, non-zero to end the watch. The
	 * events are freed when it returns. */
	int (*events)(void *arg, const struct etcd_event *ev, size_t n);
	/* The watch ended by itself (not by etcd_watch_stop): FERR_CONFLICT
	 * when etcd compacted the revision it must resume from (read the
	 * state again and start a new watch), FERR_IO for a message over the
	 * limits, FERR_OK when events() asked to end. Called at most once,
	 * last. May be NULL. */
	void (*ended)(void *arg, const struct ferr *why);
};

struct etcd_watch;

/* Watch key (or every key starting with it when prefix; "" with prefix is
 * the whole configured prefix) from start_revision (0: from now). The
 * callbacks run on the watch's own thread. When the connection drops or
 * the member goes silent (a linearizable probe after ETCD_WATCH_IDLE_MS
 * without data fails) the watch resumes on the next member from the
 * revision after the last event delivered, until stopped. NULL with *err
 * when it cannot start. Thread-safe. */
struct etcd_watch *etcd_watch_start(struct etcd *e, const char *key,
				    bool prefix, int64_t start_revision,
				    const struct etcd_watch_ops *ops,
				    void *arg, struct ferr *err);

/* Stop the watch and free it; returns once its thread has ended, within
 * member_timeout_ms, and no callback runs after. Call it from any thread
 * but the watch's own (its callbacks), also after ended(). NULL is
 * ignored. */
void etcd_watch_stop(struct etcd_watch *w);

/* The revision the watch resumes from (after the last event delivered),
 * and how many connections it has opened. Thread-safe. */
int64_t etcd_watch_next_revision(struct etcd_watch *w);
unsigned etcd_watch_connects(struct etcd_watch *w);

#endif
