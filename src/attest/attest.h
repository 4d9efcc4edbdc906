/* attest.h - remote attestation and sealed storage: the part that needs no
 * TPM (tss2-mu and OpenSSL only).
 *
 * Used by the verifier (a source host before it sends guest memory, and
 * `ferry host attest`), by the registrar (`ferry host enroll`, `ferry host
 * reseal`) and by the host side (attest_tpm.h), which builds on it:
 *  - the measurement event log (eventlog.c): parsing, replay, digests;
 *  - quote verification (verify.c): signature by the enrolled AK, nonce,
 *    log replay against the quoted PCR digest, each event against the
 *    reference values;
 *  - the registrar (registrar.c): EK certificates against the TPM
 *    manufacturers' CAs, MakeCredential, enrolled AK records;
 *  - the attestation authority (authority.c): seal approvals that
 *    TPM2_PolicyAuthorize accepts, policy acceptances, the storage-key
 *    envelope.
 * Formats and limits: attest_format.h. Flow and threat model:
 * docs/attestation.md.
 */
#ifndef FERRY_ATTEST_H
#define FERRY_ATTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "attest_format.h"
#include "common.h"

/* tss2 logs every error to stderr, expected ones too (a missing persistent
 * key, a malformed quote from a peer); ferry reports what matters itself.
 * Programs set this in their environment at start, before any thread
 * (setenv(..., 0): a TSS2_LOG already set wins). */
#define ATTEST_TSS2_LOG_ENV "TSS2_LOG"
#define ATTEST_TSS2_LOG_QUIET "all+NONE"

/* ---- helpers -------------------------------------------------------- */

/* Lowercase hex of n bytes into out (2n + 1 bytes). */
void attest_hex(const uint8_t *d, size_t n, char *out);

/* Exactly 2n hex digits of s into out; -1 otherwise. */
int attest_unhex(const char *s, uint8_t *out, size_t n);

/* Canonical base64 of s (at most max decoded bytes) into a malloc'd
 * buffer; FERR_INVALID naming `what` on anything else. */
int attest_b64_decode(const char *s, size_t max, const char *what,
		      uint8_t **out, size_t *len, struct ferr *err);

/* base64 of n bytes as a JSON string (NULL when out of memory). */
json_t *attest_b64_json(const uint8_t *d, size_t n);

/* SHA-256 of n bytes. */
void attest_sha256(const void *d, size_t n, uint8_t out[ATTEST_DIGEST_LEN]);

/* SHA-256 of the file at path, streamed (bounded only by the file). */
int attest_file_sha256(const char *path, uint8_t out[ATTEST_DIGEST_LEN],
		       struct ferr *err);

/* The measured digest of a policy file: SHA-256 of its JSON serialized
 * canonically (compact, sorted keys) WITHOUT its top-level "attestation"
 * member, which holds reference values (a file cannot list its own
 * digest). text is the file (len bytes). */
int attest_policy_digest(const char *text, size_t len,
			 uint8_t out[ATTEST_DIGEST_LEN], struct ferr *err);

/* The nonce of one attestation: see attest_format.h. context is at most
 * ATTEST_CONTEXT_MAX bytes (a migration id, or ATTEST_CONTEXT_CLI). */
int attest_nonce(const uint8_t challenge[ATTEST_CHALLENGE_LEN],
		 const char *context,
		 const uint8_t exporter[ATTEST_EXPORTER_LEN],
		 uint8_t out[ATTEST_NONCE_LEN], struct ferr *err);

/* The digest the attestation authority signs (attest_sign) for a VM's
 * migration constraints: SHA-256(ATTEST_CONSTRAINTS_TAG "\0" || uuid "\0"
 * || cons serialized compact with sorted keys), cons being the constraints
 * without their signature (vm_constraints_to_json(c, false)). */
int attest_constraints_digest(const char *uuid, const json_t *cons,
			      uint8_t out[ATTEST_DIGEST_LEN], struct ferr *err);

/* ---- the event log (eventlog.c) -------------------------------------- */

struct attest_event {
	uint8_t pcr;
	enum attest_kind kind;
	char path[ATTEST_PATH_MAX + 1];
	uint8_t sha256[ATTEST_DIGEST_LEN];
};

/* Every measurement since the TPM was reset, in extend order. Large:
 * allocate it, don't put it on a small stack. */
struct attest_log {
	unsigned n;
	struct attest_event ev[ATTEST_EVENTS_MAX];
};

/* "ferryd", "qemu", "policy"; "?" for anything else. */
const char *attest_kind_name(enum attest_kind k);

/* The kind named s, or 0. */
enum attest_kind attest_kind_parse(const char *s);

/* The value an event extends its PCR with (attest_format.h). */
void attest_event_hash(const struct attest_event *e,
		       uint8_t out[ATTEST_DIGEST_LEN]);

/* Append an event. FERR_CONFLICT when the log is full; FERR_INVALID for a
 * PCR over ATTEST_PCR_MAX or a path that does not fit. */
int attest_log_add(struct attest_log *log, unsigned pcr, enum attest_kind k,
		   const char *path, const uint8_t sha256[ATTEST_DIGEST_LEN],
		   struct ferr *err);

/* The last event of kind k, or NULL. */
const struct attest_event *attest_log_latest(const struct attest_log *log,
					     enum attest_kind k);

/* Replay the events of PCR pcr from all zeros (a PCR after a reset). */
void attest_log_replay(const struct attest_log *log, unsigned pcr,
		       uint8_t out[ATTEST_DIGEST_LEN]);

/* Strictly parse a JSON array of events (hostile input) into *log. */
int attest_log_from_json(const json_t *arr, struct attest_log *log,
			 struct ferr *err);

/* The events as a JSON array; NULL when out of memory. */
json_t *attest_log_to_json(const struct attest_log *log);

/* ---- verification (verify.c) ----------------------------------------- */

/* An enrolled host, as the registrar recorded it. */
struct attest_record {
	char host[FERRY_NAME_MAX + 1];
	uint8_t ak_public[ATTEST_PUBLIC_MAX]; /* marshalled TPM2B_PUBLIC */
	size_t ak_public_len;
	uint8_t ak_name[ATTEST_NAME_LEN];
	unsigned pcr, policy_pcr;             /* what its quotes must cover */
	char ek_cert_sha256[ATTEST_DIGEST_HEX_LEN + 1];
	char ek_issuer[256];
	uint64_t enrolled_ms;
};

/* What the verifier expects of one quote. */
struct attest_expect {
	const uint8_t *nonce;  /* ATTEST_NONCE_LEN bytes */
	const json_t *refs;    /* reference values for the host: {"ferryd":
				  [hex...], "qemu": [...], "policy": [...]};
				  NULL: nothing is allowed */
	const char *scope;     /* where refs come from, for messages, e.g.
				  "site=eu"; NULL: the host's name */
};

/* Verify a quote blob from rec's host, in this order: the blob's format;
 * the signature by rec's AK over the TPMS_ATTEST bytes (a restricted key,
 * so they are TPM-generated); magic, type, the nonce and the PCR selection
 * (exactly rec's two PCRs); the event log replays to the quoted PCR
 * digest; every ferryd and qemu event, and the policy in force (the last
 * policy event; earlier ones are "superseded"), is in the reference
 * values, and each kind was measured. 0 when all hold; otherwise -1 with
 * FERR_FORBIDDEN and a precise reason (e.g. "qemu digest 3fa1... (/usr/
 * bin/qemu-system-x86_64) is not in the allowlist for site=eu"), or
 * FERR_INVALID for a malformed blob. *report (when not NULL) gets
 * {host, verified, reason, time_ms, tpm: {clock_ms, reset_count,
 * restart_count, safe}, pcrs: {"N": hex}, events: [{pcr, kind, path,
 * sha256, verdict}]} whenever the blob parsed, NULL otherwise. */
int attest_verify(const json_t *blob, const struct attest_record *rec,
		  const struct attest_expect *x, json_t **report,
		  struct ferr *err);

/* Judge each event of log against refs (as attest_verify does): verdict[i]
 * gets "allowed", "not allowed", or "superseded" (a policy event before
 * the last one). 0 when none is "not allowed"; otherwise -1 with
 * FERR_FORBIDDEN naming the first such event, host and scope. */
int attest_log_judge(const struct attest_log *log, const json_t *refs,
		     const char *host, const char *scope, const char **verdict,
		     struct ferr *err);

/* Build a quote blob from the TPM's output and the log. */
json_t *attest_blob_new(const uint8_t *attest, size_t attest_len,
			const uint8_t *sig, size_t sig_len,
			const struct attest_log *log);

/* Check a marshalled TPM2B_PUBLIC as an attestation key: ECC P-256,
 * ECDSA-SHA256, restricted signing, fixedTPM, fixedParent,
 * sensitiveDataOrigin. Gives its TPM name and, when pkey is not NULL, the
 * key for OpenSSL. */
int attest_ak_check(const uint8_t *pub, size_t len,
		    uint8_t name[ATTEST_NAME_LEN], EVP_PKEY **pkey,
		    struct ferr *err);

/* ---- the registrar (registrar.c) ------------------------------------- */

/* Check a DER EK certificate against every CA certificate (PEM) in dir
 * (the TPM manufacturers'): chain, validity, an RSA 2048 key. Gives the
 * EK public key, the certificate's SHA-256 and its issuer. */
int attest_ek_check(const uint8_t *der, size_t len, const char *dir,
		    EVP_PKEY **ek, char sha256_hex[ATTEST_DIGEST_HEX_LEN + 1],
		    char *issuer, size_t issuer_len, struct ferr *err);

/* TPM2_MakeCredential in software (TPM 2.0 Part 1, 24): seal secret for
 * the TPM that holds ek's private key, to be released only with the key
 * named ak_name loaded in it. Outputs the TPM2B_ID_OBJECT and the
 * TPM2B_ENCRYPTED_SECRET contents (their buffers, without size). */
int attest_make_credential(EVP_PKEY *ek, const uint8_t ak_name[ATTEST_NAME_LEN],
			   const uint8_t secret[ATTEST_CREDENTIAL_LEN],
			   uint8_t *blob, size_t *blob_len, uint8_t *enc,
			   size_t *enc_len, struct ferr *err);

/* The proof a host returns for an activated credential (attest_format.h). */
void attest_enroll_proof(const uint8_t secret[ATTEST_CREDENTIAL_LEN],
			 const char *host,
			 const uint8_t ak_name[ATTEST_NAME_LEN],
			 uint8_t out[ATTEST_DIGEST_LEN]);

/* Write rec to <dir>/hosts/<host>.json atomically. */
int attest_record_save(const char *dir, const struct attest_record *rec,
		       struct ferr *err);

/* Read host's record from dir (hostile file, strictly checked). A host
 * without one is FERR_FORBIDDEN "host-b is not enrolled ...". */
int attest_record_load(const char *dir, const char *host,
		       struct attest_record *rec, struct ferr *err);

/* ---- the attestation authority (authority.c) -------------------------- */

/* Create <dir>/authority.key (EC P-256, 0600) and authority.pub. Refuses
 * to overwrite (FERR_CONFLICT). */
int attest_authority_create(const char *dir, struct ferr *err);

/* Load a PEM key: the private key (private=true) or a public key. */
EVP_PKEY *attest_key_load(const char *path, bool private, struct ferr *err);

/* The authority's public key as a marshalled TPM2B_PUBLIC (for
 * TPM2_LoadExternal) and its TPM name. */
int attest_authority_public(EVP_PKEY *key, uint8_t *pub, size_t *len,
			    uint8_t name[ATTEST_NAME_LEN], struct ferr *err);

/* TPM2_PolicyPCR's digest for one SHA-256 PCR holding value. */
void attest_pcr_policy(unsigned pcr, const uint8_t value[ATTEST_DIGEST_LEN],
		       uint8_t out[ATTEST_DIGEST_LEN]);

/* TPM2_PolicyAuthorize's digest for the authority (empty policyRef): the
 * policy of the sealed storage key. */
int attest_authorize_policy(EVP_PKEY *authority,
			    uint8_t out[ATTEST_DIGEST_LEN], struct ferr *err);

/* ECDSA P-256 over a 32-byte digest, as r || s; and its check. */
int attest_sign(EVP_PKEY *key, const uint8_t digest[ATTEST_DIGEST_LEN],
		uint8_t sig[ATTEST_SIG_LEN], struct ferr *err);
bool attest_sig_ok(EVP_PKEY *key, const uint8_t digest[ATTEST_DIGEST_LEN],
		   const uint8_t sig[ATTEST_SIG_LEN]);

/* An approval that PCR pcr may hold value when the storage key is
 * unsealed: {"type": "pcr", pcr, value, signature, events} (events: the
 * software events it covers, for messages; not signed). */
json_t *attest_approve_pcr(EVP_PKEY *authority, unsigned pcr,
			   const uint8_t value[ATTEST_DIGEST_LEN],
			   const struct attest_log *events, struct ferr *err);

/* An acceptance of the policy file whose SHA-256 is file_sha256:
 * {"type": "policy", sha256, signature}. */
json_t *attest_approve_policy(EVP_PKEY *authority,
			      const uint8_t file_sha256[ATTEST_DIGEST_LEN],
			      struct ferr *err);

/* Parse and check an approvals document ({format, approvals: [...]})
 * against the authority's public key: every entry well-formed and signed.
 * Returns the approvals array (borrowed from doc). */
const json_t *attest_approvals_check(const json_t *doc, EVP_PKEY *authority,
				     struct ferr *err);

/* The first "pcr" approval for pcr holding value (NULL when none), and its
 * signature. */
const json_t *attest_approval_find(const json_t *approvals, unsigned pcr,
				   const uint8_t value[ATTEST_DIGEST_LEN],
				   uint8_t sig[ATTEST_SIG_LEN]);

/* Is the policy file with this SHA-256 accepted by an approval? */
bool attest_policy_approved(const json_t *approvals,
			    const uint8_t file_sha256[ATTEST_DIGEST_LEN]);

/* Envelope encryption under the storage key (attest_format.h). name binds
 * the envelope to one use ("tls-key", "audit-key"). *out is malloc'd; an
 * opened secret must be wiped by the caller (secret_wipe) before free. */
int attest_envelope_seal(const uint8_t key[ATTEST_STORAGE_KEY_LEN],
			 const char *name, const uint8_t *data, size_t len,
			 uint8_t **out, size_t *out_len, struct ferr *err);
int attest_envelope_open(const uint8_t key[ATTEST_STORAGE_KEY_LEN],
			 const char *name, const uint8_t *in, size_t in_len,
			 uint8_t **out, size_t *out_len, struct ferr *err);

/* ---- the seam for migrate and the API --------------------------------- */

/* What ferryd's components call, so they need not link the TPM stack and
 * unit tests can stub it. A NULL member (or a NULL table) means attestation
 * is off on this host. ctx is the implementation's. */
struct attest_ops {
	void *ctx;
	/* Host: a quote blob over the measured PCRs for nonce. Serialized
	 * with every other use of the TPM. */
	int (*quote)(void *ctx, const uint8_t nonce[ATTEST_NONCE_LEN],
		     json_t **blob, struct ferr *err);
	/* Verifier: attest_verify of host's blob against its enrolled AK
	 * (FERR_FORBIDDEN when it is not enrolled). */
	int (*verify)(void *ctx, const char *host, const json_t *blob,
		      const struct attest_expect *x, json_t **report,
		      struct ferr *err);
	/* Host, enrolment: {ek_cert, ak_public, ak_name, pcr, policy_pcr}. */
	int (*identity)(void *ctx, json_t **out, struct ferr *err);
	/* Host, enrolment: activate {credential, secret} for this host's AK
	 * and return {proof} (attest_enroll_proof). */
	int (*activate)(void *ctx, const json_t *req, json_t **out,
			struct ferr *err);
	/* Host: store authority-signed approvals ({format, approvals}). */
	int (*approve)(void *ctx, const json_t *doc, struct ferr *err);
	/* Host: the policy file changed and was accepted (reload): measure
	 * it and record it as accepted. */
	int (*policy_accepted)(void *ctx, const char *path, struct ferr *err);
	/* Host, with sealed storage: keep data in an envelope under the
	 * storage key (name binds it, at most ATTEST_ENVELOPE_NAME_MAX bytes)
	 * as <state_dir>/attest/<file>, written atomically. FERR_CONFLICT
	 * when sealing is off. Thread-safe (file I/O: not on the loop). */
	int (*store)(void *ctx, const char *name, const char *file,
		     const uint8_t *data, size_t len, struct ferr *err);
};

/* The verify operation over a registrar folder (records in dir/hosts):
 * ctx is the folder's path (a NUL-terminated string that must outlive the
 * calls). */
int attest_registrar_verify(void *ctx, const char *host, const json_t *blob,
			    const struct attest_expect *x, json_t **report,
			    struct ferr *err);

#endif
