/* Unit tests of the migration journal (src/migrate/journal.c): durable
 * records, versions, refusals of broken or foreign records, expiry. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "migrate_int.h"

#define ID1 "0123456789abcdef0123456789abcdef"
#define ID2 "fedcba9876543210fedcba9876543210"

struct fix {
	char state[64];
	char dir[FERRY_PATH_MAX];
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	struct ferr err;

	snprintf(f->state, sizeof(f->state), "/tmp/ferry-journal-XXXXXX");
	assert_non_null(mkdtemp(f->state));
	assert_int_equal(journal_init(f->state, f->dir, sizeof(f->dir), &err),
			 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;
	struct ferr err;

	rmtree(f->state, &err);
	free(f);
	return 0;
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[FERRY_PATH_MAX];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void test_write_read_remove(void **state)
{
	struct fix *f = *state;
	json_t *rec = json_pack("{s:s, s:s}", "phase", "prepared", "vm", "v1");
	struct ferr err;
	json_t *back;

	assert_int_equal(journal_write(f->dir, JOURNAL_SOURCE, ID1, rec, &err),
			 0);
	back = journal_read(f->dir, JOURNAL_SOURCE, ID1, &err);
	assert_non_null(back);
	assert_string_equal(json_string_value(json_object_get(back, "phase")),
			    "prepared");
	assert_string_equal(json_string_value(json_object_get(back, "role")),
			    "source");
	assert_string_equal(json_string_value(json_object_get(back, "id")),
			    ID1);
	assert_string_equal(
		json_string_value(json_object_get(back, "version")), "1.0");
	json_decref(back);
	/* the roles are apart */
	assert_null(journal_read(f->dir, JOURNAL_DEST, ID1, &err));
	assert_int_equal(err.code, FERR_NOT_FOUND);
	/* a rewrite replaces it */
	json_object_set_new(rec, "phase", json_string("switchover"));
	assert_int_equal(journal_write(f->dir, JOURNAL_SOURCE, ID1, rec, &err),
			 0);
	back = journal_read(f->dir, JOURNAL_SOURCE, ID1, &err);
	assert_string_equal(json_string_value(json_object_get(back, "phase")),
			    "switchover");
	json_decref(back);
	assert_int_equal(journal_remove(f->dir, JOURNAL_SOURCE, ID1, &err), 0);
	assert_int_equal(journal_remove(f->dir, JOURNAL_SOURCE, ID1, &err), 0);
	assert_null(journal_read(f->dir, JOURNAL_SOURCE, ID1, &err));
	/* ids are 32 lowercase hex digits, nothing else reaches a path */
	assert_int_equal(journal_write(f->dir, JOURNAL_SOURCE, "../x", rec,
				       &err),
			 -1);
	json_decref(rec);
}

static void test_versions(void **state)
{
	struct fix *f = *state;
	struct ferr err;
	json_t *rec;

	/* a newer minor version is read */
	write_file(f->dir, "src-" ID1 ".json",
		   "{\"version\": \"1.7\", \"id\": \"" ID1
		   "\", \"phase\": \"prepared\", \"new_field\": 1}");
	rec = journal_read(f->dir, JOURNAL_SOURCE, ID1, &err);
	assert_non_null(rec);
	json_decref(rec);
	/* another major version is refused, with its reason */
	write_file(f->dir, "src-" ID2 ".json",
		   "{\"version\": \"2.0\", \"id\": \"" ID2 "\"}");
	assert_null(journal_read(f->dir, JOURNAL_SOURCE, ID2, &err));
	assert_int_equal(err.code, FERR_INVALID);
	assert_non_null(strstr(err.msg, "major version"));
	/* no version, a bad id, not an object */
	write_file(f->dir, "dst-" ID1 ".json", "{\"id\": \"" ID1 "\"}");
	assert_null(journal_read(f->dir, JOURNAL_DEST, ID1, &err));
	write_file(f->dir, "dst-" ID2 ".json",
		   "{\"version\": \"1.0\", \"id\": \"XYZ\"}");
	assert_null(journal_read(f->dir, JOURNAL_DEST, ID2, &err));
}

/* Loading skips (and keeps) broken records, and forgets terminal
 * destination records past their retention. */
static void test_load(void **state)
{
	struct fix *f = *state;
	char old[256], path[FERRY_PATH_MAX];
	json_t *rec = json_pack("{s:s}", "phase", "committing");
	struct ferr err;
	json_t *all;

	assert_int_equal(journal_write(f->dir, JOURNAL_DEST, ID1, rec, &err),
			 0);
	json_decref(rec);
	snprintf(old, sizeof(old),
		 "{\"version\": \"1.0\", \"id\": \"" ID2 "\", \"phase\": "
		 "\"aborted\", \"updated_at\": %llu}",
		 (unsigned long long)(wall_ms() - JOURNAL_KEEP_MS - 1000));
	write_file(f->dir, "dst-" ID2 ".json", old);
	write_file(f->dir, "src-" ID2 ".json", "{broken");
	all = journal_load(f->dir, &err);
	assert_non_null(all);
	assert_int_equal(json_array_size(json_object_get(all, "destination")),
			 1);
	assert_int_equal(json_array_size(json_object_get(all, "source")), 0);
	json_decref(all);
	snprintf(path, sizeof(path), "%s/dst-%s.json", f->dir, ID2);
	assert_int_equal(access(path, F_OK), -1); /* expired: removed */
	snprintf(path, sizeof(path), "%s/src-%s.json", f->dir, ID2);
	assert_int_equal(access(path, F_OK), 0); /* broken: left in place */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_write_read_remove, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_versions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
