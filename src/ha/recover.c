/* recover.c - protection that outlives a ferryd restart (docs/ha.md,
 * "Restarts"). The primary keeps an HA record per protected VM on disk
 * (ha_wire.h, <state_dir>/ha/<uuid>.json). A ferryd that starts reads
 * them and, for each VM, asks etcd who owns it before it touches the VM:
 *
 *  - another host holds the owner key: the VM runs there; this copy is
 *    killed and removed (ha.fenced_discard, ha.moved);
 *  - the key is ours (the old lease lives) or free: the lease is renewed
 *    or taken in a compare-and-swap, the fence agent armed, and only then
 *    a frozen QEMU thawed; the standby is paired anew and checkpoints go
 *    on (ha.resumed);
 *  - etcd cannot be reached: a frozen VM stays frozen (health "fenced",
 *    no lease holder known) and the question is asked again;
 *  - QEMU is gone: nothing runs here; the key is given up so the backup
 *    takes over, and the definition goes when it did.
 *
 * A record that cannot be read is refused with a precise error
 * (ha.record_refused) and its VM left as it is: frozen stays frozen. */
#define _GNU_SOURCE
#include "ha_int.h"
#include "policy.h"
#include "qmp.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HA_RECOVER_BACKOFF_MAX_MS 5000 /* etcd unreachable: ask again */
#define HA_ATTACH_WAIT_MS 30000        /* a thawed QEMU's monitor */

static int record_path(const struct ha *h, const char *uuid, char *out,
		       size_t len, struct ferr *err)
{
	return fmt_checked(out, len, err, "path", "%s/ha/%s.json",
			   h->cfg->state_dir, uuid);
}

int ha_record_save(struct ha_pv *pv)
{
	struct ha_record r = { 0 };
	char dir[FERRY_PATH_MAX], path[FERRY_PATH_MAX];
	char *text = NULL;
	size_t len = 0;
	struct ferr err;
	int rc = -1;

	pthread_mutex_lock(&pv->lock);
	snprintf(r.vm, sizeof(r.vm), "%s", pv->name);
	snprintf(r.uuid, sizeof(r.uuid), "%s", pv->uuid);
	snprintf(r.requester, sizeof(r.requester), "%s", pv->requester);
	snprintf(r.backup, sizeof(r.backup), "%s", pv->peer);
	if (pv->peer[0]) {
		snprintf(r.address, sizeof(r.address), "%s", pv->peer_addr);
		r.port = pv->peer_port;
	}
	r.interval_s = (uint32_t)(pv->interval_ms / 1000);
	pthread_mutex_unlock(&pv->lock);
	if (fmt_checked(dir, sizeof(dir), &err, "path", "%s/ha",
			pv->h->cfg->state_dir) < 0 ||
	    mkdir_p(dir, 0700, &err) < 0 ||
	    record_path(pv->h, pv->uuid, path, sizeof(path), &err) < 0 ||
	    ha_record_format(&r, &text, &len, &err) < 0 ||
	    file_write_atomic(path, text, len, 0600, &err) < 0)
		log_error("ha: vm %s: cannot keep its HA record (protection "
			  "will not resume after a restart): %s",
			  pv->name, err.msg);
	else
		rc = 0;
	free(text);
	return rc;
}

void ha_record_drop(struct ha *h, const char *uuid)
{
	char path[FERRY_PATH_MAX];
	struct ferr err;

	if (record_path(h, uuid, path, sizeof(path), &err) == 0 &&
	    unlink(path) < 0 && errno != ENOENT)
		log_error("ha: cannot remove %s: %s", path, strerror(errno));
}

/* ---- the recovery thread of one VM ---- */

static int qmp_ping(struct qmp *q, void *ctx, struct ferr *err)
{
	json_t *ret = NULL;
	int rc = qmp_command(q, "query-status", NULL, &ret, err);

	(void)ctx;
	json_decref(ret);
	return rc;
}

static bool is_fenced(struct ha_pv *pv)
{
	pthread_mutex_lock(&pv->lock);
	bool f = pv->health == HA_FENCED;
	pthread_mutex_unlock(&pv->lock);
	return f;
}

/* Wait ms, doubling up to the cap; true when stopping. */
static bool backoff(struct ha_pv *pv, uint64_t *ms)
{
	bool stop = ha_wait(pv, *ms);

	*ms = *ms * 2 > HA_RECOVER_BACKOFF_MAX_MS ? HA_RECOVER_BACKOFF_MAX_MS
						  : *ms * 2;
	return stop;
}

static void on_retire(struct ha *h, void *arg)
{
	struct ha_pv *pv = arg;
	struct ferr err;

	if (ha_find(h, pv->uuid) == pv &&
	    ha_retire_ext(h, pv, false, false, NULL, NULL, &err) < 0)
		log_error("ha: vm %s: %s", pv->name, err.msg);
}

/* QEMU did not survive: nothing runs here. Whoever holds the key runs
 * the VM; our own old lease is given up so the backup need not wait. */
static void qemu_gone(struct ha_pv *pv)
{
	struct ha *h = pv->h;
	char holder[FERRY_NAME_MAX + 1];
	uint64_t wait = 200, deadline;
	int64_t lease;
	struct ferr err = { 0 };

	ha_set_health(pv, HA_UNPROTECTED, "QEMU exited while ferryd was down");
	while (ha_owner_read(h, pv->owner_key, holder, sizeof(holder), &lease,
			     &err) < 0) {
		ha_set_alarm(pv, err.msg);
		if (backoff(pv, &wait))
			return;
	}
	if (!strcmp(holder, h->cfg->host) &&
	    etcd_lease_revoke(h->etcd, lease, 0, &err) == 0)
		ha_audit(h, "-", "ha.released", pv->name, "ok",
			 json_pack("{s:s, s:s}", "uuid", pv->uuid, "reason",
				   "QEMU exited while ferryd was down"));
	deadline = now_ms() + HA_MOVED_WAIT_MS;
	for (;;) {
		if (ha_owner_read(h, pv->owner_key, holder, sizeof(holder),
				  &lease, &err) == 0) {
			ha_set_holder(pv, holder);
			if (holder[0] && strcmp(holder, h->cfg->host) != 0) {
				ha_post_moved(pv, holder);
				return;
			}
		}
		if (now_ms() > deadline)
			break;
		if (ha_wait(pv, 200))
			return;
	}
	log_warn("ha: vm %s: QEMU exited while ferryd was down and no backup "
		 "took the VM over: it stays here, shut off",
		 pv->name);
	ha_audit(h, "-", "ha.stopped", pv->name, "ok",
		 json_pack("{s:s, s:s}", "uuid", pv->uuid, "reason",
			   "QEMU exited while ferryd was down"));
	ha_post(h, on_retire, pv);
}

/* Loop: the recovery thread of a VM without a backup ended: joined, so
 * that `ha enable` sees it as a VM that failed over to here, and a host
 * of ha_peers is asked to protect it (repair.c). */
static void on_lease_only(struct ha *h, void *arg)
{
	struct ha_pv *pv = arg;

	if (ha_find(h, pv->uuid) != pv || !pv->t_main_on)
		return; /* retired meanwhile: the retirement joins it */
	pthread_join(pv->t_main, NULL);
	pv->t_main_on = false;
	/* a host of ha_peers protects it again, as after the failover */
	ha_reprotect_after_failover(h, pv, NULL);
}

/* t_main of a VM protected before the restart. */
static void *recover_main(void *arg)
{
	struct ha_pv *pv = arg;
	struct ha *h = pv->h;
	uint64_t wait = 200, deadline;
	struct ferr err = { 0 };
	bool moved = false;

	if (pv->pid <= 0) {
		qemu_gone(pv);
		return NULL;
	}
	if (!is_fenced(pv)) {
		/* it runs: protection was ended in order (or never froze):
		 * ask before anything; a copy running elsewhere wins */
		while (ha_owner_resolve(pv, &moved, &err) < 0) {
			ha_set_alarm(pv, err.msg);
			if (backoff(pv, &wait))
				return NULL;
		}
		if (moved)
			return NULL;
	}
	/* frozen: the lease thread asks etcd, then discards the copy or
	 * thaws it under the lease, the agent armed (lease.c) */
	if (ha_lease_thread_start(pv, &err) < 0) {
		log_error("ha: vm %s: %s", pv->name, err.msg);
		ha_set_alarm(pv, err.msg);
		return NULL;
	}
	while (is_fenced(pv)) {
		if (!qemu_process_matches(pv->pid, pv->uuid)) {
			/* killed while frozen: the lease thread gives the key
			 * up for the backup (lease.c) */
			atomic_store(&pv->vm_gone, true);
			ha_wake(pv);
			return NULL;
		}
		if (ha_wait(pv, 200))
			return NULL;
	}
	/* its monitor: re-attached once QEMU runs again */
	deadline = now_ms() + HA_ATTACH_WAIT_MS;
	while (ha_vm_qmp(h, pv->uuid, "ha check", qmp_ping, NULL, &err) < 0) {
		if (now_ms() > deadline) {
			log_warn("ha: vm %s: %s", pv->name, err.msg);
			break;
		}
		if (ha_wait(pv, 200))
			return NULL;
	}
	if (!pv->peer[0]) {
		/* failed over (or adopted) here before: the lease alone,
		 * then re-protection with ha_peers (on_lease_only) */
		ha_set_health(pv, HA_UNPROTECTED, "failed over; no backup");
		atomic_store(&pv->recovering, false);
		ha_post(h, on_lease_only, pv);
		return NULL;
	}
	/* the backup may still keep the old standby: pair anew */
	wait = HA_REPAIR_MS;
	err = (struct ferr){ 0 };
	while (ha_peer_discard(pv) < 0 ||
	       ha_primary_setup(pv, false, &err) < 0) {
		if (!err.msg[0])
			ferr_set(&err, FERR_UNAVAILABLE,
				 "backup %s unreachable", pv->peer);
		ha_set_health(pv, HA_DEGRADED, err.msg);
		err.msg[0] = '\0';
		if (backoff(pv, &wait))
			return NULL;
	}
	ha_set_health(pv, HA_SYNCING, NULL);
	log_info("ha: vm %s: protection resumed after a restart, backup %s",
		 pv->name, pv->peer);
	ha_audit(h, "-", "ha.resumed", pv->name, "ok",
		 json_pack("{s:s, s:s}", "uuid", pv->uuid, "backup", pv->peer));
	atomic_store(&pv->recovering, false);
	return ha_primary_main(pv);
}

/* ---- start-up ---- */

static void refuse(struct ha *h, const char *file, const struct ferr *err)
{
	log_error("ha: record %s refused: %s; its VM is left as it is (a "
		  "frozen QEMU stays frozen)",
		  file, err->msg);
	ha_audit(h, "-", "ha.record_refused", file, "error",
		 json_pack("{s:s}", "error", err->msg));
}

/* One record: its VM protected again (a thread resolves the owner). */
static int recover_one(struct ha *h, const char *path, const char *file,
		       struct ferr *err)
{
	struct ha_record r;
	struct ha_pv *pv;
	struct vm *vm;
	struct policy_vm pvm;
	struct policy_decision d;
	char *text = NULL;
	size_t len = 0;

	if (file_read_all(path, HA_RECORD_MAX, &text, &len, err) < 0)
		return -1;
	if (ha_record_parse(text, len, &r, err) < 0) {
		free(text);
		return -1;
	}
	free(text);
	if (strncmp(file, r.uuid, FERRY_UUID_STR_LEN) != 0)
		return ferr_set(err, FERR_INVALID,
				"ha record: uuid %s in the file of another "
				"VM", r.uuid);
	vm = vmm_find_uuid(h->deps.vmm, r.uuid);
	if (!vm || vm->incoming) {
		log_warn("ha: record %s: vm %s is not here; record removed",
			 file, r.vm);
		ha_record_drop(h, r.uuid);
		return 0;
	}
	if (strcmp(vm->def.name, r.vm) != 0)
		return ferr_set(err, FERR_INVALID,
				"ha record: vm %s, but uuid %s is vm %s here",
				r.vm, r.uuid, vm->def.name);
	if (!h->etcd)
		return ferr_set(err, FERR_UNAVAILABLE,
				"ha record: this host has no etcd section "
				"now: nobody can say who owns vm %s",
				r.vm);
	pvm = (struct policy_vm){ vm->def.name, vm->def.labels,
				  vm->def.nlabels };
	pv = ha_pv_new(h, HA_PRIMARY, &vm->def, err);
	if (!pv)
		return -1;
	snprintf(pv->requester, sizeof(pv->requester), "%s", r.requester);
	snprintf(pv->peer, sizeof(pv->peer), "%s", r.backup);
	snprintf(pv->peer_addr, sizeof(pv->peer_addr), "%s", r.address);
	pv->peer_port = r.port;
	pv->interval_ms = (uint64_t)r.interval_s * 1000;
	pv->def_json = vmdef_to_json(&vm->def);
	/* the standby paired anew is attested as in ha_enable */
	policy_check_out(*h->deps.policy, r.requester, &pvm, r.backup, &d);
	if (migrator_attest_plan(h->deps.mig, d.attest, vm->def.cons.attest,
				 r.backup, &pv->att, err) < 0) {
		ha_pv_free(pv);
		return -1;
	}
	pv->pid = vm->pid > 0 && qemu_process_matches(vm->pid, vm->def.uuid)
			  ? vm->pid
			  : 0;
	if (pv->pid > 0 && qemu_process_stopped(pv->pid))
		ha_set_health(pv, HA_FENCED,
			      "ferryd restarted: the VM stays frozen until "
			      "etcd says who owns it");
	atomic_store(&pv->recovering, true);
	if (pthread_create(&pv->t_main, NULL, recover_main, pv) != 0) {
		ha_pv_free(pv);
		return ferr_set(err, FERR_INTERNAL,
				"cannot start the recovery thread");
	}
	pv->t_main_on = true;
	pv->next = h->pvs;
	h->pvs = pv;
	log_info("ha: vm %s: protected before the restart (%s); asking etcd "
		 "who owns it",
		 pv->name, pv->pid <= 0 ? "QEMU gone"
			   : is_fenced(pv) ? "QEMU frozen" : "QEMU running");
	return 0;
}

void ha_recover(struct ha *h)
{
	char dir[FERRY_PATH_MAX], path[FERRY_PATH_MAX];
	struct dirent *e;
	struct ferr err;
	DIR *d;

	if (fmt_checked(dir, sizeof(dir), &err, "path", "%s/ha",
			h->cfg->state_dir) < 0)
		return;
	d = opendir(dir);
	if (!d) {
		if (errno != ENOENT)
			log_error("ha: cannot read %s: %s", dir,
				  strerror(errno));
		return;
	}
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);

		if (e->d_name[0] == '.')
			continue;
		if (fmt_checked(path, sizeof(path), &err, "path", "%s/%s",
				dir, e->d_name) < 0)
			continue;
		if (strstr(e->d_name, ".json.tmp.")) {
			unlink(path); /* a write cut short; the record stays */
			continue;
		}
		if (n != FERRY_UUID_STR_LEN + 5 ||
		    strcmp(e->d_name + FERRY_UUID_STR_LEN, ".json") != 0) {
			ferr_set(&err, FERR_INVALID,
				 "not a record name (UUID.json)");
			refuse(h, e->d_name, &err);
			continue;
		}
		err = (struct ferr){ 0 };
		if (recover_one(h, path, e->d_name, &err) < 0)
			refuse(h, e->d_name, &err);
	}
	closedir(d);
}
