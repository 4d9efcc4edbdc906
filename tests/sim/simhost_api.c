/* simhost_api.c - ferry-simhost's HTTP routes: /v1/load, migrate,
 * migrations, drain/undrain and fence, answered for the host named by SNI. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "simhost.h"

/* ---- replies ---- */

static void reply(struct evhttp_request *req, int status,
		  struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req),
			  "Content-Type", "application/json");
	evhttp_send_reply(req, status, status < 300 ? "OK" : "Error", body);
}

static void reply_error(struct evhttp_request *req, int status,
			const char *code, const char *msg)
{
	struct evbuffer *b = evbuffer_new();
	json_t *o = json_pack("{s:{s:s, s:s}}", "error", "code", code,
			      "message", msg);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	if (b && s)
		evbuffer_add(b, s, strlen(s));
	reply(req, status, b);
	free(s);
	json_decref(o);
	if (b)
		evbuffer_free(b);
}

static void load(struct evhttp_request *req, struct shost *h)
{
	struct evbuffer *b = evbuffer_new();
	double sum = 0;
	unsigned long committed = 0;
	bool first = true;
	static const char *const tiers[] = { "web", "db", "batch" };

	if (!b)
		die("out of memory");
	for (size_t i = 0; i < h->nvms; i++)
		committed += S.vms[h->vms[i]].mem_mib;
	evbuffer_add_printf(b, "{\"host\":\"%s\",\"ts\":%" PRIu64
			       ",\"cpus\":%d,\"memory_total_mib\":%u,"
			       "\"memory_committed_mib\":%lu,"
			       "\"memory_free_mib\":%lu,\"draining\":%s,"
			       "\"vms\":[",
			    h->name, now_ms(), HOST_CORES, HOST_MEM_MIB,
			    committed, HOST_MEM_MIB - committed,
			    h->draining ? "true" : "false");
	for (size_t i = 0; i < h->nvms; i++) {
		struct svm *v = &S.vms[h->vms[i]];
		double cpu = v->cpu * (0.9 + 0.2 * rng_unit());

		sum += cpu;
		evbuffer_add_printf(
			b,
			"%s{\"name\":\"%s\",\"uuid\":\"%s\",\"state\":"
			"\"running\",\"cpu_cores\":%.4f,\"memory_mib\":%u,"
			"\"dirty_mibps\":%.2f,\"labels\":{\"tier\":\"%s\"},"
			"\"migrating\":%s}",
			first ? "" : ",", v->name, v->uuid, cpu, v->mem_mib,
			v->dirty * (0.8 + 0.4 * rng_unit()), tiers[v->tier],
			v->mig >= 0 ? "true" : "false");
		first = false;
	}
	/* the incoming copies, as ferryd lists them */
	for (size_t i = 0; i < S.nmigs; i++) {
		struct smig *m = &S.migs[i];

		if (m->done || &S.hosts[m->to] != h)
			continue;
		evbuffer_add_printf(b,
				    "%s{\"name\":\"%s\",\"uuid\":\"%s\","
				    "\"state\":\"incoming\",\"cpu_cores\":null,"
				    "\"memory_mib\":%u,\"dirty_mibps\":null,"
				    "\"labels\":{},\"migrating\":true}",
				    first ? "" : ",", S.vms[m->vm].name, S.vms[m->vm].uuid,
				    S.vms[m->vm].mem_mib);
		first = false;
	}
	evbuffer_add_printf(b, "],\"vm_cpu_cores\":%.4f,\"cpu_util\":%.4f}",
			    sum, sum / HOST_CORES > 1 ? 1.0 : sum / HOST_CORES);
	reply(req, 200, b);
	evbuffer_free(b);
}

static json_t *read_body(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	char buf[BODY_MAX + 1];

	if (len == 0 || len > BODY_MAX)
		return NULL;
	evbuffer_copyout(in, buf, len);
	buf[len] = '\0';
	return json_loadb(buf, len, 0, NULL);
}

static void mig_json(struct evhttp_request *req, const struct smig *m)
{
	struct evbuffer *b = evbuffer_new();

	if (!b)
		die("out of memory");
	evbuffer_add_printf(b,
			    "{\"id\":\"%s\",\"role\":\"source\",\"vm\":\"%s\","
			    "\"source\":\"%s\",\"destination\":\"%s\","
			    "\"started_at\":%" PRIu64 ",\"outcome\":\"%s\"%s}",
			    m->id, S.vms[m->vm].name, S.hosts[m->from].name,
			    S.hosts[m->to].name, m->start_ms,
			    !m->done ? "running"
				     : m->ok ? "completed" : "failed",
			    m->done && !m->ok
				    ? ",\"error\":\"simulated failure\""
				    : "");
	reply(req, m->done ? 200 : 202, b);
	evbuffer_free(b);
}

static void refuse_mig(struct evhttp_request *req, const struct shost *h,
		       const char *vm, const char *to, int64_t fence,
		       int status, const char *code, const char *why)
{
	log_line("{\"ms\":%" PRIu64 ",\"op\":\"migrate\",\"host\":\"%s\","
		 "\"vm\":\"%s\",\"to\":\"%s\",\"fence\":%" PRId64
		 ",\"result\":\"refused\",\"reason\":\"%s\"}",
		 now_ms(), h->name, vm, to ? to : "", fence, why);
	reply_error(req, status, code, why);
}

/* The fencing rule of ferryd (src/migrate/fence.c): a token below the
 * highest seen is refused; a higher one becomes the highest. */
static bool fence_ok(struct shost *h, int64_t fence)
{
	if (fence && fence < h->fence)
		return false;
	if (fence > h->fence)
		h->fence = fence;
	return true;
}

static void migrate(struct evhttp_request *req, struct shost *h,
		    const char *vmname)
{
	json_t *body = read_body(req);
	const char *to = json_string_value(json_object_get(body, "to"));
	json_t *jf = json_object_get(body, "fence");
	int64_t fence = json_is_integer(jf) ? json_integer_value(jf) : 0;
	int vi = -1, ti = to ? host_index(to) : -1;
	struct smig *m;
	char msg[160];

	for (size_t i = 0; i < h->nvms; i++)
		if (!strcmp(S.vms[h->vms[i]].name, vmname))
			vi = (int)h->vms[i];
	if (!body || ti < 0 || &S.hosts[ti] == h) {
		refuse_mig(req, h, vmname, to, fence, 400, "invalid_request",
			   "migration.to must name another host");
	} else if (vi < 0) {
		refuse_mig(req, h, vmname, to, fence, 404, "not_found",
			   "no such VM on this host");
	} else if (!fence_ok(h, fence)) {
		snprintf(msg, sizeof(msg),
			 "fencing token %" PRId64 " is older than %" PRId64
			 ": a newer controller leads",
			 fence, h->fence);
		refuse_mig(req, h, vmname, to, fence, 409, "conflict", msg);
	} else if (S.vms[vi].mig >= 0) {
		refuse_mig(req, h, vmname, to, fence, 409, "conflict",
			   "the VM is already migrating");
	} else if (S.hosts[ti].draining) {
		refuse_mig(req, h, vmname, to, fence, 409, "conflict",
			   "the destination is draining");
	} else {
		if (S.nmigs == S.capmigs) {
			S.capmigs = S.capmigs ? S.capmigs * 2 : 64;
			S.migs = realloc(S.migs, S.capmigs * sizeof(*S.migs));
			if (!S.migs)
				die("out of memory");
		}
		m = &S.migs[S.nmigs];
		memset(m, 0, sizeof(*m));
		snprintf(m->id, sizeof(m->id), "%016" PRIx64 "%016" PRIx64,
			 rng_next(), (uint64_t)S.nmigs);
		m->vm = (unsigned)vi;
		m->from = (int)(h - S.hosts);
		m->to = ti;
		m->start_ms = now_ms();
		m->end_ms = m->start_ms + S.mig_ms;
		m->fence = fence;
		S.vms[vi].mig = (int)S.nmigs++;
		log_line("{\"ms\":%" PRIu64 ",\"op\":\"migrate\",\"host\":"
			 "\"%s\",\"vm\":\"%s\",\"to\":\"%s\",\"fence\":%" PRId64
			 ",\"result\":\"accepted\",\"id\":\"%s\"}",
			 m->start_ms, h->name, vmname, to, fence, m->id);
		mig_json(req, m);
	}
	json_decref(body);
}

static void fence_route(struct evhttp_request *req, struct shost *h)
{
	json_t *body = read_body(req);
	json_t *jf = json_object_get(body, "fence");
	int64_t fence = json_is_integer(jf) ? json_integer_value(jf) : 0;
	bool ok = fence > 0 && fence_ok(h, fence);
	struct evbuffer *b = evbuffer_new();

	log_line("{\"ms\":%" PRIu64 ",\"op\":\"fence\",\"host\":\"%s\","
		 "\"fence\":%" PRId64 ",\"result\":\"%s\"}",
		 now_ms(), h->name, fence, ok ? "accepted" : "refused");
	if (!ok) {
		reply_error(req, fence > 0 ? 409 : 400,
			    fence > 0 ? "conflict" : "invalid_request",
			    "fencing token older than the highest seen: a "
			    "newer controller leads");
	} else {
		evbuffer_add_printf(b, "{\"fence\":%" PRId64 "}", h->fence);
		reply(req, 200, b);
	}
	if (b)
		evbuffer_free(b);
	json_decref(body);
}

void on_request(struct evhttp_request *req, void *arg)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	SSL *ssl = bufferevent_openssl_get_ssl(
		evhttp_connection_get_bufferevent(conn));
	struct shost *h = ssl ? SSL_get_app_data(ssl) : NULL;
	const char *path = evhttp_request_get_uri(req);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	char vm[NAME_LEN + 1];

	(void)arg;
	if (!h) {
		reply_error(req, 421, "misdirected", "no host named by SNI");
		return;
	}
	h->requests++;
	if (cmd == EVHTTP_REQ_GET && !strcmp(path, "/v1/load")) {
		load(req, h);
	} else if (cmd == EVHTTP_REQ_GET &&
		   !strncmp(path, "/v1/migrations/", 15)) {
		for (size_t i = 0; i < S.nmigs; i++)
			if (!strcmp(S.migs[i].id, path + 15) &&
			    &S.hosts[S.migs[i].from] == h) {
				mig_json(req, &S.migs[i]);
				return;
			}
		reply_error(req, 404, "not_found", "no such migration");
	} else if (cmd == EVHTTP_REQ_POST &&
		   (!strcmp(path, "/v1/host/drain") ||
		    !strcmp(path, "/v1/host/undrain"))) {
		struct evbuffer *b = evbuffer_new();

		h->draining = path[9] == 'd';
		log_line("{\"ms\":%" PRIu64 ",\"op\":\"%s\",\"host\":\"%s\"}",
			 now_ms(), path + 9, h->name);
		evbuffer_add_printf(b, "{\"host\":\"%s\",\"draining\":%s}",
				    h->name, h->draining ? "true" : "false");
		reply(req, 200, b);
		evbuffer_free(b);
	} else if (cmd == EVHTTP_REQ_POST && !strcmp(path, "/v1/host/fence")) {
		fence_route(req, h);
	} else if (cmd == EVHTTP_REQ_POST &&
		   sscanf(path, "/v1/vms/%32[a-z0-9._-]/migrate", vm) == 1 &&
		   strlen(path) == strlen("/v1/vms//migrate") + strlen(vm)) {
		migrate(req, h, vm);
	} else {
		reply_error(req, 404, "not_found", "no such route");
	}
}
