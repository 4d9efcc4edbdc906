/* qemu.c - accelerator choice, QEMU command lines and processes. */
#define _GNU_SOURCE
#include "vm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define KVM_API_VERSION_EXPECTED 12
#define CPUINFO_MAX (4 * 1024 * 1024)
#define PROC_CMDLINE_MAX (256 * 1024)
#define LOG_TAIL_BYTES 200
#define TCG_RAM_SHORTFALL_KIB 8ULL /* see qemu_build_argv */
#define QEMU_FDS_SCAN_MAX 4096 /* descriptors of QEMU's looked at */

/* Does /proc/cpuinfo text list the vmx or svm flag? */
static bool cpu_has_virt(const char *cpuinfo, struct ferr *err)
{
	char *text = NULL;
	size_t len = 0;
	bool found = false;

	if (file_read_all(cpuinfo, CPUINFO_MAX, &text, &len, err) < 0)
		return false;
	for (char *line = strtok(text, "\n"); line && !found;
	     line = strtok(NULL, "\n")) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		for (char *w = strtok(strchr(line, ':') ? strchr(line, ':') + 1
							: line,
				      " \t");
		     w; w = strtok(NULL, " \t")) {
			if (!strcmp(w, "vmx") || !strcmp(w, "svm")) {
				found = true;
				break;
			}
		}
		break; /* the first CPU's flags are enough */
	}
	free(text);
	return found;
}

/* Does kvm_dev open and speak the expected KVM API? */
static bool kvm_works(const char *kvm_dev)
{
	int fd = open(kvm_dev, O_RDWR | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	ok = ioctl(fd, KVM_GET_API_VERSION, 0) == KVM_API_VERSION_EXPECTED;
	close(fd);
	return ok;
}

int accel_resolve(enum accel_mode mode, const char *kvm_dev,
		  const char *cpuinfo, enum accel_mode *out, struct ferr *err)
{
	struct ferr ignored;

	switch (mode) {
	case ACCEL_TCG:
		*out = ACCEL_TCG;
		return 0;
	case ACCEL_KVM:
		if (!kvm_works(kvm_dev))
			return ferr_set(err, FERR_UNAVAILABLE,
					"accel=kvm but %s does not work",
					kvm_dev);
		*out = ACCEL_KVM;
		return 0;
	default:
		/* KVM without vmx/svm in the CPU flags is a paravirtual
		 * device that emulates guests far slower than TCG. */
		*out = kvm_works(kvm_dev) && cpu_has_virt(cpuinfo, &ignored)
			       ? ACCEL_KVM
			       : ACCEL_TCG;
		return 0;
	}
}

int vm_paths_get(const struct ferryd_config *cfg, const struct vm_def *def,
		 struct vm_paths *p, struct ferr *err)
{
	const char *sd = cfg->state_dir;

	if (fmt_checked(p->dir, sizeof(p->dir), err, "VM folder", "%s/vms/%s",
			sd, def->name) < 0 ||
	    fmt_checked(p->def, sizeof(p->def), err, "path", "%s/vm.json",
			p->dir) < 0 ||
	    fmt_checked(p->console, sizeof(p->console), err, "path",
			"%s/console.log", p->dir) < 0 ||
	    fmt_checked(p->log, sizeof(p->log), err, "path", "%s/qemu.log",
			p->dir) < 0 ||
	    fmt_checked(p->run, sizeof(p->run), err, "path", "%s/run", sd) <
		    0 ||
	    fmt_checked(p->pidfile, sizeof(p->pidfile), err, "path",
			"%s/run/%s.pid", sd, def->uuid) < 0 ||
	    fmt_checked(p->incoming, sizeof(p->incoming), err, "path",
			"%s/incoming.json", p->dir) < 0 ||
	    fmt_checked(p->qmp, sizeof(p->qmp), err, "QMP socket path",
			"%s/run/%s.qmp", sd, def->uuid) < 0 ||
	    fmt_checked(p->mqmp, sizeof(p->mqmp), err, "QMP socket path",
			"%s/run/%s.mqmp", sd, def->uuid) < 0)
		return -1;
	p->ram[0] = '\0';
	if (cfg->ram_dir[0] &&
	    fmt_checked(p->ram, sizeof(p->ram), err, "RAM file path",
			"%s/%s.ram", cfg->ram_dir, def->uuid) < 0)
		return -1;
	return 0;
}

int strv_add(struct strv *s, const char *fmt, ...)
{
	va_list ap;
	char *str;
	int n;

	if (s->n + 2 > s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 32;
		char **nv = realloc(s->v, ncap * sizeof(*nv));

		if (!nv)
			return -1;
		s->v = nv;
		s->cap = ncap;
	}
	va_start(ap, fmt);
	n = vasprintf(&str, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	s->v[s->n++] = str;
	s->v[s->n] = NULL;
	return 0;
}

void strv_free(struct strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* -add-fd for descriptor fd as fdset set, then the -blockdev file node
 * node reading it (read-only when ro). */
static int add_file_node(struct strv *a, int fd, int set, const char *node,
			 bool ro)
{
	return strv_add(a, "-add-fd") |
	       strv_add(a, "fd=%d,set=%d", fd, set) | strv_add(a, "-blockdev") |
	       strv_add(a,
			"{\"driver\":\"file\",\"filename\":\"/dev/fdset/%d\","
			"\"node-name\":\"%s\",\"read-only\":%s}",
			set, node, ro ? "true" : "false");
}

/* The format node fmt over file node file, named node; backing is the
 * node of its backing image, or NULL for none ("backing": null). */
static int add_format_node(struct strv *a, enum disk_format fmt,
			   const char *file, const char *node,
			   const char *backing, bool ro)
{
	if (fmt != DISK_QCOW2)
		return strv_add(a, "-blockdev") |
		       strv_add(a,
				"{\"driver\":\"raw\",\"file\":\"%s\","
				"\"node-name\":\"%s\",\"read-only\":%s}",
				file, node, ro ? "true" : "false");
	return strv_add(a, "-blockdev") |
	       strv_add(a,
			"{\"driver\":\"qcow2\",\"file\":\"%s\","
			"\"node-name\":\"%s\",\"read-only\":%s,"
			"\"backing\":%s%s%s}",
			file, node, ro ? "true" : "false",
			backing ? "\"" : "", backing ? backing : "null",
			backing ? "\"" : "");
}

int qemu_build_argv(const struct ferryd_config *cfg, enum accel_mode accel,
		    const struct vm_def *def, const struct qemu_fds *f,
		    const char *const *extra, struct strv *a, struct ferr *err)
{
	uint64_t ram_kib;
	int bad = 0;

	bad |= strv_add(a, "%s", cfg->qemu_binary);
	bad |= strv_add(a, "-name") | strv_add(a, "guest=%s,debug-threads=on",
						def->name);
	bad |= strv_add(a, "-uuid") | strv_add(a, "%s", def->uuid);
	bad |= strv_add(a, "-machine") | strv_add(a, "pc");
	bad |= strv_add(a, "-accel") |
	       strv_add(a, "%s", accel == ACCEL_KVM ? "kvm" : "tcg");
	if (accel == ACCEL_KVM)
		bad |= strv_add(a, "-cpu") | strv_add(a, "host");
	/* TCG in QEMU 7.2 misses guest writes after a dirty-bitmap sync
	 * when a RAM block is a multiple of 256 KiB (fixed upstream in QEMU
	 * 9.0, "physmem: Fix migration dirty bitmap coherency with TCG
	 * memory access"): a migrating guest gets corrupted. 8 KiB less
	 * RAM keeps QEMU off that path. */
	ram_kib = def->memory_mib * 1024 -
		  (accel == ACCEL_KVM ? 0 : TCG_RAM_SHORTFALL_KIB);
	bad |= strv_add(a, "-m") |
	       strv_add(a, "%lluK", (unsigned long long)ram_kib);
	if (cfg->ram_dir[0]) {
		if (f->ram < 0) {
			strv_free(a);
			return ferr_set(err, FERR_INTERNAL,
					"vm %s has no RAM file", def->name);
		}
		/* share=on: the guest's writes land in the file, which
		 * ferryd maps to take checkpoints (docs/ha.md). QEMU opens
		 * memory backends by name only: /proc/self/fd/N reopens the
		 * file ferryd created (its group is QEMU's) */
		bad |= strv_add(a, "-object") |
		       strv_add(a,
				"memory-backend-file,id=ram0,size=%lluK,"
				"mem-path=/proc/self/fd/%d,share=on",
				(unsigned long long)ram_kib, f->ram);
		bad |= strv_add(a, "-machine") |
		       strv_add(a, "memory-backend=ram0");
	}
	bad |= strv_add(a, "-smp") | strv_add(a, "%llu",
					      (unsigned long long)def->vcpus);
	bad |= strv_add(a, "-nodefaults") | strv_add(a, "-no-user-config");
	bad |= strv_add(a, "-display") | strv_add(a, "none");
	/* the monitors listen on sockets ferryd created */
	bad |= strv_add(a, "-chardev") |
	       strv_add(a, "socket,id=qmp,fd=%d,server=on,wait=off", f->qmp);
	bad |= strv_add(a, "-mon") | strv_add(a, "chardev=qmp,mode=control");
	bad |= strv_add(a, "-chardev") |
	       strv_add(a, "socket,id=mqmp,fd=%d,server=on,wait=off", f->mqmp);
	bad |= strv_add(a, "-mon") | strv_add(a, "chardev=mqmp,mode=control");
	bad |= strv_add(a, "-add-fd") |
	       strv_add(a, "fd=%d,set=%d", f->console, f->console);
	bad |= strv_add(a, "-chardev") |
	       strv_add(a, "file,id=serial0,path=/dev/fdset/%d,append=on",
			f->console);
	bad |= strv_add(a, "-serial") | strv_add(a, "chardev:serial0");
	/* QEMU may not fork, exec, change privileges or use old syscalls. */
	bad |= strv_add(a, "-sandbox") |
	       strv_add(a, "on,obsolete=deny,elevateprivileges=deny,"
			   "spawn=deny,resourcecontrol=deny");
	bad |= strv_add(a, "-msg") | strv_add(a, "timestamp=on");
	/* x86 loads the kernel by name only: /proc/self/fd/N reopens the
	 * file ferryd opened (QEMU's user needs read permission on it) */
	if (f->kernel >= 0) {
		bad |= strv_add(a, "-kernel") |
		       strv_add(a, "/proc/self/fd/%d", f->kernel);
		if (f->initrd >= 0)
			bad |= strv_add(a, "-initrd") |
			       strv_add(a, "/proc/self/fd/%d", f->initrd);
		if (def->cmdline[0])
			bad |= strv_add(a, "-append") |
			       strv_add(a, "%s", def->cmdline);
	}
	if (f->disk >= 0) {
		bool base = f->backing >= 0;

		if (base)
			bad |= add_file_node(a, f->backing, f->backing,
					     "base-file", true) |
			       add_format_node(a, def->backing_format,
					       "base-file", "base", NULL,
					       true);
		bad |= add_file_node(a, f->disk, f->disk, "disk-file", false) |
		       add_format_node(a, def->disk_format, "disk-file",
				       "disk0", base ? "base" : NULL, false);
		bad |= strv_add(a, "-device") |
		       strv_add(a, "virtio-blk-pci,drive=disk0");
	}
	if (def->net == NET_BRIDGE) {
		/* the tap ferryd created on the VM's bridge (vm_net_open) */
		if (f->tap < 0) {
			strv_free(a);
			return ferr_set(err, FERR_INTERNAL,
					"vm %s is bridged but has no tap",
					def->name);
		}
		bad |= strv_add(a, "-netdev") |
		       strv_add(a, "tap,id=net0,fd=%d", f->tap);
		bad |= strv_add(a, "-device") |
		       strv_add(a, "virtio-net-pci,netdev=net0,mac=%s",
				def->mac);
	}
	if (def->net == NET_USER) {
		/* restrict=on: the guest cannot reach the host or beyond */
		bad |= strv_add(a, "-netdev") |
		       strv_add(a, "user,id=net0,restrict=on");
		bad |= strv_add(a, "-device") |
		       strv_add(a, "virtio-net-pci,netdev=net0,mac=%s",
				def->mac);
	}
	for (; extra && *extra; extra++)
		bad |= strv_add(a, "%s", *extra);
	if (bad) {
		strv_free(a);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	return 0;
}

/* Last bytes of a log file, one line, for error messages. */
static void log_tail(const char *path, char *out, size_t len)
{
	char buf[LOG_TAIL_BYTES + 1];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	off_t end;
	ssize_t n;

	out[0] = '\0';
	if (fd < 0)
		return;
	end = lseek(fd, 0, SEEK_END);
	if (end > LOG_TAIL_BYTES)
		lseek(fd, end - LOG_TAIL_BYTES, SEEK_SET);
	else
		lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, LOG_TAIL_BYTES);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] == '\n' || buf[i] == '\r')
			buf[i] = ' ';
	snprintf(out, len, "%s", buf);
}

int qemu_spawn(const struct strv *argv, const struct vm_paths *paths,
	       const struct qemu_fds *f, const struct qemu_user *u,
	       pid_t *pid_out, struct ferr *err)
{
	char pidtext[32];
	int logfd, nullfd;
	pid_t pid;

	logfd = open(paths->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		     0600);
	if (logfd < 0)
		return ferr_set(err, FERR_IO, "cannot create %s: %s",
				paths->log, strerror(errno));
	nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (nullfd < 0) {
		close(logfd);
		return ferr_set(err, FERR_IO, "/dev/null: %s", strerror(errno));
	}
	pid = fork();
	if (pid < 0) {
		close(logfd);
		close(nullfd);
		return ferr_set(err, FERR_INTERNAL, "fork: %s",
				strerror(errno));
	}
	if (pid == 0) {
		sigset_t all;

		/* child: own session, so it outlives ferryd and its group */
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		signal(SIGPIPE, SIG_DFL);
		setsid();
		if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 ||
		    dup2(logfd, 2) < 0)
			_exit(127);
		if (qemu_child_confine(f, u, paths->run) < 0) {
			dprintf(2, "ferryd: cannot confine QEMU: %s\n",
				strerror(errno));
			_exit(127);
		}
		execv(argv->v[0], argv->v);
		dprintf(2, "ferryd: cannot execute %s: %s\n", argv->v[0],
			strerror(errno));
		_exit(127);
	}
	close(logfd);
	close(nullfd);
	*pid_out = pid;
	/* ferryd writes the pidfile: QEMU's user cannot replace it */
	snprintf(pidtext, sizeof(pidtext), "%d\n", (int)pid);
	if (file_write_atomic(paths->pidfile, pidtext, strlen(pidtext), 0600,
			      err) < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	return 0;
}

int qemu_wait_ready(pid_t pid, const char *qmp_path, const char *log_path,
		    struct qmp **out, struct ferr *err)
{
	uint64_t deadline = now_ms() + FERRY_QEMU_START_TIMEOUT_MS;
	char tail[LOG_TAIL_BYTES + 1];

	for (;;) {
		struct ferr cerr;
		int status;
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r < 0 && errno == ECHILD && kill(pid, 0) < 0 &&
		    errno == ESRCH) {
			/* reaped by the loop's SIGCHLD handler already */
			log_tail(log_path, tail, sizeof(tail));
			return ferr_set(err, FERR_UNAVAILABLE,
					"QEMU exited during start-up: %s",
					tail[0] ? tail : "no output");
		}
		if (r == pid) {
			log_tail(log_path, tail, sizeof(tail));
			return ferr_set(err, FERR_UNAVAILABLE,
					"QEMU exited during start-up (%s %d): "
					"%s",
					WIFEXITED(status) ? "status" : "signal",
					WIFEXITED(status) ? WEXITSTATUS(status)
							  : WTERMSIG(status),
					tail[0] ? tail : "no output");
		}
		if (qmp_connect(qmp_path, FERRY_QMP_TIMEOUT_MS, out, &cerr) ==
		    0)
			return 0;
		if (now_ms() >= deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return ferr_set(err, FERR_TIMEOUT,
					"QEMU did not open QMP within %d ms: "
					"%s",
					FERRY_QEMU_START_TIMEOUT_MS, cerr.msg);
		}
		usleep(20 * 1000);
	}
}

int qemu_kept_monitor(pid_t pid, const char *qmp_path)
{
	char dir[64];
	struct dirent *de;
	DIR *d;
	int pidfd, found = -1;
	unsigned seen = 0;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return -1;
	d = opendir(dir);
	while (d && found < 0 && (de = readdir(d)) &&
	       seen++ < QEMU_FDS_SCAN_MAX) {
		struct sockaddr_un sa;
		socklen_t salen = sizeof(sa);
		char link[32];
		uint64_t n;
		ssize_t ll;
		int fd;

		ll = readlinkat(dirfd(d), de->d_name, link, sizeof(link) - 1);
		if (ll <= 0 || parse_u64(de->d_name, 0, INT32_MAX, &n) < 0)
			continue;
		link[ll] = '\0';
		if (strncmp(link, "socket:", 7) != 0)
			continue;
		fd = (int)syscall(SYS_pidfd_getfd, pidfd, (int)n, 0);
		if (fd < 0)
			continue;
		/* ours is the client end: its peer is the monitor's socket */
		memset(&sa, 0, sizeof(sa));
		if (getpeername(fd, (struct sockaddr *)&sa, &salen) == 0 &&
		    sa.sun_family == AF_UNIX &&
		    salen > offsetof(struct sockaddr_un, sun_path) &&
		    strncmp(sa.sun_path, qmp_path, sizeof(sa.sun_path)) == 0)
			found = fd;
		else
			close(fd);
	}
	if (d)
		closedir(d);
	close(pidfd);
	return found;
}

bool qemu_process_stopped(pid_t pid)
{
	char path[64];
	char *text = NULL, *p;
	size_t len = 0;
	struct ferr ignored;
	bool stopped;

	if (pid <= 1)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (file_read_all(path, 4096, &text, &len, &ignored) < 0)
		return false;
	p = strrchr(text, ')');
	stopped = p && p[1] == ' ' && p[2] == 'T';
	free(text);
	return stopped;
}

bool qemu_process_matches(pid_t pid, const char *uuid)
{
	char path[64];
	char *text = NULL;
	size_t len = 0;
	struct ferr ignored;
	bool found = false;
	char *p;

	if (pid <= 1)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (file_read_all(path, 4096, &text, &len, &ignored) < 0)
		return false;
	/* the state follows the last ')' of the command name */
	p = strrchr(text, ')');
	if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X') {
		free(text);
		return false;
	}
	free(text);
	text = NULL;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	if (file_read_all(path, PROC_CMDLINE_MAX, &text, &len, &ignored) < 0)
		return false;
	/* NUL-separated arguments: look for "-uuid" followed by uuid */
	for (size_t off = 0; off < len;) {
		size_t alen = strnlen(text + off, len - off);

		if (!strcmp(text + off, "-uuid") && off + alen + 1 < len &&
		    !strncmp(text + off + alen + 1, uuid,
			     FERRY_UUID_STR_LEN + 1)) {
			found = true;
			break;
		}
		off += alen + 1;
	}
	free(text);
	return found;
}
