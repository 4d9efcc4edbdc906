/* attest_internal.h - what the files of the attestation component share
 * (not for its users): the TPM context and its command runner (tpm.c,
 * seal.c), and ferryd's attestation state (host.c, sealed.c). */
#ifndef FERRY_ATTEST_INTERNAL_H
#define FERRY_ATTEST_INTERNAL_H

#include <limits.h>
#include <pthread.h>

#include <tss2/tss2_esys.h>

#include "attest_tpm.h"

/* ---- the TPM (tpm.c, seal.c) ------------------------------------------- */

struct attest_tpm {
	pthread_mutex_t lock;
	TSS2_TCTI_CONTEXT *tcti;
	ESYS_CONTEXT *esys;
	ESYS_TR ak;            /* the persistent AK once loaded */
	bool broken;           /* a command missed its deadline */
};

static inline bool try_again(TSS2_RC rc)
{
	return (rc & ~TSS2_RC_LAYER_MASK) == TSS2_BASE_RC_TRY_AGAIN;
}

/* Run one command: its _Async call, then its _Finish until it stops
 * asking to try again, or ATTEST_TPM_TIMEOUT_MS passed (the TPM is then
 * marked broken: its context holds a command that never finished). */
#define RUN(t, rc, async_call, finish_call)                                 \
	do {                                                                 \
		uint64_t dl_ = now_ms() + ATTEST_TPM_TIMEOUT_MS;             \
		if ((t)->broken) {                                           \
			(rc) = TSS2_ESYS_RC_BAD_SEQUENCE;                    \
			break;                                               \
		}                                                            \
		(rc) = (async_call);                                         \
		if ((rc) != TSS2_RC_SUCCESS)                                 \
			break;                                               \
		for (;;) {                                                   \
			(rc) = (finish_call);                                \
			if (!try_again(rc))                                  \
				break;                                       \
			if (now_ms() >= dl_) {                               \
				(t)->broken = true;                          \
				break;                                       \
			}                                                    \
		}                                                            \
	} while (0)

/* Empty outsideInfo and creationPCR for Create and CreatePrimary. */
extern const TPM2B_DATA tpm_no_data;
extern const TPML_PCR_SELECTION tpm_no_pcrs;

/* FERR from a TSS2 return code, naming what failed (a TPM that missed a
 * deadline is FERR_TIMEOUT). Returns -1. */
int tpm_fail(struct attest_tpm *t, TSS2_RC rc, enum ferr_code code,
	     struct ferr *err, const char *what);

/* Flush a transient object or session (ESYS_TR_NONE is fine); *h becomes
 * ESYS_TR_NONE. */
void tpm_flush(struct attest_tpm *t, ESYS_TR *h);

/* A selection of the SHA-256 PCRs in mask (bits 0-15). */
void tpm_pcr_selection(uint32_t mask, TPML_PCR_SELECTION *sel);
/* ---- ferryd's attestation (host.c, sealed.c) -------------------------- */

struct attest_host {
	pthread_mutex_t lock;     /* the log and every TPM sequence */
	struct attest_tpm *tpm;
	struct attest_config cfg;
	char host[FERRY_NAME_MAX + 1];
	char dir[FERRY_PATH_MAX];         /* <state_dir>/attest */
	char policy_path[PATH_MAX];       /* real path; "" without a policy */
	struct attest_log *log;
	uint8_t ak_pub[ATTEST_PUBLIC_MAX];
	size_t ak_pub_len;
	uint8_t ak_name[ATTEST_NAME_LEN];
	EVP_PKEY *authority;              /* with sealing */
	uint8_t kek[ATTEST_STORAGE_KEY_LEN];
	EVP_PKEY *tls_key, *audit_key;    /* unsealed, with sealing */
	bool policy_unmeasured;           /* a reloaded policy that could not
					     be measured is in force */
	struct attest_ops ops;
	char summary[FERRY_ERR_MSG_MAX];
};

/* <h->dir>/name into out (FERRY_PATH_MAX bytes). */
int host_path_in(const struct attest_host *h, const char *name, char *out,
		 struct ferr *err);

/* Write doc atomically (mode 0600) as h->dir/name. */
int host_save_json(const struct attest_host *h, const char *name,
		   json_t *doc, struct ferr *err);

/* Read h->dir/name; *doc is NULL (and 0 returned) when it does not exist. */
int host_load_json(const struct attest_host *h, const char *name,
		   json_t **doc, struct ferr *err);

/* SHA-256 of the whole policy file and its measured (canonical) digest. */
int host_policy_digests(const char *path, uint8_t file[ATTEST_DIGEST_LEN],
			uint8_t canon[ATTEST_DIGEST_LEN], struct ferr *err);

/* Sealed storage at start (attest_host_open): the storage key, the
 * policy's integrity, the TLS and audit keys. */
int host_open_sealed(struct attest_host *h, const struct ferryd_config *cfg,
		     struct ferr *err);

/* Record the policy file with this SHA-256 as the accepted one. */
int host_policy_mac(struct attest_host *h,
		    const uint8_t file[ATTEST_DIGEST_LEN], struct ferr *err);

#endif
