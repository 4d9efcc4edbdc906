/* runtime.c - QEMU processes of the host's VMs: launch, QMP events,
 * re-attachment after a ferryd restart, stop, pause, resume, reaping. */
#define _GNU_SOURCE
#include "vm_internal.h"
#include "netdev.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PIDFILE_MAX 64

/* Remove a VM's runtime files (QMP socket, pidfile). */
static void vm_remove_runtime(struct vm *vm)
{
	struct vm_paths p;
	struct ferr err;

	if (vm_paths_get(vm->vmm->cfg, &vm->def, &p, &err) < 0)
		return;
	unlink(p.qmp);
	unlink(p.mqmp);
	unlink(p.pidfile);
}

/* QEMU closed QMP: give it FERRY_KILL_WAIT_MS to finish exiting (it may be
 * flushing a disk), then SIGKILL it. Reaps it when it is our child. */
static void qemu_reap(pid_t pid, const char *uuid)
{
	uint64_t deadline = now_ms() + FERRY_KILL_WAIT_MS;

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

/* QEMU is gone (QMP closed): back to shut off. */
static void vm_qemu_gone(struct vm *vm, const char *why)
{
	bool expected = vm->state == VM_STOPPING || vm->incoming;
	struct vmm *m = vm->vmm;

	if (vm->qmp_ev) {
		event_free(vm->qmp_ev);
		vm->qmp_ev = NULL;
	}
	if (vm->stop_timer) {
		event_free(vm->stop_timer);
		vm->stop_timer = NULL;
	}
	qmp_close(vm->qmp);
	vm->qmp = NULL;
	if (vm->pid > 0)
		qemu_reap(vm->pid, vm->def.uuid);
	vm_remove_runtime(vm);
	if (!expected) {
		snprintf(vm->last_error, sizeof(vm->last_error),
			 "QEMU exited unexpectedly: %s", why);
		log_warn("vm %s: %s", vm->def.name, vm->last_error);
	} else {
		log_info("vm %s: stopped", vm->def.name);
	}
	if (m->exit_hook)
		m->exit_hook(vm, m->exit_hook_arg);
	vm->state = VM_SHUTOFF;
	vm->pid = 0;
	vm->stop_forced = false;
	if (vm->incoming)
		vm_incoming_discard_later(vm);
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
	(void)data;
	log_debug("vm %s: QMP event %s", vm->def.name, name);
	if (!strcmp(name, "SHUTDOWN")) {
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

/* The QMP socket is readable: dispatch events, notice QEMU's exit. */
static void on_qmp_readable(evutil_socket_t fd, short what, void *arg)
{
	struct vm *vm = arg;
	struct ferr err;

	(void)fd;
	(void)what;
	if (qmp_poll_events(vm->qmp, &err) < 0)
		vm_qemu_gone(vm, err.msg);
}

/* Ask QEMU for its run state and set vm->state from it. */
static int vm_refresh_status(struct vm *vm, struct ferr *err)
{
	json_t *ret = NULL;

	if (qmp_command(vm->qmp, "query-status", NULL, &ret, err) < 0)
		return -1;
	vm->state = state_from_status(
		json_string_value(json_object_get(ret, "status")));
	json_decref(ret);
	return 0;
}

/* Take over a QMP connection for vm and start watching it. */
static int vm_attach(struct vm *vm, struct qmp *q, struct ferr *err)
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
	if (vm_refresh_status(vm, err) < 0)
		return -1;
	return 0;
}

int vm_qmp(struct vm *vm, const char *cmd, json_t *args, json_t **ret,
	   struct ferr *err)
{
	int rc;

	if (!vm->qmp) {
		json_decref(args);
		return ferr_set(err, FERR_UNAVAILABLE,
				"vm %s: QEMU's monitor is not connected",
				vm->def.name);
	}
	rc = qmp_command(vm->qmp, cmd, args, ret, err);
	/* events queued meanwhile; QEMU's exit shows up here too */
	{
		struct ferr perr;
		if (qmp_poll_events(vm->qmp, &perr) < 0)
			vm_qemu_gone(vm, perr.msg);
	}
	return rc;
}

/* Read the pid in a pidfile; 0 when absent or unreadable. */
static pid_t pidfile_read(const char *path)
{
	char *text = NULL;
	size_t len = 0;
	uint64_t v = 0;
	struct ferr err;

	if (file_read_all(path, PIDFILE_MAX, &text, &len, &err) < 0)
		return 0;
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' '))
		text[--len] = '\0';
	if (parse_u64(text, 2, INT32_MAX, &v) < 0)
		v = 0;
	free(text);
	return (pid_t)v;
}

/* At start-up: find vm's QEMU if it still runs and re-attach to it. */
void vm_reattach(struct vm *vm)
{
	struct vm_paths p;
	struct qmp *q = NULL;
	struct ferr err;
	pid_t pid;

	if (vm_paths_get(vm->vmm->cfg, &vm->def, &p, &err) < 0)
		return;
	pid = pidfile_read(p.pidfile);
	if (!pid || !qemu_process_matches(pid, vm->def.uuid)) {
		unlink(p.qmp);
		unlink(p.pidfile);
		return;
	}
	vm->pid = pid;
	if (qmp_connect(p.qmp, FERRY_QMP_TIMEOUT_MS, &q, &err) < 0 ||
	    vm_attach(vm, q, &err) < 0) {
		vm->state = VM_UNKNOWN;
		snprintf(vm->last_error, sizeof(vm->last_error),
			 "cannot re-attach to QEMU pid %d: %s", (int)pid,
			 err.msg);
		log_error("vm %s: %s", vm->def.name, vm->last_error);
		return;
	}
	log_info("vm %s: re-attached to QEMU pid %d (%s)", vm->def.name,
		 (int)pid, vm_state_name(vm->state));
}

/* Check memory, launch QEMU for vm with extra arguments and attach its
 * QMP. On failure nothing is left running and vm is shut off. */
int vm_launch(struct vmm *m, struct vm *vm, const char *const *extra,
		     struct ferr *err)
{
	struct vm_paths p;
	struct strv argv = { 0 };
	struct qmp *q = NULL;
	struct tap tap = { .fd = -1 };
	uint64_t free_mib;
	pid_t pid = 0;
	int fd;

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
	if (vm_paths_get(m->cfg, &vm->def, &p, err) < 0 ||
	    qemu_build_argv(m->cfg, m->accel, &vm->def, &p, extra, &argv,
			    err) < 0)
		return -1;
	unlink(p.qmp);
	unlink(p.mqmp);
	/* a new boot starts a new console log */
	fd = open(p.console, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	/* bridged networking: the tap goes to QEMU, which then owns it */
	if (vm_net_open(m->cfg, &vm->def, &tap, err) < 0 ||
	    qemu_spawn(&argv, p.log, tap.fd, &pid, err) < 0)
		goto fail;
	if (tap.fd >= 0)
		close(tap.fd);
	tap.fd = -1;
	snprintf(vm->tap, sizeof(vm->tap), "%s", tap.ifname);
	vm->pid = pid;
	vm->state = VM_STARTING;
	if (qemu_wait_ready(pid, p.qmp, p.log, &q, err) < 0)
		goto fail;
	if (vm_attach(vm, q, err) < 0)
		goto fail;
	vm->started_wall_ms = wall_ms();
	vm->last_error[0] = '\0';
	strv_free(&argv);
	log_info("vm %s: QEMU pid %d started (%s%s)", vm->def.name, (int)pid,
		 accel_mode_name(m->accel), extra ? ", incoming" : "");
	return 0;
fail:
	strv_free(&argv);
	if (tap.fd >= 0)
		close(tap.fd);
	if (vm->pid > 0) {
		kill(vm->pid, SIGKILL);
		waitpid(vm->pid, NULL, 0);
	}
	if (vm->qmp_ev) {
		event_free(vm->qmp_ev);
		vm->qmp_ev = NULL;
	}
	qmp_close(vm->qmp);
	vm->qmp = NULL;
	vm->state = VM_SHUTOFF;
	vm->pid = 0;
	vm_remove_runtime(vm);
	snprintf(vm->last_error, sizeof(vm->last_error), "%s", err->msg);
	return ferr_wrap(err, "cannot start vm %s", vm->def.name);
}

int vmm_start(struct vmm *m, struct vm *vm, struct ferr *err)
{
	if (vm->state != VM_SHUTOFF)
		return ferr_set(err, FERR_CONFLICT, "vm %s is %s, not shutoff",
				vm->def.name, vm_state_name(vm->state));
	return vm_launch(m, vm, NULL, err);
}

/* Quit vm's QEMU (SIGKILL after FERRY_KILL_WAIT_MS), detach and forget it. */
void vm_kill_now(struct vm *vm)
{
	struct ferr err;

	if (vm->qmp && vm->state != VM_SHUTOFF) {
		vm->state = VM_STOPPING;
		vm_qmp(vm, "quit", NULL, NULL, &err);
	}
	if (vm->pid > 0) {
		qemu_reap(vm->pid, vm->def.uuid);
		vm->pid = 0;
	}
	if (vm->qmp_ev) {
		event_free(vm->qmp_ev);
		vm->qmp_ev = NULL;
	}
	qmp_close(vm->qmp);
	vm->qmp = NULL;
	vm_remove_runtime(vm);
	vm->state = VM_SHUTOFF;
}

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
		if (vm_qmp(vm, "quit", NULL, NULL, &err) < 0)
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

int vmm_stop(struct vmm *m, struct vm *vm, bool force, unsigned timeout_s,
	     struct ferr *err)
{
	struct timeval tv = { 0 };

	(void)m;
	if (vm->state == VM_SHUTOFF)
		return ferr_set(err, FERR_CONFLICT, "vm %s is not running",
				vm->def.name);
	if (vm->state == VM_STOPPING && !force)
		return 0; /* already on its way */
	if (!vm->stop_timer) {
		vm->stop_timer = evtimer_new(vm->vmm->base, on_stop_timer, vm);
		if (!vm->stop_timer)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	evtimer_del(vm->stop_timer);
	vm->state = VM_STOPPING;
	if (force || !vm->qmp) {
		vm->stop_forced = true;
		if (vm->qmp)
			vm_qmp(vm, "quit", NULL, NULL, err);
		else if (vm->pid > 0)
			kill(vm->pid, SIGTERM);
		tv.tv_sec = FERRY_KILL_WAIT_MS / 1000;
	} else {
		if (vm_qmp(vm, "system_powerdown", NULL, NULL, err) < 0)
			return -1;
		tv.tv_sec = timeout_s;
	}
	if (vm->state != VM_SHUTOFF && vm->stop_timer)
		evtimer_add(vm->stop_timer, &tv);
	log_info("vm %s: %s stop requested", vm->def.name,
		 force ? "forced" : "graceful");
	return 0;
}

int vmm_pause(struct vmm *m, struct vm *vm, struct ferr *err)
{
	(void)m;
	if (vm->state != VM_RUNNING)
		return ferr_set(err, FERR_CONFLICT, "vm %s is %s, not running",
				vm->def.name, vm_state_name(vm->state));
	if (vm_qmp(vm, "stop", NULL, NULL, err) < 0)
		return -1;
	if (vm->state == VM_RUNNING)
		vm->state = VM_PAUSED;
	return 0;
}

int vmm_resume(struct vmm *m, struct vm *vm, struct ferr *err)
{
	(void)m;
	if (vm->state != VM_PAUSED)
		return ferr_set(err, FERR_CONFLICT, "vm %s is %s, not paused",
				vm->def.name, vm_state_name(vm->state));
	if (vm_qmp(vm, "cont", NULL, NULL, err) < 0)
		return -1;
	if (vm->state == VM_PAUSED)
		vm->state = VM_RUNNING;
	return 0;
}
