/* Unit tests of audit verification: every kind of tampering verify must
 * name, tail recovery and a wrong key. */
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

#include "audit_fixture.h"

#define T_TORN_BYTES 40

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

int main(void)
{
	const struct CMUnitTest tests[] = {
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
		T(test_wrong_key),
	};

	log_set_level(LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
