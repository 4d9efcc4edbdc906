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
 * into this host that was cut short by a ferryd restart. If its QEMU runs
 * (the source confirmed and the VM was resumed before the restart), the VM
 * is adopted; otherwise its QEMU is stopped and its files removed. */
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
	if (vm->state == VM_RUNNING && vmm_incoming_commit(m, vm, false,
							   &err) == 0) {
		log_info("vm %s: adopted a completed incoming migration",
			 name);
		return;
	}
	log_info("vm %s: discarding an unfinished incoming migration", name);
	vmm_incoming_discard(m, vm);
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
