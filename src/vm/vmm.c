/* vmm.c - the host's VMs: definitions on disk, QEMU lifecycle, QMP events,
 * re-attachment after a ferryd restart. */
#define _GNU_SOURCE
#include "vm.h"

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

#define MEMINFO_MAX (64 * 1024)
#define PIDFILE_MAX 64

struct vmm {
	const struct ferryd_config *cfg;
	struct event_base *base;
	enum accel_mode accel;
	struct event *sigchld;
	struct vm *head;
	size_t count;
	vmm_exit_hook exit_hook;
	void *exit_hook_arg;
};

void vmm_set_exit_hook(struct vmm *m, vmm_exit_hook fn, void *arg)
{
	m->exit_hook = fn;
	m->exit_hook_arg = arg;
}

const char *vm_state_name(enum vm_state s)
{
	switch (s) {
	case VM_SHUTOFF:
		return "shutoff";
	case VM_STARTING:
		return "starting";
	case VM_RUNNING:
		return "running";
	case VM_PAUSED:
		return "paused";
	case VM_STOPPING:
		return "stopping";
	default:
		return "unknown";
	}
}

struct vm *vmm_first(struct vmm *m)
{
	return m->head;
}

size_t vmm_count(const struct vmm *m)
{
	return m->count;
}

struct vm *vmm_find(struct vmm *m, const char *name)
{
	for (struct vm *vm = m->head; vm; vm = vm->next)
		if (!strcmp(vm->def.name, name))
			return vm;
	return NULL;
}

/* Does the VM have a QEMU process? */
static bool vm_has_process(const struct vm *vm)
{
	return vm->state != VM_SHUTOFF;
}

uint64_t vmm_committed_mib(const struct vmm *m)
{
	uint64_t sum = 0;

	for (const struct vm *vm = m->head; vm; vm = vm->next)
		if (vm_has_process(vm))
			sum += vm->def.memory_mib;
	return sum;
}

/* MemTotal and MemAvailable from /proc/meminfo, in MiB. */
static int meminfo_read(uint64_t *total_mib, uint64_t *avail_mib,
			struct ferr *err)
{
	char *text = NULL;
	size_t len = 0;
	unsigned long long total = 0, avail = 0;
	char *p;

	if (file_read_all("/proc/meminfo", MEMINFO_MAX, &text, &len, err) < 0)
		return -1;
	p = strstr(text, "MemTotal:");
	if (p)
		sscanf(p, "MemTotal: %llu kB", &total);
	p = strstr(text, "MemAvailable:");
	if (p)
		sscanf(p, "MemAvailable: %llu kB", &avail);
	free(text);
	if (!total)
		return ferr_set(err, FERR_INTERNAL,
				"cannot read MemTotal from /proc/meminfo");
	*total_mib = total / 1024;
	*avail_mib = avail / 1024;
	return 0;
}

uint64_t vmm_memory_free_mib(const struct vmm *m)
{
	uint64_t total, avail, committed = vmm_committed_mib(m), room;
	struct ferr err;

	if (meminfo_read(&total, &avail, &err) < 0)
		return 0;
	room = total > committed ? total - committed : 0;
	if (avail < room)
		room = avail;
	return room > m->cfg->memory_reserve_mib
		       ? room - m->cfg->memory_reserve_mib
		       : 0;
}

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

/* A deferred check, after an incoming VM's QEMU exited: discard the VM if
 * it is still there. By name and uuid, never by a pointer that may be
 * stale. */
struct discard_req {
	struct vmm *m;
	char name[FERRY_NAME_MAX + 1];
	char uuid[FERRY_UUID_STR_LEN + 1];
};

static void on_discard(evutil_socket_t fd, short what, void *arg)
{
	struct discard_req *r = arg;
	struct vm *vm = vmm_find(r->m, r->name);

	(void)fd;
	(void)what;
	if (vm && vm->incoming && vm->state == VM_SHUTOFF &&
	    !strcmp(vm->def.uuid, r->uuid))
		vmm_incoming_discard(r->m, vm);
	free(r);
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
	if (vm->incoming) {
		struct discard_req *r = calloc(1, sizeof(*r));
		struct timeval now = { 0 };

		if (r) {
			r->m = m;
			memcpy(r->name, vm->def.name, sizeof(r->name));
			memcpy(r->uuid, vm->def.uuid, sizeof(r->uuid));
			if (event_base_once(m->base, -1, EV_TIMEOUT, on_discard,
					    r, &now) < 0)
				free(r);
		}
	}
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

static struct vm *vm_new(struct vmm *m, const struct vm_def *def)
{
	struct vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	vm->def = *def;
	vm->state = VM_SHUTOFF;
	vm->vmm = m;
	return vm;
}

static void vm_free(struct vm *vm)
{
	if (!vm)
		return;
	if (vm->qmp_ev)
		event_free(vm->qmp_ev);
	if (vm->stop_timer)
		event_free(vm->stop_timer);
	qmp_close(vm->qmp);
	free(vm);
}

static void vmm_link(struct vmm *m, struct vm *vm)
{
	struct vm **pp = &m->head;

	/* keep the list sorted by name for stable listings */
	while (*pp && strcmp((*pp)->def.name, vm->def.name) < 0)
		pp = &(*pp)->next;
	vm->next = *pp;
	*pp = vm;
	m->count++;
}

static void vmm_unlink(struct vmm *m, struct vm *vm)
{
	for (struct vm **pp = &m->head; *pp; pp = &(*pp)->next) {
		if (*pp == vm) {
			*pp = vm->next;
			m->count--;
			return;
		}
	}
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
static void vm_reattach(struct vm *vm)
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

/* Read and validate the definition file path into *def. */
static int def_load(const char *path, struct vm_def *def, struct ferr *err)
{
	char *text = NULL;
	size_t len = 0;
	json_t *obj = NULL;
	int rc = -1;

	if (file_read_all(path, FERRY_VMDEF_FILE_MAX, &text, &len, err) < 0 ||
	    !(obj = json_parse_object(text, len, path, err)) ||
	    vmdef_from_json(obj, def, err) < 0)
		goto out;
	rc = 0;
out:
	json_decref(obj);
	free(text);
	return rc;
}

/* At start-up, a folder with incoming.json and no vm.json is a migration
 * into this host that was cut short by a ferryd restart. If its QEMU runs
 * (the source confirmed and the VM was resumed before the restart), the VM
 * is adopted; otherwise its QEMU is stopped and its files removed. */
static void vmm_load_incoming(struct vmm *m, const char *name)
{
	char path[FERRY_PATH_MAX];
	struct vm_def def;
	struct vm *vm;
	struct ferr err;

	if (fmt_checked(path, sizeof(path), &err, "path",
			"%s/vms/%s/incoming.json", m->cfg->state_dir,
			name) < 0 ||
	    def_load(path, &def, &err) < 0 ||
	    strcmp(def.name, name) != 0 || vmm_find(m, def.name)) {
		log_error("vms/%s has neither a usable vm.json nor "
			  "incoming.json; leaving it alone", name);
		return;
	}
	vm = vm_new(m, &def);
	if (!vm)
		return;
	vm->incoming = true;
	vmm_link(m, vm);
	vm_reattach(vm);
	if (vm->state == VM_RUNNING && vmm_incoming_commit(m, vm, false,
							   &err) == 0) {
		log_info("vm %s: adopted a completed incoming migration",
			 name);
		return;
	}
	log_info("vm %s: discarding an unfinished incoming migration", name);
	vmm_incoming_discard(m, vm);
}

/* Load one definition file; a broken one is logged and skipped, never
 * deleted. */
static void vmm_load_one(struct vmm *m, const char *name)
{
	char path[FERRY_PATH_MAX];
	struct vm_def def;
	struct vm *vm;
	struct ferr err;

	if (fmt_checked(path, sizeof(path), &err, "path", "%s/vms/%s/vm.json",
			m->cfg->state_dir, name) < 0)
		return;
	if (access(path, F_OK) < 0 && errno == ENOENT) {
		vmm_load_incoming(m, name);
		return;
	}
	if (def_load(path, &def, &err) < 0) {
		log_error("skipping VM definition %s: %s", path, err.msg);
		return;
	}
	if (strcmp(def.name, name) != 0 || vmm_find(m, def.name)) {
		log_error("skipping VM definition %s: its name \"%s\" does not "
			  "match its folder or is a duplicate",
			  path, def.name);
		return;
	}
	vm = vm_new(m, &def);
	if (!vm)
		return;
	vmm_link(m, vm);
	vm_reattach(vm);
}

/* SIGCHLD: reap exited children (QEMUs we started). */
static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	(void)arg;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int vmm_new(const struct ferryd_config *cfg, struct event_base *base,
	    enum accel_mode accel, struct vmm **out, struct ferr *err)
{
	char path[FERRY_PATH_MAX];
	struct vmm *m;
	struct dirent *de;
	DIR *d;

	m = calloc(1, sizeof(*m));
	if (!m)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	m->cfg = cfg;
	m->base = base;
	m->accel = accel;
	if (fmt_checked(path, sizeof(path), err, "path", "%s/vms",
			cfg->state_dir) < 0 ||
	    mkdir_p(path, 0700, err) < 0)
		goto fail;
	if (fmt_checked(path, sizeof(path), err, "path", "%s/run",
			cfg->state_dir) < 0 ||
	    mkdir_p(path, 0700, err) < 0)
		goto fail;
	m->sigchld = evsignal_new(base, SIGCHLD, on_sigchld, m);
	if (!m->sigchld || event_add(m->sigchld, NULL) < 0) {
		ferr_set(err, FERR_INTERNAL, "cannot watch SIGCHLD");
		goto fail;
	}
	if (fmt_checked(path, sizeof(path), err, "path", "%s/vms",
			cfg->state_dir) < 0)
		goto fail;
	d = opendir(path);
	if (!d) {
		ferr_set(err, FERR_IO, "cannot open %s: %s", path,
			 strerror(errno));
		goto fail;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		vmm_load_one(m, de->d_name);
	}
	closedir(d);
	*out = m;
	return 0;
fail:
	vmm_free(m);
	return -1;
}

void vmm_free(struct vmm *m)
{
	if (!m)
		return;
	while (m->head) {
		struct vm *vm = m->head;

		m->head = vm->next;
		vm_free(vm);
	}
	if (m->sigchld)
		event_free(m->sigchld);
	free(m);
}

static char *def_text(const struct vm_def *def);

int vmm_define(struct vmm *m, const json_t *obj, struct vm **out,
	       struct ferr *err)
{
	struct vm_def def;
	struct vm_paths p;
	struct vm *vm = NULL;
	char *text = NULL;
	int rc = -1;

	if (vmdef_from_json(obj, &def, err) < 0 ||
	    vmm_check_unique(m, &def, err) < 0)
		return -1;
	if (m->count >= FERRY_VM_MAX)
		return ferr_set(err, FERR_CONFLICT,
				"this host already has %d VMs", FERRY_VM_MAX);
	if (vm_paths_get(m->cfg, &def, &p, err) < 0)
		return -1;
	text = def_text(&def);
	vm = vm_new(m, &def);
	if (!text || !vm) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	if (mkdir(p.dir, 0700) < 0) {
		ferr_set(err, FERR_IO, "cannot create %s: %s", p.dir,
			 strerror(errno));
		goto out;
	}
	if (file_write_atomic(p.def, text, strlen(text), 0600, err) < 0) {
		struct ferr ignored;

		rmtree(p.dir, &ignored);
		goto out;
	}
	vmm_link(m, vm);
	*out = vm;
	vm = NULL;
	log_info("vm %s: defined (uuid %s)", def.name, def.uuid);
	rc = 0;
out:
	free(vm);
	free(text);
	return rc;
}

/* Check that a shared-storage file of the definition exists. */
static int check_shared_file(const struct vmm *m, const char *rel,
			     const char *what, struct ferr *err);

int vmm_check_files(struct vmm *m, const struct vm_def *def, struct ferr *err)
{
	if (check_shared_file(m, def->kernel, "kernel", err) < 0 ||
	    check_shared_file(m, def->initrd, "initrd", err) < 0 ||
	    check_shared_file(m, def->disk, "disk", err) < 0)
		return -1;
	return 0;
}

int vmm_check_unique(struct vmm *m, const struct vm_def *def,
		     struct ferr *err)
{
	for (struct vm *o = m->head; o; o = o->next) {
		if (!strcmp(o->def.name, def->name))
			return ferr_set(err, FERR_CONFLICT,
					"a VM named %s is already on host %s",
					def->name, m->cfg->host);
		if (!strcmp(o->def.uuid, def->uuid))
			return ferr_set(err, FERR_CONFLICT,
					"VM %s on host %s already has uuid %s",
					o->def.name, m->cfg->host, def->uuid);
	}
	return 0;
}

static int check_shared_file(const struct vmm *m, const char *rel,
			     const char *what, struct ferr *err)
{
	char path[FERRY_PATH_MAX];
	struct stat st;

	if (!rel[0])
		return 0;
	if (fmt_checked(path, sizeof(path), err, "path", "%s/%s",
			m->cfg->shared_dir, rel) < 0)
		return -1;
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
		return ferr_set(err, FERR_CONFLICT,
				"%s %s is not a file in shared storage (%s)",
				what, rel, m->cfg->shared_dir);
	return 0;
}

/* Check memory, launch QEMU for vm with extra arguments and attach its
 * QMP. On failure nothing is left running and vm is shut off. */
static int vm_launch(struct vmm *m, struct vm *vm, const char *const *extra,
		     struct ferr *err)
{
	struct vm_paths p;
	struct strv argv = { 0 };
	struct qmp *q = NULL;
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
	if (qemu_spawn(&argv, p.log, &pid, err) < 0)
		goto fail;
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

/* JSON text of a definition, for vm.json and incoming.json. */
static char *def_text(const struct vm_def *def)
{
	json_t *j = vmdef_to_json(def);
	char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;

	json_decref(j);
	return text;
}

int vmm_start_incoming(struct vmm *m, const struct vm_def *def,
		       const char *id, const char *const *extra,
		       struct vm **out, struct ferr *err)
{
	struct vm_paths p;
	struct vm *vm = NULL;
	char *text = NULL;
	struct ferr ignored;

	if (vmm_check_unique(m, def, err) < 0 ||
	    vm_paths_get(m->cfg, def, &p, err) < 0)
		return -1;
	if (m->count >= FERRY_VM_MAX)
		return ferr_set(err, FERR_CONFLICT,
				"host %s already has %d VMs", m->cfg->host,
				FERRY_VM_MAX);
	text = def_text(def);
	vm = vm_new(m, def);
	if (!text || !vm) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto fail;
	}
	vm->incoming = true;
	snprintf(vm->incoming_id, sizeof(vm->incoming_id), "%s", id);
	if (mkdir(p.dir, 0700) < 0) {
		ferr_set(err, FERR_IO, "cannot create %s: %s", p.dir,
			 strerror(errno));
		goto fail;
	}
	if (file_write_atomic(p.incoming, text, strlen(text), 0600, err) < 0 ||
	    vm_launch(m, vm, extra, err) < 0) {
		rmtree(p.dir, &ignored);
		goto fail;
	}
	vmm_link(m, vm);
	free(text);
	*out = vm;
	return 0;
fail:
	free(text);
	free(vm);
	return -1;
}

int vmm_incoming_commit(struct vmm *m, struct vm *vm, bool resume,
			struct ferr *err)
{
	struct vm_paths p;

	if (!vm->incoming)
		return ferr_set(err, FERR_CONFLICT, "vm %s is not incoming",
				vm->def.name);
	if (vm_paths_get(m->cfg, &vm->def, &p, err) < 0)
		return -1;
	/* resume first: a crash after it leaves a running QEMU with
	 * incoming.json, which the next ferryd adopts */
	if (resume && vm_qmp(vm, "cont", NULL, NULL, err) < 0)
		return -1;
	if (vm->state == VM_SHUTOFF)
		return ferr_set(err, FERR_UNAVAILABLE,
				"vm %s: QEMU exited", vm->def.name);
	if (rename(p.incoming, p.def) < 0)
		return ferr_set(err, FERR_IO, "cannot rename %s: %s",
				p.incoming, strerror(errno));
	vm->incoming = false;
	vm->incoming_id[0] = '\0';
	if (resume && vm->state == VM_PAUSED)
		vm->state = VM_RUNNING;
	log_info("vm %s: now runs on this host", vm->def.name);
	return 0;
}

/* Quit vm's QEMU (SIGKILL after FERRY_KILL_WAIT_MS), detach and forget it. */
static void vm_kill_now(struct vm *vm)
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

void vmm_incoming_discard(struct vmm *m, struct vm *vm)
{
	struct vm_paths p;
	struct ferr err;

	vm_kill_now(vm);
	if (vm_paths_get(m->cfg, &vm->def, &p, &err) == 0 &&
	    rmtree(p.dir, &err) < 0)
		log_warn("vm %s: %s", vm->def.name, err.msg);
	log_info("vm %s: incoming migration discarded", vm->def.name);
	vmm_unlink(m, vm);
	vm_free(vm);
}

void vmm_migrated_away(struct vmm *m, struct vm *vm)
{
	struct vm_paths p;
	struct ferr err;

	vm_kill_now(vm);
	if (vm_paths_get(m->cfg, &vm->def, &p, &err) == 0) {
		unlink(p.def);
		if (rmtree(p.dir, &err) < 0)
			log_warn("vm %s: %s", vm->def.name, err.msg);
	}
	log_info("vm %s: migrated away; removed from this host",
		 vm->def.name);
	vmm_unlink(m, vm);
	vm_free(vm);
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

int vmm_delete(struct vmm *m, struct vm *vm, struct ferr *err)
{
	struct vm_paths p;

	if (vm->state != VM_SHUTOFF)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is %s; stop it before deleting it",
				vm->def.name, vm_state_name(vm->state));
	if (vm_paths_get(m->cfg, &vm->def, &p, err) < 0)
		return -1;
	/* the definition goes first, so a crash cannot leave half a VM */
	if (unlink(p.def) < 0 && errno != ENOENT)
		return ferr_set(err, FERR_IO, "cannot remove %s: %s", p.def,
				strerror(errno));
	if (rmtree(p.dir, err) < 0)
		log_warn("vm %s: %s", vm->def.name, err->msg);
	log_info("vm %s: deleted", vm->def.name);
	vmm_unlink(m, vm);
	vm_free(vm);
	return 0;
}

int vmm_console_read(struct vmm *m, struct vm *vm, uint64_t offset,
		     size_t max, char **data, size_t *len, uint64_t *size,
		     struct ferr *err)
{
	struct vm_paths p;
	struct stat st;
	char *buf = NULL;
	size_t want = 0;
	ssize_t n = 0;
	int fd;

	if (vm_paths_get(m->cfg, &vm->def, &p, err) < 0)
		return -1;
	fd = open(p.console, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		*data = calloc(1, 1);
		*len = 0;
		*size = 0;
		return *data ? 0 : ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	if (fd < 0)
		return ferr_set(err, FERR_IO, "cannot open %s: %s", p.console,
				strerror(errno));
	if (fstat(fd, &st) < 0) {
		close(fd);
		return ferr_set(err, FERR_IO, "cannot stat %s", p.console);
	}
	*size = (uint64_t)st.st_size;
	if (offset < *size)
		want = *size - offset > max ? max : (size_t)(*size - offset);
	buf = malloc(want + 1);
	if (!buf) {
		close(fd);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	if (want)
		n = pread(fd, buf, want, (off_t)offset);
	close(fd);
	if (n < 0) {
		free(buf);
		return ferr_set(err, FERR_IO, "cannot read %s", p.console);
	}
	buf[n] = '\0';
	*data = buf;
	*len = (size_t)n;
	return 0;
}

json_t *vm_to_json(const struct vm *vm)
{
	json_t *o = vmdef_to_json(&vm->def);

	if (!o)
		return NULL;
	json_object_set_new(o, "state",
			    json_string(vm->incoming ? "incoming"
						     : vm_state_name(vm->state)));
	json_object_set_new(o, "pid", json_integer(vm->pid));
	if (vm->state != VM_SHUTOFF && vm->started_wall_ms)
		json_object_set_new(
			o, "uptime_s",
			json_integer((json_int_t)((wall_ms() -
						   vm->started_wall_ms) /
						  1000)));
	if (vm->last_error[0])
		json_object_set_new(o, "last_error",
				    json_string(vm->last_error));
	return o;
}

json_t *vmm_host_info(struct vmm *m)
{
	uint64_t total = 0, avail = 0;
	size_t running = 0;
	struct ferr err;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	meminfo_read(&total, &avail, &err);
	for (struct vm *vm = m->head; vm; vm = vm->next)
		if (vm_has_process(vm))
			running++;
	return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, "
			 "s:I}",
			 "name", m->cfg->host, "version", FERRY_VERSION,
			 "accel", accel_mode_name(m->accel), "address",
			 m->cfg->listen_addr, "port",
			 (json_int_t)m->cfg->listen_port, "cpus",
			 (json_int_t)cpus, "memory_total_mib",
			 (json_int_t)total, "memory_available_mib",
			 (json_int_t)avail, "memory_committed_mib",
			 (json_int_t)vmm_committed_mib(m), "vms_defined",
			 (json_int_t)m->count, "vms_active",
			 (json_int_t)running);
}
