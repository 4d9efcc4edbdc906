/* vm.h - the VMs of one host: definitions, QEMU processes and their state.
 *
 * A VM is defined by a JSON definition (struct vm_def), persisted atomically
 * in <state_dir>/vms/<name>/vm.json. A started VM is one QEMU process,
 * in its own session so that it outlives ferryd, driven over a QMP unix socket in
 * <state_dir>/run/. On start, ferryd re-attaches to every QEMU that is still
 * running. State changes arrive as QMP events.
 */
#ifndef FERRY_VM_H
#define FERRY_VM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>
#include <jansson.h>

#include "common.h"
#include "config.h"
#include "firewall.h"
#include "qmp.h"

enum disk_format { DISK_RAW, DISK_QCOW2 };
enum net_mode { NET_NONE, NET_USER, NET_BRIDGE };

/* A VM's own migration constraints ("constraints" in its definition):
 *   {"destinations": {"site": ["eu", "de"]}, "attest": "required",
 *    "roles": ["operator"], "signature": "<128 hex>"}
 * every member but the signature optional. A destination must carry, for
 * each key, one of the listed values among its host labels (the cluster
 * policy's "hosts"); "attest": "required" needs the destination's
 * attestation; the requester must hold one of the roles. The signature is
 * the attestation authority's ECDSA P-256 (r || s) over vm_constraints_tbs
 * (attest_constraints_digest). */
struct vm_constraints {
	bool present;
	bool attest;
	struct label dest[FERRY_VM_DEST_LABELS_MAX]; /* key, allowed value */
	unsigned ndest;
	char roles[FERRY_VM_ROLES_MAX][FERRY_NAME_MAX + 1];
	unsigned nroles;
	uint8_t signature[FERRY_VM_SIG_LEN];
};

struct vm_def {
	char name[FERRY_NAME_MAX + 1];
	char uuid[FERRY_UUID_STR_LEN + 1];
	uint64_t memory_mib;
	uint64_t vcpus;
	/* paths relative to the shared-storage dir; empty when unused */
	char kernel[FERRY_PATH_MAX];
	char initrd[FERRY_PATH_MAX];
	char cmdline[FERRY_VM_CMDLINE_MAX + 1];
	char disk[FERRY_PATH_MAX];
	enum disk_format disk_format;
	char backing[FERRY_PATH_MAX];  /* the qcow2 disk's backing image, or
					  "": QEMU then ignores the one the
					  image names */
	enum disk_format backing_format;
	enum net_mode net;
	char bridge[FERRY_NAME_MAX + 1]; /* NET_BRIDGE: a name in ferryd.json's
					    bridges, mapped by each host */
	char mac[18];                    /* lowercase; kept by migrations */
	/* migration settings */
	uint64_t max_downtime_ms; /* highest downtime limit escalation may use */
	uint64_t max_time_s;      /* a migration of this VM ends within this */
	bool allow_postcopy;      /* escalation may switch to post-copy */
	/* labels, for the policy's rules (e.g. region=eu) */
	struct label labels[FERRY_VM_LABELS_MAX];
	unsigned nlabels;
	/* migration constraints carried by the VM, signed by an admin
	 * (constraints.c); checked by every host it lands on */
	struct vm_constraints cons;
	/* its own firewall ("firewall", origin FW_ORIGIN_VM), or the rules a
	 * migration carried for a VM that had the cluster default (origin
	 * FW_ORIGIN_DEFAULT: not saved in the definition); fw.c */
	struct fw_policy fw;
};

/* constraints.c: parse the "constraints" member of a VM definition
 * (hostile input, strict; FERR_INVALID naming the field). The signature is
 * checked by its users (it needs the authority's key). */
int vm_constraints_from_json(const json_t *obj, struct vm_constraints *c,
			     struct ferr *err);

/* The constraints as JSON, with the signature (for the definition) or
 * without it: the canonical content that is signed. NULL when absent or
 * out of memory. */
json_t *vm_constraints_to_json(const struct vm_constraints *c,
			       bool with_signature);

enum vm_state {
	VM_SHUTOFF,  /* defined, no QEMU */
	VM_STARTING, /* QEMU launched, not yet confirmed running */
	VM_RUNNING,
	VM_PAUSED,
	VM_STOPPING, /* graceful or forced stop in progress */
	VM_UNKNOWN,  /* a QEMU process exists but QMP is unreachable */
};

struct vmm;
struct vm_op;
struct worker_pool;

/* Another component's claim on a VM (a migration, by its id): while a VM
 * is held, the API refuses to change it. A VM left paused by a migration
 * whose outcome is not known yet is held in state "unresolved": resuming it
 * then needs force, since it may run on another host already. */
struct vm_hold {
	char owner[40];     /* empty: not held */
	char state[16];     /* shown instead of the QEMU state, or empty */
	bool resume_guard;  /* resume / stop only with force */
};

struct vm {
	struct vm_def def;
	enum vm_state state;
	pid_t pid;
	struct qmp *qmp;          /* the main monitor; lent to an operation's
				     thread while it runs */
	struct event *qmp_ev;     /* QMP socket readable */
	struct event *stop_timer; /* graceful-stop deadline, then SIGKILL */
	bool stop_forced;         /* quit already sent */
	uint64_t started_wall_ms;
	char last_error[FERRY_ERR_MSG_MAX];
	char tap[16];             /* NET_BRIDGE: its tap's name (found
				     again after a restart) */
	struct fw_policy fw;      /* the firewall on its tap (fw.present),
				     its own rules or the default */
	bool incoming;            /* arriving by migration: not ours yet
				     (incoming.json, not vm.json) */
	char qemu_status[32];     /* QEMU's run state when last asked */
	char mig_status[32];      /* the last MIGRATION event's status (a
				   * destination: how its incoming stands) */
	uint64_t events_dropped;  /* QMP events dropped, as last seen */
	struct vm_hold hold;
	struct vm_op *ops;        /* queued operations, the first running */
	struct vm_op *ops_tail;
	unsigned nops;
	bool op_running;
	unsigned in_callback;     /* apply/done of an operation running */
	bool leaving;             /* being discarded or migrated away */
	bool gone;                /* unlinked; freed when its queue empties */
	struct event *persist_ev; /* retrying to save a committed VM */
	unsigned persist_retry_s;
	struct vmm *vmm;
	struct vm *next;
};

/* ---- definitions (vmdef.c) ---- */

/* Validate a definition object from the API or a file into *def. Unknown
 * fields, missing required fields, wrong types, bad names or paths, and
 * values out of range are FERR_INVALID naming the field; *def is then
 * unspecified. A missing uuid is generated. */
int vmdef_from_json(const json_t *obj, struct vm_def *def, struct ferr *err);

/* The definition as a new JSON object (never NULL except out of memory). */
json_t *vmdef_to_json(const struct vm_def *def);

/* Is p a safe path relative to the shared-storage dir: not absolute, no
 * ".." component, only [A-Za-z0-9._+/-] (no QEMU option separators)?
 * Textual only: files are opened with shared_open. */
bool vmdef_path_is_safe(const char *p);

struct vm_paths;

/* ---- confinement of QEMU (confine.c) ---- */

#define QEMU_GROUPS_MAX 64
#define QEMU_FD_BASE 3   /* QEMU's first passed descriptor */
#define QEMU_FDS_MAX 9   /* descriptors passed to one QEMU */

/* The user QEMU runs as (ferryd.json's qemu_user). */
struct qemu_user {
	bool set;            /* switch to it (else QEMU runs as ferryd) */
	uid_t uid;
	gid_t gid;
	gid_t groups[QEMU_GROUPS_MAX]; /* supplementary, e.g. kvm */
	int ngroups;
	char name[FERRY_USER_NAME_MAX + 1];
};

/* Resolve qemu_user name (NULL or "": QEMU runs as ferryd, refused when
 * ferryd is root). A missing user, uid or a group 0, or a ferryd that is
 * not root but should switch, is FERR_INVALID. Call before threads start
 * (name service look-ups). */
int qemu_user_resolve(const char *name, struct qemu_user *u,
		      struct ferr *err);

/* Create the run folder (QMP sockets, pidfiles, migration sockets) and
 * share it with u: owned by ferryd, group u's, mode 03770 (setgid: new
 * files get that group; sticky: QEMU cannot remove ferryd's files). 0700
 * when u is not set. */
int qemu_run_dir_prepare(const char *dir, const struct qemu_user *u,
			 struct ferr *err);

/* The name QEMU knows a file of the run folder by: QEMU runs in that
 * folder (it may not be able to search the folders above it), so a socket
 * path given to QEMU, e.g. a migration URI "unix:NAME", is its base name. */
const char *vm_run_name(const char *path);

/* Open rel (vmdef_path_is_safe) below shared_dir with flags (O_RDONLY or
 * O_RDWR): no component may lead out of the shared dir (openat2
 * RESOLVE_BENEATH: not "..", not an absolute or escaping symlink, no
 * /proc magic links) and it must be a regular file. The descriptor, or -1:
 * FERR_NOT_FOUND when missing, FERR_CONFLICT otherwise. */
int shared_open(const char *shared_dir, const char *rel, int flags,
		struct ferr *err);

/* Descriptors ferryd opens for one QEMU: in QEMU, fd[i] is descriptor
 * QEMU_FD_BASE + i; the fields hold those numbers (-1: none). */
struct qemu_fds {
	int fd[QEMU_FDS_MAX];
	unsigned n;
	int qmp, mqmp;       /* listening QMP sockets (ferryd connects) */
	int console;         /* console.log, truncated, append */
	int kernel, initrd;  /* read-only */
	int disk;            /* read-write; a qcow2 one passed
				qcow2_header_check */
	int backing;         /* read-only */
	int tap;             /* a bridged VM's tap (vm_net_open) */
	int ram;             /* the guest's RAM file in ram_dir (HA) */
	char tap_name[16];   /* its interface name, "" without */
};

/* Open what def's QEMU needs: the QMP sockets at p->qmp and p->mqmp
 * (created by ferryd, mode 0600), the console (truncated), the kernel,
 * initrd, disk and backing image below the shared dir (shared_open), and,
 * when ram_dir is set, the RAM file p->ram (created empty, owned by
 * ferryd, group u's and mode 0660 when u is set: QEMU sizes it). On
 * failure nothing stays open. Close with qemu_fds_close once QEMU has
 * them. */
int qemu_fds_open(const struct ferryd_config *cfg, const struct vm_def *def,
		  const struct vm_paths *p, const struct qemu_user *u,
		  struct qemu_fds *f, struct ferr *err);
void qemu_fds_close(struct qemu_fds *f);

/* For qemu_spawn's child, before exec: place f's descriptors, close the
 * rest, enter run_dir and become u (when set). Async-signal-safe; -1 with
 * errno on failure. */
int qemu_child_confine(const struct qemu_fds *f, const struct qemu_user *u,
		       const char *run_dir);

/* ---- QEMU processes (qemu.c) ---- */

/* Resolve accel mode: KVM when mode is kvm, or when mode is auto and
 * kvm_dev opens and answers KVM_GET_API_VERSION and cpuinfo lists vmx or
 * svm; TCG otherwise. Explicit kvm that does not work is FERR_UNAVAILABLE.
 * The paths are parameters so tests can substitute them. */
int accel_resolve(enum accel_mode mode, const char *kvm_dev,
		  const char *cpuinfo, enum accel_mode *out, struct ferr *err);

/* Paths of one VM's runtime files. */
struct vm_paths {
	char dir[FERRY_PATH_MAX];      /* state_dir/vms/NAME */
	char def[FERRY_PATH_MAX];      /* .../vm.json */
	char console[FERRY_PATH_MAX];  /* .../console.log */
	char log[FERRY_PATH_MAX];      /* .../qemu.log */
	char incoming[FERRY_PATH_MAX]; /* .../incoming.json while received */
	char run[FERRY_PATH_MAX];      /* state_dir/run: QEMU's folder */
	char pidfile[FERRY_PATH_MAX];  /* state_dir/run/UUID.pid */
	char qmp[FERRY_SOCK_PATH_MAX + 1]; /* state_dir/run/UUID.qmp */
	char mqmp[FERRY_SOCK_PATH_MAX + 1]; /* .../UUID.mqmp: migration monitor */
	char ram[FERRY_PATH_MAX];      /* ram_dir/UUID.ram: the guest's RAM as
					  a shared file; empty: no ram_dir */
};

/* Fill *p for def under cfg's state dir. */
int vm_paths_get(const struct ferryd_config *cfg, const struct vm_def *def,
		 struct vm_paths *p, struct ferr *err);

/* A NULL-terminated argv under construction. */
struct strv {
	char **v;
	size_t n;
	size_t cap;
};
int strv_add(struct strv *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void strv_free(struct strv *s);

/* Build QEMU's argv for def: accel, memory (the shared RAM file of f->ram
 * when ram_dir is set, so that checkpoint HA can read it), vCPUs, two QMP
 * monitors (one for ferryd's main loop, one for a migration thread),
 * serial console, kernel, initrd and disk, all on the descriptors of f
 * (qemu_fds_open): QEMU opens no file by name. Disks are -blockdev nodes
 * whose "backing" is null unless def names a backing image. Network,
 * sandboxed. extra (NULL-terminated, may be NULL) is appended, e.g.
 * "-incoming" "defer". */
int qemu_build_argv(const struct ferryd_config *cfg, enum accel_mode accel,
		    const struct vm_def *def, const struct qemu_fds *f,
		    const char *const *extra, struct strv *argv,
		    struct ferr *err);

/* Launch QEMU with argv as a child in its own session (so it outlives
 * ferryd), stdin from /dev/null, stdout/stderr to paths->log (truncated),
 * f's descriptors passed, in paths->run, as user u (qemu_child_confine).
 * Writes its pid to paths->pidfile. Returns at once with its pid; see
 * qemu_wait_ready. */
int qemu_spawn(const struct strv *argv, const struct vm_paths *paths,
	       const struct qemu_fds *f, const struct qemu_user *u,
	       pid_t *pid, struct ferr *err);

/* ---- bridged networking (net.c) ---- */

/* For a NET_BRIDGE definition, create its tap on this host's bridge of
 * that name (cfg->bridges, in the bridge's namespace) into *tap; other
 * definitions get tap->fd = -1. A bridge this host does not map is
 * FERR_CONFLICT naming it. The caller closes tap->fd once QEMU holds it. */
struct tap;
int vm_net_open(const struct ferryd_config *cfg, const struct vm_def *def,
		struct tap *tap, struct ferr *err);

/* The name of the tap QEMU process pid holds (its /dev/net/tun
 * descriptor's "iff:" in /proc), or -1. */
int vm_net_find_tap(pid_t pid, char out[16]);

/* Wait until the QEMU child pid answers on its QMP socket, and return the
 * connection. If QEMU exits first, the tail of log_path is in the error; if
 * it takes longer than FERRY_QEMU_START_TIMEOUT_MS it is killed. */
int qemu_wait_ready(pid_t pid, const char *qmp_path, const char *log_path,
		    struct qmp **out, struct ferr *err);

/* The monitor connection to qmp_path that ferryd handed QEMU pid to keep
 * (qmp_keep), duplicated out of QEMU's descriptors (pidfd_getfd): a new
 * descriptor, or -1 when QEMU holds none (or it cannot be taken). */
int qemu_kept_monitor(pid_t pid, const char *qmp_path);

/* Is pid stopped by a signal (SIGSTOP: frozen by HA's self-fencing)? */
bool qemu_process_stopped(pid_t pid);

/* Is pid a live (not zombie) QEMU process started for uuid? */
bool qemu_process_matches(pid_t pid, const char *uuid);

/* ---- the host's VMs (vmm.c) ---- */

/* Create the manager: make state dirs, load every definition and
 * re-attach to every QEMU still running (this blocks, with deadlines: it
 * runs at start-up, before the API listens). Operations run on pool. */
int vmm_new(const struct ferryd_config *cfg, struct event_base *base,
	    enum accel_mode accel, struct worker_pool *pool,
	    struct vmm **out, struct ferr *err);

/* Detach from every QEMU (they keep running) and free the manager. The
 * pool must be drained first (worker_drain): no operation may run. */
void vmm_free(struct vmm *m);

/* First VM (iterate with ->next), or NULL. */
struct vm *vmm_first(struct vmm *m);
size_t vmm_count(const struct vmm *m);

/* Find a VM by name or NULL. */
struct vm *vmm_find(struct vmm *m, const char *name);

/* Find a VM by uuid or NULL. */
struct vm *vmm_find_uuid(struct vmm *m, const char *uuid);

/* Memory (MiB) of every VM that has a QEMU process. */
uint64_t vmm_committed_mib(const struct vmm *m);

/* Validate obj and define a new VM, persisted before returning. A name or
 * uuid already defined is FERR_CONFLICT. Nothing changes on error. */
int vmm_define(struct vmm *m, const json_t *obj, struct vm **out,
	       struct ferr *err);

/* Memory (MiB) a new VM may still use on this host. */
uint64_t vmm_memory_free_mib(const struct vmm *m);

/* Is a VM with this name or uuid present (any state)? Sets *err to
 * FERR_CONFLICT naming it. */
int vmm_check_unique(struct vmm *m, const struct vm_def *def,
		     struct ferr *err);

/* Check that the definition's shared-storage files exist. */
int vmm_check_files(struct vmm *m, const struct vm_def *def, struct ferr *err);

/* Delete a shut-off VM's definition and files. */
int vmm_delete(struct vmm *m, struct vm *vm, struct ferr *err);

/* Read up to max bytes of the VM's serial console from offset. *data is
 * malloc'd (length *len); *size is the console's current size. */
int vmm_console_read(struct vmm *m, struct vm *vm, uint64_t offset,
		     size_t max, char **data, size_t *len, uint64_t *size,
		     struct ferr *err);

/* The VM as JSON: definition plus state, pid, uptime, last error; a held
 * VM shows its hold's state when it has one, and "hold": owner. */
json_t *vm_to_json(const struct vm *vm);

/* "shutoff", "running", ... */
const char *vm_state_name(enum vm_state s);

/* Host facts for the API: name, accel, CPUs, memory. */
json_t *vmm_host_info(struct vmm *m);

/* Called (loop thread) when a VM's QEMU has exited, before its state is
 * reset; incoming VMs are discarded right after the call. */
typedef void (*vmm_exit_hook)(struct vm *vm, void *arg);
void vmm_set_exit_hook(struct vmm *m, vmm_exit_hook fn, void *arg);

/* A second exit hook, for checkpoint HA (called after the first). */
void vmm_set_ha_exit_hook(struct vmm *m, vmm_exit_hook fn, void *arg);

/* Hold vm for owner (see struct vm_hold) / release it (only owner's). */
void vm_hold(struct vm *vm, const char *owner, const char *state,
	     bool resume_guard);
void vm_release(struct vm *vm, const char *owner);

/* ---- operations (runtime.c) ----
 *
 * The loop never waits for QEMU. Every operation that talks to QEMU runs
 * on a worker thread (worker.h) with the VM's QMP monitor lent to it; a
 * VM's operations run one at a time, in the order they were asked for.
 * Each function below checks what it can at once: on an error (-1) nothing
 * was queued and done is never called. Otherwise done(ctx, vm, rc, err)
 * runs on the loop exactly once when the operation ended, with vm NULL when
 * the VM was removed meanwhile, and err set when rc < 0. done may be NULL.
 */
typedef void (*vm_done_fn)(void *ctx, struct vm *vm, int rc,
			   const struct ferr *err);

/* Start a shut-off VM: check its files exist in shared storage and that
 * the host has the memory, launch QEMU, attach QMP. */
int vmm_start(struct vmm *m, struct vm *vm, vm_done_fn done, void *ctx,
	      struct ferr *err);

/* Stop a VM: graceful (ACPI power button, then quit after timeout_s) or
 * forced (quit now, SIGKILL if QEMU does not exit). done follows once the
 * request reached QEMU; the VM reaches VM_SHUTOFF when QEMU has exited. A
 * held VM with a resume guard needs force. */
int vmm_stop(struct vmm *m, struct vm *vm, bool force, unsigned timeout_s,
	     vm_done_fn done, void *ctx, struct ferr *err);

/* Pause / resume the vCPUs. Resuming a VM whose hold guards resumption
 * (left paused by a migration of unknown outcome) needs force, which also
 * releases the hold. */
int vmm_pause(struct vmm *m, struct vm *vm, vm_done_fn done, void *ctx,
	      struct ferr *err);
int vmm_resume(struct vmm *m, struct vm *vm, bool force, vm_done_fn done,
	       void *ctx, struct ferr *err);

/* Run fn(q, ctx, err) on a worker thread with the VM's main QMP monitor,
 * after the VM's earlier operations (what names it in messages). The VM's
 * QMP events that arrive meanwhile are dispatched on the loop afterwards. */
typedef int (*vm_qmp_fn)(struct qmp *q, void *ctx, struct ferr *err);
int vm_run_qmp(struct vm *vm, const char *what, vm_qmp_fn fn, void *ctx,
	       vm_done_fn done, struct ferr *err);

/* Attach to the monitor of vm's QEMU again: one left unattached at
 * start-up because it was frozen (vm->qmp NULL, pid set), once HA thawed
 * it. done (may be NULL) follows. */
int vmm_reattach(struct vmm *m, struct vm *vm, vm_done_fn done, void *ctx,
		 struct ferr *err);

/* Operations queued or running on vm. */
unsigned vm_busy(const struct vm *vm);

/* ---- the VM's firewall (fw.c, docs/security.md) ----
 *
 * A bridged VM's rules (its own, else the cluster policy's default) are
 * installed on its tap before QEMU starts (so before its vCPUs first run)
 * and removed, with the state of its tracked flows, when QEMU exits. */

/* Take the cluster policy's firewall settings (a copy). Running VMs that
 * have the default get the new default (queued operations); a VM whose
 * rules the new settings refuse keeps the ones it has (logged). */
void vmm_fw_configure(struct vmm *m, const struct fw_cluster *c);

/* At start-up, after vmm_new and vmm_fw_configure, before the API
 * listens (blocking): in every bridge namespace, remove the rules of VMs
 * that no longer run here, and make sure every running bridged VM has
 * exactly its rules once (an intact installation is left as it is, with
 * its counters). Failures are logged and shown as the VM's last_error. */
void vmm_fw_reattach(struct vmm *m);

/* May def have its rules (def->fw, own or carried) on this host? The
 * policy's checks (fw_effective); FERR_FORBIDDEN naming the check,
 * FERR_INVALID for rules on a VM that is not bridged. */
int vmm_fw_check(struct vmm *m, const struct vm_def *def, struct ferr *err);

/* Replace vm's own rules by own (own->present false: none, the default
 * applies) and save its definition; a running VM gets them on its tap
 * first, atomically (an operation: done follows). Nothing changes on an
 * error. */
int vmm_fw_set(struct vmm *m, struct vm *vm, const struct fw_policy *own,
	       vm_done_fn done, void *ctx, struct ferr *err);

/* What vm has, in *out (set before done runs): {"vm", "firewall" (its
 * own, or null), "origin" ("vm", "default" or "none"), "rules" (those in
 * force), "installed" (fw_show, when it runs)}. An operation. */
int vmm_fw_show(struct vmm *m, struct vm *vm, json_t **out, vm_done_fn done,
		void *ctx, struct ferr *err);

/* ---- VMs arriving or leaving by migration (incoming.c) ---- */

/* Start QEMU for an incoming migration of def, with extra arguments
 * (e.g. "-incoming", "defer", "-S"). The VM is listed at once (*out), with
 * incoming set and held by owner, persisted only as incoming.json until
 * vmm_incoming_commit; done follows when QEMU answers on QMP (on failure
 * the VM is discarded by then and done gets vm NULL). */
int vmm_start_incoming(struct vmm *m, const struct vm_def *def,
		       const char *owner, const char *const *extra,
		       vm_done_fn done, void *ctx, struct vm **out,
		       struct ferr *err);

/* The migration into vm succeeded: resume its vCPUs when resume (an
 * operation), then make it this host's VM (vm.json). Once QEMU resumed the
 * VM, it is never discarded: a failure to rename the definition is retried
 * until it succeeds, and reported. */
int vmm_incoming_commit(struct vmm *m, struct vm *vm, bool resume,
			vm_done_fn done, void *ctx, struct ferr *err);

/* Make an incoming VM whose QEMU already runs this host's VM (vm.json),
 * without touching QEMU (recovery of a commit cut short). */
int vmm_incoming_adopt(struct vmm *m, struct vm *vm, struct ferr *err);

/* Throw away an incoming VM: stop its QEMU, remove its files, free it
 * (after the VM's queued operations). */
void vmm_incoming_discard(struct vmm *m, struct vm *vm);

/* The VM now runs on another host: quit its (paused) QEMU, remove its
 * definition and free it (after the VM's queued operations). */
void vmm_migrated_away(struct vmm *m, struct vm *vm);

#endif
