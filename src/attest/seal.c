/* seal.c - sealing under the TPM's storage primary key with a policy of
 * TPM2_PolicyAuthorize by the attestation authority, and unsealing with
 * TPM2_PolicyPCR plus the authority's signature (attest_tpm.h). */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>

#include <tss2/tss2_mu.h>

#include "attest_internal.h"

/* The owner hierarchy's storage primary key (the TCG SRK template for ECC
 * P-256; deterministic, so it needs no persistence). */
static int srk_create(struct attest_tpm *t, ESYS_TR *srk, struct ferr *err)
{
	TPM2B_SENSITIVE_CREATE sens = { 0 };
	TPM2B_PUBLIC tmpl = { 0 };
	TPMT_PUBLIC *a = &tmpl.publicArea;
	TSS2_RC rc;

	a->type = TPM2_ALG_ECC;
	a->nameAlg = TPM2_ALG_SHA256;
	a->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
			      TPMA_OBJECT_SENSITIVEDATAORIGIN |
			      TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA |
			      TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
	a->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
	a->parameters.eccDetail.symmetric.keyBits.aes = 128;
	a->parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
	a->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
	a->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
	a->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
	RUN(t, rc,
	    Esys_CreatePrimary_Async(t->esys, ESYS_TR_RH_OWNER,
				     ESYS_TR_PASSWORD, ESYS_TR_NONE,
				     ESYS_TR_NONE, &sens, &tmpl, &tpm_no_data, &tpm_no_pcrs),
	    Esys_CreatePrimary_Finish(t->esys, srk, NULL, NULL, NULL, NULL));
	if (rc != TSS2_RC_SUCCESS)
		return tpm_fail(t, rc, FERR_UNAVAILABLE, err,
				"creating the storage primary key");
	return 0;
}

int attest_tpm_seal(struct attest_tpm *t,
		    const uint8_t policy[ATTEST_DIGEST_LEN],
		    const uint8_t *data, size_t len, uint8_t *pub,
		    size_t *pub_len, uint8_t *priv, size_t *priv_len,
		    struct ferr *err)
{
	TPM2B_SENSITIVE_CREATE sens = { 0 };
	TPM2B_PUBLIC tmpl = { 0 }, *opub = NULL;
	TPM2B_PRIVATE *opriv = NULL;
	TPMT_PUBLIC *a = &tmpl.publicArea;
	ESYS_TR srk = ESYS_TR_NONE;
	size_t pn = 0, vn = 0;
	TSS2_RC rc;
	int ret = -1;

	if (len == 0 || len > sizeof(sens.sensitive.data.buffer))
		return ferr_set(err, FERR_INVALID, "TPM: cannot seal %zu bytes",
				len);
	sens.sensitive.data.size = (uint16_t)len;
	memcpy(sens.sensitive.data.buffer, data, len);
	a->type = TPM2_ALG_KEYEDHASH;
	a->nameAlg = TPM2_ALG_SHA256;
	/* no userWithAuth: only the policy opens it */
	a->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
			      TPMA_OBJECT_NODA | TPMA_OBJECT_ADMINWITHPOLICY;
	a->authPolicy.size = ATTEST_DIGEST_LEN;
	memcpy(a->authPolicy.buffer, policy, ATTEST_DIGEST_LEN);
	a->parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
	pthread_mutex_lock(&t->lock);
	if (srk_create(t, &srk, err) < 0)
		goto out;
	RUN(t, rc,
	    Esys_Create_Async(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE,
			      ESYS_TR_NONE, &sens, &tmpl, &tpm_no_data, &tpm_no_pcrs),
	    Esys_Create_Finish(t->esys, &opriv, &opub, NULL, NULL, NULL));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_UNAVAILABLE, err, "sealing");
		goto out;
	}
	if (Tss2_MU_TPM2B_PUBLIC_Marshal(opub, pub, *pub_len, &pn) != 0 ||
	    Tss2_MU_TPM2B_PRIVATE_Marshal(opriv, priv, *priv_len, &vn) != 0) {
		ferr_set(err, FERR_INTERNAL, "TPM: sealed object too large");
		goto out;
	}
	*pub_len = pn;
	*priv_len = vn;
	ret = 0;
out:
	secret_wipe(&sens, sizeof(sens));
	tpm_flush(t, &srk);
	Esys_Free(opub);
	Esys_Free(opriv);
	pthread_mutex_unlock(&t->lock);
	return ret;
}

/* The policy part of unsealing: PolicyPCR, then PolicyAuthorize with the
 * authority's signature over the digest it produced. */
static int unseal_policy(struct attest_tpm *t, ESYS_TR s, unsigned pcr,
			 const uint8_t pcr_value[ATTEST_DIGEST_LEN],
			 EVP_PKEY *authority, const uint8_t sig[ATTEST_SIG_LEN],
			 struct ferr *err)
{
	TPM2B_DIGEST pd = { .size = ATTEST_DIGEST_LEN }, *approved = NULL;
	TPM2B_DIGEST ahash = { .size = ATTEST_DIGEST_LEN };
	TPM2B_PUBLIC apub = { 0 };
	TPM2B_NAME kname = { .size = ATTEST_NAME_LEN };
	TPMT_SIGNATURE ts = { .sigAlg = TPM2_ALG_ECDSA };
	TPMT_TK_VERIFIED *ticket = NULL;
	TPML_PCR_SELECTION sel;
	uint8_t pbuf[ATTEST_PUBLIC_MAX];
	size_t plen = sizeof(pbuf), off = 0;
	ESYS_TR key = ESYS_TR_NONE;
	TSS2_RC rc;
	int ret = -1;

	attest_sha256(pcr_value, ATTEST_DIGEST_LEN, pd.buffer);
	tpm_pcr_selection(1u << pcr, &sel);
	RUN(t, rc,
	    Esys_PolicyPCR_Async(t->esys, s, ESYS_TR_NONE, ESYS_TR_NONE,
				 ESYS_TR_NONE, &pd, &sel),
	    Esys_PolicyPCR_Finish(t->esys));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_FORBIDDEN, err,
			 "PolicyPCR (the PCR does not hold the approved "
			 "value)");
		goto out;
	}
	RUN(t, rc,
	    Esys_PolicyGetDigest_Async(t->esys, s, ESYS_TR_NONE, ESYS_TR_NONE,
				       ESYS_TR_NONE),
	    Esys_PolicyGetDigest_Finish(t->esys, &approved));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_UNAVAILABLE, err, "PolicyGetDigest");
		goto out;
	}
	if (attest_authority_public(authority, pbuf, &plen, kname.name, err) <
		    0 ||
	    Tss2_MU_TPM2B_PUBLIC_Unmarshal(pbuf, plen, &off, &apub) != 0)
		goto out;
	RUN(t, rc,
	    Esys_LoadExternal_Async(t->esys, ESYS_TR_NONE, ESYS_TR_NONE,
				    ESYS_TR_NONE, NULL, &apub,
				    ESYS_TR_RH_OWNER),
	    Esys_LoadExternal_Finish(t->esys, &key));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_UNAVAILABLE, err,
			 "loading the authority's key");
		goto out;
	}
	attest_sha256(approved->buffer, approved->size, ahash.buffer);
	ts.signature.ecdsa.hash = TPM2_ALG_SHA256;
	ts.signature.ecdsa.signatureR.size = 32;
	memcpy(ts.signature.ecdsa.signatureR.buffer, sig, 32);
	ts.signature.ecdsa.signatureS.size = 32;
	memcpy(ts.signature.ecdsa.signatureS.buffer, sig + 32, 32);
	RUN(t, rc,
	    Esys_VerifySignature_Async(t->esys, key, ESYS_TR_NONE,
				       ESYS_TR_NONE, ESYS_TR_NONE, &ahash,
				       &ts),
	    Esys_VerifySignature_Finish(t->esys, &ticket));
	tpm_flush(t, &key);
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_FORBIDDEN, err,
			 "the approval is not signed by the authority");
		goto out;
	}
	RUN(t, rc,
	    Esys_PolicyAuthorize_Async(t->esys, s, ESYS_TR_NONE, ESYS_TR_NONE,
				       ESYS_TR_NONE, approved, NULL, &kname,
				       ticket),
	    Esys_PolicyAuthorize_Finish(t->esys));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_FORBIDDEN, err, "PolicyAuthorize");
		goto out;
	}
	ret = 0;
out:
	tpm_flush(t, &key);
	Esys_Free(approved);
	Esys_Free(ticket);
	return ret;
}

int attest_tpm_unseal(struct attest_tpm *t, const uint8_t *pub,
		      size_t pub_len, const uint8_t *priv, size_t priv_len,
		      unsigned pcr, const uint8_t pcr_value[ATTEST_DIGEST_LEN],
		      EVP_PKEY *authority, const uint8_t sig[ATTEST_SIG_LEN],
		      uint8_t *out, size_t *out_len, struct ferr *err)
{
	const TPMT_SYM_DEF sym = { .algorithm = TPM2_ALG_NULL };
	TPM2B_PUBLIC opub = { 0 };
	TPM2B_PRIVATE opriv = { 0 };
	TPM2B_SENSITIVE_DATA *data = NULL;
	ESYS_TR s = ESYS_TR_NONE, srk = ESYS_TR_NONE, obj = ESYS_TR_NONE;
	size_t o1 = 0, o2 = 0;
	TSS2_RC rc;
	int ret = -1;

	if (pcr > ATTEST_PCR_MAX ||
	    Tss2_MU_TPM2B_PUBLIC_Unmarshal(pub, pub_len, &o1, &opub) != 0 ||
	    o1 != pub_len ||
	    Tss2_MU_TPM2B_PRIVATE_Unmarshal(priv, priv_len, &o2, &opriv) !=
		    0 ||
	    o2 != priv_len)
		return ferr_set(err, FERR_INVALID,
				"TPM: the sealed object is malformed");
	pthread_mutex_lock(&t->lock);
	RUN(t, rc,
	    Esys_StartAuthSession_Async(t->esys, ESYS_TR_NONE, ESYS_TR_NONE,
					ESYS_TR_NONE, ESYS_TR_NONE,
					ESYS_TR_NONE, NULL, TPM2_SE_POLICY,
					&sym, TPM2_ALG_SHA256),
	    Esys_StartAuthSession_Finish(t->esys, &s));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_UNAVAILABLE, err,
			 "starting a policy session");
		goto out;
	}
	if (unseal_policy(t, s, pcr, pcr_value, authority, sig, err) < 0 ||
	    srk_create(t, &srk, err) < 0)
		goto out;
	RUN(t, rc,
	    Esys_Load_Async(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE,
			    ESYS_TR_NONE, &opriv, &opub),
	    Esys_Load_Finish(t->esys, &obj));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_FORBIDDEN, err,
			 "loading the sealed object (sealed by another TPM?)");
		goto out;
	}
	RUN(t, rc,
	    Esys_Unseal_Async(t->esys, obj, s, ESYS_TR_NONE, ESYS_TR_NONE),
	    Esys_Unseal_Finish(t->esys, &data));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_FORBIDDEN, err, "Unseal");
		goto out;
	}
	if (data->size > *out_len) {
		ferr_set(err, FERR_INVALID, "TPM: unsealed data too large");
		goto out;
	}
	memcpy(out, data->buffer, data->size);
	*out_len = data->size;
	ret = 0;
out:
	if (data)
		secret_wipe(data->buffer, sizeof(data->buffer));
	Esys_Free(data);
	tpm_flush(t, &obj);
	tpm_flush(t, &srk);
	tpm_flush(t, &s);
	pthread_mutex_unlock(&t->lock);
	return ret;
}
