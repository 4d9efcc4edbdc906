/* audit.c - the writer of the audit log: the host key, recovery of the
 * log's tail, and signed appends made durable one record at a time. */
#define _GNU_SOURCE
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#define AUDIT_DIR_MODE 0700
#define AUDIT_LOG_MODE 0640
#define AUDIT_KEY_MODE 0600
#define AUDIT_PUB_MODE 0644
#define AUDIT_TORN_MODE 0640
#define AUDIT_KEY_GROUP_OTHER 0077   /* key mode bits that must be clear */
#define AUDIT_TAIL_CHUNK 4096        /* bytes read per step backwards */
#define AUDIT_TORN_NAMES_MAX 100     /* audit.torn.<off>, .1 ... .99 */
#define AUDIT_REAL_FMT_MAX 32        /* "%.17g" of a double */
#define AUDIT_NO_VALUE "-"
#define AUDIT_TOO_DEEP "(nested too deep)"
#define AUDIT_INVALID_BYTE '?'

/* Worst case of one record: every string byte escaped as "\u00XX" (6
 * bytes), the detail at its bound, and the keys, punctuation, seq, ts, prev
 * and sig (about 300 bytes) within the overhead. */
#define AUDIT_JSON_ESCAPE_MAX 6
#define AUDIT_RECORD_OVERHEAD 512
_Static_assert(AUDIT_JSON_ESCAPE_MAX *
			       (FERRY_NAME_MAX + AUDIT_ACTOR_MAX +
				AUDIT_ACTION_MAX + AUDIT_TARGET_MAX +
				AUDIT_OUTCOME_MAX) +
		       AUDIT_DETAIL_MAX + AUDIT_RECORD_OVERHEAD <=
	       AUDIT_LINE_MAX,
	       "a record must fit in AUDIT_LINE_MAX");
/* The marker of a detail that is too large: its prefix escapes to at most
 * twice its size (it is JSON text: only '"' and '\\' get escaped). */
_Static_assert(2 * AUDIT_DETAIL_PREFIX_MAX + 128 <= AUDIT_DETAIL_MAX,
	       "the truncated-detail marker must fit AUDIT_DETAIL_MAX");

struct audit {
	pthread_mutex_t mu;
	int fd;                              /* audit.log, O_APPEND, flock'ed */
	EVP_PKEY *key;                       /* the host's Ed25519 key */
	char dir[FERRY_PATH_MAX];
	char path[FERRY_PATH_MAX];           /* <dir>/audit.log */
	char host[FERRY_NAME_MAX + 1];
	uint64_t seq;                        /* seq of the last record */
	char prev[AUDIT_HASH_HEX_LEN + 1];   /* hash of the last line */
	uint64_t size;                       /* bytes of complete records */
	bool broken;                         /* a write failed: refuse more */
	char line[AUDIT_LINE_MAX + 1];       /* the record being built */
};

/* What audit_open found at the end of the log. */
struct audit_tail {
	bool torn;                           /* a partial line was moved */
	uint64_t torn_offset;
	uint64_t torn_bytes;
	char torn_name[FERRY_PATH_MAX];      /* base name it was saved as */
	bool suspect;                        /* the last line is not good */
	uint64_t suspect_offset;
	char reason[FERRY_ERR_MSG_MAX];
};

/* ---- file helpers ---------------------------------------------------------- */


/* Read exactly len bytes at off; a short file is EIO. */
static int pread_all(int fd, void *buf, size_t len, uint64_t off)
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
static int fsync_dir(const char *dir, struct ferr *err)
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

/* ---- the host key ---------------------------------------------------------- */

/* Load the private key at path. 0, 1 when it does not exist, or -1. */
static int key_load(const char *path, EVP_PKEY **out, struct ferr *err)
{
	char buf[AUDIT_KEY_FILE_MAX];
	struct stat st;
	size_t len = 0;
	int fd, rc = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return 1;
		return ferr_set(err, FERR_IO, "cannot open %s: %s", path,
				strerror(errno));
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ferr_set(err, FERR_INVALID, "%s is not a regular file", path);
		goto out;
	}
	if ((st.st_mode & AUDIT_KEY_GROUP_OTHER) || st.st_uid != geteuid()) {
		ferr_set(err, FERR_INVALID,
			 "%s must be owned by this user and not accessible by "
			 "others (it has mode %04o); chmod 600 it", path,
			 (unsigned)(st.st_mode & 07777));
		goto out;
	}
	if (fd_read_upto(fd, buf, sizeof(buf), &len) < 0) {
		ferr_set(err, FERR_IO, "cannot read %s: %s", path,
			 strerror(errno));
		goto out;
	}
	if (len == sizeof(buf)) {
		ferr_set(err, FERR_TOO_LARGE, "%s is larger than %d bytes",
			 path, AUDIT_KEY_FILE_MAX - 1);
		goto out;
	}
	*out = audit_pem_key(buf, len, true, path, err);
	rc = *out ? 0 : -1;
out:
	secret_wipe(buf, sizeof(buf));
	close(fd);
	return rc;
}

/* Create a new key at path (O_EXCL, 0600). 0, 1 when path appeared
 * meanwhile (load it instead), or -1. */
static int key_create(const char *path, EVP_PKEY **out, struct ferr *err)
{
	char ebuf[128];
	EVP_PKEY *key = NULL;
	BIO *bio = NULL;
	char *pem = NULL;
	long plen = 0;
	int fd = -1, rc = -1;

	ERR_clear_error();
	key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	bio = BIO_new(BIO_s_mem());
	if (!key || !bio ||
	    !PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) ||
	    (plen = BIO_get_mem_data(bio, &pem)) <= 0) {
		ferr_set(err, FERR_INTERNAL, "cannot create the audit key: %s",
			 audit_ssl_error(ebuf, sizeof(ebuf)));
		goto out;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  AUDIT_KEY_MODE);
	if (fd < 0) {
		if (errno == EEXIST)
			rc = 1;
		else
			ferr_set(err, FERR_IO, "cannot create %s: %s", path,
				 strerror(errno));
		goto out;
	}
	if (fchmod(fd, AUDIT_KEY_MODE) < 0 ||
	    fd_write_all(fd, pem, (size_t)plen) < 0 || fsync(fd) < 0) {
		ferr_set(err, FERR_IO, "cannot write %s: %s", path,
			 strerror(errno));
		unlink(path);
		goto out;
	}
	*out = key;
	key = NULL;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (pem && plen > 0)
		secret_wipe(pem, (size_t)plen);
	BIO_free(bio);
	EVP_PKEY_free(key);
	return rc;
}

/* Write <dir>/audit.pub for key unless it already holds that PEM. */
static int pub_sync(const char *dir, EVP_PKEY *key, struct ferr *err)
{
	char path[FERRY_PATH_MAX], ebuf[128];
	char *pem = NULL, *old = NULL;
	size_t olen = 0;
	long plen = 0;
	BIO *bio;
	int rc = -1;

	if (fmt_checked(path, sizeof(path), err, "audit folder path",
			"%s/" AUDIT_PUB_NAME, dir) < 0)
		return -1;
	bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_PUBKEY(bio, key) ||
	    (plen = BIO_get_mem_data(bio, &pem)) <= 0) {
		ferr_set(err, FERR_INTERNAL, "cannot encode the audit key: %s",
			 audit_ssl_error(ebuf, sizeof(ebuf)));
		goto out;
	}
	if (file_read_all(path, AUDIT_KEY_FILE_MAX, &old, &olen, NULL) == 0 &&
	    olen == (size_t)plen && !memcmp(old, pem, olen)) {
		rc = 0;
		goto out;
	}
	rc = file_write_atomic(path, pem, (size_t)plen, AUDIT_PUB_MODE, err);
out:
	free(old);
	BIO_free(bio);
	return rc;
}

/* Load <dir>/audit.key or create it, and keep audit.pub in step. */
static int key_open(const char *dir, EVP_PKEY **key, struct ferr *err)
{
	char path[FERRY_PATH_MAX];
	int rc = 1;

	if (fmt_checked(path, sizeof(path), err, "audit folder path",
			"%s/" AUDIT_KEY_NAME, dir) < 0)
		return -1;
	/* Twice at most: a key created by someone else between our load and
	 * our O_EXCL create is loaded on the second round. */
	for (int round = 0; round < 2 && rc == 1; round++) {
		rc = key_load(path, key, err);
		if (rc != 1)
			break;
		rc = key_create(path, key, err);
		if (rc == 0 && fsync_dir(dir, err) < 0)
			rc = -1;
	}
	if (rc == 1)
		rc = ferr_set(err, FERR_IO, "cannot load or create %s", path);
	if (rc == 0 && pub_sync(dir, *key, err) < 0)
		rc = -1;
	if (rc < 0) {
		EVP_PKEY_free(*key);
		*key = NULL;
	}
	return rc;
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

		if (pread_all(fd, buf, n, off) < 0)
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

		if (pread_all(fd, buf, n, start) < 0) {
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

		if (pread_all(from, buf, n, start) < 0 ||
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

		if (pread_all(fd, a, n, start + off) < 0 ||
		    pread_all(other, b, n, off) < 0 || memcmp(a, b, n) != 0)
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
		return fsync_dir(a->dir, err);
	}
	return ferr_set(err, FERR_IO,
			"more than %d torn tails were saved at offset %llu",
			AUDIT_TORN_NAMES_MAX,
			(unsigned long long)t->torn_offset);
}

/* A log that does not end in '\n' has a torn tail: save it, cut it off
 * and make that durable. Sets a->size to the size that remains. */
static int tail_recover(struct audit *a, struct audit_tail *t,
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
	if (pread_all(a->fd, &last, 1, a->size - 1) < 0)
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
static int guess_seq(struct audit *a, uint64_t start, struct ferr *err)
{
	uint64_t lines_after = 0;

	while (start > 0) {
		uint64_t end = start - 1; /* the '\n' of the line before */
		json_t *rec = NULL;

		if (line_start(a->fd, end, &start, err) < 0)
			return -1;
		lines_after++;
		if (end - start <= AUDIT_LINE_MAX &&
		    pread_all(a->fd, a->line, (size_t)(end - start), start) ==
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
static int head_load(struct audit *a, struct audit_tail *t, struct ferr *err)
{
	enum audit_fault fault = AUDIT_FAULT_NONE;
	struct ferr lerr = { 0 };
	uint64_t start, len;
	json_t *rec = NULL;
	int rc = -1;

	a->seq = 0;
	memset(a->prev, '0', AUDIT_HASH_HEX_LEN);
	a->prev[AUDIT_HASH_HEX_LEN] = '\0';
	if (a->size == 0)
		return 0;
	/* the log ends in '\n' here: the last line is [start, size - 1) */
	if (line_start(a->fd, a->size - 1, &start, err) < 0 ||
	    hash_range(a->fd, start, a->size - 1, a->prev, err) < 0)
		return -1;
	len = a->size - 1 - start;
	if (len > AUDIT_LINE_MAX) {
		ferr_set(&lerr, FERR_TOO_LARGE, "line is longer than %d bytes",
			 AUDIT_LINE_MAX);
	} else if (pread_all(a->fd, a->line, (size_t)len, start) < 0) {
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
	else if (guess_seq(a, start, err) < 0)
		goto out;
	rc = 0;
out:
	json_decref(rec);
	return rc;
}

/* ---- building records ---------------------------------------------------- */

/* A record string: "-" for NULL or "", at most max bytes cut at a
 * character boundary, non-ASCII bytes as '?' when not valid UTF-8. */
static json_t *field_string(const char *s, size_t max)
{
	char copy[AUDIT_ACTOR_MAX > AUDIT_TARGET_MAX ? AUDIT_ACTOR_MAX
						       : AUDIT_TARGET_MAX];
	size_t n0, n;
	json_t *j = NULL;

	if (!s || !*s)
		return json_string(AUDIT_NO_VALUE);
	if (max > sizeof(copy))
		max = sizeof(copy);
	n0 = strnlen(s, max + 1);
	if (n0 > max)
		n0 = max;
	/* s[n] is the first byte left out: never cut inside a character */
	for (n = n0; n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80; n--)
		;
	if (n > 0)
		j = json_stringn(s, n);
	if (j)
		return j;
	for (size_t i = 0; i < n0; i++)
		copy[i] = (unsigned char)s[i] < 0x80 ? s[i]
						     : AUDIT_INVALID_BYTE;
	return json_stringn(copy, n0);
}

static json_t *detail_fix(json_t *v, unsigned depth);

/* A copy of a container under detail_fix's rules; NULL when out of
 * memory. */
static json_t *detail_fix_container(json_t *v, unsigned depth)
{
	json_t *out = json_is_object(v) ? json_object() : json_array();
	const char *key;
	size_t klen, i;
	json_t *child;
	bool ok = false;

	if (!out)
		return NULL;
	if (json_is_array(v)) {
		json_array_foreach(v, i, child) {
			if (json_array_append_new(out, detail_fix(child,
								  depth + 1)) <
			    0)
				goto out;
		}
	} else {
		json_object_keylen_foreach(v, key, klen, child) {
			if (strlen(key) != klen)
				continue; /* a key with a NUL byte */
			if (json_object_set_new(out, key,
						detail_fix(child, depth + 1)) <
			    0)
				goto out;
		}
	}
	ok = true;
out:
	if (!ok) {
		json_decref(out);
		out = NULL;
	}
	return out;
}

/* A copy of v that audit_detail_check accepts (but for its size): reals
 * as strings, NUL bytes as '?', keys with NUL dropped, containers deeper
 * than AUDIT_DETAIL_DEPTH_MAX replaced. NULL when out of memory. */
static json_t *detail_fix(json_t *v, unsigned depth)
{
	char num[AUDIT_REAL_FMT_MAX];

	switch (json_typeof(v)) {
	case JSON_OBJECT:
	case JSON_ARRAY:
		if (depth > AUDIT_DETAIL_DEPTH_MAX)
			return json_string(AUDIT_TOO_DEEP);
		return detail_fix_container(v, depth);
	case JSON_REAL:
		snprintf(num, sizeof(num), "%.17g", json_real_value(v));
		return json_string(num);
	case JSON_STRING: {
		size_t len = json_string_length(v);
		char *copy;
		json_t *s;

		if (strlen(json_string_value(v)) == len)
			return json_incref(v);
		copy = malloc(len ? len : 1);
		if (!copy)
			return NULL;
		memcpy(copy, json_string_value(v), len);
		for (size_t i = 0; i < len; i++)
			if (copy[i] == '\0')
				copy[i] = AUDIT_INVALID_BYTE;
		s = json_stringn(copy, len);
		free(copy);
		return s;
	}
	default:
		return json_incref(v);
	}
}

/* The marker of a detail of `size` serialized bytes that is too large:
 * {"truncated": true, "bytes": size, "prefix": its first bytes}. */
static json_t *detail_truncated(const json_t *d, size_t size)
{
	char *text = json_dumps(d, AUDIT_JSON_FLAGS);
	size_t n = text ? strlen(text) : 0;
	json_t *out;

	if (n > AUDIT_DETAIL_PREFIX_MAX)
		n = AUDIT_DETAIL_PREFIX_MAX;
	/* text[n] is the first byte left out: never cut inside a character */
	while (n > 0 && ((unsigned char)text[n] & 0xc0) == 0x80)
		n--;
	out = json_pack("{sbsIss%}", "truncated", 1, "bytes", (json_int_t)size,
			"prefix", text ? text : "", n);
	free(text);
	return out;
}

/* Make the caller's detail (stolen; may be NULL) fit the parser's rules.
 * *out is the detail to record (NULL for none). -1 when out of memory. */
static int detail_prepare(json_t *detail, json_t **out)
{
	json_t *d = detail, *fixed;
	size_t n;

	*out = NULL;
	if (!d)
		return 0;
	if (!json_is_object(d)) {
		fixed = json_object();
		if (!fixed || json_object_set_new(fixed, "value", d) < 0) {
			json_decref(fixed);
			return -1;
		}
		d = fixed;
	}
	if (audit_detail_check(d, NULL) < 0) {
		fixed = detail_fix(d, 1);
		json_decref(d);
		d = fixed;
		if (!d)
			return -1;
		n = json_dumpb(d, NULL, 0, AUDIT_JSON_FLAGS);
		if (n == 0 || n > AUDIT_DETAIL_MAX) {
			fixed = detail_truncated(d, n);
			json_decref(d);
			d = fixed;
			if (!d)
				return -1;
		}
		if (audit_detail_check(d, NULL) < 0) { /* cannot happen */
			json_decref(d);
			d = json_pack("{sb}", "invalid", 1);
			if (!d)
				return -1;
		}
	}
	*out = d;
	return 0;
}

/* Sign len bytes with the host key into sig_b64 (88 chars + NUL). */
static int sign_b64(EVP_PKEY *key, const char *data, size_t len,
		    char sig_b64[AUDIT_SIG_B64_LEN + 1], struct ferr *err)
{
	unsigned char sig[AUDIT_SIG_LEN];
	char ebuf[128];
	size_t siglen = sizeof(sig);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int rc = -1;

	if (!ctx || EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) != 1 ||
	    EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)data,
			   len) != 1 ||
	    siglen != AUDIT_SIG_LEN) {
		ferr_set(err, FERR_INTERNAL, "cannot sign the audit record: %s",
			 audit_ssl_error(ebuf, sizeof(ebuf)));
		goto out;
	}
	if (EVP_EncodeBlock((unsigned char *)sig_b64, sig, AUDIT_SIG_LEN) !=
	    AUDIT_SIG_B64_LEN) {
		ferr_set(err, FERR_INTERNAL, "cannot encode the signature");
		goto out;
	}
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* Build, sign, append and fdatasync the next record. detail is stolen.
 * The caller holds a->mu (or owns a alone). */
static int append_record(struct audit *a, const char *actor,
			 const char *action, const char *target,
			 const char *outcome, json_t *detail, struct ferr *err)
{
	char sig_b64[AUDIT_SIG_B64_LEN + 1], hash[AUDIT_HASH_HEX_LEN + 1];
	struct ferr perr = { 0 };
	json_t *rec = NULL;
	ssize_t w;
	size_t n;
	int rc = -1;

	if (a->broken) {
		ferr_set(err, FERR_IO, "an earlier write to %s failed; the "
			 "audit log must be reopened", a->path);
		goto out;
	}
	if (a->seq >= AUDIT_SEQ_MAX) {
		ferr_set(err, FERR_IO, "%s has reached the last seq", a->path);
		goto out;
	}
	if (detail_prepare(detail, &detail) < 0 || !(rec = json_object()) ||
	    json_object_set_new(rec, "seq",
				json_integer((json_int_t)(a->seq + 1))) < 0 ||
	    json_object_set_new(rec, "ts", json_integer((json_int_t)
							 wall_ms())) < 0 ||
	    json_object_set_new(rec, "host", json_string(a->host)) < 0 ||
	    json_object_set_new(rec, "actor",
				field_string(actor, AUDIT_ACTOR_MAX)) < 0 ||
	    json_object_set_new(rec, "action",
				field_string(action, AUDIT_ACTION_MAX)) < 0 ||
	    json_object_set_new(rec, "target",
				field_string(target, AUDIT_TARGET_MAX)) < 0 ||
	    json_object_set_new(rec, "outcome",
				field_string(outcome, AUDIT_OUTCOME_MAX)) < 0 ||
	    json_object_set_new(rec, "prev", json_string(a->prev)) < 0) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	if (detail) {
		int set = json_object_set_new(rec, "detail", detail);

		detail = NULL; /* owned by rec, or freed by the failed set */
		if (set < 0) {
			ferr_set(err, FERR_INTERNAL, "out of memory");
			goto out;
		}
	}
	/* the signed bytes: the record without "sig" */
	n = json_dumpb(rec, a->line, AUDIT_LINE_MAX, AUDIT_JSON_FLAGS);
	if (n == 0 || n > AUDIT_LINE_MAX) {
		ferr_set(err, FERR_INTERNAL, "cannot serialize the record");
		goto out;
	}
	if (sign_b64(a->key, a->line, n, sig_b64, err) < 0)
		goto out;
	if (json_object_set_new(rec, "sig", json_string(sig_b64)) < 0) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	n = json_dumpb(rec, a->line, AUDIT_LINE_MAX, AUDIT_JSON_FLAGS);
	if (n == 0 || n > AUDIT_LINE_MAX) {
		ferr_set(err, FERR_INTERNAL, "cannot serialize the record");
		goto out;
	}
	/* never write a record that the readers would refuse */
	if (audit_parse_record(a->line, n, NULL, &perr) < 0) {
		ferr_set(err, FERR_INTERNAL, "built a bad audit record: %s",
			 perr.msg);
		goto out;
	}
	if (audit_hash_hex(a->line, n, hash) < 0) {
		ferr_set(err, FERR_INTERNAL, "cannot hash the record");
		goto out;
	}
	a->line[n] = '\n';
	do {
		w = write(a->fd, a->line, n + 1);
	} while (w < 0 && errno == EINTR);
	if (w != (ssize_t)(n + 1)) {
		int e = w < 0 ? errno : ENOSPC;

		/* take a partial line back, or refuse everything after it */
		if (ftruncate(a->fd, (off_t)a->size) < 0)
			a->broken = true;
		ferr_set(err, FERR_IO, "cannot append to %s: %s", a->path,
			 strerror(e));
		goto out;
	}
	if (fdatasync(a->fd) < 0) {
		/* the page cache may have dropped the record: start over */
		a->broken = true;
		ferr_set(err, FERR_IO, "cannot sync %s: %s", a->path,
			 strerror(errno));
		goto out;
	}
	a->seq++;
	memcpy(a->prev, hash, sizeof(a->prev));
	a->size += n + 1;
	rc = 0;
out:
	json_decref(detail);
	json_decref(rec);
	return rc;
}

/* ---- the API ------------------------------------------------------------- */

/* Open (creating) the log file, lock it, and recover its tail. */
static int log_open(struct audit *a, struct audit_tail *t, struct ferr *err)
{
	struct stat st;

	a->fd = open(a->path,
		     O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
		     AUDIT_LOG_MODE);
	if (a->fd < 0)
		return ferr_set(err, FERR_IO, "cannot open %s: %s", a->path,
				strerror(errno));
	if (fstat(a->fd, &st) < 0 || !S_ISREG(st.st_mode))
		return ferr_set(err, FERR_INVALID, "%s is not a regular file",
				a->path);
	if (flock(a->fd, LOCK_EX | LOCK_NB) < 0)
		return ferr_set(err, errno == EWOULDBLOCK ? FERR_CONFLICT
							  : FERR_IO,
				"cannot lock %s: %s", a->path,
				errno == EWOULDBLOCK
					? "it is open in another audit writer"
					: strerror(errno));
	if (fsync_dir(a->dir, err) < 0 || tail_recover(a, t, err) < 0 ||
	    head_load(a, t, err) < 0)
		return -1;
	return 0;
}

/* Use the caller's key (sealed storage) instead of <dir>/audit.key. */
static int key_given(const char *dir, EVP_PKEY *given, EVP_PKEY **key,
		     struct ferr *err)
{
	if (EVP_PKEY_get_base_id(given) != EVP_PKEY_ED25519)
		return ferr_set(err, FERR_INVALID,
				"the audit key given is not Ed25519");
	if (EVP_PKEY_up_ref(given) != 1)
		return ferr_set(err, FERR_INTERNAL, "cannot use the audit key");
	*key = given;
	if (pub_sync(dir, *key, err) < 0) {
		EVP_PKEY_free(*key);
		*key = NULL;
		return -1;
	}
	return 0;
}

int audit_open(const char *dir, const char *host, struct audit **out,
	       struct ferr *err)
{
	return audit_open_key(dir, host, NULL, out, err);
}

int audit_open_key(const char *dir, const char *host, EVP_PKEY *key,
		   struct audit **out, struct ferr *err)
{
	struct audit_tail *t = NULL;
	struct audit *a = NULL;
	bool mutex = false;
	int rc = -1;

	if (!out)
		return ferr_set(err, FERR_INVALID, "no place for the audit log");
	*out = NULL;
	if (!dir || !*dir)
		return ferr_set(err, FERR_INVALID, "no audit folder");
	if (!name_is_valid(host))
		return ferr_set(err, FERR_INVALID,
				"the host name of the audit log is not valid");
	a = calloc(1, sizeof(*a));
	t = calloc(1, sizeof(*t));
	if (!a || !t) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	a->fd = -1;
	if (pthread_mutex_init(&a->mu, NULL) != 0) {
		ferr_set(err, FERR_INTERNAL, "cannot create a mutex");
		goto out;
	}
	mutex = true;
	snprintf(a->host, sizeof(a->host), "%s", host);
	if (fmt_checked(a->dir, sizeof(a->dir), err, "audit folder path", "%s",
			dir) < 0 ||
	    fmt_checked(a->path, sizeof(a->path), err, "audit folder path",
			"%s/" AUDIT_LOG_NAME, dir) < 0 ||
	    mkdir_p(a->dir, AUDIT_DIR_MODE, err) < 0 ||
	    (key ? key_given(a->dir, key, &a->key, err)
		 : key_open(a->dir, &a->key, err)) < 0 ||
	    log_open(a, t, err) < 0)
		goto out;
	if (t->torn &&
	    append_record(a, AUDIT_NO_VALUE, AUDIT_ACTION_TORN, AUDIT_LOG_NAME,
			  "recovered",
			  json_pack("{sIsIss}", "offset",
				    (json_int_t)t->torn_offset, "bytes",
				    (json_int_t)t->torn_bytes, "saved_as",
				    t->torn_name),
			  err) < 0)
		goto out;
	if (t->suspect &&
	    append_record(a, AUDIT_NO_VALUE, AUDIT_ACTION_TAMPER,
			  AUDIT_LOG_NAME, "suspected",
			  json_pack("{sIss}", "offset",
				    (json_int_t)t->suspect_offset, "reason",
				    t->reason),
			  err) < 0)
		goto out;
	*out = a;
	a = NULL;
	rc = 0;
out:
	if (a) {
		if (mutex)
			audit_close(a);
		else
			free(a);
	}
	free(t);
	return rc;
}

int audit_log(struct audit *a, const char *actor, const char *action,
	      const char *target, const char *outcome, json_t *detail,
	      struct ferr *err)
{
	int rc;

	if (!a) {
		json_decref(detail);
		return ferr_set(err, FERR_INVALID, "the audit log is not open");
	}
	pthread_mutex_lock(&a->mu);
	rc = append_record(a, actor, action, target, outcome, detail, err);
	pthread_mutex_unlock(&a->mu);
	return rc;
}

int audit_head(struct audit *a, uint64_t *seq, char hash_hex[65])
{
	if (!a)
		return -1;
	pthread_mutex_lock(&a->mu);
	if (seq)
		*seq = a->seq;
	if (hash_hex)
		memcpy(hash_hex, a->prev, AUDIT_HASH_HEX_LEN + 1);
	pthread_mutex_unlock(&a->mu);
	return 0;
}

const char *audit_path(const struct audit *a)
{
	return a ? a->path : NULL;
}

int audit_snapshot(struct audit *a, char **text, size_t *len,
		   struct ferr *err)
{
	uint64_t size;
	char *buf;

	if (!a)
		return ferr_set(err, FERR_INVALID, "the audit log is not open");
	pthread_mutex_lock(&a->mu);
	size = a->size;
	pthread_mutex_unlock(&a->mu);
	/* bytes below a->size never change once written: read unlocked */
	if (size > AUDIT_READ_MAX)
		return ferr_set(err, FERR_TOO_LARGE,
				"%s is larger than %llu bytes", a->path,
				(unsigned long long)AUDIT_READ_MAX);
	buf = malloc((size_t)size + 1);
	if (!buf)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (pread_all(a->fd, buf, (size_t)size, 0) < 0) {
		free(buf);
		return ferr_set(err, FERR_IO, "cannot read %s: %s", a->path,
				strerror(errno));
	}
	buf[size] = '\0';
	*text = buf;
	*len = (size_t)size;
	return 0;
}

void audit_close(struct audit *a)
{
	if (!a)
		return;
	if (a->fd >= 0)
		close(a->fd); /* releases the flock */
	EVP_PKEY_free(a->key); /* OpenSSL clears the private bytes */
	secret_wipe(a->line, sizeof(a->line));
	pthread_mutex_destroy(&a->mu);
	free(a);
}
