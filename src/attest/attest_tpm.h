/* attest_tpm.h - the host side of attestation: ferryd owns its host's TPM
 * (tss2 ESYS) and measures, quotes, activates credentials and unseals its
 * storage key with it.
 *
 * tpm.c wraps the TPM: one ESYS context per TPM, every command under one
 * mutex (swtpm serves one client at a time and has 3 transient object
 * slots), every transient object and session flushed before the call
 * returns, and every command bounded by ATTEST_TPM_TIMEOUT_MS (a TPM that
 * misses it is marked broken and refuses later commands).
 *
 * host.c is what ferryd runs at start and serves through attest_ops:
 * the event log, measurements, sealed storage, approvals.
 */
#ifndef FERRY_ATTEST_TPM_H
#define FERRY_ATTEST_TPM_H

#include "attest.h"
#include "config.h"

/* ---- the TPM (tpm.c) ------------------------------------------------- */

struct attest_tpm;

/* Connect through the TCTI configuration string (e.g.
 * "device:/dev/tpmrm0", "swtpm:host=127.0.0.1,port=2321") and start the
 * TPM if it was not (TPM2_Startup(CLEAR); "already started" is fine). */
int attest_tpm_open(const char *tcti, struct attest_tpm **out,
		    struct ferr *err);

/* Close the connection; NULL is fine. */
void attest_tpm_close(struct attest_tpm *t);

/* The RSA 2048 EK certificate (DER, malloc'd) from its standard NV index. */
int attest_tpm_ek_cert(struct attest_tpm *t, uint8_t **der, size_t *len,
		       struct ferr *err);

/* Load the persistent AK (ATTEST_AK_HANDLE), or create it under the EK and
 * persist it; *created says which. Gives its marshalled TPM2B_PUBLIC
 * (*len in: the buffer size). A key at the handle that is not an AK
 * (attest_ak_check) is FERR_CONFLICT. */
int attest_tpm_ak(struct attest_tpm *t, uint8_t *pub, size_t *len,
		  bool *created, struct ferr *err);

/* The SHA-256 bank value of PCR pcr (0-15). */
int attest_tpm_pcr_read(struct attest_tpm *t, unsigned pcr,
			uint8_t out[ATTEST_DIGEST_LEN], struct ferr *err);

/* Extend PCR pcr (0-15) with d in the SHA-256 bank. */
int attest_tpm_extend(struct attest_tpm *t, unsigned pcr,
		      const uint8_t d[ATTEST_DIGEST_LEN], struct ferr *err);

/* TPM2_Quote with the AK (attest_tpm_ak first) over the SHA-256 PCRs in
 * pcr_mask (bits 0-15) with nonce as qualifying data. att gets the
 * TPMS_ATTEST bytes, sig the marshalled TPMT_SIGNATURE (*att_len, *sig_len
 * in: buffer sizes). */
int attest_tpm_quote(struct attest_tpm *t,
		     const uint8_t nonce[ATTEST_NONCE_LEN], uint32_t pcr_mask,
		     uint8_t *att, size_t *att_len, uint8_t *sig,
		     size_t *sig_len, struct ferr *err);

/* TPM2_ActivateCredential for the AK with the EK: the credential of a
 * TPM2B_ID_OBJECT / TPM2B_ENCRYPTED_SECRET pair (their buffers). A blob
 * for another TPM or another key is FERR_FORBIDDEN. */
int attest_tpm_activate(struct attest_tpm *t, const uint8_t *blob,
			size_t blob_len, const uint8_t *enc, size_t enc_len,
			uint8_t out[ATTEST_CREDENTIAL_LEN], struct ferr *err);

/* Seal len (at most 128) bytes under the owner hierarchy's storage
 * primary key, with authPolicy `policy` (attest_authorize_policy) and no
 * password use. Gives the marshalled TPM2B_PUBLIC and TPM2B_PRIVATE
 * (lengths in: buffer sizes). */
int attest_tpm_seal(struct attest_tpm *t,
		    const uint8_t policy[ATTEST_DIGEST_LEN],
		    const uint8_t *data, size_t len, uint8_t *pub,
		    size_t *pub_len, uint8_t *priv, size_t *priv_len,
		    struct ferr *err);

/* Unseal what attest_tpm_seal made: a policy session with PolicyPCR (pcr
 * must hold pcr_value, else FERR_FORBIDDEN), then PolicyAuthorize with
 * the authority's signature sig over it (checked by the TPM:
 * VerifySignature of the externally loaded authority key). out gets the
 * data (*out_len in: buffer size); the caller wipes it. */
int attest_tpm_unseal(struct attest_tpm *t, const uint8_t *pub,
		      size_t pub_len, const uint8_t *priv, size_t priv_len,
		      unsigned pcr, const uint8_t pcr_value[ATTEST_DIGEST_LEN],
		      EVP_PKEY *authority, const uint8_t sig[ATTEST_SIG_LEN],
		      uint8_t *out, size_t *out_len, struct ferr *err);

/* ---- ferryd's attestation (host.c) ------------------------------------ */

struct attest_host;

/* What ferryd runs at start when cfg->attest.mode is not off, before the
 * audit log and the TLS contexts: connect to the TPM, load or create the
 * AK, recover the event log (<state_dir>/attest), measure the ferryd
 * executable (/proc/self/exe) and QEMU into cfg's PCR and the policy into
 * its policy PCR (only what is not already measured since the TPM was
 * reset), and, with sealing on, unseal the storage key (or create and seal
 * it on the first start) and open the sealed TLS and audit keys, importing
 * and deleting the plaintext key files the first time.
 *
 * A seal that does not open because the measured software changed is
 * FERR_FORBIDDEN naming what changed (e.g. "the qemu executable changed
 * since the seal was approved: ... approved 3fa1..., now 9b2c...; if the
 * change is approved, run `ferry host reseal`"); <state_dir>/attest/
 * pending.json then holds what was measured, for `ferry host reseal`. */
int attest_host_open(const struct ferryd_config *cfg, struct attest_host **out,
		     struct ferr *err);

/* The unsealed TLS key (for tls_key_provide) and audit key (for
 * audit_open_key), or NULL when sealing is off. Owned by h. */
EVP_PKEY *attest_host_tls_key(const struct attest_host *h);
EVP_PKEY *attest_host_audit_key(const struct attest_host *h);

/* The operations ferryd's components call (quote, verify, identity,
 * activate, approve, policy_accepted). Valid until attest_host_free. */
const struct attest_ops *attest_host_ops(struct attest_host *h);

/* A one-line summary for the start log ("TPM swtpm:..., AK 0x81000f10,
 * PCRs 15/13, sealed storage on"). */
const char *attest_host_summary(const struct attest_host *h);

/* Close the TPM and wipe the keys; NULL is fine. */
void attest_host_free(struct attest_host *h);

#endif
