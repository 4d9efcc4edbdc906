/* Unit tests of the audit log: signed records, tail recovery, every kind of
 * tampering that verify must name, concurrency, bounds and queries. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "audit.h"

#define T_LINES_MAX 64
#define T_THREADS 4
#define T_PER_THREAD 200
#define T_TORN_BYTES 40
#define T_LOG_MAX (4 << 20) /* bytes of a test log (file_read_all allocates it) */

/* A temporary folder per test, removed afterwards. */
static int setup_dir(void **state)
{
	char *dir = strdup("/tmp/ferry-audit-XXXXXX");

	if (!dir || !mkdtemp(dir)) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int teardown_dir(void **state)
{
	struct ferr err = { 0 };
	int rc = rmtree(*state, &err);

	free(*state);
	return rc;
}

static void path_in(char *buf, size_t len, const char *dir, const char *name)
{
	assert_true((size_t)snprintf(buf, len, "%s/%s", dir, name) < len);
}

static struct audit *open_ok(const char *dir)
{
	struct ferr err = { 0 };
	struct audit *a = NULL;

	if (audit_open(dir, "host-a", &a, &err) < 0)
		fail_msg("audit_open: %s", err.msg);
	assert_non_null(a);
	return a;
}

/* Log n records "vm.start" by alice on vm-<first..>, detail {"i": i}. */
static void log_n(struct audit *a, int first, int n)
{
	struct ferr err = { 0 };
	char target[32];

	for (int i = first; i < first + n; i++) {
		snprintf(target, sizeof(target), "vm-%d", i);
		if (audit_log(a, "alice", "vm.start", target, "ok",
			      json_pack("{si}", "i", i), &err) < 0)
			fail_msg("audit_log: %s", err.msg);
	}
}

static char *read_log(const char *dir, size_t *len)
{
	char path[512];
	struct ferr err = { 0 };
	char *text = NULL;

	path_in(path, sizeof(path), dir, AUDIT_LOG_NAME);
	if (file_read_all(path, T_LOG_MAX, &text, len, &err) < 0)
		fail_msg("file_read_all: %s", err.msg);
	return text;
}

/* A path beside dir, to move a file out of the way. */
static const char *path_in_tmp(const char *dir)
{
	static char buf[512];

	assert_true((size_t)snprintf(buf, sizeof(buf), "%s.aside", dir) <
		    sizeof(buf));
	return buf;
}

static void write_log(const char *dir, const char *text, size_t len)
{
	char path[512];
	struct ferr err = { 0 };

	path_in(path, sizeof(path), dir, AUDIT_LOG_NAME);
	assert_int_equal(file_write_atomic(path, text, len, 0640, &err), 0);
}

static EVP_PKEY *pub_of(const char *dir)
{
	char path[512];
	struct ferr err = { 0 };
	EVP_PKEY *pub;

	path_in(path, sizeof(path), dir, AUDIT_PUB_NAME);
	pub = audit_load_pubkey(path, &err);
	if (!pub)
		fail_msg("audit_load_pubkey: %s", err.msg);
	return pub;
}

/* Verify the text with the folder's public key. */
static int verify_text(const char *dir, const char *text, size_t len,
		       struct audit_report *rep)
{
	EVP_PKEY *pub = pub_of(dir);
	int rc = audit_verify(text, len, pub, rep);

	EVP_PKEY_free(pub);
	return rc;
}

/* Verify the folder's log file. */
static int verify_dir(const char *dir, struct audit_report *rep)
{
	size_t len = 0;
	char *text = read_log(dir, &len);
	int rc = verify_text(dir, text, len, rep);

	free(text);
	return rc;
}

/* The lines of a log, for rearranging them. */
struct lines {
	char *text;
	size_t n;
	const char *at[T_LINES_MAX];
	size_t len[T_LINES_MAX];
};

static void lines_read(const char *dir, struct lines *l)
{
	size_t len = 0;
	char *p;

	memset(l, 0, sizeof(*l));
	l->text = read_log(dir, &len);
	for (p = l->text; p < l->text + len;) {
		char *nl = memchr(p, '\n', (size_t)(l->text + len - p));

		assert_non_null(nl);
		assert_true(l->n < T_LINES_MAX);
		l->at[l->n] = p;
		l->len[l->n] = (size_t)(nl - p);
		l->n++;
		p = nl + 1;
	}
}

/* Write the lines in `order` (0-based indexes, n of them) as the log. */
static void lines_write(const char *dir, const struct lines *l,
			const int *order, size_t n)
{
	char *buf = malloc(T_LINES_MAX * (AUDIT_LINE_MAX + 1));
	size_t off = 0;

	assert_non_null(buf);
	for (size_t i = 0; i < n; i++) {
		memcpy(buf + off, l->at[order[i]], l->len[order[i]]);
		off += l->len[order[i]];
		buf[off++] = '\n';
	}
	write_log(dir, buf, off);
	free(buf);
}

static json_t *line_json(const struct lines *l, size_t i)
{
	json_t *rec = json_loadb(l->at[i], l->len[i], 0, NULL);

	assert_non_null(rec);
	return rec;
}

static json_t *last_record(const char *dir)
{
	struct lines l;
	json_t *rec;

	lines_read(dir, &l);
	assert_true(l.n > 0);
	rec = line_json(&l, l.n - 1);
	free(l.text);
	return rec;
}

static void expect_bad(const struct audit_report *rep, enum audit_tamper kind,
		       uint64_t line, uint64_t seq, uint64_t good)
{
	if (rep->ok || rep->kind != kind || rep->first_bad_line != line ||
	    rep->first_bad_seq != seq || rep->records != good)
		fail_msg("expected %s at line %llu (seq %llu) after %llu good, "
			 "got %s at line %llu (seq %llu) after %llu: %s",
			 audit_tamper_name(kind), (unsigned long long)line,
			 (unsigned long long)seq, (unsigned long long)good,
			 audit_tamper_name(rep->kind),
			 (unsigned long long)rep->first_bad_line,
			 (unsigned long long)rep->first_bad_seq,
			 (unsigned long long)rep->records, rep->message);
}

/* A fresh log of n records (closed). */
static void make_log(const char *dir, int n)
{
	struct audit *a = open_ok(dir);

	log_n(a, 1, n);
	audit_close(a);
}

/* ---- tests ------------------------------------------------------------ */

static void test_create_and_verify(void **state)
{
	const char *dir = *state;
	char path[512], head[65], hash[65];
	struct audit_report rep;
	struct lines l;
	struct stat st;
	uint64_t seq = 99;
	struct audit *a = open_ok(dir);
	json_t *r1, *r2, *r10;

	assert_int_equal(audit_head(a, &seq, head), 0);
	assert_int_equal(seq, 0);
	assert_string_equal(head, "000000000000000000000000000000000000000000"
				  "0000000000000000000000");
	log_n(a, 1, 10);
	assert_int_equal(audit_head(a, &seq, head), 0);
	assert_int_equal(seq, 10);
	audit_close(a);

	path_in(path, sizeof(path), dir, AUDIT_KEY_NAME);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	path_in(path, sizeof(path), dir, AUDIT_PUB_NAME);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);

	assert_int_equal(verify_dir(dir, &rep), 0);
	assert_true(rep.ok);
	assert_int_equal(rep.kind, AUDIT_TAMPER_NONE);
	assert_int_equal(rep.records, 10);
	assert_int_equal(rep.first_seq, 1);
	assert_int_equal(rep.last_seq, 10);
	assert_string_equal(rep.head_hash, head);

	lines_read(dir, &l);
	assert_int_equal(l.n, 10);
	r1 = line_json(&l, 0);
	r2 = line_json(&l, 1);
	r10 = line_json(&l, 9);
	assert_int_equal(json_integer_value(json_object_get(r1, "seq")), 1);
	assert_string_equal(json_string_value(json_object_get(r1, "prev")),
			    "0000000000000000000000000000000000000000000000000"
			    "000000000000000");
	assert_int_equal(audit_hash_hex(l.at[0], l.len[0], hash), 0);
	assert_string_equal(json_string_value(json_object_get(r2, "prev")),
			    hash);
	assert_int_equal(audit_hash_hex(l.at[9], l.len[9], hash), 0);
	assert_string_equal(hash, head);
	assert_string_equal(json_string_value(json_object_get(r10, "host")),
			    "host-a");
	assert_string_equal(json_string_value(json_object_get(r10, "actor")),
			    "alice");
	assert_string_equal(json_string_value(json_object_get(r10, "target")),
			    "vm-10");
	assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(r10, "detail"), "i")),
			 10);
	assert_true(json_integer_value(json_object_get(r10, "ts")) >
		    1600000000000LL);
	/* the line is the canonical form, keys sorted */
	assert_memory_equal(l.at[0], "{\"action\":\"vm.start\",\"actor\":", 29);
	json_decref(r1);
	json_decref(r2);
	json_decref(r10);
	free(l.text);
}

static void test_reopen_continues(void **state)
{
	const char *dir = *state;
	char head[65], head2[65];
	struct audit_report rep;
	uint64_t seq = 0;
	struct audit *a = open_ok(dir);
	json_t *last;

	log_n(a, 1, 3);
	assert_int_equal(audit_head(a, &seq, head), 0);
	audit_close(a);
	a = open_ok(dir);
	assert_int_equal(audit_head(a, &seq, head2), 0);
	assert_int_equal(seq, 3);
	assert_string_equal(head, head2);
	log_n(a, 4, 2);
	audit_close(a);
	assert_int_equal(verify_dir(dir, &rep), 0);
	assert_int_equal(rep.records, 5);
	assert_int_equal(rep.last_seq, 5);
	last = last_record(dir);
	assert_string_equal(json_string_value(json_object_get(last, "target")),
			    "vm-5");
	json_decref(last);
}

static void test_second_writer_refused(void **state)
{
	const char *dir = *state;
	struct ferr err = { 0 };
	struct audit *a = open_ok(dir), *b = NULL;

	assert_int_equal(audit_open(dir, "host-a", &b, &err), -1);
	assert_null(b);
	assert_int_equal(err.code, FERR_CONFLICT);
	audit_close(a);
	assert_int_equal(audit_open(dir, "bad host", &b, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	b = open_ok(dir);
	audit_close(b);
}

static void test_key_checks(void **state)
{
	const char *dir = *state;
	char path[512];
	struct ferr err = { 0 };
	struct audit *a = NULL;

	make_log(dir, 1);
	path_in(path, sizeof(path), dir, AUDIT_KEY_NAME);
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(audit_open(dir, "host-a", &a, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	assert_non_null(strstr(err.msg, "chmod 600"));
	assert_int_equal(chmod(path, 0600), 0);
	/* a key that is not Ed25519 */
	unlink(path);
	assert_int_equal(file_write_atomic(path, "not a key", 9, 0600, &err),
			 0);
	assert_int_equal(audit_open(dir, "host-a", &a, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	assert_null(a);
}

static void test_tamper_modified(void **state)
{
	const char *dir = *state;
	struct audit_report rep;
	struct lines l;
	char *p;

	make_log(dir, 8);
	lines_read(dir, &l);
	p = memmem(l.at[2], l.len[2], "\"vm-3\"", 6);
	assert_non_null(p);
	p[4] = 'X';
	write_log(dir, l.text, (size_t)(l.at[7] + l.len[7] + 1 - l.text));
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_MODIFIED, 3, 3, 2);
	assert_string_equal(rep.message, "line 3 (seq 3): signature does not "
					 "match: the record was modified");
	assert_int_equal(rep.last_seq, 2);
	free(l.text);
}

static void test_tamper_noncanonical(void **state)
{
	const char *dir = *state;
	struct audit_report rep;
	struct lines l;
	char *buf;
	size_t off = 0;

	make_log(dir, 4);
	lines_read(dir, &l);
	buf = malloc(8 * AUDIT_LINE_MAX);
	assert_non_null(buf);
	for (size_t i = 0; i < l.n; i++) {
		if (i == 1)
			buf[off++] = ' '; /* same record, other bytes */
		memcpy(buf + off, l.at[i], l.len[i]);
		off += l.len[i];
		buf[off++] = '\n';
	}
	assert_int_equal(verify_text(dir, buf, off, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_MODIFIED, 2, 2, 1);
	assert_non_null(strstr(rep.message, "canonical"));
	free(buf);
	free(l.text);
}

static void test_tamper_deleted(void **state)
{
	const char *dir = *state;
	static const int one[] = { 0, 1, 2, 4, 5, 6, 7 };
	static const int three[] = { 0, 1, 5, 6, 7 };
	struct audit_report rep;
	struct lines l;

	make_log(dir, 8);
	lines_read(dir, &l);
	lines_write(dir, &l, one, 7);
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_DELETED, 4, 5, 3);
	assert_int_equal(rep.expected_seq, 4);
	assert_non_null(strstr(rep.message, "1 record (seq 4) was deleted"));
	lines_write(dir, &l, three, 5);
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_DELETED, 3, 6, 2);
	assert_non_null(strstr(rep.message, "3 records (seq 3..5)"));
	free(l.text);
}

static void test_tamper_inserted(void **state)
{
	const char *dir = *state;
	static const int early_copy[] = { 0, 1, 2, 3, 4, 1, 5, 6, 7 };
	static const int late_copy[] = { 0, 1, 6, 2, 3, 4, 5, 6, 7 };
	static const int at_end[] = { 0, 1, 2, 3, 4, 5, 6, 7, 7 };
	struct audit_report rep;
	struct lines l;

	make_log(dir, 8);
	lines_read(dir, &l);
	/* a copy of record 2 after line 5 */
	lines_write(dir, &l, early_copy, 9);
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_INSERTED, 6, 2, 5);
	assert_non_null(strstr(rep.message, "a copy of line 2 (seq 2)"));
	/* a copy of record 7 after line 2 */
	lines_write(dir, &l, late_copy, 9);
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_INSERTED, 3, 7, 2);
	assert_non_null(strstr(rep.message, "appears again at line 8"));
	/* the last record twice */
	lines_write(dir, &l, at_end, 9);
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_INSERTED, 9, 8, 8);
	free(l.text);
}

static void test_tamper_forged(void **state)
{
	const char *dir = *state;
	struct audit_report rep;
	struct lines l;
	char *buf, *p;
	size_t off = 0;

	make_log(dir, 6);
	lines_read(dir, &l);
	buf = malloc(8 * (AUDIT_LINE_MAX + 1));
	assert_non_null(buf);
	for (size_t i = 0; i < l.n; i++) {
		if (i == 3) {
			/* a forged record 4 between lines 3 and 4 */
			memcpy(buf + off, l.at[i], l.len[i]);
			p = memmem(buf + off, l.len[i], "\"vm-4\"", 6);
			assert_non_null(p);
			p[4] = '9';
			off += l.len[i];
			buf[off++] = '\n';
		}
		memcpy(buf + off, l.at[i], l.len[i]);
		off += l.len[i];
		buf[off++] = '\n';
	}
	assert_int_equal(verify_text(dir, buf, off, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_INSERTED, 4, 4, 3);
	assert_non_null(strstr(rep.message, "forged"));
	/* a line that is no record at all */
	off = (size_t)(l.at[2] - l.text);
	memcpy(buf, l.text, off);
	memcpy(buf + off, "garbage\n", 8);
	off += 8;
	assert_int_equal(verify_text(dir, buf, off, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_MALFORMED, 3, 0, 2);
	assert_int_equal(rep.expected_seq, 3);
	free(buf);
	free(l.text);
}

/* Two logs signed by the same key (the log was restarted, the key kept):
 * a record of one spliced into the other has the right seq, not the right
 * prev. */
static void test_tamper_foreign(void **state)
{
	const char *dir = *state;
	char path[512], old[512];
	struct audit_report rep;
	struct lines a, b;
	char *buf;
	size_t off = 0;

	make_log(dir, 4);
	lines_read(dir, &a);
	path_in(path, sizeof(path), dir, AUDIT_LOG_NAME);
	path_in(old, sizeof(old), dir, "old.log");
	assert_int_equal(rename(path, old), 0);
	make_log(dir, 4);
	lines_read(dir, &b);
	buf = malloc(4 * (AUDIT_LINE_MAX + 1));
	assert_non_null(buf);
	for (size_t i = 0; i < 4; i++) {
		const struct lines *src = i < 2 ? &a : &b;

		memcpy(buf + off, src->at[i], src->len[i]);
		off += src->len[i];
		buf[off++] = '\n';
	}
	assert_int_equal(verify_text(dir, buf, off, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_INSERTED, 3, 3, 2);
	assert_non_null(strstr(rep.message, "another log"));
	free(buf);
	free(a.text);
	free(b.text);
}

static void test_tamper_reordered(void **state)
{
	const char *dir = *state;
	static const int swap[] = { 0, 1, 3, 2, 4, 5, 6, 7 };
	static const int moved[] = { 0, 1, 3, 4, 5, 2, 6, 7 };
	struct audit_report rep;
	struct lines l;

	make_log(dir, 8);
	lines_read(dir, &l);
	lines_write(dir, &l, swap, 8);
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_REORDERED, 3, 4, 2);
	assert_int_equal(rep.expected_seq, 3);
	assert_non_null(strstr(rep.message, "later (line 4)"));
	lines_write(dir, &l, moved, 8);
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_REORDERED, 3, 4, 2);
	assert_non_null(strstr(rep.message, "later (line 6)"));
	free(l.text);
}

static void test_tamper_truncated(void **state)
{
	const char *dir = *state;
	struct audit_report rep;
	struct lines l;
	size_t cut;

	make_log(dir, 8);
	lines_read(dir, &l);
	cut = (size_t)(l.at[5] - l.text) + l.len[5] / 2;
	assert_int_equal(verify_text(dir, l.text, cut, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_TRUNCATED, 6, 0, 5);
	assert_int_equal(rep.expected_seq, 6);
	assert_non_null(strstr(rep.message, "no newline"));
	/* only the newline cut: the record is whole, its seq known */
	cut = (size_t)(l.at[7] - l.text) + l.len[7];
	assert_int_equal(verify_text(dir, l.text, cut, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_TRUNCATED, 8, 8, 7);
	/* at a line boundary nothing shows (documented) */
	cut = (size_t)(l.at[7] - l.text);
	assert_int_equal(verify_text(dir, l.text, cut, &rep), 0);
	assert_int_equal(rep.records, 7);
	free(l.text);
}

static void test_torn_tail_recovered(void **state)
{
	const char *dir = *state;
	char path[512], name[64];
	struct audit_report rep;
	struct ferr err = { 0 };
	struct lines l;
	char *saved = NULL, *buf;
	size_t size, slen = 0, half;
	const char *torn2;
	struct audit *a;
	json_t *last, *detail;

	make_log(dir, 5);
	lines_read(dir, &l);
	size = (size_t)(l.at[4] + l.len[4] + 1 - l.text);
	half = l.len[1] / 2;
	/* half a record written when the host died */
	buf = malloc(size + AUDIT_LINE_MAX);
	assert_non_null(buf);
	memcpy(buf, l.text, size);
	memcpy(buf + size, l.at[1], half);
	write_log(dir, buf, size + half);
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_TRUNCATED, 6, 0, 5);

	a = open_ok(dir);
	audit_close(a);
	snprintf(name, sizeof(name), AUDIT_TORN_PREFIX "%zu", size);
	path_in(path, sizeof(path), dir, name);
	assert_int_equal(file_read_all(path, AUDIT_LINE_MAX, &saved, &slen,
				       &err),
			 0);
	assert_int_equal(slen, half);
	assert_memory_equal(saved, l.at[1], half);
	free(saved);
	assert_int_equal(verify_dir(dir, &rep), 0);
	assert_int_equal(rep.records, 6);
	last = last_record(dir);
	assert_string_equal(json_string_value(json_object_get(last, "action")),
			    AUDIT_ACTION_TORN);
	assert_int_equal(json_integer_value(json_object_get(last, "seq")), 6);
	detail = json_object_get(last, "detail");
	assert_int_equal(json_integer_value(json_object_get(detail, "offset")),
			 size);
	assert_int_equal(json_integer_value(json_object_get(detail, "bytes")),
			 half);
	assert_string_equal(json_string_value(json_object_get(detail,
							      "saved_as")),
			    name);
	json_decref(last);

	/* the recovery record itself torn at the same offset, other bytes:
	 * saved under a new name, the first file kept as it was */
	torn2 = l.at[2] + l.len[2] - T_TORN_BYTES;
	memcpy(buf + size, torn2, T_TORN_BYTES);
	write_log(dir, buf, size + T_TORN_BYTES);
	a = open_ok(dir);
	audit_close(a);
	last = last_record(dir);
	detail = json_object_get(last, "detail");
	snprintf(name, sizeof(name), AUDIT_TORN_PREFIX "%zu.1", size);
	assert_string_equal(json_string_value(json_object_get(detail,
							      "saved_as")),
			    name);
	json_decref(last);
	assert_int_equal(file_read_all(path, AUDIT_LINE_MAX, &saved, &slen,
				       &err),
			 0);
	assert_int_equal(slen, half);
	free(saved);
	path_in(path, sizeof(path), dir, name);
	assert_int_equal(file_read_all(path, AUDIT_LINE_MAX, &saved, &slen,
				       &err),
			 0);
	assert_int_equal(slen, T_TORN_BYTES);
	assert_memory_equal(saved, torn2, T_TORN_BYTES);
	free(saved);
	assert_int_equal(verify_dir(dir, &rep), 0);
	assert_int_equal(rep.records, 6);
	free(buf);
	free(l.text);
}

static void test_tamper_suspected(void **state)
{
	const char *dir = *state;
	char hash[65];
	struct audit_report rep;
	struct lines l;
	struct audit *a;
	json_t *last;
	char *p;

	make_log(dir, 4);
	lines_read(dir, &l);
	p = memmem(l.at[3], l.len[3], "\"vm-4\"", 6);
	assert_non_null(p);
	p[4] = '7';
	write_log(dir, l.text, (size_t)(l.at[3] + l.len[3] + 1 - l.text));
	assert_int_equal(audit_hash_hex(l.at[3], l.len[3], hash), 0);
	a = open_ok(dir);
	audit_close(a);
	last = last_record(dir);
	assert_string_equal(json_string_value(json_object_get(last, "action")),
			    AUDIT_ACTION_TAMPER);
	assert_int_equal(json_integer_value(json_object_get(last, "seq")), 5);
	assert_string_equal(json_string_value(json_object_get(last, "prev")),
			    hash);
	assert_non_null(strstr(json_string_value(json_object_get(
				       json_object_get(last, "detail"),
				       "reason")),
			       "signature"));
	json_decref(last);
	/* verify still names the modified record */
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_MODIFIED, 4, 4, 3);
	free(l.text);

	/* a last line that does not parse: seq continues by counting */
	lines_read(dir, &l);
	{
		size_t len = (size_t)(l.at[4] + l.len[4] + 1 - l.text);
		char *buf = malloc(len + 9);

		assert_non_null(buf);
		memcpy(buf, l.text, len);
		memcpy(buf + len, "garbage!\n", 9);
		write_log(dir, buf, len + 9);
		free(buf);
	}
	a = open_ok(dir);
	log_n(a, 100, 1);
	audit_close(a);
	free(l.text);
	lines_read(dir, &l);
	assert_int_equal(l.n, 8);
	last = line_json(&l, 6);
	assert_string_equal(json_string_value(json_object_get(last, "action")),
			    AUDIT_ACTION_TAMPER);
	assert_int_equal(json_integer_value(json_object_get(last, "seq")), 7);
	json_decref(last);
	last = line_json(&l, 7);
	assert_int_equal(json_integer_value(json_object_get(last, "seq")), 8);
	json_decref(last);
	free(l.text);
}

struct worker {
	struct audit *a;
	int id;
	int failures;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	struct ferr err;
	char actor[32];

	snprintf(actor, sizeof(actor), "user-%d", w->id);
	for (int i = 0; i < T_PER_THREAD; i++) {
		if (audit_log(w->a, actor, "policy.decision", "vm-x", "allow",
			      json_pack("{sisi}", "thread", w->id, "i", i),
			      &err) < 0)
			w->failures++;
	}
	return NULL;
}

static void test_concurrent(void **state)
{
	const char *dir = *state;
	struct worker w[T_THREADS];
	pthread_t th[T_THREADS];
	struct audit_report rep;
	struct ferr err = { 0 };
	struct audit *a = open_ok(dir);
	struct audit_series ser;
	char hash[AUDIT_HASH_HEX_LEN + 1];
	uint64_t seq = 0, hseq = 0;

	for (int i = 0; i < T_THREADS; i++) {
		w[i] = (struct worker){ .a = a, .id = i };
		assert_int_equal(pthread_create(&th[i], NULL, worker_run,
						&w[i]),
				 0);
	}
	for (int i = 0; i < T_THREADS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(w[i].failures, 0);
	}
	assert_int_equal(audit_head(a, &seq, NULL), 0);
	assert_int_equal(seq, T_THREADS * T_PER_THREAD);
	assert_int_equal(audit_series_snapshot(a, &ser, &hseq, hash, &err), 0);
	assert_int_equal(hseq, seq);
	assert_int_equal(ser.n, 1);
	audit_series_free(&ser);
	audit_close(a);
	assert_int_equal(verify_dir(dir, &rep), 0);
	assert_int_equal(rep.records, T_THREADS * T_PER_THREAD);
}

static void test_bounds(void **state)
{
	const char *dir = *state;
	char big[10000], actor[AUDIT_ACTOR_MAX + 2];
	struct audit_report rep;
	struct ferr err = { 0 };
	struct lines l;
	struct audit *a = open_ok(dir);
	json_t *deep, *r, *d;

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	/* 255 ASCII bytes then a 2-byte character across the bound */
	memset(actor, 'b', AUDIT_ACTOR_MAX - 1);
	memcpy(actor + AUDIT_ACTOR_MAX - 1, "\xc3\xa9", 3);
	deep = json_integer(1);
	for (int i = 0; i < 20; i++)
		deep = json_pack("{so}", "n", deep);
	assert_int_equal(audit_log(a, big, big, big, big,
				   json_pack("{ss}", "blob", big), &err),
			 0);
	assert_int_equal(audit_log(a, actor, "x", "\xff\xfevm", NULL,
				   json_pack("{sf}", "load", 0.5), &err),
			 0);
	assert_int_equal(audit_log(a, "", NULL, "t", "ok", deep, &err), 0);
	assert_int_equal(audit_log(a, "a", "b", "c", "d", json_integer(5),
				   &err),
			 0);
	/* a string made of control characters escapes 6 times */
	memset(big, 0x01, AUDIT_TARGET_MAX + 10);
	big[AUDIT_TARGET_MAX + 10] = '\0';
	assert_int_equal(audit_log(a, big, big, big, big, NULL, &err), 0);
	audit_close(a);

	assert_int_equal(verify_dir(dir, &rep), 0);
	assert_int_equal(rep.records, 5);
	lines_read(dir, &l);
	for (size_t i = 0; i < l.n; i++)
		assert_true(l.len[i] <= AUDIT_LINE_MAX);
	r = line_json(&l, 0);
	assert_int_equal(strlen(json_string_value(json_object_get(r, "actor"))),
			 AUDIT_ACTOR_MAX);
	assert_int_equal(strlen(json_string_value(json_object_get(r,
								  "action"))),
			 AUDIT_ACTION_MAX);
	assert_int_equal(strlen(json_string_value(json_object_get(r,
								  "outcome"))),
			 AUDIT_OUTCOME_MAX);
	d = json_object_get(r, "detail");
	assert_true(json_is_true(json_object_get(d, "truncated")));
	assert_true(json_integer_value(json_object_get(d, "bytes")) > 10000);
	assert_true(json_string_length(json_object_get(d, "prefix")) <=
		    AUDIT_DETAIL_PREFIX_MAX);
	json_decref(r);
	r = line_json(&l, 1);
	assert_int_equal(strlen(json_string_value(json_object_get(r, "actor"))),
			 AUDIT_ACTOR_MAX - 1);
	assert_string_equal(json_string_value(json_object_get(r, "target")),
			    "??vm");
	assert_string_equal(json_string_value(json_object_get(r, "outcome")),
			    "-");
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(r, "detail"), "load")),
			    "0.5");
	json_decref(r);
	r = line_json(&l, 2);
	assert_string_equal(json_string_value(json_object_get(r, "actor")),
			    "-");
	assert_string_equal(json_string_value(json_object_get(r, "action")),
			    "-");
	assert_non_null(strstr(l.at[2], "(nested too deep)"));
	json_decref(r);
	r = line_json(&l, 3);
	assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(r, "detail"), "value")),
			 5);
	json_decref(r);
	assert_true(l.len[4] > 6 * AUDIT_TARGET_MAX);
	free(l.text);
}

static void test_parse_hostile(void **state)
{
	const char *dir = *state;
	struct ferr err = { 0 };
	struct lines l;
	char buf[AUDIT_LINE_MAX + 64];
	char *long_line;
	json_t *rec = NULL;
	char *p;
	size_t n;

	make_log(dir, 1);
	lines_read(dir, &l);
	n = l.len[0];
	assert_int_equal(audit_parse_record(l.at[0], n, &rec, &err), 0);
	assert_int_equal(json_integer_value(json_object_get(rec, "seq")), 1);
	json_decref(rec);
	/* every proper prefix is refused */
	for (size_t i = 0; i < n; i++)
		assert_int_equal(audit_parse_record(l.at[0], i, NULL, &err),
				 -1);
	/* an extra field */
	snprintf(buf, sizeof(buf), "{\"x\":1,%.*s", (int)n - 1, l.at[0] + 1);
	assert_int_equal(audit_parse_record(buf, strlen(buf), NULL, &err), -1);
	assert_non_null(strstr(err.msg, "unknown field"));
	/* a duplicate key */
	snprintf(buf, sizeof(buf), "{\"seq\":1,%.*s", (int)n - 1, l.at[0] + 1);
	assert_int_equal(audit_parse_record(buf, strlen(buf), NULL, &err), -1);
	/* a real, a negative seq, an uppercase prev, a sig without padding */
	memcpy(buf, l.at[0], n);
	buf[n] = '\0';
	p = strstr(buf, "\"seq\":1");
	assert_non_null(p);
	p[6] = '0';
	assert_int_equal(audit_parse_record(buf, n, NULL, &err), -1);
	memcpy(buf, l.at[0], n);
	p = strstr(buf, "\"prev\":\"0");
	assert_non_null(p);
	p[8] = 'A';
	assert_int_equal(audit_parse_record(buf, n, NULL, &err), -1);
	assert_non_null(strstr(err.msg, "prev"));
	memcpy(buf, l.at[0], n);
	p = strstr(buf, "==\"");
	assert_non_null(p);
	p[0] = 'A';
	p[1] = 'A';
	assert_int_equal(audit_parse_record(buf, n, NULL, &err), -1);
	assert_non_null(strstr(err.msg, "sig"));
	assert_int_equal(audit_parse_record("{\"detail\":{\"a\":1.5}}", 20,
					    NULL, &err),
			 -1);
	assert_int_equal(audit_parse_record("[]", 2, NULL, &err), -1);
	assert_int_equal(audit_parse_record("", 0, NULL, &err), -1);
	assert_int_equal(audit_parse_record("{\"a\":\"\0\"}", 9, NULL, &err),
			 -1);
	/* whitespace: a valid record, but not its canonical bytes */
	buf[0] = ' ';
	memcpy(buf + 1, l.at[0], n);
	assert_int_equal(audit_parse_record(buf, n + 1, NULL, &err), -1);
	assert_non_null(strstr(err.msg, "canonical"));
	/* too long */
	long_line = malloc(AUDIT_LINE_MAX + 1);
	assert_non_null(long_line);
	memset(long_line, ' ', AUDIT_LINE_MAX + 1);
	assert_int_equal(audit_parse_record(long_line, AUDIT_LINE_MAX + 1,
					    NULL, &err),
			 -1);
	assert_int_equal(err.code, FERR_TOO_LARGE);
	free(long_line);
	free(l.text);
}

static void test_query(void **state)
{
	const char *dir = *state;
	struct audit_filter f;
	struct ferr err = { 0 };
	char path[512], missing[512];
	struct audit *a = open_ok(dir);
	json_t *all, *res;
	json_int_t ts2;
	size_t want = 0;
	FILE *fp;

	log_n(a, 1, 3);                           /* vm.start alice vm-1..3 */
	assert_int_equal(audit_log(a, "bob", "vm.stop", "vm-2", "ok", NULL,
				   &err), 0);
	assert_int_equal(audit_log(a, "bob", "policy.decision", "vm-2",
				   "deny", NULL, &err), 0);
	assert_int_equal(audit_log(a, "carol", "auth.failed", "-", "error",
				   NULL, &err), 0);
	audit_close(a);
	path_in(path, sizeof(path), dir, AUDIT_LOG_NAME);
	/* a line that does not parse is skipped */
	fp = fopen(path, "a");
	assert_non_null(fp);
	fputs("not a record\n", fp);
	fclose(fp);

	all = audit_query(path, NULL, &err);
	assert_non_null(all);
	assert_int_equal(json_array_size(all), 6);
	memset(&f, 0, sizeof(f));
	f.action = "vm.*";
	res = audit_query(path, &f, &err);
	assert_int_equal(json_array_size(res), 4);
	json_decref(res);
	f.action = "vm.stop";
	res = audit_query(path, &f, &err);
	assert_int_equal(json_array_size(res), 1);
	json_decref(res);
	memset(&f, 0, sizeof(f));
	f.target = "vm-2";
	res = audit_query(path, &f, &err);
	assert_int_equal(json_array_size(res), 3);
	json_decref(res);
	f.actor = "bob";
	res = audit_query(path, &f, &err);
	assert_int_equal(json_array_size(res), 2);
	json_decref(res);
	memset(&f, 0, sizeof(f));
	f.limit = 2; /* the newest two, oldest first */
	res = audit_query(path, &f, &err);
	assert_int_equal(json_array_size(res), 2);
	assert_int_equal(json_integer_value(json_object_get(
				 json_array_get(res, 0), "seq")),
			 5);
	assert_int_equal(json_integer_value(json_object_get(
				 json_array_get(res, 1), "seq")),
			 6);
	json_decref(res);
	/* since/until against the records' own timestamps */
	ts2 = json_integer_value(json_object_get(json_array_get(all, 1), "ts"));
	for (size_t i = 0; i < json_array_size(all); i++)
		if (json_integer_value(json_object_get(json_array_get(all, i),
						       "ts")) >= ts2)
			want++;
	memset(&f, 0, sizeof(f));
	f.since_ms = (uint64_t)ts2;
	res = audit_query(path, &f, &err);
	assert_int_equal(json_array_size(res), want);
	json_decref(res);
	f.since_ms = 0;
	f.until_ms = 1; /* long ago */
	res = audit_query(path, &f, &err);
	assert_int_equal(json_array_size(res), 0);
	json_decref(res);
	json_decref(all);
	path_in(missing, sizeof(missing), dir, "none.log");
	res = audit_query(missing, NULL, &err);
	assert_non_null(res);
	assert_int_equal(json_array_size(res), 0);
	json_decref(res);
}

/* ---- head, rotation, versions ------------------------------------------ */

/* The finding: deleting the first record(s) left a log that verified. */
static void test_head_deleted(void **state)
{
	const char *dir = *state;
	static const int no_first[] = { 1, 2, 3, 4, 5, 6, 7 };
	static const int no_three[] = { 3, 4, 5, 6, 7 };
	struct audit_report rep;
	struct lines l;

	make_log(dir, 8);
	lines_read(dir, &l);
	lines_write(dir, &l, no_first, 7);
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_DELETED, 1, 2, 0);
	assert_non_null(strstr(rep.message, "records 1..1 were deleted"));
	lines_write(dir, &l, no_three, 5);
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_DELETED, 1, 4, 0);
	assert_non_null(strstr(rep.message, "begins at seq 4, not 1"));
	free(l.text);
}

/* Names of the rotated files of dir, oldest first (at most max). */
static size_t rotated_files(const char *dir, char names[][AUDIT_FILE_NAME_MAX],
			    size_t max)
{
	struct audit_series s;
	struct ferr err = { 0 };
	size_t n = 0;

	assert_int_equal(audit_series_list(dir, &s, &err), 0);
	for (size_t i = 0; i < s.n && n < max; i++)
		if (s.files[i].last_seq)
			snprintf(names[n++], AUDIT_FILE_NAME_MAX, "%s",
				 s.files[i].name);
	audit_series_free(&s);
	return n;
}

static int verify_path_of(const char *dir, struct audit_report *rep)
{
	EVP_PKEY *pub = pub_of(dir);
	int rc = audit_verify_path(dir, pub, rep);

	EVP_PKEY_free(pub);
	return rc;
}

/* Large "vm.start" records until the log has rotated `times` times (few
 * records per file: each is fsynced); returns the count. */
static int log_until_rotated(struct audit *a, const char *dir, size_t times)
{
	char names[8][AUDIT_FILE_NAME_MAX], pad[AUDIT_DETAIL_MAX - 64];
	struct ferr err = { 0 };
	int n = 0;

	memset(pad, 'x', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	while (rotated_files(dir, names, 8) < times) {
		if (audit_log(a, "alice", "vm.start", "vm-1", "ok",
			      json_pack("{ss}", "pad", pad), &err) < 0)
			fail_msg("audit_log: %s", err.msg);
		n++;
		assert_true(n < 1000);
	}
	return n;
}

static void test_rotation(void **state)
{
	const char *dir = *state;
	char names[8][AUDIT_FILE_NAME_MAX], path[512], old[512];
	struct audit_report rep;
	struct ferr err = { 0 };
	struct audit *a = open_ok(dir);
	struct audit_filter all = { .limit = AUDIT_QUERY_MAX };
	uint64_t seq = 0;
	json_t *recs;
	int n;

	assert_int_equal(audit_set_rotate(a, 100, &err), -1);
	assert_int_equal(audit_set_rotate(a, AUDIT_ROTATE_MIN, &err), 0);
	n = log_until_rotated(a, dir, 2);
	assert_int_equal(audit_head(a, &seq, NULL), 0);
	audit_close(a);
	/* the chain runs through the files; each later file is anchored */
	assert_int_equal(verify_path_of(dir, &rep), 0);
	assert_int_equal(rep.files, 3);
	assert_int_equal(rep.first_seq, 1);
	assert_int_equal(rep.last_seq, seq);
	assert_int_equal(rep.records, seq);
	assert_true(seq == (uint64_t)n + 2); /* plus two audit.rotated */
	/* queries see every file */
	path_in(path, sizeof(path), dir, AUDIT_LOG_NAME);
	all.action = AUDIT_ACTION_ROTATED;
	recs = audit_query(path, &all, &err);
	assert_non_null(recs);
	assert_int_equal(json_array_size(recs), 2);
	json_decref(recs);
	all.action = "vm.start";
	recs = audit_query(path, &all, &err);
	assert_int_equal(json_array_size(recs), n);
	json_decref(recs);
	/* the oldest file removed: the head is missing */
	assert_int_equal(rotated_files(dir, names, 8), 2);
	path_in(old, sizeof(old), dir, names[0]);
	assert_int_equal(rename(old, path_in_tmp(dir)), 0);
	assert_int_equal(verify_path_of(dir, &rep), -1);
	assert_int_equal(rep.kind, AUDIT_TAMPER_DELETED);
	assert_non_null(strstr(rep.message, "are missing"));
	assert_non_null(strstr(rep.message, names[0]));
	assert_int_equal(rename(path_in_tmp(dir), old), 0);
	assert_int_equal(verify_path_of(dir, &rep), 0);
}

/* A rotation cut short after its rename: reopening goes on from the
 * rotated file and begins the new one with its audit.rotated record. */
static void test_rotation_interrupted(void **state)
{
	const char *dir = *state;
	char live[512], rotated[512], name[AUDIT_FILE_NAME_MAX];
	struct audit_report rep;
	struct audit *a;
	json_t *rec;
	uint64_t seq = 0;

	make_log(dir, 5);
	path_in(live, sizeof(live), dir, AUDIT_LOG_NAME);
	snprintf(name, sizeof(name), AUDIT_LOG_NAME ".5");
	path_in(rotated, sizeof(rotated), dir, name);
	assert_int_equal(rename(live, rotated), 0);
	a = open_ok(dir);
	log_n(a, 6, 1);
	assert_int_equal(audit_head(a, &seq, NULL), 0);
	assert_int_equal(seq, 7);
	audit_close(a);
	assert_int_equal(verify_path_of(dir, &rep), 0);
	assert_int_equal(rep.records, 7);
	assert_int_equal(rep.files, 2);
	{
		struct lines l;

		lines_read(dir, &l);
		rec = line_json(&l, 0);
		free(l.text);
	}
	assert_string_equal(json_string_value(json_object_get(rec, "action")),
			    AUDIT_ACTION_ROTATED);
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(rec, "detail"), "previous")),
			    name);
	json_decref(rec);
}

/* Sign rec (its "sig" replaced) with the folder's key; the line in buf. */
static size_t resign(const char *dir, json_t *rec, char *buf, size_t len)
{
	char path[512], sig64[AUDIT_SIG_B64_LEN + 1];
	unsigned char sig[AUDIT_SIG_LEN];
	size_t slen = sizeof(sig), n;
	struct ferr err = { 0 };
	char *pem = NULL;
	size_t plen = 0;
	EVP_PKEY *key;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	path_in(path, sizeof(path), dir, AUDIT_KEY_NAME);
	assert_int_equal(file_read_all(path, 4096, &pem, &plen, &err), 0);
	key = audit_pem_key(pem, plen, true, path, &err);
	assert_non_null(key);
	json_object_del(rec, "sig");
	n = json_dumpb(rec, buf, len, AUDIT_JSON_FLAGS);
	assert_true(n > 0 && n < len);
	assert_int_equal(EVP_DigestSignInit(ctx, NULL, NULL, NULL, key), 1);
	assert_int_equal(EVP_DigestSign(ctx, sig, &slen,
					(const unsigned char *)buf, n),
			 1);
	EVP_EncodeBlock((unsigned char *)sig64, sig, AUDIT_SIG_LEN);
	json_object_set_new(rec, "sig", json_string(sig64));
	n = json_dumpb(rec, buf, len, AUDIT_JSON_FLAGS);
	assert_true(n > 0 && n < len);
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(key);
	free(pem);
	return n;
}

/* Rewrite the folder's log: edit(rec, i) on every record, the chain and
 * signatures made good again. */
static void rewrite_log(const char *dir, void (*edit)(json_t *, size_t))
{
	char *buf = malloc(T_LINES_MAX * (AUDIT_LINE_MAX + 1));
	char prev[AUDIT_HASH_HEX_LEN + 1];
	struct lines l;
	size_t off = 0;

	assert_non_null(buf);
	memset(prev, '0', AUDIT_HASH_HEX_LEN);
	prev[AUDIT_HASH_HEX_LEN] = '\0';
	lines_read(dir, &l);
	for (size_t i = 0; i < l.n; i++) {
		json_t *rec = line_json(&l, i);
		size_t n;

		edit(rec, i);
		json_object_set_new(rec, "prev", json_string(prev));
		n = resign(dir, rec, buf + off, AUDIT_LINE_MAX + 1);
		assert_int_equal(audit_hash_hex(buf + off, n, prev), 0);
		off += n;
		buf[off++] = '\n';
		json_decref(rec);
	}
	write_log(dir, buf, off);
	free(buf);
	free(l.text);
}

static void edit_legacy(json_t *rec, size_t i)
{
	(void)i;
	json_object_del(rec, "v");
}

static void edit_newer_minor(json_t *rec, size_t i)
{
	if (i == 1) {
		json_object_set_new(rec, "v", json_string("1.7"));
		json_object_set_new(rec, "zone", json_string("eu-1"));
	}
}

static void edit_newer_major(json_t *rec, size_t i)
{
	if (i == 2)
		json_object_set_new(rec, "v", json_string("2.0"));
}

static void edit_unknown_field(json_t *rec, size_t i)
{
	if (i == 2)
		json_object_set_new(rec, "zone", json_string("eu-1"));
}

static void test_versions(void **state)
{
	const char *dir = *state;
	struct audit_report rep;
	struct audit *a;
	json_t *rec;

	/* records carry the version they were written in */
	make_log(dir, 4);
	rec = last_record(dir);
	assert_string_equal(json_string_value(json_object_get(rec, "v")),
			    AUDIT_FORMAT_STR);
	json_decref(rec);
	/* a log of an older ferry (no "v": 1.0) verifies, and a new writer
	 * continues it: rolling upgrades */
	rewrite_log(dir, edit_legacy);
	assert_int_equal(verify_dir(dir, &rep), 0);
	a = open_ok(dir);
	log_n(a, 5, 2);
	audit_close(a);
	assert_int_equal(verify_dir(dir, &rep), 0);
	assert_int_equal(rep.records, 6);
	/* a newer minor with a field this ferry does not know: accepted */
	rewrite_log(dir, edit_newer_minor);
	assert_int_equal(verify_dir(dir, &rep), 0);
	/* ... but not an unknown field in a version this ferry knows */
	rewrite_log(dir, edit_unknown_field);
	assert_int_equal(verify_dir(dir, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_MALFORMED, 3, 0, 2);
	/* another major: refused, naming both versions */
	rewrite_log(dir, edit_newer_major);
	assert_int_equal(verify_dir(dir, &rep), -1);
	assert_int_equal(rep.kind, AUDIT_TAMPER_ERROR);
	assert_int_equal(rep.first_bad_line, 3);
	assert_non_null(strstr(rep.message, "record format 2.0 is not "
					    "supported"));
	assert_non_null(strstr(rep.message, "this ferry reads 1.x"));
}

static void test_wrong_key(void **state)
{
	const char *dir = *state;
	struct audit_report rep;
	size_t len = 0;
	char *text;
	EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

	assert_non_null(other);
	assert_non_null(ec);
	make_log(dir, 3);
	text = read_log(dir, &len);
	assert_int_equal(audit_verify(text, len, other, &rep), -1);
	expect_bad(&rep, AUDIT_TAMPER_MODIFIED, 1, 1, 0);
	assert_int_equal(audit_verify(text, len, ec, &rep), -1);
	assert_int_equal(rep.kind, AUDIT_TAMPER_ERROR);
	assert_int_equal(audit_verify(text, 0, other, &rep), 0);
	assert_int_equal(rep.records, 0);
	free(text);
	EVP_PKEY_free(other);
	EVP_PKEY_free(ec);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown_dir)

/* Refusal totals (for /v1/metrics) survive flushes; actions past
 * AUDIT_REFUSAL_ACTIONS count under "other". */
static void test_refusal_totals(void **state)
{
	struct audit_refusal_total t[AUDIT_REFUSAL_ACTIONS + 1];
	struct audit *a = open_ok(*state);
	struct audit_refusals *r = NULL;
	struct ferr err = { 0 };
	char action[32];

	assert_int_equal(audit_refusals_new(a, &r, &err), 0);
	assert_int_equal(audit_refusals_totals(r, t), 0);
	for (int i = 0; i < 3; i++)
		audit_refused(r, "auth.failed", "10.0.0.1", "no certificate");
	audit_refused(r, "rate.limited", "alice", "too fast");
	assert_int_equal(audit_refusals_flush(r, &err), 0);
	audit_refused(r, "auth.failed", "10.0.0.2", "no certificate");
	assert_int_equal(audit_refusals_totals(r, t), 2);
	assert_string_equal(t[0].action, "auth.failed");
	assert_int_equal(t[0].count, 4);
	assert_string_equal(t[1].action, "rate.limited");
	assert_int_equal(t[1].count, 1);
	for (int i = 0; i < AUDIT_REFUSAL_ACTIONS; i++) {
		snprintf(action, sizeof(action), "x.%d", i);
		audit_refused(r, action, "-", "why");
	}
	assert_int_equal(audit_refusals_totals(r, t),
			 AUDIT_REFUSAL_ACTIONS + 1);
	assert_string_equal(t[AUDIT_REFUSAL_ACTIONS - 1].action, "x.5");
	assert_string_equal(t[AUDIT_REFUSAL_ACTIONS].action,
			    AUDIT_REFUSAL_OTHER);
	assert_int_equal(t[AUDIT_REFUSAL_ACTIONS].count, 2);
	audit_refusals_free(r);
	audit_close(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_create_and_verify),
		T(test_reopen_continues),
		T(test_second_writer_refused),
		T(test_key_checks),
		T(test_tamper_modified),
		T(test_tamper_noncanonical),
		T(test_tamper_deleted),
		T(test_tamper_inserted),
		T(test_tamper_forged),
		T(test_tamper_foreign),
		T(test_tamper_reordered),
		T(test_tamper_truncated),
		T(test_torn_tail_recovered),
		T(test_tamper_suspected),
		T(test_concurrent),
		T(test_bounds),
		T(test_parse_hostile),
		T(test_query),
		T(test_wrong_key),
		T(test_refusal_totals),
		T(test_head_deleted),
		T(test_rotation),
		T(test_rotation_interrupted),
		T(test_versions),
	};

	log_set_level(LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
