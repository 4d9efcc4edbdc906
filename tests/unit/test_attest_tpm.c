/* test_attest_tpm.c - the TPM side against a real TPM 2.0 (swtpm, started
 * per test group; skipped when swtpm is not installed): AK creation and
 * persistence, the EK certificate against the local manufacturer CA,
 * MakeCredential (software) against ActivateCredential (TPM), quotes that
 * the verifier accepts or refuses, sealing with PolicyAuthorize. Also
 * prints the median time of Esys_Quote and of a verification (10 runs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "attest_tpm.h"
#include "swtpm_util.h"

static struct swtpm sw;
static struct attest_tpm *tpm;
static uint8_t ak_pub[ATTEST_PUBLIC_MAX];
static size_t ak_len;

static int setup(void **state)
{
	struct ferr err = { 0 };
	bool created = false;

	(void)state;
	setenv(ATTEST_TSS2_LOG_ENV, ATTEST_TSS2_LOG_QUIET, 0);
	if (swtpm_start(&sw) < 0) {
		fprintf(stderr, "swtpm is not available: skipping\n");
		swtpm_stop(&sw);
		return 0;
	}
	if (attest_tpm_open(sw.tcti, &tpm, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	ak_len = sizeof(ak_pub);
	if (attest_tpm_ak(tpm, ak_pub, &ak_len, &created, &err) < 0 ||
	    !created) {
		fprintf(stderr, "AK: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	attest_tpm_close(tpm);
	tpm = NULL;
	swtpm_stop(&sw);
	return 0;
}

/* expr must return 0; otherwise fail with err's message */
#define OK(expr)                                           \
	do {                                               \
		if ((expr) != 0)                           \
			fail_msg("%s: %s", #expr, err.msg); \
	} while (0)

#define NEED_TPM()                    \
	do {                          \
		if (!tpm)             \
			skip();       \
	} while (0)

static void test_ak_persists(void **state)
{
	struct attest_tpm *t2 = NULL;
	uint8_t pub[ATTEST_PUBLIC_MAX];
	size_t len = sizeof(pub);
	bool created = true;
	struct ferr err = { 0 };

	(void)state;
	NEED_TPM();
	/* one client at a time: close ours, open another, reopen ours */
	attest_tpm_close(tpm);
	tpm = NULL;
	assert_int_equal(attest_tpm_open(sw.tcti, &t2, &err), 0);
	assert_int_equal(attest_tpm_ak(t2, pub, &len, &created, &err), 0);
	assert_false(created);
	assert_int_equal(len, ak_len);
	assert_memory_equal(pub, ak_pub, len);
	attest_tpm_close(t2);
	assert_int_equal(attest_tpm_open(sw.tcti, &tpm, &err), 0);
	len = sizeof(pub);
	assert_int_equal(attest_tpm_ak(tpm, pub, &len, &created, &err), 0);
}

/* The EK public key from the TPM's certificate, checked against the CA. */
static EVP_PKEY *ek_from_cert(void)
{
	uint8_t *der = NULL;
	size_t len = 0;
	char sha[ATTEST_DIGEST_HEX_LEN + 1], issuer[256];
	EVP_PKEY *ek = NULL, *ek2 = NULL;
	char partial[128], cmd[512];
	struct ferr err = { 0 };

	assert_int_equal(attest_tpm_ek_cert(tpm, &der, &len, &err), 0);
	assert_int_equal(attest_ek_check(der, len, sw.mfr_dir, &ek, sha,
					 issuer, sizeof(issuer), &err),
			 0);
	assert_non_null(strstr(issuer, "swtpm-localca"));
	/* the intermediate alone is not a trusted manufacturer */
	snprintf(partial, sizeof(partial), "%s/partial", sw.dir);
	snprintf(cmd, sizeof(cmd), "mkdir -p %s && cp %s/issuercert.pem %s/",
		 partial, sw.ca_dir, partial);
	assert_int_equal(swtpm_sh(cmd), 0);
	assert_int_equal(attest_ek_check(der, len, partial, &ek2, sha, issuer,
					 sizeof(issuer), &err),
			 -1);
	assert_int_equal(err.code, FERR_FORBIDDEN);
	free(der);
	return ek;
}

static void test_credential(void **state)
{
	uint8_t name[ATTEST_NAME_LEN], secret[ATTEST_CREDENTIAL_LEN],
		got[ATTEST_CREDENTIAL_LEN], blob[ATTEST_ID_OBJECT_MAX],
		enc[ATTEST_ENC_SECRET_MAX];
	size_t blen = sizeof(blob), elen = sizeof(enc);
	struct ferr err = { 0 };
	EVP_PKEY *ek;

	(void)state;
	NEED_TPM();
	ek = ek_from_cert();
	assert_int_equal(attest_ak_check(ak_pub, ak_len, name, NULL, &err), 0);
	RAND_bytes(secret, sizeof(secret));
	assert_int_equal(attest_make_credential(ek, name, secret, blob, &blen,
						enc, &elen, &err),
			 0);
	assert_int_equal(attest_tpm_activate(tpm, blob, blen, enc, elen, got,
					     &err),
			 0);
	assert_memory_equal(got, secret, sizeof(secret));
	/* a credential for another key name is not released */
	name[5] ^= 1;
	blen = sizeof(blob);
	elen = sizeof(enc);
	assert_int_equal(attest_make_credential(ek, name, secret, blob, &blen,
						enc, &elen, &err),
			 0);
	assert_int_equal(attest_tpm_activate(tpm, blob, blen, enc, elen, got,
					     &err),
			 -1);
	assert_int_equal(err.code, FERR_FORBIDDEN);
	EVP_PKEY_free(ek);
}

static const char *const digests[3] = {
	"1111111111111111111111111111111111111111111111111111111111111111",
	"2222222222222222222222222222222222222222222222222222222222222222",
	"3333333333333333333333333333333333333333333333333333333333333333",
};

/* Measure three events into PCRs 15 and 13 of the TPM and the log. */
static void measure(struct attest_log *log)
{
	static const char *const paths[3] = { "/usr/sbin/ferryd",
					      "/usr/bin/qemu-system-x86_64",
					      "/etc/ferry/policy.json" };
	struct ferr err = { 0 };

	for (int i = 0; i < 3; i++) {
		uint8_t d[ATTEST_DIGEST_LEN], h[ATTEST_DIGEST_LEN];
		unsigned pcr = i == 2 ? 13 : 15;

		assert_int_equal(attest_unhex(digests[i], d, sizeof(d)), 0);
		assert_int_equal(attest_log_add(log, pcr,
						(enum attest_kind)(i + 1),
						paths[i], d, &err),
				 0);
		attest_event_hash(&log->ev[log->n - 1], h);
		assert_int_equal(attest_tpm_extend(tpm, pcr, h, &err), 0);
	}
}

static json_t *quote(const uint8_t nonce[ATTEST_NONCE_LEN],
		     const struct attest_log *log)
{
	uint8_t att[ATTEST_ATTEST_MAX], sig[ATTEST_SIGNATURE_MAX];
	size_t alen = sizeof(att), slen = sizeof(sig);
	struct ferr err = { 0 };

	assert_int_equal(attest_tpm_quote(tpm, nonce, (1u << 15) | (1u << 13),
					  att, &alen, sig, &slen, &err),
			 0);
	return attest_blob_new(att, alen, sig, slen, log);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void test_quote_verify(void **state)
{
	struct attest_log *log = calloc(1, sizeof(*log));
	struct attest_record rec = { .host = "host-b", .pcr = 15,
				     .policy_pcr = 13 };
	uint8_t nonce[ATTEST_NONCE_LEN], other[ATTEST_NONCE_LEN];
	json_t *refs = json_pack("{s:[s], s:[s], s:[s]}", "ferryd",
				 digests[0], "qemu", digests[1], "policy",
				 digests[2]);
	struct attest_expect x = { .nonce = nonce, .refs = refs,
				   .scope = "site=eu" };
	struct ferr err = { 0 };
	json_t *blob, *report = NULL, *evs;
	uint64_t tq[10], tv[10];

	(void)state;
	NEED_TPM();
	measure(log);
	memcpy(rec.ak_public, ak_pub, ak_len);
	rec.ak_public_len = ak_len;
	assert_int_equal(attest_ak_check(ak_pub, ak_len, rec.ak_name, NULL,
					 &err),
			 0);
	RAND_bytes(nonce, sizeof(nonce));
	blob = quote(nonce, log);
	OK(attest_verify(blob, &rec, &x, &report, &err));
	assert_true(json_is_true(json_object_get(report, "verified")));
	evs = json_object_get(report, "events");
	assert_int_equal(json_array_size(evs), 3);
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(evs, 1), "verdict")),
			    "allowed");
	json_decref(report);

	/* replayed for another attestation: the nonce differs */
	memcpy(other, nonce, sizeof(other));
	other[0] ^= 1;
	x.nonce = other;
	assert_int_equal(attest_verify(blob, &rec, &x, NULL, &err), -1);
	assert_int_equal(err.code, FERR_FORBIDDEN);
	assert_non_null(strstr(err.msg, "nonce"));
	x.nonce = nonce;

	/* QEMU not in the allowlist: refused, naming the digest and scope */
	json_array_clear(json_object_get(refs, "qemu"));
	assert_int_equal(attest_verify(blob, &rec, &x, &report, &err), -1);
	assert_non_null(strstr(err.msg, "qemu digest 2222222222222222"));
	assert_non_null(strstr(err.msg, "allowlist for site=eu"));
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(report,
								   "events"),
						   1),
				    "verdict")),
			    "not allowed");
	json_decref(report);
	json_array_append_new(json_object_get(refs, "qemu"),
			      json_string(digests[1]));

	/* a log that hides an event does not replay to the quote */
	json_array_remove(json_object_get(blob, "events"), 0);
	assert_int_equal(attest_verify(blob, &rec, &x, NULL, &err), -1);
	assert_non_null(strstr(err.msg, "does not replay"));
	json_decref(blob);

	/* timings: Esys_Quote, and one verification */
	for (int i = 0; i < 10; i++) {
		uint64_t t0 = now_us();

		blob = quote(nonce, log);
		tq[i] = now_us() - t0;
		t0 = now_us();
		assert_int_equal(attest_verify(blob, &rec, &x, NULL, &err), 0);
		tv[i] = now_us() - t0;
		json_decref(blob);
	}
	qsort(tq, 10, sizeof(tq[0]), cmp_u64);
	qsort(tv, 10, sizeof(tv[0]), cmp_u64);
	printf("attest timing (swtpm, median of 10): Esys_Quote %.3f ms, "
	       "verify %.3f ms\n",
	       (double)(tq[4] + tq[5]) / 2000.0,
	       (double)(tv[4] + tv[5]) / 2000.0);
	json_decref(refs);
	free(log);
}

static void test_seal(void **state)
{
	EVP_PKEY *auth = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *rogue = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	uint8_t policy[ATTEST_DIGEST_LEN], value[ATTEST_DIGEST_LEN],
		pp[ATTEST_DIGEST_LEN], ahash[ATTEST_DIGEST_LEN],
		sig[ATTEST_SIG_LEN], bad[ATTEST_SIG_LEN], data[32], out[64],
		pub[2048], priv[2048], ext[ATTEST_DIGEST_LEN] = { 7 };
	size_t plen = sizeof(pub), vlen = sizeof(priv), olen = sizeof(out);
	struct ferr err = { 0 };

	(void)state;
	NEED_TPM();
	RAND_bytes(data, sizeof(data));
	assert_int_equal(attest_authorize_policy(auth, policy, &err), 0);
	assert_int_equal(attest_tpm_seal(tpm, policy, data, sizeof(data), pub,
					 &plen, priv, &vlen, &err),
			 0);
	assert_int_equal(attest_tpm_pcr_read(tpm, 14, value, &err), 0);
	attest_pcr_policy(14, value, pp);
	attest_sha256(pp, sizeof(pp), ahash);
	assert_int_equal(attest_sign(auth, ahash, sig, &err), 0);
	assert_int_equal(attest_sign(rogue, ahash, bad, &err), 0);
	/* the authority's approval of PCR 14's value opens it */
	assert_int_equal(attest_tpm_unseal(tpm, pub, plen, priv, vlen, 14,
					   value, auth, sig, out, &olen, &err),
			 0);
	assert_int_equal(olen, sizeof(data));
	assert_memory_equal(out, data, sizeof(data));
	/* someone else's signature does not: the TPM checks it */
	olen = sizeof(out);
	assert_int_equal(attest_tpm_unseal(tpm, pub, plen, priv, vlen, 14,
					   value, rogue, bad, out, &olen, &err),
			 -1);
	/* nor the authority's own approval once the PCR moved on */
	assert_int_equal(attest_tpm_extend(tpm, 14, ext, &err), 0);
	olen = sizeof(out);
	assert_int_equal(attest_tpm_unseal(tpm, pub, plen, priv, vlen, 14,
					   value, auth, sig, out, &olen, &err),
			 -1);
	assert_int_equal(err.code, FERR_FORBIDDEN);
	EVP_PKEY_free(auth);
	EVP_PKEY_free(rogue);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ak_persists),
		cmocka_unit_test(test_credential),
		cmocka_unit_test(test_quote_verify),
		cmocka_unit_test(test_seal),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
