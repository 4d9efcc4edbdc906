/* ha_int.h - what the files of the HA component share. Others use ha.h.
 *
 *   ha.c       the registry of protected VMs and standbys, the exit
 *              hook, loop calls from threads (loop thread)
 *   control.c  the API: enable, disable, failover, status
 *   standby.c  the backup's API side: prepare and discard a standby
 *   disk.c     the disk's part of a checkpoint
 *   primary.c  the primary: enable, the checkpoint thread, failover
 *   lease.c    the owner lease: keepalive, self-fencing, release
 *   fence.c    the fence agent: freezes QEMU without ferryd
 *   record.c   the HA record's text (ha_wire.h)
 *   recover.c  HA records on disk; protection resumed after a restart
 *   backup.c   the backup: standby, receiving checkpoints, takeover
 *   qemu.c     the QMP sequences (pause + copy + device state; load)
 *   peer.c     the primary's calls to the backup's API
 *   ha_wire.c  record headers and fence messages (ha_wire.h)
 *   repair.c   protection that follows the VM: re-protection after a
 *              failover, migration of a protected VM
 *   pick.c     the order in which backups are tried (pure)
 */
#ifndef FERRY_HA_INT_H
#define FERRY_HA_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "ha.h"
#include "etcd.h"
#include "migrate.h"
#include "ha_wire.h"

#define HA_INTERVAL_S_DEFAULT 10
#define HA_INTERVAL_S_MAX 3600
#define HA_FENCE_MARGIN_MS 1500   /* freeze this long before the lease
				     could expire */
#define HA_PEER_TIMEOUT_S 30      /* one call to the peer's API */
#define HA_ACK_TIMEOUT_MS 60000   /* a checkpoint's ACK from the backup */
#define HA_REPAIR_MS 3000         /* retry pairing with the backup */
#define HA_QMP_WAIT_MS 30000      /* a QMP sequence on a worker */
#define HA_DEVSTATE_TIMEOUT_MS 10000 /* QEMU saving / loading devices */
#define HA_PAUSES_KEPT 128        /* pause times kept for the status */
#define HA_MOVED_WAIT_MS 15000    /* primary: the backup to take the key */
#define HA_POLL_MS 1000           /* backup: read the owner key this often
				     besides the watch */

enum ha_role { HA_PRIMARY, HA_BACKUP };

enum ha_health {
	HA_SYNCING,      /* no complete checkpoint yet */
	HA_OK,
	HA_DEGRADED,     /* the backup is unreachable: unprotected */
	HA_FENCED,       /* primary froze its VM: lease lost */
	HA_UNPROTECTED,  /* running after a failover, no backup */
	HA_STANDBY,      /* backup: holding checkpoints */
};

const char *ha_health_name(enum ha_health s);

/* One protected VM (primary) or standby (backup) on this host. The loop
 * owns the list; threads hold a pointer until they are joined. */
struct ha_pv {
	struct ha *h;
	enum ha_role role;
	char name[FERRY_NAME_MAX + 1];
	char uuid[FERRY_UUID_STR_LEN + 1];
	char requester[FERRY_NAME_MAX + 1];
	char peer[FERRY_NAME_MAX + 1];     /* the backup, or the primary */
	char peer_addr[64];                /* primary: backup's API */
	uint16_t peer_port;
	uint64_t interval_ms;
	char owner_key[96];                /* ha/vm/UUID/owner */
	json_t *def_json;                  /* primary: the VM's definition */
	struct mig_attest att;             /* primary: the backup's (loop) */
	/* RAM: the shared file, mapped (primary: read-only) */
	char ram_path[FERRY_PATH_MAX];
	uint8_t *ram;
	size_t ram_size;
	pid_t pid;                         /* the VM's QEMU */
	/* primary: the copy taken in the pause, and what the backup has */
	uint8_t *snap;
	uint8_t *shadow;
	uint8_t *dev;                      /* device state of the pause */
	size_t dev_len;
	char run_sock[FERRY_SOCK_PATH_MAX + 1]; /* QEMU <-> ferryd devstate */
	/* primary: the backup's stream session */
	char sess[MIG_STREAM_ID_HEX_LEN + 1];
	uint8_t key[MIG_STREAM_KEY_LEN];
	char data_addr[64];
	uint16_t data_port;
	bool fresh_backup;                 /* next checkpoint sends all */
	/* the disk (raw images only): primary's per-checkpoint target and
	 * dirty bitmap; backup's own copy and staging file */
	uint64_t disk_size;                /* 0: no disk */
	char disk_path[FERRY_PATH_MAX];    /* the VM's disk here (backup: its
					      own copy) */
	char disk_target[FERRY_PATH_MAX];  /* primary: a checkpoint's target,
					      in QEMU's run folder */
	char disk_stage[FERRY_PATH_MAX];   /* backup: staged DISK records */
	char disk_bitmap[32];              /* primary: tracking since last */
	unsigned disk_gen;
	bool disk_fresh;                   /* primary: next sends the disk */
	int target_fd;                     /* primary: the target, open */
	int disk_fd, stage_fd;             /* backup: copy, staging */
	/* backup: staging and the last complete checkpoint */
	uint8_t *stage;
	uint8_t *stage_bits;
	uint8_t *dev_ok;
	size_t dev_ok_len;
	pthread_mutex_t apply_lock;
	bool taken;                        /* apply_lock: took over */
	atomic_int streams;                /* stream callbacks running */
	bool took_over;                    /* backup thread: VM resumed here */
	struct etcd_watch *watch;
	/* the owner lease */
	int64_t lease;
	uint64_t renewed_ms;               /* when the last good renewal was
					      sent (now_ms) */
	int agent_fd;                      /* lease thread: the fence agent's
					      socket, -1: none (fence.c) */
	pid_t agent_pid;
	bool thaw;                         /* lock: thaw once guarded */
	bool cont_after_thaw;              /* lock: ... and resume (QMP) */
	/* threads */
	pthread_t t_main, t_lease;
	bool t_main_on, t_lease_on;
	atomic_bool stop;
	atomic_bool vm_gone;               /* primary: QEMU exited */
	atomic_bool failover_req;          /* primary: planned switch */
	atomic_bool handover;              /* lease thread: end quietly */
	atomic_bool ckpt_stop;             /* checkpoint thread: end (a
					      migration), the lease kept */
	atomic_bool recovering;            /* t_main resolves a restart
					      (recover.c), not checkpoints */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* status (lock) */
	enum ha_health health;
	char alarm[FERRY_ERR_MSG_MAX];
	char holder[FERRY_NAME_MAX + 1];   /* the owner key's holder, as last
					      seen in etcd ("": none) */
	uint64_t seq;                      /* last complete checkpoint */
	uint64_t last_wall_ms;
	uint64_t last_bytes;
	uint64_t last_pages;
	double last_pause_ms;
	double pauses[HA_PAUSES_KEPT];
	unsigned npauses;
	uint64_t checkpoints, failures;
	int failover_rc;                   /* planned switch: result */
	bool failover_done;
	struct ferr failover_err;
	struct ha_pv *next;
};

struct ha {
	const struct ferryd_config *cfg;
	struct event_base *base;
	struct ha_deps deps;
	struct etcd *etcd;                 /* NULL: not configured */
	SSL_CTX *client_ctx;               /* calls to peers' APIs */
	struct ha_pv *pvs;                 /* loop */
	struct ha_rp *rps;                 /* loop: VMs choosing a backup,
					      and migrations followed
					      (repair.c) */
	atomic_bool stopping;
};

/* ha.c */
struct ha_pv *ha_pv_new(struct ha *h, enum ha_role role,
			const struct vm_def *def, struct ferr *err);
void ha_pv_free(struct ha_pv *pv);
void ha_audit(struct ha *h, const char *actor, const char *action,
	      const char *target, const char *outcome, json_t *detail);
/* Thread: set the health (and alarm, may be NULL) under the lock. */
void ha_set_health(struct ha_pv *pv, enum ha_health s, const char *alarm);
/* Thread: set the alarm, the health unchanged. */
void ha_set_alarm(struct ha_pv *pv, const char *alarm);
/* Thread: remember who holds the owner key. */
void ha_set_holder(struct ha_pv *pv, const char *holder);
/* Thread: sleep until ms passed or stop / a wake-up; true when stopping. */
bool ha_wait(struct ha_pv *pv, uint64_t ms);
void ha_wake(struct ha_pv *pv);
/* Thread: run fn(q, ctx) on the VM uuid's QMP monitor (a VM operation,
 * queued behind the VM's others) and wait for it. */
int ha_vm_qmp(struct ha *h, const char *uuid, const char *what,
	      int (*fn)(struct qmp *q, void *ctx, struct ferr *err),
	      void *ctx, struct ferr *err);
/* Thread: run fn(h, arg) on the loop, later. */
void ha_post(struct ha *h, void (*fn)(struct ha *h, void *arg), void *arg);
/* Thread: the VM now runs on another host: remove this host's copy. */
void ha_post_moved(struct ha_pv *pv, const char *holder);
/* Map the RAM file (writable for the backup). */
int ha_map_ram(struct ha_pv *pv, bool writable, struct ferr *err);
/* etcd owner value {"host": NAME} and its reading. */
int ha_owner_read(struct ha *h, const char *key, char *holder, size_t len,
		  int64_t *lease, struct ferr *err);

/* control.c: the API's calls (enable, disable, failover, status). */

/* ha.c: the registry (loop thread). */
struct ha_pv *ha_find(struct ha *h, const char *uuid);
/* Worker: stop and join pv's threads, end its stream, release what it
 * holds in etcd when asked. */
struct retire {
	struct ha_pv *pv;
	bool release;       /* revoke the lease (disable) */
	bool discard_peer;  /* primary: discard the backup's standby */
	bool standby_gone;  /* primary: the standby was discarded already */
	ha_reply_fn fn;
	void *ctx;
	json_t *reply;
};
void ha_retire_work(void *arg);
/* Worker: end pv's checkpoint thread and have its backup discard the
 * standby, so that no backup can start the VM; pv's lease thread runs on.
 * When the backup cannot be told: the checkpoints start again and -1
 * (FERR_UNAVAILABLE), the VM stays protected. */
int ha_standby_end(struct ha_pv *pv, struct ferr *err);
/* `ha disable` that never lets the backup start the VM: the standby is
 * discarded first (ha_standby_end), the lease released after; when the
 * backup cannot be told, fn gets -1 and the VM stays protected. pv's
 * checkpoint thread must be ha_primary_main (not a restart's recovery). */
int ha_retire_careful(struct ha *h, struct ha_pv *pv, ha_reply_fn fn,
		      void *ctx, struct ferr *err);
/* Take pv out of the registry and retire it on a worker; fn (may be NULL)
 * answers when done. */
int ha_retire_ext(struct ha *h, struct ha_pv *pv, bool release,
		  bool discard_peer, ha_reply_fn fn, void *ctx,
		  struct ferr *err);
/* The VM runs on holder now: remove this host's copy and retire pv. */
void ha_moved_now(struct ha *h, struct ha_pv *pv, const char *holder);
/* The status object of pv (its lock taken here). */
json_t *ha_pv_json(struct ha_pv *pv);

/* lease.c: the owner lease (primary and, after a takeover, backup). */
int ha_lease_take(struct ha_pv *pv, struct ferr *err);
void *ha_lease_main(void *arg);
/* Thread: who owns the VM? Held by another host: this copy is killed and
 * removed (*moved). Held by this host under an old lease that lives:
 * renewed and kept. Free: taken (compare-and-swap). -1 when etcd cannot
 * tell (or the old lease just ended: ask again). */
int ha_owner_resolve(struct ha_pv *pv, bool *moved, struct ferr *err);

/* fence.c: the VM's fence agent (owned by the lease thread, or whoever
 * ends protection after it was joined). */
/* Start an agent for pv's QEMU, armed until deadline_ms (now_ms clock). */
int ha_fence_start(struct ha_pv *pv, uint64_t deadline_ms, struct ferr *err);
/* Move the deadline; -1 when the agent is gone (its socket closed). */
int ha_fence_arm(struct ha_pv *pv, uint64_t deadline_ms);
/* End the agent: disarmed (the VM runs on), or not (it freezes QEMU now).
 * No agent: nothing. */
void ha_fence_stop(struct ha_pv *pv, bool disarm);

/* primary.c */
void *ha_primary_main(void *arg);
/* Start pv's lease thread (ha_lease_main), which renews the lease it
 * holds; -1 when the thread cannot start. */
int ha_lease_thread_start(struct ha_pv *pv, struct ferr *err);
/* Worker: take the lease (unless it is held: re-protection after a
 * failover), map the RAM, reserve the copies, pair with the backup. */
int ha_primary_setup(struct ha_pv *pv, bool take_lease, struct ferr *err);

/* backup.c */
void ha_backup_stream(void *ctx, struct mig_stream *st);
void *ha_backup_main(void *arg);
int ha_backup_setup(struct ha_pv *pv, struct ferr *err);

/* qemu.c: the QMP sequences, run by ha_vm_qmp. */
struct ha_pause {
	struct ha_pv *pv;
	bool keep_paused;   /* planned failover: leave the VM stopped */
	double pause_ms;    /* out */
};
int ha_qmp_checkpoint(struct qmp *q, void *ctx, struct ferr *err);
int ha_qmp_load(struct qmp *q, void *ctx, struct ferr *err);
int ha_qmp_cont(struct qmp *q, void *ctx, struct ferr *err);

/* disk.c: the disk's part of a checkpoint. */
/* Primary, QMP sequence before stop: a fresh target for this checkpoint. */
int ha_disk_prepare(struct qmp *q, struct ha_pv *pv, struct ferr *err);
/* Primary, in the pause: a point-in-time copy of what changed since the
 * last checkpoint (all of it when disk_fresh) into the target. */
int ha_disk_snapshot(struct qmp *q, struct ha_pv *pv, uint64_t deadline,
		     struct ferr *err);
/* Primary, after: detach the target (errors ignored). */
void ha_disk_release(struct qmp *q, struct ha_pv *pv);
/* Primary, checkpoint thread: send the target's written extents as DISK
 * records through put(), then remove it. */
int ha_disk_send(struct ha_pv *pv,
		 int (*put)(void *arg, uint64_t off, const void *data,
			    uint32_t len, struct ferr *err),
		 void *arg, struct ferr *err);
/* Backup: the standby's own copy of the disk (new, zero) and staging. */
int ha_disk_standby(struct ha_pv *pv, const char *shared_dir,
		    const char *host, char *rel, size_t rel_len,
		    struct ferr *err);
/* Backup: stage one DISK record's payload / apply the staged records. */
int ha_disk_stage(struct ha_pv *pv, uint64_t off, const void *data,
		  uint32_t len, struct ferr *err);
int ha_disk_apply(struct ha_pv *pv, struct ferr *err);
void ha_disk_stage_reset(struct ha_pv *pv);

/* repair.c (loop thread) */
/* pv just took over here (a failover from `left`): choose a backup for it
 * among ha_peers, `left` last; unprotected with the reason while none
 * takes it, retried with backoff. */
void ha_reprotect_after_failover(struct ha *h, struct ha_pv *pv,
				 const char *left);
/* ha_stop: drop what repair.c waits for. */
void ha_repair_stop(struct ha *h);

/* pick.c: the candidates for a VM's backup, in the order they are tried:
 * prefer (the backup it had, when it is not this host), then the hosts of
 * peers in their order, then `last` (the host the VM left) when it is one
 * of them; never self, each once. Returns how many were put in out. */
size_t ha_cand_order(const struct ha_peer_cfg *peers, size_t n,
		     const struct ha_peer_cfg *prefer, const char *self,
		     const char *last, struct ha_peer_cfg *out, size_t max);

/* recover.c: HA records (<state_dir>/ha/<uuid>.json) and restarts. */
/* Write pv's record atomically; errors are logged (-1): a missing record
 * costs protection after a restart only. */
int ha_record_save(struct ha_pv *pv);
/* Remove the record of uuid (none: fine). */
void ha_record_drop(struct ha *h, const char *uuid);
/* Loop, at start-up, VMs loaded: every record's VM is resolved in etcd
 * (threads) and protected again, or removed; a bad record is refused and
 * its VM left as it is. */
void ha_recover(struct ha *h);

/* peer.c: calls to the peer's API (blocking; threads). */
int ha_peer_prepare(struct ha_pv *pv, struct ferr *err);
/* Discard the backup's standby; 0 when it is gone (or was never
 * there). */
int ha_peer_discard(struct ha_pv *pv);

#endif
