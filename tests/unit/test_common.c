/* Unit tests of common helpers: numbers, names, atomic files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common.h"

static void test_parse_u64(void **state)
{
	uint64_t v = 0;

	(void)state;
	assert_int_equal(parse_u64("42", 0, 100, &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(parse_u64("18446744073709551615", 0, UINT64_MAX, &v),
			 0);
	assert_int_equal(parse_u64("18446744073709551616", 0, UINT64_MAX, &v),
			 -1);
	assert_int_equal(parse_u64("", 0, 10, &v), -1);
	assert_int_equal(parse_u64("-1", 0, 10, &v), -1);
	assert_int_equal(parse_u64(" 1", 0, 10, &v), -1);
	assert_int_equal(parse_u64("1x", 0, 10, &v), -1);
	assert_int_equal(parse_u64("11", 0, 10, &v), -1);
	assert_int_equal(parse_u64("0", 1, 10, &v), -1);
}

static void test_names(void **state)
{
	char longname[FERRY_NAME_MAX + 2];

	(void)state;
	assert_true(name_is_valid("vm1"));
	assert_true(name_is_valid("a.b_c-d"));
	assert_false(name_is_valid(""));
	assert_false(name_is_valid("Vm"));
	assert_false(name_is_valid("-vm"));
	assert_false(name_is_valid("a/b"));
	assert_false(name_is_valid("a b"));
	assert_false(name_is_valid(NULL));
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_false(name_is_valid(longname));
	longname[FERRY_NAME_MAX] = '\0';
	assert_true(name_is_valid(longname));
}

static void test_atomic_write(void **state)
{
	char dir[] = "/tmp/ferry-test-XXXXXX";
	char path[256];
	char *data = NULL;
	size_t len = 0;
	struct stat st;
	struct ferr err = { 0 };

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/f.json", dir);
	assert_int_equal(file_write_atomic(path, "one", 3, 0600, &err), 0);
	assert_int_equal(file_write_atomic(path, "two!", 4, 0600, &err), 0);
	assert_int_equal(file_read_all(path, 100, &data, &len, &err), 0);
	assert_int_equal(len, 4);
	assert_string_equal(data, "two!");
	free(data);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* too large for the limit */
	assert_int_equal(file_read_all(path, 3, &data, &len, &err), -1);
	assert_int_equal(err.code, FERR_TOO_LARGE);
	/* a missing file */
	snprintf(path, sizeof(path), "%s/none", dir);
	assert_int_equal(file_read_all(path, 3, &data, &len, &err), -1);
	assert_int_equal(err.code, FERR_NOT_FOUND);
	/* a write into a missing folder leaves nothing behind */
	snprintf(path, sizeof(path), "%s/no/such", dir);
	assert_int_equal(file_write_atomic(path, "x", 1, 0600, &err), -1);
	assert_int_equal(rmtree(dir, &err), 0);
	assert_int_equal(access(dir, F_OK), -1);
}

static void test_error_table(void **state)
{
	(void)state;
	assert_int_equal(ferr_http_status(FERR_NOT_FOUND), 404);
	assert_int_equal(ferr_http_status(FERR_CONFLICT), 409);
	assert_int_equal(ferr_http_status(FERR_TOO_LARGE), 413);
	assert_string_equal(ferr_code_name(FERR_INVALID), "invalid_request");
	assert_int_equal(ferr_http_status((enum ferr_code)999), 500);
}

/* "[[[...{}...]]]": n nested arrays around an empty object, in an object. */
static char *nested(unsigned n)
{
	char *s = malloc(2 * n + 16);
	size_t off = 0;

	off += (size_t)sprintf(s + off, "{\"a\":");
	for (unsigned i = 0; i < n; i++)
		s[off++] = '[';
	s[off++] = '1';
	for (unsigned i = 0; i < n; i++)
		s[off++] = ']';
	s[off++] = '}';
	s[off] = '\0';
	return s;
}

/* JSON from outside is nested at most FERRY_JSON_DEPTH_MAX levels. */
static void test_json_depth(void **state)
{
	struct ferr err = { 0 };
	char *ok = nested(FERRY_JSON_DEPTH_MAX - 1); /* + the object */
	char *deep = nested(FERRY_JSON_DEPTH_MAX);
	char *deeper = nested(1000);
	json_t *j;

	(void)state;
	j = json_parse_object(ok, strlen(ok), "body", &err);
	assert_non_null(j);
	assert_int_equal(json_check_depth(j, "x", &err), 0);
	json_decref(j);
	assert_null(json_parse_object(deep, strlen(deep), "body", &err));
	assert_int_equal(err.code, FERR_INVALID);
	assert_string_equal(err.msg, "body: JSON nested deeper than 16 levels");
	assert_null(json_parse_object(deeper, strlen(deeper), "body", &err));
	assert_string_equal(err.msg, "body: JSON nested deeper than 16 levels");
	/* scalars and flat values are depth 0 and 1 */
	j = json_integer(1);
	assert_int_equal(json_check_depth(j, "x", &err), 0);
	json_decref(j);
	free(ok);
	free(deep);
	free(deeper);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_u64),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_atomic_write),
		cmocka_unit_test(test_error_table),
		cmocka_unit_test(test_json_depth),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
