/* vm_internal.h - what the files of the vm component share (vmm.c: the
 * list and definitions; runtime.c: QEMU processes; attach.c: finding them
 * again at start-up; incoming.c: VMs that arrive or leave by migration). Not for other components: they use vm.h.
 */
#ifndef FERRY_VM_INTERNAL_H
#define FERRY_VM_INTERNAL_H

#include "vm.h"
#include "netdev.h"

struct vmm {
	const struct ferryd_config *cfg;
	struct event_base *base;
	enum accel_mode accel;
	struct event *sigchld;
	struct vm *head;
	size_t count;
	vmm_exit_hook exit_hook;
	void *exit_hook_arg;
	vmm_exit_hook ha_exit_hook;
	void *ha_exit_hook_arg;
	struct worker_pool *pool;  /* where operations run */
	struct qemu_user qemu_user; /* what QEMU runs as (confine.c) */
	struct fw_cluster fw;      /* the policy's firewall settings (fw.c) */
	bool fw_ready;             /* vmm_fw_reattach has run */
};

/* ---- vmm.c ---- */

/* A new shut-off VM for def (not linked), or NULL out of memory. */
struct vm *vm_new(struct vmm *m, const struct vm_def *def);

/* Free vm and what it holds (it must be unlinked and have no operation).
 * Use vm_retire for a listed VM. */
void vm_free(struct vm *vm);

/* Unlink vm and free it as soon as its operations are done. */
void vm_retire(struct vm *vm);

/* Insert vm into the list (sorted by name) / remove it. */
void vmm_link(struct vmm *m, struct vm *vm);
void vmm_unlink(struct vmm *m, struct vm *vm);

/* Read and validate the definition file path into *def. */
int def_load(const char *path, struct vm_def *def, struct ferr *err);

/* JSON text of a definition, for vm.json and incoming.json (malloc'd). */
char *def_text(const struct vm_def *def);

/* ---- runtime.c ---- */

struct vm_op;

/* Queue op on vm (see vm.h, "operations"). */
void vm_op_submit(struct vm *vm, struct vm_op *op);

/* What follows a queued command on the loop: rc its result, force as
 * given to vm_submit_cmd. */
typedef void (*vm_cmd_apply_fn)(struct vm *vm, int rc, bool force);

/* Queue the QMP command cmd (no arguments, a string that outlives the
 * operation) for vm after its earlier operations; apply (may be NULL) then
 * done run on the loop after it. */
int vm_submit_cmd(struct vm *vm, const char *cmd, bool force,
		  vm_cmd_apply_fn apply, vm_done_fn done, void *ctx,
		  struct ferr *err);

/* Queue nothing but done, after vm's earlier operations. */
int vm_submit_noop(struct vm *vm, vm_done_fn done, void *ctx,
		   struct ferr *err);

/* Check files and memory, then queue the launch of QEMU for vm with extra
 * arguments and the attachment of its QMP. On failure (at once, or in
 * done) nothing is left running and vm is shut off. */
int vm_launch(struct vmm *m, struct vm *vm, const char *const *extra,
	      vm_done_fn done, void *ctx, struct ferr *err);

/* QEMU's run state ("running", "postmigrate", ...) into out (len bytes). */
int vm_query_status(struct qmp *q, char *out, size_t len, struct ferr *err);

/* Take over the QMP connection q for vm and start watching it (events,
 * QEMU's exit); status is QEMU's run state. On failure q is closed. */
int vm_attach(struct vm *vm, struct qmp *q, const char *status,
	      struct ferr *err);

/* Queue: kill vm's QEMU (it goes away: discarded, or running on another
 * host), reap it, detach, then after(vm) on the loop (may be NULL). */
int vm_quit(struct vm *vm, void (*after)(struct vm *vm), struct ferr *err);

/* Queue fn(NULL, ctx, err) on a worker thread after the VM's earlier
 * operations, without its monitor; done follows on the loop. */
int vm_run_work(struct vm *vm, const char *what, vm_qmp_fn fn, void *ctx,
		vm_done_fn done, struct ferr *err);

/* ---- attach.c ---- */

/* At start-up: find vm's QEMU if it still runs and re-attach to it
 * (blocking, with deadlines: the loop is not running yet). */
void vm_reattach(struct vm *vm);

/* ---- fw.c ---- */

/* A VM's firewall binding, copied into its operations (worker threads). */
struct vm_fwb {
	bool on;                         /* the VM is bridged */
	char ns[NETDEV_NETNS_MAX + 1];   /* its bridge's namespace */
	char uuid[FERRY_UUID_STR_LEN + 1];
	char tap[NETDEV_IFNAME_MAX + 1]; /* set once the tap exists */
	uint8_t mac[6];
	struct fw_policy policy;         /* the rules to install, if present */
};

/* vm's binding without rules (what removing them needs). */
void vm_fwb_init(const struct vm *vm, struct vm_fwb *b);

/* Loop, at launch: vm's binding with the rules it gets here (fw_effective);
 * FERR_FORBIDDEN when the policy refuses them. */
int vm_fwb_plan(struct vmm *m, const struct vm *vm, struct vm_fwb *b,
		struct ferr *err);

/* Worker: install b's rules on b->tap (nothing when it has none). */
int vm_fwb_up(const struct vmm *m, const struct vm_fwb *b, struct ferr *err);

/* Worker: the VM left this host (stopped, crashed, migrated away,
 * discarded): remove its rules and forget its tracked flows. Logged. */
void vm_fwb_down(const struct vmm *m, const struct vm_fwb *b);

/* ---- incoming.c ---- */

/* At start-up, vms/NAME holds incoming.json and no vm.json: adopt or
 * discard that migration's VM. */
void vmm_load_incoming(struct vmm *m, const char *name);

/* An incoming VM's QEMU exited: discard the VM from the loop, after the
 * current callback (by name and uuid, never by a pointer). */
void vm_incoming_discard_later(struct vm *vm);

#endif
