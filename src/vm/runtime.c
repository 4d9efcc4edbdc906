/* runtime.c - QEMU processes of the host's VMs: operations (one at a time
 * per VM, each on a worker thread with the VM's monitor lent to it), QMP
 * events, launch, attaching to a QEMU thawed by HA, quit, reaping (stop,
 * pause and resume: control.c; re-attachment at start-up: attach.c). The loop never waits for QEMU
 * (vm.h). */
#define _GNU_SOURCE
#include "vm_internal.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* One operation on a VM: work() on a worker thread, apply() then done()
 * on the loop. */
struct vm_op {
	struct vm *vm;
	const char *what;       /* names it in messages */
	bool lend_qmp;          /* work() gets the VM's monitor in op->q */
	bool need_qmp;          /* ... and fails without one */
	struct qmp *q;
	int (*work)(struct vm_op *op);
	void (*apply)(struct vm_op *op);
	vm_done_fn done;
	void *ctx;
	int rc;
	struct ferr err;
	/* vm_run_qmp */
	vm_qmp_fn fn;
	void *fn_ctx;
	/* quit: what follows on the loop */
	void (*after)(struct vm *vm);
	/* one QMP command (pause, resume, stop) */
	const char *cmd;
	bool force;
	vm_cmd_apply_fn cmd_apply;
	/* launch */
	struct strv argv;
	struct vm_paths paths;
	struct qemu_fds fds;      /* what ferryd opened for QEMU */
	bool have_fds;
	bool keep;              /* launch: QEMU keeps the monitor (qmp_keep) */
	const struct qemu_user *user;
	struct qmp *newq;
	/* launch, reap */
	pid_t pid;
	char uuid[FERRY_UUID_STR_LEN + 1];
	char status[32];        /* QEMU's run state after a launch */
	char why[FERRY_ERR_MSG_MAX]; /* reap: why QMP closed */
	struct vm_fwb fwb;      /* launch, reap, quit: the VM's firewall */
	struct vm_op *next;
};

static void op_start(struct vm *vm);
static struct vm_op *op_new(struct vm *vm, const char *what,
			    struct ferr *err);

/* ---- QMP events and run states ---- */

/* Remove a VM's runtime files (QMP sockets, pidfile). */
static void vm_remove_runtime(struct vm *vm)
{
	struct vm_paths p;
	struct ferr err;

	if (vm_paths_get(vm->vmm->cfg, &vm->def, &p, &err) < 0)
		return;
	unlink(p.qmp);
	unlink(p.mqmp);
	unlink(p.pidfile);
	if (p.ram[0])
		unlink(p.ram);
}

/* Map a QMP run state onto ours. */
static enum vm_state state_from_status(const char *status)
{
	if (!status)
		return VM_UNKNOWN;
	if (!strcmp(status, "running"))
		return VM_RUNNING;
	if (!strcmp(status, "shutdown"))
		return VM_STOPPING;
	return VM_PAUSED; /* paused, prelaunch, inmigrate, postmigrate, ... */
}

/* QMP event handler: keep vm->state current. */
static void on_qmp_event(struct qmp *q, const char *name, json_t *data,
			 void *arg)
{
	struct vm *vm = arg;

	(void)q;
	log_debug("vm %s: QMP event %s", vm->def.name, name);
	if (!strcmp(name, "MIGRATION")) {
		const char *st = json_string_value(json_object_get(data,
								   "status"));

		snprintf(vm->mig_status, sizeof(vm->mig_status), "%s",
			 st ? st : "");
	} else if (!strcmp(name, "SHUTDOWN")) {
		vm->state = VM_STOPPING;
	} else if (!strcmp(name, "STOP")) {
		if (vm->state != VM_STOPPING)
			vm->state = VM_PAUSED;
	} else if (!strcmp(name, "RESUME")) {
		if (vm->state != VM_STOPPING)
			vm->state = VM_RUNNING;
	} else if (!strcmp(name, "GUEST_PANICKED")) {
		snprintf(vm->last_error, sizeof(vm->last_error),
			 "guest panicked");
		log_warn("vm %s: guest panicked", vm->def.name);
	}
}

int vm_query_status(struct qmp *q, char *out, size_t len, struct ferr *err)
{
	json_t *ret = NULL;
	const char *st;

	if (qmp_command(q, "query-status", NULL, &ret, err) < 0)
		return -1;
	st = json_string_value(json_object_get(ret, "status"));
	snprintf(out, len, "%s", st ? st : "");
	json_decref(ret);
	return 0;
}

/* Reap a QEMU whose monitor closed (worker thread): give it
 * FERRY_KILL_WAIT_MS to finish exiting (it may be flushing a disk), then
 * SIGKILL it. */
static void qemu_reap(pid_t pid, const char *uuid)
{
	uint64_t deadline = now_ms() + FERRY_KILL_WAIT_MS;

	if (pid <= 0)
		return;
	for (;;) {
		pid_t r = waitpid(pid, NULL, WNOHANG);

		if (r == pid || !qemu_process_matches(pid, uuid))
			return;
		if (now_ms() >= deadline)
			break;
		usleep(10 * 1000);
	}
	log_warn("QEMU pid %d closed QMP but did not exit; killing it",
		 (int)pid);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, WNOHANG);
}

static int reap_work(struct vm_op *op)
{
	qemu_reap(op->pid, op->uuid);
	vm_fwb_down(op->vm->vmm, &op->fwb);
	return 0;
}

/* The QEMU is gone: back to shut off. */
static void reap_apply(struct vm_op *op)
{
	struct vm *vm = op->vm;
	struct vmm *m = vm->vmm;
	bool expected = vm->state == VM_STOPPING || vm->incoming;

	if (vm->pid != op->pid)
		return; /* a new QEMU was started meanwhile: not ours */
	vm_remove_runtime(vm);
	if (!expected) {
		snprintf(vm->last_error, sizeof(vm->last_error),
			 "QEMU exited unexpectedly: %s", op->why);
		log_warn("vm %s: %s", vm->def.name, vm->last_error);
	} else {
		log_info("vm %s: stopped", vm->def.name);
	}
	if (m->exit_hook)
		m->exit_hook(vm, m->exit_hook_arg);
	if (m->ha_exit_hook)
		m->ha_exit_hook(vm, m->ha_exit_hook_arg);
	vm->state = VM_SHUTOFF;
	vm->pid = 0;
	vm->stop_forced = false;
	vm->qemu_status[0] = '\0';
	vm->fw.present = false;
	if (vm->stop_timer)
		evtimer_del(vm->stop_timer);
	if (vm->incoming)
		vm_incoming_discard_later(vm);
}

/* QMP closed: detach at once, reap the process in an operation. */
static void vm_qemu_gone(struct vm *vm, const char *why)
{
	struct vm_op *op;

	if (vm->qmp_ev) {
		event_free(vm->qmp_ev);
		vm->qmp_ev = NULL;
	}
	qmp_close(vm->qmp);
	vm->qmp = NULL;
	if (vm->state != VM_SHUTOFF && vm->state != VM_STOPPING &&
	    !vm->incoming) {
		/* unexpected: keep the reason until the reap says so */
		snprintf(vm->last_error, sizeof(vm->last_error),
			 "QEMU exited unexpectedly: %s", why);
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		/* no memory: reap inline rather than lose track */
		struct vm_op tmp = { .vm = vm, .pid = vm->pid };

		snprintf(tmp.uuid, sizeof(tmp.uuid), "%s", vm->def.uuid);
		snprintf(tmp.why, sizeof(tmp.why), "%s", why);
		reap_work(&tmp);
		reap_apply(&tmp);
		return;
	}
	op->what = "reap";
	op->work = reap_work;
	op->apply = reap_apply;
	op->pid = vm->pid;
	vm_fwb_init(vm, &op->fwb);
	snprintf(op->uuid, sizeof(op->uuid), "%s", vm->def.uuid);
	snprintf(op->why, sizeof(op->why), "%s", why);
	vm_op_submit(vm, op);
}

static int status_work(struct vm_op *op)
{
	return vm_query_status(op->q, op->status, sizeof(op->status), &op->err);
}

static void status_apply(struct vm_op *op)
{
	struct vm *vm = op->vm;

	if (op->rc < 0 || vm->state == VM_STOPPING)
		return;
	vm->state = state_from_status(op->status);
	snprintf(vm->qemu_status, sizeof(vm->qemu_status), "%s", op->status);
}

/* Dispatch the VM's queued QMP events; notice QEMU's exit. When events
 * were dropped (a burst beyond the queue's bound), re-read the run state
 * rather than trust what is left. Loop. */
static void vm_dispatch(struct vm *vm)
{
	struct vm_op *op;
	struct ferr err;

	if (!vm->qmp)
		return;
	if (qmp_poll_events(vm->qmp, &err) < 0) {
		vm_qemu_gone(vm, err.msg);
		return;
	}
	if (qmp_events_dropped(vm->qmp) == vm->events_dropped)
		return;
	log_warn("vm %s: %llu QMP events dropped in a burst; re-reading its "
		 "state",
		 vm->def.name,
		 (unsigned long long)(qmp_events_dropped(vm->qmp) -
				      vm->events_dropped));
	vm->events_dropped = qmp_events_dropped(vm->qmp);
	op = op_new(vm, "query-status", &err);
	if (!op)
		return;
	op->lend_qmp = op->need_qmp = true;
	op->work = status_work;
	op->apply = status_apply;
	vm_op_submit(vm, op);
}

/* The QMP socket is readable: dispatch events, notice QEMU's exit. */
static void on_qmp_readable(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	vm_dispatch(arg);
}

int vm_attach(struct vm *vm, struct qmp *q, const char *status,
	      struct ferr *err)
{
	vm->qmp = q;
	qmp_set_event_cb(q, on_qmp_event, vm);
	vm->qmp_ev = event_new(vm->vmm->base, qmp_fd(q), EV_READ | EV_PERSIST,
			       on_qmp_readable, vm);
	if (!vm->qmp_ev || event_add(vm->qmp_ev, NULL) < 0) {
		qmp_close(q);
		vm->qmp = NULL;
		return ferr_set(err, FERR_INTERNAL, "cannot watch QMP");
	}
	vm->state = state_from_status(status);
	snprintf(vm->qemu_status, sizeof(vm->qemu_status), "%s",
		 status ? status : "");
	return 0;
}


/* ---- the operation queue ---- */

unsigned vm_busy(const struct vm *vm)
{
	return vm->nops;
}

static void op_free(struct vm_op *op)
{
	strv_free(&op->argv);
	if (op->have_fds)
		qemu_fds_close(&op->fds);
	if (op->newq)
		qmp_close(op->newq);
	free(op);
}

static void op_work(void *arg)
{
	struct vm_op *op = arg;

	if (op->need_qmp && !op->q)
		op->rc = ferr_set(&op->err, FERR_CONFLICT,
				  "vm %s: QEMU is not running",
				  op->vm->def.name);
	else
		op->rc = op->work(op);
}

/* Loop: the running operation of a VM ended. */
static void op_done(void *arg)
{
	struct vm_op *op = arg;
	struct vm *vm = op->vm;

	vm->ops = op->next;
	if (!vm->ops)
		vm->ops_tail = NULL;
	vm->nops--;
	vm->op_running = false;
	vm->in_callback++;
	if (vm->qmp && vm->qmp_ev)
		event_add(vm->qmp_ev, NULL);
	if (op->apply)
		op->apply(op);
	vm_dispatch(vm);
	if (op->done)
		op->done(op->ctx, vm->gone ? NULL : vm, op->rc,
			 op->rc < 0 ? &op->err : NULL);
	op_free(op);
	vm->in_callback--;
	if (!vm->op_running && vm->ops)
		op_start(vm);
	if (vm->gone && !vm->ops && !vm->in_callback)
		vm_free(vm);
}

/* An operation that could not be run: end it from the loop. */
static void op_fail_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	op_done(arg);
}

/* Start the VM's first queued operation. Loop. */
static void op_start(struct vm *vm)
{
	struct vm_op *op = vm->ops;
	struct timeval now = { 0 };

	vm->op_running = true;
	if (vm->gone && op->work != reap_work) {
		op->rc = ferr_set(&op->err, FERR_NOT_FOUND,
				  "vm %s is gone", vm->def.name);
		goto fail;
	}
	if (op->lend_qmp) {
		op->q = vm->qmp;
		if (vm->qmp_ev)
			event_del(vm->qmp_ev);
	}
	op->rc = 0;
	if (worker_submit(vm->vmm->pool, op_work, op_done, op, &op->err) ==
	    0)
		return;
	op->rc = -1;
	if (vm->qmp && vm->qmp_ev)
		event_add(vm->qmp_ev, NULL);
fail:
	if (event_base_once(vm->vmm->base, -1, EV_TIMEOUT, op_fail_cb, op,
			    &now) < 0) {
		/* cannot even defer: finish it here (done is documented to
		 * follow submission; this is out of memory) */
		log_error("vm %s: %s: cannot schedule", vm->def.name,
			  op->what);
		op_done(op);
	}
}

void vm_op_submit(struct vm *vm, struct vm_op *op)
{
	op->vm = vm;
	op->next = NULL;
	if (vm->ops_tail)
		vm->ops_tail->next = op;
	else
		vm->ops = op;
	vm->ops_tail = op;
	vm->nops++;
	if (!vm->op_running)
		op_start(vm);
}

/* A new operation or NULL (FERR_INTERNAL in err). Refused when the VM
 * has FERRY_VM_OPS_MAX queued already. */
static struct vm_op *op_new(struct vm *vm, const char *what,
			    struct ferr *err)
{
	struct vm_op *op;

	if (vm->nops >= FERRY_VM_OPS_MAX) {
		ferr_set(err, FERR_RATE,
			 "vm %s has %u operations waiting; try again when "
			 "they are done",
			 vm->def.name, vm->nops);
		return NULL;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	op->what = what;
	return op;
}

/* ---- running QMP for others ---- */

static int run_qmp_work(struct vm_op *op)
{
	return op->fn(op->q, op->fn_ctx, &op->err);
}

/* Queue fn(q, ctx) on a worker, q the VM's monitor when lend, else NULL. */
static int run_fn(struct vm *vm, const char *what, bool lend, vm_qmp_fn fn,
		  void *ctx, vm_done_fn done, struct ferr *err)
{
	struct vm_op *op = op_new(vm, what, err);

	if (!op)
		return -1;
	op->lend_qmp = op->need_qmp = lend;
	op->work = run_qmp_work;
	op->fn = fn;
	op->fn_ctx = ctx;
	op->done = done;
	op->ctx = ctx;
	vm_op_submit(vm, op);
	return 0;
}

int vm_run_qmp(struct vm *vm, const char *what, vm_qmp_fn fn, void *ctx,
	       vm_done_fn done, struct ferr *err)
{
	return run_fn(vm, what, true, fn, ctx, done, err);
}

int vm_run_work(struct vm *vm, const char *what, vm_qmp_fn fn, void *ctx,
		vm_done_fn done, struct ferr *err)
{
	return run_fn(vm, what, false, fn, ctx, done, err);
}

/* One QMP command of op->cmd, no arguments. */
static int cmd_work(struct vm_op *op)
{
	return qmp_command(op->q, op->cmd, NULL, NULL, &op->err);
}

/* The after-step of vm_submit_cmd. */
static void cmd_apply(struct vm_op *op)
{
	if (op->cmd_apply)
		op->cmd_apply(op->vm, op->rc, op->force);
}

int vm_submit_cmd(struct vm *vm, const char *cmd, bool force,
		  vm_cmd_apply_fn apply, vm_done_fn done, void *ctx,
		  struct ferr *err)
{
	struct vm_op *op = op_new(vm, cmd, err);

	if (!op)
		return -1;
	op->lend_qmp = op->need_qmp = true;
	op->work = cmd_work;
	op->cmd = cmd;
	op->force = force;
	op->apply = cmd_apply;
	op->cmd_apply = apply;
	op->done = done;
	op->ctx = ctx;
	vm_op_submit(vm, op);
	return 0;
}

static int noop_work(struct vm_op *op)
{
	(void)op;
	return 0;
}

int vm_submit_noop(struct vm *vm, vm_done_fn done, void *ctx,
		   struct ferr *err)
{
	struct vm_op *op = op_new(vm, "wait", err);

	if (!op)
		return -1;
	op->work = noop_work;
	op->done = done;
	op->ctx = ctx;
	vm_op_submit(vm, op);
	return 0;
}

/* ---- attach later: a QEMU frozen at start-up, thawed by HA ---- */

static int reattach_work(struct vm_op *op)
{
	int kept;

	if (!qemu_process_matches(op->pid, op->uuid))
		return ferr_set(&op->err, FERR_CONFLICT, "QEMU pid %d is gone",
				(int)op->pid);
	if (qemu_process_stopped(op->pid))
		return ferr_set(&op->err, FERR_CONFLICT,
				"QEMU pid %d is still frozen", (int)op->pid);
	kept = qemu_kept_monitor(op->pid, op->paths.qmp);
	if ((kept >= 0 ? qmp_adopt(kept, &op->newq, &op->err)
		       : qmp_connect(op->paths.qmp, FERRY_QMP_TIMEOUT_MS,
				     &op->newq, &op->err)) < 0)
		return -1;
	return vm_query_status(op->newq, op->status, sizeof(op->status),
			    &op->err);
}

static void reattach_apply(struct vm_op *op)
{
	struct vm *vm = op->vm;

	if (op->rc < 0 || vm->qmp || vm->pid != op->pid)
		return;
	if (vm_attach(vm, op->newq, op->status, &op->err) < 0) {
		op->rc = -1;
		return;
	}
	op->newq = NULL; /* the VM's now */
	vm->last_error[0] = '\0';
	vm->started_wall_ms = wall_ms();
	log_info("vm %s: attached to QEMU pid %d (%s)", vm->def.name,
		 (int)vm->pid, op->status);
}

int vmm_reattach(struct vmm *m, struct vm *vm, vm_done_fn done, void *ctx,
		 struct ferr *err)
{
	struct vm_op *op;

	if (vm->qmp || vm->pid <= 0)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s has no QEMU to attach to", vm->def.name);
	op = op_new(vm, "attach", err);
	if (!op)
		return -1;
	if (vm_paths_get(m->cfg, &vm->def, &op->paths, err) < 0) {
		free(op);
		return -1;
	}
	op->pid = vm->pid;
	snprintf(op->uuid, sizeof(op->uuid), "%s", vm->def.uuid);
	op->work = reattach_work;
	op->apply = reattach_apply;
	op->done = done;
	op->ctx = ctx;
	vm_op_submit(vm, op);
	return 0;
}

/* ---- launch ---- */

static int launch_work(struct vm_op *op)
{
	int rc;

	/* the rules are on the tap before QEMU (and so the vCPUs) runs */
	if (vm_fwb_up(op->vm->vmm, &op->fwb, &op->err) < 0) {
		qemu_fds_close(&op->fds);
		op->have_fds = false;
		return -1;
	}
	rc = qemu_spawn(&op->argv, &op->paths, &op->fds, op->user, &op->pid,
			&op->err);

	/* QEMU holds its descriptors now (or never will) */
	qemu_fds_close(&op->fds);
	op->have_fds = false;
	if (rc < 0 ||
	    qemu_wait_ready(op->pid, op->paths.qmp, op->paths.log, &op->newq,
			    &op->err) < 0 ||
	    vm_query_status(op->newq, op->status, sizeof(op->status), &op->err) <
		    0) {
		if (op->pid > 0 && qemu_process_matches(op->pid, op->uuid)) {
			kill(op->pid, SIGKILL);
			waitpid(op->pid, NULL, 0);
		}
		vm_fwb_down(op->vm->vmm, &op->fwb);
		return -1;
	}
	if (op->keep) {
		struct ferr kerr;

		if (qmp_keep(op->newq, &kerr) < 0)
			log_warn("vm %s: its monitor will not outlive ferryd: %s",
				 op->uuid, kerr.msg);
	}
	return 0;
}

static void launch_apply(struct vm_op *op)
{
	struct vm *vm = op->vm;

	if (op->rc == 0 && vm_attach(vm, op->newq, op->status, &op->err) == 0) {
		op->newq = NULL; /* the VM's now */
		vm->pid = op->pid;
		snprintf(vm->tap, sizeof(vm->tap), "%s", op->fds.tap_name);
		vm->fw = op->fwb.policy;
		vm->started_wall_ms = wall_ms();
		vm->last_error[0] = '\0';
		log_info("vm %s: QEMU pid %d started (%s%s)", vm->def.name,
			 (int)op->pid, accel_mode_name(vm->vmm->accel),
			 vm->incoming ? ", incoming" : "");
		return;
	}
	op->rc = -1;
	vm->state = VM_SHUTOFF;
	vm->pid = 0;
	vm_remove_runtime(vm);
	snprintf(vm->last_error, sizeof(vm->last_error), "%s", op->err.msg);
	ferr_wrap(&op->err, "cannot start vm %s", vm->def.name);
}

int vm_launch(struct vmm *m, struct vm *vm, const char *const *extra,
	      vm_done_fn done, void *ctx, struct ferr *err)
{
	struct vm_op *op;
	uint64_t free_mib;

	if (vmm_check_files(m, &vm->def, err) < 0)
		return -1;
	free_mib = vmm_memory_free_mib(m);
	if (vm->def.memory_mib > free_mib)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s needs %llu MiB but host %s has %llu "
				"MiB free",
				vm->def.name,
				(unsigned long long)vm->def.memory_mib,
				m->cfg->host, (unsigned long long)free_mib);
	op = op_new(vm, "start", err);
	if (!op)
		return -1;
	/* confine.c: ferryd opens QEMU's files and hands them over */
	if (vm_fwb_plan(m, vm, &op->fwb, err) < 0 ||
	    vm_paths_get(m->cfg, &vm->def, &op->paths, err) < 0 ||
	    qemu_fds_open(m->cfg, &vm->def, &op->paths, &m->qemu_user,
			  &op->fds, err) < 0) {
		op_free(op);
		return -1;
	}
	op->have_fds = true;
	snprintf(op->fwb.tap, sizeof(op->fwb.tap), "%s", op->fds.tap_name);
	if (qemu_build_argv(m->cfg, m->accel, &vm->def, &op->fds, extra,
			    &op->argv, err) < 0) {
		op_free(op);
		return -1;
	}
	op->user = &m->qemu_user;
	/* a post-copy destination must re-attach even while a vCPU that
	 * waits for a page blocks QEMU's main thread, where a new monitor
	 * connection is negotiated: the negotiated one outlives ferryd */
	op->keep = vm->incoming && vm->def.allow_postcopy;
	snprintf(op->uuid, sizeof(op->uuid), "%s", vm->def.uuid);
	vm->state = VM_STARTING; /* counts its memory from now on */
	op->work = launch_work;
	op->apply = launch_apply;
	op->done = done;
	op->ctx = ctx;
	vm_op_submit(vm, op);
	return 0;
}

int vmm_start(struct vmm *m, struct vm *vm, vm_done_fn done, void *ctx,
	      struct ferr *err)
{
	if (vm->state != VM_SHUTOFF)
		return ferr_set(err, FERR_CONFLICT, "vm %s is %s, not shutoff",
				vm->def.name, vm_state_name(vm->state));
	return vm_launch(m, vm, NULL, done, ctx, err);
}

/* ---- quit (discard, migrated away) ---- */

static int quit_work(struct vm_op *op)
{
	/* the VM goes away (discarded, or running on another host): nothing
	 * in this QEMU is worth a graceful quit, and a frozen QEMU must not
	 * hold up its removal */
	if (op->pid > 0 && qemu_process_matches(op->pid, op->uuid))
		kill(op->pid, SIGKILL);
	qemu_reap(op->pid, op->uuid);
	vm_fwb_down(op->vm->vmm, &op->fwb);
	return 0;
}

static void quit_apply(struct vm_op *op)
{
	struct vm *vm = op->vm;

	if (vm->qmp_ev) {
		event_free(vm->qmp_ev);
		vm->qmp_ev = NULL;
	}
	qmp_close(vm->qmp);
	vm->qmp = NULL;
	if (vm->stop_timer)
		evtimer_del(vm->stop_timer);
	vm_remove_runtime(vm);
	vm->state = VM_SHUTOFF;
	vm->pid = 0;
	vm->qemu_status[0] = '\0';
	vm->fw.present = false;
	if (op->after)
		op->after(vm);
}

int vm_quit(struct vm *vm, void (*after)(struct vm *vm), struct ferr *err)
{
	struct vm_op *op = calloc(1, sizeof(*op));

	if (!op)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	/* not subject to FERRY_VM_OPS_MAX: removing a VM must not fail */
	op->what = "quit";
	op->work = quit_work;
	op->apply = quit_apply;
	op->pid = vm->pid;
	vm_fwb_init(vm, &op->fwb);
	snprintf(op->uuid, sizeof(op->uuid), "%s", vm->def.uuid);
	op->after = after;
	if (vm->state != VM_SHUTOFF)
		vm->state = VM_STOPPING;
	vm_op_submit(vm, op);
	return 0;
}
