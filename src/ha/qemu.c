/* qemu.c - HA's QMP sequences, each run as one VM operation on a worker
 * thread with the VM's monitor (vm_run_qmp):
 *   checkpoint: stop, copy RAM while QEMU saves the device state
 *               (x-ignore-shared: no RAM in the stream), cont;
 *   load:       the standby loads the device state and runs. */
#define _GNU_SOURCE
#include "ha_int.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static int cmd(struct qmp *q, const char *name, json_t *args,
	       struct ferr *err)
{
	json_t *ret = NULL;
	int rc = qmp_command(q, name, args, &ret, err);

	json_decref(ret);
	if (rc < 0)
		ferr_wrap(err, "%s", name);
	return rc;
}

static int ignore_shared(struct qmp *q, bool on, struct ferr *err)
{
	return cmd(q, "migrate-set-capabilities",
		   json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
			     "x-ignore-shared", "state", on),
		   err);
}

/* The capabilities of a device-state save: one plain stream on one
 * socket, whatever an earlier migration of this QEMU (the VM may have
 * arrived by one) left set: no multifd channels, no return path, no
 * post-copy. */
static int save_caps(struct qmp *q, struct ferr *err)
{
	static const char *const off[] = { "multifd", "return-path",
					   "postcopy-ram", "auto-converge",
					   "zero-blocks", NULL };
	json_t *caps = json_array();

	for (const char *const *c = off; *c; c++)
		json_array_append_new(caps, json_pack("{s:s, s:b}",
						      "capability", *c,
						      "state", 0));
	json_array_append_new(caps, json_pack("{s:s, s:b}", "capability",
					      "x-ignore-shared", "state", 1));
	return cmd(q, "migrate-set-capabilities",
		   json_pack("{s:o}", "capabilities", caps), err);
}

static int unix_sock(const char *path, bool listen_it, struct ferr *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return ferr_set(err, FERR_INVALID, "socket path too long");
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ferr_set(err, FERR_IO, "socket: %s", strerror(errno));
	if (listen_it) {
		unlink(path);
		/* QEMU's group may connect (the run folder gives it) */
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		    chmod(path, 0660) == 0 && listen(fd, 1) == 0)
			return fd;
	} else if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		return fd;
	}
	ferr_set(err, FERR_IO, "%s: %s", path, strerror(errno));
	close(fd);
	return -1;
}

/* Wait for fd to be readable until deadline (now_ms). */
static int wait_in(int fd, uint64_t deadline, struct ferr *err)
{
	for (;;) {
		uint64_t now = now_ms();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int n;

		if (now >= deadline)
			return ferr_set(err, FERR_TIMEOUT,
					"QEMU's device state timed out");
		n = poll(&p, 1, (int)(deadline - now));
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return ferr_set(err, FERR_IO, "poll: %s",
					strerror(errno));
	}
}

/* Read QEMU's device-state stream until it closes it. */
static int read_devstate(struct ha_pv *pv, int lfd, uint64_t deadline,
			 struct ferr *err)
{
	size_t cap = 1024 * 1024, len = 0;
	uint8_t *buf = malloc(cap);
	int fd = -1, rc = -1;

	if (!buf)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (wait_in(lfd, deadline, err) < 0)
		goto out;
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		ferr_set(err, FERR_IO, "accept: %s", strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t n;

		if (wait_in(fd, deadline, err) < 0)
			goto out;
		if (len == cap) {
			uint8_t *nb;

			if (cap >= HA_DEVSTATE_MAX) {
				ferr_set(err, FERR_TOO_LARGE,
					 "device state over %u bytes",
					 HA_DEVSTATE_MAX);
				goto out;
			}
			nb = realloc(buf, cap * 2);
			if (!nb) {
				ferr_set(err, FERR_INTERNAL, "out of memory");
				goto out;
			}
			buf = nb;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ferr_set(err, FERR_IO, "device state: %s",
				 strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len == 0) {
		ferr_set(err, FERR_IO, "QEMU sent no device state");
		goto out;
	}
	free(pv->dev);
	pv->dev = buf;
	pv->dev_len = len;
	buf = NULL;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

/* Poll query-migrate (or query-status when status_key is NULL) until
 * QEMU leaves the running state `busy`. *out gets the final state. */
static int wait_state(struct qmp *q, bool migrate, const char *busy,
		      uint64_t deadline, char *out, size_t len,
		      struct ferr *err)
{
	for (;;) {
		json_t *ret = NULL;
		const char *st;

		if (qmp_command(q, migrate ? "query-migrate" : "query-status",
				NULL, &ret, err) < 0)
			return -1;
		st = json_string_value(json_object_get(ret, "status"));
		snprintf(out, len, "%s", st ? st : "");
		json_decref(ret);
		for (const char *b = busy; *b;) {
			size_t n = strcspn(b, ",");

			if (strlen(out) == n && !strncmp(out, b, n))
				goto again;
			b += n + (b[n] == ',');
		}
		return 0;
again:
		if (now_ms() >= deadline)
			return ferr_set(err, FERR_TIMEOUT,
					"QEMU stayed in state %s", out);
		usleep(1000);
	}
}

/* Copy the VM's RAM into the checkpoint's copy (arg: the ha_pv), with
 * the vCPUs stopped. A thread body; returns NULL. */
static void *copy_ram(void *arg)
{
	struct ha_pv *pv = arg;

	memcpy(pv->snap, pv->ram, pv->ram_size);
	return NULL;
}

int ha_qmp_checkpoint(struct qmp *q, void *ctx, struct ferr *err)
{
	struct ha_pause *p = ctx;
	struct ha_pv *pv = p->pv;
	uint64_t t0, deadline;
	pthread_t copier;
	bool copying = false;
	char st[32];
	int lfd, rc = -1;

	lfd = unix_sock(pv->run_sock, true, err);
	if (lfd < 0)
		return -1;
	/* everything that need not wait for the stop comes before it */
	if ((pv->disk_size && ha_disk_prepare(q, pv, err) < 0) ||
	    save_caps(q, err) < 0)
		goto out;
	t0 = mono_us();
	if (cmd(q, "stop", NULL, err) < 0)
		goto out;
	/* RAM, disk and devices from the same instant: the vCPUs are
	 * stopped, and stop drained the disk's requests in flight. The RAM
	 * copy (memory bound) runs beside QEMU saving the device state,
	 * which leaves RAM alone (x-ignore-shared). */
	copying = pthread_create(&copier, NULL, copy_ram, pv) == 0;
	if (!copying)
		copy_ram(pv);
	deadline = now_ms() + HA_DEVSTATE_TIMEOUT_MS;
	if ((pv->disk_size && ha_disk_snapshot(q, pv, deadline, err) < 0) ||
	    cmd(q, "migrate",
		json_pack("{s:s+}", "uri", "unix:",
			  vm_run_name(pv->run_sock)), err) < 0 ||
	    read_devstate(pv, lfd, deadline, err) < 0 ||
	    wait_state(q, true, "setup,active,device,pre-switchover", deadline,
		       st, sizeof(st), err) < 0)
		goto resume;
	if (strcmp(st, "completed") != 0) {
		ferr_set(err, FERR_IO, "saving the device state: %s", st);
		goto resume;
	}
	rc = 0;
resume:
	{
		struct ferr e2 = { 0 };

		if (copying)
			pthread_join(copier, NULL);
		if (rc < 0) {
			/* a save still running would keep the VM paused */
			cmd(q, "migrate_cancel", NULL, &e2);
			wait_state(q, true, "active,cancelling,device",
				   now_ms() + HA_DEVSTATE_TIMEOUT_MS, st,
				   sizeof(st), &e2);
		}
		if (!p->keep_paused || rc < 0) {
			if (cmd(q, "cont", NULL, &e2) < 0 && rc == 0)
				rc = ferr_set(err, e2.code, "%s", e2.msg);
		}
		p->pause_ms = (double)(mono_us() - t0) / 1000.0;
	}
out:
	{
		struct ferr e3 = { 0 };

		/* a later migration must carry RAM again (after the pause:
		 * it need not wait for the VM) */
		if (ignore_shared(q, false, &e3) < 0 && rc == 0)
			rc = ferr_set(err, e3.code, "%s", e3.msg);
	}
	if (pv->disk_size)
		ha_disk_release(q, pv);
	close(lfd);
	unlink(pv->run_sock);
	return rc;
}

int ha_qmp_load(struct qmp *q, void *ctx, struct ferr *err)
{
	struct ha_pv *pv = ctx;
	uint64_t deadline = now_ms() + HA_DEVSTATE_TIMEOUT_MS;
	char st[32];
	int fd;

	unlink(pv->run_sock);
	if (ignore_shared(q, true, err) < 0 ||
	    cmd(q, "migrate-incoming",
		json_pack("{s:s+}", "uri", "unix:",
			  vm_run_name(pv->run_sock)), err) < 0)
		return -1;
	fd = unix_sock(pv->run_sock, false, err);
	if (fd < 0)
		return -1;
	if (fd_write_all(fd, pv->dev_ok, pv->dev_ok_len) < 0) {
		close(fd);
		return ferr_set(err, FERR_IO, "device state to QEMU: %s",
				strerror(errno));
	}
	close(fd);
	if (wait_state(q, false, "inmigrate", deadline, st, sizeof(st), err) <
	    0)
		return -1;
	unlink(pv->run_sock);
	if (strcmp(st, "paused") != 0)
		return ferr_set(err, FERR_IO,
				"the standby did not load the checkpoint: %s",
				st);
	return cmd(q, "cont", NULL, err);
}

int ha_qmp_cont(struct qmp *q, void *ctx, struct ferr *err)
{
	(void)ctx;
	return cmd(q, "cont", NULL, err);
}
