/* client.h - internal: the client handle and its HTTPS transport (libcurl),
 * shared by the calls (client.c, ops.c) and the watches (watch.c). */
#ifndef FERRY_ETCD_CLIENT_H
#define FERRY_ETCD_CLIENT_H

#include <pthread.h>

#include <curl/curl.h>

#include "codec.h"

/* A pooled easy handle; it keeps its connections alive between calls. */
struct etcd_conn {
	CURL *curl;
	struct etcd_conn *next;
};

struct etcd {
	struct etcd_config cfg;
	pthread_mutex_t lock;      /* guards pool */
	struct etcd_conn *pool;    /* idle handles */
	unsigned preferred;        /* atomic: the endpoint tried first */
	uint64_t cluster_id;       /* atomic: pinned by the first answer */
	int verified[ETCD_ENDPOINTS_MAX]; /* atomic: probed, no failure since */
	char *probe;               /* body of the probe request */
};

/* A response body being received, bounded by cap. */
struct etcd_buf {
	char *data;
	size_t len, cap;
};

/* Set the options every request shares (TLS 1.3 with the cluster CA only,
 * our client certificate, no proxy, https only) on a new easy handle.
 * Thread-safe. */
int etcd_curl_init(const struct etcd *e, CURL *curl, struct ferr *err);

/* A handle from the pool (or a new one), and its return. Thread-safe. */
struct etcd_conn *etcd_conn_get(struct etcd *e, struct ferr *err);
void etcd_conn_put(struct etcd *e, struct etcd_conn *c);

/* POST body (compact JSON text) to `path` on endpoint idx once, within
 * budget_ms. stream: the answer is one {"result": ...} line, unwrapped
 * into *reply. On failure *retry says whether another member may do
 * better (and idx must be probed again). Thread-safe. */
int etcd_attempt(struct etcd *e, struct etcd_conn *c, unsigned idx,
		 const char *path, const char *body, uint64_t budget_ms,
		 bool stream, json_t **reply, bool *retry, struct ferr *err);

/* Make sure endpoint idx is a healthy member of our cluster before it
 * gets a request: unless it answered since its last failure, send it a
 * linearizable read of <prefix>/probe (which needs a quorum) and check
 * the answer's cluster id. 0, or -1 with *err. Thread-safe. */
int etcd_probe(struct etcd *e, struct etcd_conn *c, unsigned idx,
	       uint64_t budget_ms, struct ferr *err);

/* POST body to `path` with fail-over across the endpoints until deadline
 * (0: the config's default); *reply gets the answer (header checked). The
 * body is consumed. Thread-safe. */
int etcd_call(struct etcd *e, const char *path, json_t *body,
	      uint64_t deadline, bool stream, json_t **reply,
	      struct ferr *err);

/* The endpoint after idx becomes preferred, unless another thread moved
 * it already. Thread-safe. */
void etcd_skip_endpoint(struct etcd *e, unsigned idx);

#endif
