/* client.c - client config and the HTTPS client (libevent evhttp over an
 * OpenSSL bufferevent, mutual TLS 1.3). */
#define _GNU_SOURCE
#include "cli.h"
#include "config.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/err.h>

/* Required path field of obj, resolved against base. */
static int get_path(const json_t *obj, const char *key, const char *base,
		    char *out, size_t len, struct ferr *err)
{
	const char *s = NULL;

	if (json_get_string(obj, key, "config", FERRY_PATH_MAX - 1, &s, err) <
	    0)
		return -1;
	if (!s)
		return ferr_set(err, FERR_INVALID, "config.%s is required",
				key);
	return path_resolve(base, s, out, len, err);
}

/* One entry of "hosts": {"address": "...", "port": N}. */
static int parse_host(const char *name, const json_t *h, struct cli_host *out,
		      struct ferr *err)
{
	static const char *const fields[] = { "address", "port", NULL };
	unsigned char buf[16];
	const char *addr = NULL;
	uint64_t port = FERRY_API_PORT_DEFAULT;

	if (!name_is_valid(name))
		return ferr_set(err, FERR_INVALID,
				"hosts: \"%.64s\" is not a valid host name",
				name);
	if (json_check_fields(h, fields, "hosts entry", err) < 0 ||
	    json_get_string(h, "address", "hosts entry", 63, &addr, err) < 0 ||
	    json_get_u64(h, "port", "hosts entry", 1, 65535, &port, err) < 0)
		return ferr_wrap(err, "hosts.%s", name);
	if (!addr || (inet_pton(AF_INET, addr, buf) != 1 &&
		      inet_pton(AF_INET6, addr, buf) != 1))
		return ferr_set(err, FERR_INVALID,
				"hosts.%s.address must be a numeric IP "
				"address",
				name);
	snprintf(out->name, sizeof(out->name), "%s", name);
	snprintf(out->address, sizeof(out->address), "%s", addr);
	out->port = (uint16_t)port;
	return 0;
}

int cli_config_parse(const char *text, size_t len, const char *base_dir,
		     const char *origin, struct cli_config *cfg,
		     struct ferr *err)
{
	static const char *const fields[] = { "ca", "cert", "key", "hosts",
					      "default_host", NULL };
	const char *key, *def = NULL;
	json_t *root, *hosts, *h;
	int rc = -1;

	memset(cfg, 0, sizeof(*cfg));
	root = json_parse_object(text, len, origin, err);
	if (!root)
		return -1;
	if (json_check_fields(root, fields, "config", err) < 0 ||
	    get_path(root, "ca", base_dir, cfg->ca, sizeof(cfg->ca), err) < 0 ||
	    get_path(root, "cert", base_dir, cfg->cert, sizeof(cfg->cert),
		     err) < 0 ||
	    get_path(root, "key", base_dir, cfg->key, sizeof(cfg->key), err) <
		    0)
		goto wrap;
	hosts = json_object_get(root, "hosts");
	if (!json_is_object(hosts) || json_object_size(hosts) == 0) {
		ferr_set(err, FERR_INVALID,
			 "config.hosts must be an object naming at least one "
			 "host");
		goto wrap;
	}
	if (json_object_size(hosts) > CLI_HOSTS_MAX) {
		ferr_set(err, FERR_INVALID, "config.hosts has more than %d hosts",
			 CLI_HOSTS_MAX);
		goto wrap;
	}
	json_object_foreach(hosts, key, h) {
		if (parse_host(key, h, &cfg->hosts[cfg->nhosts], err) < 0)
			goto wrap;
		cfg->nhosts++;
	}
	if (json_get_string(root, "default_host", "config", FERRY_NAME_MAX,
			    &def, err) < 0)
		goto wrap;
	if (def) {
		snprintf(cfg->default_host, sizeof(cfg->default_host), "%s",
			 def);
		if (!cli_host_find(cfg, def, err))
			goto wrap;
	}
	rc = 0;
	goto out;
wrap:
	ferr_wrap(err, "%s", origin);
out:
	json_decref(root);
	return rc;
}

int cli_config_load(const char *path, struct cli_config *cfg,
		    struct ferr *err)
{
	char buf[FERRY_PATH_MAX], real[FERRY_PATH_MAX];
	char *text = NULL;
	size_t len = 0;
	int rc;

	if (!path)
		path = getenv("FERRY_CONFIG");
	if (!path) {
		const char *home = getenv("HOME");

		if (!home || fmt_checked(buf, sizeof(buf), err, "path",
					 "%s/.config/ferry/client.json",
					 home) < 0)
			return ferr_set(err, FERR_INVALID,
					"no client config: use --config or "
					"set FERRY_CONFIG");
		path = buf;
	}
	if (!realpath(path, real))
		return ferr_set(err, FERR_INVALID,
				"cannot open client config %s: %s", path,
				strerror(errno));
	if (file_read_all(real, FERRY_CONFIG_MAX, &text, &len, err) < 0)
		return -1;
	rc = cli_config_parse(text, len, dirname(real), path, cfg, err);
	free(text);
	return rc;
}

const struct cli_host *cli_host_find(const struct cli_config *cfg,
				     const char *name, struct ferr *err)
{
	if (!name || !*name) {
		if (cfg->default_host[0])
			name = cfg->default_host;
		else if (cfg->nhosts == 1)
			return &cfg->hosts[0];
		else {
			ferr_set(err, FERR_INVALID,
				 "several hosts are configured and none is the "
				 "default: use --host NAME");
			return NULL;
		}
	}
	for (size_t i = 0; i < cfg->nhosts; i++)
		if (!strcmp(cfg->hosts[i].name, name))
			return &cfg->hosts[i];
	ferr_set(err, FERR_NOT_FOUND, "host %s is not in the client config",
		 name);
	return NULL;
}

int client_init(struct client *c, const struct cli_config *cfg,
		unsigned timeout_s, struct ferr *err)
{
	memset(c, 0, sizeof(*c));
	c->cfg = cfg;
	c->timeout_s = timeout_s ? timeout_s : CLI_TIMEOUT_S_DEFAULT;
	c->ctx = tls_client_ctx_new(cfg->ca, cfg->cert, cfg->key, err);
	return c->ctx ? 0 : -1;
}

void client_free(struct client *c)
{
	SSL_CTX_free(c->ctx);
	c->ctx = NULL;
}

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

int client_request(struct client *c, const struct cli_host *host,
		   const char *method, const char *path, const json_t *body,
		   int *status, json_t **reply, struct ferr *err)
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
	ssl = SSL_new(c->ctx);
	if (!base || !ssl) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	if (tls_client_expect_host(ssl, host->address, err) < 0)
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
	evhttp_connection_set_timeout(conn, (int)c->timeout_s);
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
		char ebuf[256] = "";

		if (sslerr)
			ERR_error_string_n(sslerr, ebuf, sizeof(ebuf));
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

int client_call(struct client *c, const struct cli_host *host,
		const char *method, const char *path, const json_t *body,
		json_t **reply, struct ferr *err)
{
	json_t *r = NULL;
	int status = 0;
	const char *msg;

	if (client_request(c, host, method, path, body, &status, &r, err) < 0)
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
