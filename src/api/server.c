/* server.c - HTTPS transport of the API: evhttp over OpenSSL bufferevents
 * with mandatory client certificates. */
#include "api.h"
#include "audit.h"
#include "guard.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <openssl/crypto.h>

struct api_server {
	struct evhttp *http;
	SSL_CTX *ctx;
	struct api_ctx *actx;
	struct tls_gate gate;
	struct api_call *pending; /* deferred calls not yet answered */
};

struct api_call {
	struct api_server *s;
	struct evhttp_request *r;
	char identity[FERRY_NAME_MAX + 1];
	const char *action;       /* audit action, or NULL for a read */
	const char *method;
	struct api_request req;
	struct api_call *next;    /* s->pending */
	struct api_call **pprev;
};

/* TLS gate callbacks: the guard counts unauthenticated connections per
 * source; refusals and failed handshakes go to the audit log. */
static bool gate_admit(void *arg, const char *addr, char *why, size_t len)
{
	struct api_ctx *actx = arg;

	return guard_conn_open(actx->guard, addr, why, len);
}

static void gate_release(void *arg, const char *addr)
{
	struct api_ctx *actx = arg;

	guard_conn_done(actx->guard, addr);
}

static void gate_refused(void *arg, const char *addr, bool limited,
			 const char *why)
{
	struct api_ctx *actx = arg;

	audit_refused(actx->refusals, limited ? "conn.limited" : "auth.failed",
		      addr, why);
}

/* evhttp asks for each new connection's bufferevent: wrap it in TLS. */
static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
	struct api_server *s = arg;
	SSL *ssl = SSL_new(s->ctx);

	if (!ssl)
		return NULL;
	return bufferevent_openssl_socket_new(base, -1, ssl,
					      BUFFEREVENT_SSL_ACCEPTING,
					      BEV_OPT_CLOSE_ON_FREE);
}

/* evbuffer clean-up of a reply's text: wiped, then freed. */
static void wipe_free(const void *data, size_t len, void *arg)
{
	(void)arg;
	OPENSSL_cleanse((void *)data, len);
	free((void *)data);
}

/* Send a JSON reply with status. Takes the reference to body. A reply's
 * "key" member is a migration session key: its copies here (the JSON
 * string, the text) are wiped once sent. */
static void send_json(struct evhttp_request *r, int status, json_t *body)
{
	struct evbuffer *out = evbuffer_new();
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	const char *key = json_string_value(json_object_get(body, "key"));

	if (key)
		OPENSSL_cleanse((char *)key, strlen(key));
	evhttp_add_header(evhttp_request_get_output_headers(r),
			  "Content-Type", "application/json");
	if (out && text &&
	    evbuffer_add_reference(out, text, strlen(text), wipe_free,
				   NULL) == 0) {
		text = NULL; /* the buffer frees it */
		evbuffer_add(out, "\n", 1);
	}
	evhttp_send_reply(r, status, NULL, out);
	if (out)
		evbuffer_free(out);
	if (text) {
		OPENSSL_cleanse(text, strlen(text));
		free(text);
	}
	json_decref(body);
}

static const char *method_name(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_OPTIONS:
		return "OPTIONS";
	default:
		return "OTHER";
	}
}

/* Audit a state-changing request and its result. Returns -1 when the
 * record could not be written (the reply must then not acknowledge). */
static int audit_request(struct api_server *s, const char *identity,
			 const struct api_request *req, const char *action,
			 int status, const json_t *reply)
{
	json_t *detail = json_pack("{s:i, s:s}", "status", status,
				   "permission",
				   perm_name(api_route_perm(req->route)));
	const json_t *e = json_object_get(reply, "error");
	struct ferr err;

	if (e)
		json_object_set(detail, "error", json_object_get(e, "message"));
	if (req->force)
		json_object_set_new(detail, "force", json_true());
	if (json_object_get(reply, "id"))
		json_object_set(detail, "migration",
				json_object_get(reply, "id"));
	if (audit_log(s->actx->audit, identity, action,
		      req->vm[0] ? req->vm : "-",
		      status < 300 ? "ok" : "error", detail, &err) < 0) {
		log_error("audit: cannot record %s by %s: %s", action,
			  identity, err.msg);
		return -1;
	}
	return 0;
}

/* Every request lands here: authenticate, rate-limit, parse, authorize,
 * handle, audit, reply. */
static void on_request(struct evhttp_request *r, void *arg)
{
	struct api_server *s = arg;
	struct api_ctx *ctx = s->actx;
	struct evhttp_connection *conn = evhttp_request_get_connection(r);
	struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
	SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
	struct evbuffer *in = evhttp_request_get_input_buffer(r);
	const char *method = method_name(evhttp_request_get_command(r));
	const char *uri = evhttp_request_get_uri(r);
	char identity[FERRY_NAME_MAX + 1], why[FERRY_ERR_MSG_MAX];
	struct policy_decision d;
	struct api_request req;
	struct api_call *call;
	struct ferr err = { 0 }, xerr;
	size_t len = evbuffer_get_length(in);
	const char *action;
	json_t *reply = NULL;
	int status;

	if (tls_peer_identity(ssl, identity, sizeof(identity)) < 0) {
		ferr_set(&err, FERR_UNAUTH,
			 "a valid client certificate is required");
		audit_refused(ctx->refusals, "auth.failed", "?",
			      "request without a verified identity");
		send_json(r, ferr_http_status(err.code), api_error_json(&err));
		return;
	}
	if (!guard_request(ctx->guard, identity, why, sizeof(why))) {
		ferr_set(&err, FERR_RATE, "%s", why);
		audit_refused(ctx->refusals, "rate.limited", identity, why);
		send_json(r, ferr_http_status(err.code), api_error_json(&err));
		return;
	}
	if (api_parse_request(method, uri,
			      len ? (const char *)evbuffer_pullup(in, -1)
				  : NULL,
			      len, &req, &err) < 0) {
		log_info("api: %s %s %s: %s", identity, method, uri, err.msg);
		audit_refused(ctx->refusals, "request.refused", identity,
			      err.msg);
		send_json(r, ferr_http_status(err.code), api_error_json(&err));
		return;
	}
	req.have_exporter = tls_exporter(ssl, req.tls_exporter, &xerr) == 0;
	action = api_route_action(req.route);
	if (!policy_permits(*ctx->policy, identity, api_route_perm(req.route),
			    &d)) {
		struct ferr aerr;

		ferr_set(&err, FERR_FORBIDDEN, "%s", d.reason);
		if (audit_log(ctx->audit, identity, "policy.decision",
			      req.vm[0] ? req.vm : "-", "deny",
			      json_pack("{s:s, s:s, s:s, s:s}", "request",
					action ? action : method, "permission",
					perm_name(api_route_perm(req.route)),
					"rule", d.rule, "reason", d.reason),
			      &aerr) < 0)
			log_error("audit: %s", aerr.msg);
		log_info("api: %s %s %s: denied: %s", identity, method, uri,
			 d.reason);
		api_request_clear(&req);
		send_json(r, ferr_http_status(err.code), api_error_json(&err));
		return;
	}
	call = calloc(1, sizeof(*call));
	if (!call) {
		api_request_clear(&req);
		ferr_set(&err, FERR_INTERNAL, "out of memory");
		send_json(r, ferr_http_status(err.code), api_error_json(&err));
		return;
	}
	call->s = s;
	call->r = r;
	call->action = action;
	call->method = method;
	call->req = req; /* the call owns what req holds now */
	snprintf(call->identity, sizeof(call->identity), "%s", identity);
	status = api_handle(ctx, call, call->identity, &call->req, &reply);
	if (status == API_DEFERRED) {
		call->next = s->pending;
		if (s->pending)
			s->pending->pprev = &call->next;
		call->pprev = &s->pending;
		s->pending = call;
		return;
	}
	api_call_reply(call, status, reply);
}

/* Take a deferred call off the server's pending list. */
static void call_unlink(struct api_call *call)
{
	if (call->pprev) {
		*call->pprev = call->next;
		if (call->next)
			call->next->pprev = call->pprev;
	}
}

void api_call_reply(struct api_call *call, int status, json_t *reply)
{
	struct api_server *s = call->s;
	struct ferr err;

	call_unlink(call);
	if (call->action && audit_request(s, call->identity, &call->req,
					  call->action, status, reply) < 0) {
		json_decref(reply);
		ferr_set(&err, FERR_IO,
			 "the action was carried out but its audit record "
			 "could not be written");
		reply = api_error_json(&err);
		status = ferr_http_status(err.code);
	}
	log_debug("api: %s %s %s -> %d", call->identity, call->method,
		  evhttp_request_get_uri(call->r), status);
	api_request_clear(&call->req);
	send_json(call->r, status, reply);
	free(call);
}

static void free_text(const void *data, size_t len, void *arg)
{
	(void)len;
	(void)arg;
	free((void *)data);
}

void api_call_reply_text(struct api_call *call, const char *content_type,
			 char *text, size_t len)
{
	struct evbuffer *out = evbuffer_new();

	call_unlink(call);
	log_debug("api: %s %s %s -> 200 (%zu bytes)", call->identity,
		  call->method, evhttp_request_get_uri(call->r), len);
	evhttp_add_header(evhttp_request_get_output_headers(call->r),
			  "Content-Type", content_type);
	if (!out ||
	    evbuffer_add_reference(out, text, len, free_text, NULL) < 0) {
		free(text);
		if (out)
			evbuffer_free(out);
		evhttp_send_error(call->r, 500, NULL);
	} else {
		evhttp_send_reply(call->r, 200, NULL, out);
		evbuffer_free(out);
	}
	api_request_clear(&call->req);
	free(call);
}

int api_server_start(struct event_base *base, const struct ferryd_config *cfg,
		     SSL_CTX *ctx, struct api_ctx *actx,
		     struct api_server **out, struct ferr *err)
{
	struct api_server *s = calloc(1, sizeof(*s));

	if (!s)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	s->ctx = ctx;
	s->actx = actx;
	s->gate = (struct tls_gate){ .admit = gate_admit,
				     .release = gate_release,
				     .refused = gate_refused,
				     .arg = actx }; /* outlives s: tls.h */
	if (tls_ctx_set_gate(ctx, &s->gate, err) < 0) {
		free(s);
		return -1;
	}
	s->http = evhttp_new(base);
	if (!s->http) {
		free(s);
		return ferr_set(err, FERR_INTERNAL, "evhttp_new failed");
	}
	evhttp_set_bevcb(s->http, make_bev, s);
	evhttp_set_gencb(s->http, on_request, s);
	evhttp_set_max_body_size(s->http, FERRY_API_MAX_BODY);
	/* read and drop an oversized body before answering 413: closing with
	 * unread data would reset the connection and lose the answer */
	evhttp_set_flags(s->http, EVHTTP_SERVER_LINGERING_CLOSE);
	evhttp_set_max_headers_size(s->http, FERRY_API_MAX_HEADERS);
	evhttp_set_timeout(s->http, FERRY_API_TIMEOUT_S);
	evhttp_set_allowed_methods(s->http,
				   EVHTTP_REQ_GET | EVHTTP_REQ_POST |
					   EVHTTP_REQ_DELETE | EVHTTP_REQ_PUT |
					   EVHTTP_REQ_PATCH |
					   EVHTTP_REQ_OPTIONS);
	if (!evhttp_bind_socket_with_handle(s->http, cfg->listen_addr,
					    cfg->listen_port)) {
		ferr_set(err, FERR_IO, "cannot listen on %s port %u",
			 cfg->listen_addr, (unsigned)cfg->listen_port);
		api_server_free(s);
		return -1;
	}
	log_info("api: listening on https://%s:%u%s/", cfg->listen_addr,
		 (unsigned)cfg->listen_port, API_PREFIX);
	*out = s;
	return 0;
}

void api_server_free(struct api_server *s)
{
	if (!s)
		return;
	/* before evhttp_free, which frees the requests of its connections */
	while (s->pending) {
		struct ferr err;

		ferr_set(&err, FERR_UNAVAILABLE,
			 "ferryd is shutting down; the outcome of this "
			 "request is not known");
		log_error("api: %s %s: unanswered at shutdown",
			  s->pending->identity,
			  evhttp_request_get_uri(s->pending->r));
		api_call_reply(s->pending, ferr_http_status(err.code),
			       api_error_json(&err));
	}
	if (s->http)
		evhttp_free(s->http);
	free(s);
}
