/* control.c - checkpoint HA's API on the loop: enable, disable, planned
 * failover and status of protected VMs (docs/ha.md). */
#define _GNU_SOURCE
#include "ha_int.h"
#include "policy.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- status ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

json_t *ha_pv_json(struct ha_pv *pv)
{
	double sorted[HA_PAUSES_KEPT];
	unsigned n;
	json_t *o;

	pthread_mutex_lock(&pv->lock);
	n = pv->npauses < HA_PAUSES_KEPT ? pv->npauses : HA_PAUSES_KEPT;
	memcpy(sorted, pv->pauses, n * sizeof(double));
	qsort(sorted, n, sizeof(double), cmp_double);
	o = json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:I, s:I, s:I}", "vm",
		pv->name, "uuid", pv->uuid, "role",
		pv->role == HA_PRIMARY ? "primary" : "backup",
		pv->role == HA_PRIMARY ? "backup" : "primary", pv->peer,
		"health", ha_health_name(pv->health), "interval_s",
		(json_int_t)(pv->interval_ms / 1000), "alarm", pv->alarm,
		"checkpoints", (json_int_t)pv->checkpoints, "failures",
		(json_int_t)pv->failures, "lease", (json_int_t)pv->lease);
	json_object_set_new(o, "lease_holder", json_string(pv->holder));
	if (pv->seq)
		json_object_set_new(
			o, "last_checkpoint",
			json_pack("{s:I, s:I, s:I, s:I, s:f}", "seq",
				  (json_int_t)pv->seq, "age_ms",
				  (json_int_t)(wall_ms() - pv->last_wall_ms),
				  "bytes", (json_int_t)pv->last_bytes, "pages",
				  (json_int_t)pv->last_pages, "pause_ms",
				  pv->last_pause_ms));
	if (n)
		json_object_set_new(
			o, "pause_ms",
			json_pack("{s:f, s:f, s:i}", "median", sorted[n / 2],
				  "p99", sorted[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1],
				  "samples", (int)n));
	pthread_mutex_unlock(&pv->lock);
	return o;
}

json_t *ha_status(struct ha *h, const char *vm_name, struct ferr *err)
{
	json_t *arr = json_array();

	for (struct ha_pv *pv = h->pvs; pv; pv = pv->next) {
		if (vm_name && strcmp(pv->name, vm_name) != 0)
			continue;
		json_array_append_new(arr, ha_pv_json(pv));
	}
	if (vm_name && json_array_size(arr) == 0) {
		json_decref(arr);
		ferr_set(err, FERR_NOT_FOUND,
			 "vm %s is not protected by HA on this host", vm_name);
		return NULL;
	}
	if (vm_name) {
		json_t *one = json_incref(json_array_get(arr, 0));

		json_decref(arr);
		return one;
	}
	return json_pack("{s:o, s:b}", "ha", arr, "etcd", h->etcd != NULL);
}

bool ha_knows(struct ha *h, const struct vm *vm)
{
	return ha_find(h, vm->def.uuid) != NULL;
}

void ha_annotate_vm(struct ha *h, const struct vm *vm, json_t *obj)
{
	struct ha_pv *pv = ha_find(h, vm->def.uuid);

	if (!pv)
		return;
	pthread_mutex_lock(&pv->lock);
	json_object_set_new(
		obj, "ha",
		json_pack("{s:s, s:s, s:s}", "role",
			  pv->role == HA_PRIMARY ? "primary" : "backup",
			  "health", ha_health_name(pv->health), "peer",
			  pv->peer));
	pthread_mutex_unlock(&pv->lock);
}

/* ---- the API ---- */

struct enable {
	struct ha *h;
	struct ha_pv *pv;
	bool reuse;         /* re-protect a VM that failed over to here */
	ha_reply_fn fn;
	void *ctx;
	int rc;
	struct ferr err;
};

static void enable_work(void *arg)
{
	struct enable *e = arg;

	e->rc = ha_primary_setup(e->pv, !e->reuse, &e->err);
}

static void enable_done(void *arg)
{
	struct enable *e = arg;
	struct ha_pv *pv = e->pv;

	if (e->rc == 0 && atomic_load(&e->h->stopping))
		e->rc = ferr_set(&e->err, FERR_UNAVAILABLE,
				 "ferryd is stopping");
	if (e->rc == 0 && vmm_find_uuid(e->h->deps.vmm, pv->uuid) == NULL)
		e->rc = ferr_set(&e->err, FERR_CONFLICT,
				 "vm %s went away meanwhile", pv->name);
	if (e->rc == 0) {
		if (pthread_create(&pv->t_main, NULL, ha_primary_main, pv) != 0)
			e->rc = ferr_set(&e->err, FERR_INTERNAL,
					 "cannot start HA threads");
		else
			pv->t_main_on = true;
	}
	if (e->rc == 0) {
		if (!e->reuse) {
			pv->next = e->h->pvs;
			e->h->pvs = pv;
		}
		ha_set_health(pv, HA_SYNCING, NULL);
		ha_record_save(pv);
		log_info("ha: vm %s protected by %s every %llu s", pv->name,
			 pv->peer, (unsigned long long)pv->interval_ms / 1000);
		e->fn(e->ctx, 0, ha_pv_json(pv), NULL);
	} else if (e->reuse) {
		if (pv->sess[0])
			ha_peer_discard(pv); /* a blocking call, but rare */
		pthread_mutex_lock(&pv->lock);
		pv->peer[0] = '\0';
		pv->sess[0] = '\0';
		pthread_mutex_unlock(&pv->lock);
		e->fn(e->ctx, -1, NULL, &e->err);
	} else {
		struct retire r = { .pv = pv, .release = true,
				    .discard_peer = pv->sess[0] != 0 };

		/* joins fast: the threads (if any) see stop at once */
		ha_retire_work(&r);
		ha_pv_free(pv);
		e->fn(e->ctx, -1, NULL, &e->err);
	}
	free(e);
}

int ha_enable(struct ha *h, struct vm *vm, const json_t *body,
	      const char *requester, ha_reply_fn fn, void *ctx,
	      struct ferr *err)
{
	static const char *const fields[] = { "backup", "address", "port",
					      "interval_s", NULL };
	const char *backup = NULL, *addr = NULL;
	uint64_t port = 0, interval = HA_INTERVAL_S_DEFAULT;
	struct policy_decision d;
	struct policy_vm pvm = { vm->def.name, vm->def.labels,
				 vm->def.nlabels };
	struct enable *e;
	struct ha_pv *pv;
	bool reuse;

	if (!h->etcd)
		return ferr_set(err, FERR_UNAVAILABLE,
				"HA needs etcd for its owner leases, and this "
				"host has no etcd section in ferryd.json");
	if (!h->cfg->ram_dir[0])
		return ferr_set(err, FERR_UNAVAILABLE,
				"HA needs the VMs' RAM in shared files: set "
				"ram_dir in ferryd.json");
	if (json_check_fields(body, fields, "request body", err) < 0 ||
	    json_get_string(body, "backup", "request body", FERRY_NAME_MAX,
			    &backup, err) < 0 ||
	    json_get_string(body, "address", "request body", 63, &addr,
			    err) < 0 ||
	    json_get_u64(body, "port", "request body", 1, 65535, &port,
			 err) < 0 ||
	    json_get_u64(body, "interval_s", "request body", 1,
			 HA_INTERVAL_S_MAX, &interval, err) < 0)
		return -1;
	if (!backup || !name_is_valid(backup) || !addr || !port)
		return ferr_set(err, FERR_INVALID,
				"request body: backup, address and port are "
				"required");
	if (h->cfg->etcd.lease_ttl_s * 1000ULL <= 2 * HA_FENCE_MARGIN_MS)
		return ferr_set(err, FERR_INVALID,
				"etcd.lease_ttl_s must be at least %d for HA",
				2 * HA_FENCE_MARGIN_MS / 1000 + 1);
	if (!strcmp(backup, h->cfg->host))
		return ferr_set(err, FERR_INVALID,
				"the backup must be another host");
	pv = ha_find(h, vm->def.uuid);
	/* a VM that failed over to here runs unprotected: protect it again */
	reuse = pv && pv->role == HA_PRIMARY && !pv->t_main_on &&
		pv->t_lease_on && pv->health == HA_UNPROTECTED;
	if (pv && !reuse)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is protected already (or a standby)",
				vm->def.name);
	if (vm->state != VM_RUNNING || vm->incoming)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is not running here", vm->def.name);
	if (vm->def.disk[0] && vm->def.disk_format != DISK_RAW)
		/* the backup's copy is kept raw (docs/ha.md) */
		return ferr_set(err, FERR_CONFLICT,
				"vm %s has a qcow2 disk: HA protects raw "
				"disks only",
				vm->def.name);
	policy_check_out(*h->deps.policy, requester, &pvm, backup, &d);
	if (!d.allow)
		return ferr_set(err, FERR_FORBIDDEN,
				"the policy does not allow %s as vm %s's "
				"backup (%s: %s)",
				backup, vm->def.name, d.rule, d.reason);
	if (!reuse) {
		pv = ha_pv_new(h, HA_PRIMARY, &vm->def, err);
		if (!pv)
			return -1;
	}
	/* attested as a migration to it would be (docs/ha.md) */
	if (migrator_attest_plan(h->deps.mig, d.attest, vm->def.cons.attest,
				 backup, &pv->att, err) < 0) {
		if (!reuse)
			ha_pv_free(pv);
		return -1;
	}
	pthread_mutex_lock(&pv->lock);
	snprintf(pv->requester, sizeof(pv->requester), "%s", requester);
	snprintf(pv->peer, sizeof(pv->peer), "%s", backup);
	snprintf(pv->peer_addr, sizeof(pv->peer_addr), "%s", addr);
	pv->peer_port = (uint16_t)port;
	pv->interval_ms = interval * 1000;
	pv->pid = vm->pid;
	json_decref(pv->def_json);
	pv->def_json = vmdef_to_json(&vm->def);
	/* the figures are of this protection */
	pv->seq = pv->last_bytes = pv->last_pages = 0;
	pv->npauses = 0;
	pv->checkpoints = pv->failures = 0;
	pthread_mutex_unlock(&pv->lock);
	e = calloc(1, sizeof(*e));
	if (e)
		*e = (struct enable){ .h = h, .pv = pv, .reuse = reuse,
				      .fn = fn, .ctx = ctx };
	if (!e || worker_submit(h->deps.pool, enable_work, enable_done, e,
				err) < 0) {
		if (!e)
			ferr_set(err, FERR_INTERNAL, "out of memory");
		if (!reuse)
			ha_pv_free(pv);
		else
			pv->peer[0] = '\0';
		free(e);
		return -1;
	}
	return 0;
}

int ha_disable(struct ha *h, struct vm *vm, const char *requester,
	       bool force, ha_reply_fn fn, void *ctx, struct ferr *err)
{
	struct ha_pv *pv = ha_find(h, vm->def.uuid);
	enum ha_health health;

	(void)requester;
	if (!pv || pv->role != HA_PRIMARY)
		return ferr_set(err, FERR_NOT_FOUND,
				"vm %s is not protected by HA on this host",
				vm->def.name);
	if (force || !pv->peer[0])
		return ha_retire_ext(h, pv, true, true, fn, ctx, err);
	pthread_mutex_lock(&pv->lock);
	health = pv->health;
	pthread_mutex_unlock(&pv->lock);
	if (atomic_load(&pv->recovering) || health == HA_FENCED ||
	    atomic_load(&pv->failover_req) || !pv->t_main_on)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is fenced, switching or being recovered "
				"(%s): its backup %s could still take it over; "
				"try again later, or force it if %s is down "
				"for good",
				vm->def.name, ha_health_name(health), pv->peer,
				pv->peer);
	return ha_retire_careful(h, pv, fn, ctx, err);
}

/* Worker: ask the checkpoint thread for the switch and wait for it. */
struct fo {
	struct ha_pv *pv;
	ha_reply_fn fn;
	void *ctx;
};

static void fo_work(void *arg)
{
	struct fo *f = arg;
	struct ha_pv *pv = f->pv;
	uint64_t deadline = now_ms() + HA_QMP_WAIT_MS + HA_MOVED_WAIT_MS +
			    HA_ACK_TIMEOUT_MS;

	atomic_store(&pv->failover_req, true);
	ha_wake(pv);
	pthread_mutex_lock(&pv->lock);
	while (!pv->failover_done && now_ms() < deadline) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&pv->cond, &pv->lock, &ts);
	}
	if (!pv->failover_done) {
		pv->failover_rc = -1;
		ferr_set(&pv->failover_err, FERR_TIMEOUT,
			 "the switch did not end in time");
	}
	pthread_mutex_unlock(&pv->lock);
}

static void fo_done(void *arg)
{
	struct fo *f = arg;
	struct ha_pv *pv = f->pv;

	if (pv->failover_rc < 0) {
		atomic_store(&pv->failover_req, false);
		f->fn(f->ctx, -1, NULL, &pv->failover_err);
	} else {
		f->fn(f->ctx, 0,
		      json_pack("{s:s, s:s}", "vm", pv->name, "runs_on",
				pv->peer),
		      NULL);
		ha_moved_now(pv->h, pv, pv->peer);
	}
	free(f);
}

int ha_failover(struct ha *h, struct vm *vm, const char *requester,
		ha_reply_fn fn, void *ctx, struct ferr *err)
{
	struct ha_pv *pv = ha_find(h, vm->def.uuid);
	struct fo *f;

	(void)requester;
	if (!pv || pv->role != HA_PRIMARY)
		return ferr_set(err, FERR_NOT_FOUND,
				"vm %s is not protected by HA on this host",
				vm->def.name);
	pthread_mutex_lock(&pv->lock);
	bool ready = pv->seq > 0 && pv->health == HA_OK;
	pthread_mutex_unlock(&pv->lock);
	if (!ready || atomic_load(&pv->failover_req))
		return ferr_set(err, FERR_CONFLICT,
				"vm %s has no healthy backup to switch to",
				vm->def.name);
	f = calloc(1, sizeof(*f));
	if (!f)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	*f = (struct fo){ pv, fn, ctx };
	if (worker_submit(h->deps.pool, fo_work, fo_done, f, err) < 0) {
		free(f);
		return -1;
	}
	return 0;
}
