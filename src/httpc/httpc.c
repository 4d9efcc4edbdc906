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

static void on_done(struct evhttp_request *r, void *arg)
{
	struct pending *p = arg;
	struct ferr err = { 0 };
	json_t *reply = NULL;
	int status = 0;
	struct timeval now = { 0, 0 };

	if (take_reply(p, r, &status, &reply, &err) < 0)
		p->done(0, NULL, &err, p->arg);
	else
		p->done(status, reply, NULL, p->arg);
	/* evhttp still uses the connection after this returns (on every
	 * path: reply, failure, clean-up): free it at the next turn of the
	 * loop */
	event_base_once(evhttp_connection_get_base(p->conn), -1, EV_TIMEOUT,
			free_conn, p->conn, &now);
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

/* httpc_start, with the TLS exporter of the connection into exporter
 * (and *have_exporter set) when exporter is not NULL. */
static int start_x(struct event_base *base, SSL_CTX *ctx,
		   const struct httpc_peer *host, unsigned timeout_s,
		   const char *method, const char *path, const json_t *body,
		   httpc_done_fn done, void *arg, unsigned char *exporter,
		   bool *have_exporter, struct ferr *err)
{
	struct pending *p = calloc(1, sizeof(*p));
	struct bufferevent *bev = NULL;
	struct evhttp_connection *conn = NULL;
	struct evhttp_request *req = NULL;
	struct evkeyvalq *hdrs;
	char *text = NULL;
	char hostport[96];
	SSL *ssl = SSL_new(ctx);

	if (!p || !ssl) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto fail;
	}
	p->done = done;
	p->arg = arg;
	snprintf(p->name, sizeof(p->name), "%s", host->name);
	snprintf(p->address, sizeof(p->address), "%s", host->address);
	p->port = host->port;
	if (tls_client_expect(ssl, host->address,
			      host->check_name ? host->name : NULL, err) < 0)
		goto fail;
	if (exporter) {
		p->exporter = exporter;
		p->have_exporter = have_exporter;
		SSL_set_app_data(ssl, p);
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
	bev = NULL; /* owned by conn */
	p->conn = conn;
	if (host->local)
		evhttp_connection_set_local_address(conn, host->local);
	evhttp_connection_set_timeout(conn, (int)timeout_s);
	evhttp_connection_set_max_body_size(conn, FERRY_API_REPLY_MAX);
	req = evhttp_request_new(on_done, p);
	if (!req) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto fail;
	}
	evhttp_request_set_error_cb(req, on_error);
	hdrs = evhttp_request_get_output_headers(req);
	snprintf(hostport, sizeof(hostport), "%s:%u", host->address,
		 (unsigned)host->port);
	evhttp_add_header(hdrs, "Host", hostport);
	evhttp_add_header(hdrs, "Connection", "close");
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text) {
			ferr_set(err, FERR_INTERNAL, "cannot encode request");
			goto fail;
		}
		evhttp_add_header(hdrs, "Content-Type", "application/json");
		evbuffer_add(evhttp_request_get_output_buffer(req), text,
			     strlen(text));
		free(text);
	}
	/* evhttp owns req from here, even when this fails */
	if (evhttp_make_request(conn, req, method_type(method), path) < 0) {
		req = NULL;
		ferr_set(err, FERR_UNAVAILABLE, "cannot send the request");
		goto fail;
	}
	return 0;
fail:
	if (req)
		evhttp_request_free(req);
	if (conn)
		evhttp_connection_free(conn);
	if (bev)
		bufferevent_free(bev);
	SSL_free(ssl);
	free(p);
	return -1;
}

int httpc_start(struct event_base *base, SSL_CTX *ctx,
		const struct httpc_peer *host, unsigned timeout_s,
		const char *method, const char *path, const json_t *body,
		httpc_done_fn done, void *arg, struct ferr *err)
{
	return start_x(base, ctx, host, timeout_s, method, path, body, done,
		       arg, NULL, NULL, err);
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
