/* audit.c - the writer of the audit log: signed appends made durable one
 * record at a time, rotation by size, and the writer's API. The host key is
 * key.c, recovery of the log's tail tail.c. */
#define _GNU_SOURCE
#include "audit_int.h"

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
_Static_assert(FERRY_AUDIT_ROTATE_KIB_MIN * 1024ULL == AUDIT_ROTATE_MIN,
	       "ferryd.json's audit_rotate_kib bound is the writer's");
_Static_assert(2 * AUDIT_DETAIL_PREFIX_MAX + 128 <= AUDIT_DETAIL_MAX,
	       "the truncated-detail marker must fit AUDIT_DETAIL_MAX");


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

static int rotate(struct audit *a, struct ferr *err);

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
	if (a->rotate_bytes && a->size >= a->rotate_bytes &&
	    rotate(a, err) < 0)
		goto out;
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
	    json_object_set_new(rec, "prev", json_string(a->prev)) < 0 ||
	    json_object_set_new(rec, "v", json_string(AUDIT_FORMAT_STR)) < 0) {
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

/* ---- rotation -------------------------------------------------------------- */

/* Rename audit.log to audit.log.<last seq>, start a new audit.log and
 * begin it with the "audit.rotated" record that continues the chain. A
 * failure after the rename leaves the handle broken: reopening continues
 * from the rotated file (see log_open). */
static int rotate(struct audit *a, struct ferr *err)
{
	char name[AUDIT_FILE_NAME_MAX], path[FERRY_PATH_MAX];
	int fd;

	snprintf(name, sizeof(name), AUDIT_LOG_NAME ".%llu",
		 (unsigned long long)a->seq);
	if (fmt_checked(path, sizeof(path), err, "audit folder path", "%s/%s",
			a->dir, name) < 0)
		return -1;
	if (renameat2(AT_FDCWD, a->path, AT_FDCWD, path, RENAME_NOREPLACE) < 0)
		return ferr_set(err, FERR_IO, "cannot rotate %s to %s: %s",
				a->path, name, strerror(errno));
	a->broken = true; /* until the new file holds its first record */
	fd = open(a->path,
		  O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
		  AUDIT_LOG_MODE);
	if (fd < 0)
		return ferr_set(err, FERR_IO, "cannot create %s: %s", a->path,
				strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);
		return ferr_set(err, FERR_IO, "cannot lock %s: %s", a->path,
				strerror(errno));
	}
	close(a->fd);
	a->fd = fd;
	a->size = 0;
	if (audit_fsync_dir(a->dir, err) < 0)
		return -1;
	a->broken = false;
	log_info("audit: rotated %s to %s (seq %llu)", a->path, name,
		 (unsigned long long)a->seq);
	return append_record(a, AUDIT_NO_VALUE, AUDIT_ACTION_ROTATED,
			     AUDIT_LOG_NAME, "ok",
			     json_pack("{sssI}", "previous", name, "last_seq",
				       (json_int_t)a->seq),
			     err);
}

/* audit.log is empty: when rotated files exist (a rotation was cut short
 * after its rename), continue the chain from the newest one and note in
 * *t that the new file must begin with its "audit.rotated" record. */
static int continue_rotated(struct audit *a, struct audit_tail *t,
			    struct ferr *err)
{
	struct audit_series s;
	uint64_t size = 0;
	int fd, rc = -1;

	if (audit_series_list(a->dir, &s, err) < 0)
		return -1;
	if (s.n < 2) { /* only audit.log */
		audit_series_free(&s);
		return 0;
	}
	fd = audit_series_open(&s, s.n - 2, &size, err);
	if (fd < 0)
		goto out;
	if (size > 0 && audit_head_load(a, fd, size, t, err) == 0) {
		snprintf(t->rotated_from, sizeof(t->rotated_from), "%s",
			 s.files[s.n - 2].name);
		rc = 0;
	} else if (size == 0) {
		rc = ferr_set(err, FERR_INVALID, "%s/%s is empty", a->dir,
			      s.files[s.n - 2].name);
	}
	close(fd);
out:
	audit_series_free(&s);
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
	if (audit_fsync_dir(a->dir, err) < 0 ||
	    audit_tail_recover(a, t, err) < 0 ||
	    audit_head_load(a, a->fd, a->size, t, err) < 0)
		return -1;
	if (a->size == 0)
		return continue_rotated(a, t, err);
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
	a->rotate_bytes = AUDIT_ROTATE_DEFAULT;
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
	    (key ? audit_key_given(a->dir, key, &a->key, err)
		 : audit_key_open(a->dir, &a->key, err)) < 0 ||
	    log_open(a, t, err) < 0)
		goto out;
	if (t->rotated_from[0] &&
	    append_record(a, AUDIT_NO_VALUE, AUDIT_ACTION_ROTATED,
			  AUDIT_LOG_NAME, "ok",
			  json_pack("{sssI}", "previous", t->rotated_from,
				    "last_seq", (json_int_t)a->seq),
			  err) < 0)
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

int audit_set_rotate(struct audit *a, uint64_t bytes, struct ferr *err)
{
	if (!a)
		return ferr_set(err, FERR_INVALID, "the audit log is not open");
	if (bytes && bytes < AUDIT_ROTATE_MIN)
		return ferr_set(err, FERR_INVALID,
				"the audit rotation size must be at least %llu "
				"bytes",
				(unsigned long long)AUDIT_ROTATE_MIN);
	pthread_mutex_lock(&a->mu);
	a->rotate_bytes = bytes;
	pthread_mutex_unlock(&a->mu);
	return 0;
}

int audit_series_snapshot(struct audit *a, struct audit_series *s,
			  uint64_t *head_seq, char head_hash[65],
			  struct ferr *err)
{
	int rc = -1;

	if (!a)
		return ferr_set(err, FERR_INVALID, "the audit log is not open");
	/* under the lock: no rotation or append between the listing, the
	 * live file and the head */
	pthread_mutex_lock(&a->mu);
	if (audit_series_list(a->dir, s, err) < 0)
		goto out;
	if (!s->n || s->files[s->n - 1].last_seq != 0) {
		audit_series_free(s);
		ferr_set(err, FERR_IO, "%s is missing", a->path);
		goto out;
	}
	s->live_fd = fcntl(a->fd, F_DUPFD_CLOEXEC, 0);
	if (s->live_fd < 0) {
		ferr_set(err, FERR_IO, "cannot read %s: %s", a->path,
			 strerror(errno));
		audit_series_free(s);
		goto out;
	}
	s->live_size = a->size;
	*head_seq = a->seq;
	memcpy(head_hash, a->prev, AUDIT_HASH_HEX_LEN + 1);
	rc = 0;
out:
	pthread_mutex_unlock(&a->mu);
	return rc;
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

