/* httpc.c - HTTPS/JSON requests over mutual TLS (libevent evhttp on an
 * OpenSSL bufferevent): asynchronous on a caller's loop (httpc_start), and
 * blocking on a private loop built on it (httpc_request). */
#include "httpc.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

/* State of one request while it runs. */
struct pending {
	httpc_done_fn done;
	void *arg;
	struct evhttp_connection *conn;
	struct httpc_conn *owner; /* a kept connection's, or NULL */
	enum evhttp_request_error error;
	bool have_error;
	char name[FERRY_NAME_MAX + 1];
	char address[64];
	uint16_t port;
	unsigned char *exporter; /* wanted: filled when the handshake is done
				    (evhttp may reset the TLS session before
				    on_done runs) */
	bool *have_exporter;
};

/* A connection kept open between requests (httpc_conn_*). */
struct httpc_conn {
	struct event_base *base;
	SSL_CTX *ctx;
	char name[FERRY_NAME_MAX + 1];
	char address[64];
	char local[64];          /* "" for any */
	uint16_t port;
	bool check_name;
	unsigned timeout_s;
	struct evhttp_connection *conn; /* NULL: none open */
	bool closed;             /* the server closed it: open a new one */
	unsigned long used;      /* requests answered on conn */
	struct pending *inflight;
	char *retry_path;        /* a GET sent on a used connection */
	struct httpc_conn_stats stats;
};

/* The handshake is done: take the exporter when it is wanted. */
static void on_tls_info(const SSL *ssl, int where, int ret)
{
	struct pending *p = SSL_get_app_data(ssl);
	struct ferr err;

	(void)ret;
	if ((where & SSL_CB_HANDSHAKE_DONE) && p && p->exporter &&
	    !*p->have_exporter)
		*p->have_exporter =
			tls_exporter((SSL *)ssl, p->exporter, &err) == 0;
}

static void on_error(enum evhttp_request_error e, void *arg)
{
	struct pending *p = arg;

	p->error = e;
	p->have_error = true;
}

static const char *request_error_name(enum evhttp_request_error e)
{
	switch (e) {
	case EVREQ_HTTP_TIMEOUT:
		return "timed out";
	case EVREQ_HTTP_EOF:
		return "connection closed";
	case EVREQ_HTTP_INVALID_HEADER:
		return "invalid reply";
	case EVREQ_HTTP_BUFFER_ERROR:
		return "connection failed";
	default:
		return "request failed";
	}
}

/* Overwrite the bytes of buf in place, then drain it. */
static void wipe_buffer(struct evbuffer *buf)
{
	struct evbuffer_iovec v[16];
	int n;

	while ((n = evbuffer_peek(buf, -1, NULL, v, 16)) > 0) {
		size_t done = 0;

		for (int i = 0; i < n && i < 16; i++) {
			OPENSSL_cleanse(v[i].iov_base, v[i].iov_len);
			done += v[i].iov_len;
		}
		evbuffer_drain(buf, done);
	}
}

/* The reply of a finished request: 0 with *status and *reply, or -1. */
static int take_reply(struct pending *p, struct evhttp_request *r,
		      int *status, json_t **reply, struct ferr *err)
{
	struct evbuffer *in;
	size_t len;
	char *body;
	int code = r ? evhttp_request_get_response_code(r) : 0;

	if (code == 0) {
		struct bufferevent *bev =
			evhttp_connection_get_bufferevent(p->conn);
		unsigned long sslerr = bufferevent_get_openssl_error(bev);
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
		char ebuf[256] = "";

		if (sslerr)
			ERR_error_string_n(sslerr, ebuf, sizeof(ebuf));
		/* say why the server's certificate failed (e.g. revoked) */
		if (sslerr && vr != X509_V_OK)
			snprintf(ebuf + strlen(ebuf), sizeof(ebuf) - strlen(ebuf),
				 ": %s", X509_verify_cert_error_string(vr));
		return ferr_set(err,
				p->have_error && p->error == EVREQ_HTTP_TIMEOUT
					? FERR_TIMEOUT
					: FERR_UNAVAILABLE,
				"cannot talk to host %s (%s:%u): %s%s%s",
				p->name, p->address, (unsigned)p->port,
				p->have_error ? request_error_name(p->error)
					      : "no reply",
				ebuf[0] ? ": TLS: " : "", ebuf);
	}
	in = evhttp_request_get_input_buffer(r);
	len = evbuffer_get_length(in);
	if (len > FERRY_API_REPLY_MAX)
		return ferr_set(err, FERR_UNAVAILABLE,
				"host %s sent a reply over %d bytes", p->name,
				FERRY_API_REPLY_MAX);
	body = malloc(len + 1);
	if (!body)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	evbuffer_copyout(in, body, len);
	body[len] = '\0';
	wipe_buffer(in);
	*reply = json_parse_object(body, len, "reply", err);
	/* replies may carry a migration session key: no copy stays behind
	 * (the caller wipes the one in *reply) */
	OPENSSL_cleanse(body, len);
	free(body);
	if (!*reply && code >= 300) {
		/* an error page that is not ours (e.g. from the HTTP layer) */
		*reply = json_pack("{s:{s:s, s:s+}}", "error", "code",
				   "http_error", "message", "HTTP status ",
				   code == 413 ? "413: request too large"
					       : "error");
	}
	if (!*reply)
		return -1;
	*status = code;
	return 0;
}

static void free_conn(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	evhttp_connection_free(arg);
}

/* Free conn at the loop's next turn: evhttp still uses a connection after
 * a request's callback returns (on every path: reply, failure, clean-up). */
static void free_conn_later(struct evhttp_connection *conn)
{
	struct timeval now = { 0, 0 };

	evhttp_connection_set_closecb(conn, NULL, NULL);
	if (event_base_once(evhttp_connection_get_base(conn), -1, EV_TIMEOUT,
			    free_conn, conn, &now) < 0)
		log_error("httpc: a connection could not be freed");
}

static int conn_send(struct httpc_conn *hc, const char *method,
		     const char *path, const json_t *body, httpc_done_fn done,
		     void *arg, struct ferr *err);

/* A kept connection's request ended: keep the connection for the next one,
 * or drop it when it failed. A GET that failed without an answer on a
 * connection that had served requests (the server may have closed it while
 * idle) is sent once more on a new connection. */
static bool owner_done(struct pending *p, bool ok)
{
	struct httpc_conn *hc = p->owner;
	char *path = hc->retry_path;
	struct ferr err;

	hc->inflight = NULL;
	hc->retry_path = NULL;
	if (ok) {
		/* idle until the next request: evhttp would take the read
		 * timeout for a failure and close the connection */
		bufferevent_set_timeouts(
			evhttp_connection_get_bufferevent(hc->conn), NULL,
			NULL);
		hc->used++;
		free(path);
		return false;
	}
	free_conn_later(hc->conn);
	hc->conn = NULL;
	hc->closed = false;
	hc->used = 0;
	if (path && !(p->have_error && p->error == EVREQ_HTTP_TIMEOUT)) {
		hc->stats.retries++;
		if (conn_send(hc, "GET", path, NULL, p->done, p->arg, &err) ==
		    0) {
			free(path);
			return true;
		}
	}
	free(path);
	return false;
}

static void on_done(struct evhttp_request *r, void *arg)
{
	struct pending *p = arg;
	struct ferr err = { 0 };
	json_t *reply = NULL;
	int status = 0;
	int rc = take_reply(p, r, &status, &reply, &err);

	if (p->owner) {
		if (owner_done(p, rc == 0)) {
			free(p); /* sent again: done() comes later */
			return;
		}
	} else {
		free_conn_later(p->conn);
	}
	if (rc < 0)
		p->done(0, NULL, &err, p->arg);
	else
		p->done(status, reply, NULL, p->arg);
	free(p);
}

static enum evhttp_cmd_type method_type(const char *m)
{
	if (!strcmp(m, "POST"))
		return EVHTTP_REQ_POST;
	if (!strcmp(m, "DELETE"))
		return EVHTTP_REQ_DELETE;
	return EVHTTP_REQ_GET;
}

/* A new TLS connection to host on base (not yet connected: evhttp connects
 * with the first request). keep: it will serve several requests;
 * exporter_for: the request that wants the TLS exporter. */
static struct evhttp_connection *conn_open(struct event_base *base,
					   SSL_CTX *ctx,
					   const struct httpc_peer *host,
					   unsigned timeout_s, bool keep,
					   struct pending *exporter_for,
					   struct ferr *err)
{
	struct bufferevent *bev = NULL;
	struct evhttp_connection *conn;
	SSL *ssl = SSL_new(ctx);

	if (!ssl) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	/* an idle kept connection holds no record buffers */
	if (keep)
		SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	if (tls_client_expect(ssl, host->address,
			      host->check_name ? host->name : NULL, err) < 0)
		goto fail;
	if (exporter_for) {
		SSL_set_app_data(ssl, exporter_for);
		SSL_set_info_callback(ssl, on_tls_info);
	}
	bev = bufferevent_openssl_socket_new(base, -1, ssl,
					     BUFFEREVENT_SSL_CONNECTING,
					     BEV_OPT_CLOSE_ON_FREE |
						     BEV_OPT_DEFER_CALLBACKS);
	if (!bev) {
		ferr_set(err, FERR_INTERNAL, "cannot create a TLS connection");
		goto fail;
	}
	ssl = NULL; /* owned by bev */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	conn = evhttp_connection_base_bufferevent_new(base, NULL, bev,
						      host->address,
						      host->port);
	if (!conn) {
		ferr_set(err, FERR_INTERNAL, "cannot create an HTTP connection");
		goto fail;
	}
	if (host->local)
		evhttp_connection_set_local_address(conn, host->local);
	evhttp_connection_set_timeout(conn, (int)timeout_s);
	evhttp_connection_set_max_body_size(conn, FERRY_API_REPLY_MAX);
	return conn;
fail:
	if (bev)
		bufferevent_free(bev);
	SSL_free(ssl);
	return NULL;
}

/* Send one request for p on conn; -1 with *err when it could not be sent
 * (done is then never called and p is the caller's). */
static int send_request(struct evhttp_connection *conn, struct pending *p,
			const char *method, const char *path,
			const json_t *body, bool keep, struct ferr *err)
{
	struct evhttp_request *req = evhttp_request_new(on_done, p);
	struct evkeyvalq *hdrs;
	char hostport[96];
	char *text;

	if (!req)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	evhttp_request_set_error_cb(req, on_error);
	hdrs = evhttp_request_get_output_headers(req);
	snprintf(hostport, sizeof(hostport), "%s:%u", p->address,
		 (unsigned)p->port);
	evhttp_add_header(hdrs, "Host", hostport);
	if (!keep)
		evhttp_add_header(hdrs, "Connection", "close");
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text) {
			evhttp_request_free(req);
			return ferr_set(err, FERR_INTERNAL,
					"cannot encode request");
		}
		evhttp_add_header(hdrs, "Content-Type", "application/json");
		evbuffer_add(evhttp_request_get_output_buffer(req), text,
			     strlen(text));
		free(text);
	}
	/* evhttp owns req from here, even when this fails */
	if (evhttp_make_request(conn, req, method_type(method), path) < 0)
		return ferr_set(err, FERR_UNAVAILABLE,
				"cannot send the request");
	return 0;
}

static struct pending *pending_new(const struct httpc_peer *host,
				   httpc_done_fn done, void *arg)
{
	struct pending *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->done = done;
	p->arg = arg;
	snprintf(p->name, sizeof(p->name), "%s", host->name);
	snprintf(p->address, sizeof(p->address), "%s", host->address);
	p->port = host->port;
	return p;
}

/* httpc_start, with the TLS exporter of the connection into exporter
 * (and *have_exporter set) when exporter is not NULL. */
static int start_x(struct event_base *base, SSL_CTX *ctx,
		   const struct httpc_peer *host, unsigned timeout_s,
		   const char *method, const char *path, const json_t *body,
		   httpc_done_fn done, void *arg, unsigned char *exporter,
		   bool *have_exporter, struct ferr *err)
{
	struct pending *p = pending_new(host, done, arg);

	if (!p)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	p->exporter = exporter;
	p->have_exporter = have_exporter;
	p->conn = conn_open(base, ctx, host, timeout_s, false,
			    exporter ? p : NULL, err);
	if (!p->conn || send_request(p->conn, p, method, path, body, false,
				     err) < 0) {
		if (p->conn)
			evhttp_connection_free(p->conn);
		free(p);
		return -1;
	}
	return 0;
}

int httpc_start(struct event_base *base, SSL_CTX *ctx,
		const struct httpc_peer *host, unsigned timeout_s,
		const char *method, const char *path, const json_t *body,
		httpc_done_fn done, void *arg, struct ferr *err)
{
	return start_x(base, ctx, host, timeout_s, method, path, body, done,
		       arg, NULL, NULL, err);
}

/* ---- kept connections ---- */

static void on_conn_closed(struct evhttp_connection *conn, void *arg)
{
	struct httpc_conn *hc = arg;

	(void)conn;
	hc->closed = true;
}

struct httpc_conn *httpc_conn_new(struct event_base *base, SSL_CTX *ctx,
				  const struct httpc_peer *peer,
				  unsigned timeout_s, struct ferr *err)
{
	struct httpc_conn *hc = calloc(1, sizeof(*hc));

	if (!hc) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	hc->base = base;
	hc->ctx = ctx;
	snprintf(hc->name, sizeof(hc->name), "%s", peer->name);
	snprintf(hc->address, sizeof(hc->address), "%s", peer->address);
	snprintf(hc->local, sizeof(hc->local), "%s",
		 peer->local ? peer->local : "");
	hc->port = peer->port;
	hc->check_name = peer->check_name;
	hc->timeout_s = timeout_s;
	return hc;
}

static int conn_send(struct httpc_conn *hc, const char *method,
		     const char *path, const json_t *body, httpc_done_fn done,
		     void *arg, struct ferr *err)
{
	struct httpc_peer peer = { .name = hc->name,
				   .address = hc->address,
				   .port = hc->port,
				   .check_name = hc->check_name,
				   .local = hc->local[0] ? hc->local : NULL };
	struct pending *p = pending_new(&peer, done, arg);

	if (!p)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (hc->conn && hc->closed) {
		free_conn_later(hc->conn);
		hc->conn = NULL;
	}
	if (!hc->conn) {
		hc->conn = conn_open(hc->base, hc->ctx, &peer, hc->timeout_s,
				     true, NULL, err);
		if (!hc->conn) {
			free(p);
			return -1;
		}
		evhttp_connection_set_closecb(hc->conn, on_conn_closed, hc);
		hc->closed = false;
		hc->used = 0;
		hc->stats.connects++;
	}
	if (hc->used && !body && !strcmp(method, "GET")) {
		hc->retry_path = strdup(path);
		if (!hc->retry_path) {
			free(p);
			return ferr_set(err, FERR_INTERNAL, "out of memory");
		}
	}
	if (hc->used) {
		struct timeval tv = { (time_t)hc->timeout_s, 0 };

		bufferevent_set_timeouts(
			evhttp_connection_get_bufferevent(hc->conn), &tv, &tv);
	}
	p->conn = hc->conn;
	p->owner = hc;
	if (send_request(hc->conn, p, method, path, body, true, err) < 0) {
		free(hc->retry_path);
		hc->retry_path = NULL;
		free_conn_later(hc->conn);
		hc->conn = NULL;
		free(p);
		return -1;
	}
	hc->inflight = p;
	hc->stats.requests++;
	return 0;
}

int httpc_conn_start(struct httpc_conn *hc, const char *method,
		     const char *path, const json_t *body, httpc_done_fn done,
		     void *arg, struct ferr *err)
{
	if (hc->inflight)
		return ferr_set(err, FERR_CONFLICT,
				"a request to host %s is still running",
				hc->name);
	return conn_send(hc, method, path, body, done, arg, err);
}

bool httpc_conn_busy(const struct httpc_conn *hc)
{
	return hc->inflight != NULL;
}

void httpc_conn_stats(const struct httpc_conn *hc,
		      struct httpc_conn_stats *out)
{
	*out = hc->stats;
}

void httpc_conn_free(struct httpc_conn *hc)
{
	if (!hc)
		return;
	if (hc->conn) {
		/* frees a request in flight with it, without its callback */
		evhttp_connection_set_closecb(hc->conn, NULL, NULL);
		evhttp_connection_free(hc->conn);
	}
	free(hc->inflight);
	free(hc->retry_path);
	free(hc);
}

/* Where a blocking request's result lands. */
struct result {
	bool done;
	int status;
	json_t *reply;
	struct ferr err;
};

static void on_result(int status, json_t *reply, const struct ferr *err,
		      void *arg)
{
	struct result *r = arg;

	r->done = true;
	r->status = status;
	r->reply = reply;
	if (err)
		r->err = *err;
}

int httpc_request(SSL_CTX *ctx, const struct httpc_peer *host,
		  unsigned timeout_s, const char *method, const char *path,
		  const json_t *body, int *status, json_t **reply,
		  struct ferr *err)
{
	return httpc_request_x(ctx, host, timeout_s, method, path, body,
			       status, reply, NULL, err);
}

int httpc_request_x(SSL_CTX *ctx, const struct httpc_peer *host,
		    unsigned timeout_s, const char *method, const char *path,
		    const json_t *body, int *status, json_t **reply,
		    unsigned char *exporter, struct ferr *err)
{
	struct result r = { 0 };
	struct event_base *base = event_base_new();
	bool have_exporter = false;

	if (!base)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (start_x(base, ctx, host, timeout_s, method, path, body, on_result,
		    &r, exporter, &have_exporter, err) < 0) {
		event_base_free(base);
		return -1;
	}
	/* runs until the request ended and its connection is freed (no
	 * event is left) */
	event_base_dispatch(base);
	event_base_free(base);
	if (!r.done)
		return ferr_set(err, FERR_INTERNAL,
				"the request to host %s never ended",
				host->name);
	if (!r.reply) {
		*err = r.err;
		return -1;
	}
	if (exporter && !have_exporter) {
		json_decref(r.reply);
		return ferr_set(err, FERR_UNAVAILABLE,
				"host %s: no TLS exporter for this connection",
				host->name);
	}
	*status = r.status;
	*reply = r.reply;
	return 0;
}

/* Map an HTTP status to an error code for replies without an error object. */
static enum ferr_code code_for_status(int status)
{
	switch (status) {
	case 400:
		return FERR_INVALID;
	case 401:
		return FERR_UNAUTH;
	case 403:
		return FERR_FORBIDDEN;
	case 404:
		return FERR_NOT_FOUND;
	case 409:
		return FERR_CONFLICT;
	case 413:
		return FERR_TOO_LARGE;
	case 429:
		return FERR_RATE;
	default:
		return status >= 500 ? FERR_UNAVAILABLE : FERR_INVALID;
	}
}

int httpc_call(SSL_CTX *ctx, const struct httpc_peer *host, unsigned timeout_s,
	       const char *method, const char *path, const json_t *body,
	       json_t **reply, struct ferr *err)
{
	return httpc_call_x(ctx, host, timeout_s, method, path, body, reply,
			    NULL, err);
}

int httpc_call_x(SSL_CTX *ctx, const struct httpc_peer *host,
		 unsigned timeout_s, const char *method, const char *path,
		 const json_t *body, json_t **reply, unsigned char *exporter,
		 struct ferr *err)
{
	json_t *r = NULL;
	int status = 0;
	const char *msg;

	if (httpc_request_x(ctx, host, timeout_s, method, path, body, &status,
			    &r, exporter, err) < 0)
		return -1;
	if (status >= 200 && status < 300) {
		*reply = r;
		return 0;
	}
	msg = json_string_value(
		json_object_get(json_object_get(r, "error"), "message"));
	ferr_set(err, code_for_status(status), "%s: %s", host->name,
		 msg ? msg : "request failed");
	json_decref(r);
	return -1;
}
