/* server.c - `ferry ui`'s HTTP server on a loopback address: admission
 * (gate.c), static assets, /api/state and the calls to hosts (call.c). */
#define _GNU_SOURCE
#include "ui_int.h"
#include "tls.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

/* No script, style, image or connection from anywhere but this server; no
 * framing; no forms. */
#define UI_CSP                                                              \
	"default-src 'none'; script-src 'self'; style-src 'self'; "         \
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; "       \
	"form-action 'none'; frame-ancestors 'none'"

static void security_headers(struct evhttp_request *req, const char *type)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "Content-Security-Policy", UI_CSP);
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "X-Frame-Options", "DENY");
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	evhttp_add_header(h, "Cross-Origin-Opener-Policy", "same-origin");
	evhttp_add_header(h, "Cross-Origin-Resource-Policy", "same-origin");
	evhttp_add_header(h, "Cache-Control", "no-store");
}

static void send_text(struct evhttp_request *req, int status,
		      const char *type, const void *data, size_t len)
{
	struct evbuffer *b = evbuffer_new();

	security_headers(req, type);
	if (b)
		evbuffer_add(b, data, len);
	evhttp_send_reply(req, status, NULL, b);
	if (b)
		evbuffer_free(b);
}

void ui_reply_json(struct evhttp_request *req, int status, json_t *obj)
{
	char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;

	static const char fail[] = "{\"error\":{\"code\":\"internal\","
				   "\"message\":\"cannot encode the reply\"}}";

	if (!text)
		send_text(req, 500, "application/json", fail, strlen(fail));
	else
		send_text(req, status, "application/json", text, strlen(text));
	free(text);
	json_decref(obj);
}

void ui_reply_error(struct evhttp_request *req, const struct ferr *err)
{
	ui_reply_json(req, ferr_http_status(err->code),
		      json_pack("{s:{s:s, s:s}}", "error", "code",
				ferr_code_name(err->code), "message",
				err->msg));
}

static void refuse(struct evhttp_request *req, const char *why)
{
	struct ferr err;

	ferr_set(&err, FERR_FORBIDDEN, "%s", why);
	ui_reply_error(req, &err);
}

static void serve_asset(struct evhttp_request *req, const char *path)
{
	if (!strcmp(path, "/"))
		path = "/index.html";
	for (size_t i = 0; i < ui_assets_count; i++)
		if (!strcmp(ui_assets[i].path, path)) {
			send_text(req, 200, ui_assets[i].content_type,
				  ui_assets[i].data, ui_assets[i].len);
			return;
		}
	send_text(req, 404, "text/plain", "not found\n", 10);
}

/* The request body as JSON (NULL when empty), or -1. */
static int read_body(struct evhttp_request *req, json_t **out,
		     struct ferr *err)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	char buf[UI_BODY_MAX + 1];

	*out = NULL;
	if (len == 0)
		return 0;
	if (len > UI_BODY_MAX)
		return ferr_set(err, FERR_TOO_LARGE, "body over %d bytes",
				UI_BODY_MAX);
	evbuffer_copyout(in, buf, len);
	buf[len] = '\0';
	*out = json_parse_object(buf, len, "request body", err);
	return *out ? 0 : -1;
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct ui *ui = arg;
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
	struct ui_route r;
	struct ferr err = { 0 };
	json_t *body = NULL;

	if (ui->stopping)
		return refuse(req, "stopping");
	if (!ui_host_ok(evhttp_find_header(in, "Host"), ui->address,
			ui->port))
		return refuse(req, "wrong Host header");
	if (!ui_origin_ok(evhttp_find_header(in, "Origin"),
			  cmd != EVHTTP_REQ_GET, ui->address, ui->port))
		return refuse(req, "cross-origin request refused");
	if (!path || (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_POST))
		return refuse(req, "bad request");
	/* the URL that `ferry ui` printed: keep the token in a cookie and
	 * take it out of the address bar */
	if (cmd == EVHTTP_REQ_GET && !strcmp(path, "/") &&
	    ui_query_token_ok(ui->token, query)) {
		char cookie[160];
		struct evkeyvalq *out = evhttp_request_get_output_headers(req);

		snprintf(cookie, sizeof(cookie),
			 "%s=%s; Path=/; HttpOnly; SameSite=Strict",
			 ui->cookie, ui->token);
		evhttp_add_header(out, "Set-Cookie", cookie);
		evhttp_add_header(out, "Location", "/");
		send_text(req, 303, "text/plain", "", 0);
		return;
	}
	if (!ui_token_ok(ui->token, ui->cookie,
			 evhttp_find_header(in, "Cookie"),
			 evhttp_find_header(in, "Authorization")))
		return refuse(req, "no or wrong token: open the URL that "
				   "`ferry ui` printed");
	if (strncmp(path, "/api/", 5) != 0) {
		if (cmd != EVHTTP_REQ_GET)
			return refuse(req, "bad request");
		return serve_asset(req, path);
	}
	if (ui_route_parse(cmd == EVHTTP_REQ_GET ? "GET" : "POST", path, query,
			   &r, &err) < 0 ||
	    read_body(req, &body, &err) < 0)
		return ui_reply_error(req, &err);
	if (r.kind == UI_R_STATE)
		ui_reply_json(req, 200, ui_state_json(ui));
	else
		ui_call(ui, req, &r, body);
	json_decref(body);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	ui_poll_round(arg);
}

/* SIGINT/SIGTERM: stop serving and polling; the loop ends once the
 * requests in flight (each with its deadline) have ended and no event is
 * left. */
static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	struct ui *ui = arg;

	(void)fd;
	(void)what;
	if (ui->stopping)
		return;
	ui->stopping = true;
	evtimer_del(ui->tick);
	evsignal_del(ui->sigint);
	evsignal_del(ui->sigterm);
	if (ui->http) {
		evhttp_free(ui->http);
		ui->http = NULL;
	}
}

/* The CN of the operator's certificate, shown on the page. */
static void read_identity(const char *cert, char *out, size_t len)
{
	FILE *f = fopen(cert, "r");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;

	snprintf(out, len, "?");
	if (x)
		X509_NAME_get_text_by_NID(X509_get_subject_name(x),
					  NID_commonName, out, (int)len);
	X509_free(x);
	if (f)
		fclose(f);
}

static bool is_loopback(const char *a)
{
	struct in_addr v4;

	return inet_pton(AF_INET, a, &v4) == 1 &&
	       (ntohl(v4.s_addr) >> 24) == 127;
}

/* Listen on address:port (0: any); the port taken goes to *bound. */
static int listen_on(struct ui *ui, const char *address, uint16_t port,
		     struct ferr *err)
{
	struct evhttp_bound_socket *bs;
	struct sockaddr_in sa = { 0 };
	socklen_t sl = sizeof(sa);

	ui->http = evhttp_new(ui->base);
	if (!ui->http)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	evhttp_set_allowed_methods(ui->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	evhttp_set_max_body_size(ui->http, UI_BODY_MAX);
	evhttp_set_max_headers_size(ui->http, FERRY_API_MAX_HEADERS);
	evhttp_set_timeout(ui->http, FERRY_API_TIMEOUT_S);
	evhttp_set_gencb(ui->http, on_request, ui);
	bs = evhttp_bind_socket_with_handle(ui->http, address, port);
	if (!bs)
		return ferr_set(err, FERR_UNAVAILABLE,
				"cannot listen on %s:%u (in use? try --port)",
				address, (unsigned)port);
	if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sa,
			&sl) < 0)
		return ferr_set(err, FERR_IO, "getsockname failed");
	ui->port = ntohs(sa.sin_port);
	return 0;
}

int ui_run(const struct ui_config *cfg,
	   void (*ready)(const char *url, void *arg), void *arg,
	   struct ferr *err)
{
	struct ui ui = { .cfg = cfg };
	unsigned char raw[UI_TOKEN_BYTES];
	unsigned poll_ms = cfg->poll_ms ? cfg->poll_ms : UI_POLL_MS_DEFAULT;
	struct timeval tv = { poll_ms / 1000, (poll_ms % 1000) * 1000 };
	char url[192];
	int rc = -1;

	ui.address = cfg->listen_address ? cfg->listen_address : "127.0.0.1";
	ui.timeout_s = cfg->timeout_s ? cfg->timeout_s : UI_REQUEST_TIMEOUT_S;
	if (!is_loopback(ui.address))
		return ferr_set(err, FERR_INVALID, "the dashboard listens on "
				"a loopback address only, not %s", ui.address);
	if (cfg->nhosts == 0 || cfg->nhosts > UI_HOSTS_MAX)
		return ferr_set(err, FERR_INVALID, "1..%d hosts", UI_HOSTS_MAX);
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return ferr_set(err, FERR_INTERNAL, "no random bytes");
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(ui.token + 2 * i, 3, "%02x", raw[i]);
	OPENSSL_cleanse(raw, sizeof(raw));
	read_identity(cfg->cert, ui.identity, sizeof(ui.identity));
	ui.ctx = tls_client_ctx_new(cfg->ca, cfg->cert, cfg->key, err);
	ui.base = event_base_new();
	ui.hosts = calloc(cfg->nhosts, sizeof(*ui.hosts));
	if (!ui.ctx || !ui.base || !ui.hosts) {
		if (ui.ctx)
			ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	ui.nhosts = cfg->nhosts;
	for (size_t i = 0; i < cfg->nhosts; i++) {
		struct ui_hoststate *hs = &ui.hosts[i];

		hs->ui = &ui;
		hs->host = &cfg->hosts[i];
		for (int r = 0; r < RES_COUNT; r++) {
			hs->fetch[r].hs = hs;
			hs->fetch[r].res = (enum ui_res)r;
		}
		if (cfg->controller && !strcmp(cfg->controller, hs->host->name)) {
			hs->is_controller = true;
			ui.controller = hs;
		}
	}
	if (listen_on(&ui, ui.address, cfg->port, err) < 0)
		goto out;
	snprintf(ui.cookie, sizeof(ui.cookie), "ferry_ui_%u",
		 (unsigned)ui.port);
	ui.tick = event_new(ui.base, -1, EV_PERSIST, on_tick, &ui);
	ui.sigint = evsignal_new(ui.base, SIGINT, on_signal, &ui);
	ui.sigterm = evsignal_new(ui.base, SIGTERM, on_signal, &ui);
	if (!ui.tick || !ui.sigint || !ui.sigterm ||
	    evtimer_add(ui.tick, &tv) < 0 || evsignal_add(ui.sigint, NULL) < 0 ||
	    evsignal_add(ui.sigterm, NULL) < 0) {
		ferr_set(err, FERR_INTERNAL, "cannot set up the event loop");
		goto out;
	}
	ui_poll_round(&ui);
	snprintf(url, sizeof(url), "http://%s:%u/?token=%s", ui.address,
		 (unsigned)ui.port, ui.token);
	ready(url, arg);
	event_base_dispatch(ui.base);
	rc = 0;
out:
	if (ui.http)
		evhttp_free(ui.http);
	if (ui.tick)
		event_free(ui.tick);
	if (ui.sigint)
		event_free(ui.sigint);
	if (ui.sigterm)
		event_free(ui.sigterm);
	ui_poll_free(&ui);
	free(ui.hosts);
	if (ui.base)
		event_base_free(ui.base);
	SSL_CTX_free(ui.ctx);
	OPENSSL_cleanse(ui.token, sizeof(ui.token));
	return rc;
}
