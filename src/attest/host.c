/* host.c - ferryd's attestation: the event log and measurements, the
 * sealed storage key and the keys under it, approvals, and the operations
 * the API and migrations call (attest_tpm.h). */
#define _GNU_SOURCE
#include "attest_tpm.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#define SEALED_MAX 2048           /* bytes of a marshalled sealed object */
#define POLICY_FILE_MAX (1024 * 1024)
#define INTEGRITY_TAG "ferry-policy-integrity-v1"

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

/* <h->dir>/name */
static int path_in(const struct attest_host *h, const char *name, char *out,
		   struct ferr *err)
{
	return fmt_checked(out, FERRY_PATH_MAX, err, "path", "%s/%s", h->dir,
			   name);
}

/* Write a JSON document atomically (mode 0600) into h->dir. */
static int save_json(const struct attest_host *h, const char *name,
		     json_t *doc, struct ferr *err)
{
	char path[FERRY_PATH_MAX];
	char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS)
			 : NULL;
	int rc = -1;

	if (!text)
		ferr_set(err, FERR_INTERNAL, "out of memory");
	else if (path_in(h, name, path, err) == 0)
		rc = file_write_atomic(path, text, strlen(text), 0600, err);
	free(text);
	return rc;
}

/* Read a JSON document of h->dir; *doc is NULL (and 0 returned) when the
 * file does not exist. */
static int load_json(const struct attest_host *h, const char *name,
		     json_t **doc, struct ferr *err)
{
	char path[FERRY_PATH_MAX], *text = NULL;
	size_t len = 0;

	*doc = NULL;
	if (path_in(h, name, path, err) < 0)
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
	int rc = save_json(h, ATTEST_LOG_NAME, doc, err);

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
	    load_json(h, ATTEST_LOG_NAME, &doc, err) < 0)
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
static int policy_digests(const char *path, uint8_t file[ATTEST_DIGEST_LEN],
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
		return ferr_set(err, FERR_NOT_FOUND, "attest: cannot measure %s: %s",
				p, strerror(errno));
	return 0;
}

/* Measure ferryd, QEMU and the policy (what is not measured yet). */
static int measure_all(struct attest_host *h, const struct ferryd_config *cfg,
		       struct ferr *err)
{
	char exe[ATTEST_PATH_MAX + 1], qemu[PATH_MAX];
	uint8_t d[ATTEST_DIGEST_LEN], file[ATTEST_DIGEST_LEN];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		return ferr_set(err, FERR_IO,
				"attest: cannot read /proc/self/exe: %s",
				strerror(errno));
	exe[n] = '\0';
	if (attest_file_sha256("/proc/self/exe", d, err) < 0 ||
	    measure(h, cfg->attest.pcr, ATTEST_KIND_FERRYD, exe, d, err) < 0 ||
	    real_path(cfg->qemu_binary, qemu, err) < 0 ||
	    attest_file_sha256(qemu, d, err) < 0 ||
	    measure(h, cfg->attest.pcr, ATTEST_KIND_QEMU, qemu, d, err) < 0)
		return -1;
	if (!h->policy_path[0])
		return 0;
	if (policy_digests(h->policy_path, file, d, err) < 0)
		return -1;
	return measure(h, cfg->attest.policy_pcr, ATTEST_KIND_POLICY,
		       h->policy_path, d, err);
}

/* The key of the policy integrity MAC, derived from the storage key. */
static void integrity_mac(const struct attest_host *h,
			  const uint8_t file[ATTEST_DIGEST_LEN],
			  uint8_t out[ATTEST_DIGEST_LEN])
{
	uint8_t k[ATTEST_DIGEST_LEN];
	unsigned n = 0;

	HMAC(EVP_sha256(), h->kek, sizeof(h->kek),
	     (const uint8_t *)INTEGRITY_TAG, sizeof(INTEGRITY_TAG), k, &n);
	HMAC(EVP_sha256(), k, sizeof(k), file, ATTEST_DIGEST_LEN, out, &n);
	secret_wipe(k, sizeof(k));
}

static int write_policy_mac(struct attest_host *h,
			    const uint8_t file[ATTEST_DIGEST_LEN],
			    struct ferr *err)
{
	char path[FERRY_PATH_MAX], hex[ATTEST_DIGEST_HEX_LEN + 2];
	uint8_t mac[ATTEST_DIGEST_LEN];

	integrity_mac(h, file, mac);
	attest_hex(mac, sizeof(mac), hex);
	strcat(hex, "\n");
	if (path_in(h, ATTEST_POLICY_MAC_NAME, path, err) < 0)
		return -1;
	return file_write_atomic(path, hex, strlen(hex), 0600, err);
}

/* What pending.json says for `ferry host reseal`, and the start error. */
static int refuse(struct attest_host *h, const uint8_t pcr_value[ATTEST_DIGEST_LEN],
		  const uint8_t *policy_file, struct ferr *err)
{
	char vhex[ATTEST_DIGEST_HEX_LEN + 1], phex[ATTEST_DIGEST_HEX_LEN + 1];
	struct ferr werr;
	json_t *doc;

	attest_hex(pcr_value, ATTEST_DIGEST_LEN, vhex);
	doc = json_pack("{s:i, s:s, s:i, s:s, s:o, s:s}", "format",
			ATTEST_FORMAT_VERSION, "host", h->host, "pcr",
			(int)h->cfg.pcr, "pcr_value", vhex, "events",
			attest_log_to_json(h->log), "reason", err->msg);
	if (doc && policy_file) {
		attest_hex(policy_file, ATTEST_DIGEST_LEN, phex);
		json_object_set_new(doc, "policy_sha256", json_string(phex));
	}
	if (save_json(h, ATTEST_PENDING_NAME, doc, &werr) < 0)
		log_error("attest: %s", werr.msg);
	json_decref(doc);
	return -1;
}

/* Why no approval covers the PCR: name what changed against the newest
 * PCR approval's events. */
static int explain(struct attest_host *h, const json_t *approvals,
		   struct ferr *err)
{
	struct attest_log *old = calloc(1, sizeof(*old));
	const json_t *last = NULL;
	size_t i;
	json_t *a;
	struct ferr perr;

	json_array_foreach(approvals, i, a)
		if (!strcmp(json_string_value(json_object_get(a, "type")),
			    "pcr"))
			last = a;
	if (!old)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (!last || attest_log_from_json(json_object_get(last, "events"), old,
					  &perr) < 0) {
		free(old);
		return ferr_set(err, FERR_FORBIDDEN,
				"sealed storage: no seal approval covers PCR "
				"%u of this software yet; run `ferry host "
				"reseal` (or `ferry host enroll`)",
				h->cfg.pcr);
	}
	for (int k = ATTEST_KIND_FERRYD; k <= ATTEST_KIND_QEMU; k++) {
		const struct attest_event *now = attest_log_latest(h->log, k),
					  *was = attest_log_latest(old, k);
		char a1[ATTEST_DIGEST_HEX_LEN + 1], a2[ATTEST_DIGEST_HEX_LEN + 1];

		if (!now || !was ||
		    (!memcmp(now->sha256, was->sha256, ATTEST_DIGEST_LEN) &&
		     !strcmp(now->path, was->path)))
			continue;
		attest_hex(was->sha256, ATTEST_DIGEST_LEN, a1);
		attest_hex(now->sha256, ATTEST_DIGEST_LEN, a2);
		ferr_set(err, FERR_FORBIDDEN,
			 "sealed storage: the %s executable changed since the "
			 "seal was approved (%.80s: approved %.16s\u2026, now "
			 "%.16s\u2026 at %.80s); if the change is approved, "
			 "run `ferry host reseal`",
			 attest_kind_name((enum attest_kind)k), was->path, a1,
			 a2, now->path);
		free(old);
		return -1;
	}
	free(old);
	return ferr_set(err, FERR_FORBIDDEN,
			"sealed storage: PCR %u holds a measurement history no "
			"approval covers (the same software, measured in "
			"another order or more than once since the TPM was "
			"reset); run `ferry host reseal`",
			h->cfg.pcr);
}

/* Read, check and return the approvals (an empty array when none). */
static json_t *approvals_load(struct attest_host *h, struct ferr *err)
{
	json_t *doc = NULL, *arr;

	if (load_json(h, ATTEST_APPROVALS_NAME, &doc, err) < 0)
		return NULL;
	if (!doc)
		return json_array();
	arr = (json_t *)attest_approvals_check(doc, h->authority, err);
	if (!arr) {
		json_decref(doc);
		ferr_wrap(err, "%s/%s", h->dir, ATTEST_APPROVALS_NAME);
		return NULL;
	}
	json_incref(arr);
	json_decref(doc);
	return arr;
}

/* Create, seal and save a new storage key (the first start). */
static int kek_create(struct attest_host *h, const char *path,
		      struct ferr *err)
{
	uint8_t policy[ATTEST_DIGEST_LEN], pub[SEALED_MAX], priv[SEALED_MAX];
	size_t plen = sizeof(pub), vlen = sizeof(priv);
	json_t *doc;
	int rc;

	if (RAND_bytes(h->kek, sizeof(h->kek)) != 1)
		return ferr_set(err, FERR_INTERNAL, "no randomness");
	if (attest_authorize_policy(h->authority, policy, err) < 0 ||
	    attest_tpm_seal(h->tpm, policy, h->kek, sizeof(h->kek), pub, &plen,
			    priv, &vlen, err) < 0)
		return -1;
	doc = json_pack("{s:i, s:o, s:o}", "format", ATTEST_FORMAT_VERSION,
			"public", attest_b64_json(pub, plen), "private",
			attest_b64_json(priv, vlen));
	rc = save_json(h, path, doc, err);
	json_decref(doc);
	if (rc == 0)
		log_warn("attest: created and sealed the storage key; approve "
			 "this software before the next start (`ferry host "
			 "enroll` or `ferry host reseal`)");
	return rc;
}

/* Unseal the storage key with the approval for the PCR's value. */
static int kek_unseal(struct attest_host *h, const json_t *sealed,
		      const json_t *approvals,
		      const uint8_t value[ATTEST_DIGEST_LEN], struct ferr *err)
{
	uint8_t sig[ATTEST_SIG_LEN], *pub = NULL, *priv = NULL;
	size_t plen = 0, vlen = 0, klen = sizeof(h->kek);
	int rc = -1;

	if (!attest_approval_find(approvals, h->cfg.pcr, value, sig))
		return explain(h, approvals, err);
	if (attest_b64_decode(json_string_value(json_object_get(sealed,
								"public")),
			      SEALED_MAX, "sealed public", &pub, &plen,
			      err) < 0 ||
	    attest_b64_decode(json_string_value(json_object_get(sealed,
								"private")),
			      SEALED_MAX, "sealed private", &priv, &vlen,
			      err) < 0 ||
	    attest_tpm_unseal(h->tpm, pub, plen, priv, vlen, h->cfg.pcr, value,
			      h->authority, sig, h->kek, &klen, err) < 0)
		goto out;
	if (klen != sizeof(h->kek)) {
		ferr_set(err, FERR_INVALID, "sealed storage key has %zu bytes",
			 klen);
		goto out;
	}
	rc = 0;
out:
	free(pub);
	free(priv);
	return rc;
}

/* Open the key `name` sealed in h->dir, importing the plaintext file at
 * plain first when it exists (then deleted); a missing audit key is
 * created. */
static EVP_PKEY *sealed_key(struct attest_host *h, const char *name,
			    const char *plain, bool create, struct ferr *err)
{
	char path[FERRY_PATH_MAX], fname[64];
	char *text = NULL;
	uint8_t *env = NULL, *pem = NULL;
	size_t len = 0, elen = 0, plen = 0;
	EVP_PKEY *key = NULL;
	BIO *bio = NULL;

	snprintf(fname, sizeof(fname), "%s.sealed", name);
	if (path_in(h, fname, path, err) < 0)
		return NULL;
	if (access(plain, F_OK) == 0 || (create && access(path, F_OK) != 0)) {
		if (access(plain, F_OK) == 0) {
			if (file_read_all(plain, 64 * 1024, &text, &len, err) <
			    0)
				return NULL;
		} else {
			EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

			bio = BIO_new(BIO_s_mem());
			if (!k || !bio ||
			    !PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0,
						      NULL, NULL)) {
				EVP_PKEY_free(k);
				ferr_set(err, FERR_INTERNAL,
					 "cannot create the %s", name);
				goto out;
			}
			EVP_PKEY_free(k);
			len = (size_t)BIO_get_mem_data(bio, &pem);
			text = malloc(len + 1);
			if (!text) {
				ferr_set(err, FERR_INTERNAL, "out of memory");
				goto out;
			}
			memcpy(text, pem, len);
			secret_wipe(pem, len);
			pem = NULL;
			BIO_free(bio);
			bio = NULL;
		}
		if (attest_envelope_seal(h->kek, name, (uint8_t *)text, len,
					 &env, &elen, err) < 0 ||
		    file_write_atomic(path, env, elen, 0600, err) < 0)
			goto out;
		if (access(plain, F_OK) == 0) {
			if (unlink(plain) < 0) {
				ferr_set(err, FERR_IO,
					 "sealed %s but cannot delete %s: %s",
					 name, plain, strerror(errno));
				goto out;
			}
			log_info("attest: sealed %s (%s is deleted)", name,
				 plain);
		}
		pem = (uint8_t *)text;
		plen = len;
		text = NULL;
	} else {
		if (file_read_all(path, ATTEST_ENVELOPE_DATA_MAX + 256, &text,
				  &elen, err) < 0 ||
		    attest_envelope_open(h->kek, name, (uint8_t *)text, elen,
					 &pem, &plen, err) < 0)
			goto out;
	}
	bio = BIO_new_mem_buf(pem, (int)plen);
	key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	if (!key)
		ferr_set(err, FERR_INVALID, "the sealed %s is not a PEM key",
			 name);
out:
	BIO_free(bio);
	if (pem)
		secret_wipe(pem, plen);
	free(pem);
	if (text)
		secret_wipe(text, len);
	free(text);
	free(env);
	return key;
}

/* Sealed storage at start: the storage key, the policy's integrity, the
 * TLS and audit keys. */
static int open_sealed(struct attest_host *h, const struct ferryd_config *cfg,
		       struct ferr *err)
{
	char path[FERRY_PATH_MAX], mpath[FERRY_PATH_MAX];
	char hex[ATTEST_DIGEST_HEX_LEN + 1], *mtext = NULL;
	uint8_t value[ATTEST_DIGEST_LEN], file[ATTEST_DIGEST_LEN],
		canon[ATTEST_DIGEST_LEN], mac[ATTEST_DIGEST_LEN];
	json_t *sealed = NULL, *approvals = NULL;
	bool have_policy = h->policy_path[0] != '\0';
	size_t mlen = 0;
	int rc = -1;

	if (fmt_checked(path, sizeof(path), err, "path", "%s/%s",
			cfg->attest.registrar, ATTEST_AUTHORITY_PUB) < 0 ||
	    !(h->authority = attest_key_load(path, false, err)) ||
	    !(approvals = approvals_load(h, err)) ||
	    load_json(h, ATTEST_KEK_NAME, &sealed, err) < 0 ||
	    attest_tpm_pcr_read(h->tpm, h->cfg.pcr, value, err) < 0)
		goto out;
	if (have_policy && policy_digests(h->policy_path, file, canon, err) < 0)
		goto out;
	if (!sealed) {
		if (kek_create(h, ATTEST_KEK_NAME, err) < 0)
			goto out;
	} else if (kek_unseal(h, sealed, approvals, value, err) < 0) {
		refuse(h, value, have_policy ? file : NULL, err);
		goto out;
	}
	/* the policy accepted last (the integrity MAC under the sealed key),
	 * or one the authority accepts */
	if (have_policy) {
		if (path_in(h, ATTEST_POLICY_MAC_NAME, mpath, err) < 0)
			goto out;
		integrity_mac(h, file, mac);
		attest_hex(mac, sizeof(mac), hex);
		if (access(mpath, F_OK) == 0 &&
		    (file_read_all(mpath, 256, &mtext, &mlen, err) < 0 ||
		     (strncmp(mtext, hex, ATTEST_DIGEST_HEX_LEN) != 0 &&
		      !attest_policy_approved(approvals, file)))) {
			attest_hex(file, ATTEST_DIGEST_LEN, hex);
			if (mtext)
				ferr_set(err, FERR_FORBIDDEN,
					 "sealed storage: the policy file %s "
					 "changed since it was accepted (its "
					 "sha256 is now %.16s\u2026); accept "
					 "it with `ferry host reseal`",
					 h->policy_path, hex);
			refuse(h, value, file, err);
			goto out;
		}
		if (write_policy_mac(h, file, err) < 0)
			goto out;
	}
	if (fmt_checked(path, sizeof(path), err, "path", "%s/audit.key",
			cfg->state_dir) < 0 ||
	    !(h->tls_key = sealed_key(h, "tls-key", cfg->key_file, false,
				      err)) ||
	    !(h->audit_key = sealed_key(h, "audit-key", path, true, err)))
		goto out;
	if (path_in(h, ATTEST_PENDING_NAME, path, err) < 0)
		goto out;
	unlink(path); /* what was pending is approved now */
	rc = 0;
out:
	free(mtext);
	json_decref(sealed);
	json_decref(approvals);
	return rc;
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
			     (1u << h->cfg.pcr) | (1u << h->cfg.policy_pcr),
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
	rc = save_json(h, ATTEST_APPROVALS_NAME, (json_t *)doc, err);
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
	if (policy_digests(path, file, canon, err) == 0 &&
	    measure(h, h->cfg.policy_pcr, ATTEST_KIND_POLICY, path, canon,
		    err) == 0 &&
	    (!h->cfg.seal || write_policy_mac(h, file, err) == 0))
		rc = 0;
	h->policy_unmeasured = rc < 0;
	pthread_mutex_unlock(&h->lock);
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
	    (cfg->attest.seal && open_sealed(h, cfg, err) < 0))
		goto fail;
	h->ops = (struct attest_ops){ .ctx = h,
				      .quote = op_quote,
				      .verify = op_verify,
				      .identity = op_identity,
				      .activate = op_activate,
				      .approve = op_approve,
				      .policy_accepted = op_policy_accepted };
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
