/* poll.c - talking to the hosts: every request runs asynchronously on the
 * controller thread's own event loop (c->base), all hosts at once.
 *
 * Each host has one connection kept open between rounds (httpc_conn): a
 * round costs each host one request on an open TLS connection rather than
 * a handshake (docs/balancer.md, "Scale", has the measurement). New
 * connections are opened at most CTL_CONNECTS_MAX at a time, so a cold
 * start does not flood the machine with handshakes. A dead host costs the
 * round one poll timeout, in parallel with everything else; a host whose
 * request is still running from an earlier round is not asked again. */
#include "ctl_int.h"

#include <stdlib.h>
#include <string.h>

struct req {
	struct controller *c;
	struct ctl_host *h;
	ctl_reply_fn fn;
	void *arg;
	bool fresh;  /* on a new connection */
	bool kept;   /* on the host's kept connection */
	uint64_t phase; /* the ctl_wait it belongs to */
};

static void poll_more(struct controller *c);

static void on_reply(int status, json_t *reply, const struct ferr *err,
		     void *arg)
{
	struct req *r = arg;
	struct controller *c = r->c;

	if (r->phase == c->phase)
		c->phase_pending--;
	if (r->fresh)
		c->connecting--;
	if (r->kept) {
		r->h->connected = reply != NULL;
		r->h->kept_req = NULL;
	}
	r->fn(c, r->h, status, reply, err, r->arg);
	json_decref(reply);
	free(r);
	if (c->polling)
		poll_more(c);
}

int ctl_send(struct controller *c, struct ctl_host *h, const char *method,
	     const char *path, const json_t *body, ctl_reply_fn fn,
	     void *arg, struct ferr *err)
{
	struct httpc_peer p = { .name = h->name,
				.address = h->address,
				.port = h->port,
				.check_name = true,
				.local = c->cfg->listen_addr };
	struct req *r = calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	*r = (struct req){
		.c = c, .h = h, .fn = fn, .arg = arg, .phase = c->phase
	};
	if (!h->conn)
		h->conn = httpc_conn_new(c->base, c->ctx, &p,
					 c->poll_timeout_s, err);
	if (h->conn && !httpc_conn_busy(h->conn)) {
		r->kept = true;
		r->fresh = !h->connected;
		rc = httpc_conn_start(h->conn, method, path, body, on_reply, r,
				      err);
	} else {
		r->fresh = true;
		rc = httpc_start(c->base, c->ctx, &p, CTL_PEER_TIMEOUT_S,
				 method, path, body, on_reply, r, err);
	}
	if (rc < 0) {
		free(r);
		return -1;
	}
	if (r->kept)
		h->kept_req = r;
	c->phase_pending++;
	if (r->fresh)
		c->connecting++;
	return 0;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

void ctl_wait(struct controller *c, uint64_t deadline)
{
	struct event *t = evtimer_new(c->base, on_deadline, c->base);

	while ((c->phase_pending ||
		(c->polling && c->next_poll < c->nhosts)) &&
	       now_ms() < deadline && t) {
		uint64_t left = deadline - now_ms();
		struct timeval tv = { (time_t)(left / 1000),
				      (suseconds_t)(left % 1000) * 1000 };

		evtimer_add(t, &tv);
		event_base_loop(c->base, EVLOOP_ONCE);
		evtimer_del(t);
	}
	if (t)
		event_free(t);
	/* what is still running answers into no one's wait */
	c->phase++;
	c->phase_pending = 0;
}

/* The error a host's non-2xx answer carries. */
static void answer_error(struct ctl_host *h, int status, const json_t *reply,
			 const struct ferr *err)
{
	const char *msg = json_string_value(
		json_object_get(json_object_get(reply, "error"), "message"));

	if (!reply)
		snprintf(h->error, sizeof(h->error), "%s", err->msg);
	else
		snprintf(h->error, sizeof(h->error), "HTTP %d: %s", status,
			 msg ? msg : "no message");
}

static void on_load(struct controller *c, struct ctl_host *h, int status,
		    json_t *reply, const struct ferr *err, void *arg)
{
	struct ctl_report rep;
	struct ferr perr;

	if ((uintptr_t)arg != c->round || !c->polling)
		return; /* too late for the round that asked */
	if (!reply || status != 200) {
		answer_error(h, status, reply, err);
		return;
	}
	if (ctl_report_parse(reply, h->name, &rep, &perr) < 0) {
		snprintf(h->error, sizeof(h->error), "%s", perr.msg);
		log_warn("controller: %s", perr.msg);
		return;
	}
	if (rep.skipped)
		log_warn("controller: host %s: %zu VM entries skipped (%s)",
			 h->name, rep.skipped, rep.first_skip);
	ctl_feed(c, h, &rep);
	ctl_report_clear(&rep);
}

static void ask_load(struct controller *c, struct ctl_host *h)
{
	struct ferr err;

	if (ctl_send(c, h, "GET", "/v1/load", NULL, on_load,
		     (void *)(uintptr_t)c->round, &err) < 0)
		snprintf(h->error, sizeof(h->error), "%s", err.msg);
}

/* The host acknowledged our token (or a newer leader's). */
static void on_fence(struct controller *c, struct ctl_host *h, int status,
		     json_t *reply, const struct ferr *err, void *arg)
{
	const char *code = json_string_value(
		json_object_get(json_object_get(reply, "error"), "code"));

	if ((uintptr_t)arg != c->round || !c->polling)
		return;
	if (reply && status == 200) {
		h->fenced = c->token;
		ask_load(c, h);
		return;
	}
	answer_error(h, status, reply, err);
	if (reply && status == 409 && code && !strcmp(code, "conflict")) {
		/* it saw a newer token: etcd says whether we still lead;
		 * either way nothing starts from this host on ours */
		log_warn("controller: host %s refused token %lld: %s",
			 h->name, (long long)c->token, h->error);
		ctl_lead_recheck(c);
	}
}

/* A host's first request of the round: our token if it has not seen it
 * (before any migration it could start for us), then its load. */
static void ask(struct controller *c, struct ctl_host *h)
{
	struct ferr err;
	json_t *body;

	h->up = false;
	h->error[0] = '\0';
	if (!c->token || h->fenced == c->token) {
		ask_load(c, h);
		return;
	}
	body = json_pack("{s:I}", "fence", (json_int_t)c->token);
	if (!body || ctl_send(c, h, "POST", "/v1/host/fence", body, on_fence,
			      (void *)(uintptr_t)c->round, &err) < 0)
		snprintf(h->error, sizeof(h->error), "%s",
			 body ? err.msg : "out of memory");
	json_decref(body);
}

static void poll_more(struct controller *c)
{
	while (c->next_poll < c->nhosts && !c->deposed) {
		struct ctl_host *h = &c->hosts[c->next_poll];

		if (h->conn && httpc_conn_busy(h->conn)) {
			c->next_poll++;
			h->up = false;
			snprintf(h->error, sizeof(h->error),
				 "its answer to an earlier round is still "
				 "pending");
			continue;
		}
		if (!h->connected && c->connecting >= CTL_CONNECTS_MAX)
			return; /* more when a handshake ends */
		c->next_poll++;
		ask(c, h);
	}
}

void ctl_poll(struct controller *c)
{
	uint64_t deadline = now_ms() + c->poll_timeout_s * 1000ULL + 500;

	c->polling = true;
	c->next_poll = 0;
	poll_more(c);
	ctl_wait(c, deadline);
	c->polling = false;
	for (size_t i = c->next_poll; i < c->nhosts; i++) {
		c->hosts[i].up = false;
		snprintf(c->hosts[i].error, sizeof(c->hosts[i].error),
			 "not asked: the round's poll time ran out");
	}
}

void ctl_poll_close(struct controller *c, bool forget_tokens)
{
	for (size_t i = 0; i < c->nhosts; i++) {
		struct ctl_host *h = &c->hosts[i];
		struct req *r = h->kept_req;

		/* a request dropped with its connection never calls back */
		if (r) {
			if (r->phase == c->phase)
				c->phase_pending--;
			if (r->fresh)
				c->connecting--;
			free(r);
			h->kept_req = NULL;
		}
		httpc_conn_free(h->conn);
		h->conn = NULL;
		h->connected = false;
		if (forget_tokens)
			h->fenced = 0;
	}
	if (c->base)
		event_base_loop(c->base, EVLOOP_NONBLOCK);
}
