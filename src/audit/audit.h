/* audit.h - the tamper-evident audit log of a ferryd host.
 *
 * <dir>/audit.log holds one record per line: a JSON object serialized by
 * jansson with JSON_COMPACT | JSON_SORT_KEYS (integers only, no reals):
 *
 *   seq      1, 2, 3, ... contiguous across rotated files
 *   ts       wall clock, ms since the epoch
 *   host     this host's name (a ferry name)
 *   actor    the identity that acted, or "-"
 *   action   e.g. "vm.start", "policy.decision", "auth.failed"
 *   target   what was acted on, or "-"
 *   outcome  e.g. "ok", "error", "allow", "deny"
 *   detail   an object (optional)
 *   prev     lowercase hex SHA-256 of the previous line's exact bytes
 *            (without its newline); 64 zeros for seq 1
 *   v        the record format, "MAJOR.MINOR" (AUDIT_FORMAT_*); a record
 *            without it is format 1.0 (written before versions existed)
 *   sig      base64 Ed25519 signature by the host key over the exact bytes
 *            of the record serialized the same way WITHOUT "sig"
 *
 * Versions: a reader accepts every minor version of its major. A record of
 * a newer minor may carry fields this reader does not know (they are signed
 * and chained like the rest); a record of another major is refused with an
 * error that names both versions. So hosts can be upgraded one at a time.
 *
 * Rotation: when audit.log reaches the rotation size, it is renamed
 * <dir>/audit.log.<seq of its last record> and a new audit.log starts with
 * an "audit.rotated" record (detail {"previous", "last_seq"}) that continues
 * the chain: its seq follows the last one and its prev is the hash of the
 * previous file's last line. The files of a log, oldest first, are its
 * "series"; the chain runs through them as if they were one file.
 *
 * The head of a log is anchored: its first record must be seq 1 with a zero
 * prev, so records deleted from the start are found (a series whose first
 * file begins with an "audit.rotated" record lacks its older files). Every
 * later file of a series must begin with its "audit.rotated" record.
 *
 * The host key is <dir>/audit.key (Ed25519 private key PEM, mode 0600,
 * created on first open) and <dir>/audit.pub (its public key PEM, 0644).
 *
 * Writing (audit.c) keeps the log open, appends each record with one
 * write() and fdatasync()s it before returning. Reading (verify.c,
 * series.c) parses records strictly, verifies whole series and answers
 * queries with bounded memory; it needs no writer state and is safe on
 * hostile input.
 *
 * What the chain cannot show: records removed from the END of the log at a
 * line boundary. Compare audit_head() of the live log, or the last seq and
 * head of the report, with what you expect to catch that.
 */
#ifndef FERRY_AUDIT_H
#define FERRY_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common.h"

/* Field bounds. Strings longer than these are truncated by audit_log (at a
 * UTF-8 character boundary) and refused by the parser. */
#define AUDIT_ACTOR_MAX 256          /* bytes of "actor" */
#define AUDIT_ACTION_MAX 64          /* bytes of "action" */
#define AUDIT_TARGET_MAX 256         /* bytes of "target" */
#define AUDIT_OUTCOME_MAX 32         /* bytes of "outcome" */
#define AUDIT_DETAIL_MAX 3072        /* bytes of "detail" serialized */
#define AUDIT_DETAIL_DEPTH_MAX 8     /* nesting of "detail" (itself = 1) */
#define AUDIT_DETAIL_PREFIX_MAX 1024 /* kept of a detail that is too large */
#define AUDIT_LINE_MAX 8192          /* bytes of one record, without "\n" */
#define AUDIT_SEQ_MAX (1ULL << 62)   /* largest seq a record may carry */
#define AUDIT_TS_MAX (1ULL << 62)    /* largest ts a record may carry */

#define AUDIT_HASH_HEX_LEN 64        /* SHA-256 in lowercase hex */
#define AUDIT_SIG_LEN 64             /* Ed25519 signature bytes */
#define AUDIT_SIG_B64_LEN 88         /* base64 of 64 bytes, with "==" */
#define AUDIT_KEY_FILE_MAX 4096      /* bytes of audit.key / audit.pub */
#define AUDIT_QUERY_MAX 10000        /* records one query returns at most */
#define AUDIT_READ_CHUNK (64 * 1024) /* bytes read or sent per step */
#define AUDIT_ROTATE_DEFAULT (64ULL * 1024 * 1024) /* rotation size */
#define AUDIT_ROTATE_MIN (4ULL * AUDIT_LINE_MAX)   /* smallest allowed */
#define AUDIT_SERIES_MAX 1000000     /* files of one series at most */
#define AUDIT_REPORT_MSG_MAX 320     /* bytes of audit_report.message */

/* The record format this code writes; it reads every 1.x. */
#define AUDIT_FORMAT_MAJOR 1
#define AUDIT_FORMAT_MINOR 1
#define AUDIT_FORMAT_STR "1.1"
#define AUDIT_FORMAT_PART_MAX 9999   /* largest MAJOR or MINOR */
#define AUDIT_FORMAT_LEN_MAX 9       /* "9999.9999" */

/* Serialization flags of every record. */
#define AUDIT_JSON_FLAGS (JSON_COMPACT | JSON_SORT_KEYS)

/* File names inside the audit folder. */
#define AUDIT_LOG_NAME "audit.log"
#define AUDIT_KEY_NAME "audit.key"
#define AUDIT_PUB_NAME "audit.pub"
#define AUDIT_TORN_PREFIX "audit.torn."
#define AUDIT_FILE_NAME_MAX 48       /* "audit.log." and a seq, with room */

/* Actions audit_open itself records. */
#define AUDIT_ACTION_TORN "audit.torn_tail"
#define AUDIT_ACTION_TAMPER "audit.tamper_suspected"
#define AUDIT_ACTION_ROTATED "audit.rotated"

struct audit;

/* ---- writing (audit.c) ------------------------------------------------ */

/* Open the audit log in dir (created with mode 0700 when missing) for host
 * (a valid ferry name). Loads <dir>/audit.key, or creates it (O_EXCL,
 * 0600) and audit.pub (0644) when it does not exist; an existing key that
 * is not a regular file, is readable by group or others, or is not Ed25519
 * is refused (FERR_INVALID). audit.pub is rewritten when it does not match
 * the key. The log is locked (flock) against a second writer: a log already
 * open elsewhere is FERR_CONFLICT.
 *
 * Only the tail of the log is read, backwards, to continue seq and prev:
 *  - a final partial line (a torn write) is moved to
 *    <dir>/audit.torn.<byte offset> (".1", ".2"... when that name holds
 *    other bytes), the log is truncated to its last complete line and
 *    fsync'ed, and an "audit.torn_tail" record with detail
 *    {"offset", "bytes", "saved_as"} is appended;
 *  - when the last complete line does not parse, is not canonical or its
 *    signature does not verify with this key, the chain continues from that
 *    line's hash anyway (seq from the last line that parses) and an
 *    "audit.tamper_suspected" record with detail {"offset", "reason"} is
 *    appended.
 * (A crash between saving a torn tail and appending its record leaves the
 * saved file without a record; nothing is lost.)
 * On success *out is the open log (free with audit_close); on failure *out
 * is NULL and *err says why. */
int audit_open(const char *dir, const char *host, struct audit **out,
	       struct ferr *err);

/* audit_open with the host key given (e.g. unsealed from the TPM, see
 * attest_tpm.h) instead of <dir>/audit.key, which is then neither read
 * nor created; audit.pub is kept in step as usual. key must be Ed25519;
 * the log takes its own reference. NULL key is audit_open. */
int audit_open_key(const char *dir, const char *host, EVP_PKEY *key,
		   struct audit **out, struct ferr *err);

/* Append one record and make it durable: builds it with the next seq, the
 * current wall clock and the previous line's hash, signs it, writes the
 * whole line including "\n" with ONE write() and fdatasync()s before
 * returning 0. Acknowledge the audited action only after 0.
 *
 * NULL or empty actor/action/target/outcome become "-"; longer strings are
 * cut to AUDIT_*_MAX bytes at a character boundary, and a string that is
 * not valid UTF-8 has its non-ASCII bytes replaced by '?'. detail (its
 * reference is stolen, even on failure; may be NULL) that is not an object
 * is wrapped as {"value": detail}; reals become strings ("%.17g"), strings
 * with NUL bytes get '?', keys with NUL bytes are dropped, containers nested
 * deeper than AUDIT_DETAIL_DEPTH_MAX become "(nested too deep)", and a
 * detail whose serialization exceeds AUDIT_DETAIL_MAX becomes
 * {"truncated": true, "bytes": <size>, "prefix": <first bytes of it>}. So
 * every record fits AUDIT_LINE_MAX and parses with audit_parse_record.
 *
 * Thread-safe (one mutex; records are serialized, fsync included). On a
 * failed or short write the log is truncated back to its last record; if
 * that or the fdatasync fails the handle refuses all later records
 * (FERR_IO) until it is closed and reopened, which recovers the tail. */
int audit_log(struct audit *a, const char *actor, const char *action,
	      const char *target, const char *outcome, json_t *detail,
	      struct ferr *err);

/* The seq and the hash (lowercase hex, NUL-terminated) of the last record;
 * 0 and 64 zeros for an empty log. Thread-safe. 0, or -1 when a is NULL. */
int audit_head(struct audit *a, uint64_t *seq, char hash_hex[65]);

/* Path of the log file of an open audit log (valid until audit_close). */
const char *audit_path(const struct audit *a);

/* Rotate the log when it has reached bytes (at least AUDIT_ROTATE_MIN;
 * 0 never rotates; audit_open sets AUDIT_ROTATE_DEFAULT). Rotation happens
 * in audit_log, before the record that would be appended past the size.
 * Thread-safe. 0, or -1 with FERR_INVALID for a size that is too small. */
int audit_set_rotate(struct audit *a, uint64_t bytes, struct ferr *err);

/* A series of log files, oldest first (see audit_series_list). The live
 * file of a snapshot is held open at the size it had. */
struct audit_file {
	char name[AUDIT_FILE_NAME_MAX]; /* base name in the series' folder */
	uint64_t last_seq;              /* from the name; 0 for audit.log */
};
struct audit_series {
	char dir[FERRY_PATH_MAX];
	struct audit_file *files;
	size_t n;
	int live_fd;        /* snapshot: audit.log as it was, or -1 */
	uint64_t live_size; /* snapshot: bytes of complete records */
};

/* A consistent snapshot of the live log's series for reading while other
 * threads append (and rotate): the files as they were, audit.log bounded by
 * its last complete record, and the head (seq and hash) of that record.
 * Free with audit_series_free. Thread-safe. */
int audit_series_snapshot(struct audit *a, struct audit_series *s,
			  uint64_t *head_seq, char head_hash[65],
			  struct ferr *err);

/* Close the log and free the key (OpenSSL wipes its private bytes).
 * NULL is a no-op. No record may be in progress. */
void audit_close(struct audit *a);

/* ---- reading and verifying (verify.c) --------------------------------- */

/* What the first problem of a log looks like. */
enum audit_tamper {
	AUDIT_TAMPER_NONE = 0,
	AUDIT_TAMPER_MODIFIED,  /* a record's bytes changed (bad signature or
				   not canonical) */
	AUDIT_TAMPER_DELETED,   /* seq jumps forward, prev does not chain, and
				   the missing seqs appear nowhere later */
	AUDIT_TAMPER_INSERTED,  /* a record appears twice, comes from another
				   log of the same key, or a forged record sits
				   between two lines that chain */
	AUDIT_TAMPER_REORDERED, /* the missing seqs appear later, or seq goes
				   back below the first line's */
	AUDIT_TAMPER_TRUNCATED, /* the last line has no newline (torn tail or
				   cut mid-line) */
	AUDIT_TAMPER_MALFORMED, /* not a record: bad JSON, fields or types */
	AUDIT_TAMPER_ERROR,     /* could not verify: bad key, out of memory */
};

/* Result of audit_verify. */
struct audit_report {
	bool ok;                   /* every line is a good record */
	enum audit_tamper kind;    /* AUDIT_TAMPER_NONE when ok */
	uint64_t records;          /* good records before the first problem */
	uint64_t first_seq;        /* seq of the first good record, 0 if none */
	uint64_t last_seq;         /* seq of the last good record, 0 if none */
	char head_hash[AUDIT_HASH_HEX_LEN + 1]; /* hash of the last good line;
						   64 zeros if none */
	uint64_t files;            /* files of the series read */
	char file[AUDIT_FILE_NAME_MAX]; /* file of the bad line in a series
					   of several files, else "" */
	uint64_t first_bad_line;   /* 1-based within file; 0 when ok */
	uint64_t first_bad_seq;    /* seq the bad line claims; 0 if unknown */
	uint64_t expected_seq;     /* seq due at the bad line; 0 if unknown */
	char message[AUDIT_REPORT_MSG_MAX]; /* e.g. "line 7 (seq 7): signature
					       does not match: the record
					       was modified"; "" when ok */
};

/* Stable name of a kind: "none", "modified", "deleted", "inserted",
 * "reordered", "truncated", "malformed", "error". */
const char *audit_tamper_name(enum audit_tamper kind);

/* Validate the structure of one line (len bytes, without its newline; need
 * not be NUL-terminated; hostile input): at most AUDIT_LINE_MAX bytes, a
 * JSON object without duplicate keys holding exactly the fields above with
 * their types and bounds (seq 1..AUDIT_SEQ_MAX, ts 0..AUDIT_TS_MAX, strings
 * non-empty, without NUL and within their AUDIT_*_MAX, host a ferry name,
 * prev 64 lowercase hex digits, sig canonical base64 of 64 bytes, detail an
 * object within its depth and size bounds with no reals), whose canonical
 * re-serialization is exactly the line. Does NOT check the signature.
 * On success *out (when out is not NULL) is the record (caller decrefs).
 * Otherwise -1 with FERR_INVALID (FERR_TOO_LARGE for a long line). */
int audit_parse_record(const char *line, size_t len, json_t **out,
		       struct ferr *err);

/* Verify a whole log held in memory (text, len bytes; e.g. a series as
 * GET /v1/audit/log sends it), line by line: the structure
 * (audit_parse_record), the signature with pub (Ed25519), seq contiguous
 * from 1 (which must carry a zero prev: a log that starts later lost its
 * head, AUDIT_TAMPER_DELETED), and prev equal to the SHA-256 of the
 * previous line. A final line without a newline is a torn tail
 * (AUDIT_TAMPER_TRUNCATED). Stops at the first
 * problem; *rep (always filled) classifies it, counting the good records
 * before it. Returns 0 when the whole log is good, -1 otherwise
 * (rep->kind AUDIT_TAMPER_ERROR when it could not verify at all). */
int audit_verify(const char *text, size_t len, EVP_PKEY *pub,
		 struct audit_report *rep);

/* Load an Ed25519 public key PEM (e.g. <dir>/audit.pub, at most
 * AUDIT_KEY_FILE_MAX bytes). Free with EVP_PKEY_free. NULL with *err on
 * failure (FERR_NOT_FOUND, FERR_INVALID for anything but an Ed25519 public
 * key). */
EVP_PKEY *audit_load_pubkey(const char *path, struct ferr *err);

/* Verify the series at path (series.c): the audit folder, or its
 * audit.log (with the rotated files next to it), or any other single file.
 * Like audit_verify, across files: the chain runs through them and every
 * file after the first must begin with its "audit.rotated" record. Files
 * are mapped, not read into memory. */
int audit_verify_path(const char *path, EVP_PKEY *pub,
		      struct audit_report *rep);

/* List the series in dir (series.c): the rotated files audit.log.<N> in
 * order of N, then audit.log when it exists. live_fd is -1. More than
 * AUDIT_SERIES_MAX files is FERR_TOO_LARGE. */
int audit_series_list(const char *dir, struct audit_series *s,
		      struct ferr *err);

/* The series that path names: a folder (audit_series_list), a file called
 * audit.log (its folder's series), or any other file (alone). */
int audit_series_from_path(const char *path, struct audit_series *s,
			   struct ferr *err);

/* Open file i of s for reading (no symlinks, regular files only); *size is
 * its size (for the live file of a snapshot: the snapshot's size). Returns
 * the descriptor (the caller closes it) or -1 (FERR_NOT_FOUND when the
 * file has gone). */
int audit_series_open(const struct audit_series *s, size_t i, uint64_t *size,
		      struct ferr *err);

/* Release what s holds (closes the live descriptor). */
void audit_series_free(struct audit_series *s);

/* Filters of audit_query; zero/NULL fields match everything. */
struct audit_filter {
	uint64_t since_ms;  /* ts >= since_ms; 0 = unbounded */
	uint64_t until_ms;  /* ts <= until_ms; 0 = unbounded */
	const char *target; /* exact target, e.g. a VM name */
	const char *actor;  /* exact actor */
	const char *action; /* exact action, or a prefix when it ends in '*'
			       ("vm.*", "*" = any) */
	unsigned limit;     /* the newest N matches; 0 or more than
			       AUDIT_QUERY_MAX = AUDIT_QUERY_MAX */
};

/* Read the series at path (see audit_series_from_path; streamed, memory
 * bounded by the limit) and return a new JSON array of the matching
 * records (objects, oldest first, the newest f->limit of them). f may be
 * NULL. Lines that do not parse (see
 * audit_parse_record) and a final line without a newline are skipped;
 * signatures are not checked (audit_verify does that). A missing file is
 * an empty array. NULL with *err on failure. */
json_t *audit_query(const char *path, const struct audit_filter *f,
		    struct ferr *err);

/* ---- internal: shared by audit.c and verify.c ------------------------- */

/* Why a line failed audit_check_line. */
enum audit_fault {
	AUDIT_FAULT_NONE = 0,
	AUDIT_FAULT_MALFORMED,    /* not a record (structure) */
	AUDIT_FAULT_NONCANONICAL, /* a record, but not its canonical bytes */
	AUDIT_FAULT_SIGNATURE,    /* a canonical record with a bad signature */
	AUDIT_FAULT_INTERNAL,     /* out of memory or an OpenSSL failure */
	AUDIT_FAULT_VERSION,      /* a record format of another major */
};

/* audit_parse_record, then (when pub is not NULL) the Ed25519 signature
 * over the record re-serialized without "sig". *fault says which check
 * failed (AUDIT_FAULT_NONE on success). On success *out (when out is not
 * NULL) is the record; on AUDIT_FAULT_SIGNATURE and AUDIT_FAULT_NONCANONICAL
 * *out is still the record (the caller decrefs) so its seq can be read;
 * otherwise *out is NULL. */
int audit_check_line(const char *line, size_t len, EVP_PKEY *pub,
		     json_t **out, enum audit_fault *fault, struct ferr *err);

/* Check a detail object against the parser's rules: an object, nesting at
 * most AUDIT_DETAIL_DEPTH_MAX, no reals, no NUL in strings or keys, and a
 * serialization of at most AUDIT_DETAIL_MAX bytes. 0 or -1 (FERR_INVALID). */
int audit_detail_check(const json_t *detail, struct ferr *err);

/* SHA-256 of len bytes as 64 lowercase hex digits plus NUL. 0 or -1. */
int audit_hash_hex(const void *data, size_t len,
		   char out[AUDIT_HASH_HEX_LEN + 1]);

/* Lowercase hex of a 32-byte digest into out (65 bytes with the NUL). */
void audit_digest_hex(const unsigned char md[32],
		      char out[AUDIT_HASH_HEX_LEN + 1]);

/* The seq field of a parsed record (audit_parse_record guarantees it). */
uint64_t audit_record_seq(const json_t *rec);

/* A readable message for the last OpenSSL error (clears the queue). */
const char *audit_ssl_error(char *buf, size_t len);

/* Parse len bytes of PEM as an Ed25519 private (private_key) or public
 * key; errors name path. NULL on error. */
EVP_PKEY *audit_pem_key(const char *pem, size_t len, bool private_key,
			const char *path, struct ferr *err);

/* ---- coalesced refusals (refusals.c) ---------------------------------- */

#define AUDIT_REFUSAL_ACTIONS 8  /* distinct refusal actions per flush */
#define AUDIT_REFUSAL_SOURCES 32 /* sources counted by name per action */
#define AUDIT_REFUSAL_FLUSH_MS 1000 /* how often ferryd flushes */

struct audit_refusals;

/* Create a coalescer writing to a (borrowed). */
int audit_refusals_new(struct audit *a, struct audit_refusals **out,
		       struct ferr *err);

/* Count one refusal of `action` ("rate.limited", "auth.failed", ...) from
 * source (an address or identity) for reason why. Never blocks on I/O;
 * thread-safe; NULL r is a no-op. */
void audit_refused(struct audit_refusals *r, const char *action,
		   const char *source, const char *why);

/* Write one record per action counted since the last flush: detail
 * {"count", "sources": {source: n}, "other_sources", "first_reason",
 * "since"}. Thread-safe. */
int audit_refusals_flush(struct audit_refusals *r, struct ferr *err);

/* Flush and free (NULL is fine). */
void audit_refusals_free(struct audit_refusals *r);

/* Refusals counted since r was created, per action (for /v1/metrics):
 * the first AUDIT_REFUSAL_ACTIONS distinct actions by name, any later one
 * under AUDIT_REFUSAL_OTHER. */
#define AUDIT_REFUSAL_OTHER "other"
struct audit_refusal_total {
	char action[AUDIT_ACTION_MAX];
	uint64_t count;
};

/* Copy the totals into out (room for AUDIT_REFUSAL_ACTIONS + 1) and
 * return how many there are. Thread-safe; never blocks on I/O. */
size_t audit_refusals_totals(struct audit_refusals *r,
			     struct audit_refusal_total *out);

#endif
