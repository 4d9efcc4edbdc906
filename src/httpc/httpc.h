/* httpc.h - a blocking HTTPS/JSON client over mutual TLS 1.3 (libevent evhttp
 * on an OpenSSL bufferevent, one private event loop per request). Used by the
 * CLI and by ferryd to call its peers.
 */
#ifndef FERRY_HTTPC_H
#define FERRY_HTTPC_H

#include <stdint.h>

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

/* Like httpc_request, but a non-2xx status is -1 with *err built from the
 * reply's error object (its message, and a code from the status). */
int httpc_call(SSL_CTX *ctx, const struct httpc_peer *peer, unsigned timeout_s,
	       const char *method, const char *path, const json_t *body,
	       json_t **reply, struct ferr *err);

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
