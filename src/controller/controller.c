/* controller.c - the live balancer: poll the hosts, feed the decision
 * code, start what it plans, follow migrations and drains. */
#define _GNU_SOURCE
#include "controller.h"
#include "audit.h"
#include "balancer.h"
#include "httpc.h"
#include "policy.h"
#include "tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MODE_FILE "balancer.mode"

enum ctl_mode { MODE_OFF, MODE_RECOMMEND, MODE_AUTO };
static const char *const mode_names[] = { "off", "recommend", "auto" };

struct ctl_host {
	char name[FERRY_NAME_MAX + 1];
	char address[64];
	uint16_t port;
	bool up;
	json_t *load; /* the latest GET /v1/load answer (thread) */
};

/* A VM's CPU window and labels; allocated one by one so the balancer's
 * `user` pointers stay valid. */
struct ctl_vm {
	char name[FERRY_NAME_MAX + 1];
	double samples[CTL_WINDOW_MAX];
	unsigned n, pos;
	uint64_t seen_round;
	struct label labels[FERRY_VM_LABELS_MAX];
	unsigned nlabels;
};

struct ctl_move {
	char vm[FERRY_NAME_MAX + 1];
	char from[FERRY_NAME_MAX + 1];
	char to[FERRY_NAME_MAX + 1];
	char id[FERRY_NAME_MAX + 1];
	uint64_t started_ms;
	bool drain;
};

enum drain_state { DRAIN_STARTING, DRAIN_RUNNING, DRAIN_DONE, DRAIN_ENDING };

struct ctl_drain {
	char host[FERRY_NAME_MAX + 1];
	enum drain_state state;
	json_t *moved;     /* [{"vm", "to"}] */
	json_t *blocked;   /* [{"vm", "reason"}] */
	unsigned idle_rounds;
	long remaining;
	uint64_t started_ms;
};

struct controller {
	const struct ferryd_config *cfg;
	struct audit *audit;
	char identity[FERRY_NAME_MAX + 1];
	SSL_CTX *ctx;
	struct policy *policy;
	char policy_path[FERRY_PATH_MAX]; /* "" when there is none */
	struct timespec policy_mtime;     /* of the file loaded */
	struct ctl_host hosts[CTL_HOSTS_MAX];
	size_t nhosts;
	unsigned interval_s;
	unsigned window;
	char mode_path[FERRY_PATH_MAX];
	struct bal_cluster *bal;
	struct ctl_vm **vms;
	size_t nvms;
	struct ctl_move *moves;
	size_t nmoves, capmoves;
	pthread_t thread;
	bool thread_started;
	/* shared with the API (lock) */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	bool wake;
	enum ctl_mode mode;
	uint64_t round;
	uint64_t moves_total;
	json_t *status;
	json_t *plan;
	struct ctl_drain drains[CTL_HOSTS_MAX];
	size_t ndrains;
};

/* ---- helpers ---- */

static void audit_rec(struct controller *c, const char *action,
		      const char *target, const char *outcome, json_t *detail)
{
	struct ferr err;

	if (audit_log(c->audit, c->identity, action, target, outcome, detail,
		      &err) < 0)
		log_error("controller: audit: %s", err.msg);
}

static struct ctl_host *host_find(struct controller *c, const char *name)
{
	for (size_t i = 0; i < c->nhosts; i++)
		if (!strcmp(c->hosts[i].name, name))
			return &c->hosts[i];
	return NULL;
}

/* One call to a host as the controller's identity. */
static int call(struct controller *c, const struct ctl_host *h,
		const char *method, const char *path, const json_t *body,
		json_t **reply, struct ferr *err)
{
	struct httpc_peer p = { .name = h->name,
				.address = h->address,
				.port = h->port,
				.check_name = true,
				.local = c->cfg->listen_addr };

	return httpc_call(c->ctx, &p, CTL_PEER_TIMEOUT_S, method, path, body,
			  reply, err);
}

/* The window record of VM name, created when new (NULL: out of memory). */
static struct ctl_vm *vm_window(struct controller *c, const char *name)
{
	struct ctl_vm **nv, *v;

	for (size_t i = 0; i < c->nvms; i++)
		if (!strcmp(c->vms[i]->name, name))
			return c->vms[i];
	v = calloc(1, sizeof(*v));
	nv = realloc(c->vms, (c->nvms + 1) * sizeof(*nv));
	if (!v || !nv) {
		free(v);
		if (nv)
			c->vms = nv;
		return NULL;
	}
	c->vms = nv;
	snprintf(v->name, sizeof(v->name), "%s", name);
	c->vms[c->nvms++] = v;
	return v;
}

static double window_mean(const struct ctl_vm *v)
{
	double sum = 0;

	for (unsigned i = 0; i < v->n; i++)
		sum += v->samples[i];
	return v->n ? sum / v->n : 0.0;
}

/* Forget VMs not reported for a while. */
static void prune_windows(struct controller *c)
{
	for (size_t i = 0; i < c->nvms;) {
		if (c->round - c->vms[i]->seen_round > CTL_WINDOW_MAX) {
			free(c->vms[i]);
			c->vms[i] = c->vms[--c->nvms];
		} else {
			i++;
		}
	}
}

static const char *label_of(const struct ctl_vm *v, const char *key)
{
	for (unsigned i = 0; i < v->nlabels; i++)
		if (!strcmp(v->labels[i].key, key))
			return v->labels[i].value;
	return NULL;
}

/* Balancer policy callback: the cluster policy must let the controller
 * migrate the VM out of `from` to `to`, and `to` accept it from `from`. */
static bool policy_allows(void *arg, const struct bal_vm *vm,
			  const struct bal_host *from,
			  const struct bal_host *to, char *why, size_t len)
{
	struct controller *c = arg;
	const struct ctl_vm *v = vm->user;
	struct policy_vm pvm = { vm->name, v ? v->labels : NULL,
				 v ? v->nlabels : 0 };
	struct policy_decision d;

	if (!c->policy)
		return true; /* the hosts decide */
	policy_check_out(c->policy, c->identity, &pvm, to->name, &d);
	if (d.allow)
		policy_check_in(c->policy, c->identity, &pvm, from->name, &d);
	if (!d.allow)
		snprintf(why, len, "%s", d.reason);
	return d.allow;
}

static struct ctl_drain *drain_find(struct controller *c, const char *host)
{
	for (size_t i = 0; i < c->ndrains; i++)
		if (!strcmp(c->drains[i].host, host))
			return &c->drains[i];
	return NULL;
}

static const char *drain_state_name(enum drain_state s)
{
	static const char *const names[] = { "starting", "running", "done",
					     "ending" };

	return names[s];
}

/* ---- one round (controller thread) ---- */

/* Load the cluster policy again when its file changed; a broken new file
 * leaves the old policy in force (as ferryd's own reload does). */
static void round_policy(struct controller *c)
{
	struct ferr err;
	struct stat st;

	if (!c->policy_path[0] || stat(c->policy_path, &st) < 0 ||
	    (st.st_mtim.tv_sec == c->policy_mtime.tv_sec &&
	     st.st_mtim.tv_nsec == c->policy_mtime.tv_nsec))
		return;
	c->policy_mtime = st.st_mtim;
	if (policy_reload(&c->policy, c->policy_path, &err) < 0) {
		log_warn("controller: policy not reloaded, the old one stays: "
			 "%s", err.msg);
		audit_rec(c, "balance.policy_reload", c->policy_path, "error",
			  json_pack("{s:s}", "error", err.msg));
		return;
	}
	log_info("controller: policy %s reloaded", c->policy_path);
	audit_rec(c, "balance.policy_reload", c->policy_path, "ok", NULL);
}

/* Mark hosts draining or not, as drains start and end. */
static void round_drains(struct controller *c)
{
	struct ctl_drain work[CTL_HOSTS_MAX];
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->ndrains;
	memcpy(work, c->drains, n * sizeof(work[0]));
	pthread_mutex_unlock(&c->lock);
	for (size_t i = 0; i < n; i++) {
		struct ctl_host *h = host_find(c, work[i].host);
		bool on = work[i].state == DRAIN_STARTING;
		json_t *r = NULL;
		struct ferr err;
		int rc;

		if (work[i].state != DRAIN_STARTING &&
		    work[i].state != DRAIN_ENDING)
			continue;
		rc = call(c, h, "POST", on ? "/v1/host/drain" : "/v1/host/undrain",
			  NULL, &r, &err);
		json_decref(r);
		audit_rec(c, on ? "balance.drain" : "balance.undrain",
			  h->name, rc == 0 ? "ok" : "error",
			  rc == 0 ? NULL : json_pack("{s:s}", "error", err.msg));
		pthread_mutex_lock(&c->lock);
		{
			struct ctl_drain *d = drain_find(c, work[i].host);

			if (d && on) {
				d->state = rc == 0 ? DRAIN_RUNNING : DRAIN_DONE;
				if (rc < 0)
					json_array_append_new(
						d->blocked,
						json_pack("{s:s, s:s+}", "vm",
							  "-", "reason",
							  "cannot mark the host "
							  "draining: ",
							  err.msg));
			} else if (d && rc == 0) {
				json_decref(d->moved);
				json_decref(d->blocked);
				*d = c->drains[--c->ndrains];
			}
		}
		pthread_mutex_unlock(&c->lock);
	}
}

/* Poll every host and report hosts and VMs to the balancer. */
static void round_observe(struct controller *c, uint64_t now_s)
{
	struct ferr err;

	bal_round_begin(c->bal, now_s);
	for (size_t i = 0; i < c->nhosts; i++) {
		struct ctl_host *h = &c->hosts[i];
		struct bal_host_report hr = { 0 };
		json_t *vm;
		size_t k, idx;

		json_decref(h->load);
		h->load = NULL;
		h->up = call(c, h, "GET", "/v1/load", NULL, &h->load, &err) ==
			0;
		if (!h->up) {
			log_debug("controller: %s: %s", h->name, err.msg);
			continue;
		}
		hr.name = h->name;
		hr.cores = (double)json_integer_value(
			json_object_get(h->load, "cpus"));
		hr.mem_mib = (uint64_t)json_integer_value(
			json_object_get(h->load, "memory_total_mib"));
		hr.draining = json_is_true(json_object_get(h->load, "draining"));
		if (bal_host_report(c->bal, &hr, &idx, &err) < 0) {
			log_warn("controller: %s: %s", h->name, err.msg);
			h->up = false;
			continue;
		}
		json_array_foreach(json_object_get(h->load, "vms"), k, vm) {
			const char *name = json_string_value(
				json_object_get(vm, "name"));
			const char *st = json_string_value(
				json_object_get(vm, "state"));
			struct bal_vm_report vr = { 0 };
			struct ctl_vm *v;
			const char *key;
			json_t *val;

			if (!name || !st ||
			    (strcmp(st, "running") && strcmp(st, "paused")))
				continue; /* incoming copies, shut-off VMs */
			v = vm_window(c, name);
			if (!v)
				continue;
			/* a new process (just migrated) has no figure yet:
			 * keep the window from its previous host */
			if (v->seen_round != c->round + 1 &&
			    json_is_number(json_object_get(vm, "cpu_cores"))) {
				v->samples[v->pos] = json_number_value(
					json_object_get(vm, "cpu_cores"));
				v->pos = (v->pos + 1) % c->window;
				if (v->n < c->window)
					v->n++;
			}
			v->seen_round = c->round + 1;
			v->nlabels = 0;
			json_object_foreach(json_object_get(vm, "labels"), key,
					    val) {
				if (v->nlabels == FERRY_VM_LABELS_MAX ||
				    !json_is_string(val))
					break;
				snprintf(v->labels[v->nlabels].key,
					 sizeof(v->labels[0].key), "%s", key);
				snprintf(v->labels[v->nlabels].value,
					 sizeof(v->labels[0].value), "%s",
					 json_string_value(val));
				v->nlabels++;
			}
			vr.name = name;
			vr.host = h->name;
			vr.cpu = window_mean(v);
			vr.mem_mib = (uint64_t)json_integer_value(
				json_object_get(vm, "memory_mib"));
			/* a host's report is hostile input too: only a sane
			 * figure is used, else the rate counts as unknown */
			if (json_is_number(json_object_get(vm, "dirty_mibps"))) {
				double d = json_number_value(
					json_object_get(vm, "dirty_mibps"));

				if (d >= 0 && d <= BAL_DIRTY_MAX_MIBPS)
					vr.dirty_mibps = d;
			}
			vr.pinned = label_of(v, "pin") != NULL;
			vr.affinity = label_of(v, "affinity");
			vr.anti_affinity = label_of(v, "anti-affinity");
			vr.user = v;
			/* in flight while it is still reported by its source;
			 * once on the destination the move is done */
			for (size_t m = 0; m < c->nmoves; m++)
				if (!strcmp(c->moves[m].vm, name) &&
				    !strcmp(c->moves[m].from, h->name))
					vr.migrating_to = c->moves[m].to;
			if (bal_vm_report(c->bal, &vr, &idx, &err) < 0)
				log_warn("controller: vm %s: %s", name,
					 err.msg);
		}
	}
	bal_observe(c->bal);
}

/* Add a moved or blocked entry to the drain of host (entry is stolen).
 * Lock held. */
static void drain_note(struct controller *c, const char *host,
		       const char *key, json_t *entry)
{
	struct ctl_drain *d = drain_find(c, host);

	if (d && d->state == DRAIN_RUNNING)
		json_array_append(!strcmp(key, "moved") ? d->moved : d->blocked,
				  entry);
	json_decref(entry);
}

/* Follow the migrations the controller started. */
static void round_inflight(struct controller *c, uint64_t now_s)
{
	for (size_t i = 0; i < c->nmoves;) {
		struct ctl_move *m = &c->moves[i];
		struct ctl_host *h = host_find(c, m->from);
		char path[128];
		json_t *r = NULL;
		struct ferr err;
		const char *outcome;
		size_t vm;

		snprintf(path, sizeof(path), "/v1/migrations/%s", m->id);
		if (!h || call(c, h, "GET", path, NULL, &r, &err) < 0) {
			i++;
			continue;
		}
		outcome = json_string_value(json_object_get(r, "outcome"));
		if (!outcome || !strcmp(outcome, "running")) {
			json_decref(r);
			i++;
			continue;
		}
		vm = bal_vm_find(c->bal, m->vm);
		if (vm != BAL_NONE)
			bal_done(c->bal, vm, !strcmp(outcome, "completed"),
				 now_s, &err);
		audit_rec(c, "balance.move_done", m->vm, outcome,
			  json_pack("{s:s, s:s, s:s, s:O*}", "from", m->from,
				    "to", m->to, "id", m->id, "error",
				    json_object_get(r, "error")));
		pthread_mutex_lock(&c->lock);
		if (!strcmp(outcome, "completed"))
			drain_note(c, m->from, "moved",
				   json_pack("{s:s, s:s}", "vm", m->vm, "to",
					     m->to));
		else
			drain_note(c, m->from, "blocked",
				   json_pack("{s:s, s:s+}", "vm", m->vm,
					     "reason", "migration failed: ",
					     json_string_value(json_object_get(
						     r, "error"))
						     ?: outcome));
		pthread_mutex_unlock(&c->lock);
		json_decref(r);
		c->moves[i] = c->moves[--c->nmoves];
	}
}

/* Start one planned move on its source host. */
static void start_move(struct controller *c, const struct bal_move *mv,
		       uint64_t now_s)
{
	struct ctl_host *from = host_find(c, mv->from_name);
	struct ctl_host *to = host_find(c, mv->to_name);
	char path[128];
	json_t *body, *r = NULL;
	struct ferr err;
	struct ctl_move *m;

	if (!from || !to)
		return;
	if (c->nmoves == c->capmoves) {
		size_t ncap = c->capmoves ? c->capmoves * 2 : 8;
		struct ctl_move *nm = realloc(c->moves, ncap * sizeof(*nm));

		if (!nm)
			return;
		c->moves = nm;
		c->capmoves = ncap;
	}
	snprintf(path, sizeof(path), "/v1/vms/%s/migrate", mv->vm_name);
	body = json_pack("{s:s, s:s, s:i}", "to", to->name, "address",
			 to->address, "port", (int)to->port);
	if (call(c, from, "POST", path, body, &r, &err) < 0) {
		audit_rec(c, "balance.move", mv->vm_name, "error",
			  json_pack("{s:s, s:s, s:s, s:s}", "from",
				    from->name, "to", to->name, "trigger",
				    bal_trigger_name(mv->trigger), "error",
				    err.msg));
		log_warn("controller: moving %s to %s: %s", mv->vm_name,
			 to->name, err.msg);
		pthread_mutex_lock(&c->lock);
		drain_note(c, from->name, "blocked",
			   json_pack("{s:s, s:s}", "vm", mv->vm_name, "reason",
				     err.msg));
		pthread_mutex_unlock(&c->lock);
		json_decref(body);
		return;
	}
	m = &c->moves[c->nmoves++];
	memset(m, 0, sizeof(*m));
	snprintf(m->vm, sizeof(m->vm), "%s", mv->vm_name);
	snprintf(m->from, sizeof(m->from), "%s", from->name);
	snprintf(m->to, sizeof(m->to), "%s", to->name);
	snprintf(m->id, sizeof(m->id), "%s",
		 json_string_value(json_object_get(r, "id")) ?: "");
	m->started_ms = wall_ms();
	m->drain = mv->trigger == BAL_TRIG_DRAIN;
	bal_moved(c->bal, mv->vm, mv->to, now_s, &err);
	audit_rec(c, "balance.move", mv->vm_name, "started",
		  json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:f}",
			    "id", m->id, "from", from->name, "to", to->name,
			    "trigger", bal_trigger_name(mv->trigger),
			    "from_before", mv->from_before, "from_after",
			    mv->from_after, "to_before", mv->to_before,
			    "to_after", mv->to_after, "improvement",
			    mv->improvement));
	log_info("controller: moving %s from %s to %s (%s, load %.2f -> %.2f)",
		 mv->vm_name, from->name, to->name,
		 bal_trigger_name(mv->trigger), mv->from_before,
		 mv->from_after);
	c->moves_total++;
	json_decref(body);
	json_decref(r);
}

/* Plan, publish, act. */
static void round_plan(struct controller *c, enum ctl_mode mode,
		       uint64_t now_s)
{
	struct bal_plan plan = { 0 };
	struct ferr err;
	json_t *pj;

	if (bal_plan(c->bal, &plan, &err) < 0) {
		log_error("controller: plan: %s", err.msg);
		return;
	}
	pj = bal_plan_json(&plan);
	if (pj)
		json_object_set_new(pj, "mode",
				    json_string(mode_names[mode]));
	for (size_t i = 0; i < plan.nmoves; i++) {
		const struct bal_move *mv = &plan.moves[i];

		if (mode == MODE_AUTO || mv->trigger == BAL_TRIG_DRAIN)
			start_move(c, mv, now_s);
	}
	if (plan.nmoves && mode == MODE_RECOMMEND)
		audit_rec(c, "balance.plan", "-", "recommended",
			  json_pack("{s:I}", "moves", (json_int_t)plan.nmoves));
	pthread_mutex_lock(&c->lock);
	/* drains: what is left, and when they are done */
	for (size_t i = 0; i < c->ndrains; i++) {
		struct ctl_drain *d = &c->drains[i];
		struct ctl_host *h = host_find(c, d->host);
		bool busy = false, planned = false;

		if (d->state != DRAIN_RUNNING || !h || !h->up)
			continue;
		d->remaining = 0;
		{
			size_t k;
			json_t *vm;

			json_array_foreach(json_object_get(h->load, "vms"), k,
					   vm) {
				const char *st = json_string_value(
					json_object_get(vm, "state"));

				if (st && strcmp(st, "incoming") != 0)
					d->remaining++;
			}
		}
		for (size_t m = 0; m < c->nmoves; m++)
			busy |= !strcmp(c->moves[m].from, d->host);
		for (size_t m = 0; m < plan.nmoves; m++)
			planned |= !strcmp(plan.moves[m].from_name, d->host);
		if (d->remaining == 0 && !busy) {
			d->state = DRAIN_DONE;
			continue;
		}
		if (busy || planned) {
			d->idle_rounds = 0;
			continue;
		}
		if (++d->idle_rounds >= CTL_DRAIN_IDLE_ROUNDS) {
			/* nothing movable: report why each VM stays */
			for (size_t b = 0; b < plan.nblocked; b++) {
				const struct bal_blocked *bl = &plan.blocked[b];

				if (bl->vm_name[0] &&
				    !strcmp(bl->host_name, d->host))
					json_array_append_new(
						d->blocked,
						json_pack("{s:s, s:s, s:s}",
							  "vm", bl->vm_name,
							  "code",
							  bal_block_name(
								  bl->code),
							  "reason",
							  bl->reason));
			}
			d->state = DRAIN_DONE;
		}
	}
	json_decref(c->plan);
	c->plan = pj;
	pthread_mutex_unlock(&c->lock);
	bal_plan_free(&plan);
}

/* The status the API serves. Lock held. */
static json_t *build_status(struct controller *c)
{
	struct bal_stats st;
	json_t *hosts = json_array(), *moves = json_array();

	bal_stats(c->bal, &st);
	for (size_t i = 0; i < c->nhosts; i++) {
		const struct ctl_host *h = &c->hosts[i];
		size_t idx = bal_host_find(c->bal, h->name);
		const struct bal_host *bh =
			idx != BAL_NONE ? bal_host_at(c->bal, idx) : NULL;

		json_array_append_new(
			hosts,
			json_pack("{s:s, s:b, s:f, s:f, s:I, s:I, s:I, s:b, "
				  "s:I, s:I}",
				  "name", h->name, "reachable", h->up, "load",
				  bh ? bh->load : 0.0, "cpu_cores",
				  bh ? bh->cpu : 0.0, "cpus",
				  json_integer_value(
					  json_object_get(h->load, "cpus")),
				  "memory_committed_mib",
				  json_integer_value(json_object_get(
					  h->load, "memory_committed_mib")),
				  "memory_total_mib",
				  json_integer_value(json_object_get(
					  h->load, "memory_total_mib")),
				  "draining",
				  json_is_true(
					  json_object_get(h->load, "draining")),
				  "vms",
				  (json_int_t)json_array_size(
					  json_object_get(h->load, "vms")),
				  "hot_rounds",
				  (json_int_t)(bh ? bh->hot_rounds : 0)));
	}
	for (size_t i = 0; i < c->nmoves; i++)
		json_array_append_new(
			moves, json_pack("{s:s, s:s, s:s, s:s, s:I}", "vm",
					 c->moves[i].vm, "from",
					 c->moves[i].from, "to", c->moves[i].to,
					 "id", c->moves[i].id, "started_at",
					 (json_int_t)c->moves[i].started_ms));
	return json_pack("{s:s, s:I, s:I, s:f, s:f, s:I, s:I, s:o, s:o}",
			 "mode", mode_names[c->mode], "round",
			 (json_int_t)c->round, "interval_s",
			 (json_int_t)c->interval_s, "imbalance", st.imbalance,
			 "mean_load", st.mean_load, "hosts_hot",
			 (json_int_t)st.hosts_hot, "moves_total",
			 (json_int_t)c->moves_total, "hosts", hosts,
			 "inflight", moves);
}

static void *ctl_main(void *arg)
{
	struct controller *c = arg;

	for (;;) {
		struct timespec ts;
		uint64_t now_s = wall_ms() / 1000;
		enum ctl_mode mode;
		bool drains;

		pthread_mutex_lock(&c->lock);
		mode = c->mode;
		drains = c->ndrains > 0;
		pthread_mutex_unlock(&c->lock);
		round_policy(c);
		round_drains(c);
		round_observe(c, now_s);
		round_inflight(c, now_s);
		if (mode != MODE_OFF || drains || c->nmoves)
			round_plan(c, mode, now_s);
		prune_windows(c);
		pthread_mutex_lock(&c->lock);
		c->round++;
		json_decref(c->status);
		c->status = build_status(c);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += c->interval_s;
		while (!c->stop && !c->wake)
			if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) ==
			    ETIMEDOUT)
				break;
		c->wake = false;
		if (c->stop) {
			pthread_mutex_unlock(&c->lock);
			return NULL;
		}
		pthread_mutex_unlock(&c->lock);
	}
}

/* ---- the API side ---- */

json_t *controller_status(struct controller *c)
{
	json_t *s;

	pthread_mutex_lock(&c->lock);
	s = c->status ? json_deep_copy(c->status)
		      : json_pack("{s:s, s:I}", "mode", mode_names[c->mode],
				  "round", (json_int_t)0);
	pthread_mutex_unlock(&c->lock);
	return s;
}

json_t *controller_plan(struct controller *c)
{
	json_t *p;

	pthread_mutex_lock(&c->lock);
	p = c->plan ? json_deep_copy(c->plan)
		    : json_pack("{s:s, s:[], s:[], s:s}", "mode",
				mode_names[c->mode], "moves", "blocked",
				"note",
				c->mode == MODE_OFF
					? "the balancer is off"
					: "no round has completed yet");
	pthread_mutex_unlock(&c->lock);
	if (p && !json_object_get(p, "note") &&
	    json_array_size(json_object_get(p, "moves")) == 0)
		json_object_set_new(p, "note",
				    json_string("the cluster needs no move"));
	return p;
}

int controller_set_mode(struct controller *c, const json_t *body,
			json_t **reply, struct ferr *err)
{
	static const char *const fields[] = { "mode", NULL };
	const char *s = NULL;
	int mode = -1;

	if (json_check_fields(body, fields, "balance", err) < 0 ||
	    json_get_string(body, "mode", "balance", 16, &s, err) < 0)
		return -1;
	for (int i = 0; s && i < 3; i++)
		if (!strcmp(s, mode_names[i]))
			mode = i;
	if (mode < 0)
		return ferr_set(err, FERR_INVALID,
				"balance.mode must be off, recommend or auto");
	if (file_write_atomic(c->mode_path, s, strlen(s), 0600, err) < 0)
		return -1;
	pthread_mutex_lock(&c->lock);
	c->mode = (enum ctl_mode)mode;
	c->wake = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	log_info("controller: mode %s", s);
	*reply = json_pack("{s:s}", "mode", s);
	return 0;
}

int controller_drain(struct controller *c, const json_t *body, bool on,
		     json_t **reply, struct ferr *err)
{
	static const char *const fields[] = { "host", NULL };
	const char *host = NULL;
	struct ctl_drain *d;
	int rc = 0;

	if (json_check_fields(body, fields, "drain", err) < 0 ||
	    json_get_string(body, "host", "drain", FERRY_NAME_MAX, &host,
			    err) < 0)
		return -1;
	if (!host || !host_find(c, host))
		return ferr_set(err, FERR_NOT_FOUND,
				"%s is not a host of this balancer's cluster",
				host ? host : "(none)");
	pthread_mutex_lock(&c->lock);
	d = drain_find(c, host);
	if (on) {
		if (!d && c->ndrains < CTL_HOSTS_MAX) {
			d = &c->drains[c->ndrains++];
			memset(d, 0, sizeof(*d));
			snprintf(d->host, sizeof(d->host), "%s", host);
			d->moved = json_array();
			d->blocked = json_array();
			d->remaining = -1;
		}
		if (d) {
			/* a new drain, or another pass of a finished one */
			d->state = DRAIN_STARTING;
			d->idle_rounds = 0;
			d->started_ms = wall_ms();
			json_array_clear(d->blocked);
		}
	} else if (d) {
		d->state = DRAIN_ENDING;
	} else {
		d = &c->drains[c->ndrains++];
		memset(d, 0, sizeof(*d));
		snprintf(d->host, sizeof(d->host), "%s", host);
		d->moved = json_array();
		d->blocked = json_array();
		d->state = DRAIN_ENDING;
	}
	c->wake = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (!d)
		rc = ferr_set(err, FERR_RATE, "too many drains at once");
	else
		*reply = json_pack("{s:s, s:s}", "host", host, "state",
				   on ? "draining" : "undraining");
	return rc;
}

json_t *controller_drains(struct controller *c)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->ndrains; i++) {
		const struct ctl_drain *d = &c->drains[i];

		json_array_append_new(
			arr, json_pack("{s:s, s:s, s:I, s:I, s:O, s:O}",
				       "host", d->host, "state",
				       drain_state_name(d->state), "started_at",
				       (json_int_t)d->started_ms, "remaining",
				       (json_int_t)d->remaining, "moved",
				       d->moved, "blocked", d->blocked));
	}
	pthread_mutex_unlock(&c->lock);
	return json_pack("{s:o}", "drains", arr);
}

/* ---- set-up ---- */

/* Parse cfg->balancer into c. */
static int parse_conf(struct controller *c, const json_t *conf,
		      struct bal_params *params, struct ferr *err)
{
	static const char *const fields[] = { "mode",   "interval_s", "window",
					      "cert",   "key",        "hosts",
					      "policy", "params",     NULL };
	const struct ferryd_config *cfg = c->cfg;
	char cert[FERRY_PATH_MAX], key[FERRY_PATH_MAX], path[FERRY_PATH_MAX];
	const char *s = NULL, *k;
	uint64_t v;
	json_t *h;

	if (json_check_fields(conf, fields, "balancer", err) < 0)
		return -1;
	if (json_get_string(conf, "mode", "balancer", 16, &s, err) < 0)
		return -1;
	c->mode = MODE_RECOMMEND;
	for (int i = 0; s && i < 3; i++)
		if (!strcmp(s, mode_names[i]))
			c->mode = (enum ctl_mode)i;
	if (s && strcmp(s, mode_names[c->mode]) != 0)
		return ferr_set(err, FERR_INVALID,
				"balancer.mode must be off, recommend or auto");
	v = CTL_INTERVAL_S_DEFAULT;
	if (json_get_u64(conf, "interval_s", "balancer", 1, 3600, &v, err) < 0)
		return -1;
	c->interval_s = (unsigned)v;
	v = CTL_WINDOW_DEFAULT;
	if (json_get_u64(conf, "window", "balancer", 1, CTL_WINDOW_MAX, &v,
			 err) < 0)
		return -1;
	c->window = (unsigned)v;
	s = NULL;
	if (json_get_string(conf, "cert", "balancer", FERRY_PATH_MAX - 1, &s,
			    err) < 0 ||
	    !s || path_resolve(cfg->config_dir, s, cert, sizeof(cert), err) < 0)
		return s ? -1
			 : ferr_set(err, FERR_INVALID,
				    "balancer.cert is required (the "
				    "controller's identity)");
	s = NULL;
	if (json_get_string(conf, "key", "balancer", FERRY_PATH_MAX - 1, &s,
			    err) < 0 ||
	    !s || path_resolve(cfg->config_dir, s, key, sizeof(key), err) < 0)
		return s ? -1
			 : ferr_set(err, FERR_INVALID,
				    "balancer.key is required");
	if (tls_cert_identity(cert, c->identity, sizeof(c->identity), err) < 0)
		return -1;
	c->ctx = tls_client_ctx_new(cfg->ca_file, cert, key, err);
	if (!c->ctx)
		return -1;
	if (!json_is_object(json_object_get(conf, "hosts")) ||
	    json_object_size(json_object_get(conf, "hosts")) == 0 ||
	    json_object_size(json_object_get(conf, "hosts")) > CTL_HOSTS_MAX)
		return ferr_set(err, FERR_INVALID,
				"balancer.hosts must name 1..%d hosts "
				"{\"name\": {\"address\", \"port\"}}",
				CTL_HOSTS_MAX);
	json_object_foreach(json_object_get(conf, "hosts"), k, h) {
		static const char *const hf[] = { "address", "port", NULL };
		struct ctl_host *ch = &c->hosts[c->nhosts];
		uint64_t port = FERRY_API_PORT_DEFAULT;

		s = NULL;
		if (!name_is_valid(k))
			return ferr_set(err, FERR_INVALID,
					"balancer.hosts: \"%.64s\" is not a "
					"valid host name",
					k);
		if (json_check_fields(h, hf, "balancer.hosts entry", err) < 0 ||
		    json_get_string(h, "address", "balancer.hosts entry", 63,
				    &s, err) < 0 ||
		    json_get_u64(h, "port", "balancer.hosts entry", 1, 65535,
				 &port, err) < 0)
			return -1;
		if (!s)
			return ferr_set(err, FERR_INVALID,
					"balancer.hosts.%s.address is required",
					k);
		snprintf(ch->name, sizeof(ch->name), "%s", k);
		snprintf(ch->address, sizeof(ch->address), "%s", s);
		ch->port = (uint16_t)port;
		c->nhosts++;
	}
	s = NULL;
	if (json_get_string(conf, "policy", "balancer", FERRY_PATH_MAX - 1, &s,
			    err) < 0)
		return -1;
	path[0] = '\0';
	if (s && path_resolve(cfg->config_dir, s, path, sizeof(path), err) < 0)
		return -1;
	if (!s)
		snprintf(path, sizeof(path), "%s", cfg->policy_file);
	if (path[0]) {
		struct stat st;

		snprintf(c->policy_path, sizeof(c->policy_path), "%s", path);
		if (stat(path, &st) == 0)
			c->policy_mtime = st.st_mtim;
		if (policy_load(path, &c->policy, err) < 0)
			return -1;
	}
	bal_params_default(params);
	if (json_object_get(conf, "params") &&
	    bal_params_from_json(json_object_get(conf, "params"),
				 "balancer.params", params, err) < 0)
		return -1;
	return 0;
}

int controller_new(const struct ferryd_config *cfg, struct audit *audit,
		   struct controller **out, struct ferr *err)
{
	struct controller *c = calloc(1, sizeof(*c));
	struct bal_params params;
	char *text = NULL;
	size_t len = 0;
	struct ferr ignored;

	if (!c)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	c->cfg = cfg;
	c->audit = audit;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	if (parse_conf(c, cfg->balancer, &params, err) < 0 ||
	    bal_cluster_new(&params, &c->bal, err) < 0 ||
	    fmt_checked(c->mode_path, sizeof(c->mode_path), err, "path",
			"%s/%s", cfg->state_dir, MODE_FILE) < 0)
		goto fail;
	/* a mode set through the API survives restarts */
	if (file_read_all(c->mode_path, 16, &text, &len, &ignored) == 0) {
		for (int i = 0; i < 3; i++)
			if (!strcmp(text, mode_names[i]))
				c->mode = (enum ctl_mode)i;
		free(text);
	}
	bal_set_policy(c->bal, policy_allows, c);
	if (pthread_create(&c->thread, NULL, ctl_main, c) != 0) {
		ferr_set(err, FERR_INTERNAL, "cannot start the controller");
		goto fail;
	}
	c->thread_started = true;
	log_info("controller: %zu hosts, mode %s, every %u s, as %s",
		 c->nhosts, mode_names[c->mode], c->interval_s, c->identity);
	*out = c;
	return 0;
fail:
	ferr_wrap(err, "balancer");
	controller_free(c);
	return -1;
}

void controller_free(struct controller *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		pthread_mutex_lock(&c->lock);
		c->stop = true;
		pthread_cond_signal(&c->cond);
		pthread_mutex_unlock(&c->lock);
		pthread_join(c->thread, NULL);
	}
	for (size_t i = 0; i < c->nhosts; i++)
		json_decref(c->hosts[i].load);
	for (size_t i = 0; i < c->nvms; i++)
		free(c->vms[i]);
	free(c->vms);
	free(c->moves);
	for (size_t i = 0; i < c->ndrains; i++) {
		json_decref(c->drains[i].moved);
		json_decref(c->drains[i].blocked);
	}
	json_decref(c->status);
	json_decref(c->plan);
	bal_cluster_free(c->bal);
	policy_free(c->policy);
	SSL_CTX_free(c->ctx);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
