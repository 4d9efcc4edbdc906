/* httpc.c - blocking HTTPS/JSON requests over mutual TLS (libevent evhttp
 * on an OpenSSL bufferevent). */
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
#include <openssl/err.h>

/* State of one request while the loop runs. */
struct pending {
	struct event_base *base;
	bool done;
	int status;
	enum evhttp_request_error error;
	bool have_error;
	char *body;
	size_t len;
	bool too_large;
};

static void on_error(enum evhttp_request_error e, void *arg)
{
	struct pending *p = arg;

	p->error = e;
	p->have_error = true;
}

static void on_done(struct evhttp_request *r, void *arg)
{
	struct pending *p = arg;
	struct evbuffer *in;
	size_t len;

	p->done = true;
	event_base_loopbreak(p->base);
	if (!r || evhttp_request_get_response_code(r) == 0)
		return;
	p->status = evhttp_request_get_response_code(r);
	in = evhttp_request_get_input_buffer(r);
	len = evbuffer_get_length(in);
	if (len > FERRY_API_REPLY_MAX) {
		p->too_large = true;
		return;
	}
	p->body = malloc(len + 1);
	if (!p->body)
		return;
	evbuffer_remove(in, p->body, len);
	p->body[len] = '\0';
	p->len = len;
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

static enum evhttp_cmd_type method_type(const char *m)
{
	if (!strcmp(m, "POST"))
		return EVHTTP_REQ_POST;
	if (!strcmp(m, "DELETE"))
		return EVHTTP_REQ_DELETE;
	return EVHTTP_REQ_GET;
}

int httpc_request(SSL_CTX *ctx, const struct httpc_peer *host,
		  unsigned timeout_s, const char *method, const char *path,
		  const json_t *body, int *status, json_t **reply,
		  struct ferr *err)
{
	struct pending p = { 0 };
	struct event_base *base = NULL;
	struct bufferevent *bev = NULL;
	struct evhttp_connection *conn = NULL;
	struct evhttp_request *req;
	char *text = NULL;
	char hostport[96];
	SSL *ssl = NULL;
	unsigned long sslerr = 0;
	int rc = -1;

	base = event_base_new();
	p.base = base;
	ssl = SSL_new(ctx);
	if (!base || !ssl) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	if (tls_client_expect(ssl, host->address,
			      host->check_name ? host->name : NULL, err) < 0)
		goto out;
	bev = bufferevent_openssl_socket_new(base, -1, ssl,
					     BUFFEREVENT_SSL_CONNECTING,
					     BEV_OPT_CLOSE_ON_FREE |
						     BEV_OPT_DEFER_CALLBACKS);
	if (!bev) {
		ferr_set(err, FERR_INTERNAL, "cannot create a TLS connection");
		goto out;
	}
	ssl = NULL; /* owned by bev */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	conn = evhttp_connection_base_bufferevent_new(base, NULL, bev,
						      host->address,
						      host->port);
	if (!conn) {
		ferr_set(err, FERR_INTERNAL, "cannot create an HTTP connection");
		goto out;
	}
	bev = NULL; /* owned by conn */
	if (host->local)
		evhttp_connection_set_local_address(conn, host->local);
	evhttp_connection_set_timeout(conn, (int)timeout_s);
	evhttp_connection_set_max_body_size(conn, FERRY_API_REPLY_MAX);
	req = evhttp_request_new(on_done, &p);
	if (!req) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	evhttp_request_set_error_cb(req, on_error);
	snprintf(hostport, sizeof(hostport), "%s:%u", host->address,
		 (unsigned)host->port);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Host",
			  hostport);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Connection",
			  "close");
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text) {
			evhttp_request_free(req);
			ferr_set(err, FERR_INTERNAL, "cannot encode request");
			goto out;
		}
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Content-Type", "application/json");
		evbuffer_add(evhttp_request_get_output_buffer(req), text,
			     strlen(text));
	}
	if (evhttp_make_request(conn, req, method_type(method), path) < 0) {
		ferr_set(err, FERR_UNAVAILABLE, "cannot send the request");
		goto out;
	}
	event_base_dispatch(base);
	sslerr = bufferevent_get_openssl_error(
		evhttp_connection_get_bufferevent(conn));
	if (!p.done || p.status == 0) {
		SSL *s = bufferevent_openssl_get_ssl(
			evhttp_connection_get_bufferevent(conn));
		long vr = s ? SSL_get_verify_result(s) : X509_V_OK;
		char ebuf[256] = "";

		if (sslerr)
			ERR_error_string_n(sslerr, ebuf, sizeof(ebuf));
		/* say why the server's certificate failed (e.g. revoked) */
		if (sslerr && vr != X509_V_OK)
			snprintf(ebuf + strlen(ebuf), sizeof(ebuf) - strlen(ebuf),
				 ": %s", X509_verify_cert_error_string(vr));
		ferr_set(err,
			 p.have_error && p.error == EVREQ_HTTP_TIMEOUT
				 ? FERR_TIMEOUT
				 : FERR_UNAVAILABLE,
			 "cannot talk to host %s (%s:%u): %s%s%s", host->name,
			 host->address, (unsigned)host->port,
			 p.have_error ? request_error_name(p.error)
				      : "no reply",
			 ebuf[0] ? ": TLS: " : "", ebuf);
		goto out;
	}
	if (p.too_large) {
		ferr_set(err, FERR_UNAVAILABLE, "host %s sent a reply over %d "
			 "bytes", host->name, FERRY_API_REPLY_MAX);
		goto out;
	}
	*reply = json_parse_object(p.body ? p.body : "", p.len, "reply", err);
	if (!*reply && p.status >= 300) {
		/* an error page that is not ours (e.g. from the HTTP layer) */
		*reply = json_pack("{s:{s:s, s:s+}}", "error", "code",
				   "http_error", "message", "HTTP status ",
				   p.status == 413 ? "413: request too large"
						   : "error");
	}
	if (!*reply)
		goto out;
	*status = p.status;
	rc = 0;
out:
	free(text);
	free(p.body);
	if (conn)
		evhttp_connection_free(conn);
	if (bev)
		bufferevent_free(bev);
	SSL_free(ssl);
	if (base)
		event_base_free(base);
	return rc;
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
	json_t *r = NULL;
	int status = 0;
	const char *msg;

	if (httpc_request(ctx, host, timeout_s, method, path, body, &status, &r,
			  err) < 0)
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
