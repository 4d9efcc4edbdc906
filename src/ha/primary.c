/* primary.c - the primary's side of a protected VM: set-up, and the
 * checkpoint thread: every interval one consistent checkpoint (RAM and
 * device state from one pause), the pages that changed since the one the
 * backup holds sent over a data-plane stream, applied there only when all
 * of it arrived (docs/ha.md). */
#define _GNU_SOURCE
#include "ha_int.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <openssl/evp.h>

/* len bytes of private memory, every page faulted in now: the pause
 * copies into it, and a page fault per page would land in the pause. */
static uint8_t *anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

int ha_lease_thread_start(struct ha_pv *pv, struct ferr *err)
{
	if (pthread_create(&pv->t_lease, NULL, ha_lease_main, pv) != 0)
		return ferr_set(err, FERR_INTERNAL,
				"cannot start the lease thread");
	pv->t_lease_on = true;
	return 0;
}

int ha_primary_setup(struct ha_pv *pv, bool take_lease, struct ferr *err)
{
	/* renew from the start: the rest of the set-up may take longer than
	 * the lease lives */
	if (take_lease &&
	    (ha_lease_take(pv, err) < 0 || ha_lease_thread_start(pv, err) < 0))
		return -1;
	if (!pv->ram && ha_map_ram(pv, false, err) < 0)
		return -1;
	if (pv->disk_path[0]) {
		struct stat st;

		if (stat(pv->disk_path, &st) < 0 || st.st_size <= 0 ||
		    st.st_size % HA_SECTOR != 0 ||
		    (uint64_t)st.st_size > HA_DISK_MAX)
			return ferr_set(err, FERR_CONFLICT,
					"vm %s's disk %s is unusable for HA",
					pv->name, pv->disk_path);
		pv->disk_size = (uint64_t)st.st_size;
	}
	if (!pv->snap)
		pv->snap = anon(pv->ram_size);
	if (!pv->shadow)
		pv->shadow = anon(pv->ram_size);
	if (!pv->snap || !pv->shadow)
		return ferr_set(err, FERR_INTERNAL,
				"cannot reserve %zu bytes for checkpoints",
				pv->ram_size);
	if (ha_peer_prepare(pv, err) < 0)
		return -1;
	pv->fresh_backup = pv->disk_fresh = true;
	return 0;
}

/* Write one record (header and payload), adding both to the digest. */
static int put_rec(struct mig_stream *st, EVP_MD_CTX *md, uint16_t type,
		   uint64_t seq, uint64_t arg, const void *payload,
		   uint32_t len, uint64_t *bytes, struct ferr *err)
{
	struct ha_rec r = { type, seq, arg, len };
	uint8_t hdr[HA_REC_LEN];

	ha_rec_encode(hdr, &r);
	if (md && (EVP_DigestUpdate(md, hdr, sizeof(hdr)) != 1 ||
		   (len && EVP_DigestUpdate(md, payload, len) != 1)))
		return ferr_set(err, FERR_INTERNAL, "sha256");
	if (mig_stream_write(st, hdr, sizeof(hdr), err) < 0 ||
	    (len && mig_stream_write(st, payload, len, err) < 0))
		return -1;
	*bytes += sizeof(hdr) + len;
	return 0;
}

struct disk_put {
	struct mig_stream *st;
	EVP_MD_CTX *md;
	uint64_t seq;
	uint64_t *bytes;
};

static int put_disk(void *arg, uint64_t off, const void *data, uint32_t len,
		    struct ferr *err)
{
	struct disk_put *d = arg;

	return put_rec(d->st, d->md, HA_REC_DISK, d->seq, off, data, len,
		       d->bytes, err);
}

/* Send checkpoint seq: the pages of snap that differ from shadow (all of
 * them for a fresh backup), the device state, the commit; wait for the
 * backup's ACK. */
static int send_checkpoint(struct ha_pv *pv, struct mig_stream *st,
			   uint64_t seq, uint64_t *bytes, uint64_t *pages,
			   struct ferr *err)
{
	size_t npages = pv->ram_size / HA_PAGE_SIZE, run = 0, first = 0;
	uint8_t digest[EVP_MAX_MD_SIZE], hdr[HA_REC_LEN];
	unsigned dlen = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	struct ha_rec ack;
	int rc = -1;

	*bytes = *pages = 0;
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		ferr_set(err, FERR_INTERNAL, "sha256");
		goto out;
	}
	if (put_rec(st, md, HA_REC_BEGIN, seq, pv->ram_size, NULL, 0, bytes,
		    err) < 0)
		goto out;
	for (size_t i = 0; i <= npages; i++) {
		bool changed = i < npages &&
			       (pv->fresh_backup ||
				memcmp(pv->snap + i * HA_PAGE_SIZE,
				       pv->shadow + i * HA_PAGE_SIZE,
				       HA_PAGE_SIZE) != 0);

		if (changed && run == 0)
			first = i;
		if (changed)
			run++;
		if (run && (!changed || run == HA_PAGES_PER_REC)) {
			if (put_rec(st, md, HA_REC_PAGES, seq, first,
				    pv->snap + first * HA_PAGE_SIZE,
				    (uint32_t)(run * HA_PAGE_SIZE), bytes,
				    err) < 0)
				goto out;
			*pages += run;
			run = 0;
		}
	}
	if (pv->disk_size) {
		struct disk_put d = { st, md, seq, bytes };

		if (ha_disk_send(pv, put_disk, &d, err) < 0)
			goto out;
	}
	if (put_rec(st, md, HA_REC_DEVICE, seq, 0, pv->dev,
		    (uint32_t)pv->dev_len, bytes, err) < 0 ||
	    EVP_DigestFinal_ex(md, digest, &dlen) != 1 ||
	    put_rec(st, NULL, HA_REC_COMMIT, seq, *pages, digest,
		    HA_DIGEST_LEN, bytes, err) < 0)
		goto out;
	mig_stream_set_timeout(st, HA_ACK_TIMEOUT_MS);
	if (mig_stream_read(st, hdr, sizeof(hdr), err) < 0 ||
	    ha_rec_decode(hdr, &ack, err) < 0)
		goto out;
	if (ack.type != HA_REC_ACK || ack.seq != seq ||
	    ack.arg != HA_ACK_OK) {
		ferr_set(err, FERR_IO, "the backup refused checkpoint %llu",
			 (unsigned long long)seq);
		goto out;
	}
	rc = 0;
out:
	EVP_MD_CTX_free(md);
	return rc;
}

/* A new connection: the backup says which checkpoint it holds. The same
 * as ours: go on with deltas; another (an ACK lost after it applied one):
 * send everything, numbered past both. */
static int hello(struct ha_pv *pv, struct mig_stream *st, uint64_t *seq,
		 struct ferr *err)
{
	uint8_t hdr[HA_REC_LEN];
	struct ha_rec r;

	if (mig_stream_read(st, hdr, sizeof(hdr), err) < 0 ||
	    ha_rec_decode(hdr, &r, err) < 0)
		return -1;
	if (r.type != HA_REC_HELLO)
		return ferr_set(err, FERR_IO, "the backup did not say hello");
	if (r.arg != *seq) {
		pv->fresh_backup = pv->disk_fresh = true;
		if (r.arg > *seq)
			*seq = r.arg;
	}
	return 0;
}

/* Pair with the backup again after a lost stream: a new standby. */
static int repair(struct ha_pv *pv, struct ferr *err)
{
	ha_peer_discard(pv);
	if (ha_peer_prepare(pv, err) < 0)
		return -1;
	pv->fresh_backup = pv->disk_fresh = true;
	return 0;
}

static void record(struct ha_pv *pv, uint64_t seq, uint64_t bytes,
		   uint64_t pages, double pause_ms)
{
	pthread_mutex_lock(&pv->lock);
	pv->seq = seq;
	pv->last_wall_ms = wall_ms();
	pv->last_bytes = bytes;
	pv->last_pages = pages;
	pv->last_pause_ms = pause_ms;
	pv->pauses[pv->npauses++ % HA_PAUSES_KEPT] = pause_ms;
	pv->checkpoints++;
	pthread_mutex_unlock(&pv->lock);
}

static void failover_result(struct ha_pv *pv, int rc, const struct ferr *e)
{
	pthread_mutex_lock(&pv->lock);
	pv->failover_rc = rc;
	if (e)
		pv->failover_err = *e;
	pv->failover_done = true;
	pthread_cond_broadcast(&pv->cond);
	pthread_mutex_unlock(&pv->lock);
}

/* The last checkpoint is at the backup and the VM is paused: hand the key
 * over and wait until the backup holds it. true when it did. */
static bool hand_over(struct ha_pv *pv, struct ferr *err)
{
	struct ha *h = pv->h;
	uint64_t deadline = now_ms() + HA_MOVED_WAIT_MS;
	char holder[FERRY_NAME_MAX + 1];
	int64_t lease;

	atomic_store(&pv->handover, true);
	ha_wake(pv);
	pthread_join(pv->t_lease, NULL);
	pv->t_lease_on = false;
	/* the VM is paused (QMP): its agent may go before the lease does */
	ha_fence_stop(pv, true);
	if (etcd_lease_revoke(h->etcd, pv->lease, 0, err) < 0)
		goto retake;
	while (now_ms() < deadline) {
		if (ha_owner_read(h, pv->owner_key, holder, sizeof(holder),
				  &lease, err) == 0 &&
		    !strcmp(holder, pv->peer))
			return true;
		if (ha_wait(pv, 50))
			break;
	}
	ferr_set(err, FERR_TIMEOUT, "backup %s did not take the VM over",
		 pv->peer);
retake:
	{
		struct ferr e2;

		atomic_store(&pv->handover, false);
		if (ha_lease_take(pv, &e2) == 0) {
			ha_lease_thread_start(pv, &e2);
			ha_vm_qmp(h, pv->uuid, "resume", ha_qmp_cont, NULL,
				  &e2);
			return false;
		}
		if (ha_owner_read(h, pv->owner_key, holder, sizeof(holder),
				  &lease, &e2) == 0 &&
		    !strcmp(holder, pv->peer))
			return true; /* it did take it, after all */
		/* who runs it is unknown: the VM stays paused until the
		 * lease thread finds out (and resumes it when it may) */
		pthread_mutex_lock(&pv->lock);
		pv->cont_after_thaw = true;
		pthread_mutex_unlock(&pv->lock);
		ha_set_health(pv, HA_FENCED, "the planned switch failed and "
					     "the owner is unknown: VM paused");
		ha_lease_thread_start(pv, &e2);
	}
	return false;
}

void *ha_primary_main(void *arg)
{
	struct ha_pv *pv = arg;
	struct ha *h = pv->h;
	struct mig_stream *st = NULL;
	uint64_t next = now_ms(), seq = 0;
	unsigned dial_fails = 0;

	while (!atomic_load(&pv->stop) && !atomic_load(&pv->vm_gone) &&
	       !atomic_load(&pv->ckpt_stop)) {
		struct ha_pause p = { .pv = pv };
		uint64_t bytes = 0, pages = 0;
		struct ferr err = { 0 };
		bool planned;

		if (!st) {
			if (migrator_stream_dial(h->deps.mig, pv->peer,
						 pv->data_addr, pv->data_port,
						 pv->sess, pv->key, &st,
						 &err) < 0) {
				ha_set_health(pv, HA_DEGRADED, err.msg);
				if (ha_wait(pv, HA_REPAIR_MS))
					break;
				if (++dial_fails >= 2) {
					if (repair(pv, &err) < 0)
						ha_set_health(pv, HA_DEGRADED,
							      err.msg);
					else
						dial_fails = 0;
				}
				continue;
			}
			dial_fails = 0;
			mig_stream_set_timeout(st, HA_ACK_TIMEOUT_MS);
			if (hello(pv, st, &seq, &err) < 0) {
				ha_set_health(pv, HA_DEGRADED, err.msg);
				mig_stream_close(st, false);
				st = NULL;
				if (ha_wait(pv, HA_REPAIR_MS))
					break;
				continue;
			}
		}
		while (!atomic_load(&pv->failover_req) &&
		       !atomic_load(&pv->ckpt_stop) && now_ms() < next)
			if (ha_wait(pv, next - now_ms()))
				goto out;
		if (atomic_load(&pv->vm_gone) || atomic_load(&pv->ckpt_stop))
			break;
		planned = atomic_load(&pv->failover_req);
		next = now_ms() + pv->interval_ms;
		pthread_mutex_lock(&pv->lock);
		bool fenced = pv->health == HA_FENCED;
		pthread_mutex_unlock(&pv->lock);
		if (fenced) {
			/* frozen: QEMU cannot answer; the lease thread decides */
			if (planned) {
				atomic_store(&pv->failover_req, false);
				ferr_set(&err, FERR_CONFLICT, "the VM is fenced");
				failover_result(pv, -1, &err);
			}
			continue;
		}
		p.keep_paused = planned;
		if (ha_vm_qmp(h, pv->uuid, "checkpoint", ha_qmp_checkpoint, &p,
			      &err) < 0) {
			pthread_mutex_lock(&pv->lock);
			pv->failures++;
			pthread_mutex_unlock(&pv->lock);
			pv->disk_fresh = true;
			log_warn("ha: vm %s: checkpoint: %s", pv->name,
				 err.msg);
			if (planned) {
				atomic_store(&pv->failover_req, false);
				failover_result(pv, -1, &err);
			}
			continue;
		}
		if (send_checkpoint(pv, st, seq + 1, &bytes, &pages, &err) <
		    0) {
			log_warn("ha: vm %s: checkpoint %llu to %s: %s",
				 pv->name, (unsigned long long)seq + 1,
				 pv->peer, err.msg);
			ha_set_health(pv, HA_DEGRADED, err.msg);
			ha_audit(h, "-", "ha.degraded", pv->name, "error",
				 json_pack("{s:s, s:s}", "backup", pv->peer,
					   "error", err.msg));
			pthread_mutex_lock(&pv->lock);
			pv->failures++;
			pthread_mutex_unlock(&pv->lock);
			mig_stream_close(st, false);
			st = NULL;
			pv->disk_fresh = true; /* the delta is lost */
			if (planned) {
				struct ferr e2;

				ha_vm_qmp(h, pv->uuid, "resume", ha_qmp_cont,
					  NULL, &e2);
				atomic_store(&pv->failover_req, false);
				failover_result(pv, -1, &err);
			}
			/* the stream session stays: reconnect at once, and
			 * pair anew only when that fails */
			next = now_ms();
			continue;
		}
		/* the backup holds what snap holds now */
		{
			uint8_t *t = pv->shadow;

			pv->shadow = pv->snap;
			pv->snap = t;
		}
		pv->fresh_backup = pv->disk_fresh = false;
		seq++;
		record(pv, seq, bytes, pages, p.pause_ms);
		ha_set_health(pv, HA_OK, NULL);
		if (planned) {
			struct ferr e2 = { 0 };
			bool ok;

			mig_stream_close(st, true);
			st = NULL;
			ok = hand_over(pv, &e2);
			atomic_store(&pv->failover_req, false);
			failover_result(pv, ok ? 0 : -1, ok ? NULL : &e2);
			if (ok)
				break;
		}
	}
out:
	mig_stream_close(st, true);
	return NULL;
}
