/* audit_fixture.h - helpers shared by the audit log's unit tests
 * (test_audit.c, test_audit_verify.c, test_audit_rotate.c). Each test runs
 * in its own temporary folder (setup_dir/teardown_dir, the folder in
 * *state); a failed step fails the running cmocka test. */
#ifndef FERRY_TEST_AUDIT_FIXTURE_H
#define FERRY_TEST_AUDIT_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "audit.h"

#define T_LINES_MAX 64
#define T_LOG_MAX (4 << 20) /* bytes of a test log (file_read_all allocates it) */

/* Every test with its own folder. */
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown_dir)

/* Make a fresh /tmp/ferry-audit-XXXXXX folder into *state; -1 on failure. */
int setup_dir(void **state);
/* Remove the folder in *state and free it; -1 when it cannot be removed. */
int teardown_dir(void **state);
/* dir/name into buf (len bytes); fails the test when it does not fit. */
void path_in(char *buf, size_t len, const char *dir, const char *name);
/* audit_open(dir) as "host-a"; fails the test on error. */
struct audit *open_ok(const char *dir);
/* Log n records "vm.start" by alice on vm-<first..>, detail {"i": i}. */
void log_n(struct audit *a, int first, int n);
/* The folder's log file (caller frees), its length in *len. */
char *read_log(const char *dir, size_t *len);
/* A path beside dir, to move a file out of the way (a static buffer). */
const char *path_in_tmp(const char *dir);
/* Replace the folder's log file with text (len bytes). */
void write_log(const char *dir, const char *text, size_t len);
/* The folder's public key (caller frees). */
EVP_PKEY *pub_of(const char *dir);
/* Verify the text with the folder's public key: audit_verify's result. */
int verify_text(const char *dir, const char *text, size_t len,
		struct audit_report *rep);
/* Verify the folder's log file: audit_verify's result. */
int verify_dir(const char *dir, struct audit_report *rep);

/* The lines of a log, for rearranging them (text owned, caller frees). */
struct lines {
	char *text;
	size_t n;
	const char *at[T_LINES_MAX];
	size_t len[T_LINES_MAX];
};

/* Read the folder's log into l (at most T_LINES_MAX lines). */
void lines_read(const char *dir, struct lines *l);
/* Write the lines in `order` (0-based indexes, n of them) as the log. */
void lines_write(const char *dir, const struct lines *l, const int *order,
		 size_t n);
/* Line i of l parsed as JSON (caller decrefs); fails the test if not JSON. */
json_t *line_json(const struct lines *l, size_t i);
/* The last record of the folder's log (caller decrefs). */
json_t *last_record(const char *dir);
/* Fail the test unless rep names kind at line/seq after `good` records. */
void expect_bad(const struct audit_report *rep, enum audit_tamper kind,
		uint64_t line, uint64_t seq, uint64_t good);
/* A fresh log of n records (closed). */
void make_log(const char *dir, int n);

#endif
