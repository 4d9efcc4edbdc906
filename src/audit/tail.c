/* tail.c - the end of the audit log at open: torn writes, and where the
 * chain continues. */
#define _GNU_SOURCE
#include "audit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

/* ---- file helpers ---------------------------------------------------------- */


/* Read exactly len bytes at off; a short file is EIO. */
int audit_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* fsync a folder, so entries created in it are durable. */
int audit_fsync_dir(const char *dir, struct ferr *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return ferr_set(err, FERR_IO, "cannot open %s: %s", dir,
				strerror(errno));
	rc = fsync(fd);
	close(fd);
	if (rc < 0)
		return ferr_set(err, FERR_IO, "cannot fsync %s: %s", dir,
				strerror(errno));
	return 0;
}

/* ---- the tail of the log ------------------------------------------------- */

/* Find the last '\n' in bytes [0, end) of fd, reading backwards in chunks:
 * *found and its offset in *pos. 0 or -1. */
static int rfind_newline(int fd, uint64_t end, bool *found, uint64_t *pos,
			 struct ferr *err)
{
	char buf[AUDIT_TAIL_CHUNK];

	*found = false;
	while (end > 0) {
		size_t n = end < sizeof(buf) ? (size_t)end : sizeof(buf);
		uint64_t off = end - n;
		const char *nl;

		if (audit_pread_all(fd, buf, n, off) < 0)
			return ferr_set(err, FERR_IO,
					"cannot read the audit log: %s",
					strerror(errno));
		nl = memrchr(buf, '\n', n);
		if (nl) {
			*found = true;
			*pos = off + (uint64_t)(nl - buf);
			return 0;
		}
		end = off;
	}
	return 0;
}

/* Start of the line that ends just before the byte at end (its '\n' or the
 * end of the data). */
static int line_start(int fd, uint64_t end, uint64_t *start, struct ferr *err)
{
	bool found;
	uint64_t pos = 0;

	if (rfind_newline(fd, end, &found, &pos, err) < 0)
		return -1;
	*start = found ? pos + 1 : 0;
	return 0;
}

/* SHA-256 (hex) of bytes [start, end) of fd, streamed. */
static int hash_range(int fd, uint64_t start, uint64_t end,
		      char out[AUDIT_HASH_HEX_LEN + 1], struct ferr *err)
{
	char buf[AUDIT_TAIL_CHUNK], ebuf[128];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int rc = -1;

	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		ferr_set(err, FERR_INTERNAL, "cannot hash: %s",
			 audit_ssl_error(ebuf, sizeof(ebuf)));
		goto out;
	}
	while (start < end) {
		size_t n = end - start < sizeof(buf) ? (size_t)(end - start)
						      : sizeof(buf);

		if (audit_pread_all(fd, buf, n, start) < 0) {
			ferr_set(err, FERR_IO, "cannot read the audit log: %s",
				 strerror(errno));
			goto out;
		}
		if (!EVP_DigestUpdate(ctx, buf, n)) {
			ferr_set(err, FERR_INTERNAL, "cannot hash: %s",
				 audit_ssl_error(ebuf, sizeof(ebuf)));
			goto out;
		}
		start += n;
	}
	if (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != 32) {
		ferr_set(err, FERR_INTERNAL, "cannot hash: %s",
			 audit_ssl_error(ebuf, sizeof(ebuf)));
		goto out;
	}
	audit_digest_hex(md, out);
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* Copy bytes [start, start + len) of from into to. */
static int copy_range(int from, uint64_t start, uint64_t len, int to)
{
	char buf[AUDIT_TAIL_CHUNK];

	while (len > 0) {
		size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);

		if (audit_pread_all(from, buf, n, start) < 0 ||
		    fd_write_all(to, buf, n) < 0)
			return -1;
		start += n;
		len -= n;
	}
	return 0;
}

/* Does the file at path hold exactly bytes [start, start + len) of fd? */
static bool same_bytes(const char *path, int fd, uint64_t start, uint64_t len)
{
	char a[AUDIT_TAIL_CHUNK], b[AUDIT_TAIL_CHUNK];
	struct stat st;
	uint64_t off = 0;
	bool same = false;
	int other = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (other < 0)
		return false;
	if (fstat(other, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != len)
		goto out;
	while (off < len) {
		size_t n = len - off < sizeof(a) ? (size_t)(len - off)
						  : sizeof(a);

		if (audit_pread_all(fd, a, n, start + off) < 0 ||
		    audit_pread_all(other, b, n, off) < 0 || memcmp(a, b, n) != 0)
			goto out;
		off += n;
	}
	same = true;
out:
	close(other);
	return same;
}

/* Save the torn bytes [t->torn_offset, +t->torn_bytes) of the log to a new
 * file audit.torn.<offset>[.N] (reusing one that already holds exactly
 * those bytes, left by a recovery that was interrupted), durably. */
static int torn_save(struct audit *a, struct audit_tail *t, struct ferr *err)
{
	char path[FERRY_PATH_MAX];

	for (int i = 0; i < AUDIT_TORN_NAMES_MAX; i++) {
		int fd;

		if (i == 0)
			snprintf(t->torn_name, sizeof(t->torn_name),
				 AUDIT_TORN_PREFIX "%llu",
				 (unsigned long long)t->torn_offset);
		else
			snprintf(t->torn_name, sizeof(t->torn_name),
				 AUDIT_TORN_PREFIX "%llu.%d",
				 (unsigned long long)t->torn_offset, i);
		if (fmt_checked(path, sizeof(path), err, "audit folder path",
				"%s/%s", a->dir, t->torn_name) < 0)
			return -1;
		fd = open(path,
			  O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
			  AUDIT_TORN_MODE);
		if (fd < 0 && errno == EEXIST) {
			if (same_bytes(path, a->fd, t->torn_offset,
				       t->torn_bytes))
				return 0;
			continue;
		}
		if (fd < 0)
			return ferr_set(err, FERR_IO, "cannot create %s: %s",
					path, strerror(errno));
		if (copy_range(a->fd, t->torn_offset, t->torn_bytes, fd) < 0 ||
		    fsync(fd) < 0) {
			ferr_set(err, FERR_IO, "cannot save the torn tail to "
				 "%s: %s", path, strerror(errno));
			close(fd);
			unlink(path);
			return -1;
		}
		if (close(fd) < 0) {
			ferr_set(err, FERR_IO, "cannot save the torn tail to "
				 "%s: %s", path, strerror(errno));
			unlink(path);
			return -1;
		}
		return audit_fsync_dir(a->dir, err);
	}
	return ferr_set(err, FERR_IO,
			"more than %d torn tails were saved at offset %llu",
			AUDIT_TORN_NAMES_MAX,
			(unsigned long long)t->torn_offset);
}

/* A log that does not end in '\n' has a torn tail: save it, cut it off
 * and make that durable. Sets a->size to the size that remains. */
int audit_tail_recover(struct audit *a, struct audit_tail *t,
			struct ferr *err)
{
	struct stat st;
	char last;
	uint64_t start;

	if (fstat(a->fd, &st) < 0)
		return ferr_set(err, FERR_IO, "cannot stat %s: %s", a->path,
				strerror(errno));
	a->size = (uint64_t)st.st_size;
	if (a->size == 0)
		return 0;
	if (audit_pread_all(a->fd, &last, 1, a->size - 1) < 0)
		return ferr_set(err, FERR_IO, "cannot read %s: %s", a->path,
				strerror(errno));
	if (last == '\n')
		return 0;
	if (line_start(a->fd, a->size, &start, err) < 0)
		return -1;
	t->torn = true;
	t->torn_offset = start;
	t->torn_bytes = a->size - start;
	if (torn_save(a, t, err) < 0)
		return -1;
	if (ftruncate(a->fd, (off_t)start) < 0 || fsync(a->fd) < 0)
		return ferr_set(err, FERR_IO, "cannot cut the torn tail off "
				"%s: %s", a->path, strerror(errno));
	log_warn("audit: moved a torn tail of %llu bytes at offset %llu of "
		 "%s to %s", (unsigned long long)t->torn_bytes,
		 (unsigned long long)start, a->path, t->torn_name);
	a->size = start;
	return 0;
}

/* The seq of the last line (starting at start) that did not parse: from
 * the nearest earlier line that parses, counting the lines in between;
 * from the line count when none does (a log starts at 1). */
static int guess_seq(struct audit *a, int fd, uint64_t start,
		     struct ferr *err)
{
	uint64_t lines_after = 0;

	while (start > 0) {
		uint64_t end = start - 1; /* the '\n' of the line before */
		json_t *rec = NULL;

		if (line_start(fd, end, &start, err) < 0)
			return -1;
		lines_after++;
		if (end - start <= AUDIT_LINE_MAX &&
		    audit_pread_all(fd, a->line, (size_t)(end - start), start) ==
			    0 &&
		    audit_parse_record(a->line, (size_t)(end - start), &rec,
				       NULL) == 0) {
			a->seq = audit_record_seq(rec) + lines_after;
			json_decref(rec);
			return 0;
		}
	}
	a->seq = lines_after + 1;
	return 0;
}

/* Continue seq and prev from the last complete line; note in *t when that
 * line is not a good record of this key. */
int audit_head_load(struct audit *a, int fd, uint64_t size,
		    struct audit_tail *t, struct ferr *err)
{
	enum audit_fault fault = AUDIT_FAULT_NONE;
	struct ferr lerr = { 0 };
	uint64_t start, len;
	json_t *rec = NULL;
	int rc = -1;

	a->seq = 0;
	memset(a->prev, '0', AUDIT_HASH_HEX_LEN);
	a->prev[AUDIT_HASH_HEX_LEN] = '\0';
	if (size == 0)
		return 0;
	/* the log ends in '\n' here: the last line is [start, size - 1) */
	if (line_start(fd, size - 1, &start, err) < 0 ||
	    hash_range(fd, start, size - 1, a->prev, err) < 0)
		return -1;
	len = size - 1 - start;
	if (len > AUDIT_LINE_MAX) {
		ferr_set(&lerr, FERR_TOO_LARGE, "line is longer than %d bytes",
			 AUDIT_LINE_MAX);
	} else if (audit_pread_all(fd, a->line, (size_t)len, start) < 0) {
		return ferr_set(err, FERR_IO, "cannot read %s: %s", a->path,
				strerror(errno));
	} else if (audit_check_line(a->line, (size_t)len, a->key, &rec, &fault,
				    &lerr) == 0) {
		a->seq = audit_record_seq(rec);
		rc = 0;
		goto out;
	} else if (fault == AUDIT_FAULT_INTERNAL) {
		ferr_set(err, lerr.code, "%s", lerr.msg);
		goto out;
	}
	t->suspect = true;
	t->suspect_offset = start;
	snprintf(t->reason, sizeof(t->reason), "%s%s", lerr.msg,
		 fault == AUDIT_FAULT_SIGNATURE ? " (modified, or signed by "
						  "another key)" : "");
	log_warn("audit: the last record of %s (offset %llu) is not good: %s",
		 a->path, (unsigned long long)start, t->reason);
	if (rec)
		a->seq = audit_record_seq(rec); /* parsed: its seq is known */
	else if (guess_seq(a, fd, start, err) < 0)
		goto out;
	rc = 0;
out:
	json_decref(rec);
	return rc;
}
