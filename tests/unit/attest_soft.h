/* attest_soft.h - quotes made in software, for tests of the verifier and
 * the fuzz target's seeds: an AK-shaped TPM2B_PUBLIC around an OpenSSL
 * P-256 key, and a TPMS_ATTEST quote signed with it the way a TPM would.
 * Header-only; test code only. */
#ifndef FERRY_TEST_ATTEST_SOFT_H
#define FERRY_TEST_ATTEST_SOFT_H

#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <tss2/tss2_mu.h>

#include "attest.h"

/* The fixed key of the fuzz target and its seeds (a test key). */
static const char soft_fixed_key[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg98l9G80H3Opz+bzW\n"
	"wAo7T4JOKWNfnAkAVzmF7/IdujGhRANCAAT6ygQPu7OWzvBOFCw7x3UVcqLV5l6T\n"
	"zpTOKTh9yz9oVqa7zOcb4JQW9b8+9ZG15z/BQggE1ZoL6QwQgBpd2MeB\n"
	"-----END PRIVATE KEY-----\n";

static inline EVP_PKEY *soft_key_fixed(void)
{
	BIO *b = BIO_new_mem_buf(soft_fixed_key, -1);
	EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);

	BIO_free(b);
	return k;
}

/* rec gets an AK record (host, PCRs 15 and 13) for key's public part. */
static inline int soft_record(EVP_PKEY *key, const char *host,
			      struct attest_record *rec)
{
	TPM2B_PUBLIC p = { 0 };
	TPMT_PUBLIC *a = &p.publicArea;
	BIGNUM *x = NULL, *y = NULL;
	size_t n = 0;
	struct ferr err;
	int rc = -1;

	memset(rec, 0, sizeof(*rec));
	snprintf(rec->host, sizeof(rec->host), "%s", host);
	rec->pcr = 15;
	rec->policy_pcr = 13;
	a->type = TPM2_ALG_ECC;
	a->nameAlg = TPM2_ALG_SHA256;
	a->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
			      TPMA_OBJECT_SENSITIVEDATAORIGIN |
			      TPMA_OBJECT_USERWITHAUTH |
			      TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
	a->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
	a->parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
	a->parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
	a->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
	a->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
	if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
	    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1 ||
	    BN_bn2binpad(x, a->unique.ecc.x.buffer, 32) != 32 ||
	    BN_bn2binpad(y, a->unique.ecc.y.buffer, 32) != 32)
		goto out;
	a->unique.ecc.x.size = a->unique.ecc.y.size = 32;
	if (Tss2_MU_TPM2B_PUBLIC_Marshal(&p, rec->ak_public,
					 sizeof(rec->ak_public), &n) != 0)
		goto out;
	rec->ak_public_len = n;
	rc = attest_ak_check(rec->ak_public, n, rec->ak_name, NULL, &err);
out:
	BN_free(x);
	BN_free(y);
	return rc;
}

/* What a quote's TPMS_ATTEST says; tests bend one field at a time. */
struct soft_quote {
	uint32_t magic;
	uint16_t type;
	uint8_t nonce[ATTEST_NONCE_LEN];
	uint32_t pcr_mask;
	uint8_t pcr_digest[ATTEST_DIGEST_LEN];
};

/* The quote fields a TPM would produce over log for nonce. */
static inline void soft_quote_of(const struct attest_log *log,
				 const uint8_t nonce[ATTEST_NONCE_LEN],
				 struct soft_quote *q)
{
	uint8_t both[2 * ATTEST_DIGEST_LEN];

	q->magic = TPM2_GENERATED_VALUE;
	q->type = TPM2_ST_ATTEST_QUOTE;
	memcpy(q->nonce, nonce, ATTEST_NONCE_LEN);
	q->pcr_mask = (1u << 13) | (1u << 15);
	attest_log_replay(log, 13, both);
	attest_log_replay(log, 15, both + ATTEST_DIGEST_LEN);
	attest_sha256(both, sizeof(both), q->pcr_digest);
}

/* A quote blob for q and log, signed with key. NULL on failure. */
static inline json_t *soft_blob(EVP_PKEY *key, const struct soft_quote *q,
				const struct attest_log *log)
{
	TPMS_ATTEST att = { 0 };
	TPMT_SIGNATURE sig = { .sigAlg = TPM2_ALG_ECDSA };
	uint8_t abuf[ATTEST_ATTEST_MAX], sbuf[ATTEST_SIGNATURE_MAX];
	uint8_t digest[ATTEST_DIGEST_LEN], rs[ATTEST_SIG_LEN];
	size_t alen = 0, slen = 0;
	struct ferr err;
	TPMS_PCR_SELECTION *s;

	att.magic = q->magic;
	att.type = q->type;
	att.qualifiedSigner.size = 4;
	att.extraData.size = ATTEST_NONCE_LEN;
	memcpy(att.extraData.buffer, q->nonce, ATTEST_NONCE_LEN);
	att.clockInfo.clock = 123456;
	att.clockInfo.resetCount = 1;
	att.clockInfo.safe = 1;
	att.attested.quote.pcrSelect.count = 1;
	s = &att.attested.quote.pcrSelect.pcrSelections[0];
	s->hash = TPM2_ALG_SHA256;
	s->sizeofSelect = 3;
	for (int i = 0; i < 3; i++)
		s->pcrSelect[i] = (uint8_t)(q->pcr_mask >> (8 * i));
	att.attested.quote.pcrDigest.size = ATTEST_DIGEST_LEN;
	memcpy(att.attested.quote.pcrDigest.buffer, q->pcr_digest,
	       ATTEST_DIGEST_LEN);
	if (Tss2_MU_TPMS_ATTEST_Marshal(&att, abuf, sizeof(abuf), &alen) != 0)
		return NULL;
	attest_sha256(abuf, alen, digest);
	if (attest_sign(key, digest, rs, &err) < 0)
		return NULL;
	sig.signature.ecdsa.hash = TPM2_ALG_SHA256;
	sig.signature.ecdsa.signatureR.size = 32;
	memcpy(sig.signature.ecdsa.signatureR.buffer, rs, 32);
	sig.signature.ecdsa.signatureS.size = 32;
	memcpy(sig.signature.ecdsa.signatureS.buffer, rs + 32, 32);
	if (Tss2_MU_TPMT_SIGNATURE_Marshal(&sig, sbuf, sizeof(sbuf), &slen) !=
	    0)
		return NULL;
	return attest_blob_new(abuf, alen, sbuf, slen, log);
}

#endif
