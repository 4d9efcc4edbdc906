/* vm_internal.h - what the files of the vm component share (vmm.c: the
 * list and definitions; runtime.c: QEMU processes; incoming.c: VMs that
 * arrive or leave by migration). Not for other components: they use vm.h.
 */
#ifndef FERRY_VM_INTERNAL_H
#define FERRY_VM_INTERNAL_H

#include "vm.h"

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

/* Check files and memory, then queue the launch of QEMU for vm with extra
 * arguments and the attachment of its QMP. On failure (at once, or in
 * done) nothing is left running and vm is shut off. */
int vm_launch(struct vmm *m, struct vm *vm, const char *const *extra,
	      vm_done_fn done, void *ctx, struct ferr *err);

/* At start-up: find vm's QEMU if it still runs and re-attach to it
 * (blocking, with deadlines: the loop is not running yet). */
void vm_reattach(struct vm *vm);

/* Queue: kill vm's QEMU (it goes away: discarded, or running on another
 * host), reap it, detach, then after(vm) on the loop (may be NULL). */
int vm_quit(struct vm *vm, void (*after)(struct vm *vm), struct ferr *err);

/* ---- incoming.c ---- */

/* At start-up, vms/NAME holds incoming.json and no vm.json: adopt or
 * discard that migration's VM. */
void vmm_load_incoming(struct vmm *m, const char *name);

/* An incoming VM's QEMU exited: discard the VM from the loop, after the
 * current callback (by name and uuid, never by a pointer). */
void vm_incoming_discard_later(struct vm *vm);

#endif
