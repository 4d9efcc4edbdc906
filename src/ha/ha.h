/* ha.h - checkpoint high availability (docs/ha.md).
 *
 * A protected VM runs on its primary host and keeps a consistent backup
 * on another host: every interval the primary pauses the VM briefly,
 * copies its RAM (a shared file, ferryd.json "ram_dir") and its device
 * state, resumes it, and sends what changed since the last checkpoint to
 * the backup over the migration data plane (migrate.h streams). The
 * backup stages a checkpoint and applies it to the RAM file of a standby
 * QEMU (started with -incoming defer) only once all of it arrived.
 *
 * Who runs the VM is decided in etcd alone: the owner key
 * <prefix>/ha/vm/<uuid>/owner is held by the primary's lease. The primary
 * renews it; when it cannot before the lease could expire, it freezes its
 * VM itself (self-fencing). The backup starts the VM only after winning
 * the key in a compare-and-swap transaction. Without etcd, HA is refused.
 *
 * Threads: every function here runs on the loop's thread. Work that waits
 * (etcd, the peer, QEMU) runs on HA's own threads and worker jobs.
 */
#ifndef FERRY_HA_H
#define FERRY_HA_H

#include <event2/event.h>
#include <jansson.h>

#include "common.h"
#include "config.h"
#include "vm.h"

struct ha;
struct audit;
struct migrator;
struct policy;
struct worker_pool;

struct ha_deps {
	struct audit *audit;
	struct policy **policy;   /* the policy in force */
	struct worker_pool *pool;
	struct migrator *mig;     /* the data plane's streams */
	struct vmm *vmm;
};

/* A deferred answer, as migrate.h's mig_reply_fn: rc 0 with reply (a new
 * reference, taken), or -1 with err. Runs on the loop exactly once. */
typedef void (*ha_reply_fn)(void *ctx, int rc, json_t *reply,
			    const struct ferr *err);

/* Create HA for this host (never fails for a missing etcd section: then
 * every enable is refused). Creates ram_dir when set. Call after the VMs
 * are loaded: the VMs this host protected before a restart (their HA
 * records, <state_dir>/ha) are resolved in etcd on threads and protected
 * again, or removed (docs/ha.md, "Restarts"). */
int ha_new(const struct ferryd_config *cfg, struct event_base *base,
	   const struct ha_deps *deps, struct ha **out, struct ferr *err);

/* Stop every HA thread. Protection of each VM ends in order (its standby
 * discarded, then its lease revoked: the VM runs on, unprotected; frozen
 * when the backup cannot be told); the HA records stay, so protection
 * resumes when ferryd starts again (`ha disable` first to end it for
 * good). Call before migrator_stop. */
void ha_stop(struct ha *h);

/* Free, after ha_stop and a drained worker pool. NULL is fine. */
void ha_free(struct ha *h);

/* `ferryd --ha-fence-agent VM`: the fence agent of one protected VM's
 * QEMU (fence.c), started by ferryd itself with its control socket at fd
 * 3 and QEMU's pidfd at fd 4. Runs until disarmed or QEMU exits (0), or
 * freezes QEMU (SIGSTOP) when no renewal arrived by the deadline or ferryd
 * is gone. Returns the exit status. */
#define HA_FENCE_AGENT_ARG "--ha-fence-agent"
int ha_fence_agent_main(int argc, char **argv);

/* API: protect vm with a backup: body {"backup": HOST, "address", "port"
 * (its API), "interval_s"}. Checks at once what it can (-1: refused);
 * otherwise 0 and fn follows with the status. */
int ha_enable(struct ha *h, struct vm *vm, const json_t *body,
	      const char *requester, ha_reply_fn fn, void *ctx,
	      struct ferr *err);

/* API: stop protecting vm: the backup's standby is discarded first, then
 * the lease released, so the backup can never start the VM. When the
 * backup cannot be told, protection stays (fn gets FERR_UNAVAILABLE); a
 * VM fenced or being recovered is refused (FERR_CONFLICT). force (the
 * operator says the backup host is down for good) releases the lease
 * whatever the backup answers. fn follows. */
int ha_disable(struct ha *h, struct vm *vm, const char *requester,
	       bool force, ha_reply_fn fn, void *ctx, struct ferr *err);

/* API: planned switch: a last checkpoint with the VM paused, then the
 * backup takes over and this host's copy is removed. fn follows. */
int ha_failover(struct ha *h, struct vm *vm, const char *requester,
		ha_reply_fn fn, void *ctx, struct ferr *err);

/* API: the HA status of one VM (NULL: every VM HA knows here) as a new
 * object; FERR_NOT_FOUND when vm is not protected or a standby here. */
json_t *ha_status(struct ha *h, const char *vm_name, struct ferr *err);

/* API (peer hosts): prepare a standby for a VM whose primary is `peer`:
 * body {"vm": definition, "requester", "ram_bytes", "attest"?}; the reply
 * carries the stream session {"id", "key", "data_address", "data_port"}
 * and, when body has "attest" {"challenge"}, "attestation": this host's
 * quote bound to the challenge, the session id and the TLS session whose
 * exporter is given (NULL: unknown). */
int ha_standby_prepare(struct ha *h, const json_t *body, const char *peer,
		       const unsigned char *exporter, ha_reply_fn fn,
		       void *ctx, struct ferr *err);

/* API (peer hosts): discard the standby of VM uuid prepared by peer. */
int ha_standby_discard(struct ha *h, const char *uuid, const char *peer,
		       json_t **reply, struct ferr *err);

/* API: vm, protected here, is to migrate (body: the migration's, naming
 * "to", "address", "port"): end its protection in order first — the
 * checkpoints, the backup's standby (refused when the backup cannot be
 * told), the owner lease — so no backup can start it; fn follows, and the
 * caller then starts the migration. This host follows it: moved, the
 * destination is asked to adopt its protection (POST /v1/ha/adopt);
 * failed, it is protected again with the same backup. */
int ha_migrate(struct ha *h, struct vm *vm, const json_t *body,
	       const char *requester, ha_reply_fn fn, void *ctx,
	       struct ferr *err);

/* API (peer hosts): the VM body {"vm", "uuid"} arrived here by migration
 * from `peer`, where it was protected with {"backup", "address", "port",
 * "interval_s", "requester"}: own it in etcd and choose its backup (the
 * same, unless it is this host; else one of ha_peers). fn follows. */
int ha_adopt(struct ha *h, const json_t *body, const char *peer,
	     ha_reply_fn fn, void *ctx, struct ferr *err);

/* Does HA protect vm here (primary) or keep its standby? A protected VM
 * migrates only through ha_migrate: its QEMU's exit would start the
 * backup. */
bool ha_knows(struct ha *h, const struct vm *vm);

/* Add {"ha": role/health} to a VM object when HA knows the VM. */
void ha_annotate_vm(struct ha *h, const struct vm *vm, json_t *obj);

#endif
