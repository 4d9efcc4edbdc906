/* incoming.c - VMs arriving by migration: started as incoming (not this
 * host's yet), committed or discarded, adopted or discarded after a ferryd
 * restart; and VMs that migrated away. */
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

void vm_incoming_discard_later(struct vm *vm)
{
	struct discard_req *r = calloc(1, sizeof(*r));
	struct timeval now = { 0 };

	if (!r)
		return;
	r->m = vm->vmm;
	memcpy(r->name, vm->def.name, sizeof(r->name));
	memcpy(r->uuid, vm->def.uuid, sizeof(r->uuid));
	if (event_base_once(r->m->base, -1, EV_TIMEOUT, on_discard, r,
			    &now) < 0)
		free(r);
}

/* At start-up, a folder with incoming.json and no vm.json is a migration
 * into this host that a ferryd restart cut short. The VM is listed as
 * incoming (re-attached when its QEMU still runs); the migration
 * component's recovery decides, from its journal, whether it is adopted or
 * discarded. */
void vmm_load_incoming(struct vmm *m, const char *name)
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
}

/* The incoming VM's folder and definition (loop). */
static void remove_incoming_files(struct vm *vm)
{
	struct vm_paths p;
	struct ferr err;

	if (vm_paths_get(vm->vmm->cfg, &vm->def, &p, &err) == 0 &&
	    rmtree(p.dir, &err) < 0)
		log_warn("vm %s: %s", vm->def.name, err.msg);
}

/* What a start of an incoming VM reports back. */
struct start_in {
	vm_done_fn done;
	void *ctx;
};

static void on_started_in(void *arg, struct vm *vm, int rc,
			  const struct ferr *err)
{
	struct start_in *si = arg;

	if (rc < 0 && vm) {
		/* nothing runs (vm_launch): drop what was made for it */
		remove_incoming_files(vm);
		log_info("vm %s: incoming migration discarded",
			 vm->def.name);
		vm_retire(vm);
		vm = NULL;
	}
	if (si->done)
		si->done(si->ctx, vm, rc, err);
	free(si);
}

int vmm_start_incoming(struct vmm *m, const struct vm_def *def,
		       const char *owner, const char *const *extra,
		       vm_done_fn done, void *ctx, struct vm **out,
		       struct ferr *err)
{
	struct start_in *si = NULL;
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
	si = calloc(1, sizeof(*si));
	if (!text || !vm || !si) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto fail;
	}
	si->done = done;
	si->ctx = ctx;
	vm->incoming = true;
	vm_hold(vm, owner, "", false);
	if (mkdir(p.dir, 0700) < 0) {
		ferr_set(err, FERR_IO, "cannot create %s: %s", p.dir,
			 strerror(errno));
		goto fail;
	}
	if (file_write_atomic(p.incoming, text, strlen(text), 0600, err) < 0 ||
	    vm_launch(m, vm, extra, on_started_in, si, err) < 0) {
		rmtree(p.dir, &ignored);
		goto fail;
	}
	vmm_link(m, vm);
	free(text);
	*out = vm;
	return 0;
fail:
	free(si);
	free(text);
	vm_free(vm);
	return -1;
}

/* Retry persisting a committed VM's definition until it succeeds. */
static void on_persist_retry(evutil_socket_t fd, short what, void *arg);

/* Make the committed VM this host's: incoming.json becomes vm.json. A
 * failure is retried with backoff, never undone: the VM runs here. */
static void persist_committed(struct vm *vm)
{
	struct vm_paths p;
	struct ferr err;
	struct timeval tv = { 0 };

	if (vm_paths_get(vm->vmm->cfg, &vm->def, &p, &err) == 0 &&
	    (rename(p.incoming, p.def) == 0 ||
	     (errno == ENOENT && access(p.def, F_OK) == 0))) {
		if (vm->persist_retry_s)
			log_info("vm %s: definition saved after retries",
				 vm->def.name);
		vm->persist_retry_s = 0;
		if (!strncmp(vm->last_error, "cannot save", 11))
			vm->last_error[0] = '\0';
		return;
	}
	vm->persist_retry_s = vm->persist_retry_s
				      ? (vm->persist_retry_s * 2 > 30
						 ? 30
						 : vm->persist_retry_s * 2)
				      : 1;
	snprintf(vm->last_error, sizeof(vm->last_error),
		 "cannot save the definition of this committed VM (%s): %s; "
		 "retrying every %u s",
		 p.def, strerror(errno), vm->persist_retry_s);
	log_error("vm %s: %s", vm->def.name, vm->last_error);
	if (!vm->persist_ev)
		vm->persist_ev = evtimer_new(vm->vmm->base, on_persist_retry,
					     vm);
	tv.tv_sec = vm->persist_retry_s;
	if (vm->persist_ev)
		evtimer_add(vm->persist_ev, &tv);
}

static void on_persist_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	persist_committed(arg);
}

/* The loop side of a commit: the VM is ours once QEMU may run it. */
static void commit_now(struct vm *vm)
{
	vm->incoming = false;
	/* rules a migration carried from the source's cluster default: the
	 * default here applies from now on (and follows policy reloads) */
	if (vm->def.fw.present && vm->def.fw.origin == FW_ORIGIN_DEFAULT)
		vm->def.fw.present = false;
	persist_committed(vm);
	log_info("vm %s: now runs on this host", vm->def.name);
}

/* A commit in progress. */
struct commit {
	bool resume;
	bool maybe_running; /* cont failed but QEMU may run the VM */
	vm_done_fn done;
	void *ctx;
};

/* Worker: resume the vCPUs. When cont fails, ask whether the VM runs
 * anyway: an answer we do not have counts as "it may". */
static int commit_work(struct qmp *q, void *arg, struct ferr *err)
{
	struct commit *c = arg;
	struct ferr e2;
	json_t *ret = NULL;
	const char *st;

	if (!c->resume || qmp_command(q, "cont", NULL, NULL, err) == 0)
		return 0;
	if (qmp_command(q, "query-status", NULL, &ret, &e2) < 0) {
		c->maybe_running = true;
		return -1;
	}
	st = json_string_value(json_object_get(ret, "status"));
	c->maybe_running = st && !strcmp(st, "running");
	json_decref(ret);
	return c->maybe_running ? 0 : -1;
}

static void on_committed(void *arg, struct vm *vm, int rc,
			 const struct ferr *err)
{
	struct commit *c = arg;

	if (vm && (rc == 0 || c->maybe_running)) {
		if (c->resume && vm->state == VM_PAUSED && rc == 0)
			vm->state = VM_RUNNING;
		commit_now(vm);
		if (rc < 0)
			log_error("vm %s: resuming it failed (%s), but QEMU "
				  "may run it: it is kept as this host's VM",
				  vm->def.name, err ? err->msg : "?");
	}
	if (c->done)
		c->done(c->ctx, vm, vm && (rc == 0 || c->maybe_running) ? 0 : -1,
			err);
	free(c);
}

int vmm_incoming_commit(struct vmm *m, struct vm *vm, bool resume,
			vm_done_fn done, void *ctx, struct ferr *err)
{
	struct commit *c;

	(void)m;
	if (!vm->incoming)
		return ferr_set(err, FERR_CONFLICT, "vm %s is not incoming",
				vm->def.name);
	c = calloc(1, sizeof(*c));
	if (!c)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	c->resume = resume;
	c->done = done;
	c->ctx = ctx;
	if (vm_run_qmp(vm, "commit", commit_work, c, on_committed, err) < 0) {
		free(c);
		return -1;
	}
	return 0;
}

int vmm_incoming_adopt(struct vmm *m, struct vm *vm, struct ferr *err)
{
	(void)m;
	if (!vm->incoming)
		return ferr_set(err, FERR_CONFLICT, "vm %s is not incoming",
				vm->def.name);
	commit_now(vm);
	return 0;
}

static void after_discard(struct vm *vm)
{
	remove_incoming_files(vm);
	log_info("vm %s: incoming migration discarded", vm->def.name);
	vm_retire(vm);
}

void vmm_incoming_discard(struct vmm *m, struct vm *vm)
{
	struct ferr err;

	(void)m;
	if (vm->leaving)
		return;
	vm->leaving = true;
	if (vm_quit(vm, after_discard, &err) < 0)
		log_error("vm %s: cannot discard: %s", vm->def.name, err.msg);
}

static void after_migrated_away(struct vm *vm)
{
	struct vm_paths p;
	struct ferr err;

	if (vm_paths_get(vm->vmm->cfg, &vm->def, &p, &err) == 0) {
		unlink(p.def);
		if (rmtree(p.dir, &err) < 0)
			log_warn("vm %s: %s", vm->def.name, err.msg);
	}
	log_info("vm %s: migrated away; removed from this host",
		 vm->def.name);
	vm_retire(vm);
}

void vmm_migrated_away(struct vmm *m, struct vm *vm)
{
	struct ferr err;

	(void)m;
	if (vm->leaving)
		return;
	vm->leaving = true;
	if (vm_quit(vm, after_migrated_away, &err) < 0)
		log_error("vm %s: cannot remove: %s", vm->def.name, err.msg);
}
