/* lease.c - the owner lease of a protected VM: who may run it is decided
 * in etcd alone (docs/ha.md, "Lease rules").
 *
 *  - The owner holds <prefix>/ha/vm/<uuid>/owner with its lease and renews
 *    it every TTL/3.
 *  - A renewal sent at t means the lease lives at least until t + TTL on
 *    the server. When no renewal succeeded by renewed + TTL - margin, the
 *    owner freezes its QEMU (SIGSTOP: no monitor needed, nothing can
 *    delay it) before anyone else can win the key: self-fencing. The VM's
 *    fence agent (fence.c), armed after every renewal, does the same a
 *    little later, and at once when ferryd is gone.
 *  - When the owner's QEMU dies while ferryd lives, it revokes the lease
 *    at once, so the backup need not wait for the TTL.
 *  - A fenced owner reads the key when it can: held by another host, the
 *    VM runs there and the local copy is removed; free, it takes the key
 *    again and thaws the VM. A restarted ferryd resolves a VM it protected
 *    the same way, keeping it frozen until then. */
#define _GNU_SOURCE
#include "ha_int.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The agent freezes this long before the lease could expire: after the
 * lease thread's own fence (HA_FENCE_MARGIN_MS), before the server's. */
#define HA_AGENT_MARGIN_MS 1000
/* Fenced: who owns the VM is asked again after 0.5 s, doubling to 4 s. */
#define HA_FENCED_RETRY_MS 500
#define HA_FENCED_RETRY_MAX_MS 4000

static uint64_t ttl_ms(const struct ha_pv *pv)
{
	return (uint64_t)pv->h->cfg->etcd.lease_ttl_s * 1000;
}

int ha_lease_take(struct ha_pv *pv, struct ferr *err)
{
	struct ha *h = pv->h;
	struct etcd_claim claim = { 0 };
	char value[FERRY_NAME_MAX + 32];
	int64_t id = 0;
	uint64_t sent = now_ms();
	int rc = -1;

	snprintf(value, sizeof(value), "{\"host\": \"%s\"}", h->cfg->host);
	if (etcd_lease_grant(h->etcd, h->cfg->etcd.lease_ttl_s, 0, &id, NULL,
			     err) < 0)
		return ferr_wrap(err, "etcd lease");
	if (etcd_acquire(h->etcd, pv->owner_key, value, strlen(value), id, 0,
			 &claim, err) < 0) {
		ferr_wrap(err, "etcd owner key");
		goto out;
	}
	if (!claim.won) {
		char holder[FERRY_NAME_MAX + 1] = "";
		json_t *v = json_parse_object((const char *)claim.holder.value,
					      claim.holder.value_len, "owner",
					      err);

		snprintf(holder, sizeof(holder), "%s",
			 json_string_value(json_object_get(v, "host"))
				 ? json_string_value(json_object_get(v, "host"))
				 : "?");
		json_decref(v);
		ferr_set(err, FERR_CONFLICT,
			 "vm %s is owned by host %s in etcd", pv->name, holder);
		goto out;
	}
	pthread_mutex_lock(&pv->lock);
	pv->lease = id;
	pv->renewed_ms = sent;
	snprintf(pv->holder, sizeof(pv->holder), "%s", h->cfg->host);
	pthread_mutex_unlock(&pv->lock);
	id = 0;
	rc = 0;
out:
	etcd_kv_clear(&claim.holder);
	if (id) {
		struct ferr e2;

		etcd_lease_revoke(h->etcd, id, 0, &e2);
	}
	return rc;
}

/* Freeze the VM's QEMU; both the lease thread and the agent do it. */
static void freeze(struct ha_pv *pv, const char *why)
{
	kill(pv->pid, SIGSTOP);
	ha_set_health(pv, HA_FENCED, why);
	ha_audit(pv->h, "-", "ha.fenced", pv->name, "ok",
		 json_pack("{s:s, s:s}", "uuid", pv->uuid, "reason", why));
}

/* The VM runs on holder now: this frozen copy must never run again. */
static void discard(struct ha_pv *pv, const char *holder)
{
	kill(pv->pid, SIGKILL);
	ha_audit(pv->h, "-", "ha.fenced_discard", pv->name, "ok",
		 json_pack("{s:s, s:s}", "uuid", pv->uuid, "runs_on", holder));
	ha_post_moved(pv, holder);
}

struct thawed {
	char uuid[FERRY_UUID_STR_LEN + 1];
	bool cont;
};

/* Loop: a thawed QEMU that ferryd could not attach to (frozen when it
 * started: recover.c) gets its monitor back; one paused by a planned
 * switch that failed runs again. */
static void on_thawed(struct ha *h, void *arg)
{
	struct thawed *t = arg;
	struct vm *vm = vmm_find_uuid(h->deps.vmm, t->uuid);
	struct ferr err;

	if (vm && !vm->qmp && vm->pid > 0 &&
	    vmm_reattach(h->deps.vmm, vm, NULL, NULL, &err) < 0)
		log_error("ha: vm %s: %s", vm->def.name, err.msg);
	if (vm && t->cont &&
	    vmm_resume(h->deps.vmm, vm, false, NULL, NULL, &err) < 0)
		log_error("ha: vm %s: %s", vm->def.name, err.msg);
	free(t);
}

/* The agent armed from renewed_ms on; a frozen VM whose lease we hold
 * again is thawed once it is (never without an agent watching). */
static void guard(struct ha_pv *pv)
{
	uint64_t deadline;
	struct ferr err = { 0 };
	bool thaw, cont;
	struct thawed *t;

	pthread_mutex_lock(&pv->lock);
	deadline = pv->renewed_ms + ttl_ms(pv) - HA_AGENT_MARGIN_MS;
	thaw = pv->thaw;
	cont = pv->cont_after_thaw;
	pthread_mutex_unlock(&pv->lock);
	if (ha_fence_arm(pv, deadline) < 0) {
		/* gone: it froze QEMU just before this renewal came back, or
		 * died; the renewal holds the lease, so a frozen VM may run */
		thaw = thaw || qemu_process_stopped(pv->pid);
		if (ha_fence_start(pv, deadline, &err) < 0) {
			/* this thread's own fence still guards the VM */
			log_error("ha: %s", err.msg);
			ha_set_alarm(pv, err.msg);
			return;
		}
	}
	if (!thaw)
		return;
	kill(pv->pid, SIGCONT);
	pthread_mutex_lock(&pv->lock);
	pv->thaw = pv->cont_after_thaw = false;
	pthread_mutex_unlock(&pv->lock);
	ha_audit(pv->h, "-", "ha.unfenced", pv->name, "ok",
		 json_pack("{s:s}", "uuid", pv->uuid));
	ha_set_health(pv, HA_SYNCING, NULL);
	t = calloc(1, sizeof(*t));
	if (t) {
		snprintf(t->uuid, sizeof(t->uuid), "%s", pv->uuid);
		t->cont = cont;
		ha_post(pv->h, on_thawed, t);
	}
}

/* QEMU died here: give the key up now, then wait to see who took it. */
static void release_for_backup(struct ha_pv *pv)
{
	struct ha *h = pv->h;
	uint64_t deadline = now_ms() + HA_MOVED_WAIT_MS;
	char holder[FERRY_NAME_MAX + 1];
	int64_t lease;
	struct ferr err = { 0 };

	ha_fence_stop(pv, true);
	/* (no lease: a restarted ferryd found QEMU gone before it took one) */
	while (pv->lease &&
	       etcd_lease_revoke(h->etcd, pv->lease, 0, &err) < 0) {
		log_warn("ha: vm %s: releasing the lease: %s", pv->name,
			 err.msg);
		if (ha_wait(pv, 200) || now_ms() > deadline)
			return;
	}
	ha_set_holder(pv, "");
	ha_audit(h, "-", "ha.released", pv->name, "ok",
		 json_pack("{s:s, s:s}", "uuid", pv->uuid, "reason",
			   "QEMU exited"));
	log_info("ha: vm %s: QEMU exited; owner lease released", pv->name);
	while (!atomic_load(&pv->stop) && now_ms() < deadline) {
		if (ha_owner_read(h, pv->owner_key, holder, sizeof(holder),
				  &lease, &err) == 0)
			ha_set_holder(pv, holder);
		if (holder[0] && strcmp(holder, h->cfg->host) != 0) {
			ha_post_moved(pv, holder);
			return;
		}
		if (ha_wait(pv, 100))
			return;
	}
	ha_set_health(pv, HA_UNPROTECTED,
		      "QEMU exited and no backup took the VM over");
}

int ha_owner_resolve(struct ha_pv *pv, bool *moved, struct ferr *err)
{
	struct ha *h = pv->h;
	char holder[FERRY_NAME_MAX + 1];
	int64_t lease;
	uint64_t sent = now_ms();

	*moved = false;
	if (ha_owner_read(h, pv->owner_key, holder, sizeof(holder), &lease,
			  err) < 0)
		return -1;
	ha_set_holder(pv, holder);
	if (holder[0] && strcmp(holder, h->cfg->host) != 0) {
		discard(pv, holder);
		*moved = true;
		return 0;
	}
	if (holder[0]) {
		/* ours, from before: alive while its lease is */
		if (etcd_lease_keepalive(h->etcd, lease, 0, NULL, err) < 0)
			return -1; /* gone (FERR_NOT_FOUND): read again */
		pthread_mutex_lock(&pv->lock);
		pv->lease = lease;
		pv->renewed_ms = sent;
		pthread_mutex_unlock(&pv->lock);
		return 0;
	}
	return ha_lease_take(pv, err);
}

/* Fenced: find out whether the VM runs elsewhere, or take it back. True
 * when this VM is done here. */
static bool fenced_step(struct ha_pv *pv)
{
	struct ferr err = { 0 };
	bool moved;

	if (ha_owner_resolve(pv, &moved, &err) < 0)
		return false; /* unreachable, or our old key: again later */
	if (moved)
		return true;
	pthread_mutex_lock(&pv->lock);
	pv->thaw = true;
	pthread_mutex_unlock(&pv->lock);
	guard(pv);
	return false;
}

void *ha_lease_main(void *arg)
{
	struct ha_pv *pv = arg;
	struct ha *h = pv->h;
	uint64_t retry_ms = HA_FENCED_RETRY_MS;
	bool fenced;

	pthread_mutex_lock(&pv->lock);
	fenced = pv->health == HA_FENCED;
	pthread_mutex_unlock(&pv->lock);
	if (!fenced)
		guard(pv); /* the agent, before anything else */
	while (!atomic_load(&pv->stop) && !atomic_load(&pv->handover)) {
		uint64_t now = now_ms(), fence_at, sent;
		struct ferr err = { 0 };
		int rc;

		if (atomic_load(&pv->vm_gone)) {
			release_for_backup(pv);
			return NULL;
		}
		pthread_mutex_lock(&pv->lock);
		fence_at = pv->renewed_ms + ttl_ms(pv) - HA_FENCE_MARGIN_MS;
		fenced = pv->health == HA_FENCED;
		pthread_mutex_unlock(&pv->lock);
		if (fenced) {
			if (fenced_step(pv))
				return NULL;
			pthread_mutex_lock(&pv->lock);
			fenced = pv->health == HA_FENCED;
			pthread_mutex_unlock(&pv->lock);
			/* etcd did not say yet: ask again, less often */
			if (fenced)
				ha_wait(pv, retry_ms);
			if (!fenced)
				retry_ms = HA_FENCED_RETRY_MS;
			else if (retry_ms < HA_FENCED_RETRY_MAX_MS)
				retry_ms *= 2;
			continue;
		}
		if (now >= fence_at) {
			/* the lease may be gone before we hear back: freeze
			 * the VM now, before anyone can win the key */
			freeze(pv, "owner lease not renewed: VM frozen");
			continue;
		}
		sent = now;
		rc = etcd_lease_keepalive(h->etcd, pv->lease, fence_at, NULL,
					  &err);
		if (atomic_load(&pv->handover))
			break;
		if (rc == 0) {
			pthread_mutex_lock(&pv->lock);
			pv->renewed_ms = sent;
			pthread_mutex_unlock(&pv->lock);
			guard(pv);
			ha_wait(pv, ttl_ms(pv) / 3);
		} else if (err.code == FERR_NOT_FOUND) {
			pthread_mutex_lock(&pv->lock);
			pv->renewed_ms = 0; /* gone: fence at once */
			pv->holder[0] = '\0';
			pthread_mutex_unlock(&pv->lock);
		} else {
			log_warn("ha: vm %s: lease renewal: %s", pv->name,
				 err.msg);
			ha_wait(pv, 200);
		}
	}
	return NULL;
}
