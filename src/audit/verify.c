/* verify.c - whole-log verification (in memory or across the files of a
 * series) and the classification of the first problem; public keys.
 * Needs no writer state; everything here reads hostile input. */
#define _GNU_SOURCE
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

static const char zero_hash[AUDIT_HASH_HEX_LEN + 1] =
	"0000000000000000000000000000000000000000000000000000000000000000";

/* ---- whole logs ---------------------------------------------------------- */

/* A position in a log held in memory. */
struct cursor {
	const char *text;
	size_t len;
	size_t off;       /* start of the next line */
	uint64_t lineno;  /* 1-based number of the line last returned */
};

/* Next complete line into *line and *llen (no newline): 1; none left:
 * 0; a final line without a newline: 2 (also returned in *line and *llen). */
static int cursor_next(struct cursor *c, const char **line, size_t *llen)
{
	const char *nl;

	if (c->off >= c->len)
		return 0;
	c->lineno++;
	*line = c->text + c->off;
	nl = memchr(*line, '\n', c->len - c->off);
	if (!nl) {
		*llen = c->len - c->off;
		c->off = c->len;
		return 2;
	}
	*llen = (size_t)(nl - *line);
	c->off += *llen + 1;
	return 1;
}

/* The seq of a structurally valid line, or 0. */
static uint64_t line_seq(const char *line, size_t len)
{
	json_t *rec = NULL;
	uint64_t seq = 0;

	if (audit_parse_record(line, len, &rec, NULL) == 0)
		seq = audit_record_seq(rec);
	json_decref(rec);
	return seq;
}

/* Fill the failure part of *rep; always returns -1. */
static int report_bad(struct audit_report *rep, enum audit_tamper kind,
		      uint64_t lineno, uint64_t seq, uint64_t expected,
		      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int report_bad(struct audit_report *rep, enum audit_tamper kind,
		      uint64_t lineno, uint64_t seq, uint64_t expected,
		      const char *fmt, ...)
{
	char where[AUDIT_FILE_NAME_MAX + 64];
	char what[AUDIT_REPORT_MSG_MAX];
	va_list ap;

	rep->ok = false;
	rep->kind = kind;
	rep->first_bad_line = lineno;
	rep->first_bad_seq = seq;
	rep->expected_seq = expected;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (lineno == 0) {
		snprintf(rep->message, sizeof(rep->message), "%s", what);
		return -1;
	}
	if (seq)
		snprintf(where, sizeof(where), "%s%sline %llu (seq %llu)",
			 rep->file, rep->file[0] ? " " : "",
			 (unsigned long long)lineno, (unsigned long long)seq);
	else
		snprintf(where, sizeof(where), "%s%sline %llu", rep->file,
			 rep->file[0] ? " " : "", (unsigned long long)lineno);
	snprintf(rep->message, sizeof(rep->message), "%s: %s", where, what);
	return -1;
}

/* State of a verification between lines (and files). */
struct verify {
	const char *text;   /* the file being read */
	size_t len;
	EVP_PKEY *pub;
	struct audit_report *rep;
	uint64_t expected;  /* seq due next; 0 before the first record */
	uint64_t file_first_seq; /* seq of the file's first record, or 0 */
	bool multi;         /* a series of several files: name them */
};

/* A line with a bad signature: modified, unless the next line chains to
 * the line before it, which makes it a forged insertion. */
static int classify_bad_sig(struct verify *v, const struct cursor *at,
			    uint64_t seq)
{
	struct cursor c = *at;
	const char *line;
	size_t llen;
	json_t *next = NULL;
	enum audit_fault fault;
	uint64_t want = v->expected ? v->expected : 1;
	bool chains = false;

	if (cursor_next(&c, &line, &llen) == 1 &&
	    audit_check_line(line, llen, v->pub, &next, &fault, NULL) == 0) {
		chains = audit_record_seq(next) == want &&
			 !strcmp(json_string_value(json_object_get(next,
								   "prev")),
				 v->rep->head_hash);
	}
	json_decref(next);
	if (chains)
		return report_bad(v->rep, AUDIT_TAMPER_INSERTED, at->lineno,
				  seq, v->expected,
				  "signature does not match, and line %llu "
				  "chains to the line before: a forged record "
				  "was inserted",
				  (unsigned long long)c.lineno);
	return report_bad(v->rep, AUDIT_TAMPER_MODIFIED, at->lineno, seq,
			  v->expected,
			  "signature does not match: the record was modified");
}

/* A line that does not pass audit_check_line. */
static int classify_fault(struct verify *v, const struct cursor *at,
			  const json_t *rec, enum audit_fault fault,
			  const struct ferr *err)
{
	uint64_t seq = rec ? audit_record_seq(rec) : 0;

	switch (fault) {
	case AUDIT_FAULT_SIGNATURE:
		return classify_bad_sig(v, at, seq);
	case AUDIT_FAULT_NONCANONICAL:
		return report_bad(v->rep, AUDIT_TAMPER_MODIFIED, at->lineno,
				  seq, v->expected,
				  "%s: the record was modified", err->msg);
	case AUDIT_FAULT_MALFORMED:
		return report_bad(v->rep, AUDIT_TAMPER_MALFORMED, at->lineno,
				  0, v->expected,
				  "%s: the line is not a valid record",
				  err->msg);
	default:
		return report_bad(v->rep, AUDIT_TAMPER_ERROR, at->lineno, seq,
				  v->expected, "cannot verify: %s", err->msg);
	}
}

/* A seq later than due: deleted records, a reordering, or a copy of a
 * later record inserted early. Looks at the rest of the log to tell. */
static int classify_jump(struct verify *v, const struct cursor *at,
			 uint64_t seq, bool prev_ok)
{
	struct cursor c = *at;
	const char *line;
	size_t llen;
	uint64_t dup = 0, later = 0;

	while (cursor_next(&c, &line, &llen) == 1) {
		uint64_t s = line_seq(line, llen);

		if (s == seq) {
			dup = c.lineno;
			break;
		}
		if (!later && s >= v->expected && s < seq)
			later = c.lineno;
	}
	if (dup)
		return report_bad(v->rep, AUDIT_TAMPER_INSERTED, at->lineno,
				  seq, v->expected,
				  "seq %llu appears again at line %llu: a copy "
				  "of a record was inserted here",
				  (unsigned long long)seq,
				  (unsigned long long)dup);
	if (later)
		return report_bad(v->rep, AUDIT_TAMPER_REORDERED, at->lineno,
				  seq, v->expected,
				  "expected seq %llu, which comes later (line "
				  "%llu): records were reordered",
				  (unsigned long long)v->expected,
				  (unsigned long long)later);
	if (prev_ok)
		return report_bad(v->rep, AUDIT_TAMPER_MALFORMED, at->lineno,
				  seq, v->expected,
				  "expected seq %llu, yet prev matches the line "
				  "before: the writer skipped seqs",
				  (unsigned long long)v->expected);
	if (seq - v->expected == 1)
		return report_bad(v->rep, AUDIT_TAMPER_DELETED, at->lineno,
				  seq, v->expected,
				  "expected seq %llu and prev does not match "
				  "the line before: 1 record (seq %llu) was "
				  "deleted before this line",
				  (unsigned long long)v->expected,
				  (unsigned long long)v->expected);
	return report_bad(v->rep, AUDIT_TAMPER_DELETED, at->lineno, seq,
			  v->expected,
			  "expected seq %llu and prev does not match the line "
			  "before: %llu records (seq %llu..%llu) were deleted "
			  "before this line",
			  (unsigned long long)v->expected,
			  (unsigned long long)(seq - v->expected),
			  (unsigned long long)v->expected,
			  (unsigned long long)(seq - 1));
}

/* A seq earlier than due: a copy of an earlier record, a record from
 * another log of the same key, or records moved before the first one. */
static int classify_back(struct verify *v, const struct cursor *at,
			 uint64_t seq, const char *hash)
{
	struct cursor c = { .text = v->text, .len = v->len };
	char other[AUDIT_HASH_HEX_LEN + 1];
	const char *line;
	size_t llen;
	uint64_t orig;

	if (seq < v->file_first_seq)
		return report_bad(v->rep, AUDIT_TAMPER_INSERTED, at->lineno,
				  seq, v->expected,
				  "seq goes back from %llu to %llu, a record of "
				  "an earlier file: a copy of it was inserted",
				  (unsigned long long)(v->expected - 1),
				  (unsigned long long)seq);
	/* Every earlier line of this file is a good record and they are
	 * contiguous, so seq sits at a known line. */
	orig = seq - v->file_first_seq + 1;
	while (cursor_next(&c, &line, &llen) == 1 && c.lineno < orig)
		;
	if (c.lineno == orig && audit_hash_hex(line, llen, other) == 0 &&
	    !strcmp(other, hash))
		return report_bad(v->rep, AUDIT_TAMPER_INSERTED, at->lineno,
				  seq, v->expected,
				  "a copy of line %llu (seq %llu) was inserted "
				  "here", (unsigned long long)orig,
				  (unsigned long long)seq);
	return report_bad(v->rep, AUDIT_TAMPER_INSERTED, at->lineno, seq,
			  v->expected,
			  "seq %llu already appeared at line %llu with other "
			  "content: a record from another log of the same key "
			  "was inserted",
			  (unsigned long long)seq, (unsigned long long)orig);
}

/* A final line without a newline. */
static int report_torn(struct verify *v, const struct cursor *at,
		       const char *line, size_t llen)
{
	return report_bad(v->rep, AUDIT_TAMPER_TRUNCATED, at->lineno,
			  line_seq(line, llen), v->expected,
			  "the last line has no newline (%zu bytes): the log "
			  "was truncated or a write was torn", llen);
}

/* The first record of a log is not seq 1: its head was deleted. */
static int report_head(struct verify *v, const struct cursor *at,
		       const json_t *rec, uint64_t seq)
{
	const char *action = json_string_value(json_object_get(rec, "action"));
	const char *previous = json_string_value(json_object_get(
		json_object_get(rec, "detail"), "previous"));

	if (!strcmp(action, AUDIT_ACTION_ROTATED))
		return report_bad(v->rep, AUDIT_TAMPER_DELETED, at->lineno, seq,
				  1,
				  "the log begins with an audit.rotated record: "
				  "the file(s) before it, up to %.64s (seq "
				  "%llu), are missing",
				  previous ? previous : "?",
				  (unsigned long long)(seq - 1));
	return report_bad(v->rep, AUDIT_TAMPER_DELETED, at->lineno, seq, 1,
			  "the log begins at seq %llu, not 1: records "
			  "1..%llu were deleted from its start",
			  (unsigned long long)seq,
			  (unsigned long long)(seq - 1));
}

/* Check one good record (its line's hash in hash) against the chain. */
static int check_chain(struct verify *v, const struct cursor *c,
		       const json_t *rec, const char *hash)
{
	struct audit_report *rep = v->rep;
	uint64_t seq = audit_record_seq(rec);
	const char *prev = json_string_value(json_object_get(rec, "prev"));
	const char *action = json_string_value(json_object_get(rec, "action"));

	if (!v->expected && seq != 1)
		return report_head(v, c, rec, seq);
	if (!v->expected && strcmp(prev, zero_hash))
		return report_bad(rep, AUDIT_TAMPER_INSERTED, c->lineno, seq, 1,
				  "seq 1 must have a zero prev: the record "
				  "comes from another log");
	if (v->expected && seq > v->expected)
		return classify_jump(v, c, seq, !strcmp(prev, rep->head_hash));
	if (v->expected && seq < v->expected)
		return classify_back(v, c, seq, hash);
	if (v->expected && strcmp(prev, rep->head_hash))
		return report_bad(rep, AUDIT_TAMPER_INSERTED, c->lineno, seq,
				  v->expected,
				  "prev does not match the line before: a "
				  "record from another log of the same key was "
				  "inserted");
	if (!v->file_first_seq && rep->files > 1 &&
	    strcmp(action, AUDIT_ACTION_ROTATED))
		return report_bad(rep, AUDIT_TAMPER_MALFORMED, c->lineno, seq,
				  v->expected,
				  "a rotated file must begin with an "
				  "audit.rotated record");
	return 0;
}

/* Verify one file of a log (text, len bytes; name for messages, NULL in
 * memory), continuing the chain of the files before it. */
static int verify_text(struct verify *v, const char *text, size_t len,
		       const char *name)
{
	struct cursor c = { .text = text, .len = len };
	struct audit_report *rep = v->rep;
	char hash[AUDIT_HASH_HEX_LEN + 1];
	struct ferr err = { 0 };
	const char *line;
	size_t llen;
	int more;

	v->text = text;
	v->len = len;
	v->file_first_seq = 0;
	snprintf(rep->file, sizeof(rep->file), "%s",
		 name && v->multi ? name : "");
	rep->files++;
	while ((more = cursor_next(&c, &line, &llen)) != 0) {
		enum audit_fault fault;
		json_t *rec = NULL;
		uint64_t seq;
		int rc;

		if (more == 2)
			return report_torn(v, &c, line, llen);
		if (audit_check_line(line, llen, v->pub, &rec, &fault, &err) <
		    0) {
			rc = classify_fault(v, &c, rec, fault, &err);
			json_decref(rec);
			return rc;
		}
		seq = audit_record_seq(rec);
		if (audit_hash_hex(line, llen, hash) < 0)
			rc = report_bad(rep, AUDIT_TAMPER_ERROR, c.lineno, seq,
					v->expected, "cannot hash the line");
		else
			rc = check_chain(v, &c, rec, hash);
		json_decref(rec);
		if (rc < 0)
			return rc;
		if (!v->expected)
			rep->first_seq = seq;
		if (!v->file_first_seq)
			v->file_first_seq = seq;
		rep->records++;
		rep->last_seq = seq;
		memcpy(rep->head_hash, hash, sizeof(rep->head_hash));
		v->expected = seq + 1; /* seq <= AUDIT_SEQ_MAX: no overflow */
	}
	return 0;
}

/* Start a verification: 0, or -1 (reported) when pub is not usable. */
static int verify_begin(struct verify *v, EVP_PKEY *pub,
			struct audit_report *rep)
{
	memset(v, 0, sizeof(*v));
	memset(rep, 0, sizeof(*rep));
	v->pub = pub;
	v->rep = rep;
	memcpy(rep->head_hash, zero_hash, sizeof(rep->head_hash));
	if (!pub || EVP_PKEY_get_base_id(pub) != EVP_PKEY_ED25519)
		return report_bad(rep, AUDIT_TAMPER_ERROR, 0, 0, 0,
				  "cannot verify: the key is not an Ed25519 "
				  "public key");
	return 0;
}

/* The whole log was good. */
static int verify_end(struct verify *v)
{
	v->rep->ok = true;
	v->rep->kind = AUDIT_TAMPER_NONE;
	v->rep->file[0] = '\0';
	return 0;
}

int audit_verify(const char *text, size_t len, EVP_PKEY *pub,
		 struct audit_report *rep)
{
	struct verify v;

	if (!rep)
		return -1;
	if (verify_begin(&v, pub, rep) < 0)
		return -1;
	if (!text && len)
		return report_bad(rep, AUDIT_TAMPER_ERROR, 0, 0, 0,
				  "cannot verify: no text");
	if (verify_text(&v, text ? text : "", len, NULL) < 0)
		return -1;
	return verify_end(&v);
}

int audit_verify_path(const char *path, EVP_PKEY *pub,
		      struct audit_report *rep)
{
	struct audit_series s = { .live_fd = -1 };
	struct ferr err = { 0 };
	struct verify v;
	int rc = -1;

	if (!rep)
		return -1;
	if (verify_begin(&v, pub, rep) < 0)
		return -1;
	if (audit_series_from_path(path, &s, &err) < 0)
		return report_bad(rep, AUDIT_TAMPER_ERROR, 0, 0, 0,
				  "cannot verify: %s", err.msg);
	v.multi = s.n > 1;
	for (size_t i = 0; i < s.n; i++) {
		uint64_t size = 0;
		void *map = NULL;
		int fd = audit_series_open(&s, i, &size, &err);

		if (fd < 0) {
			report_bad(rep, AUDIT_TAMPER_ERROR, 0, 0, 0,
				   "cannot verify: %s", err.msg);
			goto out;
		}
		if (size > SIZE_MAX ||
		    (size && (map = mmap(NULL, (size_t)size, PROT_READ,
					 MAP_PRIVATE, fd, 0)) == MAP_FAILED)) {
			close(fd);
			report_bad(rep, AUDIT_TAMPER_ERROR, 0, 0, 0,
				   "cannot verify: cannot map %s: %s",
				   s.files[i].name, strerror(errno));
			goto out;
		}
		close(fd);
		rc = verify_text(&v, map ? map : "", (size_t)size,
				 s.files[i].name);
		if (map)
			munmap(map, (size_t)size);
		if (rc < 0)
			goto out;
	}
	rc = verify_end(&v);
out:
	audit_series_free(&s);
	return rc;
}

/* ---- files ---------------------------------------------------------------- */

EVP_PKEY *audit_pem_key(const char *pem, size_t len, bool private_key,
			const char *path, struct ferr *err)
{
	char ebuf[128];
	EVP_PKEY *key = NULL;
	BIO *bio = BIO_new_mem_buf(pem, (int)len);

	if (!bio) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	key = private_key ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
			  : PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	if (!key) {
		ferr_set(err, FERR_INVALID, "%s is not a %s key PEM: %s", path,
			 private_key ? "private" : "public",
			 audit_ssl_error(ebuf, sizeof(ebuf)));
		goto out;
	}
	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519) {
		ferr_set(err, FERR_INVALID, "%s is not an Ed25519 key", path);
		EVP_PKEY_free(key);
		key = NULL;
	}
out:
	BIO_free(bio);
	return key;
}

EVP_PKEY *audit_load_pubkey(const char *path, struct ferr *err)
{
	char *pem = NULL;
	size_t len = 0;
	EVP_PKEY *key;

	if (file_read_all(path, AUDIT_KEY_FILE_MAX, &pem, &len, err) < 0)
		return NULL;
	key = audit_pem_key(pem, len, false, path, err);
	free(pem);
	return key;
}

