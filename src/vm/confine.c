/* confine.c - what keeps QEMU to its own VM: the unprivileged user it runs
 * as, the run folder it shares with ferryd, and the files ferryd opens for
 * it (images below the shared dir, the console, the QMP sockets), handed
 * over as descriptors so that QEMU itself opens nothing by name. */
#define _GNU_SOURCE
#include "vm.h"
#include "netdev.h"
#include "qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define RUN_DIR_MODE_SHARED 03770 /* setgid (new files get QEMU's group),
				     sticky (QEMU cannot remove ferryd's
				     files), rwx for ferryd and QEMU */
#define RUN_DIR_MODE_OWN 0700
#define CONSOLE_MODE 0600
#define RAM_MODE_SHARED 0660 /* ferryd and QEMU's group */
#define QMP_BACKLOG 4

/* ---- the user ---------------------------------------------------------- */

int qemu_user_resolve(const char *name, struct qemu_user *u, struct ferr *err)
{
	struct passwd pw, *res = NULL;
	char buf[4096];
	int n = QEMU_GROUPS_MAX;

	memset(u, 0, sizeof(*u));
	if (!name || !*name) {
		if (geteuid() == 0)
			return ferr_set(err, FERR_INVALID,
					"ferryd runs as root: set qemu_user in "
					"ferryd.json to an unprivileged user "
					"for QEMU (scripts/deps.sh creates "
					"ferry-qemu)");
		return 0; /* QEMU runs as ferryd's own user */
	}
	if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 || !res)
		return ferr_set(err, FERR_INVALID,
				"qemu_user %s does not exist (scripts/deps.sh "
				"creates ferry-qemu)", name);
	if (pw.pw_uid == 0 || pw.pw_gid == 0)
		return ferr_set(err, FERR_INVALID,
				"qemu_user %s has uid or gid 0", name);
	if (pw.pw_uid != geteuid() && geteuid() != 0)
		return ferr_set(err, FERR_INVALID,
				"ferryd must run as root to start QEMU as %s",
				name);
	if (getgrouplist(name, pw.pw_gid, u->groups, &n) < 0)
		return ferr_set(err, FERR_INVALID,
				"qemu_user %s is in more than %d groups", name,
				QEMU_GROUPS_MAX);
	for (int i = 0; i < n; i++)
		if (u->groups[i] == 0)
			return ferr_set(err, FERR_INVALID,
					"qemu_user %s is in group 0", name);
	u->set = pw.pw_uid != geteuid();
	u->uid = pw.pw_uid;
	u->gid = pw.pw_gid;
	u->ngroups = n;
	snprintf(u->name, sizeof(u->name), "%s", name);
	return 0;
}

int qemu_run_dir_prepare(const char *dir, const struct qemu_user *u,
			 struct ferr *err)
{
	struct stat st;

	if (mkdir_p(dir, RUN_DIR_MODE_OWN, err) < 0)
		return -1;
	if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) ||
	    st.st_uid != geteuid())
		return ferr_set(err, FERR_INVALID,
				"%s must be a folder owned by ferryd's user",
				dir);
	if ((u->set && chown(dir, geteuid(), u->gid) < 0) ||
	    chmod(dir, u->set ? RUN_DIR_MODE_SHARED : RUN_DIR_MODE_OWN) < 0)
		return ferr_set(err, FERR_IO, "cannot set the owner or mode of "
				"%s: %s", dir, strerror(errno));
	return 0;
}

const char *vm_run_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* ---- files below the shared dir ---------------------------------------- */

int shared_open(const char *shared_dir, const char *rel, int flags,
		struct ferr *err)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC | O_NOCTTY),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	struct stat st;
	int dir, fd;

	if (!vmdef_path_is_safe(rel))
		return ferr_set(err, FERR_INVALID, "%s is not a safe path",
				rel);
	dir = open(shared_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return ferr_set(err, FERR_UNAVAILABLE,
				"cannot open the shared dir %s: %s", shared_dir,
				strerror(errno));
	fd = (int)syscall(SYS_openat2, dir, rel, &how, sizeof(how));
	close(dir);
	if (fd < 0)
		return ferr_set(err, errno == ENOENT ? FERR_NOT_FOUND
			        : FERR_CONFLICT,
				"%s: %s%s", rel, strerror(errno),
				errno == EXDEV || errno == ELOOP
					? " (a link that leads out of the "
					  "shared dir)"
					: "");
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return ferr_set(err, FERR_CONFLICT, "%s is not a regular file",
				rel);
	}
	return fd;
}

int qcow2_header_check(const unsigned char *b, size_t len, struct ferr *err)
{
	uint32_t magic, version;
	uint64_t incompat = 0;

	if (len < QCOW2_V2_HEADER_LEN)
		return ferr_set(err, FERR_INVALID,
				"too short for a qcow2 header");
	magic = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
		(uint32_t)b[2] << 8 | b[3];
	version = (uint32_t)b[4] << 24 | (uint32_t)b[5] << 16 |
		  (uint32_t)b[6] << 8 | b[7];
	if (magic != QCOW2_MAGIC)
		return ferr_set(err, FERR_INVALID, "not a qcow2 image");
	if (version != 2 && version != 3)
		return ferr_set(err, FERR_INVALID,
				"qcow2 version %u is not supported", version);
	if (version == 3) {
		if (len < QCOW2_V3_HEADER_MIN)
			return ferr_set(err, FERR_INVALID,
					"too short for a qcow2 version 3 "
					"header");
		for (int i = 0; i < 8; i++)
			incompat = incompat << 8 | b[QCOW2_OFF_INCOMPAT + i];
	}
	if (incompat & QCOW2_INCOMPAT_DATA_FILE)
		return ferr_set(err, FERR_INVALID,
				"the image names an external data file, which "
				"QEMU would open by that name");
	return 0;
}

/* Open an image of the definition below the shared dir; a qcow2 one must
 * pass qcow2_header_check. */
static int image_open(const char *shared_dir, const char *rel,
		      enum disk_format fmt, int flags, struct ferr *err)
{
	unsigned char head[QCOW2_V3_HEADER_MIN];
	ssize_t n;
	int fd = shared_open(shared_dir, rel, flags, err);

	if (fd < 0 || fmt != DISK_QCOW2)
		return fd;
	n = pread(fd, head, sizeof(head), 0);
	if (qcow2_header_check(head, n < 0 ? 0 : (size_t)n, err) < 0) {
		close(fd);
		return ferr_wrap(err, "disk %s", rel);
	}
	return fd;
}

/* ---- descriptors for QEMU ---------------------------------------------- */

/* A listening unix socket at path (mode 0600: ferryd alone connects). */
static int listen_at(const char *path, struct ferr *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return ferr_set(err, FERR_INVALID, "socket path %s is too long",
				path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ferr_set(err, FERR_IO, "socket: %s", strerror(errno));
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, 0600) < 0 || listen(fd, QMP_BACKLOG) < 0) {
		ferr_set(err, FERR_IO, "cannot listen on %s: %s", path,
			 strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

/* Keep fd for QEMU; *slot gets the number it will have there. */
static void keep(struct qemu_fds *f, int fd, int *slot)
{
	f->fd[f->n] = fd;
	*slot = QEMU_FD_BASE + (int)f->n;
	f->n++;
}

/* The guest's RAM as a shared file (ram_dir, docs/ha.md): new and empty
 * (QEMU sizes it), readable and writable by QEMU's group only. */
static int ram_open(const char *path, const struct qemu_user *u,
		    struct ferr *err)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW |
				    O_CLOEXEC,
		      0600);

	if (fd < 0)
		return ferr_set(err, FERR_IO, "cannot create %s: %s", path,
				strerror(errno));
	if (u && u->set &&
	    (fchown(fd, geteuid(), u->gid) < 0 ||
	     fchmod(fd, RAM_MODE_SHARED) < 0)) {
		ferr_set(err, FERR_IO, "cannot share %s with QEMU: %s", path,
			 strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

int qemu_fds_open(const struct ferryd_config *cfg, const struct vm_def *def,
		  const struct vm_paths *p, const struct qemu_user *u,
		  struct qemu_fds *f, struct ferr *err)
{
	const char *sh = cfg->shared_dir;
	int fd;

	memset(f, 0, sizeof(*f));
	f->kernel = f->initrd = f->disk = f->backing = f->tap = f->ram = -1;
	_Static_assert(QEMU_FDS_MAX >= 9, "room for every descriptor");
	if ((fd = listen_at(p->qmp, err)) < 0)
		goto fail;
	keep(f, fd, &f->qmp);
	if ((fd = listen_at(p->mqmp, err)) < 0)
		goto fail;
	keep(f, fd, &f->mqmp);
	/* a new boot starts a new console log */
	fd = open(p->console, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND |
				      O_CLOEXEC | O_NOFOLLOW,
		  CONSOLE_MODE);
	if (fd < 0) {
		ferr_set(err, FERR_IO, "cannot create %s: %s", p->console,
			 strerror(errno));
		goto fail;
	}
	keep(f, fd, &f->console);
	if (def->kernel[0]) {
		if ((fd = shared_open(sh, def->kernel, O_RDONLY, err)) < 0)
			goto fail;
		keep(f, fd, &f->kernel);
	}
	if (def->initrd[0]) {
		if ((fd = shared_open(sh, def->initrd, O_RDONLY, err)) < 0)
			goto fail;
		keep(f, fd, &f->initrd);
	}
	if (def->disk[0]) {
		if ((fd = image_open(sh, def->disk, def->disk_format, O_RDWR,
				     err)) < 0)
			goto fail;
		keep(f, fd, &f->disk);
	}
	if (def->backing[0]) {
		if ((fd = image_open(sh, def->backing, def->backing_format,
				     O_RDONLY, err)) < 0)
			goto fail;
		keep(f, fd, &f->backing);
	}
	if (def->net == NET_BRIDGE) {
		struct tap tap;

		if (vm_net_open(cfg, def, &tap, err) < 0)
			goto fail;
		keep(f, tap.fd, &f->tap);
		snprintf(f->tap_name, sizeof(f->tap_name), "%s", tap.ifname);
	}
	if (p->ram[0]) {
		if ((fd = ram_open(p->ram, u, err)) < 0)
			goto fail;
		keep(f, fd, &f->ram);
	}
	return 0;
fail:
	qemu_fds_close(f);
	unlink(p->qmp);
	unlink(p->mqmp);
	return -1;
}

void qemu_fds_close(struct qemu_fds *f)
{
	for (unsigned i = 0; i < f->n; i++)
		close(f->fd[i]);
	f->n = 0;
}

/* In the child before exec (async-signal-safe calls only): move the
 * descriptors to QEMU_FD_BASE.., close every other one, enter the run
 * folder and drop to the user. */
int qemu_child_confine(const struct qemu_fds *f, const struct qemu_user *u,
		       const char *run_dir)
{
	int tmp[QEMU_FDS_MAX];
	unsigned n = f ? f->n : 0;

	/* via numbers above every target, so no move clobbers another */
	for (unsigned i = 0; i < n; i++) {
		tmp[i] = fcntl(f->fd[i], F_DUPFD_CLOEXEC,
			       QEMU_FD_BASE + QEMU_FDS_MAX);
		if (tmp[i] < 0)
			return -1;
	}
	for (unsigned i = 0; i < n; i++)
		if (dup2(tmp[i], QEMU_FD_BASE + (int)i) < 0)
			return -1;
	close_range(QEMU_FD_BASE + n, ~0U, 0);
	if (chdir(run_dir) < 0)
		return -1;
	if (u && u->set &&
	    (setgroups((size_t)u->ngroups, u->groups) < 0 ||
	     setresgid(u->gid, u->gid, u->gid) < 0 ||
	     setresuid(u->uid, u->uid, u->uid) < 0))
		return -1;
	return 0;
}
