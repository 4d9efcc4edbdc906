/* call.c - the page's calls to hosts: actions, the console, audit records
 * and audit verification. Each is one asynchronous request (two for
 * verify) made with the operator's certificate; the host's answer reaches
 * the page as it is, refusals included. */
#include "ui_int.h"
#include "audit.h"
#include "httpc.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define CONSOLE_CHUNK (64 * 1024)
#define AUDIT_LIMIT_DEFAULT 200

/* One browser request waiting for a host. */
struct call {
	struct ui *ui;
	struct evhttp_request *req; /* NULL once the browser went away */
	struct evhttp_connection *conn;
	struct ui_hoststate *hs;    /* the host acted on (polled again after) */
	struct ui_hoststate *to;    /* and the other one, e.g. a destination */
	enum ui_route_kind kind;
	EVP_PKEY *key;              /* verify: the host's audit key */
	char path[sizeof(((struct ui_route *)0)->query) + 96];
};

/* Stop watching the browser's connection (before answering on it). */
static void detach(struct call *c)
{
	if (c->conn)
		evhttp_connection_set_closecb(c->conn, NULL, NULL);
	c->conn = NULL;
}

static void call_free(struct call *c)
{
	detach(c);
	EVP_PKEY_free(c->key);
	free(c);
}

/* The browser closed its connection: its request is gone. */
static void on_browser_closed(struct evhttp_connection *conn, void *arg)
{
	struct call *c = arg;

	(void)conn;
	c->req = NULL;
	c->conn = NULL;
}

static void reply(struct call *c, int status, json_t *obj)
{
	detach(c);
	if (c->req)
		ui_reply_json(c->req, status, obj);
	else
		json_decref(obj);
}

static void reply_error(struct call *c, const struct ferr *err)
{
	detach(c);
	if (c->req)
		ui_reply_error(c->req, err);
}

static int start(struct call *c, struct ui_hoststate *hs, const char *method,
		 const char *path, const json_t *body, httpc_done_fn done,
		 struct ferr *err);

/* verify: the log arrived; check it with the key. */
static void on_log(int status, json_t *r, const struct ferr *err, void *arg)
{
	struct call *c = arg;
	struct audit_report rep;
	const json_t *log = json_object_get(r, "log");

	if (!r) {
		reply_error(c, err);
	} else if (status != 200 || !json_is_string(log)) {
		reply(c, status == 200 ? 502 : status, json_incref(r));
	} else {
		audit_verify(json_string_value(log), json_string_length(log),
			     c->key, &rep);
		reply(c, 200,
		      json_pack("{s:s, s:b, s:s, s:I, s:I, s:I, s:s, s:I, "
				"s:s, s:I}",
				"host", c->hs->host->name, "ok", rep.ok,
				"kind", audit_tamper_name(rep.kind),
				"records", (json_int_t)rep.records,
				"first_seq", (json_int_t)rep.first_seq,
				"last_seq", (json_int_t)rep.last_seq, "head",
				rep.head_hash, "bad_line",
				(json_int_t)rep.first_bad_line, "message",
				rep.message, "checked_at",
				(json_int_t)wall_ms()));
	}
	json_decref(r);
	call_free(c);
}

/* verify: the key arrived; fetch the log. */
static void on_key(int status, json_t *r, const struct ferr *err, void *arg)
{
	struct call *c = arg;
	struct ferr e = { 0 };
	const char *pem = json_string_value(json_object_get(r, "public_key"));

	if (!r) {
		reply_error(c, err);
	} else if (status != 200) {
		reply(c, status, json_incref(r));
	} else if (!pem ||
		   !(c->key = audit_pem_key(pem, strlen(pem), false,
					    "audit key", &e))) {
		ferr_set(&e, FERR_UNAVAILABLE,
			 "host %s sent no usable audit public key",
			 c->hs->host->name);
		reply_error(c, &e);
	} else if (start(c, c->hs, "GET", "/v1/audit/log", NULL, on_log,
			 &e) == 0) {
		json_decref(r);
			return; /* on_log goes on */
	} else {
		reply_error(c, &e);
	}
	json_decref(r);
	call_free(c);
}

/* Every other call: pass the host's answer on. */
static void on_reply(int status, json_t *r, const struct ferr *err,
		     void *arg)
{
	struct call *c = arg;

	if (!r) {
		reply_error(c, err);
	} else {
		reply(c, status, r);
		/* show the change at once rather than at the next round */
		if (status >= 200 && status < 300 &&
		    c->kind != UI_R_CONSOLE && c->kind != UI_R_AUDIT) {
			ui_poll_host(c->hs);
			if (c->to)
				ui_poll_host(c->to);
		}
	}
	call_free(c);
}

static int start(struct call *c, struct ui_hoststate *hs, const char *method,
		 const char *path, const json_t *body, httpc_done_fn done,
		 struct ferr *err)
{
	struct httpc_peer peer = { .name = hs->host->name,
				   .address = hs->host->address,
				   .port = hs->host->port };

	if (httpc_start(c->ui->base, c->ui->ctx, &peer, c->ui->timeout_s,
			method, path, body, done, c, err) < 0)
		return -1;
	return 0;
}

/* The browser's body for a migration: {"to": HOST, "mode": ...,
 * "bandwidth_mibps": N}. The
 * destination's address and port come from the client config, never from
 * the page. */
static json_t *migrate_body(struct call *c, const json_t *body,
			    struct ferr *err)
{
	static const char *const fields[] = { "to", "mode", "bandwidth_mibps",
					      NULL };
	const char *to = NULL, *mode = "live";
	uint64_t bw = 0;
	json_t *out;

	if (!body)
		return ferr_set(err, FERR_INVALID, "a migration needs a body "
				"{\"to\": HOST}"), NULL;
	if (json_check_fields(body, fields, "request body", err) < 0 ||
	    json_get_string(body, "to", "request body", FERRY_NAME_MAX, &to,
			    err) < 0 ||
	    json_get_string(body, "mode", "request body", 16, &mode, err) < 0 ||
	    json_get_u64(body, "bandwidth_mibps", "request body", 1, 1000000,
			 &bw, err) < 0)
		return NULL;
	if (!to || !(c->to = ui_host_state(c->ui, to)))
		return ferr_set(err, FERR_INVALID, "\"to\" must name a host of "
				"the client config"), NULL;
	if (!mode)
		mode = "live";
	if (strcmp(mode, "live") && strcmp(mode, "offline") &&
	    strcmp(mode, "postcopy"))
		return ferr_set(err, FERR_INVALID, "mode must be live, offline "
				"or postcopy"), NULL;
	out = json_pack("{s:s, s:s, s:i, s:s}", "to", c->to->host->name,
			"address", c->to->host->address, "port",
			(int)c->to->host->port, "mode", mode);
	if (bw)
		json_object_set_new(out, "bandwidth_mibps",
				    json_integer((json_int_t)bw));
	return out;
}

/* The body of a VM action: stop takes {"force": bool}, the others none. */
static json_t *action_body(const struct ui_route *r, const json_t *body,
			   struct ferr *err)
{
	static const char *const fields[] = { "force", NULL };
	bool force = false;

	if (strcmp(r->verb, "stop") != 0 || !body)
		return json_object();
	if (json_check_fields(body, fields, "request body", err) < 0 ||
	    json_get_bool(body, "force", "request body", &force, err) < 0)
		return NULL;
	return json_pack("{s:b}", "force", force);
}

/* What the host is asked: method is always POST for r->post. Sets c->path
 * and returns the host's body (may be NULL), or -1. */
static int build(struct call *c, const struct ui_route *r, const json_t *body,
		 json_t **out, struct ferr *err)
{
	struct ui *ui = c->ui;
	const char *mode = NULL;
	static const char *const mode_fields[] = { "mode", NULL };

	*out = NULL;
	switch (r->kind) {
	case UI_R_CONSOLE:
		snprintf(c->path, sizeof(c->path),
			 "/v1/vms/%s/console%s%slimit=%d", r->vm, r->query,
			 r->query[0] ? "&" : "?", CONSOLE_CHUNK);
		return 0;
	case UI_R_AUDIT:
		snprintf(c->path, sizeof(c->path), "/v1/audit%s", r->query);
		if (!strstr(r->query, "limit="))
			snprintf(c->path + strlen(c->path),
				 sizeof(c->path) - strlen(c->path), "%climit=%d",
				 r->query[0] ? '&' : '?', AUDIT_LIMIT_DEFAULT);
		return 0;
	case UI_R_VERIFY:
		snprintf(c->path, sizeof(c->path), "/v1/audit/key");
		return 0;
	case UI_R_VM_ACTION:
		snprintf(c->path, sizeof(c->path), "/v1/vms/%s/%s", r->vm,
			 r->verb);
		*out = action_body(r, body, err);
		return *out ? 0 : -1;
	case UI_R_MIGRATE:
		snprintf(c->path, sizeof(c->path), "/v1/vms/%s/migrate", r->vm);
		*out = migrate_body(c, body, err);
		return *out ? 0 : -1;
	case UI_R_CANCEL:
		snprintf(c->path, sizeof(c->path), "/v1/migrations/%s/cancel",
			 r->vm);
		return 0;
	case UI_R_DRAIN:
		/* with a controller, as `ferry host drain`: it evacuates the
		 * host; without one, the host only stops accepting VMs */
		if (ui->controller) {
			c->to = c->hs;
			c->hs = ui->controller;
			snprintf(c->path, sizeof(c->path), "/v1/balance/%s",
				 r->verb);
			*out = json_pack("{s:s}", "host", r->host);
		} else {
			snprintf(c->path, sizeof(c->path), "/v1/host/%s",
				 r->verb);
		}
		return 0;
	case UI_R_BAL_MODE:
		if (!ui->controller)
			return ferr_set(err, FERR_CONFLICT, "the client config "
					"names no controller");
		c->hs = ui->controller;
		if (!body || json_check_fields(body, mode_fields,
					       "request body", err) < 0 ||
		    json_get_string(body, "mode", "request body", 16, &mode,
				    err) < 0 ||
		    !mode || (strcmp(mode, "off") && strcmp(mode, "recommend") &&
			      strcmp(mode, "auto")))
			return ferr_set(err, FERR_INVALID, "mode must be off, "
					"recommend or auto");
		snprintf(c->path, sizeof(c->path), "/v1/balance/mode");
		*out = json_pack("{s:s}", "mode", mode);
		return 0;
	case UI_R_STATE:
		break;
	}
	return ferr_set(err, FERR_NOT_FOUND, "no such route");
}

void ui_call(struct ui *ui, struct evhttp_request *req,
	     const struct ui_route *r, const json_t *body)
{
	struct call *c = calloc(1, sizeof(*c));
	struct ferr err = { 0 };
	json_t *hbody = NULL;

	if (!c) {
		ferr_set(&err, FERR_INTERNAL, "out of memory");
		ui_reply_error(req, &err);
		return;
	}
	c->ui = ui;
	c->req = req;
	c->kind = r->kind;
	c->hs = r->kind == UI_R_BAL_MODE ? NULL : ui_host_state(ui, r->host);
	if (r->kind != UI_R_BAL_MODE && !c->hs) {
		ferr_set(&err, FERR_NOT_FOUND,
			 "host %s is not in the client config", r->host);
		goto refuse;
	}
	if (build(c, r, body, &hbody, &err) < 0)
		goto refuse;
	if (start(c, c->hs, r->post ? "POST" : "GET", c->path, hbody,
		  r->kind == UI_R_VERIFY ? on_key : on_reply, &err) < 0)
		goto refuse;
	json_decref(hbody);
	c->conn = evhttp_request_get_connection(req);
	evhttp_connection_set_closecb(c->conn, on_browser_closed, c);
	return;
refuse:
	json_decref(hbody);
	ui_reply_error(req, &err);
	call_free(c);
}
