/* attest_format.h - every wire and file format of attestation, with its
 * limits and its format version (docs/attestation.md has the layouts).
 *
 * Formats (all JSON objects with a "format" member = ATTEST_FORMAT_VERSION;
 * a reader refuses any other value):
 *  - quote blob      destination -> verifier: {format, attest, signature,
 *                    events}; attest = base64 of the TPMS_ATTEST bytes the
 *                    TPM signed, signature = base64 of a marshalled
 *                    TPMT_SIGNATURE, events = the measurement log.
 *  - event           {pcr, kind, path, sha256}: a file measured into a PCR.
 *  - event log file  <state_dir>/attest/eventlog.json {format, events}.
 *  - registrar record <registrar>/hosts/HOST.json: the enrolled AK of HOST.
 *  - approvals       <state_dir>/attest/approvals.json: seal approvals
 *                    signed by the attestation authority.
 *  - pending         <state_dir>/attest/pending.json: what a ferryd that
 *                    refused to start measured, for `ferry host reseal`.
 *  - envelope        <state_dir>/attest/NAME.sealed: a secret encrypted under
 *                    the TPM-sealed storage key (binary, layout below).
 *
 * Binary pieces have fixed widths and are big-endian (the TPM's order).
 */
#ifndef FERRY_ATTEST_FORMAT_H
#define FERRY_ATTEST_FORMAT_H

#include <stdint.h>

#include "ferry_limits.h"

#define ATTEST_FORMAT_VERSION 1

/* Digests: SHA-256 everywhere (PCR bank, names, nonces, measurements). */
#define ATTEST_DIGEST_LEN 32
#define ATTEST_DIGEST_HEX_LEN (2 * ATTEST_DIGEST_LEN)
#define ATTEST_NAME_LEN (2 + ATTEST_DIGEST_LEN)   /* TPM name: alg + hash */

/* PCRs ferry may use: 0-15 only. PCRs 16-23 include debug and
 * application PCRs that locality 0 can reset (16 and 23), so nothing may
 * rest on them. */
#define ATTEST_PCR_MAX FERRY_ATTEST_PCR_MAX
#define ATTEST_PCR_DEFAULT FERRY_ATTEST_PCR_DEFAULT
#define ATTEST_POLICY_PCR_DEFAULT FERRY_ATTEST_POLICY_PCR_DEFAULT

/* Nonce: SHA-256(ATTEST_NONCE_TAG "\0" || challenge || u16 len || context ||
 * exporter). The challenge is the verifier's fresh random; context binds
 * it to one purpose (a migration id, or "attest" for `ferry host attest`);
 * the exporter binds it to one TLS session (tls_exporter()). */
#define ATTEST_NONCE_TAG "ferry-attest-nonce-v1"
#define ATTEST_CHALLENGE_LEN 32
#define ATTEST_NONCE_LEN ATTEST_DIGEST_LEN
#define ATTEST_EXPORTER_LEN 32
#define ATTEST_CONTEXT_MAX 64          /* bytes of the context */
#define ATTEST_CONTEXT_CLI "attest"    /* context of `ferry host attest` */

/* Events. The PCR is extended with
 *   SHA-256(ATTEST_EVENT_TAG "\0" || u8 kind || u8 pcr || u16 path_len ||
 *           path || sha256 of the file)
 * so the path and the kind are bound too. */
#define ATTEST_EVENT_TAG "ferry-event-v1"
#define ATTEST_EVENTS_MAX 128          /* events per log (per TPM reset) */
#define ATTEST_PATH_MAX 256            /* bytes of an event's path */
#define ATTEST_KIND_MAX 16             /* bytes of a kind name */

enum attest_kind {
	ATTEST_KIND_FERRYD = 1, /* the ferryd executable */
	ATTEST_KIND_QEMU = 2,   /* the QEMU executable */
	ATTEST_KIND_POLICY = 3, /* the policy file (canonical digest) */
};
#define ATTEST_KINDS 3

/* Quote blob bounds (base64 text and decoded bytes). */
#define ATTEST_ATTEST_MAX 1024         /* TPMS_ATTEST bytes */
#define ATTEST_SIGNATURE_MAX 1024      /* marshalled TPMT_SIGNATURE */
#define ATTEST_PUBLIC_MAX 1024         /* marshalled TPM2B_PUBLIC */
#define ATTEST_BLOB_MAX (96 * 1024)    /* a quote blob serialized */
#define ATTEST_FILE_MAX (128 * 1024)   /* any attest JSON file */

/* TPM objects ferry owns. The AK lives at a persistent handle in the owner
 * range; the EK is read from the standard handle when it is persisted
 * there (swtpm_setup does), else created from the standard template. */
#define ATTEST_AK_HANDLE 0x81000F10u
#define ATTEST_EK_HANDLE 0x81010001u   /* TCG: RSA 2048 EK */
#define ATTEST_EK_CERT_NV 0x01C00002u  /* TCG: RSA 2048 EK certificate */
#define ATTEST_EK_CERT_MAX 4096        /* bytes of the EK certificate */
#define ATTEST_TPM_TIMEOUT_MS 30000    /* one TPM command */

/* Credential activation (enrolment). The host proves the secret with
 * HMAC-SHA-256(secret, ATTEST_ENROLL_TAG "\0" || host || "\0" || AK name),
 * so the secret itself never travels back. */
#define ATTEST_ENROLL_TAG "ferry-enroll-v1"
#define ATTEST_CREDENTIAL_LEN 32
#define ATTEST_ID_OBJECT_MAX 256       /* credential blob bytes */
#define ATTEST_ENC_SECRET_MAX 512      /* encrypted seed bytes */

/* VM-carried migration constraints (vm.h) are signed by the attestation
 * authority over attest_constraints_digest, and kept at a destination as
 * the envelope ATTEST_CONSTRAINTS_ENVELOPE in <state_dir>/attest/
 * constraints-<uuid>.sealed. */
#define ATTEST_CONSTRAINTS_TAG "ferry-vm-constraints-v1"
#define ATTEST_CONSTRAINTS_ENVELOPE "vm-constraints"

/* Seal approvals: the authority signs TPM2_PolicyAuthorize's aHash =
 * SHA-256(approvedPolicy || policyRef) with ECDSA P-256 (policyRef is
 * empty), and a policy acceptance as SHA-256(ATTEST_ACCEPT_TAG "\0" ||
 * the policy's canonical digest). */
#define ATTEST_ACCEPT_TAG "ferry-accept-policy-v1"
#define ATTEST_SIG_LEN 64              /* ECDSA P-256 r || s */
#define ATTEST_APPROVALS_MAX 8

/* Envelope: MAGIC(8) | u16 version | u16 name_len | name | nonce(12) |
 * ciphertext | tag(16); AES-256-GCM under the storage key with the header
 * (magic to name) as associated data. */
#define ATTEST_ENVELOPE_MAGIC "FERRYSEA"
#define ATTEST_ENVELOPE_MAGIC_LEN 8
#define ATTEST_ENVELOPE_IV_LEN 12
#define ATTEST_ENVELOPE_TAG_LEN 16
#define ATTEST_ENVELOPE_NAME_MAX 32
#define ATTEST_ENVELOPE_HDR_LEN (ATTEST_ENVELOPE_MAGIC_LEN + 2 + 2)
#define ATTEST_ENVELOPE_DATA_MAX (16 * 1024)
#define ATTEST_STORAGE_KEY_LEN 32      /* the sealed key (KEK) */

_Static_assert(sizeof(ATTEST_ENVELOPE_MAGIC) - 1 == ATTEST_ENVELOPE_MAGIC_LEN,
	       "envelope magic is 8 bytes");
_Static_assert(ATTEST_ENVELOPE_HDR_LEN == 12,
	       "envelope header: magic, version, name length");
_Static_assert(ATTEST_NONCE_LEN == ATTEST_DIGEST_LEN,
	       "a nonce is one SHA-256 output");
_Static_assert(ATTEST_SIG_LEN == 2 * 32, "P-256 r and s are 32 bytes each");
_Static_assert(ATTEST_PCR_DEFAULT <= ATTEST_PCR_MAX &&
		       ATTEST_POLICY_PCR_DEFAULT <= ATTEST_PCR_MAX,
	       "default PCRs are in 0-15");
_Static_assert(ATTEST_PATH_MAX < UINT16_MAX, "path length is a u16");

/* File names inside <state_dir>/attest. */
#define ATTEST_DIR_NAME "attest"
#define ATTEST_LOG_NAME "eventlog.json"
#define ATTEST_APPROVALS_NAME "approvals.json"
#define ATTEST_PENDING_NAME "pending.json"
#define ATTEST_KEK_NAME "storage-key.tpm"   /* the sealed KEK (TPM blobs) */
#define ATTEST_POLICY_MAC_NAME "policy.mac"

/* File names inside the registrar folder (under the PKI dir). */
#define ATTEST_AUTHORITY_KEY "authority.key"
#define ATTEST_AUTHORITY_PUB "authority.pub"
#define ATTEST_HOSTS_DIR "hosts"
#define ATTEST_MANUFACTURERS_DIR "manufacturers"

#endif
