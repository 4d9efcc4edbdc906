/* verify.c - strict parsing, whole-log verification and queries of audit
 * logs. Needs no writer state; everything here reads hostile input. */
#define _GNU_SOURCE
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#define VERIFY_SHA256_LEN 32
#define VERIFY_SIG_RAW_LEN 66       /* EVP_DecodeBlock output incl. padding */
#define QUERY_READ_CHUNK (64 * 1024)

static const char *const record_fields[] = {
	"action", "actor", "detail", "host", "outcome",
	"prev", "seq", "sig", "target", "ts", NULL,
};

/* The string fields every record carries, with their bounds; indexed by
 * enum record_string. */
enum record_string { RS_HOST, RS_ACTOR, RS_ACTION, RS_TARGET, RS_OUTCOME,
		     RS_PREV, RS_SIG, RS__COUNT };

static const struct {
	const char *name;
	size_t max;
} record_strings[RS__COUNT] = {
	[RS_HOST] = { "host", FERRY_NAME_MAX },
	[RS_ACTOR] = { "actor", AUDIT_ACTOR_MAX },
	[RS_ACTION] = { "action", AUDIT_ACTION_MAX },
	[RS_TARGET] = { "target", AUDIT_TARGET_MAX },
	[RS_OUTCOME] = { "outcome", AUDIT_OUTCOME_MAX },
	[RS_PREV] = { "prev", AUDIT_HASH_HEX_LEN },
	[RS_SIG] = { "sig", AUDIT_SIG_B64_LEN },
};

static const char zero_hash[AUDIT_HASH_HEX_LEN + 1] =
	"0000000000000000000000000000000000000000000000000000000000000000";

const char *audit_ssl_error(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(buf, len, "unknown OpenSSL error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

void audit_digest_hex(const unsigned char md[VERIFY_SHA256_LEN],
		      char out[AUDIT_HASH_HEX_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < VERIFY_SHA256_LEN; i++) {
		out[2 * i] = digits[md[i] >> 4];
		out[2 * i + 1] = digits[md[i] & 0x0f];
	}
	out[AUDIT_HASH_HEX_LEN] = '\0';
}

int audit_hash_hex(const void *data, size_t len,
		   char out[AUDIT_HASH_HEX_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) ||
	    mdlen != VERIFY_SHA256_LEN) {
		ERR_clear_error();
		return -1;
	}
	audit_digest_hex(md, out);
	return 0;
}

uint64_t audit_record_seq(const json_t *rec)
{
	json_int_t v = json_integer_value(json_object_get(rec, "seq"));

	return v > 0 ? (uint64_t)v : 0;
}

const char *audit_tamper_name(enum audit_tamper kind)
{
	static const char *const names[] = {
		[AUDIT_TAMPER_NONE] = "none",
		[AUDIT_TAMPER_MODIFIED] = "modified",
		[AUDIT_TAMPER_DELETED] = "deleted",
		[AUDIT_TAMPER_INSERTED] = "inserted",
		[AUDIT_TAMPER_REORDERED] = "reordered",
		[AUDIT_TAMPER_TRUNCATED] = "truncated",
		[AUDIT_TAMPER_MALFORMED] = "malformed",
		[AUDIT_TAMPER_ERROR] = "error",
	};

	if ((unsigned)kind >= sizeof(names) / sizeof(names[0]))
		return "error";
	return names[kind];
}

/* ---- one record --------------------------------------------------------- */

/* Walk a detail value at depth (the detail object itself is 1). */
static int detail_walk(const json_t *v, unsigned depth, struct ferr *err)
{
	const char *key;
	size_t klen, i;
	json_t *child;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
	case JSON_ARRAY:
		if (depth > AUDIT_DETAIL_DEPTH_MAX)
			return ferr_set(err, FERR_INVALID,
					"detail is nested deeper than %d",
					AUDIT_DETAIL_DEPTH_MAX);
		if (json_is_array(v)) {
			json_array_foreach(v, i, child) {
				if (detail_walk(child, depth + 1, err) < 0)
					return -1;
			}
			return 0;
		}
		json_object_keylen_foreach((json_t *)v, key, klen, child) {
			if (strlen(key) != klen)
				return ferr_set(err, FERR_INVALID,
						"detail has a key with a NUL "
						"byte");
			if (detail_walk(child, depth + 1, err) < 0)
				return -1;
		}
		return 0;
	case JSON_REAL:
		return ferr_set(err, FERR_INVALID,
				"detail holds a real number (only integers "
				"are allowed)");
	case JSON_STRING:
		if (strlen(json_string_value(v)) != json_string_length(v))
			return ferr_set(err, FERR_INVALID,
					"detail has a string with a NUL byte");
		return 0;
	default:
		return 0;
	}
}

int audit_detail_check(const json_t *detail, struct ferr *err)
{
	size_t n;

	if (!json_is_object(detail))
		return ferr_set(err, FERR_INVALID,
				"record.detail must be an object");
	if (detail_walk(detail, 1, err) < 0)
		return -1;
	n = json_dumpb(detail, NULL, 0, AUDIT_JSON_FLAGS);
	if (n == 0 || n > AUDIT_DETAIL_MAX)
		return ferr_set(err, FERR_INVALID,
				"record.detail is larger than %d bytes",
				AUDIT_DETAIL_MAX);
	return 0;
}

/* Decode canonical base64 of exactly AUDIT_SIG_LEN bytes ("==" padded). */
static int sig_decode(const char *b64, size_t len,
		      unsigned char sig[AUDIT_SIG_LEN])
{
	unsigned char raw[VERIFY_SIG_RAW_LEN];
	char again[AUDIT_SIG_B64_LEN + 1];

	if (len != AUDIT_SIG_B64_LEN)
		return -1;
	if (EVP_DecodeBlock(raw, (const unsigned char *)b64,
			    AUDIT_SIG_B64_LEN) != VERIFY_SIG_RAW_LEN)
		return -1;
	memcpy(sig, raw, AUDIT_SIG_LEN);
	/* Only the one canonical spelling: same padding, zero spare bits,
	 * no whitespace EVP_DecodeBlock would have skipped. */
	if (EVP_EncodeBlock((unsigned char *)again, sig, AUDIT_SIG_LEN) !=
		    AUDIT_SIG_B64_LEN ||
	    memcmp(again, b64, AUDIT_SIG_B64_LEN) != 0)
		return -1;
	return 0;
}

/* Are the len bytes of s all in [0-9a-f]? */
static bool is_lower_hex(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return true;
}

/* The structural checks of audit_parse_record on a parsed object. */
static int check_fields(const json_t *rec, struct ferr *err)
{
	unsigned char sig[AUDIT_SIG_LEN];
	const char *s[RS__COUNT];
	uint64_t seq = 0, ts = 0;
	json_t *detail;

	if (json_check_fields(rec, record_fields, "record", err) < 0)
		return -1;
	for (size_t i = 0; record_fields[i]; i++) {
		if (strcmp(record_fields[i], "detail") != 0 &&
		    !json_object_get(rec, record_fields[i]))
			return ferr_set(err, FERR_INVALID,
					"record has no \"%s\" field",
					record_fields[i]);
	}
	if (json_get_u64(rec, "seq", "record", 1, AUDIT_SEQ_MAX, &seq, err) <
		    0 ||
	    json_get_u64(rec, "ts", "record", 0, AUDIT_TS_MAX, &ts, err) < 0)
		return -1;
	for (size_t i = 0; i < RS__COUNT; i++) {
		s[i] = NULL;
		if (json_get_string(rec, record_strings[i].name, "record",
				    record_strings[i].max, &s[i], err) < 0)
			return -1;
		if (!s[i] || !*s[i])
			return ferr_set(err, FERR_INVALID,
					"record.%s must not be empty",
					record_strings[i].name);
	}
	if (!name_is_valid(s[RS_HOST]))
		return ferr_set(err, FERR_INVALID,
				"record.host is not a valid name");
	if (strlen(s[RS_PREV]) != AUDIT_HASH_HEX_LEN ||
	    !is_lower_hex(s[RS_PREV], AUDIT_HASH_HEX_LEN))
		return ferr_set(err, FERR_INVALID,
				"record.prev must be %d lowercase hex digits",
				AUDIT_HASH_HEX_LEN);
	if (sig_decode(s[RS_SIG], strlen(s[RS_SIG]), sig) < 0)
		return ferr_set(err, FERR_INVALID,
				"record.sig must be the base64 of %d bytes",
				AUDIT_SIG_LEN);
	detail = json_object_get(rec, "detail");
	if (detail && audit_detail_check(detail, err) < 0)
		return -1;
	return 0;
}

/* Parse and check one line; see audit_check_line for *out and *fault. */
static int parse_line(const char *line, size_t len, json_t **out,
		      enum audit_fault *fault, struct ferr *err)
{
	char canon[AUDIT_LINE_MAX];
	json_error_t jerr;
	json_t *rec;
	size_t n;

	*out = NULL;
	*fault = AUDIT_FAULT_MALFORMED;
	if (!line || len == 0)
		return ferr_set(err, FERR_INVALID, "empty line");
	if (len > AUDIT_LINE_MAX)
		return ferr_set(err, FERR_TOO_LARGE,
				"line is longer than %d bytes", AUDIT_LINE_MAX);
	rec = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!rec)
		return ferr_set(err, FERR_INVALID,
				"not valid JSON at byte %d: %s", jerr.position,
				jerr.text);
	if (!json_is_object(rec)) {
		json_decref(rec);
		return ferr_set(err, FERR_INVALID, "not a JSON object");
	}
	if (json_check_depth(rec, "record", err) < 0) {
		json_decref(rec);
		return -1;
	}
	if (check_fields(rec, err) < 0) {
		json_decref(rec);
		return -1;
	}
	n = json_dumpb(rec, canon, sizeof(canon), AUDIT_JSON_FLAGS);
	if (n != len || memcmp(canon, line, len) != 0) {
		*fault = AUDIT_FAULT_NONCANONICAL;
		*out = rec;
		return ferr_set(err, FERR_INVALID,
				"bytes differ from the record's canonical "
				"serialization");
	}
	*fault = AUDIT_FAULT_NONE;
	*out = rec;
	return 0;
}

int audit_parse_record(const char *line, size_t len, json_t **out,
		       struct ferr *err)
{
	enum audit_fault fault;
	json_t *rec;

	if (out)
		*out = NULL;
	if (parse_line(line, len, &rec, &fault, err) < 0) {
		json_decref(rec);
		return -1;
	}
	if (out)
		*out = rec;
	else
		json_decref(rec);
	return 0;
}

/* Verify the signature of a canonical record with pub. */
static int check_sig(const json_t *rec, EVP_PKEY *pub,
		     enum audit_fault *fault, struct ferr *err)
{
	unsigned char sig[AUDIT_SIG_LEN];
	char tbs[AUDIT_LINE_MAX], ebuf[128];
	const char *b64 = json_string_value(json_object_get(rec, "sig"));
	EVP_MD_CTX *ctx = NULL;
	json_t *unsigned_rec = NULL;
	size_t n;
	int rc = -1;

	*fault = AUDIT_FAULT_INTERNAL;
	if (!b64 || sig_decode(b64, strlen(b64), sig) < 0) {
		*fault = AUDIT_FAULT_MALFORMED;
		return ferr_set(err, FERR_INVALID, "record.sig is not valid");
	}
	unsigned_rec = json_copy((json_t *)rec);
	if (!unsigned_rec || json_object_del(unsigned_rec, "sig") < 0) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	n = json_dumpb(unsigned_rec, tbs, sizeof(tbs), AUDIT_JSON_FLAGS);
	if (n == 0 || n > sizeof(tbs)) {
		ferr_set(err, FERR_INTERNAL, "cannot serialize the record");
		goto out;
	}
	ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pub) != 1) {
		ferr_set(err, FERR_INTERNAL, "cannot verify: %s",
			 audit_ssl_error(ebuf, sizeof(ebuf)));
		goto out;
	}
	if (EVP_DigestVerify(ctx, sig, sizeof(sig), (const unsigned char *)tbs,
			     n) != 1) {
		ERR_clear_error();
		*fault = AUDIT_FAULT_SIGNATURE;
		ferr_set(err, FERR_INVALID, "signature does not match");
		goto out;
	}
	*fault = AUDIT_FAULT_NONE;
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	json_decref(unsigned_rec);
	return rc;
}

int audit_check_line(const char *line, size_t len, EVP_PKEY *pub,
		     json_t **out, enum audit_fault *fault, struct ferr *err)
{
	json_t *rec = NULL;
	int rc = -1;

	if (out)
		*out = NULL;
	if (parse_line(line, len, &rec, fault, err) < 0)
		goto out;
	if (pub && check_sig(rec, pub, fault, err) < 0)
		goto out;
	rc = 0;
out:
	if (rec && out && (rc == 0 || *fault == AUDIT_FAULT_SIGNATURE ||
			   *fault == AUDIT_FAULT_NONCANONICAL)) {
		*out = rec;
		rec = NULL;
	}
	json_decref(rec);
	return rc;
}

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
	char where[64];
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
		snprintf(where, sizeof(where), "line %llu (seq %llu)",
			 (unsigned long long)lineno, (unsigned long long)seq);
	else
		snprintf(where, sizeof(where), "line %llu",
			 (unsigned long long)lineno);
	snprintf(rep->message, sizeof(rep->message), "%s: %s", where, what);
	return -1;
}

/* State of a verification between lines. */
struct verify {
	const char *text;
	size_t len;
	EVP_PKEY *pub;
	struct audit_report *rep;
	uint64_t expected;  /* seq due next; 0 before the first record */
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

	if (seq < v->rep->first_seq)
		return report_bad(v->rep, AUDIT_TAMPER_REORDERED, at->lineno,
				  seq, v->expected,
				  "seq goes back from %llu to %llu, before the "
				  "first line's seq %llu: records were "
				  "reordered",
				  (unsigned long long)(v->expected - 1),
				  (unsigned long long)seq,
				  (unsigned long long)v->rep->first_seq);
	/* Every earlier line is a good record and they are contiguous, so
	 * seq sits at a known line. */
	orig = seq - v->rep->first_seq + 1;
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

int audit_verify(const char *text, size_t len, EVP_PKEY *pub,
		 struct audit_report *rep)
{
	struct verify v = { .text = text, .len = len, .pub = pub, .rep = rep };
	struct cursor c = { .text = text, .len = len };
	char hash[AUDIT_HASH_HEX_LEN + 1];
	struct ferr err = { 0 };
	const char *line;
	size_t llen;
	int more;

	if (!rep)
		return -1;
	memset(rep, 0, sizeof(*rep));
	memcpy(rep->head_hash, zero_hash, sizeof(rep->head_hash));
	if ((!text && len) || !pub ||
	    EVP_PKEY_get_base_id(pub) != EVP_PKEY_ED25519)
		return report_bad(rep, AUDIT_TAMPER_ERROR, 0, 0, 0,
				  "cannot verify: the key is not an Ed25519 "
				  "public key");
	while ((more = cursor_next(&c, &line, &llen)) != 0) {
		enum audit_fault fault;
		json_t *rec = NULL;
		const char *prev;
		uint64_t seq;
		int rc = 0;

		if (more == 2)
			return report_torn(&v, &c, line, llen);
		if (audit_check_line(line, llen, pub, &rec, &fault, &err) < 0) {
			rc = classify_fault(&v, &c, rec, fault, &err);
			json_decref(rec);
			return rc;
		}
		seq = audit_record_seq(rec);
		prev = json_string_value(json_object_get(rec, "prev"));
		if (audit_hash_hex(line, llen, hash) < 0)
			rc = report_bad(rep, AUDIT_TAMPER_ERROR, c.lineno, seq,
					v.expected, "cannot hash the line");
		else if (!v.expected && seq == 1 && strcmp(prev, zero_hash))
			rc = report_bad(rep, AUDIT_TAMPER_INSERTED, c.lineno,
					seq, 0,
					"seq 1 must have a zero prev: the "
					"record comes from another log");
		else if (v.expected && seq > v.expected)
			rc = classify_jump(&v, &c, seq,
					   !strcmp(prev, rep->head_hash));
		else if (v.expected && seq < v.expected)
			rc = classify_back(&v, &c, seq, hash);
		else if (v.expected && strcmp(prev, rep->head_hash))
			rc = report_bad(rep, AUDIT_TAMPER_INSERTED, c.lineno,
					seq, v.expected,
					"prev does not match the line before: "
					"a record from another log of the same "
					"key was inserted");
		json_decref(rec);
		if (rc < 0)
			return rc;
		if (!v.expected)
			rep->first_seq = seq;
		rep->records++;
		rep->last_seq = seq;
		memcpy(rep->head_hash, hash, sizeof(rep->head_hash));
		v.expected = seq + 1; /* seq <= AUDIT_SEQ_MAX: no overflow */
	}
	rep->ok = true;
	rep->kind = AUDIT_TAMPER_NONE;
	return 0;
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

/* Open path for reading a regular file (no symlinks); *size its size. */
static int open_regular(const char *path, uint64_t *size, struct ferr *err)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return ferr_set(err, errno == ENOENT ? FERR_NOT_FOUND : FERR_IO,
				"cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return ferr_set(err, FERR_IO, "%s is not a regular file",
				path);
	}
	*size = (uint64_t)st.st_size;
	return fd;
}

int audit_read_log(const char *path, char **text, size_t *len,
		   struct ferr *err)
{
	uint64_t size = 0;
	size_t got = 0;
	char *buf = NULL;
	int fd, rc = -1;

	fd = open_regular(path, &size, err);
	if (fd < 0)
		return -1;
	if (size > AUDIT_READ_MAX) {
		ferr_set(err, FERR_TOO_LARGE, "%s is larger than %llu bytes",
			 path, (unsigned long long)AUDIT_READ_MAX);
		goto out;
	}
	buf = malloc((size_t)size + 1);
	if (!buf) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	/* Up to the size seen: bytes appended meanwhile are left out. */
	if (fd_read_upto(fd, buf, (size_t)size, &got) < 0) {
		ferr_set(err, FERR_IO, "cannot read %s: %s", path,
			 strerror(errno));
		goto out;
	}
	buf[got] = '\0';
	*text = buf;
	*len = got;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

/* ---- queries -------------------------------------------------------------- */

/* Does the string field key of rec equal want (NULL: anything)? */
static bool field_is(const json_t *rec, const char *key, const char *want)
{
	const char *s;

	if (!want)
		return true;
	s = json_string_value(json_object_get(rec, key));
	return s && !strcmp(s, want);
}

/* Does action match pattern: equal, or a prefix when pattern ends in
 * '*'? (NULL pattern: anything) */
static bool action_matches(const char *action, const char *pattern)
{
	size_t n;

	if (!pattern)
		return true;
	n = strlen(pattern);
	if (n > 0 && pattern[n - 1] == '*')
		return !strncmp(action, pattern, n - 1);
	return !strcmp(action, pattern);
}

/* Does a parsed record pass every filter of f (NULL: no filters)? */
static bool record_matches(const json_t *rec, const struct audit_filter *f)
{
	uint64_t ts;

	if (!f)
		return true;
	ts = (uint64_t)json_integer_value(json_object_get(rec, "ts"));
	if (f->since_ms && ts < f->since_ms)
		return false;
	if (f->until_ms && ts > f->until_ms)
		return false;
	return field_is(rec, "target", f->target) &&
	       field_is(rec, "actor", f->actor) &&
	       action_matches(json_string_value(json_object_get(rec,
							       "action")),
			      f->action);
}

/* The newest `cap` matches, in a ring. */
struct query {
	const struct audit_filter *f;
	json_t **ring;
	size_t cap;
	size_t count;  /* matches kept, at most cap */
	size_t next;   /* slot the next match goes to */
};

/* Keep one line in the ring when it parses and matches. */
static void query_line(struct query *q, const char *line, size_t len)
{
	json_t *rec = NULL;

	if (audit_parse_record(line, len, &rec, NULL) < 0)
		return;
	if (!record_matches(rec, q->f)) {
		json_decref(rec);
		return;
	}
	json_decref(q->ring[q->next]);
	q->ring[q->next] = rec;
	q->next = (q->next + 1) % q->cap;
	if (q->count < q->cap)
		q->count++;
}

json_t *audit_query(const char *path, const struct audit_filter *f,
		    struct ferr *err)
{
	struct query q = { .f = f };
	struct ferr oerr = { 0 };
	char *chunk = NULL, *line = NULL;
	size_t llen = 0;
	bool skipping = false; /* inside a line longer than AUDIT_LINE_MAX */
	bool ok = false;
	uint64_t size = 0;
	json_t *arr = NULL;
	int fd;

	q.cap = (f && f->limit && f->limit < AUDIT_QUERY_MAX)
			? f->limit : AUDIT_QUERY_MAX;
	fd = open_regular(path, &size, &oerr);
	if (fd < 0 && oerr.code != FERR_NOT_FOUND) {
		if (err)
			*err = oerr;
		return NULL;
	}
	arr = json_array();
	q.ring = calloc(q.cap, sizeof(*q.ring));
	chunk = malloc(QUERY_READ_CHUNK);
	line = malloc(AUDIT_LINE_MAX);
	if (!arr || !q.ring || !chunk || !line) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	while (fd >= 0) {
		ssize_t n = read(fd, chunk, QUERY_READ_CHUNK);
		const char *p, *end;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ferr_set(err, FERR_IO, "cannot read %s: %s", path,
				 strerror(errno));
			goto out;
		}
		if (n == 0)
			break; /* a final line without newline is skipped */
		for (p = chunk, end = chunk + n; p < end;) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t take = (size_t)((nl ? nl : end) - p);

			if (!skipping && take <= AUDIT_LINE_MAX - llen) {
				memcpy(line + llen, p, take);
				llen += take;
			} else {
				skipping = true;
			}
			p += take;
			if (!nl)
				break;
			if (!skipping)
				query_line(&q, line, llen);
			skipping = false;
			llen = 0;
			p++;
		}
	}
	for (size_t i = 0; i < q.count; i++) {
		size_t slot = (q.next + q.cap - q.count + i) % q.cap;
		json_t *rec = q.ring[slot];

		q.ring[slot] = NULL;
		if (json_array_append_new(arr, rec) < 0) {
			ferr_set(err, FERR_INTERNAL, "out of memory");
			goto out;
		}
	}
	ok = true;
out:
	if (!ok) {
		json_decref(arr);
		arr = NULL;
	}
	for (size_t i = 0; q.ring && i < q.cap; i++)
		json_decref(q.ring[i]);
	free(q.ring);
	free(chunk);
	free(line);
	if (fd >= 0)
		close(fd);
	return arr;
}
