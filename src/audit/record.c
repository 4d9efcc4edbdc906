/* record.c - strict parsing of one audit record and its signature, and the
 * small helpers (hashes, names) readers and the writer share. Everything
 * here reads hostile input. */
#define _GNU_SOURCE
#include "audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#define VERIFY_SHA256_LEN 32
#define VERIFY_SIG_RAW_LEN 66       /* EVP_DecodeBlock output incl. padding */

static const char *const record_fields[] = {
	"action", "actor", "detail", "host", "outcome",
	"prev", "seq", "sig", "target", "ts", "v", NULL,
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

/* One part of a format version: 0..AUDIT_FORMAT_PART_MAX, digits without
 * a leading zero. The end of the part in *end. */
static int version_part(const char *s, const char **end, unsigned *out)
{
	unsigned v = 0;
	size_t n = 0;

	while (s[n] >= '0' && s[n] <= '9' && n < 4)
		v = v * 10 + (unsigned)(s[n++] - '0');
	if (n == 0 || (n > 1 && s[0] == '0'))
		return -1;
	*end = s + n;
	*out = v;
	return 0;
}

/* The record's format version (field "v"; absent: 1.0). A major other
 * than ours is FERR_INVALID with *fault AUDIT_FAULT_VERSION. *newer when
 * the minor is newer than ours (unknown fields are then allowed). */
static int check_version(const json_t *rec, bool *newer,
			 enum audit_fault *fault, struct ferr *err)
{
	const char *s = NULL, *p;
	unsigned major = 1, minor = 0;

	*newer = false;
	if (json_get_string(rec, "v", "record", AUDIT_FORMAT_LEN_MAX, &s,
			    err) < 0)
		return -1;
	if (s && (version_part(s, &p, &major) < 0 || *p != '.' ||
		  version_part(p + 1, &p, &minor) < 0 || *p))
		return ferr_set(err, FERR_INVALID,
				"record.v must be \"MAJOR.MINOR\"");
	if (major != AUDIT_FORMAT_MAJOR) {
		*fault = AUDIT_FAULT_VERSION;
		return ferr_set(err, FERR_INVALID,
				"record format %u.%u is not supported: this "
				"ferry reads %d.x (format %s); use a ferry "
				"that reads %u.x",
				major, minor, AUDIT_FORMAT_MAJOR,
				AUDIT_FORMAT_STR, major);
	}
	*newer = minor > AUDIT_FORMAT_MINOR;
	return 0;
}

/* The structural checks of audit_parse_record on a parsed object. */
static int check_fields(const json_t *rec, enum audit_fault *fault,
			struct ferr *err)
{
	unsigned char sig[AUDIT_SIG_LEN];
	const char *s[RS__COUNT];
	uint64_t seq = 0, ts = 0;
	json_t *detail;
	bool newer;

	if (check_version(rec, &newer, fault, err) < 0)
		return -1;
	/* a newer minor may add fields: they are signed like the rest */
	if (!newer && json_check_fields(rec, record_fields, "record", err) < 0)
		return -1;
	for (size_t i = 0; record_fields[i]; i++) {
		if (strcmp(record_fields[i], "detail") != 0 &&
		    strcmp(record_fields[i], "v") != 0 &&
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
	if (check_fields(rec, fault, err) < 0) {
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

