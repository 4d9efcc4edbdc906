/* tpm.c - ferryd's TPM over tss2 ESYS: one context, one mutex, transient
 * objects flushed, every command bounded (attest_tpm.h); the EK, the AK,
 * PCRs, quotes and credential activation. Sealing is in seal.c. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "attest_internal.h"

#define POLL_MS 100       /* one _Finish wait */
#define NV_CHUNK 512      /* bytes per TPM2_NV_Read */

const TPM2B_DATA tpm_no_data;
const TPML_PCR_SELECTION tpm_no_pcrs;

int tpm_fail(struct attest_tpm *t, TSS2_RC rc, enum ferr_code code,
	     struct ferr *err, const char *what)
{
	if (t->broken)
		return ferr_set(err, FERR_TIMEOUT,
				"TPM: %s: the TPM did not answer within %d ms",
				what, ATTEST_TPM_TIMEOUT_MS);
	return ferr_set(err, code, "TPM: %s: %s", what, Tss2_RC_Decode(rc));
}

void tpm_flush(struct attest_tpm *t, ESYS_TR *h)
{
	TSS2_RC rc;

	if (*h == ESYS_TR_NONE)
		return;
	RUN(t, rc, Esys_FlushContext_Async(t->esys, *h),
	    Esys_FlushContext_Finish(t->esys));
	if (rc != TSS2_RC_SUCCESS)
		log_warn("TPM: cannot flush a transient object: %s",
			 Tss2_RC_Decode(rc));
	*h = ESYS_TR_NONE;
}

int attest_tpm_open(const char *tcti, struct attest_tpm **out,
		    struct ferr *err)
{
	struct attest_tpm *t = calloc(1, sizeof(*t));
	TSS2_RC rc;

	*out = NULL;
	if (!t)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	pthread_mutex_init(&t->lock, NULL);
	t->ak = ESYS_TR_NONE;
	rc = Tss2_TctiLdr_Initialize(tcti, &t->tcti);
	if (rc != TSS2_RC_SUCCESS) {
		ferr_set(err, FERR_UNAVAILABLE, "TPM: cannot open TCTI \"%s\": %s",
			 tcti, Tss2_RC_Decode(rc));
		goto fail;
	}
	rc = Esys_Initialize(&t->esys, t->tcti, NULL);
	if (rc == TSS2_RC_SUCCESS)
		rc = Esys_SetTimeout(t->esys, POLL_MS);
	if (rc != TSS2_RC_SUCCESS) {
		ferr_set(err, FERR_UNAVAILABLE, "TPM: cannot talk to \"%s\": %s",
			 tcti, Tss2_RC_Decode(rc));
		goto fail;
	}
	RUN(t, rc, Esys_Startup_Async(t->esys, TPM2_SU_CLEAR),
	    Esys_Startup_Finish(t->esys));
	if (rc != TSS2_RC_SUCCESS && rc != TPM2_RC_INITIALIZE) {
		tpm_fail(t, rc, FERR_UNAVAILABLE, err, "startup");
		goto fail;
	}
	*out = t;
	return 0;
fail:
	attest_tpm_close(t);
	return -1;
}

void attest_tpm_close(struct attest_tpm *t)
{
	if (!t)
		return;
	if (t->esys)
		Esys_Finalize(&t->esys);
	if (t->tcti)
		Tss2_TctiLdr_Finalize(&t->tcti);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

int attest_tpm_ek_cert(struct attest_tpm *t, uint8_t **der, size_t *len,
		       struct ferr *err)
{
	ESYS_TR nv = ESYS_TR_NONE;
	TPM2B_NV_PUBLIC *pub = NULL;
	TPM2B_MAX_NV_BUFFER *chunk = NULL;
	uint8_t *buf = NULL;
	size_t size = 0, off = 0;
	TSS2_RC rc;
	int ret = -1;

	*der = NULL;
	pthread_mutex_lock(&t->lock);
	RUN(t, rc,
	    Esys_TR_FromTPMPublic_Async(t->esys, ATTEST_EK_CERT_NV,
					ESYS_TR_NONE, ESYS_TR_NONE,
					ESYS_TR_NONE),
	    Esys_TR_FromTPMPublic_Finish(t->esys, &nv));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_NOT_FOUND, err,
			 "no EK certificate at NV index 0x01c00002");
		goto out;
	}
	RUN(t, rc,
	    Esys_NV_ReadPublic_Async(t->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE,
				     ESYS_TR_NONE),
	    Esys_NV_ReadPublic_Finish(t->esys, &pub, NULL));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_UNAVAILABLE, err, "EK certificate index");
		goto out;
	}
	size = pub->nvPublic.dataSize;
	if (size == 0 || size > ATTEST_EK_CERT_MAX ||
	    !(buf = malloc(size))) {
		ferr_set(err, FERR_INVALID,
			 "TPM: the EK certificate index holds %zu bytes", size);
		goto out;
	}
	while (off < size) {
		uint16_t n = (uint16_t)(size - off > NV_CHUNK ? NV_CHUNK
							      : size - off);

		/* the EK certificate index is readable with its own empty
		 * authorization (TPMA_NV_AUTHREAD) */
		RUN(t, rc,
		    Esys_NV_Read_Async(t->esys, nv, nv, ESYS_TR_PASSWORD,
				       ESYS_TR_NONE, ESYS_TR_NONE, n,
				       (uint16_t)off),
		    Esys_NV_Read_Finish(t->esys, &chunk));
		if (rc != TSS2_RC_SUCCESS || chunk->size != n) {
			tpm_fail(t, rc, FERR_UNAVAILABLE, err,
				 "reading the EK certificate");
			goto out;
		}
		memcpy(buf + off, chunk->buffer, n);
		off += n;
		Esys_Free(chunk);
		chunk = NULL;
	}
	*der = buf;
	*len = size;
	buf = NULL;
	ret = 0;
out:
	Esys_Free(chunk);
	Esys_Free(pub);
	free(buf);
	if (nv != ESYS_TR_NONE)
		Esys_TR_Close(t->esys, &nv);
	pthread_mutex_unlock(&t->lock);
	return ret;
}

/* The TCG EK Credential Profile's default RSA 2048 EK template (L-1). */
static void ek_template(TPM2B_PUBLIC *p)
{
	static const uint8_t policy_a[32] = {
		0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8,
		0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
		0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64,
		0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
	};
	TPMT_PUBLIC *a = &p->publicArea;

	memset(p, 0, sizeof(*p));
	a->type = TPM2_ALG_RSA;
	a->nameAlg = TPM2_ALG_SHA256;
	a->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
			      TPMA_OBJECT_SENSITIVEDATAORIGIN |
			      TPMA_OBJECT_ADMINWITHPOLICY |
			      TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
	a->authPolicy.size = sizeof(policy_a);
	memcpy(a->authPolicy.buffer, policy_a, sizeof(policy_a));
	a->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_AES;
	a->parameters.rsaDetail.symmetric.keyBits.aes = 128;
	a->parameters.rsaDetail.symmetric.mode.aes = TPM2_ALG_CFB;
	a->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
	a->parameters.rsaDetail.keyBits = 2048;
	a->unique.rsa.size = 256;
}

/* The EK: the persisted one at its standard handle, or a transient one
 * from the template (*transient then says it must be flushed). */
static int ek_load(struct attest_tpm *t, ESYS_TR *ek, bool *transient,
		   struct ferr *err)
{
	TPM2B_SENSITIVE_CREATE sens = { 0 };
	TPM2B_PUBLIC tmpl;
	TSS2_RC rc;

	*transient = false;
	RUN(t, rc,
	    Esys_TR_FromTPMPublic_Async(t->esys, ATTEST_EK_HANDLE,
					ESYS_TR_NONE, ESYS_TR_NONE,
					ESYS_TR_NONE),
	    Esys_TR_FromTPMPublic_Finish(t->esys, ek));
	if (rc == TSS2_RC_SUCCESS)
		return 0;
	if (t->broken)
		return tpm_fail(t, rc, FERR_TIMEOUT, err, "EK");
	ek_template(&tmpl);
	RUN(t, rc,
	    Esys_CreatePrimary_Async(t->esys, ESYS_TR_RH_ENDORSEMENT,
				     ESYS_TR_PASSWORD, ESYS_TR_NONE,
				     ESYS_TR_NONE, &sens, &tmpl, &tpm_no_data, &tpm_no_pcrs),
	    Esys_CreatePrimary_Finish(t->esys, ek, NULL, NULL, NULL, NULL));
	if (rc != TSS2_RC_SUCCESS)
		return tpm_fail(t, rc, FERR_UNAVAILABLE, err,
				"creating the EK");
	*transient = true;
	return 0;
}

static void ek_release(struct attest_tpm *t, ESYS_TR *ek, bool transient)
{
	if (transient)
		tpm_flush(t, ek);
	else if (*ek != ESYS_TR_NONE)
		Esys_TR_Close(t->esys, ek);
	*ek = ESYS_TR_NONE;
}

/* A policy session satisfying the EK's policy (PolicySecret with the
 * endorsement hierarchy's empty authorization). */
static int ek_session(struct attest_tpm *t, ESYS_TR *s, struct ferr *err)
{
	const TPMT_SYM_DEF sym = { .algorithm = TPM2_ALG_NULL };
	TSS2_RC rc;

	RUN(t, rc,
	    Esys_StartAuthSession_Async(t->esys, ESYS_TR_NONE, ESYS_TR_NONE,
					ESYS_TR_NONE, ESYS_TR_NONE,
					ESYS_TR_NONE, NULL, TPM2_SE_POLICY,
					&sym, TPM2_ALG_SHA256),
	    Esys_StartAuthSession_Finish(t->esys, s));
	if (rc != TSS2_RC_SUCCESS)
		return tpm_fail(t, rc, FERR_UNAVAILABLE, err,
				"starting a policy session");
	RUN(t, rc,
	    Esys_PolicySecret_Async(t->esys, ESYS_TR_RH_ENDORSEMENT, *s,
				    ESYS_TR_PASSWORD, ESYS_TR_NONE,
				    ESYS_TR_NONE, NULL, NULL, NULL, 0),
	    Esys_PolicySecret_Finish(t->esys, NULL, NULL));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_flush(t, s);
		return tpm_fail(t, rc, FERR_UNAVAILABLE, err,
				"PolicySecret(endorsement)");
	}
	return 0;
}

/* The AK template: restricted ECC P-256 ECDSA-SHA256 signing key. */
static void ak_template(TPM2B_PUBLIC *p)
{
	TPMT_PUBLIC *a = &p->publicArea;

	memset(p, 0, sizeof(*p));
	a->type = TPM2_ALG_ECC;
	a->nameAlg = TPM2_ALG_SHA256;
	a->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
			      TPMA_OBJECT_SENSITIVEDATAORIGIN |
			      TPMA_OBJECT_USERWITHAUTH |
			      TPMA_OBJECT_RESTRICTED |
			      TPMA_OBJECT_SIGN_ENCRYPT;
	a->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
	a->parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
	a->parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
	a->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
	a->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
}

/* Create the AK under the EK and persist it at ATTEST_AK_HANDLE. */
static int ak_create(struct attest_tpm *t, struct ferr *err)
{
	TPM2B_SENSITIVE_CREATE sens = { 0 };
	TPM2B_PUBLIC tmpl, *opub = NULL;
	TPM2B_PRIVATE *opriv = NULL;
	ESYS_TR ek = ESYS_TR_NONE, s = ESYS_TR_NONE, ak = ESYS_TR_NONE;
	bool transient = false;
	TSS2_RC rc;
	int ret = -1;

	ak_template(&tmpl);
	if (ek_load(t, &ek, &transient, err) < 0 ||
	    ek_session(t, &s, err) < 0)
		goto out;
	RUN(t, rc,
	    Esys_Create_Async(t->esys, ek, s, ESYS_TR_NONE, ESYS_TR_NONE,
			      &sens, &tmpl, &tpm_no_data, &tpm_no_pcrs),
	    Esys_Create_Finish(t->esys, &opriv, &opub, NULL, NULL, NULL));
	tpm_flush(t, &s);
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_UNAVAILABLE, err, "creating the AK");
		goto out;
	}
	if (ek_session(t, &s, err) < 0)
		goto out;
	RUN(t, rc,
	    Esys_Load_Async(t->esys, ek, s, ESYS_TR_NONE, ESYS_TR_NONE, opriv,
			    opub),
	    Esys_Load_Finish(t->esys, &ak));
	tpm_flush(t, &s);
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_UNAVAILABLE, err, "loading the AK");
		goto out;
	}
	RUN(t, rc,
	    Esys_EvictControl_Async(t->esys, ESYS_TR_RH_OWNER, ak,
				    ESYS_TR_PASSWORD, ESYS_TR_NONE,
				    ESYS_TR_NONE, ATTEST_AK_HANDLE),
	    Esys_EvictControl_Finish(t->esys, &t->ak));
	if (rc != TSS2_RC_SUCCESS) {
		t->ak = ESYS_TR_NONE;
		tpm_fail(t, rc, FERR_UNAVAILABLE, err, "persisting the AK");
		goto out;
	}
	ret = 0;
out:
	tpm_flush(t, &ak);
	tpm_flush(t, &s);
	ek_release(t, &ek, transient);
	Esys_Free(opriv);
	Esys_Free(opub);
	return ret;
}

int attest_tpm_ak(struct attest_tpm *t, uint8_t *pub, size_t *len,
		  bool *created, struct ferr *err)
{
	TPM2B_PUBLIC *p = NULL;
	uint8_t name[ATTEST_NAME_LEN];
	size_t cap = *len, n = 0;
	TSS2_RC rc;
	int ret = -1;

	*created = false;
	pthread_mutex_lock(&t->lock);
	if (t->ak == ESYS_TR_NONE) {
		RUN(t, rc,
		    Esys_TR_FromTPMPublic_Async(t->esys, ATTEST_AK_HANDLE,
						ESYS_TR_NONE, ESYS_TR_NONE,
						ESYS_TR_NONE),
		    Esys_TR_FromTPMPublic_Finish(t->esys, &t->ak));
		if (rc != TSS2_RC_SUCCESS) {
			t->ak = ESYS_TR_NONE;
			if (t->broken) {
				tpm_fail(t, rc, FERR_TIMEOUT, err, "AK");
				goto out;
			}
			if (ak_create(t, err) < 0)
				goto out;
			*created = true;
		}
	}
	RUN(t, rc,
	    Esys_ReadPublic_Async(t->esys, t->ak, ESYS_TR_NONE, ESYS_TR_NONE,
				  ESYS_TR_NONE),
	    Esys_ReadPublic_Finish(t->esys, &p, NULL, NULL));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_UNAVAILABLE, err, "reading the AK");
		goto out;
	}
	if (Tss2_MU_TPM2B_PUBLIC_Marshal(p, pub, cap, &n) != 0) {
		ferr_set(err, FERR_INTERNAL, "TPM: AK public too large");
		goto out;
	}
	if (attest_ak_check(pub, n, name, NULL, err) < 0) {
		ferr_set(err, FERR_CONFLICT,
			 "TPM: persistent handle 0x%08x holds a key that is "
			 "not a ferry AK; evict it (tpm2_evictcontrol) or "
			 "use another TPM",
			 ATTEST_AK_HANDLE);
		goto out;
	}
	*len = n;
	ret = 0;
out:
	Esys_Free(p);
	pthread_mutex_unlock(&t->lock);
	return ret;
}

void tpm_pcr_selection(uint32_t mask, TPML_PCR_SELECTION *sel)
{
	memset(sel, 0, sizeof(*sel));
	sel->count = 1;
	sel->pcrSelections[0].hash = TPM2_ALG_SHA256;
	sel->pcrSelections[0].sizeofSelect = 3;
	for (unsigned i = 0; i <= ATTEST_PCR_MAX; i++)
		if (mask & (1u << i))
			sel->pcrSelections[0].pcrSelect[i / 8] |=
				(uint8_t)(1u << (i % 8));
}

int attest_tpm_pcr_read(struct attest_tpm *t, unsigned pcr,
			uint8_t out[ATTEST_DIGEST_LEN], struct ferr *err)
{
	TPML_PCR_SELECTION sel;
	TPML_DIGEST *vals = NULL;
	TSS2_RC rc;
	int ret = -1;

	if (pcr > ATTEST_PCR_MAX)
		return ferr_set(err, FERR_INVALID, "PCR %u is not 0-15", pcr);
	tpm_pcr_selection(1u << pcr, &sel);
	pthread_mutex_lock(&t->lock);
	RUN(t, rc,
	    Esys_PCR_Read_Async(t->esys, ESYS_TR_NONE, ESYS_TR_NONE,
				ESYS_TR_NONE, &sel),
	    Esys_PCR_Read_Finish(t->esys, NULL, NULL, &vals));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_UNAVAILABLE, err, "PCR_Read");
		goto out;
	}
	if (vals->count != 1 || vals->digests[0].size != ATTEST_DIGEST_LEN) {
		ferr_set(err, FERR_UNAVAILABLE,
			 "TPM: PCR %u has no SHA-256 bank", pcr);
		goto out;
	}
	memcpy(out, vals->digests[0].buffer, ATTEST_DIGEST_LEN);
	ret = 0;
out:
	Esys_Free(vals);
	pthread_mutex_unlock(&t->lock);
	return ret;
}

int attest_tpm_extend(struct attest_tpm *t, unsigned pcr,
		      const uint8_t d[ATTEST_DIGEST_LEN], struct ferr *err)
{
	TPML_DIGEST_VALUES v = { .count = 1 };
	TSS2_RC rc;

	if (pcr > ATTEST_PCR_MAX)
		return ferr_set(err, FERR_INVALID, "PCR %u is not 0-15", pcr);
	v.digests[0].hashAlg = TPM2_ALG_SHA256;
	memcpy(v.digests[0].digest.sha256, d, ATTEST_DIGEST_LEN);
	pthread_mutex_lock(&t->lock);
	RUN(t, rc,
	    Esys_PCR_Extend_Async(t->esys, ESYS_TR_PCR0 + pcr,
				  ESYS_TR_PASSWORD, ESYS_TR_NONE,
				  ESYS_TR_NONE, &v),
	    Esys_PCR_Extend_Finish(t->esys));
	pthread_mutex_unlock(&t->lock);
	if (rc != TSS2_RC_SUCCESS)
		return tpm_fail(t, rc, FERR_UNAVAILABLE, err, "PCR_Extend");
	return 0;
}

int attest_tpm_quote(struct attest_tpm *t,
		     const uint8_t nonce[ATTEST_NONCE_LEN], uint32_t pcr_mask,
		     uint8_t *att, size_t *att_len, uint8_t *sig,
		     size_t *sig_len, struct ferr *err)
{
	TPM2B_DATA qd = { .size = ATTEST_NONCE_LEN };
	TPMT_SIG_SCHEME scheme = { .scheme = TPM2_ALG_ECDSA };
	TPML_PCR_SELECTION sel;
	TPM2B_ATTEST *quoted = NULL;
	TPMT_SIGNATURE *signature = NULL;
	size_t n = 0;
	TSS2_RC rc;
	int ret = -1;

	memcpy(qd.buffer, nonce, ATTEST_NONCE_LEN);
	scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
	tpm_pcr_selection(pcr_mask, &sel);
	pthread_mutex_lock(&t->lock);
	if (t->ak == ESYS_TR_NONE) {
		ferr_set(err, FERR_INTERNAL, "TPM: the AK is not loaded");
		goto out;
	}
	RUN(t, rc,
	    Esys_Quote_Async(t->esys, t->ak, ESYS_TR_PASSWORD, ESYS_TR_NONE,
			     ESYS_TR_NONE, &qd, &scheme, &sel),
	    Esys_Quote_Finish(t->esys, &quoted, &signature));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_UNAVAILABLE, err, "Quote");
		goto out;
	}
	if (quoted->size > *att_len ||
	    Tss2_MU_TPMT_SIGNATURE_Marshal(signature, sig, *sig_len, &n) !=
		    0) {
		ferr_set(err, FERR_INTERNAL, "TPM: quote larger than expected");
		goto out;
	}
	memcpy(att, quoted->attestationData, quoted->size);
	*att_len = quoted->size;
	*sig_len = n;
	ret = 0;
out:
	Esys_Free(quoted);
	Esys_Free(signature);
	pthread_mutex_unlock(&t->lock);
	return ret;
}

int attest_tpm_activate(struct attest_tpm *t, const uint8_t *blob,
			size_t blob_len, const uint8_t *enc, size_t enc_len,
			uint8_t out[ATTEST_CREDENTIAL_LEN], struct ferr *err)
{
	TPM2B_ID_OBJECT cb = { 0 };
	TPM2B_ENCRYPTED_SECRET es = { 0 };
	TPM2B_DIGEST *cert = NULL;
	ESYS_TR ek = ESYS_TR_NONE, s = ESYS_TR_NONE;
	bool transient = false;
	TSS2_RC rc;
	int ret = -1;

	if (blob_len > sizeof(cb.credential) ||
	    enc_len > sizeof(es.secret))
		return ferr_set(err, FERR_INVALID,
				"credential or secret too large");
	cb.size = (uint16_t)blob_len;
	memcpy(cb.credential, blob, blob_len);
	es.size = (uint16_t)enc_len;
	memcpy(es.secret, enc, enc_len);
	pthread_mutex_lock(&t->lock);
	if (t->ak == ESYS_TR_NONE) {
		ferr_set(err, FERR_INTERNAL, "TPM: the AK is not loaded");
		goto out;
	}
	if (ek_load(t, &ek, &transient, err) < 0 ||
	    ek_session(t, &s, err) < 0)
		goto out;
	RUN(t, rc,
	    Esys_ActivateCredential_Async(t->esys, t->ak, ek, ESYS_TR_PASSWORD,
					  s, ESYS_TR_NONE, &cb, &es),
	    Esys_ActivateCredential_Finish(t->esys, &cert));
	if (rc != TSS2_RC_SUCCESS) {
		tpm_fail(t, rc, FERR_FORBIDDEN, err,
			 "ActivateCredential (the credential is not for this "
			 "TPM's EK and AK)");
		goto out;
	}
	if (cert->size != ATTEST_CREDENTIAL_LEN) {
		ferr_set(err, FERR_INVALID, "TPM: the credential is %u bytes",
			 (unsigned)cert->size);
		goto out;
	}
	memcpy(out, cert->buffer, ATTEST_CREDENTIAL_LEN);
	ret = 0;
out:
	if (cert)
		secret_wipe(cert->buffer, sizeof(cert->buffer));
	Esys_Free(cert);
	tpm_flush(t, &s);
	ek_release(t, &ek, transient);
	pthread_mutex_unlock(&t->lock);
	return ret;
}

