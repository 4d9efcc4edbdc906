/* backup.c - the backup's side: the standby QEMU (-incoming defer on
 * this host's copy of the RAM file), receiving checkpoints (staged apart
 * from the last complete one, applied only once complete and intact), and
 * the takeover after winning the owner key (docs/ha.md). */
#define _GNU_SOURCE
#include "ha_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

int ha_backup_setup(struct ha_pv *pv, struct ferr *err)
{
	size_t want = pv->ram_size, npages;

	if (ha_map_ram(pv, true, err) < 0)
		return -1;
	if (pv->ram_size != want)
		return ferr_set(err, FERR_CONFLICT,
				"the standby's RAM is %zu bytes, the primary's "
				"%zu",
				pv->ram_size, want);
	npages = pv->ram_size / HA_PAGE_SIZE;
	pv->stage = mmap(NULL, pv->ram_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (pv->stage == MAP_FAILED) {
		pv->stage = NULL;
		return ferr_set(err, FERR_INTERNAL, "cannot reserve staging");
	}
	pv->stage_bits = calloc((npages + 7) / 8, 1);
	if (!pv->stage_bits)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	return 0;
}

static void refuse(struct ha_pv *pv, const char *why)
{
	log_warn("ha: vm %s: checkpoint from %s refused: %s", pv->name,
		 pv->peer, why);
	ha_audit(pv->h, pv->peer, "ha.checkpoint_refused", pv->name, "denied",
		 json_pack("{s:s, s:s, s:I}", "uuid", pv->uuid, "reason", why,
			   "kept_seq", (json_int_t)pv->seq));
}

/* Apply the staged disk, pages and device state as the complete
 * checkpoint seq (apply_lock held). A disk that cannot be written leaves
 * the copy between two checkpoints: the standby is then unusable. */
static int apply_locked(struct ha_pv *pv, uint64_t seq, uint8_t **dev,
			size_t dev_len, uint64_t pages, struct ferr *err)
{
	size_t npages = pv->ram_size / HA_PAGE_SIZE;

	if (pv->disk_size && ha_disk_apply(pv, err) < 0) {
		free(pv->dev_ok);
		pv->dev_ok = NULL; /* nothing consistent to resume from */
		pv->dev_ok_len = 0;
		pthread_mutex_lock(&pv->lock);
		pv->seq = 0; /* the next HELLO asks for everything */
		pthread_mutex_unlock(&pv->lock);
		return -1;
	}

	for (size_t i = 0; i < npages; i++)
		if (pv->stage_bits[i / 8] & (1u << (i % 8)))
			memcpy(pv->ram + i * HA_PAGE_SIZE,
			       pv->stage + i * HA_PAGE_SIZE, HA_PAGE_SIZE);
	free(pv->dev_ok);
	pv->dev_ok = *dev;
	pv->dev_ok_len = dev_len;
	*dev = NULL;
	madvise(pv->stage, pv->ram_size, MADV_DONTNEED);
	pthread_mutex_lock(&pv->lock);
	pv->seq = seq;
	pv->last_wall_ms = wall_ms();
	pv->last_pages = pages;
	pv->checkpoints++;
	pthread_mutex_unlock(&pv->lock);
	return 0;
}

static int send_rec(struct mig_stream *st, uint16_t type, uint64_t seq,
		    uint64_t arg)
{
	struct ha_rec r = { type, seq, arg, 0 };
	uint8_t hdr[HA_REC_LEN];
	struct ferr err;

	ha_rec_encode(hdr, &r);
	return mig_stream_write(st, hdr, sizeof(hdr), &err);
}

static int send_ack(struct mig_stream *st, uint64_t seq, bool ok)
{
	return send_rec(st, HA_REC_ACK, seq, ok ? HA_ACK_OK : HA_ACK_REFUSED);
}

void ha_backup_stream(void *ctx, struct mig_stream *st)
{
	struct ha_pv *pv = ctx;
	size_t npages = pv->ram_size / HA_PAGE_SIZE;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t *dev = NULL, *dbuf = NULL;
	size_t dev_len = 0;
	uint64_t seq = 0, pages = 0, bytes = 0;
	char why[FERRY_ERR_MSG_MAX] = "";

	atomic_fetch_add(&pv->streams, 1);
	if (!md)
		goto out;
	/* a checkpoint arrives every interval: wait a few of them at most */
	mig_stream_set_timeout(st, (unsigned)(3 * pv->interval_ms +
					      HA_ACK_TIMEOUT_MS));
	pthread_mutex_lock(&pv->lock);
	seq = pv->seq;
	pthread_mutex_unlock(&pv->lock);
	if (send_rec(st, HA_REC_HELLO, 0, seq) < 0)
		goto out;
	seq = 0;
	while (!atomic_load(&pv->stop)) {
		uint8_t hdr[HA_REC_LEN];
		struct ha_rec r;
		struct ferr err = { 0 };

		if (mig_stream_read(st, hdr, sizeof(hdr), &err) < 0) {
			if (seq)
				snprintf(why, sizeof(why),
					 "checkpoint %llu torn: %s",
					 (unsigned long long)seq, err.msg);
			break;
		}
		if (ha_rec_decode(hdr, &r, &err) < 0) {
			snprintf(why, sizeof(why), "%s", err.msg);
			break;
		}
		if (r.type == HA_REC_BEGIN) {
			if (seq || r.arg != pv->ram_size || r.seq <= pv->seq) {
				snprintf(why, sizeof(why),
					 "unexpected BEGIN of checkpoint %llu",
					 (unsigned long long)r.seq);
				break;
			}
			seq = r.seq;
			pages = 0;
			bytes = 0;
			memset(pv->stage_bits, 0, (npages + 7) / 8);
			ha_disk_stage_reset(pv);
			free(dev);
			dev = NULL;
			if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
			    EVP_DigestUpdate(md, hdr, sizeof(hdr)) != 1)
				break;
			continue;
		}
		if (!seq || r.seq != seq || r.type == HA_REC_ACK ||
		    r.type == HA_REC_HELLO) {
			snprintf(why, sizeof(why),
				 "record of type %u outside its checkpoint",
				 (unsigned)r.type);
			break;
		}
		if (r.type == HA_REC_PAGES) {
			uint64_t n = r.len / HA_PAGE_SIZE;

			if (r.arg > npages || n > npages - r.arg) {
				snprintf(why, sizeof(why),
					 "pages %llu+%llu beyond the RAM",
					 (unsigned long long)r.arg,
					 (unsigned long long)n);
				break;
			}
			if (mig_stream_read(st, pv->stage + r.arg * HA_PAGE_SIZE,
					    r.len, &err) < 0) {
				snprintf(why, sizeof(why),
					 "checkpoint %llu torn: %s",
					 (unsigned long long)seq, err.msg);
				break;
			}
			EVP_DigestUpdate(md, hdr, sizeof(hdr));
			EVP_DigestUpdate(md, pv->stage + r.arg * HA_PAGE_SIZE,
					 r.len);
			for (uint64_t i = r.arg; i < r.arg + n; i++)
				pv->stage_bits[i / 8] |= (uint8_t)(1u << (i % 8));
			pages += n;
		} else if (r.type == HA_REC_DISK) {
			if (!dbuf)
				dbuf = malloc(HA_DISK_CHUNK);
			if (!dbuf ||
			    mig_stream_read(st, dbuf, r.len, &err) < 0) {
				snprintf(why, sizeof(why),
					 "checkpoint %llu torn: %s",
					 (unsigned long long)seq,
					 dbuf ? err.msg : "out of memory");
				break;
			}
			EVP_DigestUpdate(md, hdr, sizeof(hdr));
			EVP_DigestUpdate(md, dbuf, r.len);
			if (ha_disk_stage(pv, r.arg, dbuf, r.len, &err) < 0) {
				snprintf(why, sizeof(why), "%s", err.msg);
				break;
			}
		} else if (r.type == HA_REC_DEVICE) {
			free(dev);
			dev = malloc(r.len);
			if (!dev ||
			    mig_stream_read(st, dev, r.len, &err) < 0) {
				snprintf(why, sizeof(why),
					 "checkpoint %llu torn: %s",
					 (unsigned long long)seq,
					 dev ? err.msg : "out of memory");
				break;
			}
			dev_len = r.len;
			EVP_DigestUpdate(md, hdr, sizeof(hdr));
			EVP_DigestUpdate(md, dev, r.len);
		} else { /* COMMIT */
			uint8_t want[HA_DIGEST_LEN], got[EVP_MAX_MD_SIZE];
			unsigned glen = 0;
			bool ok;

			if (mig_stream_read(st, want, sizeof(want), &err) < 0) {
				snprintf(why, sizeof(why), "%s", err.msg);
				break;
			}
			ok = EVP_DigestFinal_ex(md, got, &glen) == 1 &&
			     glen == HA_DIGEST_LEN &&
			     CRYPTO_memcmp(got, want, HA_DIGEST_LEN) == 0 &&
			     r.arg == pages && dev;
			if (!ok) {
				snprintf(why, sizeof(why),
					 "checkpoint %llu does not match its "
					 "digest or counts",
					 (unsigned long long)seq);
				send_ack(st, seq, false);
				break;
			}
			pthread_mutex_lock(&pv->apply_lock);
			if (pv->taken) {
				pthread_mutex_unlock(&pv->apply_lock);
				break;
			}
			if (apply_locked(pv, seq, &dev, dev_len, pages,
					 &err) < 0) {
				pthread_mutex_unlock(&pv->apply_lock);
				snprintf(why, sizeof(why),
					 "checkpoint %llu: %s; the standby is "
					 "unusable",
					 (unsigned long long)seq, err.msg);
				send_ack(st, seq, false);
				break;
			}
			pthread_mutex_unlock(&pv->apply_lock);
			(void)bytes;
			if (send_ack(st, seq, true) < 0)
				break;
			seq = 0;
		}
	}
	if (why[0])
		refuse(pv, why);
out:
	free(dev);
	free(dbuf);
	EVP_MD_CTX_free(md);
	atomic_fetch_sub(&pv->streams, 1);
}

/* ---- takeover ---- */

static int on_owner_events(void *arg, const struct etcd_event *ev, size_t n)
{
	struct ha_pv *pv = arg;

	(void)ev;
	(void)n;
	ha_wake(pv);
	return 0;
}

/* Loop: the standby runs the VM now: make it this host's. */
static void on_taken_over(struct ha *h, void *arg)
{
	struct ha_pv *pv = arg;
	struct vm *vm = vmm_find_uuid(h->deps.vmm, pv->uuid);
	struct ferr err = { 0 };
	char left[FERRY_NAME_MAX + 1];

	pthread_join(pv->t_main, NULL); /* it posted this and ended */
	pv->t_main_on = false;
	if (!vm)
		return;
	vm_release(vm, "ha-standby");
	if (vm->incoming && vmm_incoming_commit(h->deps.vmm, vm, false, NULL,
						NULL, &err) < 0)
		log_error("ha: vm %s: %s", pv->name, err.msg);
	pv->pid = vm->pid;
	snprintf(left, sizeof(left), "%s", pv->peer); /* the old primary */
	pthread_mutex_lock(&pv->lock);
	pv->peer[0] = '\0'; /* no backup now; the old primary is gone */
	pthread_mutex_unlock(&pv->lock);
	if (pthread_create(&pv->t_lease, NULL, ha_lease_main, pv) == 0) {
		pv->t_lease_on = true;
		ha_reprotect_after_failover(h, pv, left);
	} else
		log_error("ha: vm %s: cannot start the lease thread", pv->name);
	ha_record_save(pv); /* its owner lease, after a restart too */
}

static bool take_over(struct ha_pv *pv)
{
	struct ha *h = pv->h;
	uint64_t t0 = now_ms();
	struct ferr err = { 0 };

	pthread_mutex_lock(&pv->apply_lock);
	if (!pv->dev_ok) {
		pthread_mutex_unlock(&pv->apply_lock);
		return false; /* nothing complete to resume from */
	}
	if (ha_lease_take(pv, &err) < 0) {
		pthread_mutex_unlock(&pv->apply_lock);
		return false; /* someone else holds it */
	}
	pv->taken = true;
	pthread_mutex_unlock(&pv->apply_lock);
	if (pv->sess[0])
		migrator_stream_unlisten(h->deps.mig, pv->sess);
	if (ha_vm_qmp(h, pv->uuid, "failover", ha_qmp_load, pv, &err) < 0) {
		log_error("ha: vm %s: failover failed: %s", pv->name, err.msg);
		ha_set_health(pv, HA_UNPROTECTED, err.msg);
		ha_audit(h, "-", "ha.failover", pv->name, "error",
			 json_pack("{s:s, s:s}", "uuid", pv->uuid, "error",
				   err.msg));
		return true;
	}
	pthread_mutex_lock(&pv->lock);
	pv->role = HA_PRIMARY;
	pthread_mutex_unlock(&pv->lock);
	ha_set_health(pv, HA_UNPROTECTED, "failed over; no backup");
	log_info("ha: vm %s: took over from %s at checkpoint %llu in %llu ms",
		 pv->name, pv->peer, (unsigned long long)pv->seq,
		 (unsigned long long)(now_ms() - t0));
	ha_audit(h, "-", "ha.failover", pv->name, "ok",
		 json_pack("{s:s, s:s, s:I, s:I}", "uuid", pv->uuid, "from",
			   pv->peer, "checkpoint", (json_int_t)pv->seq,
			   "ms", (json_int_t)(now_ms() - t0)));
	pv->took_over = true;
	return true;
}

void *ha_backup_main(void *arg)
{
	struct ha_pv *pv = arg;
	struct ha *h = pv->h;
	struct etcd_watch_ops ops = { .events = on_owner_events };
	struct ferr err = { 0 };

	pv->watch = etcd_watch_start(h->etcd, pv->owner_key, false, 0, &ops,
				     pv, &err);
	if (!pv->watch)
		log_warn("ha: vm %s: watching the owner key: %s (polling)",
			 pv->name, err.msg);
	while (!atomic_load(&pv->stop)) {
		char holder[FERRY_NAME_MAX + 1];
		int64_t lease;

		if (ha_owner_read(h, pv->owner_key, holder, sizeof(holder),
				  &lease, &err) == 0) {
			ha_set_holder(pv, holder);
			if (!holder[0] && take_over(pv))
				break;
		}
		if (ha_wait(pv, HA_POLL_MS))
			break;
	}
	if (pv->took_over) {
		etcd_watch_stop(pv->watch);
		pv->watch = NULL;
		ha_post(h, on_taken_over, pv); /* joins this thread */
	}
	return NULL;
}
