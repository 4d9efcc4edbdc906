/* attach.c - re-attachment at ferryd's start: each VM's QEMU that still
 * runs (its pidfile, its uuid on the command line) gets its monitor back,
 * the one QEMU kept for ferryd when there is one (vm.h). */
#define _GNU_SOURCE
#include "vm_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PIDFILE_MAX 64

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

void vm_reattach(struct vm *vm)
{
	char status[32] = "";
	struct vm_paths p;
	struct qmp *q = NULL;
	struct ferr err;
	pid_t pid;
	int kept, rc;

	if (vm_paths_get(vm->vmm->cfg, &vm->def, &p, &err) < 0)
		return;
	pid = pidfile_read(p.pidfile);
	if (!pid || !qemu_process_matches(pid, vm->def.uuid)) {
		unlink(p.qmp);
		unlink(p.pidfile);
		return;
	}
	vm->pid = pid;
	if (qemu_process_stopped(pid)) {
		/* frozen (HA's fence agent, docs/ha.md): it cannot answer,
		 * and the VM may run on the backup by now */
		vm->state = VM_UNKNOWN;
		snprintf(vm->last_error, sizeof(vm->last_error),
			 "QEMU pid %d is frozen (SIGSTOP): not attached",
			 (int)pid);
		log_warn("vm %s: %s", vm->def.name, vm->last_error);
		return;
	}
	if (vm->def.net == NET_BRIDGE && vm_net_find_tap(pid, vm->tap) < 0)
		log_warn("vm %s: QEMU pid %d holds no tap", vm->def.name,
			 (int)pid);
	/* at start-up, before the API listens: blocking with deadlines */
	kept = qemu_kept_monitor(pid, p.qmp);
	rc = kept >= 0 ? qmp_adopt(kept, &q, &err)
		       : qmp_connect(p.qmp, FERRY_QMP_TIMEOUT_MS, &q, &err);
	if (rc == 0 && vm_query_status(q, status, sizeof(status), &err) < 0) {
		if (kept >= 0 && err.code == FERR_TIMEOUT) {
			/* its main thread is blocked (a vCPU waits for a
			 * post-copy page): out-of-band commands work, events
			 * tell the rest */
			snprintf(status, sizeof(status), "running");
			log_warn("vm %s: QEMU pid %d does not answer in band; "
				 "attached through its kept monitor",
				 vm->def.name, (int)pid);
		} else {
			rc = -1;
		}
	}
	if (rc < 0 || vm_attach(vm, q, status, &err) < 0) {
		if (q && !vm->qmp)
			qmp_close(q);
		vm->state = VM_UNKNOWN;
		snprintf(vm->last_error, sizeof(vm->last_error),
			 "cannot re-attach to QEMU pid %d: %s", (int)pid,
			 err.msg);
		log_error("vm %s: %s", vm->def.name, vm->last_error);
		return;
	}
	/* events QEMU sent meanwhile (into a kept monitor, e.g. MIGRATION's
	 * postcopy-paused) may already be queued: dispatch them first */
	event_active(vm->qmp_ev, EV_READ, 0);
	vm->started_wall_ms = wall_ms();
	log_info("vm %s: re-attached to QEMU pid %d (%s%s)", vm->def.name,
		 (int)pid, status, kept >= 0 ? ", its kept monitor" : "");
}

