/* server.c - HTTPS transport of the API: evhttp over OpenSSL bufferevents
 * with mandatory client certificates.
 *
 * Connections (struct conn): evhttp accepts, and make_bev creates each
 * connection's TLS bufferevent right after accept(); the connection is
 * admitted (counted in the guard against its source and in total, or
 * closed and audited) before any of its bytes is read, and stays counted
 * until its handshake completes. From admission on, a deadline runs: the
 * TLS handshake and the first request must arrive within
 * limits.deadline_s, each later request on the connection within
 * deadline_s of the previous reply. A connection past it is closed and
 * audited (conn.timeout): a slow-loris client holds a descriptor for at
 * most that long, whatever it trickles. All of it runs on the loop's
 * thread. */
#include "api.h"
#include "audit.h"
#include "guard.h"
#include "tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <openssl/crypto.h>

struct conn;

struct api_server {
	struct evhttp *http;
	SSL_CTX *ctx;
	struct api_ctx *actx;
	unsigned deadline_s;
	struct conn *conns;       /* open connections */
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

struct conn {
	struct api_server *s;       /* NULL once the server is gone */
	struct conn *prev, *next;   /* s->conns */
	struct api_ctx *actx;       /* outlives the connection (api.h) */
	struct bufferevent *bev;
	struct event *timer;        /* admission, refusal, then the deadline */
	uint64_t deadline_ms;       /* monotonic; 0: request being handled */
	struct api_hdr_scan scan;
	bool scanning;              /* scan holds the request being read */
	bool admitted, counted, authenticated, refuse_length;
	bool closing;               /* we cut it: its TLS end is no failure */
	char addr[INET6_ADDRSTRLEN];
	char identity[FERRY_NAME_MAX + 1];
};

static int conn_fd(const struct conn *c)
{
	return (int)bufferevent_getfd(c->bev);
}

/* Run the timer at the deadline. */
static void arm(struct conn *c)
{
	uint64_t now = now_ms();
	uint64_t left = c->deadline_ms > now ? c->deadline_ms - now : 0;
	struct timeval tv = { .tv_sec = (time_t)(left / 1000),
			      .tv_usec = (suseconds_t)(left % 1000) * 1000 };

	event_add(c->timer, &tv);
}

/* A new request may start: its deadline runs, its headers are watched. */
static void await_request(struct conn *c)
{
	memset(&c->scan, 0, sizeof(c->scan));
	/* bytes already buffered (a pipelined request) began unwatched */
	c->scanning = evbuffer_get_length(bufferevent_get_input(c->bev)) == 0;
	c->deadline_ms = now_ms() + 1000ull * c->s->deadline_s;
	arm(c);
}

/* Right after accept(): count the connection, or close it. */
static void admit(struct conn *c)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char why[FERRY_ERR_MSG_MAX];
	int fd = conn_fd(c);

	c->admitted = true;
	snprintf(c->addr, sizeof(c->addr), "?");
	if (fd >= 0 && getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET)
			inet_ntop(AF_INET,
				  &((struct sockaddr_in *)&ss)->sin_addr,
				  c->addr, sizeof(c->addr));
		else if (ss.ss_family == AF_INET6)
			inet_ntop(AF_INET6,
				  &((struct sockaddr_in6 *)&ss)->sin6_addr,
				  c->addr, sizeof(c->addr));
	}
	if (!guard_conn_open(c->actx->guard, c->addr, why, sizeof(why))) {
		audit_refused(c->actx->refusals, "conn.limited", c->addr, why);
		c->closing = true;
		shutdown(fd, SHUT_RDWR); /* evhttp frees it on the EOF */
		return;
	}
	c->counted = true;
	await_request(c);
}

/* The deadline passed: close the connection. */
static void expire(struct conn *c)
{
	char why[FERRY_ERR_MSG_MAX];

	if (c->authenticated)
		snprintf(why, sizeof(why),
			 "no complete request within %u s (from %s)",
			 c->s->deadline_s, c->addr);
	else
		snprintf(why, sizeof(why),
			 "no TLS handshake and request within %u s of "
			 "accept",
			 c->s->deadline_s);
	log_info("api: closing a connection from %s: %s", c->addr, why);
	audit_refused(c->actx->refusals, "conn.timeout",
		      c->authenticated ? c->identity : c->addr, why);
	c->closing = true;
	shutdown(conn_fd(c), SHUT_RDWR); /* evhttp frees it on the EOF */
}

/* Answer a request whose Content-Length evhttp would wait on: 400 with
 * our JSON error, on the wire directly (evhttp never hands us that
 * request). The connection then ends at its deadline or when the client
 * closes. */
static void refuse_length(struct conn *c)
{
	struct ferr err;
	json_t *body;
	char *text;

	c->refuse_length = false;
	ferr_set(&err, FERR_INVALID,
		 "Content-Length is larger than 2^63-1: not a valid length");
	audit_refused(c->actx->refusals, "request.refused",
		      c->identity[0] ? c->identity : c->addr, err.msg);
	body = api_error_json(&err);
	text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (text) {
		evbuffer_add_printf(bufferevent_get_output(c->bev),
				    "HTTP/1.1 400 Bad Request\r\n"
				    "Content-Type: application/json\r\n"
				    "Content-Length: %zu\r\n"
				    "Connection: close\r\n\r\n%s\n",
				    strlen(text) + 1, text);
		bufferevent_enable(c->bev, EV_WRITE);
		free(text);
	}
	arm(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (!c->admitted)
		admit(c);
	else if (c->refuse_length)
		refuse_length(c);
	else if (c->deadline_ms)
		expire(c);
}

/* Bytes of the request arrive (before evhttp parses them). */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info,
		     void *arg)
{
	struct conn *c = arg;
	struct evbuffer_iovec v[8];
	struct evbuffer_ptr pos;
	size_t len = evbuffer_get_length(buf);
	int n;

	if (!c->scanning || info->n_added == 0 || info->n_added > len ||
	    evbuffer_ptr_set(buf, &pos, len - info->n_added,
			     EVBUFFER_PTR_SET) < 0)
		return;
	n = evbuffer_peek(buf, (ev_ssize_t)info->n_added, &pos, v, 8);
	for (int i = 0; i < n && i < 8 && c->scanning; i++) {
		if (api_hdr_scan(&c->scan, v[i].iov_base, v[i].iov_len)) {
			/* answered from the loop, not inside this read */
			c->refuse_length = true;
			event_active(c->timer, EV_TIMEOUT, 1);
		}
		if (c->scan.done)
			c->scanning = false;
	}
}

/* TLS hooks (tls.h): authenticated, failed, freed. */
static void conn_done(void *arg)
{
	struct conn *c = arg;
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);

	c->authenticated = true;
	if (tls_peer_identity(ssl, c->identity, sizeof(c->identity)) < 0)
		c->identity[0] = '\0';
	if (c->counted) {
		c->counted = false;
		guard_conn_done(c->actx->guard, c->addr);
	}
}

static void conn_failed(void *arg, const char *why)
{
	struct conn *c = arg;

	if (!c->closing)
		audit_refused(c->actx->refusals, "auth.failed", c->addr, why);
}

static void conn_gone(void *arg)
{
	struct conn *c = arg;

	if (c->counted)
		guard_conn_done(c->actx->guard, c->addr);
	if (c->s) {
		if (c->prev)
			c->prev->next = c->next;
		else
			c->s->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
	}
	if (c->timer)
		event_free(c->timer);
	free(c);
}

static const struct tls_conn_hooks conn_hooks = {
	.done = conn_done, .failed = conn_failed, .gone = conn_gone
};

/* evhttp asks for each new connection's bufferevent right after accept():
 * wrap it in TLS, and admit the connection before its first read. */
static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
	struct api_server *s = arg;
	SSL *ssl = SSL_new(s->ctx);
	struct conn *c = calloc(1, sizeof(*c));
	struct bufferevent *bev = NULL;
	struct ferr err;

	if (!ssl || !c)
		goto fail;
	c->s = s;
	c->actx = s->actx;
	c->timer = evtimer_new(base, on_timer, c);
	if (!c->timer || tls_conn_attach(ssl, &conn_hooks, c, &err) < 0) {
		if (c->timer)
			event_free(c->timer);
		goto fail;
	}
	/* from here on the SSL owns c: conn_gone frees it */
	c->next = s->conns;
	if (c->next)
		c->next->prev = c;
	s->conns = c;
	bev = bufferevent_openssl_socket_new(base, -1, ssl,
					     BUFFEREVENT_SSL_ACCEPTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		SSL_free(ssl);
		return NULL;
	}
	c->bev = bev;
	evbuffer_add_cb(bufferevent_get_input(bev), on_input, c);
	/* runs in this loop pass, after evhttp set the socket on bev and
	 * before the loop polls it */
	event_active(c->timer, EV_TIMEOUT, 1);
	return bev;
fail:
	free(c);
	SSL_free(ssl);
	return NULL;
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
	if (req->route == ROUTE_VM_FW_SET && status < 300)
		/* the VM's own rules now (null: the cluster default) */
		json_object_set(detail, "firewall",
				json_object_get(reply, "firewall")
					?: json_null());
	if (audit_log(s->actx->audit, identity, action,
		      req->vm[0] ? req->vm : "-",
		      status < 300 ? "ok" : "error", detail, &err) < 0) {
		log_error("audit: cannot record %s by %s: %s", action,
			  identity, err.msg);
		return -1;
	}
	return 0;
}

/* The reply to a request went out: the next request may come. */
static void on_replied(struct evhttp_request *r, void *arg)
{
	(void)r;
	await_request(arg);
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
	struct conn *c = tls_conn_get(ssl);
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

	if (c) { /* the request is complete: its deadline is met */
		event_del(c->timer);
		c->deadline_ms = 0;
		c->scanning = false;
		evhttp_request_set_on_complete_cb(r, on_replied, c);
	}
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
	if (!policy_permits(*ctx->policy, identity,
			    tls_peer_is_host(ssl) ? ID_HOST : ID_USER,
			    api_route_perm(req.route), &d)) {
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
	if (req.route == ROUTE_AUDIT_LOG) { /* a read, streamed */
		api_request_clear(&req);
		if (api_audit_log_stream(ctx, r, &err) < 0)
			send_json(r, ferr_http_status(err.code),
				  api_error_json(&err));
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
	s->deadline_s = cfg->limits.deadline_s ? cfg->limits.deadline_s
					       : FERRY_GUARD_DEADLINE_S;
	s->http = evhttp_new(base);
	if (!s->http) {
		free(s);
		return ferr_set(err, FERR_INTERNAL, "evhttp_new failed");
	}
	evhttp_set_bevcb(s->http, make_bev, s);
	evhttp_set_gencb(s->http, on_request, s);
	evhttp_set_max_body_size(s->http, FERRY_API_MAX_BODY);
	/* read and drop an oversized body before answering 413: closing with
	 * unread data would reset the connection and lose the answer (the
	 * deadline bounds the wait) */
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
	/* connections outlive s until libevent finalizes them (as late as
	 * event_base_free): detach them, and free their timers now */
	for (struct conn *c = s->conns; c; c = c->next) {
		event_free(c->timer);
		c->timer = NULL;
		c->s = NULL;
	}
	if (s->http)
		evhttp_free(s->http);
	free(s);
}
