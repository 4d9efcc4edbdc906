/* ui.h - the web dashboard behind `ferry ui` (docs/dashboard.md).
 *
 * A separate process on the operator's machine: it serves the dashboard on
 * a loopback address only, to a browser holding a random one-time token,
 * and reaches every host with the operator's own client certificate, so
 * every action passes the same policy and audit as the CLI's, and a refusal
 * reaches the page verbatim. It opens no other port.
 *
 * One libevent loop does everything: the HTTP server for the browser
 * (server.c), the admission of each request (gate.c: Host, Origin, token),
 * the routes of /api (route.c, pure), a poller that fetches every host at
 * once with asynchronous HTTPS requests, each with a deadline (poll.c), the
 * cluster state the page reads, with its alarms (state.c, alarms.c), and
 * the calls the page makes to hosts (call.c). Static assets are embedded at
 * build time (embed.py generates ui_assets.c from www/).
 */
#ifndef FERRY_UI_H
#define FERRY_UI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define UI_PORT_DEFAULT 8470
#define UI_TOKEN_BYTES 32                      /* random bytes of a token */
#define UI_TOKEN_HEX (UI_TOKEN_BYTES * 2)
#define UI_POLL_MS_DEFAULT 1000
#define UI_REQUEST_TIMEOUT_S 5                 /* one call to a host */
#define UI_BODY_MAX (16 * 1024)                /* a browser request body */
#define UI_HOSTS_MAX 1024
#define UI_SERIES_MAX 300                      /* load samples kept per host */
#define UI_HISTORY_MAX 100                     /* finished migrations shown */
#define UI_HOST_INFO_EVERY 10                  /* rounds between GET /v1/host */

/* A host the dashboard watches (from the operator's client config). */
struct ui_host {
	char name[FERRY_NAME_MAX + 1];
	char address[64]; /* numeric IP */
	uint16_t port;
};

struct ui_config {
	const char *ca, *cert, *key; /* the operator's client credentials */
	const struct ui_host *hosts;
	size_t nhosts;
	const char *controller;      /* the balancer's host name, or NULL */
	const char *listen_address;  /* a loopback address; NULL: 127.0.0.1 */
	uint16_t port;               /* 0: any free port */
	unsigned poll_ms;            /* 0: UI_POLL_MS_DEFAULT */
	unsigned timeout_s;          /* per call to a host; 0: default */
	const char *detector_state;  /* ferry-detect's state.json, or NULL */
};

/* Serve the dashboard until SIGINT or SIGTERM. Once listening, ready(url,
 * arg) is called with the URL that carries the token. Returns 0 after a
 * clean stop (calls in flight end within their deadline), -1 with *err when
 * it cannot start (credentials, address in use, a non-loopback address). */
int ui_run(const struct ui_config *cfg,
	   void (*ready)(const char *url, void *arg), void *arg,
	   struct ferr *err);

/* ---- alarms.c ---- */

/* The alarms of ferry-detect's state file (text, len bytes; hostile: the
 * detection.md format, version 1) as dashboard alarms appended to out:
 * each unexplained migration or untrusted audit log is critical, and a
 * state not updated for UI_DETECTOR_STALE_MS is a warning that the
 * detector is down. A file that does not parse is one warning. */
#define UI_DETECTOR_STALE_MS 30000
void ui_detector_alarms(const char *text, size_t len, uint64_t now_ms,
			json_t *out);

/* ---- gate.c: admission of a browser request (pure) ---- */

/* Is the Host header exactly this server's address:port, or
 * localhost:port? (Refuses DNS rebinding.) */
bool ui_host_ok(const char *host, const char *address, uint16_t port);

/* Is an Origin header absent (NULL, allowed only when !required) or this
 * server's own origin http://address:port or http://localhost:port? */
bool ui_origin_ok(const char *origin, bool required, const char *address,
		  uint16_t port);

/* Does the request carry token (UI_TOKEN_HEX hex digits), compared in
 * constant time: as "Authorization: Bearer TOKEN", or as the cookie
 * cookie_name in a Cookie header? Either header may be NULL. */
bool ui_token_ok(const char *token, const char *cookie_name,
		 const char *cookie_hdr, const char *auth_hdr);

/* Is query (the part after '?', may be NULL) "token=TOKEN" for this token,
 * compared in constant time? */
bool ui_query_token_ok(const char *token, const char *query);

/* ---- route.c: the browser's API (pure) ---- */

enum ui_route_kind {
	UI_R_STATE,      /* GET  /api/state */
	UI_R_CONSOLE,    /* GET  /api/hosts/H/vms/V/console?offset=N */
	UI_R_AUDIT,      /* GET  /api/hosts/H/audit?filters */
	UI_R_VERIFY,     /* GET  /api/hosts/H/audit/verify */
	UI_R_VM_ACTION,  /* POST /api/hosts/H/vms/V/(start|stop|pause|resume) */
	UI_R_MIGRATE,    /* POST /api/hosts/H/vms/V/migrate {"to", "mode"} */
	UI_R_CANCEL,     /* POST /api/hosts/H/migrations/ID/cancel */
	UI_R_DRAIN,      /* POST /api/hosts/H/(drain|undrain) */
	UI_R_BAL_MODE,   /* POST /api/balance/mode {"mode"} */
};

struct ui_route {
	enum ui_route_kind kind;
	bool post;                         /* changes state */
	char host[FERRY_NAME_MAX + 1];
	char vm[FERRY_NAME_MAX + 1];       /* VM name or migration id */
	char verb[16];                     /* start, stop, ..., drain, undrain */
	char query[512];                   /* re-encoded, validated query for
					      the host, "" or "?k=v&..." */
};

/* Parse a browser request (method, path, query or NULL) into *r: names are
 * ferry names, ids are UUIDs, query parameters are known and valid (they
 * are rebuilt, never passed through). FERR_NOT_FOUND for an unknown path,
 * FERR_METHOD for the wrong method, FERR_INVALID for a bad name or
 * parameter. */
int ui_route_parse(const char *method, const char *path, const char *query,
		   struct ui_route *r, struct ferr *err);

#endif
