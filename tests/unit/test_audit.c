/* Unit tests of the audit log: signed records, reopening, the single
 * writer, keys, concurrency, bounds, hostile parsing, queries and refusal
 * totals. Tampering: test_audit_verify.c; head, rotation and record
 * versions: test_audit_rotate.c. */
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

#define T_THREADS 4
#define T_PER_THREAD 200

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
		T(test_concurrent),
		T(test_bounds),
		T(test_parse_hostile),
		T(test_query),
		T(test_refusal_totals),
	};

	log_set_level(LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
