/* test_attest.c - the attestation code that needs no TPM: the event log,
 * the verifier's checks in order (with quotes signed in software,
 * attest_soft.h), nonces, policy digests, registrar records, approvals and
 * the envelope. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/rand.h>

#include "attest_soft.h"

#define D1 "1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "3333333333333333333333333333333333333333333333333333333333333333"
#define D4 "4444444444444444444444444444444444444444444444444444444444444444"

/* expr must return 0; otherwise fail with err's message */
#define OK(expr)                                            \
	do {                                                \
		if ((expr) != 0)                            \
			fail_msg("%s: %s", #expr, err.msg); \
	} while (0)

static void add(struct attest_log *log, unsigned pcr, enum attest_kind k,
		const char *path, const char *hex)
{
	uint8_t d[ATTEST_DIGEST_LEN];
	struct ferr err;

	assert_int_equal(attest_unhex(hex, d, sizeof(d)), 0);
	OK(attest_log_add(log, pcr, k, path, d, &err));
}

/* The usual log: ferryd and QEMU in PCR 15, the policy in 13. */
static struct attest_log *std_log(void)
{
	struct attest_log *log = calloc(1, sizeof(*log));

	add(log, 15, ATTEST_KIND_FERRYD, "/usr/sbin/ferryd", D1);
	add(log, 15, ATTEST_KIND_QEMU, "/usr/bin/qemu-system-x86_64", D2);
	add(log, 13, ATTEST_KIND_POLICY, "/etc/ferry/policy.json", D3);
	return log;
}

struct fixture {
	EVP_PKEY *key;
	struct attest_record rec;
	struct attest_log *log;
	uint8_t nonce[ATTEST_NONCE_LEN];
	json_t *refs;
	struct attest_expect x;
	struct soft_quote q;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->key = soft_key_fixed();
	assert_non_null(f->key);
	assert_int_equal(soft_record(f->key, "host-b", &f->rec), 0);
	f->log = std_log();
	RAND_bytes(f->nonce, sizeof(f->nonce));
	f->refs = json_pack("{s:[s], s:[s], s:[s]}", "ferryd", D1, "qemu", D2,
			    "policy", D3);
	f->x = (struct attest_expect){ .nonce = f->nonce, .refs = f->refs,
				       .scope = "site=eu" };
	soft_quote_of(f->log, f->nonce, &f->q);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	EVP_PKEY_free(f->key);
	json_decref(f->refs);
	free(f->log);
	free(f);
	return 0;
}

/* Verify a blob of f's quote and log; returns the result, err the why. */
static int verify(struct fixture *f, struct ferr *err)
{
	json_t *blob = soft_blob(f->key, &f->q, f->log);
	int rc;

	assert_non_null(blob);
	rc = attest_verify(blob, &f->rec, &f->x, NULL, err);
	json_decref(blob);
	return rc;
}

static void test_verify_ok(void **state)
{
	struct fixture *f = *state;
	json_t *blob = soft_blob(f->key, &f->q, f->log), *report = NULL;
	struct ferr err = { 0 };

	OK(attest_verify(blob, &f->rec, &f->x, &report, &err));
	assert_true(json_is_true(json_object_get(report, "verified")));
	assert_int_equal(json_integer_value(json_object_get(
				 json_object_get(report, "tpm"), "clock_ms")),
			 123456);
	assert_non_null(json_object_get(json_object_get(report, "pcrs"), "15"));
	assert_string_equal(
		json_string_value(json_object_get(
			json_array_get(json_object_get(report, "events"), 2),
			"verdict")),
		"allowed");
	json_decref(report);
	json_decref(blob);
}

static void test_verify_wrong_ak(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	json_t *blob = soft_blob(other, &f->q, f->log), *report = NULL;
	struct ferr err = { 0 };

	/* signed by another TPM (a relay): the signature check fails first */
	assert_int_equal(attest_verify(blob, &f->rec, &f->x, &report, &err),
			 -1);
	assert_int_equal(err.code, FERR_FORBIDDEN);
	assert_non_null(strstr(err.msg, "signature does not verify"));
	assert_true(json_is_false(json_object_get(report, "verified")));
	json_decref(report);
	json_decref(blob);
	EVP_PKEY_free(other);
}

static void test_verify_order(void **state)
{
	struct fixture *f = *state;
	struct soft_quote good = f->q;
	struct ferr err = { 0 };

	f->q.magic = 0;
	assert_int_equal(verify(f, &err), -1);
	assert_non_null(strstr(err.msg, "not a TPM quote"));
	f->q = good;
	f->q.nonce[3] ^= 1;
	assert_int_equal(verify(f, &err), -1);
	assert_non_null(strstr(err.msg, "nonce"));
	f->q = good;
	f->q.pcr_mask = 1u << 15;
	assert_int_equal(verify(f, &err), -1);
	assert_non_null(strstr(err.msg, "exactly the enrolled PCRs 15 and 13"));
	f->q = good;
	f->q.pcr_digest[0] ^= 1;
	assert_int_equal(verify(f, &err), -1);
	assert_non_null(strstr(err.msg, "does not replay"));
	f->q = good;
	assert_int_equal(verify(f, &err), 0);
}

static void test_verify_allowlist(void **state)
{
	struct fixture *f = *state;
	struct ferr err = { 0 };
	json_t *saved = json_deep_copy(f->refs);

	/* a QEMU that is not listed is named, with its digest and scope */
	json_object_set_new(f->refs, "qemu", json_pack("[s]", D4));
	assert_int_equal(verify(f, &err), -1);
	assert_string_equal(err.msg,
			    "host host-b: qemu digest 2222222222222222\u2026 "
			    "(/usr/bin/qemu-system-x86_64) is not in the "
			    "allowlist for site=eu");
	/* no reference values at all: nothing is allowed */
	f->x.refs = NULL;
	assert_int_equal(verify(f, &err), -1);
	assert_non_null(strstr(err.msg, "ferryd digest 1111"));
	f->x.refs = f->refs;
	json_object_update(f->refs, saved);
	json_decref(saved);

	/* a superseded policy need not be listed; the one in force must */
	add(f->log, 13, ATTEST_KIND_POLICY, "/etc/ferry/policy.json", D4);
	soft_quote_of(f->log, f->nonce, &f->q);
	assert_int_equal(verify(f, &err), -1);
	assert_non_null(strstr(err.msg, "policy digest 4444"));
	json_array_append_new(json_object_get(f->refs, "policy"),
			      json_string(D4));
	json_array_remove(json_object_get(f->refs, "policy"), 0);
	OK(verify(f, &err));
	f->log->n--;
	soft_quote_of(f->log, f->nonce, &f->q);
}

static void test_verify_log_shape(void **state)
{
	struct fixture *f = *state;
	struct attest_log *log = f->log;
	struct ferr err = { 0 };

	/* an event in the wrong PCR */
	f->log = calloc(1, sizeof(*log));
	add(f->log, 15, ATTEST_KIND_FERRYD, "/usr/sbin/ferryd", D1);
	add(f->log, 13, ATTEST_KIND_QEMU, "/usr/bin/qemu", D2);
	add(f->log, 13, ATTEST_KIND_POLICY, "/etc/ferry/policy.json", D3);
	soft_quote_of(f->log, f->nonce, &f->q);
	assert_int_equal(verify(f, &err), -1);
	assert_non_null(strstr(err.msg, "event 1 (qemu) is in PCR 13"));
	/* a kind never measured */
	f->log->n = 1;
	soft_quote_of(f->log, f->nonce, &f->q);
	assert_int_equal(verify(f, &err), -1);
	assert_non_null(strstr(err.msg, "no qemu measurement"));
	free(f->log);
	f->log = log;
	soft_quote_of(f->log, f->nonce, &f->q);
}

static void test_blob_format(void **state)
{
	struct fixture *f = *state;
	json_t *blob = soft_blob(f->key, &f->q, f->log);
	char *a64 = strdup(json_string_value(json_object_get(blob, "attest")));
	struct ferr err = { 0 };

	json_object_set_new(blob, "format", json_integer(2));
	assert_int_equal(attest_verify(blob, &f->rec, &f->x, NULL, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	json_object_set_new(blob, "format", json_integer(1));
	json_object_set_new(blob, "extra", json_true());
	assert_int_equal(attest_verify(blob, &f->rec, &f->x, NULL, &err), -1);
	assert_non_null(strstr(err.msg, "unknown field"));
	json_object_del(blob, "extra");
	/* base64 with a stray character, and with whitespace */
	a64[0] = '*';
	json_object_set_new(blob, "attest", json_string(a64));
	assert_int_equal(attest_verify(blob, &f->rec, &f->x, NULL, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	json_object_set_new(blob, "attest", json_string("AAAA AAA"));
	assert_int_equal(attest_verify(blob, &f->rec, &f->x, NULL, &err), -1);
	/* a truncated TPMS_ATTEST */
	json_object_set_new(blob, "attest", json_string("/1RDR4AYAAA="));
	assert_int_equal(attest_verify(blob, &f->rec, &f->x, NULL, &err), -1);
	free(a64);
	json_decref(blob);
}

static void test_log_parse(void **state)
{
	static const char *const bad[] = {
		"[{\"pcr\":16,\"kind\":\"qemu\",\"path\":\"/q\",\"sha256\":\"" D1
		"\"}]",
		"[{\"pcr\":15,\"kind\":\"vmm\",\"path\":\"/q\",\"sha256\":\"" D1
		"\"}]",
		"[{\"pcr\":15,\"kind\":\"qemu\",\"path\":\"q\",\"sha256\":\"" D1
		"\"}]",
		"[{\"pcr\":15,\"kind\":\"qemu\",\"path\":\"/q\",\"sha256\":"
		"\"AA11\"}]",
		"[{\"pcr\":15,\"kind\":\"qemu\",\"path\":\"/q\",\"sha256\":\"" D1
		"\",\"x\":1}]",
		"[{\"pcr\":15,\"kind\":\"qemu\",\"path\":\"/q\"}]",
		"{}",
	};
	struct attest_log *log = calloc(1, sizeof(*log));
	struct ferr err = { 0 };
	json_t *arr;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *j = json_loads(bad[i], 0, NULL);

		assert_non_null(j);
		assert_int_equal(attest_log_from_json(j, log, &err), -1);
		assert_int_equal(err.code, FERR_INVALID);
		json_decref(j);
	}
	/* more events than the bound */
	arr = json_array();
	for (int i = 0; i <= ATTEST_EVENTS_MAX; i++)
		json_array_append_new(arr, json_pack("{s:i, s:s, s:s, s:s}",
						     "pcr", 15, "kind", "qemu",
						     "path", "/q", "sha256",
						     D1));
	assert_int_equal(attest_log_from_json(arr, log, &err), -1);
	json_array_remove(arr, 0);
	OK(attest_log_from_json(arr, log, &err));
	assert_int_equal(log->n, ATTEST_EVENTS_MAX);
	/* full: the next add is refused */
	assert_int_equal(attest_log_add(log, 15, ATTEST_KIND_QEMU, "/q",
					log->ev[0].sha256, &err),
			 -1);
	assert_int_equal(err.code, FERR_CONFLICT);
	json_decref(arr);
	free(log);
}

static void test_replay(void **state)
{
	struct attest_log *log = std_log();
	uint8_t v[ATTEST_DIGEST_LEN], h[ATTEST_DIGEST_LEN],
		buf[2 * ATTEST_DIGEST_LEN] = { 0 };
	json_t *j;
	struct attest_log *back = calloc(1, sizeof(*back));
	struct ferr err = { 0 };

	(void)state;
	/* PCR 13 = H(0 || H(event)) */
	attest_event_hash(&log->ev[2], h);
	memcpy(buf + ATTEST_DIGEST_LEN, h, ATTEST_DIGEST_LEN);
	attest_sha256(buf, sizeof(buf), v);
	attest_log_replay(log, 13, buf);
	assert_memory_equal(buf, v, ATTEST_DIGEST_LEN);
	/* the path is bound into the event hash */
	strcpy(log->ev[2].path, "/etc/ferry/other.json");
	attest_event_hash(&log->ev[2], buf);
	assert_memory_not_equal(buf, h, ATTEST_DIGEST_LEN);
	/* JSON round trip */
	j = attest_log_to_json(log);
	OK(attest_log_from_json(j, back, &err));
	assert_int_equal(back->n, 3);
	assert_memory_equal(back->ev, log->ev, sizeof(log->ev[0]) * 3);
	assert_ptr_equal(attest_log_latest(back, ATTEST_KIND_QEMU),
			 &back->ev[1]);
	json_decref(j);
	free(back);
	free(log);
}

static void test_nonce(void **state)
{
	uint8_t c[ATTEST_CHALLENGE_LEN] = { 1 }, x[ATTEST_EXPORTER_LEN] = { 2 },
		a[ATTEST_NONCE_LEN], b[ATTEST_NONCE_LEN];
	char long_ctx[ATTEST_CONTEXT_MAX + 2];
	struct ferr err = { 0 };

	(void)state;
	OK(attest_nonce(c, "mig-1", x, a, &err));
	OK(attest_nonce(c, "mig-1", x, b, &err));
	assert_memory_equal(a, b, sizeof(a));
	OK(attest_nonce(c, "mig-2", x, b, &err));
	assert_memory_not_equal(a, b, sizeof(a));
	x[5] = 9; /* another TLS session */
	OK(attest_nonce(c, "mig-1", x, b, &err));
	assert_memory_not_equal(a, b, sizeof(a));
	memset(long_ctx, 'a', sizeof(long_ctx) - 1);
	long_ctx[sizeof(long_ctx) - 1] = 0;
	assert_int_equal(attest_nonce(c, long_ctx, x, b, &err), -1);
	assert_int_equal(attest_nonce(c, "", x, b, &err), -1);
}

static void test_policy_digest(void **state)
{
	const char *p1 = "{\"roles\": {\"admin\": [\"a\"]}, \"version\": 1}";
	const char *p2 = "{\"version\":1,\"roles\":{\"admin\":[\"a\"]},"
			 "\"attestation\":{\"reference\":[]}}";
	const char *p3 = "{\"version\":1,\"roles\":{\"admin\":[\"b\"]}}";
	uint8_t a[ATTEST_DIGEST_LEN], b[ATTEST_DIGEST_LEN];
	struct ferr err = { 0 };

	(void)state;
	OK(attest_policy_digest(p1, strlen(p1), a, &err));
	OK(attest_policy_digest(p2, strlen(p2), b, &err));
	assert_memory_equal(a, b, sizeof(a)); /* layout and references */
	OK(attest_policy_digest(p3, strlen(p3), b, &err));
	assert_memory_not_equal(a, b, sizeof(a));
	assert_int_equal(attest_policy_digest("[1]", 3, b, &err), -1);
}

static void test_record(void **state)
{
	struct fixture *f = *state;
	char dir[] = "/tmp/ferry-reg-XXXXXX", path[128];
	struct attest_record back;
	struct ferr err = { 0 };
	char *text = NULL;
	size_t len = 0;
	FILE *fp;

	assert_non_null(mkdtemp(dir));
	assert_int_equal(attest_record_load(dir, "host-b", &back, &err), -1);
	assert_int_equal(err.code, FERR_FORBIDDEN);
	assert_non_null(strstr(err.msg, "host-b is not enrolled"));
	snprintf(f->rec.ek_cert_sha256, sizeof(f->rec.ek_cert_sha256), D1);
	snprintf(f->rec.ek_issuer, sizeof(f->rec.ek_issuer), "/CN=ca");
	OK(attest_record_save(dir, &f->rec, &err));
	OK(attest_record_load(dir, "host-b", &back, &err));
	assert_int_equal(back.ak_public_len, f->rec.ak_public_len);
	assert_memory_equal(back.ak_name, f->rec.ak_name, ATTEST_NAME_LEN);
	assert_int_equal(back.pcr, 15);
	/* a record whose name does not match its key is refused */
	snprintf(path, sizeof(path), "%s/hosts/host-b.json", dir);
	OK(file_read_all(path, 1 << 20, &text, &len, &err));
	text[strstr(text, "\"ak_name\": \"") - text + 14] ^= 1;
	fp = fopen(path, "w");
	fputs(text, fp);
	fclose(fp);
	assert_int_equal(attest_record_load(dir, "host-b", &back, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	/* names cannot walk out of the folder */
	assert_int_equal(attest_record_load(dir, "../x", &back, &err), -1);
	free(text);
	snprintf(path, sizeof(path), "rm -rf %s", dir);
	assert_int_equal(system(path), 0);
}

static void test_approvals(void **state)
{
	struct fixture *f = *state;
	EVP_PKEY *rogue = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	uint8_t v[ATTEST_DIGEST_LEN] = { 5 }, fsha[ATTEST_DIGEST_LEN] = { 6 },
		sig[ATTEST_SIG_LEN];
	struct ferr err = { 0 };
	json_t *doc = json_pack("{s:i, s:[o, o]}", "format", 1, "approvals",
				attest_approve_pcr(f->key, 15, v, f->log, &err),
				attest_approve_policy(f->key, fsha, &err));
	const json_t *arr = attest_approvals_check(doc, f->key, &err);

	assert_non_null(arr);
	assert_non_null(attest_approval_find(arr, 15, v, sig));
	assert_null(attest_approval_find(arr, 14, v, sig));
	assert_true(attest_policy_approved(arr, fsha));
	v[0] ^= 1;
	assert_null(attest_approval_find(arr, 15, v, sig));
	assert_false(attest_policy_approved(arr, v));
	/* another key's approvals, and altered ones, are refused */
	assert_null(attest_approvals_check(doc, rogue, &err));
	assert_int_equal(err.code, FERR_FORBIDDEN);
	json_object_set_new(json_array_get(json_object_get(doc, "approvals"),
					   0),
			    "pcr", json_integer(14));
	assert_null(attest_approvals_check(doc, f->key, &err));
	assert_non_null(strstr(err.msg, "approvals[0]: not signed"));
	json_decref(doc);
	EVP_PKEY_free(rogue);
}

static void test_envelope(void **state)
{
	uint8_t key[ATTEST_STORAGE_KEY_LEN] = { 1 },
		other[ATTEST_STORAGE_KEY_LEN] = { 2 };
	const char *secret = "-----BEGIN PRIVATE KEY-----...";
	uint8_t *env = NULL, *out = NULL;
	size_t elen = 0, olen = 0;
	struct ferr err = { 0 };

	(void)state;
	OK(attest_envelope_seal(key, "tls-key", (const uint8_t *)secret,
				strlen(secret), &env, &elen, &err));
	OK(attest_envelope_open(key, "tls-key", env, elen, &out, &olen, &err));
	assert_int_equal(olen, strlen(secret));
	assert_memory_equal(out, secret, olen);
	free(out);
	assert_int_equal(attest_envelope_open(other, "tls-key", env, elen, &out,
					      &olen, &err),
			 -1);
	assert_int_equal(attest_envelope_open(key, "audit-key", env, elen,
					      &out, &olen, &err),
			 -1);
	env[elen - 20] ^= 1;
	assert_int_equal(attest_envelope_open(key, "tls-key", env, elen, &out,
					      &olen, &err),
			 -1);
	assert_int_equal(err.code, FERR_FORBIDDEN);
	assert_int_equal(attest_envelope_open(key, "tls-key", env, 10, &out,
					      &olen, &err),
			 -1);
	free(env);
}

/* FERRY_WRITE_SEEDS=DIR writes the fuzz target's seeds (quote blobs of
 * the fixed key, nonce all zeros) into DIR. */
static void test_write_seeds(void **state)
{
	struct fixture *f = *state;
	const char *dir = getenv("FERRY_WRITE_SEEDS");
	uint8_t zero[ATTEST_NONCE_LEN] = { 0 };
	struct soft_quote q;
	char path[512];

	if (!dir)
		skip();
	soft_quote_of(f->log, zero, &q);
	for (int i = 0; i < 2; i++) {
		json_t *blob = soft_blob(f->key, &q, f->log);

		snprintf(path, sizeof(path), "%s/quote-%d.json", dir, i);
		assert_int_equal(json_dump_file(blob, path, JSON_COMPACT), 0);
		json_decref(blob);
		q.magic = 0;
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_verify_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_wrong_ak, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_verify_order, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_verify_allowlist, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_verify_log_shape, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_blob_format, setup,
						teardown),
		cmocka_unit_test(test_log_parse),
		cmocka_unit_test(test_replay),
		cmocka_unit_test(test_nonce),
		cmocka_unit_test(test_policy_digest),
		cmocka_unit_test_setup_teardown(test_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_approvals, setup, teardown),
		cmocka_unit_test(test_envelope),
		cmocka_unit_test_setup_teardown(test_write_seeds, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
