/* host.c - ferryd's attestation: the event log and measurements, and the
 * operations the API and migrations call (attest_tpm.h). Sealed storage
 * is in sealed.c. */
#define _GNU_SOURCE
#include "attest_internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POLICY_FILE_MAX (1024 * 1024)

/* <h->dir>/name */
int host_path_in(const struct attest_host *h, const char *name, char *out,
		 struct ferr *err)
{
	return fmt_checked(out, FERRY_PATH_MAX, err, "path", "%s/%s", h->dir,
			   name);
}

/* Write a JSON document atomically (mode 0600) into h->dir. */
int host_save_json(const struct attest_host *h, const char *name,
		   json_t *doc, struct ferr *err)
{
	char path[FERRY_PATH_MAX];
	char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS)
			 : NULL;
	int rc = -1;

	if (!text)
		ferr_set(err, FERR_INTERNAL, "out of memory");
	else if (host_path_in(h, name, path, err) == 0)
		rc = file_write_atomic(path, text, strlen(text), 0600, err);
	free(text);
	return rc;
}

/* Read a JSON document of h->dir; *doc is NULL (and 0 returned) when the
 * file does not exist. */
int host_load_json(const struct attest_host *h, const char *name,
		   json_t **doc, struct ferr *err)
{
	char path[FERRY_PATH_MAX], *text = NULL;
	size_t len = 0;

	*doc = NULL;
	if (host_path_in(h, name, path, err) < 0)
		return -1;
	if (access(path, F_OK) != 0)
		return 0;
	if (file_read_all(path, ATTEST_FILE_MAX, &text, &len, err) < 0)
		return -1;
	*doc = json_parse_object(text, len, path, err);
	free(text);
	return *doc ? 0 : -1;
}

static int save_log(struct attest_host *h, struct ferr *err)
{
	json_t *doc = json_pack("{s:i, s:o}", "format", ATTEST_FORMAT_VERSION,
				"events", attest_log_to_json(h->log));
	int rc = host_save_json(h, ATTEST_LOG_NAME, doc, err);

	json_decref(doc);
	return rc;
}

/* Does the log replay to both PCRs' current values? */
static bool log_matches(const struct attest_log *log, unsigned pcr,
			const uint8_t *v, unsigned ppcr, const uint8_t *pv)
{
	uint8_t a[ATTEST_DIGEST_LEN], b[ATTEST_DIGEST_LEN];

	attest_log_replay(log, pcr, a);
	attest_log_replay(log, ppcr, b);
	return !memcmp(a, v, sizeof(a)) && !memcmp(b, pv, sizeof(b));
}

/* Load the event log and check it against the PCRs: a log whose last
 * event was written but never extended (a crash in between) loses that
 * event; PCRs at zero (the TPM was reset) start an empty log. */
static int log_recover(struct attest_host *h, struct ferr *err)
{
	static const char *const fields[] = { "format", "events", NULL };
	uint8_t v[ATTEST_DIGEST_LEN], pv[ATTEST_DIGEST_LEN],
		zero[ATTEST_DIGEST_LEN] = { 0 };
	unsigned pcr = h->cfg.pcr, ppcr = h->cfg.policy_pcr;
	uint64_t format = 0;
	json_t *doc = NULL;
	int rc = -1;

	if (attest_tpm_pcr_read(h->tpm, pcr, v, err) < 0 ||
	    attest_tpm_pcr_read(h->tpm, ppcr, pv, err) < 0 ||
	    host_load_json(h, ATTEST_LOG_NAME, &doc, err) < 0)
		return -1;
	h->log->n = 0;
	if (doc && (json_check_fields(doc, fields, ATTEST_LOG_NAME, err) < 0 ||
		    json_get_u64(doc, "format", ATTEST_LOG_NAME, 1, 1, &format,
				 err) < 0 ||
		    attest_log_from_json(json_object_get(doc, "events"), h->log,
					 err) < 0))
		goto out;
	if (log_matches(h->log, pcr, v, ppcr, pv)) {
		rc = 0;
		goto out;
	}
	if (h->log->n > 0) {
		h->log->n--;
		if (log_matches(h->log, pcr, v, ppcr, pv)) {
			log_warn("attest: dropped the last logged measurement: "
				 "it never reached the TPM");
			rc = save_log(h, err);
			goto out;
		}
	}
	if (!memcmp(v, zero, sizeof(v)) && !memcmp(pv, zero, sizeof(pv))) {
		if (doc)
			log_info("attest: PCRs %u and %u are zero (the TPM "
				 "was reset): a new event log begins",
				 pcr, ppcr);
		h->log->n = 0;
		rc = save_log(h, err);
		goto out;
	}
	ferr_set(err, FERR_CONFLICT,
		 "attest: PCR %u or %u holds measurements that %s/%s does not "
		 "explain (another program extends it, or the log was lost); "
		 "choose other PCRs (attestation.pcr, policy_pcr) or reset "
		 "the TPM (reboot)",
		 pcr, ppcr, h->dir, ATTEST_LOG_NAME);
out:
	json_decref(doc);
	return rc;
}

/* Measure one file into pcr unless the log's last event of its kind is
 * the same file and digest: log first (write-ahead), then extend. */
static int measure(struct attest_host *h, unsigned pcr, enum attest_kind k,
		   const char *path, const uint8_t d[ATTEST_DIGEST_LEN],
		   struct ferr *err)
{
	const struct attest_event *last = attest_log_latest(h->log, k);
	uint8_t ehash[ATTEST_DIGEST_LEN];

	if (last && last->pcr == pcr && !strcmp(last->path, path) &&
	    !memcmp(last->sha256, d, ATTEST_DIGEST_LEN))
		return 0;
	if (attest_log_add(h->log, pcr, k, path, d, err) < 0)
		return -1;
	attest_event_hash(&h->log->ev[h->log->n - 1], ehash);
	if (save_log(h, err) < 0 ||
	    attest_tpm_extend(h->tpm, pcr, ehash, err) < 0) {
		h->log->n--;
		return -1;
	}
	return 0;
}

/* SHA-256 of the whole policy file and its measured (canonical) digest. */
int host_policy_digests(const char *path, uint8_t file[ATTEST_DIGEST_LEN],
			uint8_t canon[ATTEST_DIGEST_LEN], struct ferr *err)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	if (file_read_all(path, POLICY_FILE_MAX, &text, &len, err) < 0)
		return -1;
	attest_sha256(text, len, file);
	rc = attest_policy_digest(text, len, canon, err);
	free(text);
	return rc < 0 ? ferr_wrap(err, "%s", path) : 0;
}

/* The canonical absolute path of p (events name files by it). */
static int real_path(const char *p, char out[PATH_MAX], struct ferr *err)
{
	if (!realpath(p, out))
		return ferr_set(err, FERR_NOT_FOUND,
				"attest: cannot measure %s: %s", p,
				strerror(errno));
	return 0;
}

/* Measure ferryd, QEMU and the policy (what is not measured yet). */
static int measure_all(struct attest_host *h, const struct ferryd_config *cfg,
		       struct ferr *err)
{
	char exe[ATTEST_PATH_MAX + 1], qemu[PATH_MAX];
	uint8_t d[ATTEST_DIGEST_LEN], file[ATTEST_DIGEST_LEN];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0 || (size_t)n >= sizeof(exe) - 1)
		return ferr_set(err, FERR_IO,
				"attest: cannot read /proc/self/exe (or its "
				"path is longer than %d bytes)",
				ATTEST_PATH_MAX);
	exe[n] = '\0';
	if (attest_file_sha256("/proc/self/exe", d, err) < 0 ||
	    measure(h, cfg->attest.pcr, ATTEST_KIND_FERRYD, exe, d, err) < 0 ||
	    real_path(cfg->qemu_binary, qemu, err) < 0 ||
	    attest_file_sha256(qemu, d, err) < 0 ||
	    measure(h, cfg->attest.pcr, ATTEST_KIND_QEMU, qemu, d, err) < 0)
		return -1;
	if (!h->policy_path[0])
		return 0;
	if (host_policy_digests(h->policy_path, file, d, err) < 0)
		return -1;
	return measure(h, cfg->attest.policy_pcr, ATTEST_KIND_POLICY,
		       h->policy_path, d, err);
}

/* ---- operations ------------------------------------------------------- */

static int op_quote(void *ctx, const uint8_t nonce[ATTEST_NONCE_LEN],
		    json_t **blob, struct ferr *err)
{
	struct attest_host *h = ctx;
	uint8_t att[ATTEST_ATTEST_MAX], sig[ATTEST_SIGNATURE_MAX];
	size_t alen = sizeof(att), slen = sizeof(sig);
	int rc = -1;

	pthread_mutex_lock(&h->lock);
	if (h->policy_unmeasured)
		ferr_set(err, FERR_CONFLICT,
			 "the policy in force could not be measured (see the "
			 "log); this host cannot be attested until a reload "
			 "or restart measures it");
	else if (attest_tpm_quote(h->tpm, nonce,
				  (1u << h->cfg.pcr) |
					  (1u << h->cfg.policy_pcr),
				  att, &alen, sig, &slen, err) == 0) {
		*blob = attest_blob_new(att, alen, sig, slen, h->log);
		rc = *blob ? 0 : ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	pthread_mutex_unlock(&h->lock);
	return rc;
}

static int op_verify(void *ctx, const char *host, const json_t *blob,
		     const struct attest_expect *x, json_t **report,
		     struct ferr *err)
{
	struct attest_host *h = ctx;

	if (report)
		*report = NULL;
	if (!h->cfg.registrar[0])
		return ferr_set(err, FERR_FORBIDDEN,
				"cannot attest %s: attestation.registrar is "
				"not configured on this host",
				host);
	return attest_registrar_verify(h->cfg.registrar, host, blob, x,
				       report, err);
}

static int op_identity(void *ctx, json_t **out, struct ferr *err)
{
	struct attest_host *h = ctx;
	uint8_t *der = NULL;
	size_t len = 0;
	char name[2 * ATTEST_NAME_LEN + 1];

	pthread_mutex_lock(&h->lock);
	if (attest_tpm_ek_cert(h->tpm, &der, &len, err) < 0) {
		pthread_mutex_unlock(&h->lock);
		return -1;
	}
	pthread_mutex_unlock(&h->lock);
	attest_hex(h->ak_name, ATTEST_NAME_LEN, name);
	*out = json_pack("{s:s, s:o, s:o, s:s, s:i, s:i, s:b}", "host",
			 h->host, "ek_cert", attest_b64_json(der, len),
			 "ak_public",
			 attest_b64_json(h->ak_pub, h->ak_pub_len), "ak_name",
			 name, "pcr", (int)h->cfg.pcr, "policy_pcr",
			 (int)h->cfg.policy_pcr, "sealed", h->cfg.seal);
	free(der);
	return *out ? 0 : ferr_set(err, FERR_INTERNAL, "out of memory");
}

static int op_activate(void *ctx, const json_t *req, json_t **out,
		       struct ferr *err)
{
	static const char *const fields[] = { "credential", "secret", NULL };
	struct attest_host *h = ctx;
	const char *c64 = NULL, *s64 = NULL;
	uint8_t *blob = NULL, *enc = NULL, secret[ATTEST_CREDENTIAL_LEN],
		proof[ATTEST_DIGEST_LEN];
	char hex[ATTEST_DIGEST_HEX_LEN + 1];
	size_t blen = 0, elen = 0;
	int rc = -1;

	if (json_check_fields(req, fields, "request body", err) < 0 ||
	    json_get_string(req, "credential", "request body",
			    2 * ATTEST_ID_OBJECT_MAX, &c64, err) < 0 ||
	    json_get_string(req, "secret", "request body",
			    2 * ATTEST_ENC_SECRET_MAX, &s64, err) < 0 ||
	    attest_b64_decode(c64, ATTEST_ID_OBJECT_MAX, "credential", &blob,
			      &blen, err) < 0 ||
	    attest_b64_decode(s64, ATTEST_ENC_SECRET_MAX, "secret", &enc,
			      &elen, err) < 0)
		goto out;
	pthread_mutex_lock(&h->lock);
	rc = attest_tpm_activate(h->tpm, blob, blen, enc, elen, secret, err);
	pthread_mutex_unlock(&h->lock);
	if (rc < 0)
		goto out;
	attest_enroll_proof(secret, h->host, h->ak_name, proof);
	secret_wipe(secret, sizeof(secret));
	attest_hex(proof, sizeof(proof), hex);
	*out = json_pack("{s:s}", "proof", hex);
	rc = *out ? 0 : ferr_set(err, FERR_INTERNAL, "out of memory");
out:
	free(blob);
	free(enc);
	return rc;
}

static int op_approve(void *ctx, const json_t *doc, struct ferr *err)
{
	struct attest_host *h = ctx;
	int rc;

	if (!h->cfg.seal)
		return ferr_set(err, FERR_CONFLICT,
				"sealed storage is off on this host "
				"(attestation.seal)");
	if (!attest_approvals_check(doc, h->authority, err))
		return -1;
	pthread_mutex_lock(&h->lock);
	rc = host_save_json(h, ATTEST_APPROVALS_NAME, (json_t *)doc, err);
	pthread_mutex_unlock(&h->lock);
	return rc;
}

static int op_policy_accepted(void *ctx, const char *path, struct ferr *err)
{
	struct attest_host *h = ctx;
	uint8_t file[ATTEST_DIGEST_LEN], canon[ATTEST_DIGEST_LEN];
	char real[PATH_MAX];
	int rc = -1;

	if (real_path(path, real, err) < 0)
		return -1;
	path = real;
	pthread_mutex_lock(&h->lock);
	if (host_policy_digests(path, file, canon, err) == 0 &&
	    measure(h, h->cfg.policy_pcr, ATTEST_KIND_POLICY, path, canon,
		    err) == 0 &&
	    (!h->cfg.seal || host_policy_mac(h, file, err) == 0))
		rc = 0;
	h->policy_unmeasured = rc < 0;
	pthread_mutex_unlock(&h->lock);
	return rc;
}

static int op_store(void *ctx, const char *name, const char *file,
		    const uint8_t *data, size_t len, struct ferr *err)
{
	struct attest_host *h = ctx;
	char path[FERRY_PATH_MAX];
	uint8_t *env = NULL;
	size_t elen = 0;
	int rc;

	if (!h->cfg.seal)
		return ferr_set(err, FERR_CONFLICT,
				"sealed storage is off on this host "
				"(attestation.seal)");
	rc = host_path_in(h, file, path, err) < 0 ||
			     attest_envelope_seal(h->kek, name, data, len, &env,
						  &elen, err) < 0 ||
			     file_write_atomic(path, env, elen, 0600, err) < 0
		     ? -1
		     : 0;
	free(env);
	return rc;
}

/* ---- life cycle ------------------------------------------------------- */

int attest_host_open(const struct ferryd_config *cfg, struct attest_host **out,
		     struct ferr *err)
{
	struct attest_host *h = calloc(1, sizeof(*h));
	bool created = false;

	*out = NULL;
	if (!h || !(h->log = calloc(1, sizeof(*h->log)))) {
		free(h);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	pthread_mutex_init(&h->lock, NULL);
	h->cfg = cfg->attest;
	snprintf(h->host, sizeof(h->host), "%s", cfg->host);
	h->ak_pub_len = sizeof(h->ak_pub);
	if (cfg->policy_file[0] &&
	    real_path(cfg->policy_file, h->policy_path, err) < 0)
		goto fail;
	if (fmt_checked(h->dir, sizeof(h->dir), err, "path", "%s/%s",
			cfg->state_dir, ATTEST_DIR_NAME) < 0 ||
	    mkdir_p(h->dir, 0700, err) < 0 ||
	    attest_tpm_open(cfg->attest.tcti, &h->tpm, err) < 0 ||
	    attest_tpm_ak(h->tpm, h->ak_pub, &h->ak_pub_len, &created, err) <
		    0 ||
	    attest_ak_check(h->ak_pub, h->ak_pub_len, h->ak_name, NULL, err) <
		    0 ||
	    log_recover(h, err) < 0 || measure_all(h, cfg, err) < 0 ||
	    (cfg->attest.seal && host_open_sealed(h, cfg, err) < 0))
		goto fail;
	h->ops = (struct attest_ops){ .ctx = h,
				      .quote = op_quote,
				      .verify = op_verify,
				      .identity = op_identity,
				      .activate = op_activate,
				      .approve = op_approve,
				      .policy_accepted = op_policy_accepted,
				      .store = op_store };
	snprintf(h->summary, sizeof(h->summary),
		 "TPM %s, AK 0x%08x%s, PCRs %u/%u, %u events, sealed storage "
		 "%s",
		 cfg->attest.tcti, ATTEST_AK_HANDLE, created ? " (new)" : "",
		 cfg->attest.pcr, cfg->attest.policy_pcr, h->log->n,
		 cfg->attest.seal ? "on" : "off");
	*out = h;
	return 0;
fail:
	attest_host_free(h);
	return -1;
}

EVP_PKEY *attest_host_tls_key(const struct attest_host *h)
{
	return h ? h->tls_key : NULL;
}

EVP_PKEY *attest_host_audit_key(const struct attest_host *h)
{
	return h ? h->audit_key : NULL;
}

const struct attest_ops *attest_host_ops(struct attest_host *h)
{
	return &h->ops;
}

const char *attest_host_summary(const struct attest_host *h)
{
	return h->summary;
}

void attest_host_free(struct attest_host *h)
{
	if (!h)
		return;
	attest_tpm_close(h->tpm);
	EVP_PKEY_free(h->tls_key);
	EVP_PKEY_free(h->audit_key);
	EVP_PKEY_free(h->authority);
	secret_wipe(h->kek, sizeof(h->kek));
	free(h->log);
	pthread_mutex_destroy(&h->lock);
	free(h);
}
