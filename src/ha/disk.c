/* disk.c - the disk's part of a checkpoint (docs/ha.md, "The disk").
 *
 * Primary: in the pause, one QMP transaction adds a new dirty bitmap and
 * starts blockdev-backup of the disk — everything the first time
 * (sync=full), afterwards only the clusters the previous bitmap marked
 * (sync=incremental) — into a sparse raw target file. The backup job
 * copies before it lets a guest write through, so the target holds the
 * disk as it was at the pause. Its written extents (SEEK_DATA) are sent as
 * DISK records. Backup: the standby runs on its own copy of the disk,
 * never the primary's file; DISK records are staged in a file and written
 * into the copy only when the checkpoint commits. */
#define _GNU_SOURCE
#include "ha_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DISK_NODE "ha-target"
#define DISK_JOB "ha-backup"
#define DISK_DEVICE "disk0" /* the VM's disk: its format node (vm/qemu.c) */

static int qcmd(struct qmp *q, const char *name, json_t *args,
		json_t **ret, struct ferr *err)
{
	if (qmp_command(q, name, args, ret, err) < 0)
		return ferr_wrap(err, "%s", name);
	return 0;
}

static int new_file(const char *path, uint64_t size, struct ferr *err)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		ferr_set(err, FERR_IO, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* The target lives in QEMU's run folder, which QEMU's user may write:
 * made anew (never a file or link QEMU left there), group QEMU's (the
 * folder is setgid), and read back through the descriptor made here. */
int ha_disk_prepare(struct qmp *q, struct ha_pv *pv, struct ferr *err)
{
	int fd;

	if (pv->target_fd >= 0)
		close(pv->target_fd);
	unlink(pv->disk_target);
	fd = open(pv->disk_target,
		  O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0660);
	if (fd < 0 || fchmod(fd, 0660) < 0 ||
	    ftruncate(fd, (off_t)pv->disk_size) < 0) {
		ferr_set(err, FERR_IO, "%s: %s", pv->disk_target,
			 strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	pv->target_fd = fd;
	/* QEMU runs in the run folder: the name alone */
	return qcmd(q, "blockdev-add",
		    json_pack("{s:s, s:s, s:{s:s, s:s}}", "driver", "raw",
			      "node-name", DISK_NODE, "file", "driver", "file",
			      "filename", vm_run_name(pv->disk_target)),
		    NULL, err);
}

int ha_disk_snapshot(struct qmp *q, struct ha_pv *pv, uint64_t deadline,
		     struct ferr *err)
{
	char next[sizeof(pv->disk_bitmap)];
	json_t *backup, *actions, *ret = NULL;

	if (pv->disk_fresh && pv->disk_bitmap[0]) {
		struct ferr ignored;

		/* start over: what the old bitmap tracks may be lost */
		qcmd(q, "block-dirty-bitmap-remove",
		     json_pack("{s:s, s:s}", "node", DISK_DEVICE, "name",
			       pv->disk_bitmap),
		     NULL, &ignored);
		pv->disk_bitmap[0] = '\0';
	}
	snprintf(next, sizeof(next), "ha-%u", ++pv->disk_gen);
	backup = json_pack("{s:s, s:s, s:s, s:s, s:b}", "device", DISK_DEVICE,
			   "target", DISK_NODE, "sync",
			   pv->disk_bitmap[0] ? "incremental" : "full",
			   "job-id", DISK_JOB, "auto-dismiss", 0);
	if (backup && pv->disk_bitmap[0])
		json_object_set_new(backup, "bitmap",
				    json_string(pv->disk_bitmap));
	actions = json_pack("[{s:s, s:{s:s, s:s}}, {s:s, s:o}]", "type",
			    "block-dirty-bitmap-add", "data", "node",
			    DISK_DEVICE, "name", next, "type",
			    "blockdev-backup", "data", backup);
	if (qcmd(q, "transaction", json_pack("{s:o}", "actions", actions),
		 NULL, err) < 0) {
		pv->disk_fresh = true;
		return -1;
	}
	/* the bitmaps: the new one tracks from now on */
	if (pv->disk_bitmap[0]) {
		struct ferr ignored;

		qcmd(q, "block-dirty-bitmap-remove",
		     json_pack("{s:s, s:s}", "node", DISK_DEVICE, "name",
			       pv->disk_bitmap),
		     NULL, &ignored);
	}
	snprintf(pv->disk_bitmap, sizeof(pv->disk_bitmap), "%s", next);
	for (;;) {
		json_t *jobs = NULL, *job = NULL;
		const char *st = NULL;
		size_t i;

		if (qcmd(q, "query-jobs", NULL, &jobs, err) < 0)
			goto fail;
		json_array_foreach(jobs, i, job)
			if (!strcmp(json_string_value(json_object_get(job, "id"))
					    ?: "",
				    DISK_JOB))
				break;
		st = i < json_array_size(jobs)
			     ? json_string_value(json_object_get(job, "status"))
			     : NULL;
		if (st && !strcmp(st, "concluded")) {
			const char *e = json_string_value(
				json_object_get(job, "error"));

			if (e)
				ferr_set(err, FERR_IO, "disk backup: %s", e);
			json_decref(jobs);
			if (e)
				goto fail;
			break;
		}
		json_decref(jobs);
		if (!st || now_ms() >= deadline) {
			ferr_set(err, FERR_TIMEOUT, "disk backup: %s",
				 st ? "timed out" : "job vanished");
			goto fail;
		}
		usleep(1000);
	}
	json_decref(ret);
	return 0;
fail:
	pv->disk_fresh = true;
	return -1;
}

void ha_disk_release(struct qmp *q, struct ha_pv *pv)
{
	struct ferr ignored;

	(void)pv;
	qcmd(q, "job-dismiss", json_pack("{s:s}", "id", DISK_JOB), NULL,
	     &ignored);
	qcmd(q, "blockdev-del", json_pack("{s:s}", "node-name", DISK_NODE),
	     NULL, &ignored);
}

int ha_disk_send(struct ha_pv *pv,
		 int (*put)(void *arg, uint64_t off, const void *data,
			    uint32_t len, struct ferr *err),
		 void *arg, struct ferr *err)
{
	int fd = pv->target_fd;
	uint8_t *buf = malloc(HA_DISK_CHUNK);
	off_t off = 0;
	int rc = -1;

	pv->target_fd = -1;
	if (fd < 0 || !buf) {
		ferr_set(err, FERR_IO, "%s: %s", pv->disk_target,
			 fd < 0 ? strerror(errno) : "out of memory");
		goto out;
	}
	for (;;) {
		off_t start = lseek(fd, off, SEEK_DATA), end;

		if (start < 0 && errno == ENXIO)
			break; /* no more data */
		end = start < 0 ? -1 : lseek(fd, start, SEEK_HOLE);
		if (start < 0 || end < 0) {
			ferr_set(err, FERR_IO, "%s: %s", pv->disk_target,
				 strerror(errno));
			goto out;
		}
		start &= ~(off_t)(HA_SECTOR - 1);
		if ((uint64_t)end > pv->disk_size)
			end = (off_t)pv->disk_size;
		while (start < end) {
			uint32_t n = end - start > HA_DISK_CHUNK
					     ? HA_DISK_CHUNK
					     : (uint32_t)(end - start);

			n = (n + HA_SECTOR - 1) & ~(HA_SECTOR - 1);
			memset(buf, 0, n);
			if (pread(fd, buf, n, start) < 0) {
				ferr_set(err, FERR_IO, "%s: %s", pv->disk_target,
					 strerror(errno));
				goto out;
			}
			if (put(arg, (uint64_t)start, buf, n, err) < 0)
				goto out;
			start += n;
		}
		off = end;
		if ((uint64_t)off >= pv->disk_size)
			break;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	unlink(pv->disk_target);
	return rc;
}

int ha_disk_standby(struct ha_pv *pv, const char *shared_dir,
		    const char *host, char *rel, size_t rel_len,
		    struct ferr *err)
{
	char dir[FERRY_PATH_MAX];

	if (fmt_checked(rel, rel_len, err, "disk copy", "ha/%s/%s.raw", host,
			pv->uuid) < 0 ||
	    fmt_checked(dir, sizeof(dir), err, "path", "%s/ha", shared_dir) <
		    0)
		return -1;
	mkdir(dir, 0700);
	if (fmt_checked(dir, sizeof(dir), err, "path", "%s/ha/%s", shared_dir,
			host) < 0)
		return -1;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return ferr_set(err, FERR_IO, "%s: %s", dir, strerror(errno));
	if (fmt_checked(pv->disk_path, sizeof(pv->disk_path), err, "path",
			"%s/%s", shared_dir, rel) < 0)
		return -1;
	pv->disk_fd = new_file(pv->disk_path, pv->disk_size, err);
	if (pv->disk_fd < 0)
		return -1;
	pv->stage_fd = new_file(pv->disk_stage, 0, err);
	return pv->stage_fd < 0 ? -1 : 0;
}

void ha_disk_stage_reset(struct ha_pv *pv)
{
	if (pv->stage_fd >= 0 && ftruncate(pv->stage_fd, 0) == 0)
		lseek(pv->stage_fd, 0, SEEK_SET);
}

/* A staged record: offset u64, length u32, zero u32, then the bytes. */
int ha_disk_stage(struct ha_pv *pv, uint64_t off, const void *data,
		  uint32_t len, struct ferr *err)
{
	uint8_t hdr[16] = { 0 };

	if (!pv->disk_size || off > pv->disk_size ||
	    len > pv->disk_size - off)
		return ferr_set(err, FERR_INVALID,
				"disk bytes %llu+%u beyond the disk",
				(unsigned long long)off, len);
	memcpy(hdr, &off, sizeof(off));
	memcpy(hdr + 8, &len, sizeof(len));
	if (fd_write_all(pv->stage_fd, hdr, sizeof(hdr)) < 0 ||
	    fd_write_all(pv->stage_fd, data, len) < 0)
		return ferr_set(err, FERR_IO, "staging the disk: %s",
				strerror(errno));
	return 0;
}

int ha_disk_apply(struct ha_pv *pv, struct ferr *err)
{
	uint8_t *buf = malloc(HA_DISK_CHUNK);
	off_t pos = 0;
	int rc = -1;

	if (!buf)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	for (;;) {
		uint8_t hdr[16];
		uint64_t off;
		uint32_t len;
		ssize_t n = pread(pv->stage_fd, hdr, sizeof(hdr), pos);

		if (n == 0)
			break;
		memcpy(&off, hdr, sizeof(off));
		memcpy(&len, hdr + 8, sizeof(len));
		/* our own file, but checked: it was written from the wire */
		if (n != sizeof(hdr) || len > HA_DISK_CHUNK ||
		    off > pv->disk_size || len > pv->disk_size - off ||
		    pread(pv->stage_fd, buf, len, pos + 16) != (ssize_t)len ||
		    pwrite(pv->disk_fd, buf, len, (off_t)off) != (ssize_t)len) {
			ferr_set(err, FERR_IO, "applying the disk: %s",
				 strerror(errno));
			goto out;
		}
		pos += 16 + len;
	}
	if (fdatasync(pv->disk_fd) < 0) {
		ferr_set(err, FERR_IO, "applying the disk: %s",
			 strerror(errno));
		goto out;
	}
	rc = 0;
out:
	free(buf);
	ha_disk_stage_reset(pv);
	return rc;
}
