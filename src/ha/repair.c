/* repair.c - protection that follows a protected VM (docs/ha.md, "After
 * a failover or a migration"), on the loop thread:
 *
 *  - re-protection: a VM that runs here unprotected after a takeover, or
 *    that arrived by migration while protected (adopted), gets a new
 *    backup: the one it had (a migration, unless it is this host), else
 *    the first of ferryd.json's "ha_peers" the policy allows and that
 *    prepares a standby, the host the VM left last. None: unprotected
 *    with the reason, tried again with backoff;
 *  - migration of a protected VM: its protection ends in order first
 *    (checkpoints stopped, the standby discarded, the lease released), so
 *    no backup can start the VM during or after the move; the source then
 *    follows the migration: moved, it asks the destination to adopt the
 *    VM's protection; failed, it protects the VM again with the same
 *    backup. */
#define _GNU_SOURCE
#include "ha_int.h"
#include "httpc.h"
#include "policy.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HA_RP_FIRST_MS 3000    /* the first retry when no backup took it */
#define HA_RP_MAX_MS 30000     /* ... doubling up to this */
#define HA_FOLLOW_POLL_MS 500  /* source: the migration's end */
#define HA_FOLLOW_MAX_MS (6ULL * 3600 * 1000) /* ... at most this long */
#define HA_ADOPT_TRIES 3
#define HA_GONE_WAIT_MS 15000  /* the backup drops its standby's VM */

enum rp_kind { RP_REPROTECT, RP_FOLLOW };

/* A VM choosing a backup (RP_REPROTECT), or a migration of a protected VM
 * this host follows (RP_FOLLOW). */
struct ha_rp {
	struct ha *h;
	enum rp_kind kind;
	char uuid[FERRY_UUID_STR_LEN + 1];
	char name[FERRY_NAME_MAX + 1];
	char requester[FERRY_NAME_MAX + 1];
	char after[16];              /* "failover" or "migration" */
	uint64_t interval_s;
	/* RP_REPROTECT: the candidates in order, the next to try */
	struct ha_peer_cfg order[FERRY_HA_PEERS_MAX + 1];
	size_t n, next;
	char why[FERRY_ERR_MSG_MAX];
	uint64_t backoff_ms;
	bool told;                   /* ha.unprotected audited */
	/* RP_FOLLOW: the backup it had, where it went */
	struct ha_peer_cfg backup, dest;
	uint64_t deadline;
	int rc;                      /* the adoption's */
	struct ferr err;
	bool busy;                   /* a call in flight (owns rp) */
	bool dead;                   /* ha_stop: freed by that call */
	struct event *ev;
	struct ha_rp *next_rp;
};

static void rp_free(struct ha_rp *rp)
{
	for (struct ha_rp **pp = &rp->h->rps; *pp; pp = &(*pp)->next_rp)
		if (*pp == rp) {
			*pp = rp->next_rp;
			break;
		}
	if (rp->ev)
		event_free(rp->ev);
	free(rp);
}

static void rp_fire(evutil_socket_t fd, short what, void *arg);

/* Run rp's next step in ms; when it cannot be scheduled, rp is freed. */
static void rp_later(struct ha_rp *rp, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000),
			      (suseconds_t)(ms % 1000) * 1000 };

	if (!rp->ev)
		rp->ev = event_new(rp->h->base, -1, 0, rp_fire, rp);
	if (!rp->ev || event_add(rp->ev, &tv) < 0) {
		log_error("ha: vm %s: cannot schedule its re-protection",
			  rp->name);
		rp_free(rp);
	}
}

static struct ha_rp *rp_new(struct ha *h, enum rp_kind kind,
			    const struct ha_pv *pv, const char *after)
{
	struct ha_rp *rp;

	if (atomic_load(&h->stopping))
		return NULL; /* ha_stop dropped the others already */
	rp = calloc(1, sizeof(*rp));
	if (!rp) {
		log_error("ha: vm %s: out of memory", pv->name);
		return NULL;
	}
	rp->h = h;
	rp->kind = kind;
	snprintf(rp->uuid, sizeof(rp->uuid), "%s", pv->uuid);
	snprintf(rp->name, sizeof(rp->name), "%s", pv->name);
	snprintf(rp->requester, sizeof(rp->requester), "%s", pv->requester);
	snprintf(rp->after, sizeof(rp->after), "%s", after);
	rp->interval_s = pv->interval_ms / 1000 ? pv->interval_ms / 1000
						: HA_INTERVAL_S_DEFAULT;
	rp->backoff_ms = HA_RP_FIRST_MS;
	rp->next_rp = h->rps;
	h->rps = rp;
	return rp;
}

static void why_add(struct ha_rp *rp, const char *host, const char *msg)
{
	size_t len = strlen(rp->why);

	/* most errors name the host already */
	snprintf(rp->why + len, sizeof(rp->why) - len, "%s%s%s%s",
		 len ? "; " : "", strstr(msg, host) ? "" : host,
		 strstr(msg, host) ? "" : ": ", msg);
}

/* ---- re-protection ---- */

static void rp_step(struct ha_rp *rp);

static void on_reprotected(void *ctx, int rc, json_t *reply,
			   const struct ferr *err)
{
	struct ha_rp *rp = ctx;
	const struct ha_peer_cfg *c = &rp->order[rp->next - 1];

	json_decref(reply);
	rp->busy = false;
	if (rp->dead) {
		free(rp);
		return;
	}
	if (rc == 0) {
		log_info("ha: vm %s: protected again, by %s (after a %s)",
			 rp->name, c->host, rp->after);
		ha_audit(rp->h, "-", "ha.reprotected", rp->name, "ok",
			 json_pack("{s:s, s:s, s:s}", "uuid", rp->uuid,
				   "backup", c->host, "after", rp->after));
		rp_free(rp);
		return;
	}
	why_add(rp, c->host, err->msg);
	rp_later(rp, 0);
}

/* The VM runs here unprotected: try the next candidate; none left: say
 * why, and start again later. */
static void rp_step(struct ha_rp *rp)
{
	struct ha *h = rp->h;
	struct vm *vm = vmm_find_uuid(h->deps.vmm, rp->uuid);
	struct ha_pv *pv = ha_find(h, rp->uuid);
	enum ha_health health;
	char msg[FERRY_ERR_MSG_MAX];
	uint64_t wait_ms;

	if (!vm || vm->leaving || !pv || pv->role != HA_PRIMARY ||
	    pv->t_main_on || !pv->t_lease_on) {
		rp_free(rp); /* gone, or protected by someone else */
		return;
	}
	pthread_mutex_lock(&pv->lock);
	health = pv->health;
	pthread_mutex_unlock(&pv->lock);
	if (health != HA_UNPROTECTED || vm->incoming ||
	    vm->state != VM_RUNNING || vm->hold.owner[0]) {
		rp_later(rp, 500); /* fenced, committing, held: not yet */
		return;
	}
	if (rp->n == 0) {
		ha_set_alarm(pv, "unprotected: no other host is allowed as its "
				 "backup (ferryd.json ha_peers is empty)");
		rp_free(rp);
		return;
	}
	while (rp->next < rp->n) {
		const struct ha_peer_cfg *c = &rp->order[rp->next++];
		json_t *body = json_pack("{s:s, s:s, s:i, s:I}", "backup",
					 c->host, "address", c->address, "port",
					 (int)c->port, "interval_s",
					 (json_int_t)rp->interval_s);
		struct ferr err = { 0 };
		int rc = body ? ha_enable(h, vm, body, rp->requester,
					  on_reprotected, rp, &err)
			      : ferr_set(&err, FERR_INTERNAL, "out of memory");

		json_decref(body);
		if (rc == 0) {
			rp->busy = true;
			return;
		}
		why_add(rp, c->host, err.msg);
	}
	snprintf(msg, sizeof(msg),
		 "unprotected: no backup took it (%s); trying again in %llu s",
		 rp->why, (unsigned long long)rp->backoff_ms / 1000);
	ha_set_health(pv, HA_UNPROTECTED, msg);
	if (!rp->told)
		ha_audit(h, "-", "ha.unprotected", rp->name, "error",
			 json_pack("{s:s, s:s, s:s}", "uuid", rp->uuid,
				   "after", rp->after, "reason", rp->why));
	rp->told = true;
	rp->next = 0;
	rp->why[0] = '\0';
	wait_ms = rp->backoff_ms;
	rp->backoff_ms = rp->backoff_ms * 2 > HA_RP_MAX_MS ? HA_RP_MAX_MS
							 : rp->backoff_ms * 2;
	rp_later(rp, wait_ms); /* last: on failure it frees rp */
}

/* Choose pv's backup: prefer (may be NULL) first, `last` last. */
static void reprotect(struct ha *h, struct ha_pv *pv,
		      const struct ha_peer_cfg *prefer, const char *last,
		      const char *after)
{
	struct ha_rp *rp = rp_new(h, RP_REPROTECT, pv, after);

	if (!rp)
		return;
	rp->n = ha_cand_order(h->cfg->ha_peers, h->cfg->n_ha_peers, prefer,
			      h->cfg->host, last, rp->order,
			      sizeof(rp->order) / sizeof(rp->order[0]));
	pthread_mutex_lock(&pv->lock);
	pv->sess[0] = '\0'; /* the standby's session, ended */
	pthread_mutex_unlock(&pv->lock);
	ha_set_health(pv, HA_UNPROTECTED, "choosing a new backup");
	rp_later(rp, 0);
}

void ha_reprotect_after_failover(struct ha *h, struct ha_pv *pv,
				 const char *left)
{
	reprotect(h, pv, NULL, left, "failover");
}

/* ---- a migrated VM, adopted by its destination ---- */

struct adopt {
	struct ha *h;
	struct ha_pv *pv;
	struct ha_peer_cfg backup;
	char from[FERRY_NAME_MAX + 1];
	ha_reply_fn fn;
	void *ctx;
	int rc;
	struct ferr err;
};

/* Worker: own the VM in etcd (the source released the key before the
 * move), and renew, as after a takeover. */
static void adopt_work(void *arg)
{
	struct adopt *a = arg;

	a->rc = ha_lease_take(a->pv, &a->err);
	if (a->rc == 0 &&
	    pthread_create(&a->pv->t_lease, NULL, ha_lease_main, a->pv) != 0) {
		struct ferr e2;

		etcd_lease_revoke(a->h->etcd, a->pv->lease, 0, &e2);
		a->rc = ferr_set(&a->err, FERR_INTERNAL,
				 "cannot start the lease thread");
	}
	if (a->rc == 0)
		a->pv->t_lease_on = true;
}

static void adopt_done(void *arg)
{
	struct adopt *a = arg;
	struct ha_pv *pv = a->pv;
	struct vm *vm = vmm_find_uuid(a->h->deps.vmm, pv->uuid);

	if (a->rc == 0 && (!vm || ha_find(a->h, pv->uuid) ||
			   atomic_load(&a->h->stopping))) {
		/* went away, protected meanwhile, or ferryd stops */
		struct retire r = { .pv = pv, .release = true };

		ha_retire_work(&r);
		a->rc = ferr_set(&a->err, FERR_CONFLICT,
				 "vm %s changed meanwhile", pv->name);
	}
	if (a->rc < 0) {
		ha_audit(a->h, a->from, "ha.adopt", pv->name, "error",
			 json_pack("{s:s, s:s}", "uuid", pv->uuid, "error",
				   a->err.msg));
		ha_pv_free(pv);
		a->fn(a->ctx, -1, NULL, &a->err);
		free(a);
		return;
	}
	pv->next = a->h->pvs;
	a->h->pvs = pv;
	pthread_mutex_lock(&pv->lock);
	pv->role = HA_PRIMARY;
	pv->health = HA_UNPROTECTED;
	pthread_mutex_unlock(&pv->lock);
	ha_record_save(pv); /* its owner lease, after a restart too */
	ha_audit(a->h, a->from, "ha.adopt", pv->name, "ok",
		 json_pack("{s:s, s:s, s:s}", "uuid", pv->uuid, "from",
			   a->from, "backup", a->backup.host));
	reprotect(a->h, pv, &a->backup, NULL, "migration");
	a->fn(a->ctx, 0, json_pack("{s:s, s:s}", "vm", pv->name, "backup",
				   "choosing"), NULL);
	free(a);
}

int ha_adopt(struct ha *h, const json_t *body, const char *peer,
	     ha_reply_fn fn, void *ctx, struct ferr *err)
{
	static const char *const fields[] = { "vm", "uuid", "backup",
					      "address", "port", "interval_s",
					      "requester", NULL };
	const char *name = NULL, *uuid = NULL, *backup = NULL, *addr = NULL,
		   *requester = NULL;
	uint64_t port = 0, interval = HA_INTERVAL_S_DEFAULT;
	struct adopt *a;
	struct vm *vm;

	if (!h->etcd || !h->cfg->ram_dir[0])
		return ferr_set(err, FERR_UNAVAILABLE,
				"this host cannot protect VMs: it needs etcd "
				"and ram_dir in ferryd.json");
	if (json_check_fields(body, fields, "request body", err) < 0 ||
	    json_get_string(body, "vm", "request body", FERRY_NAME_MAX, &name,
			    err) < 0 ||
	    json_get_string(body, "uuid", "request body", FERRY_UUID_STR_LEN,
			    &uuid, err) < 0 ||
	    json_get_string(body, "backup", "request body", FERRY_NAME_MAX,
			    &backup, err) < 0 ||
	    json_get_string(body, "address", "request body", 63, &addr,
			    err) < 0 ||
	    json_get_u64(body, "port", "request body", 1, 65535, &port,
			 err) < 0 ||
	    json_get_u64(body, "interval_s", "request body", 1,
			 HA_INTERVAL_S_MAX, &interval, err) < 0 ||
	    json_get_string(body, "requester", "request body", FERRY_NAME_MAX,
			    &requester, err) < 0)
		return -1;
	if (!name || !uuid || !backup || !name_is_valid(backup) || !addr ||
	    !port || !requester)
		return ferr_set(err, FERR_INVALID,
				"request body: vm, uuid, backup, address, "
				"port and requester are required");
	vm = vmm_find(h->deps.vmm, name);
	if (!vm || strcmp(vm->def.uuid, uuid) != 0 || vm->leaving)
		return ferr_set(err, FERR_NOT_FOUND, "no VM %s (%s) here", name,
				uuid);
	if (ha_find(h, uuid))
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is protected already", name);
	if (vm->pid <= 0 || vm->incoming)
		return ferr_set(err, FERR_CONFLICT, "vm %s does not run here",
				name);
	a = calloc(1, sizeof(*a));
	if (!a)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	a->pv = ha_pv_new(h, HA_PRIMARY, &vm->def, err);
	if (!a->pv) {
		free(a);
		return -1;
	}
	a->h = h;
	a->fn = fn;
	a->ctx = ctx;
	snprintf(a->from, sizeof(a->from), "%s", peer);
	snprintf(a->backup.host, sizeof(a->backup.host), "%s", backup);
	snprintf(a->backup.address, sizeof(a->backup.address), "%s", addr);
	a->backup.port = (uint16_t)port;
	a->pv->pid = vm->pid;
	a->pv->interval_ms = interval * 1000;
	snprintf(a->pv->requester, sizeof(a->pv->requester), "%s", requester);
	if (worker_submit(h->deps.pool, adopt_work, adopt_done, a, err) < 0) {
		ha_pv_free(a->pv);
		free(a);
		return -1;
	}
	return 0;
}

/* ---- the source of a protected VM's migration ---- */

static int call_host(struct ha *h, const struct ha_peer_cfg *to,
		     const char *method, const char *path, const json_t *body,
		     struct ferr *err)
{
	struct httpc_peer p = { to->host, to->address, to->port, true,
				h->cfg->listen_addr };
	json_t *reply = NULL;
	int rc = httpc_call(h->client_ctx, &p, HA_PEER_TIMEOUT_S, method,
			    path, body, &reply, err);

	json_decref(reply);
	return rc;
}

struct mprep {
	struct ha *h;
	struct ha_pv *pv;
	struct ha_peer_cfg dest;
	ha_reply_fn fn;
	void *ctx;
	int rc;
	struct ferr err;
};

/* Worker: end the protection so that no backup can start the VM: the
 * checkpoints first, then the standby (its discard must succeed, else the
 * VM stays protected here and does not move), then the lease. */
static void mprep_work(void *arg)
{
	struct mprep *m = arg;
	struct ha_pv *pv = m->pv;
	struct ferr e2;

	if (ha_standby_end(pv, &m->err) < 0) {
		m->rc = ferr_wrap(&m->err, "vm %s is not migrated", pv->name);
		return;
	}
	if (pv->peer[0] && !strcmp(pv->peer, m->dest.host)) {
		/* to the backup itself: its standby's VM must be gone first */
		uint64_t deadline = now_ms() + HA_GONE_WAIT_MS;
		struct ha_peer_cfg b = { .port = pv->peer_port };
		char path[FERRY_NAME_MAX + 16];

		snprintf(b.host, sizeof(b.host), "%s", pv->peer);
		snprintf(b.address, sizeof(b.address), "%s", pv->peer_addr);
		snprintf(path, sizeof(path), "/v1/vms/%s", pv->name);
		while (call_host(m->h, &b, "GET", path, NULL, &e2) == 0 &&
		       now_ms() < deadline)
			ha_wait(pv, 200);
	}
	atomic_store(&pv->stop, true);
	ha_wake(pv);
	if (pv->t_lease_on)
		pthread_join(pv->t_lease, NULL);
	pv->t_lease_on = false;
	ha_fence_stop(pv, true); /* no standby is left to take the VM */
	if (pv->lease && etcd_lease_revoke(m->h->etcd, pv->lease, 0, &e2) < 0)
		log_warn("ha: vm %s: releasing the lease: %s (it lapses)",
			 pv->name, e2.msg);
	m->rc = 0;
}

static void mprep_done(void *arg)
{
	struct mprep *m = arg;
	struct ha *h = m->h;
	struct ha_pv *pv = m->pv;
	struct vm *vm = vmm_find_uuid(h->deps.vmm, pv->uuid);
	struct ha_rp *rp;

	if (vm)
		vm_release(vm, "ha-migrate");
	if (m->rc < 0 && atomic_load(&h->stopping)) {
		struct retire r = { .pv = pv };

		/* ha_stop is past: end it here; the standby may still take
		 * the VM, so pv_free's agent freezes it (the safe default) */
		ha_retire_work(&r);
		m->fn(m->ctx, -1, NULL, &m->err);
		ha_pv_free(pv);
		free(m);
		return;
	}
	if (m->rc < 0) {
		pv->next = h->pvs; /* still protected */
		h->pvs = pv;
		m->fn(m->ctx, -1, NULL, &m->err);
		free(m);
		return;
	}
	ha_record_drop(h, pv->uuid); /* a failed migration writes it anew */
	ha_audit(h, "-", "ha.disable", pv->name, "ok",
		 json_pack("{s:s, s:s, s:s, s:s}", "uuid", pv->uuid, "reason",
			   "migration", "to", m->dest.host, "backup",
			   pv->peer));
	rp = rp_new(h, RP_FOLLOW, pv, "migration");
	if (rp) {
		snprintf(rp->backup.host, sizeof(rp->backup.host), "%s",
			 pv->peer);
		snprintf(rp->backup.address, sizeof(rp->backup.address), "%s",
			 pv->peer_addr);
		rp->backup.port = pv->peer_port;
		rp->dest = m->dest;
		rp->deadline = now_ms() + HA_FOLLOW_MAX_MS;
		rp_later(rp, HA_FOLLOW_POLL_MS);
	}
	m->fn(m->ctx, 0,
	      json_pack("{s:s, s:s}", "protection", "follows", "backup",
			pv->peer),
	      NULL);
	ha_pv_free(pv);
	free(m);
}

int ha_migrate(struct ha *h, struct vm *vm, const json_t *body,
	       const char *requester, ha_reply_fn fn, void *ctx,
	       struct ferr *err)
{
	struct ha_pv *pv = ha_find(h, vm->def.uuid);
	struct policy_vm pvm = { vm->def.name, vm->def.labels,
				 vm->def.nlabels };
	struct policy_decision d;
	const char *to, *addr;
	json_int_t port;
	struct mprep *m;
	bool busy;

	if (!pv)
		return ferr_set(err, FERR_INTERNAL, "vm %s is not protected",
				vm->def.name);
	pthread_mutex_lock(&pv->lock);
	busy = pv->health == HA_FENCED || pv->health == HA_STANDBY;
	pthread_mutex_unlock(&pv->lock);
	if (pv->role != HA_PRIMARY || busy || atomic_load(&pv->recovering) ||
	    atomic_load(&pv->failover_req) || (!pv->t_main_on && pv->peer[0]))
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is a standby, fenced, switching or "
				"being protected here: not now",
				vm->def.name);
	/* the migration checks the body itself; HA needs where it goes */
	to = json_string_value(json_object_get(body, "to"));
	addr = json_string_value(json_object_get(body, "address"));
	port = json_object_get(body, "port")
		       ? json_integer_value(json_object_get(body, "port"))
		       : FERRY_API_PORT_DEFAULT;
	if (!to || !name_is_valid(to) || !addr || strlen(addr) > 63 ||
	    port < 1 || port > 65535)
		return ferr_set(err, FERR_INVALID,
				"migration: to, address (and port) name the "
				"destination");
	policy_check_out(*h->deps.policy, requester, &pvm, to, &d);
	if (!d.allow)
		return ferr_set(err, FERR_FORBIDDEN, "%s", d.reason);
	m = calloc(1, sizeof(*m));
	if (!m)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	*m = (struct mprep){ .h = h, .pv = pv, .fn = fn, .ctx = ctx };
	snprintf(m->dest.host, sizeof(m->dest.host), "%s", to);
	snprintf(m->dest.address, sizeof(m->dest.address), "%s", addr);
	m->dest.port = (uint16_t)port;
	snprintf(pv->requester, sizeof(pv->requester), "%s", requester);
	if (worker_submit(h->deps.pool, mprep_work, mprep_done, m, err) < 0) {
		free(m);
		return -1;
	}
	/* out of the registry (its exit is no failover now), and held: no
	 * other change while the protection ends */
	for (struct ha_pv **pp = &h->pvs; *pp; pp = &(*pp)->next)
		if (*pp == pv) {
			*pp = pv->next;
			break;
		}
	vm_hold(vm, "ha-migrate", "", false);
	return 0;
}

/* Worker: ask the destination to protect the VM that just arrived. */
static void adopt_call_work(void *arg)
{
	struct ha_rp *rp = arg;
	json_t *body = json_pack(
		"{s:s, s:s, s:s, s:s, s:i, s:I, s:s}", "vm", rp->name, "uuid",
		rp->uuid, "backup", rp->backup.host, "address",
		rp->backup.address, "port", (int)rp->backup.port, "interval_s",
		(json_int_t)rp->interval_s, "requester", rp->requester);

	for (int i = 0; i < HA_ADOPT_TRIES; i++) {
		rp->rc = call_host(rp->h, &rp->dest, "POST", "/v1/ha/adopt",
				   body, &rp->err);
		if (rp->rc == 0 || rp->err.code == FERR_FORBIDDEN ||
		    rp->err.code == FERR_INVALID)
			break;
		usleep(1000 * 1000); /* the VM may still be committing there */
	}
	json_decref(body);
}

static void adopt_call_done(void *arg)
{
	struct ha_rp *rp = arg;

	rp->busy = false;
	if (rp->dead) {
		free(rp);
		return;
	}
	if (rp->rc < 0)
		log_error("ha: vm %s moved to %s unprotected: %s", rp->name,
			  rp->dest.host, rp->err.msg);
	ha_audit(rp->h, "-", "ha.follow", rp->name, rp->rc ? "error" : "ok",
		 json_pack("{s:s, s:s, s:s, s:s}", "uuid", rp->uuid, "to",
			   rp->dest.host, "backup", rp->backup.host, "error",
			   rp->rc ? rp->err.msg : ""));
	rp_free(rp);
}

static void on_back_here(void *ctx, int rc, json_t *reply,
			 const struct ferr *err)
{
	struct ha_rp *rp = ctx;

	json_decref(reply);
	rp->busy = false;
	if (rp->dead) {
		free(rp);
		return;
	}
	ha_audit(rp->h, "-", "ha.reprotected", rp->name, rc ? "error" : "ok",
		 json_pack("{s:s, s:s, s:s, s:s}", "uuid", rp->uuid, "backup",
			   rp->backup.host, "after", "failed migration",
			   "error", rc ? err->msg : ""));
	rp_free(rp);
}

/* The migration of a VM whose protection ended here: still here and not
 * migrating (it failed): protect it again; gone: the destination adopts
 * its protection. */
static void follow_step(struct ha_rp *rp)
{
	struct ha *h = rp->h;
	struct vm *vm = vmm_find_uuid(h->deps.vmm, rp->uuid);
	struct ferr err = { 0 };

	if (now_ms() > rp->deadline) {
		log_warn("ha: vm %s: its migration did not end: no longer "
			 "followed", rp->name);
		rp_free(rp);
		return;
	}
	if (vm && !vm->leaving) {
		json_t *body;
		int rc;

		if (vm->hold.owner[0] || vm->incoming) {
			rp_later(rp, HA_FOLLOW_POLL_MS);
			return;
		}
		if (vm->state != VM_RUNNING) {
			log_warn("ha: vm %s is %s after a failed migration: "
				 "not protected again",
				 rp->name, vm_state_name(vm->state));
			rp_free(rp);
			return;
		}
		body = json_pack("{s:s, s:s, s:i, s:I}", "backup",
				 rp->backup.host, "address",
				 rp->backup.address, "port",
				 (int)rp->backup.port, "interval_s",
				 (json_int_t)rp->interval_s);
		rc = ha_enable(h, vm, body, rp->requester, on_back_here, rp,
			       &err);
		json_decref(body);
		if (rc == 0) {
			rp->busy = true;
			return;
		}
		on_back_here(rp, -1, NULL, &err);
		return;
	}
	if (worker_submit(h->deps.pool, adopt_call_work, adopt_call_done, rp,
			  &err) < 0) {
		rp_later(rp, HA_FOLLOW_POLL_MS);
		return;
	}
	rp->busy = true;
}

static void rp_fire(evutil_socket_t fd, short what, void *arg)
{
	struct ha_rp *rp = arg;

	(void)fd;
	(void)what;
	if (atomic_load(&rp->h->stopping))
		return;
	if (rp->kind == RP_FOLLOW)
		follow_step(rp);
	else
		rp_step(rp);
}

void ha_repair_stop(struct ha *h)
{
	while (h->rps) {
		struct ha_rp *rp = h->rps;

		h->rps = rp->next_rp;
		if (rp->ev)
			event_free(rp->ev);
		rp->ev = NULL;
		if (rp->busy)
			rp->dead = true; /* its call frees it */
		else
			free(rp);
	}
}
