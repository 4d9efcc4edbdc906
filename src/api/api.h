/* api.h - ferryd's versioned REST/JSON API over mutual TLS.
 *
 * The transport (server.c) is libevent's evhttp over OpenSSL bufferevents:
 * TLS 1.3 only, client certificate required, identity = certificate
 * CN/SAN. Requests are parsed and validated (request.c) before any handler
 * runs; a request that fails validation changes nothing. Errors are
 * {"error": {"code": "...", "message": "..."}} with the matching status.
 * docs/api.md lists every route.
 */
#ifndef FERRY_API_H
#define FERRY_API_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "common.h"
#include "config.h"
#include "policy.h"
#include "tls.h"
#include "vm.h"

#define API_PREFIX "/v1"

enum api_route {
	ROUTE_HOST_INFO,  /* GET    /v1/host */
	ROUTE_VM_LIST,    /* GET    /v1/vms */
	ROUTE_VM_DEFINE,  /* POST   /v1/vms */
	ROUTE_VM_INFO,    /* GET    /v1/vms/NAME */
	ROUTE_VM_DELETE,  /* DELETE /v1/vms/NAME */
	ROUTE_VM_START,   /* POST   /v1/vms/NAME/start */
	ROUTE_VM_STOP,    /* POST   /v1/vms/NAME/stop */
	ROUTE_VM_PAUSE,   /* POST   /v1/vms/NAME/pause */
	ROUTE_VM_RESUME,  /* POST   /v1/vms/NAME/resume */
	ROUTE_VM_CONSOLE, /* GET    /v1/vms/NAME/console?offset=N&limit=N */
	ROUTE_VM_MIGRATE, /* POST   /v1/vms/NAME/migrate */
	ROUTE_MIG_LIST,   /* GET    /v1/migrations */
	ROUTE_MIG_INFO,   /* GET    /v1/migrations/ID */
	ROUTE_MIG_CANCEL, /* POST   /v1/migrations/ID/cancel */
	ROUTE_IN_PREPARE, /* POST   /v1/incoming          (peer hosts) */
	ROUTE_IN_INFO,    /* GET    /v1/incoming/ID       (peer hosts) */
	ROUTE_IN_FINISH,  /* POST   /v1/incoming/ID/finish (peer hosts) */
	ROUTE_IN_ABORT,   /* POST   /v1/incoming/ID/abort  (peer hosts) */
	ROUTE_IN_RECOVER, /* POST   /v1/incoming/ID/recover (peer hosts) */
	ROUTE_IN_LOST,    /* POST   /v1/incoming/ID/lost (peer hosts) */
	ROUTE_AUDIT_QUERY,   /* GET  /v1/audit?since&until&vm&actor&action&limit */
	ROUTE_AUDIT_LOG,     /* GET  /v1/audit/log: the raw log, to verify */
	ROUTE_AUDIT_KEY,     /* GET  /v1/audit/key: the host's public key */
	ROUTE_POLICY_RELOAD, /* POST /v1/policy/reload */
	ROUTE_LOAD,          /* GET  /v1/load: what the balancer polls */
	ROUTE_HOST_DRAIN,    /* POST /v1/host/drain */
	ROUTE_HOST_UNDRAIN,  /* POST /v1/host/undrain */
	ROUTE_BAL_STATUS,    /* GET  /v1/balance (controller mode) */
	ROUTE_BAL_PLAN,      /* GET  /v1/balance/plan */
	ROUTE_BAL_MODE,      /* POST /v1/balance/mode {"mode"} */
	ROUTE_BAL_DRAIN,     /* POST /v1/balance/drain {"host"} */
	ROUTE_BAL_UNDRAIN,   /* POST /v1/balance/undrain {"host"} */
	ROUTE_BAL_DRAINS,    /* GET  /v1/balance/drains: drain reports */
	ROUTE_HA_ENABLE,     /* POST   /v1/vms/NAME/ha {"backup", ...} */
	ROUTE_HA_DISABLE,    /* DELETE /v1/vms/NAME/ha */
	ROUTE_HA_STATUS,     /* GET    /v1/vms/NAME/ha */
	ROUTE_HA_FAILOVER,   /* POST   /v1/vms/NAME/failover */
	ROUTE_HA_LIST,       /* GET    /v1/ha */
	ROUTE_STANDBY_PREPARE, /* POST   /v1/standby        (peer hosts) */
	ROUTE_STANDBY_DISCARD, /* DELETE /v1/standby/UUID   (peer hosts) */
	ROUTE_HA_ADOPT,      /* POST   /v1/ha/adopt         (peer hosts) */
	ROUTE_BAL_PARAMS,    /* POST /v1/balance/params {"params"} */
	ROUTE_HOST_FENCE,    /* POST /v1/host/fence {"fence"}: a leader's token */
	ROUTE_ATTEST_IDENTITY, /* GET  /v1/attest/identity: EK cert, AK */
	ROUTE_ATTEST_QUOTE,    /* POST /v1/attest/quote {"challenge"} */
	ROUTE_ATTEST_ACTIVATE, /* POST /v1/attest/activate {credential,
				  secret} (enrolment) */
	ROUTE_ATTEST_APPROVE,  /* POST /v1/attest/approvals: seal approvals */
	ROUTE_METRICS,         /* GET  /v1/metrics: Prometheus text */
	ROUTE_VM_FW_SHOW,      /* GET  /v1/vms/NAME/firewall */
	ROUTE_VM_FW_SET,       /* POST /v1/vms/NAME/firewall {"firewall"} */
};

/* A validated request. */
struct api_request {
	enum api_route route;
	char vm[FERRY_NAME_MAX + 1]; /* NAME or ID of the route */
	json_t *body;                /* routes whose handler validates an
					object: define, migrate, prepare,
					finish (NULL when empty) */
	bool force;                  /* ROUTE_VM_STOP, ROUTE_VM_RESUME */
	unsigned timeout_s;          /* ROUTE_VM_STOP, graceful */
	uint64_t offset;             /* ROUTE_VM_CONSOLE */
	uint64_t limit;              /* ROUTE_VM_CONSOLE, ROUTE_AUDIT_QUERY */
	uint64_t since, until;       /* ROUTE_AUDIT_QUERY: ms since the epoch */
	char q_vm[FERRY_NAME_MAX + 1];     /* ROUTE_AUDIT_QUERY filters, */
	char q_actor[FERRY_NAME_MAX + 1];  /* empty when absent */
	char q_action[FERRY_NAME_MAX + 1]; /* exact, or a prefix with '*' */
	bool no_hosts;               /* ROUTE_BAL_STATUS ?hosts=0 */
	/* set by the transport, not the parser: the connection's attestation
	 * exporter (tls_exporter), to bind nonces to this TLS session */
	bool have_exporter;
	unsigned char tls_exporter[TLS_EXPORTER_LEN];
};

/* The permission (policy.h) a route requires. */
enum perm api_route_perm(enum api_route r);

/* The audit action of a route that changes state ("vm.start", ...), or
 * NULL for a read. */
const char *api_route_action(enum api_route r);

/* Parse method ("GET", ...), uri (path and query) and body (len bytes, may
 * be NULL when len is 0) into *req. Unknown routes are FERR_NOT_FOUND, a
 * known route with another method is FERR_METHOD, bad names, query
 * parameters and bodies are FERR_INVALID, a body over FERRY_API_MAX_BODY is
 * FERR_TOO_LARGE. Free with api_request_clear. */
int api_parse_request(const char *method, const char *uri, const char *body,
		      size_t len, struct api_request *req, struct ferr *err);

/* Release what a parsed request holds. */
void api_request_clear(struct api_request *req);

/* A watch on one request's header bytes as they arrive (hdrscan.c), for
 * the framing error evhttp 2.1 does not answer: a Content-Length that
 * does not fit in 63 bits, which evhttp saturates and then waits on.
 * Zero it at the start of a request. */
struct api_hdr_scan {
	char line[128];   /* the current line (its start when long) */
	size_t len;
	size_t total;     /* bytes scanned */
	bool long_line;   /* the current line did not fit */
	bool started;     /* the request line is behind */
	bool done;        /* the header block ended (or cannot be judged) */
	bool seen_cl, last_was_cl, overflow;
	bool seen_te, chunked;
};

/* Scan the next n bytes of the request. True once the header block has
 * ended with a Content-Length evhttp would saturate (answer 400). */
bool api_hdr_scan(struct api_hdr_scan *s, const char *p, size_t n);

struct migrator;
struct attest_ops;
struct load;
struct controller;
struct audit;
struct audit_refusals;
struct guard;
struct worker_pool;
struct ha;

/* What the handlers act on. All but the guard and the refusal counter are
 * used on the main thread only. */
struct api_ctx {
	struct vmm *vmm;
	struct migrator *mig;
	struct policy **policy;   /* the policy in force (swapped on reload) */
	const char *policy_path;  /* NULL: no policy configured */
	const char *crl_path;     /* NULL: no revocation list configured */
	const char *ca_path;      /* the cluster CA, which signs the list */
	size_t crl_revoked;       /* certificates the list in force revokes */
	struct audit *audit;
	struct audit_refusals *refusals;
	struct guard *guard;
	struct load *load;
	struct controller *ctl;   /* NULL unless in controller mode */
	struct worker_pool *pool; /* blocking work off the loop */
	struct ha *ha;            /* checkpoint HA */
	const struct attest_ops *attest; /* NULL when attestation is off */
};

/* Load the revocation list from ctx->crl_path (tls_crl_load) for identity
 * ("-" at start and for SIGHUP): the new one replaces the old only when
 * valid. Audited either way (crl.reload). */
int api_crl_reload(struct api_ctx *ctx, const char *identity,
		   struct ferr *err);

/* Reload the policy from ctx->policy_path and the revocation list (when
 * one is configured) for identity ("-" for SIGHUP): each new one replaces
 * the old only when valid, and each is audited either way. The first
 * failure is returned. */
int api_policy_reload(struct api_ctx *ctx, const char *identity,
		      struct ferr *err);

/* One request being answered (server.c). A handler that must wait (for
 * QEMU, a peer, the disk) keeps it and answers later with api_call_reply;
 * the transport stays open until then. */
struct api_call;

/* api_handle's status when the answer comes later through
 * api_call_reply. */
#define API_DEFERRED 0

/* Answer a deferred call with status and reply (taken): audit it when the
 * route changes state, send it, free the call. Loop thread, exactly once
 * per deferred call. */
void api_call_reply(struct api_call *call, int status, json_t *reply);

/* Run a validated request against the host; identity is the caller.
 * Returns the HTTP status and sets *reply (a JSON object), or returns
 * API_DEFERRED after arranging for exactly one api_call_reply(call). */
int api_handle(struct api_ctx *ctx, struct api_call *call,
	       const char *identity, const struct api_request *req,
	       json_t **reply);

/* handlers_ha.c: the HA routes (vm is NULL for the routes that name no
 * VM). Returns a status, API_DEFERRED, or -2 for another route. */
int api_handle_ha(struct api_ctx *ctx, struct api_call *call,
		  const char *identity, const struct api_request *req,
		  struct vm *vm, json_t **reply);

/* handlers_ha.c: POST /v1/vms/NAME/migrate of a VM HA protects here: its
 * protection ends first (ha_migrate), then the migration starts (202). */
int api_ha_migrate(struct api_ctx *ctx, struct api_call *call,
		   const char *identity, const struct api_request *req,
		   struct vm *vm, json_t **reply);

/* Answer a deferred call of a read route with status 200 and text (taken)
 * of content_type instead of JSON. Loop thread, exactly once per call. */
void api_call_reply_text(struct api_call *call, const char *content_type,
			 char *text, size_t len);

/* GET /v1/metrics (scrape.c): gathers what lives on the loop now, renders
 * the Prometheus text on a worker (docs/metrics.md) and answers through
 * api_call_reply_text. API_DEFERRED, or -1 with err (nothing started). */
int api_metrics(struct api_ctx *ctx, struct api_call *call,
		struct ferr *err);

/* The /v1/attest routes (attest.c): *reply on success, -1 with err. They
 * wait for the TPM: handlers run them on a worker thread (thread-safe:
 * they touch only ctx->attest, whose operations are serialized). */
int api_attest(struct api_ctx *ctx, const struct api_request *req,
	       json_t **reply, struct ferr *err);

struct evhttp_request;

/* The media type of GET /v1/audit/log as stored (one record per line). */
#define API_NDJSON "application/x-ndjson"

/* GET /v1/audit/log (stream.c): start a chunked 200 reply with the audit
 * log's series as it is now (audit_series_snapshot), sent piece by piece
 * as the client reads, header Ferry-Audit-Head "SEQ HASH". With
 * "Accept: application/x-ndjson" the body is the log's bytes; otherwise
 * {"head": {"hash", "seq"}, "log": "<the log as a JSON string>"} (bytes
 * that are not UTF-8 arrive as '?'). A read error mid-reply drops the
 * connection, so a cut log never looks complete. -1 (nothing sent) when
 * the snapshot fails. */
int api_audit_log_stream(struct api_ctx *ctx, struct evhttp_request *r,
			 struct ferr *err);

/* The error reply object for err. */
json_t *api_error_json(const struct ferr *err);

struct api_server;

/* Listen on cfg's address and port with mutual TLS from ctx (a server
 * context from tls_server_ctx_new, borrowed), serving actx. actx, its
 * guard and its refusals must outlive base: connections still open at
 * shutdown are freed by event_base_free. */
int api_server_start(struct event_base *base, const struct ferryd_config *cfg,
		     SSL_CTX *ctx, struct api_ctx *actx,
		     struct api_server **out, struct ferr *err);

/* Stop listening, close connections and free the server. Deferred calls
 * still open (their work never ended) are answered 503 first. */
void api_server_free(struct api_server *s);

#endif
