/* audit_fixture.c - helpers shared by the audit log's unit tests
 * (test_audit.c, test_audit_verify.c, test_audit_rotate.c); contracts in
 * audit_fixture.h. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "audit_fixture.h"

/* A temporary folder per test, removed afterwards. */
int setup_dir(void **state)
{
	char *dir = strdup("/tmp/ferry-audit-XXXXXX");

	if (!dir || !mkdtemp(dir)) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

int teardown_dir(void **state)
{
	struct ferr err = { 0 };
	int rc = rmtree(*state, &err);

	free(*state);
	return rc;
}

void path_in(char *buf, size_t len, const char *dir, const char *name)
{
	assert_true((size_t)snprintf(buf, len, "%s/%s", dir, name) < len);
}

struct audit *open_ok(const char *dir)
{
	struct ferr err = { 0 };
	struct audit *a = NULL;

	if (audit_open(dir, "host-a", &a, &err) < 0)
		fail_msg("audit_open: %s", err.msg);
	assert_non_null(a);
	return a;
}

/* Log n records "vm.start" by alice on vm-<first..>, detail {"i": i}. */
void log_n(struct audit *a, int first, int n)
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

char *read_log(const char *dir, size_t *len)
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
const char *path_in_tmp(const char *dir)
{
	static char buf[512];

	assert_true((size_t)snprintf(buf, sizeof(buf), "%s.aside", dir) <
		    sizeof(buf));
	return buf;
}

void write_log(const char *dir, const char *text, size_t len)
{
	char path[512];
	struct ferr err = { 0 };

	path_in(path, sizeof(path), dir, AUDIT_LOG_NAME);
	assert_int_equal(file_write_atomic(path, text, len, 0640, &err), 0);
}

EVP_PKEY *pub_of(const char *dir)
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
int verify_text(const char *dir, const char *text, size_t len,
		       struct audit_report *rep)
{
	EVP_PKEY *pub = pub_of(dir);
	int rc = audit_verify(text, len, pub, rep);

	EVP_PKEY_free(pub);
	return rc;
}

/* Verify the folder's log file. */
int verify_dir(const char *dir, struct audit_report *rep)
{
	size_t len = 0;
	char *text = read_log(dir, &len);
	int rc = verify_text(dir, text, len, rep);

	free(text);
	return rc;
}

void lines_read(const char *dir, struct lines *l)
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
void lines_write(const char *dir, const struct lines *l,
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

json_t *line_json(const struct lines *l, size_t i)
{
	json_t *rec = json_loadb(l->at[i], l->len[i], 0, NULL);

	assert_non_null(rec);
	return rec;
}

json_t *last_record(const char *dir)
{
	struct lines l;
	json_t *rec;

	lines_read(dir, &l);
	assert_true(l.n > 0);
	rec = line_json(&l, l.n - 1);
	free(l.text);
	return rec;
}

void expect_bad(const struct audit_report *rep, enum audit_tamper kind,
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
void make_log(const char *dir, int n)
{
	struct audit *a = open_ok(dir);

	log_n(a, 1, n);
	audit_close(a);
}
