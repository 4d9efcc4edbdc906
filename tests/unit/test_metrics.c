/* Unit tests of the Prometheus text writer: the exact text of each kind of
 * family, escaping, value forms, and every refusal. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

/* Finish m, expecting success; the text (caller frees). */
static char *finish_ok(struct metrics *m)
{
	struct ferr err = { 0 };
	char *text = NULL;
	size_t len = 0;

	if (metrics_finish(m, &text, &len, &err) < 0)
		fail_msg("metrics_finish: %s", err.msg);
	assert_int_equal(len, strlen(text));
	metrics_free(m);
	return text;
}

/* Finish m, expecting the error whose message contains want. */
static void finish_err(struct metrics *m, enum ferr_code code,
		       const char *want)
{
	struct ferr err = { 0 };
	char *text = NULL;
	size_t len = 0;

	assert_int_equal(metrics_finish(m, &text, &len, &err), -1);
	assert_null(text);
	assert_int_equal(err.code, code);
	if (!strstr(err.msg, want))
		fail_msg("error \"%s\" lacks \"%s\"", err.msg, want);
	metrics_free(m);
}

static void test_counter_and_gauge(void **state)
{
	struct metrics *m = metrics_new();
	struct metric_label l[] = { { "role", "source" },
				    { "outcome", "completed" } };
	char *t;

	(void)state;
	metrics_family(m, "ferry_migrations_total", METRIC_COUNTER,
		       "Migrations that ended, by role and outcome.");
	metrics_sample(m, l, 2, 3);
	metrics_sample(m, l, 1, 0);
	metrics_family(m, "ferry_up", METRIC_GAUGE, "Always 1.");
	metrics_sample(m, NULL, 0, 1);
	t = finish_ok(m);
	assert_string_equal(
		t, "# HELP ferry_migrations_total Migrations that ended, by "
		   "role and outcome.\n"
		   "# TYPE ferry_migrations_total counter\n"
		   "ferry_migrations_total{role=\"source\",outcome="
		   "\"completed\"} 3\n"
		   "ferry_migrations_total{role=\"source\"} 0\n"
		   "# HELP ferry_up Always 1.\n"
		   "# TYPE ferry_up gauge\n"
		   "ferry_up 1\n");
	free(t);
}

static void test_histogram(void **state)
{
	static const double bounds[] = { 0.1, 0.5, 2 };
	static const uint64_t counts[] = { 1, 0, 2, 4 };
	struct metric_hist h = { bounds, counts, 3, 42.25 };
	struct metric_label l[] = { { "role", "source" } };
	struct metrics *m = metrics_new();
	char *t;

	(void)state;
	metrics_family(m, "d_seconds", METRIC_HISTOGRAM, "Durations.");
	metrics_histogram(m, l, 1, &h);
	metrics_histogram(m, NULL, 0, &h);
	t = finish_ok(m);
	assert_string_equal(t, "# HELP d_seconds Durations.\n"
			       "# TYPE d_seconds histogram\n"
			       "d_seconds_bucket{role=\"source\",le=\"0.1\"} "
			       "1\n"
			       "d_seconds_bucket{role=\"source\",le=\"0.5\"} "
			       "1\n"
			       "d_seconds_bucket{role=\"source\",le=\"2\"} 3\n"
			       "d_seconds_bucket{role=\"source\",le=\"+Inf\"} "
			       "7\n"
			       "d_seconds_sum{role=\"source\"} 42.25\n"
			       "d_seconds_count{role=\"source\"} 7\n"
			       "d_seconds_bucket{le=\"0.1\"} 1\n"
			       "d_seconds_bucket{le=\"0.5\"} 1\n"
			       "d_seconds_bucket{le=\"2\"} 3\n"
			       "d_seconds_bucket{le=\"+Inf\"} 7\n"
			       "d_seconds_sum 42.25\n"
			       "d_seconds_count 7\n");
	free(t);
}

static void test_escaping(void **state)
{
	struct metric_label l[] = { { "vm", "a\"b\\c\nd" } };
	struct metrics *m = metrics_new();
	char *t;

	(void)state;
	metrics_family(m, "x", METRIC_GAUGE, "back\\slash \"quoted\"\nnext");
	metrics_sample(m, l, 1, 1);
	t = finish_ok(m);
	/* help escapes backslash and newline only; label values also the
	 * double quote */
	assert_string_equal(t, "# HELP x back\\\\slash \"quoted\"\\nnext\n"
			       "# TYPE x gauge\n"
			       "x{vm=\"a\\\"b\\\\c\\nd\"} 1\n");
	free(t);
}

static void test_values(void **state)
{
	struct metrics *m = metrics_new();
	char *t;

	(void)state;
	metrics_family(m, "v", METRIC_GAUGE, "h");
	metrics_sample(m, NULL, 0, 0.1);
	metrics_sample(m, NULL, 0, -2);
	metrics_sample(m, NULL, 0, 1e300);
	metrics_sample(m, NULL, 0, INFINITY);
	metrics_sample(m, NULL, 0, -INFINITY);
	metrics_sample(m, NULL, 0, NAN);
	metrics_sample(m, NULL, 0, 9007199254740993.0); /* 2^53 + 1 */
	t = finish_ok(m);
	assert_string_equal(t, "# HELP v h\n# TYPE v gauge\n"
			       "v 0.1\nv -2\nv 1e+300\nv +Inf\nv -Inf\n"
			       "v NaN\nv 9007199254740992\n");
	free(t);
}

static void test_empty(void **state)
{
	char *t;

	(void)state;
	t = finish_ok(metrics_new());
	assert_string_equal(t, "");
	free(t);
}

static void test_bad_names(void **state)
{
	struct metric_label bad_label[] = { { "9x", "v" } };
	struct metric_label reserved[] = { { "__name", "v" } };
	struct metric_label le[] = { { "le", "1" } };
	struct metric_label twice[] = { { "a", "1" }, { "a", "2" } };
	struct metric_label not_utf8[] = { { "a", "\xc3\x28" } };
	struct metric_label surrogate[] = { { "a", "\xed\xa0\x80" } };
	static const double b[] = { 1 };
	static const uint64_t c[] = { 0, 0 };
	struct metric_hist h = { b, c, 1, 0 };
	struct metrics *m;

	(void)state;
	m = metrics_new();
	metrics_family(m, "1abc", METRIC_GAUGE, "h");
	finish_err(m, FERR_INVALID, "not a metric name");
	m = metrics_new();
	metrics_family(m, "a-b", METRIC_GAUGE, "h");
	finish_err(m, FERR_INVALID, "not a metric name");
	m = metrics_new();
	metrics_family(m, "", METRIC_GAUGE, "h");
	finish_err(m, FERR_INVALID, "not a metric name");
	m = metrics_new();
	metrics_family(m, "ok", METRIC_GAUGE, "bad \xff");
	finish_err(m, FERR_INVALID, "not UTF-8");
	m = metrics_new();
	metrics_family(m, "ok", METRIC_GAUGE, "h");
	metrics_sample(m, bad_label, 1, 1);
	finish_err(m, FERR_INVALID, "not a label name");
	m = metrics_new();
	metrics_family(m, "ok", METRIC_GAUGE, "h");
	metrics_sample(m, reserved, 1, 1);
	finish_err(m, FERR_INVALID, "not a label name");
	m = metrics_new();
	metrics_family(m, "ok", METRIC_HISTOGRAM, "h");
	metrics_histogram(m, le, 1, &h);
	finish_err(m, FERR_INVALID, "not a label name");
	m = metrics_new();
	metrics_family(m, "ok", METRIC_GAUGE, "h");
	metrics_sample(m, twice, 2, 1);
	finish_err(m, FERR_INVALID, "given twice");
	m = metrics_new();
	metrics_family(m, "ok", METRIC_GAUGE, "h");
	metrics_sample(m, not_utf8, 1, 1);
	finish_err(m, FERR_INVALID, "not UTF-8");
	m = metrics_new();
	metrics_family(m, "ok", METRIC_GAUGE, "h");
	metrics_sample(m, surrogate, 1, 1);
	finish_err(m, FERR_INVALID, "not UTF-8");
}

static void test_bad_structure(void **state)
{
	static const double desc[] = { 2, 1 };
	static const double inf[] = { INFINITY };
	static const uint64_t c[] = { 0, 0, 0 };
	static const double one[] = { 1 };
	static const uint64_t big[] = { UINT64_MAX, 1 };
	struct metric_hist h_desc = { desc, c, 2, 0 };
	struct metric_hist h_inf = { inf, c, 1, 0 };
	struct metric_hist h_big = { one, big, 1, 0 };
	struct metric_hist h_ok = { desc, c, 1, 0 };
	struct metrics *m;

	(void)state;
	m = metrics_new();
	metrics_sample(m, NULL, 0, 1); /* no family */
	finish_err(m, FERR_INVALID, "needs a counter or gauge");
	m = metrics_new();
	metrics_family(m, "a", METRIC_GAUGE, "h");
	metrics_family(m, "a", METRIC_COUNTER, "h");
	finish_err(m, FERR_INVALID, "begun twice");
	m = metrics_new();
	metrics_family(m, "a", METRIC_GAUGE, "h");
	metrics_histogram(m, NULL, 0, &h_ok);
	finish_err(m, FERR_INVALID, "needs a histogram family");
	m = metrics_new();
	metrics_family(m, "a", METRIC_HISTOGRAM, "h");
	metrics_sample(m, NULL, 0, 1);
	finish_err(m, FERR_INVALID, "needs a counter or gauge");
	m = metrics_new();
	metrics_family(m, "a_total", METRIC_COUNTER, "h");
	metrics_sample(m, NULL, 0, -1);
	finish_err(m, FERR_INVALID, "not negative");
	m = metrics_new();
	metrics_family(m, "a_total", METRIC_COUNTER, "h");
	metrics_sample(m, NULL, 0, NAN);
	finish_err(m, FERR_INVALID, "not negative");
	m = metrics_new();
	metrics_family(m, "a", METRIC_HISTOGRAM, "h");
	metrics_histogram(m, NULL, 0, &h_desc);
	finish_err(m, FERR_INVALID, "strictly ascending");
	m = metrics_new();
	metrics_family(m, "a", METRIC_HISTOGRAM, "h");
	metrics_histogram(m, NULL, 0, &h_inf);
	finish_err(m, FERR_INVALID, "strictly ascending");
	m = metrics_new();
	metrics_family(m, "a", METRIC_HISTOGRAM, "h");
	metrics_histogram(m, NULL, 0, &h_big);
	finish_err(m, FERR_INVALID, "overflow");
}

/* The first error sticks; later calls change nothing. */
static void test_sticky(void **state)
{
	struct metrics *m = metrics_new();

	(void)state;
	metrics_family(m, "bad name", METRIC_GAUGE, "h");
	metrics_family(m, "good", METRIC_GAUGE, "h");
	metrics_sample(m, NULL, 0, 1);
	finish_err(m, FERR_INVALID, "\"bad name\" is not a metric name");
}

static void test_limits(void **state)
{
	struct metrics *m = metrics_new();
	struct metric_label l[] = { { "v", NULL } };
	char *big = malloc(1024 * 1024);
	char name[32];

	(void)state;
	assert_non_null(big);
	memset(big, 'x', 1024 * 1024 - 1);
	big[1024 * 1024 - 1] = '\0';
	l[0].value = big;
	metrics_family(m, "a", METRIC_GAUGE, "h");
	for (int i = 0; i < 9; i++)
		metrics_sample(m, l, 1, i);
	finish_err(m, FERR_TOO_LARGE, "bytes");
	free(big);
	m = metrics_new();
	for (int i = 0; i <= METRICS_FAMILIES_MAX; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		metrics_family(m, name, METRIC_GAUGE, "h");
	}
	finish_err(m, FERR_TOO_LARGE, "families");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counter_and_gauge),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test(test_bad_structure),
		cmocka_unit_test(test_sticky),
		cmocka_unit_test(test_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
