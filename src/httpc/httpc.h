/* httpc.h - an HTTPS/JSON client over mutual TLS 1.3 (libevent evhttp on an
 * OpenSSL bufferevent): asynchronous on the caller's event loop, or blocking
 * on a private loop per request. Used by the CLI, by ferryd to call its
 * peers and by the dashboard (src/ui) to poll every host at once.
 */
#ifndef FERRY_HTTPC_H
#define FERRY_HTTPC_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "common.h"

struct httpc_peer {
	const char *name;    /* for messages; also the expected identity */
	const char *address; /* numeric IP to connect to */
	uint16_t port;
	bool check_name;     /* also require the certificate to name `name` */
	const char *local;   /* connect from this address (NULL: any) */
};

/* One request: method ("GET", "POST", "DELETE"), path with query, body (may
 * be NULL). The server must hold a certificate from ctx's CA for the peer's
 * address (and name when check_name). On a reply, returns 0 with *status and
 * *reply (a JSON object; a non-JSON error page becomes an error object).
 * Connection, TLS and protocol failures are FERR_UNAVAILABLE or
 * FERR_TIMEOUT. */
int httpc_request(SSL_CTX *ctx, const struct httpc_peer *peer,
		  unsigned timeout_s, const char *method, const char *path,
		  const json_t *body, int *status, json_t **reply,
		  struct ferr *err);

/* The end of an asynchronous request: on a reply, status and reply (a new
 * reference the callback owns) with err NULL; on a failure, status 0, reply
 * NULL and err as httpc_request would set it. */
typedef void (*httpc_done_fn)(int status, json_t *reply,
			      const struct ferr *err, void *arg);

/* Start the request of httpc_request on base and return at once: done(arg)
 * is called exactly once, later, from base's loop (connection, TLS and
 * reply within timeout_s each). The connection is freed by an event at the
 * loop's next turn after done, so run base until it has no events left
 * before freeing it. -1 with *err when it could not be started (done is
 * then never called). */
int httpc_start(struct event_base *base, SSL_CTX *ctx,
		const struct httpc_peer *peer, unsigned timeout_s,
		const char *method, const char *path, const json_t *body,
		httpc_done_fn done, void *arg, struct ferr *err);
/* httpc_request that also gives the connection's attestation exporter
 * (tls_exporter, TLS_EXPORTER_LEN bytes) in exporter when not NULL, to
 * bind an attestation nonce to this TLS session. */
int httpc_request_x(SSL_CTX *ctx, const struct httpc_peer *peer,
		    unsigned timeout_s, const char *method, const char *path,
		    const json_t *body, int *status, json_t **reply,
		    unsigned char *exporter, struct ferr *err);

/* A connection kept open for many requests to one peer, one request at a
 * time (HTTP/1.1 keep-alive), so that a poller pays the TLS handshake once
 * rather than once per request. It connects with its first request and
 * again whenever the connection failed or the server closed it; a GET that
 * fails without an answer on a connection that had already served one
 * (the server may have closed it while idle) is sent once more on a new
 * connection. Requests carry no "Connection: close". Loop thread only. */
struct httpc_conn;

struct httpc_conn_stats {
	unsigned long connects; /* TLS connections opened */
	unsigned long requests; /* requests sent */
	unsigned long retries;  /* GETs sent again on a new connection */
};

/* A kept connection to peer (copied) on base; nothing is sent yet. Each
 * request's connection, TLS and reply phases get timeout_s each. NULL with
 * *err when out of memory. */
struct httpc_conn *httpc_conn_new(struct event_base *base, SSL_CTX *ctx,
				  const struct httpc_peer *peer,
				  unsigned timeout_s, struct ferr *err);

/* Start one request on hc, as httpc_start: done(arg) is called exactly
 * once, later, from the loop. FERR_CONFLICT while hc's previous request
 * runs (see httpc_conn_busy); -1 with *err when it could not be started
 * (done is then never called). */
int httpc_conn_start(struct httpc_conn *hc, const char *method,
		     const char *path, const json_t *body, httpc_done_fn done,
		     void *arg, struct ferr *err);

/* Is a request of hc running? */
bool httpc_conn_busy(const struct httpc_conn *hc);

/* Counts since httpc_conn_new. */
void httpc_conn_stats(const struct httpc_conn *hc,
		      struct httpc_conn_stats *out);

/* Close and free hc; a request still running is dropped without its
 * done(). Run the loop until it has no events left before freeing base
 * (closed connections are freed by an event). NULL is fine. */
void httpc_conn_free(struct httpc_conn *hc);

/* Like httpc_request, but a non-2xx status is -1 with *err built from the
 * reply's error object (its message, and a code from the status). */
int httpc_call(SSL_CTX *ctx, const struct httpc_peer *peer, unsigned timeout_s,
	       const char *method, const char *path, const json_t *body,
	       json_t **reply, struct ferr *err);

/* httpc_call with the exporter of httpc_request_x. */
int httpc_call_x(SSL_CTX *ctx, const struct httpc_peer *peer,
		 unsigned timeout_s, const char *method, const char *path,
		 const json_t *body, json_t **reply, unsigned char *exporter,
		 struct ferr *err);
/* GET path (download.c) with an Accept header (may be NULL), writing a 2xx
 * body to fd as it arrives, at most max bytes (else FERR_TOO_LARGE). When
 * header is not NULL, its value in the reply goes to value (vlen bytes,
 * "" when absent). A non-2xx reply is -1 with *err from its error object;
 * a reply cut short is FERR_UNAVAILABLE. timeout_s bounds each wait for
 * the peer, not the whole transfer. */
int httpc_download(SSL_CTX *ctx, const struct httpc_peer *peer,
		   unsigned timeout_s, const char *path, const char *accept,
		   int fd, uint64_t max, const char *header, char *value,
		   size_t vlen, struct ferr *err);

#endif
