/* registrar.c - enrolment: EK certificates against the TPM manufacturers'
 * CAs, TPM2_MakeCredential in software, and the enrolled AK records.
 *
 * MakeCredential runs in software (OpenSSL) rather than through tss2:
 * tss2 only offers it as a TPM command (Esys_MakeCredential), and the
 * registrar (`ferry host enroll` on an admin's machine) has no TPM. The
 * algorithm is TPM 2.0 Part 1 section 24 (credential protection) for an
 * RSA 2048 EK with SHA-256 and AES-128-CFB, the TCG default EK template. */
#define _GNU_SOURCE
#include "attest.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#define EK_RSA_BITS 2048
#define EK_SYM_KEY_LEN 16 /* AES-128 of the EK template */

/* Load every certificate of every regular *.pem / *.crt file in dir. */
static int load_store(X509_STORE *store, const char *dir, unsigned *count,
		      struct ferr *err)
{
	char path[FERRY_PATH_MAX];
	struct dirent *de;
	DIR *d = opendir(dir);

	*count = 0;
	if (!d)
		return ferr_set(err, FERR_NOT_FOUND,
				"cannot open the TPM manufacturer CA folder "
				"%s: %s",
				dir, strerror(errno));
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);

		if (n < 5 || (strcmp(de->d_name + n - 4, ".pem") != 0 &&
			      strcmp(de->d_name + n - 4, ".crt") != 0))
			continue;
		if (fmt_checked(path, sizeof(path), err, "path", "%s/%s", dir,
				de->d_name) < 0)
			break;
		if (X509_STORE_load_file(store, path) != 1) {
			closedir(d);
			return ferr_set(err, FERR_INVALID,
					"%s: not a PEM certificate file",
					path);
		}
		(*count)++;
	}
	closedir(d);
	if (*count == 0)
		return ferr_set(err, FERR_NOT_FOUND,
				"no TPM manufacturer CA certificates (*.pem, "
				"*.crt) in %s",
				dir);
	return 0;
}

int attest_ek_check(const uint8_t *der, size_t len, const char *dir,
		    EVP_PKEY **ek, char sha256_hex[ATTEST_DIGEST_HEX_LEN + 1],
		    char *issuer, size_t issuer_len, struct ferr *err)
{
	const unsigned char *p = der;
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *sctx = X509_STORE_CTX_new();
	X509 *cert = NULL;
	uint8_t d[ATTEST_DIGEST_LEN];
	unsigned count = 0;
	int rc = -1;

	*ek = NULL;
	if (!store || !sctx) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	if (len > ATTEST_EK_CERT_MAX ||
	    !(cert = d2i_X509(NULL, &p, (long)len)) || p != der + len) {
		ferr_set(err, FERR_INVALID,
			 "the EK certificate is not one DER certificate");
		goto out;
	}
	if (load_store(store, dir, &count, err) < 0)
		goto out;
	if (X509_STORE_CTX_init(sctx, store, cert, NULL) != 1 ||
	    X509_verify_cert(sctx) != 1) {
		ferr_set(err, FERR_FORBIDDEN,
			 "the EK certificate is not from a trusted TPM "
			 "manufacturer (%s; %u CA files in %s)",
			 X509_verify_cert_error_string(
				 X509_STORE_CTX_get_error(sctx)),
			 count, dir);
		goto out;
	}
	*ek = X509_get_pubkey(cert);
	if (!*ek || EVP_PKEY_get_base_id(*ek) != EVP_PKEY_RSA ||
	    EVP_PKEY_get_bits(*ek) != EK_RSA_BITS) {
		EVP_PKEY_free(*ek);
		*ek = NULL;
		ferr_set(err, FERR_INVALID,
			 "the EK certificate does not hold an RSA %d key",
			 EK_RSA_BITS);
		goto out;
	}
	attest_sha256(der, len, d);
	attest_hex(d, sizeof(d), sha256_hex);
	X509_NAME_oneline(X509_get_issuer_name(cert), issuer,
			  (int)issuer_len);
	rc = 0;
out:
	X509_free(cert);
	X509_STORE_CTX_free(sctx);
	X509_STORE_free(store);
	return rc;
}

/* KDFa (TPM 2.0 Part 1, 11.4.10.2) with SHA-256: SP 800-108 counter mode
 * HMAC, which is OpenSSL's KBKDF with its default 32-bit counter, the
 * 0x00 separator and the 32-bit length. */
static int kdfa(const uint8_t *key, size_t klen, const char *label,
		const uint8_t *ctx, size_t clen, uint8_t *out, size_t olen)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "KBKDF", NULL);
	EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[7], *p = params;
	int rc = -1;

	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE,
						"counter", 0);
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MAC, "HMAC", 0);
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						"SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
						 (void *)key, klen);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
						 (void *)label, strlen(label));
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
						 (void *)ctx, clen);
	*p = OSSL_PARAM_construct_end();
	if (kc && EVP_KDF_derive(kc, out, olen, params) == 1)
		rc = 0;
	EVP_KDF_CTX_free(kc);
	EVP_KDF_free(kdf);
	return rc;
}

/* RSA-OAEP (SHA-256, label "IDENTITY" with its NUL) of the seed. */
static int oaep_encrypt(EVP_PKEY *ek, const uint8_t *seed, size_t slen,
			uint8_t *out, size_t *olen)
{
	static const char label[] = "IDENTITY";
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(ek, NULL);
	unsigned char *l = OPENSSL_memdup(label, sizeof(label));
	int rc = -1;

	if (pc && l && EVP_PKEY_encrypt_init(pc) == 1 &&
	    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_OAEP_PADDING) == 1 &&
	    EVP_PKEY_CTX_set_rsa_oaep_md(pc, EVP_sha256()) == 1 &&
	    EVP_PKEY_CTX_set_rsa_mgf1_md(pc, EVP_sha256()) == 1 &&
	    EVP_PKEY_CTX_set0_rsa_oaep_label(pc, l, sizeof(label)) == 1) {
		l = NULL; /* owned by pc */
		if (EVP_PKEY_encrypt(pc, out, olen, seed, slen) == 1)
			rc = 0;
	}
	OPENSSL_free(l);
	EVP_PKEY_CTX_free(pc);
	return rc;
}

int attest_make_credential(EVP_PKEY *ek, const uint8_t ak_name[ATTEST_NAME_LEN],
			   const uint8_t secret[ATTEST_CREDENTIAL_LEN],
			   uint8_t *blob, size_t *blob_len, uint8_t *enc,
			   size_t *enc_len, struct ferr *err)
{
	uint8_t seed[ATTEST_DIGEST_LEN], sym[EK_SYM_KEY_LEN];
	uint8_t hkey[ATTEST_DIGEST_LEN], plain[2 + ATTEST_CREDENTIAL_LEN];
	uint8_t iv[16] = { 0 }, *cipher = blob + 2 + ATTEST_DIGEST_LEN;
	EVP_CIPHER_CTX *cc = NULL;
	EVP_MAC *mac = NULL;
	EVP_MAC_CTX *mc = NULL;
	OSSL_PARAM mp[2];
	size_t maclen = 0;
	int outl = 0, rc = -1;

	if (*blob_len < 2 + ATTEST_DIGEST_LEN + sizeof(plain) ||
	    *enc_len < EK_RSA_BITS / 8)
		return ferr_set(err, FERR_INTERNAL, "credential buffers too "
						    "small");
	plain[0] = 0;
	plain[1] = ATTEST_CREDENTIAL_LEN;
	memcpy(plain + 2, secret, ATTEST_CREDENTIAL_LEN);
	if (RAND_bytes(seed, sizeof(seed)) != 1 ||
	    oaep_encrypt(ek, seed, sizeof(seed), enc, enc_len) < 0 ||
	    kdfa(seed, sizeof(seed), "STORAGE", ak_name, ATTEST_NAME_LEN, sym,
		 sizeof(sym)) < 0 ||
	    kdfa(seed, sizeof(seed), "INTEGRITY", NULL, 0, hkey,
		 sizeof(hkey)) < 0) {
		ferr_set(err, FERR_INTERNAL, "MakeCredential: key derivation "
					     "failed");
		goto out;
	}
	/* encIdentity: AES-128-CFB, zero IV, over the marshalled
	 * TPM2B_DIGEST of the credential */
	cc = EVP_CIPHER_CTX_new();
	if (!cc ||
	    EVP_EncryptInit_ex(cc, EVP_aes_128_cfb128(), NULL, sym, iv) != 1 ||
	    EVP_EncryptUpdate(cc, cipher, &outl, plain, sizeof(plain)) != 1 ||
	    outl != (int)sizeof(plain)) {
		ferr_set(err, FERR_INTERNAL, "MakeCredential: AES failed");
		goto out;
	}
	/* outerHMAC over encIdentity || name */
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	mc = mac ? EVP_MAC_CTX_new(mac) : NULL;
	mp[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
						 "SHA256", 0);
	mp[1] = OSSL_PARAM_construct_end();
	if (!mc || EVP_MAC_init(mc, hkey, sizeof(hkey), mp) != 1 ||
	    EVP_MAC_update(mc, cipher, sizeof(plain)) != 1 ||
	    EVP_MAC_update(mc, ak_name, ATTEST_NAME_LEN) != 1 ||
	    EVP_MAC_final(mc, blob + 2, &maclen, ATTEST_DIGEST_LEN) != 1) {
		ferr_set(err, FERR_INTERNAL, "MakeCredential: HMAC failed");
		goto out;
	}
	blob[0] = 0;
	blob[1] = ATTEST_DIGEST_LEN;
	*blob_len = 2 + ATTEST_DIGEST_LEN + sizeof(plain);
	rc = 0;
out:
	EVP_MAC_CTX_free(mc);
	EVP_MAC_free(mac);
	EVP_CIPHER_CTX_free(cc);
	secret_wipe(seed, sizeof(seed));
	secret_wipe(sym, sizeof(sym));
	secret_wipe(hkey, sizeof(hkey));
	secret_wipe(plain, sizeof(plain));
	return rc;
}

void attest_enroll_proof(const uint8_t secret[ATTEST_CREDENTIAL_LEN],
			 const char *host,
			 const uint8_t ak_name[ATTEST_NAME_LEN],
			 uint8_t out[ATTEST_DIGEST_LEN])
{
	uint8_t msg[sizeof(ATTEST_ENROLL_TAG) + FERRY_NAME_MAX + 1 +
		    ATTEST_NAME_LEN];
	size_t n = 0, hlen = strlen(host) > FERRY_NAME_MAX ? FERRY_NAME_MAX
							    : strlen(host);
	unsigned olen = 0;

	memcpy(msg, ATTEST_ENROLL_TAG, sizeof(ATTEST_ENROLL_TAG));
	n = sizeof(ATTEST_ENROLL_TAG);
	memcpy(msg + n, host, hlen);
	n += hlen;
	msg[n++] = 0;
	memcpy(msg + n, ak_name, ATTEST_NAME_LEN);
	n += ATTEST_NAME_LEN;
	HMAC(EVP_sha256(), secret, ATTEST_CREDENTIAL_LEN, msg, n, out, &olen);
}

/* <dir>/hosts/<host>.json */
static int record_path(const char *dir, const char *host, char *out,
		       size_t len, struct ferr *err)
{
	if (!name_is_valid(host))
		return ferr_set(err, FERR_INVALID,
				"\"%.64s\" is not a valid host name", host);
	return fmt_checked(out, len, err, "path", "%s/%s/%s.json", dir,
			   ATTEST_HOSTS_DIR, host);
}

int attest_record_save(const char *dir, const struct attest_record *rec,
		       struct ferr *err)
{
	char path[FERRY_PATH_MAX], sub[FERRY_PATH_MAX];
	char name[2 * ATTEST_NAME_LEN + 1];
	json_t *o;
	char *text;
	int rc;

	if (record_path(dir, rec->host, path, sizeof(path), err) < 0 ||
	    fmt_checked(sub, sizeof(sub), err, "path", "%s/%s", dir,
			ATTEST_HOSTS_DIR) < 0 ||
	    mkdir_p(sub, 0755, err) < 0)
		return -1;
	attest_hex(rec->ak_name, ATTEST_NAME_LEN, name);
	o = json_pack("{s:i, s:s, s:o, s:s, s:i, s:i, s:s, s:s, s:I}",
		      "format", ATTEST_FORMAT_VERSION, "host", rec->host,
		      "ak_public",
		      attest_b64_json(rec->ak_public, rec->ak_public_len),
		      "ak_name", name, "pcr", (int)rec->pcr, "policy_pcr",
		      (int)rec->policy_pcr, "ek_cert_sha256",
		      rec->ek_cert_sha256, "ek_issuer", rec->ek_issuer,
		      "enrolled_ms", (json_int_t)rec->enrolled_ms);
	text = o ? json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	json_decref(o);
	if (!text)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	rc = file_write_atomic(path, text, strlen(text), 0644, err);
	free(text);
	return rc;
}

int attest_record_load(const char *dir, const char *host,
		       struct attest_record *rec, struct ferr *err)
{
	static const char *const fields[] = {
		"format", "host", "ak_public", "ak_name", "pcr", "policy_pcr",
		"ek_cert_sha256", "ek_issuer", "enrolled_ms", NULL
	};
	char path[FERRY_PATH_MAX];
	const char *h = NULL, *pub = NULL, *name = NULL, *ek = NULL,
		   *issuer = NULL;
	uint8_t *raw = NULL, computed[ATTEST_NAME_LEN];
	uint64_t format = 0, pcr = 99, ppcr = 99;
	json_t *o = NULL;
	char *text = NULL;
	size_t len = 0;
	int rc = -1;

	memset(rec, 0, sizeof(*rec));
	if (record_path(dir, host, path, sizeof(path), err) < 0)
		return -1;
	if (file_read_all(path, ATTEST_FILE_MAX, &text, &len, err) < 0) {
		if (err->code == FERR_NOT_FOUND)
			ferr_set(err, FERR_FORBIDDEN,
				 "host %s is not enrolled (no %s; run `ferry "
				 "host enroll %s`)",
				 host, path, host);
		return -1;
	}
	o = json_parse_object(text, len, path, err);
	if (!o || json_check_fields(o, fields, path, err) < 0 ||
	    json_get_u64(o, "format", path, 0, UINT32_MAX, &format, err) < 0 ||
	    json_get_string(o, "host", path, FERRY_NAME_MAX, &h, err) < 0 ||
	    json_get_string(o, "ak_public", path, ATTEST_PUBLIC_MAX * 2, &pub,
			    err) < 0 ||
	    json_get_string(o, "ak_name", path, 2 * ATTEST_NAME_LEN, &name,
			    err) < 0 ||
	    json_get_u64(o, "pcr", path, 0, ATTEST_PCR_MAX, &pcr, err) < 0 ||
	    json_get_u64(o, "policy_pcr", path, 0, ATTEST_PCR_MAX, &ppcr,
			 err) < 0 ||
	    json_get_string(o, "ek_cert_sha256", path, ATTEST_DIGEST_HEX_LEN,
			    &ek, err) < 0 ||
	    json_get_string(o, "ek_issuer", path, sizeof(rec->ek_issuer) - 1,
			    &issuer, err) < 0 ||
	    json_get_u64(o, "enrolled_ms", path, 0, INT64_MAX,
			 &rec->enrolled_ms, err) < 0)
		goto out;
	if (format != ATTEST_FORMAT_VERSION || !h || strcmp(h, host) != 0 ||
	    !pub || !name || !ek || pcr > ATTEST_PCR_MAX ||
	    ppcr > ATTEST_PCR_MAX || pcr == ppcr) {
		ferr_set(err, FERR_INVALID,
			 "%s: not a format %d record of host %s", path,
			 ATTEST_FORMAT_VERSION, host);
		goto out;
	}
	if (attest_b64_decode(pub, ATTEST_PUBLIC_MAX, "ak_public", &raw, &len,
			      err) < 0 ||
	    attest_ak_check(raw, len, computed, NULL, err) < 0 ||
	    attest_unhex(name, rec->ak_name, ATTEST_NAME_LEN) < 0 ||
	    memcmp(computed, rec->ak_name, ATTEST_NAME_LEN) != 0) {
		ferr_set(err, FERR_INVALID,
			 "%s: the AK public key and name do not agree", path);
		goto out;
	}
	snprintf(rec->host, sizeof(rec->host), "%s", h);
	memcpy(rec->ak_public, raw, len);
	rec->ak_public_len = len;
	rec->pcr = (unsigned)pcr;
	rec->policy_pcr = (unsigned)ppcr;
	snprintf(rec->ek_cert_sha256, sizeof(rec->ek_cert_sha256), "%s", ek);
	snprintf(rec->ek_issuer, sizeof(rec->ek_issuer), "%s",
		 issuer ? issuer : "");
	rc = 0;
out:
	free(raw);
	free(text);
	json_decref(o);
	return rc;
}
