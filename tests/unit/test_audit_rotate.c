/* Unit tests of the audit log's head, rotation and record versions. */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_head_deleted),
		T(test_rotation),
		T(test_rotation_interrupted),
		T(test_versions),
	};

	log_set_level(LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
