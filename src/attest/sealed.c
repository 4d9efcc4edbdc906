/* sealed.c - ferryd's sealed storage: the storage key sealed in the TPM
 * (created on the first start, unsealed with an authority's approval of
 * the measured software), the TLS and audit keys in envelopes under it,
 * the accepted policy's integrity MAC, and the precise refusal when the
 * software changed (attest_tpm.h, docs/attestation.md). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "attest_internal.h"

#define SEALED_MAX 2048           /* bytes of a marshalled sealed object */
#define INTEGRITY_TAG "ferry-policy-integrity-v1"

/* The integrity MAC of a policy file's SHA-256, under a key derived from
 * the storage key. */
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

int host_policy_mac(struct attest_host *h,
		    const uint8_t file[ATTEST_DIGEST_LEN], struct ferr *err)
{
	char path[FERRY_PATH_MAX], hex[ATTEST_DIGEST_HEX_LEN + 2];
	uint8_t mac[ATTEST_DIGEST_LEN];

	integrity_mac(h, file, mac);
	attest_hex(mac, sizeof(mac), hex);
	strcat(hex, "\n");
	if (host_path_in(h, ATTEST_POLICY_MAC_NAME, path, err) < 0)
		return -1;
	return file_write_atomic(path, hex, strlen(hex), 0600, err);
}

/* What pending.json says for `ferry host reseal`, and the start error. */
static int refuse(struct attest_host *h,
		  const uint8_t pcr_value[ATTEST_DIGEST_LEN],
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
	if (host_save_json(h, ATTEST_PENDING_NAME, doc, &werr) < 0)
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

	if (host_load_json(h, ATTEST_APPROVALS_NAME, &doc, err) < 0)
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
	rc = host_save_json(h, path, doc, err);
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
	if (host_path_in(h, fname, path, err) < 0)
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
/* The policy file (SHA-256 file) must be the one accepted last: its MAC
 * under the storage key is in policy.mac (any policy on the first start,
 * when there is none yet), or an approval accepts it. It is the accepted
 * one from now on. */
static int policy_check(struct attest_host *h,
			const uint8_t file[ATTEST_DIGEST_LEN],
			const json_t *approvals, bool first, struct ferr *err)
{
	char path[FERRY_PATH_MAX], want[ATTEST_DIGEST_HEX_LEN + 1], *text = NULL;
	uint8_t mac[ATTEST_DIGEST_LEN];
	size_t len = 0;
	bool same;

	if (host_path_in(h, ATTEST_POLICY_MAC_NAME, path, err) < 0)
		return -1;
	same = first && access(path, F_OK) != 0;
	if (!same && access(path, F_OK) == 0) {
		if (file_read_all(path, 256, &text, &len, err) < 0)
			return -1;
		integrity_mac(h, file, mac);
		attest_hex(mac, sizeof(mac), want);
		same = len >= ATTEST_DIGEST_HEX_LEN &&
		       !strncmp(text, want, ATTEST_DIGEST_HEX_LEN);
		free(text);
	}
	if (!same && !attest_policy_approved(approvals, file)) {
		attest_hex(file, ATTEST_DIGEST_LEN, want);
		return ferr_set(err, FERR_FORBIDDEN,
				"sealed storage: the policy file %s changed "
				"since it was accepted (its sha256 is now "
				"%.16s\u2026); accept it with `ferry host "
				"reseal`",
				h->policy_path, want);
	}
	return host_policy_mac(h, file, err);
}

int host_open_sealed(struct attest_host *h, const struct ferryd_config *cfg,
		     struct ferr *err)
{
	char path[FERRY_PATH_MAX];
	uint8_t value[ATTEST_DIGEST_LEN], file[ATTEST_DIGEST_LEN],
		canon[ATTEST_DIGEST_LEN];
	json_t *sealed = NULL, *approvals = NULL;
	bool have_policy = h->policy_path[0] != '\0';
	int rc = -1;

	if (fmt_checked(path, sizeof(path), err, "path", "%s/%s",
			cfg->attest.registrar, ATTEST_AUTHORITY_PUB) < 0 ||
	    !(h->authority = attest_key_load(path, false, err)) ||
	    !(approvals = approvals_load(h, err)) ||
	    host_load_json(h, ATTEST_KEK_NAME, &sealed, err) < 0 ||
	    attest_tpm_pcr_read(h->tpm, h->cfg.pcr, value, err) < 0 ||
	    (have_policy &&
	     host_policy_digests(h->policy_path, file, canon, err) < 0))
		goto out;
	if ((!sealed ? kek_create(h, ATTEST_KEK_NAME, err)
		     : kek_unseal(h, sealed, approvals, value, err)) < 0 ||
	    (have_policy && policy_check(h, file, approvals, !sealed, err) < 0)) {
		if (sealed)
			refuse(h, value, have_policy ? file : NULL, err);
		goto out;
	}
	if (fmt_checked(path, sizeof(path), err, "path", "%s/audit.key",
			cfg->state_dir) < 0 ||
	    !(h->tls_key = sealed_key(h, "tls-key", cfg->key_file, false,
				      err)) ||
	    !(h->audit_key = sealed_key(h, "audit-key", path, true, err)) ||
	    host_path_in(h, ATTEST_PENDING_NAME, path, err) < 0)
		goto out;
	unlink(path); /* what was pending is approved now */
	rc = 0;
out:
	json_decref(sealed);
	json_decref(approvals);
	return rc;
}
