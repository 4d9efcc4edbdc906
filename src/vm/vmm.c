/* vmm.c - the host's VMs: the list, definitions on disk (define, load at
 * start, delete), memory accounting, host facts and the VMs' JSON. */
#define _GNU_SOURCE
#include "vm_internal.h"

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

void vmm_set_exit_hook(struct vmm *m, vmm_exit_hook fn, void *arg)
{
	m->exit_hook = fn;
	m->exit_hook_arg = arg;
}

void vmm_set_ha_exit_hook(struct vmm *m, vmm_exit_hook fn, void *arg)
{
	m->ha_exit_hook = fn;
	m->ha_exit_hook_arg = arg;
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

struct vm *vmm_find_uuid(struct vmm *m, const char *uuid)
{
	for (struct vm *vm = m->head; vm; vm = vm->next)
		if (!strcmp(vm->def.uuid, uuid))
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
	uint64_t total = 0, avail = 0, committed = vmm_committed_mib(m), room;
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

struct vm *vm_new(struct vmm *m, const struct vm_def *def)
{
	struct vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	vm->def = *def;
	vm->state = VM_SHUTOFF;
	vm->vmm = m;
	return vm;
}

void vm_free(struct vm *vm)
{
	if (!vm)
		return;
	if (vm->qmp_ev)
		event_free(vm->qmp_ev);
	if (vm->stop_timer)
		event_free(vm->stop_timer);
	if (vm->persist_ev)
		event_free(vm->persist_ev);
	qmp_close(vm->qmp);
	free(vm);
}

void vm_retire(struct vm *vm)
{
	if (vm->gone)
		return;
	vmm_unlink(vm->vmm, vm);
	vm->gone = true;
	if (!vm->ops && !vm->in_callback)
		vm_free(vm);
}

void vm_hold(struct vm *vm, const char *owner, const char *state,
	     bool resume_guard)
{
	snprintf(vm->hold.owner, sizeof(vm->hold.owner), "%s", owner);
	snprintf(vm->hold.state, sizeof(vm->hold.state), "%s", state);
	vm->hold.resume_guard = resume_guard;
}

void vm_release(struct vm *vm, const char *owner)
{
	if (!strcmp(vm->hold.owner, owner))
		memset(&vm->hold, 0, sizeof(vm->hold));
}

void vmm_link(struct vmm *m, struct vm *vm)
{
	struct vm **pp = &m->head;

	/* keep the list sorted by name for stable listings */
	while (*pp && strcmp((*pp)->def.name, vm->def.name) < 0)
		pp = &(*pp)->next;
	vm->next = *pp;
	*pp = vm;
	m->count++;
}

void vmm_unlink(struct vmm *m, struct vm *vm)
{
	for (struct vm **pp = &m->head; *pp; pp = &(*pp)->next) {
		if (*pp == vm) {
			*pp = vm->next;
			m->count--;
			return;
		}
	}
}

/* Read and validate the definition file path into *def. */
int def_load(const char *path, struct vm_def *def, struct ferr *err)
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
	    enum accel_mode accel, struct worker_pool *pool,
	    struct vmm **out, struct ferr *err)
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
	m->pool = pool;
	if (fmt_checked(path, sizeof(path), err, "path", "%s/vms",
			cfg->state_dir) < 0 ||
	    mkdir_p(path, 0700, err) < 0)
		goto fail;
	if (fmt_checked(path, sizeof(path), err, "path", "%s/run",
			cfg->state_dir) < 0 ||
	    qemu_user_resolve(cfg->qemu_user, &m->qemu_user, err) < 0 ||
	    qemu_run_dir_prepare(path, &m->qemu_user, err) < 0)
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

/* Check that a shared-storage file of the definition is a regular file
 * below the shared dir (shared_open: no way out of it). */
static int check_shared_file(const struct vmm *m, const char *rel,
			     const char *what, struct ferr *err)
{
	struct ferr oerr = { 0 };
	int fd;

	if (!rel[0])
		return 0;
	fd = shared_open(m->cfg->shared_dir, rel, O_RDONLY, &oerr);
	if (fd < 0)
		return ferr_set(err, FERR_CONFLICT,
				"%s %s is not a file in shared storage (%s): "
				"%s",
				what, rel, m->cfg->shared_dir, oerr.msg);
	close(fd);
	return 0;
}

int vmm_check_files(struct vmm *m, const struct vm_def *def, struct ferr *err)
{
	if (check_shared_file(m, def->kernel, "kernel", err) < 0 ||
	    check_shared_file(m, def->initrd, "initrd", err) < 0 ||
	    check_shared_file(m, def->disk, "disk", err) < 0 ||
	    check_shared_file(m, def->backing, "backing image", err) < 0)
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

/* JSON text of a definition, for vm.json and incoming.json. */
char *def_text(const struct vm_def *def)
{
	json_t *j = vmdef_to_json(def);
	char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;

	json_decref(j);
	return text;
}

int vmm_delete(struct vmm *m, struct vm *vm, struct ferr *err)
{
	struct vm_paths p;

	if (vm->state != VM_SHUTOFF)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is %s; stop it before deleting it",
				vm->def.name, vm_state_name(vm->state));
	if (vm->nops)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s has operations in progress",
				vm->def.name);
	if (vm_paths_get(m->cfg, &vm->def, &p, err) < 0)
		return -1;
	/* the definition goes first, so a crash cannot leave half a VM */
	if (unlink(p.def) < 0 && errno != ENOENT)
		return ferr_set(err, FERR_IO, "cannot remove %s: %s", p.def,
				strerror(errno));
	if (rmtree(p.dir, err) < 0)
		log_warn("vm %s: %s", vm->def.name, err->msg);
	log_info("vm %s: deleted", vm->def.name);
	vm_retire(vm);
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
			    json_string(vm->hold.state[0] ? vm->hold.state
					: vm->incoming
						? "incoming"
						: vm_state_name(vm->state)));
	if (vm->hold.owner[0])
		json_object_set_new(o, "hold", json_string(vm->hold.owner));
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
	if (vm->tap[0] && vm->state != VM_SHUTOFF)
		json_object_set_new(o, "tap", json_string(vm->tap));
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
