/* download.c - a GET whose (possibly huge) body goes to a file as it
 * arrives, e.g. GET /v1/audit/log: memory stays bounded. */
#include "httpc.h"
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>

#define DOWNLOAD_ERROR_MAX 4096 /* bytes of an error reply kept */

struct download {
	struct event_base *base;
	int fd;
	uint64_t max, got;
	int status;
	bool done, failed, too_large;
	int write_errno;
	const char *header;     /* to capture, or NULL */
	char *value;
	size_t vlen;
	char error[DOWNLOAD_ERROR_MAX + 1]; /* a non-2xx body */
	size_t elen;
};

static int on_headers(struct evhttp_request *r, void *arg)
{
	struct download *d = arg;
	const char *v;

	d->status = evhttp_request_get_response_code(r);
	if (d->header && d->value) {
		v = evhttp_find_header(evhttp_request_get_input_headers(r),
				       d->header);
		snprintf(d->value, d->vlen, "%s", v ? v : "");
	}
	return 0;
}

/* A piece of the body: to the file (2xx) or the error text. */
static void on_chunk(struct evhttp_request *r, void *arg)
{
	struct download *d = arg;
	struct evbuffer *in = evhttp_request_get_input_buffer(r);
	size_t len = evbuffer_get_length(in);

	if (d->status < 200 || d->status >= 300) {
		size_t take = DOWNLOAD_ERROR_MAX - d->elen;

		if (take > len)
			take = len;
		d->elen += (size_t)evbuffer_remove(in, d->error + d->elen,
						   take);
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	if (d->failed)
		return;
	if (len > d->max - d->got) {
		d->too_large = d->failed = true;
		event_base_loopbreak(d->base);
		return;
	}
	while (evbuffer_get_length(in) > 0) {
		int n = evbuffer_write(in, d->fd);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			d->write_errno = n < 0 ? errno : EIO;
			d->failed = true;
			event_base_loopbreak(d->base);
			return;
		}
		d->got += (uint64_t)n;
	}
}

static void on_done(struct evhttp_request *r, void *arg)
{
	struct download *d = arg;

	d->done = r && evhttp_request_get_response_code(r) != 0;
	event_base_loopbreak(d->base);
}

int httpc_download(SSL_CTX *ctx, const struct httpc_peer *host,
		   unsigned timeout_s, const char *path, const char *accept,
		   int fd, uint64_t max, const char *header, char *value,
		   size_t vlen, struct ferr *err)
{
	struct download d = { .fd = fd, .max = max, .header = header,
			      .value = value, .vlen = vlen };
	struct evhttp_connection *conn = NULL;
	struct bufferevent *bev = NULL;
	struct evhttp_request *req;
	json_t *reply = NULL;
	char hostport[96];
	SSL *ssl = NULL;
	int rc = -1;

	d.base = event_base_new();
	ssl = SSL_new(ctx);
	if (!d.base || !ssl) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	if (tls_client_expect(ssl, host->address,
			      host->check_name ? host->name : NULL, err) < 0)
		goto out;
	bev = bufferevent_openssl_socket_new(d.base, -1, ssl,
					     BUFFEREVENT_SSL_CONNECTING,
					     BEV_OPT_CLOSE_ON_FREE |
						     BEV_OPT_DEFER_CALLBACKS);
	if (!bev) {
		ferr_set(err, FERR_INTERNAL, "cannot create a TLS connection");
		goto out;
	}
	ssl = NULL; /* owned by bev */
	conn = evhttp_connection_base_bufferevent_new(d.base, NULL, bev,
						      host->address,
						      host->port);
	if (!conn) {
		ferr_set(err, FERR_INTERNAL, "cannot create an HTTP connection");
		goto out;
	}
	bev = NULL; /* owned by conn */
	if (host->local)
		evhttp_connection_set_local_address(conn, host->local);
	/* a deadline on every read: the body may take long, a stall may not */
	evhttp_connection_set_timeout(conn, (int)timeout_s);
	req = evhttp_request_new(on_done, &d);
	if (!req) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	evhttp_request_set_header_cb(req, on_headers);
	evhttp_request_set_chunked_cb(req, on_chunk);
	snprintf(hostport, sizeof(hostport), "%s:%u", host->address,
		 (unsigned)host->port);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Host",
			  hostport);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Connection",
			  "close");
	if (accept)
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Accept", accept);
	if (evhttp_make_request(conn, req, EVHTTP_REQ_GET, path) < 0) {
		ferr_set(err, FERR_UNAVAILABLE, "cannot send the request");
		goto out;
	}
	event_base_dispatch(d.base);
	if (d.too_large) {
		ferr_set(err, FERR_TOO_LARGE, "host %s sent more than %llu "
			 "bytes", host->name, (unsigned long long)max);
		goto out;
	}
	if (d.failed) {
		ferr_set(err, FERR_IO, "cannot write the reply of host %s: %s",
			 host->name, strerror(d.write_errno));
		goto out;
	}
	if (!d.done) {
		ferr_set(err, FERR_UNAVAILABLE,
			 "cannot talk to host %s (%s:%u): the reply was cut "
			 "short or did not come",
			 host->name, host->address, (unsigned)host->port);
		goto out;
	}
	if (d.status < 200 || d.status >= 300) {
		const char *msg;

		reply = json_loadb(d.error, d.elen, 0, NULL);
		msg = json_string_value(json_object_get(
			json_object_get(reply, "error"), "message"));
		ferr_set(err, d.status == 404 ? FERR_NOT_FOUND
			 : d.status == 403   ? FERR_FORBIDDEN
					     : FERR_UNAVAILABLE,
			 "%s: %s", host->name, msg ? msg : "request failed");
		goto out;
	}
	rc = 0;
out:
	json_decref(reply);
	if (conn)
		evhttp_connection_free(conn);
	if (bev)
		bufferevent_free(bev);
	SSL_free(ssl);
	if (d.base)
		event_base_free(d.base);
	return rc;
}
