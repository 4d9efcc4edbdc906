/* control.c - an operator's stop (graceful, then forced after its
 * timeout, then SIGKILL), pause and resume of a VM, each queued as one
 * QMP command (runtime.c); a VM a migration left paused changes only with
 * force (the resume guard, docs/migration-protocol.md). */
#include "vm_internal.h"

#include <signal.h>
#include <string.h>

/* Stop timer: first the graceful deadline (then quit), then the quit
 * deadline (then SIGKILL). */
static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
	struct vm *vm = arg;
	struct timeval tv = { .tv_sec = FERRY_KILL_WAIT_MS / 1000 };
	struct ferr err;

	(void)fd;
	(void)what;
	if (!vm->stop_forced) {
		log_info("vm %s: graceful stop timed out, quitting QEMU",
			 vm->def.name);
		vm->stop_forced = true;
		if (vm_submit_cmd(vm, "quit", true, NULL, NULL, NULL, &err) < 0)
			log_warn("vm %s: quit: %s", vm->def.name, err.msg);
		if (vm->state != VM_SHUTOFF && vm->stop_timer)
			evtimer_add(vm->stop_timer, &tv);
		return;
	}
	if (vm->pid > 0 && qemu_process_matches(vm->pid, vm->def.uuid)) {
		log_warn("vm %s: QEMU pid %d did not exit, killing it",
			 vm->def.name, (int)vm->pid);
		kill(vm->pid, SIGKILL);
	}
}

/* A VM whose hold guards it changes only with force. */
static int check_guard(const struct vm *vm, bool force, const char *verb,
		       struct ferr *err)
{
	if (vm->hold.owner[0] && vm->hold.resume_guard && !force)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s was left paused by migration %s, whose "
				"outcome is not known yet: it may run on the "
				"other host already. %s it only if you know it "
				"does not (--force); ferryd keeps asking the "
				"other host",
				vm->def.name, vm->hold.owner, verb);
	return 0;
}

int vmm_stop(struct vmm *m, struct vm *vm, bool force, unsigned timeout_s,
	     vm_done_fn done, void *ctx, struct ferr *err)
{
	struct timeval tv = { 0 };

	(void)m;
	if (vm->state == VM_SHUTOFF)
		return ferr_set(err, FERR_CONFLICT, "vm %s is not running",
				vm->def.name);
	if (check_guard(vm, force, "Stop", err) < 0)
		return -1;
	if (!vm->stop_timer) {
		vm->stop_timer = evtimer_new(vm->vmm->base, on_stop_timer, vm);
		if (!vm->stop_timer)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	if (vm->state == VM_STOPPING && !force) {
		/* already on its way: nothing to queue */
		return vm_submit_noop(vm, done, ctx, err);
	}
	if (force || !vm->qmp) {
		if (vm->qmp) {
			if (vm_submit_cmd(vm, "quit", true, NULL, done, ctx,
				       err) < 0)
				return -1;
		} else {
			if (vm->pid > 0)
				kill(vm->pid, SIGTERM);
			if (vm_submit_noop(vm, done, ctx, err) < 0)
				return -1;
		}
		vm->stop_forced = true;
		tv.tv_sec = FERRY_KILL_WAIT_MS / 1000;
	} else {
		if (vm_submit_cmd(vm, "system_powerdown", false, NULL, done, ctx,
			       err) < 0)
			return -1;
		tv.tv_sec = timeout_s;
	}
	if (force && vm->hold.resume_guard)
		memset(&vm->hold, 0, sizeof(vm->hold));
	evtimer_del(vm->stop_timer);
	vm->state = VM_STOPPING;
	evtimer_add(vm->stop_timer, &tv);
	log_info("vm %s: %s stop requested", vm->def.name,
		 force ? "forced" : "graceful");
	return 0;
}

static void pause_apply(struct vm *vm, int rc, bool force)
{
	(void)force;
	if (rc == 0 && vm->state == VM_RUNNING)
		vm->state = VM_PAUSED;
}

static void resume_apply(struct vm *vm, int rc, bool force)
{
	if (rc < 0)
		return;
	if (vm->state == VM_PAUSED)
		vm->state = VM_RUNNING;
	if (force && vm->hold.resume_guard) {
		log_warn("vm %s: resumed by force, although migration %s had "
			 "left it paused",
			 vm->def.name, vm->hold.owner);
		memset(&vm->hold, 0, sizeof(vm->hold));
	}
}

int vmm_pause(struct vmm *m, struct vm *vm, vm_done_fn done, void *ctx,
	      struct ferr *err)
{
	(void)m;
	if (vm->state != VM_RUNNING)
		return ferr_set(err, FERR_CONFLICT, "vm %s is %s, not running",
				vm->def.name, vm_state_name(vm->state));
	return vm_submit_cmd(vm, "stop", false, pause_apply, done, ctx, err);
}

int vmm_resume(struct vmm *m, struct vm *vm, bool force, vm_done_fn done,
	       void *ctx, struct ferr *err)
{
	(void)m;
	if (vm->state != VM_PAUSED)
		return ferr_set(err, FERR_CONFLICT, "vm %s is %s, not paused",
				vm->def.name, vm_state_name(vm->state));
	if (check_guard(vm, force, "Resume", err) < 0)
		return -1;
	return vm_submit_cmd(vm, "cont", force, resume_apply, done, ctx, err);
}
