/* ha.c - checkpoint HA on the loop: the registry of protected VMs and
 * standbys, the API, the VM exit hook, and the calls HA's threads make to
 * the loop (docs/ha.md). */
#define _GNU_SOURCE
#include "ha_int.h"
#include "audit.h"
#include "tls.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

const char *ha_health_name(enum ha_health s)
{
	static const char *const names[] = { "syncing",	 "ok",
					      "degraded", "fenced",
					      "unprotected", "standby" };

	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s]
							      : "unknown";
}

void ha_audit(struct ha *h, const char *actor, const char *action,
	      const char *target, const char *outcome, json_t *detail)
{
	struct ferr err;

	if (audit_log(h->deps.audit, actor, action, target, outcome, detail,
		      &err) < 0)
		log_error("audit: %s", err.msg);
}

struct ha_pv *ha_pv_new(struct ha *h, enum ha_role role,
			const struct vm_def *def, struct ferr *err)
{
	struct ha_pv *pv = calloc(1, sizeof(*pv));
	pthread_condattr_t ca;

	if (!pv) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	pv->h = h;
	pv->role = role;
	snprintf(pv->name, sizeof(pv->name), "%s", def->name);
	snprintf(pv->uuid, sizeof(pv->uuid), "%s", def->uuid);
	snprintf(pv->owner_key, sizeof(pv->owner_key), "ha/vm/%s/owner",
		 def->uuid);
	pthread_mutex_init(&pv->lock, NULL);
	pthread_mutex_init(&pv->apply_lock, NULL);
	/* ha_wait's deadlines are on the monotonic clock */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&pv->cond, &ca);
	pthread_condattr_destroy(&ca);
	pv->health = role == HA_BACKUP ? HA_STANDBY : HA_SYNCING;
	pv->disk_fd = pv->stage_fd = pv->target_fd = pv->agent_fd = -1;
	pv->interval_ms = HA_INTERVAL_S_DEFAULT * 1000ULL;
	if (fmt_checked(pv->run_sock, sizeof(pv->run_sock), err, "path",
			"%s/run/%s.ha", h->cfg->state_dir, def->uuid) < 0 ||
	    (h->cfg->ram_dir[0] &&
	     (fmt_checked(pv->ram_path, sizeof(pv->ram_path), err, "path",
			  "%s/%s.ram", h->cfg->ram_dir, def->uuid) < 0 ||
	      fmt_checked(pv->disk_target, sizeof(pv->disk_target), err,
			  "path", "%s/run/%s.ckpt-disk", h->cfg->state_dir,
			  def->uuid) < 0 ||
	      fmt_checked(pv->disk_stage, sizeof(pv->disk_stage), err, "path",
			  "%s/%s.stage-disk", h->cfg->ram_dir, def->uuid) < 0)) ||
	    (def->disk[0] &&
	     fmt_checked(pv->disk_path, sizeof(pv->disk_path), err, "path",
			 "%s/%s", h->cfg->shared_dir, def->disk) < 0)) {
		ha_pv_free(pv);
		return NULL;
	}
	return pv;
}

static void unmap(uint8_t **p, size_t len)
{
	if (*p)
		munmap(*p, len);
	*p = NULL;
}

/* After its threads were joined. */
void ha_pv_free(struct ha_pv *pv)
{
	if (!pv)
		return;
	migrator_attest_clear(&pv->att);
	/* an agent nobody disarmed freezes its QEMU now: its VM may run
	 * elsewhere, or soon will */
	ha_fence_stop(pv, false);
	unmap(&pv->ram, pv->ram_size);
	unmap(&pv->snap, pv->ram_size);
	unmap(&pv->shadow, pv->ram_size);
	unmap(&pv->stage, pv->ram_size);
	free(pv->stage_bits);
	if (pv->disk_fd >= 0)
		close(pv->disk_fd);
	if (pv->stage_fd >= 0)
		close(pv->stage_fd);
	if (pv->target_fd >= 0)
		close(pv->target_fd);
	if (pv->ram_path[0]) {
		unlink(pv->disk_target);
		unlink(pv->disk_stage);
	}
	if (pv->role == HA_BACKUP && !pv->taken && pv->disk_fd >= 0)
		unlink(pv->disk_path); /* a standby's copy, never used */
	free(pv->dev);
	free(pv->dev_ok);
	json_decref(pv->def_json);
	OPENSSL_cleanse(pv->key, sizeof(pv->key));
	pthread_mutex_destroy(&pv->lock);
	pthread_mutex_destroy(&pv->apply_lock);
	pthread_cond_destroy(&pv->cond);
	free(pv);
}

int ha_map_ram(struct ha_pv *pv, bool writable, struct ferr *err)
{
	struct stat st;
	int fd = open(pv->ram_path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);

	if (fd < 0)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s has no shared RAM file %s (%s): start "
				"it with ram_dir set in ferryd.json",
				pv->name, pv->ram_path, strerror(errno));
	if (fstat(fd, &st) < 0 || st.st_size <= 0 ||
	    (uint64_t)st.st_size > HA_RAM_MAX ||
	    st.st_size % HA_PAGE_SIZE != 0) {
		close(fd);
		return ferr_set(err, FERR_CONFLICT,
				"the RAM file %s has an unusable size",
				pv->ram_path);
	}
	pv->ram_size = (size_t)st.st_size;
	/* populated now: a page fault per page would land in the pause */
	pv->ram = mmap(NULL, pv->ram_size,
		       PROT_READ | (writable ? PROT_WRITE : 0),
		       MAP_SHARED | MAP_POPULATE, fd, 0);
	close(fd);
	if (pv->ram == MAP_FAILED) {
		pv->ram = NULL;
		return ferr_set(err, FERR_INTERNAL, "mmap %s: %s",
				pv->ram_path, strerror(errno));
	}
	return 0;
}

int ha_owner_read(struct ha *h, const char *key, char *holder, size_t len,
		  int64_t *lease, struct ferr *err)
{
	struct etcd_kv kv = { 0 };
	bool found = false;
	json_t *v;

	holder[0] = '\0';
	*lease = 0;
	if (etcd_get(h->etcd, key, 0, &kv, &found, NULL, err) < 0)
		return -1;
	if (!found)
		return 0;
	v = json_parse_object((const char *)kv.value, kv.value_len,
			      "owner key", err);
	*lease = kv.lease;
	etcd_kv_clear(&kv);
	if (!v)
		return -1;
	snprintf(holder, len, "%s",
		 json_string_value(json_object_get(v, "host"))
			 ? json_string_value(json_object_get(v, "host"))
			 : "?");
	json_decref(v);
	return 0;
}

void ha_set_health(struct ha_pv *pv, enum ha_health s, const char *alarm)
{
	pthread_mutex_lock(&pv->lock);
	if (pv->health != s)
		log_info("ha: vm %s: %s -> %s%s%s", pv->name,
			 ha_health_name(pv->health), ha_health_name(s),
			 alarm ? ": " : "", alarm ? alarm : "");
	pv->health = s;
	snprintf(pv->alarm, sizeof(pv->alarm), "%s", alarm ? alarm : "");
	pthread_mutex_unlock(&pv->lock);
}

void ha_set_alarm(struct ha_pv *pv, const char *alarm)
{
	pthread_mutex_lock(&pv->lock);
	snprintf(pv->alarm, sizeof(pv->alarm), "%s", alarm);
	pthread_mutex_unlock(&pv->lock);
}

void ha_set_holder(struct ha_pv *pv, const char *holder)
{
	pthread_mutex_lock(&pv->lock);
	snprintf(pv->holder, sizeof(pv->holder), "%s", holder);
	pthread_mutex_unlock(&pv->lock);
}

bool ha_wait(struct ha_pv *pv, uint64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&pv->lock);
	if (!atomic_load(&pv->stop))
		pthread_cond_timedwait(&pv->cond, &pv->lock, &ts);
	pthread_mutex_unlock(&pv->lock);
	return atomic_load(&pv->stop);
}

void ha_wake(struct ha_pv *pv)
{
	pthread_mutex_lock(&pv->lock);
	pthread_cond_broadcast(&pv->cond);
	pthread_mutex_unlock(&pv->lock);
}

/* ---- calls from threads to the loop ---- */

struct post {
	struct ha *h;
	void (*fn)(struct ha *h, void *arg);
	void *arg;
};

static void on_post(evutil_socket_t fd, short what, void *arg)
{
	struct post *p = arg;

	(void)fd;
	(void)what;
	p->fn(p->h, p->arg);
	free(p);
}

void ha_post(struct ha *h, void (*fn)(struct ha *h, void *arg), void *arg)
{
	struct post *p = malloc(sizeof(*p));
	struct timeval now = { 0, 0 };

	if (!p) {
		log_error("ha: out of memory posting to the loop");
		return;
	}
	*p = (struct post){ h, fn, arg };
	if (event_base_once(h->base, -1, EV_TIMEOUT, on_post, p, &now) < 0) {
		log_error("ha: cannot post to the loop");
		free(p);
	}
}

/* A QMP sequence a thread waits for; counted: the waiter and the loop. */
struct qjob {
	char uuid[FERRY_UUID_STR_LEN + 1];
	char what[32];
	int (*fn)(struct qmp *q, void *ctx, struct ferr *err);
	void *ctx;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int rc;
	struct ferr err;
	unsigned refs;
};

static void qjob_put(struct qjob *j)
{
	bool last;

	pthread_mutex_lock(&j->lock);
	last = --j->refs == 0;
	pthread_mutex_unlock(&j->lock);
	if (last) {
		pthread_mutex_destroy(&j->lock);
		pthread_cond_destroy(&j->cond);
		free(j);
	}
}

static void qjob_finish(struct qjob *j, int rc, const struct ferr *err)
{
	pthread_mutex_lock(&j->lock);
	j->done = true;
	j->rc = rc;
	if (err)
		j->err = *err;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
	qjob_put(j);
}

static void on_qjob_done(void *ctx, struct vm *vm, int rc,
			 const struct ferr *err)
{
	(void)vm;
	qjob_finish(ctx, rc, rc < 0 ? err : NULL);
}

/* Worker: vm_run_qmp hands the same ctx to fn and done: the job. */
static int qjob_fn(struct qmp *q, void *ctx, struct ferr *err)
{
	struct qjob *j = ctx;

	return j->fn(q, j->ctx, err);
}

static void qjob_start(struct ha *h, void *arg)
{
	struct qjob *j = arg;
	struct vm *vm = vmm_find_uuid(h->deps.vmm, j->uuid);
	struct ferr err = { 0 };

	if (!vm || vm->pid <= 0) {
		ferr_set(&err, FERR_NOT_FOUND, "the VM has no QEMU here");
		qjob_finish(j, -1, &err);
		return;
	}
	if (vm_run_qmp(vm, j->what, qjob_fn, j, on_qjob_done, &err) < 0)
		qjob_finish(j, -1, &err);
}

int ha_vm_qmp(struct ha *h, const char *uuid, const char *what,
	      int (*fn)(struct qmp *q, void *ctx, struct ferr *err),
	      void *ctx, struct ferr *err)
{
	struct qjob *j = calloc(1, sizeof(*j));
	struct timespec ts;
	int rc;

	if (!j)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	snprintf(j->uuid, sizeof(j->uuid), "%s", uuid);
	snprintf(j->what, sizeof(j->what), "%s", what);
	j->fn = fn;
	j->ctx = ctx;
	j->refs = 2;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	ha_post(h, qjob_start, j);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += HA_QMP_WAIT_MS / 1000;
	pthread_mutex_lock(&j->lock);
	while (!j->done && !atomic_load(&h->stopping)) {
		struct timespec slice;

		clock_gettime(CLOCK_REALTIME, &slice);
		if (slice.tv_sec >= ts.tv_sec)
			break;
		slice.tv_sec += 1;
		pthread_cond_timedwait(&j->cond, &j->lock, &slice);
	}
	if (!j->done) {
		rc = ferr_set(err, FERR_TIMEOUT, "%s: QEMU did not answer",
			      what);
	} else {
		rc = j->rc;
		if (rc < 0)
			*err = j->err;
	}
	pthread_mutex_unlock(&j->lock);
	qjob_put(j);
	return rc;
}

/* ---- the registry ---- */

struct ha_pv *ha_find(struct ha *h, const char *uuid)
{
	for (struct ha_pv *pv = h->pvs; pv; pv = pv->next)
		if (!strcmp(pv->uuid, uuid))
			return pv;
	return NULL;
}

static void unlink_pv(struct ha *h, struct ha_pv *pv)
{
	for (struct ha_pv **pp = &h->pvs; *pp; pp = &(*pp)->next)
		if (*pp == pv) {
			*pp = pv->next;
			return;
		}
}

void ha_retire_work(void *arg)
{
	struct retire *r = arg;
	struct ha_pv *pv = r->pv;
	struct ferr err;

	atomic_store(&pv->stop, true);
	ha_wake(pv);
	if (pv->role == HA_BACKUP && pv->sess[0])
		migrator_stream_unlisten(pv->h->deps.mig, pv->sess);
	if (pv->t_main_on)
		pthread_join(pv->t_main, NULL);
	if (pv->t_lease_on)
		pthread_join(pv->t_lease, NULL);
	pv->t_main_on = pv->t_lease_on = false;
	etcd_watch_stop(pv->watch);
	pv->watch = NULL;
	for (int i = 0; i < 1000 && atomic_load(&pv->streams) > 0; i++)
		usleep(10 * 1000);
	bool no_standby = r->standby_gone ||
			  (r->discard_peer && ha_peer_discard(pv) == 0);

	if (!r->release)
		return;
	if (pv->lease &&
	    etcd_lease_revoke(pv->h->etcd, pv->lease, 0, &err) < 0)
		log_warn("ha: vm %s: revoking the lease: %s", pv->name,
			 err.msg);
	else
		no_standby = true; /* nobody can win the key now */
	/* the VM runs on, unprotected: no backup can take it over */
	if (no_standby)
		ha_fence_stop(pv, true);
}

static void retire_done(void *arg)
{
	struct retire *r = arg;

	if (r->fn)
		r->fn(r->ctx, 0, r->reply ? r->reply : json_object(), NULL);
	ha_pv_free(r->pv);
	free(r);
}

/* Take pv out of the registry and retire it on a worker. */
int ha_retire_ext(struct ha *h, struct ha_pv *pv, bool release,
		  bool discard_peer, ha_reply_fn fn, void *ctx,
		  struct ferr *err)
{
	struct retire *r = calloc(1, sizeof(*r));

	if (!r)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	*r = (struct retire){ .pv = pv, .release = release,
			      .discard_peer = discard_peer, .fn = fn, .ctx = ctx };
	unlink_pv(h, pv);
	if (pv->role == HA_PRIMARY)
		ha_record_drop(h, pv->uuid); /* its protection ends here */
	atomic_store(&pv->stop, true);
	ha_wake(pv);
	if (worker_submit(h->deps.pool, ha_retire_work, retire_done, r, err) <
	    0) {
		/* cannot happen often (64 jobs): keep it listed, stopping */
		pv->next = h->pvs;
		h->pvs = pv;
		free(r);
		return -1;
	}
	return 0;
}

int ha_standby_end(struct ha_pv *pv, struct ferr *err)
{
	atomic_store(&pv->ckpt_stop, true);
	ha_wake(pv);
	if (pv->t_main_on)
		pthread_join(pv->t_main, NULL);
	pv->t_main_on = false;
	atomic_store(&pv->ckpt_stop, false);
	if (!pv->peer[0] || ha_peer_discard(pv) == 0)
		return 0;
	if (pthread_create(&pv->t_main, NULL, ha_primary_main, pv) == 0)
		pv->t_main_on = true;
	return ferr_set(err, FERR_UNAVAILABLE,
			"backup %s could not be told to drop its standby: vm "
			"%s stays protected (it could start the VM otherwise)",
			pv->peer, pv->name);
}

/* `ha disable` without force, on a worker: the standby goes first; only
 * then the checkpoints' lease (retire). */
struct careful {
	struct retire r;
	int rc;
	struct ferr err;
};

static void careful_work(void *arg)
{
	struct careful *c = arg;

	c->rc = ha_standby_end(c->r.pv, &c->err);
	if (c->rc == 0)
		ha_retire_work(&c->r);
}

static void careful_done(void *arg)
{
	struct careful *c = arg;
	struct ha_pv *pv = c->r.pv;
	struct ha *h = pv->h;

	if (c->rc < 0 && !atomic_load(&h->stopping)) {
		pv->next = h->pvs; /* still protected */
		h->pvs = pv;
		c->r.fn(c->r.ctx, -1, NULL, &c->err);
		free(c);
		return;
	}
	if (c->rc < 0) {
		/* ha_stop is past: end it as it would have */
		c->r.standby_gone = false;
		c->r.discard_peer = false;
		ha_retire_work(&c->r);
		c->r.fn(c->r.ctx, -1, NULL, &c->err);
		ha_pv_free(pv);
		free(c);
		return;
	}
	ha_record_drop(h, pv->uuid);
	c->r.fn(c->r.ctx, 0, json_object(), NULL);
	ha_pv_free(pv);
	free(c);
}

int ha_retire_careful(struct ha *h, struct ha_pv *pv, ha_reply_fn fn,
		      void *ctx, struct ferr *err)
{
	struct careful *c = calloc(1, sizeof(*c));

	if (!c)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	c->r = (struct retire){ .pv = pv, .release = true, .standby_gone = true,
				.fn = fn, .ctx = ctx };
	if (worker_submit(h->deps.pool, careful_work, careful_done, c, err) <
	    0) {
		free(c);
		return -1;
	}
	unlink_pv(h, pv); /* its VM's exit is no failover meanwhile */
	return 0;
}

/* The VM now runs elsewhere (a failover): remove this host's copy. */
struct moved {
	struct ha_pv *pv;
	char holder[FERRY_NAME_MAX + 1];
};

void ha_moved_now(struct ha *h, struct ha_pv *pv, const char *holder)
{
	struct vm *vm = vmm_find_uuid(h->deps.vmm, pv->uuid);
	struct ferr err = { 0 };

	ha_audit(h, "-", "ha.moved", pv->name, "ok",
		 json_pack("{s:s, s:s}", "uuid", pv->uuid, "runs_on", holder));
	if (vm) {
		if (vm->pid > 0 || vm->state != VM_SHUTOFF)
			vmm_migrated_away(h->deps.vmm, vm);
		else if (vmm_delete(h->deps.vmm, vm, &err) < 0)
			log_warn("ha: vm %s: %s", pv->name, err.msg);
	}
	if (ha_retire_ext(h, pv, false, false, NULL, NULL, &err) < 0)
		log_error("ha: vm %s: %s", pv->name, err.msg);
}

static void on_moved(struct ha *h, void *arg)
{
	struct moved *mv = arg;

	if (ha_find(h, mv->pv->uuid) == mv->pv)
		ha_moved_now(h, mv->pv, mv->holder);
	free(mv);
}

void ha_post_moved(struct ha_pv *pv, const char *holder)
{
	struct moved *mv = calloc(1, sizeof(*mv));

	if (!mv)
		return;
	mv->pv = pv;
	snprintf(mv->holder, sizeof(mv->holder), "%s", holder);
	ha_post(pv->h, on_moved, mv);
}

/* QEMU of a VM HA knows exited (loop). */
static void on_vm_exit(struct vm *vm, void *arg)
{
	struct ha *h = arg;
	struct ha_pv *pv = ha_find(h, vm->def.uuid);
	struct ferr err;

	if (!pv)
		return;
	if (pv->role == HA_PRIMARY && vm->state == VM_STOPPING) {
		/* stopped on purpose (API or guest poweroff): no failover */
		ha_audit(h, "-", "ha.stopped", pv->name, "ok",
			 json_pack("{s:s}", "uuid", pv->uuid));
		if (ha_retire_ext(h, pv, true, pv->peer[0] != 0, NULL, NULL, &err) <
		    0)
			log_error("ha: %s", err.msg);
		return;
	}
	if (pv->role == HA_PRIMARY) {
		/* the lease thread releases the owner key at once, so the
		 * backup takes over without waiting for the TTL */
		atomic_store(&pv->vm_gone, true);
		ha_wake(pv);
		return;
	}
	pthread_mutex_lock(&pv->apply_lock);
	bool taken = pv->taken;
	pthread_mutex_unlock(&pv->apply_lock);
	if (!taken) {
		log_warn("ha: vm %s: the standby QEMU exited", pv->name);
		ha_audit(h, "-", "ha.standby_lost", pv->name, "error",
			 json_pack("{s:s}", "uuid", pv->uuid));
		if (ha_retire_ext(h, pv, false, false, NULL, NULL, &err) < 0)
			log_error("ha: %s", err.msg);
	}
}

int ha_new(const struct ferryd_config *cfg, struct event_base *base,
	   const struct ha_deps *deps, struct ha **out, struct ferr *err)
{
	struct ha *h = calloc(1, sizeof(*h));

	if (!h)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	h->cfg = cfg;
	h->base = base;
	h->deps = *deps;
	if (cfg->ram_dir[0] && mkdir(cfg->ram_dir, 0700) < 0 &&
	    errno != EEXIST) {
		ferr_set(err, FERR_IO, "cannot create ram_dir %s: %s",
			 cfg->ram_dir, strerror(errno));
		goto fail;
	}
	h->client_ctx = tls_client_ctx_new(cfg->ca_file, cfg->cert_file,
					   cfg->key_file, err);
	if (!h->client_ctx)
		goto fail;
	if (cfg->etcd.n_endpoints) {
		h->etcd = etcd_open(&cfg->etcd, err);
		if (!h->etcd)
			goto fail;
	}
	vmm_set_ha_exit_hook(deps->vmm, on_vm_exit, h);
	ha_recover(h);
	*out = h;
	return 0;
fail:
	SSL_CTX_free(h->client_ctx);
	free(h);
	return -1;
}

/* ferryd stops while it protects pv's VM, which keeps running: nobody
 * would renew the lease, and the backup would start the VM after the TTL.
 * End the protection in order — the standby first, then the lease — or,
 * when the backup cannot be told, freeze the VM so it never runs twice. */
static void shutdown_primary(struct ha *h, struct ha_pv *pv)
{
	struct ferr err;

	if (pv->health == HA_FENCED)
		return; /* frozen, and its lease may be gone: stays so */
	if (pv->peer[0] && ha_peer_discard(pv) < 0) {
		kill(pv->pid, SIGSTOP);
		ha_fence_stop(pv, false);
		log_warn("ha: vm %s: ferryd stops and backup %s cannot be told: "
			 "VM frozen",
			 pv->name, pv->peer);
		ha_audit(h, "-", "ha.fenced", pv->name, "ok",
			 json_pack("{s:s, s:s}", "uuid", pv->uuid, "reason",
				   "ferryd stopping; backup unreachable"));
		return;
	}
	if (pv->lease && etcd_lease_revoke(h->etcd, pv->lease, 0, &err) < 0)
		log_warn("ha: vm %s: revoking the lease: %s", pv->name,
			 err.msg);
	ha_fence_stop(pv, true); /* no standby: the VM runs on, unprotected */
	log_info("ha: vm %s: protection ended: ferryd stops (it resumes when "
		 "ferryd starts again)",
		 pv->name);
	ha_audit(h, "-", "ha.disable", pv->name, "ok",
		 json_pack("{s:s, s:s}", "uuid", pv->uuid, "reason",
			   "ferryd stopping; resumes at its start"));
}

void ha_stop(struct ha *h)
{
	if (!h)
		return;
	atomic_store(&h->stopping, true);
	vmm_set_ha_exit_hook(h->deps.vmm, NULL, NULL);
	ha_repair_stop(h);
	while (h->pvs) {
		struct ha_pv *pv = h->pvs;
		struct retire r = { .pv = pv };

		h->pvs = pv->next;
		ha_retire_work(&r);
		if (pv->role == HA_PRIMARY)
			shutdown_primary(h, pv);
		ha_pv_free(pv);
	}
}

void ha_free(struct ha *h)
{
	if (!h)
		return;
	etcd_close(h->etcd);
	SSL_CTX_free(h->client_ctx);
	free(h);
}
