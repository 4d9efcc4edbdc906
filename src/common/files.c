/* files.c - atomic writes, bounded reads and folder helpers. */
#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fd_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int fd_read_upto(int fd, void *buf, size_t cap, size_t *got)
{
	char *p = buf;

	*got = 0;
	while (*got < cap) {
		ssize_t n = read(fd, p + *got, cap - *got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	return 0;
}

/* fsync the folder that holds path, so a rename in it is durable. */
static int fsync_parent(const char *path)
{
	char buf[FERRY_PATH_MAX];
	int fd, rc;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -1;
	fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

int file_write_atomic(const char *path, const void *data, size_t len,
		      unsigned mode, struct ferr *err)
{
	char tmp[FERRY_PATH_MAX];
	int fd = -1;
	int rc = -1;

	if (fmt_checked(tmp, sizeof(tmp), err, "path", "%s.tmp.%ld", path,
			(long)getpid()) < 0)
		return -1;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  mode);
	if (fd < 0) {
		ferr_set(err, FERR_IO, "cannot create %s: %s", tmp,
			 strerror(errno));
		goto out;
	}
	if (fchmod(fd, mode) < 0 || fd_write_all(fd, data, len) < 0 ||
	    fsync(fd) < 0) {
		ferr_set(err, FERR_IO, "cannot write %s: %s", tmp,
			 strerror(errno));
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		ferr_set(err, FERR_IO, "cannot close %s: %s", tmp,
			 strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		ferr_set(err, FERR_IO, "cannot rename %s to %s: %s", tmp, path,
			 strerror(errno));
		goto out;
	}
	if (fsync_parent(path) < 0) {
		ferr_set(err, FERR_IO, "cannot fsync the folder of %s: %s",
			 path, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (rc < 0)
		unlink(tmp);
	return rc;
}

int file_read_all(const char *path, size_t max, char **out, size_t *len,
		  struct ferr *err)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd;
	int rc = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ferr_set(err, errno == ENOENT ? FERR_NOT_FOUND : FERR_IO,
			 "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ferr_set(err, FERR_IO, "%s is not a regular file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		ferr_set(err, FERR_TOO_LARGE, "%s is larger than %zu bytes",
			 path, max);
		goto out;
	}
	buf = malloc(max + 1);
	if (!buf) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	if (fd_read_upto(fd, buf, max + 1, &got) < 0) {
		ferr_set(err, FERR_IO, "cannot read %s: %s", path,
			 strerror(errno));
		goto out;
	}
	if (got > max) {
		ferr_set(err, FERR_TOO_LARGE, "%s is larger than %zu bytes",
			 path, max);
		goto out;
	}
	buf[got] = '\0';
	*out = buf;
	*len = got;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

int mkdir_p(const char *dir, unsigned mode, struct ferr *err)
{
	char buf[FERRY_PATH_MAX];

	if (fmt_checked(buf, sizeof(buf), err, "folder path", "%s", dir) < 0)
		return -1;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return ferr_set(err, FERR_IO, "cannot create %s: %s",
					buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return ferr_set(err, FERR_IO, "cannot create %s: %s", buf,
				strerror(errno));
	return 0;
}

int rmtree(const char *dir, struct ferr *err)
{
	char path[FERRY_PATH_MAX];
	struct dirent *de;
	DIR *d;
	int rc = 0;

	d = opendir(dir);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		return ferr_set(err, FERR_IO, "cannot open %s: %s", dir,
				strerror(errno));
	}
	while ((de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fmt_checked(path, sizeof(path), err, "path", "%s/%s", dir,
				de->d_name) < 0) {
			rc = -1;
			break;
		}
		if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
			if (rmtree(path, err) < 0) {
				rc = -1;
				break;
			}
		} else if (unlink(path) < 0 && errno != ENOENT) {
			rc = ferr_set(err, FERR_IO, "cannot remove %s: %s",
				      path, strerror(errno));
			break;
		}
	}
	closedir(d);
	if (rc == 0 && rmdir(dir) < 0 && errno != ENOENT)
		rc = ferr_set(err, FERR_IO, "cannot remove %s: %s", dir,
			      strerror(errno));
	return rc;
}

int fd_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	return 0;
}
