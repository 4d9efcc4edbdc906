/* authority.c - the attestation authority (an admin's EC P-256 key in the
 * registrar folder): seal approvals that TPM2_PolicyAuthorize accepts,
 * policy acceptances, and the envelope that keeps secrets under the
 * TPM-sealed storage key. */
#define _GNU_SOURCE
#include "attest.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <tss2/tss2_mu.h>

#define KEY_FILE_MAX 4096

static int write_pem_file(const char *path, EVP_PKEY *key, bool private,
			  struct ferr *err)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL;
	long len;
	int rc = -1;

	if (!bio || !(private ? PEM_write_bio_PrivateKey(bio, key, NULL, NULL,
							 0, NULL, NULL)
			      : PEM_write_bio_PUBKEY(bio, key))) {
		ferr_set(err, FERR_INTERNAL, "cannot encode a key");
		goto out;
	}
	len = BIO_get_mem_data(bio, &data);
	rc = file_write_atomic(path, data, (size_t)len, private ? 0600 : 0644,
			       err);
	secret_wipe(data, (size_t)len);
out:
	BIO_free(bio);
	return rc;
}

int attest_authority_create(const char *dir, struct ferr *err)
{
	char kpath[FERRY_PATH_MAX], ppath[FERRY_PATH_MAX];
	EVP_PKEY *key = NULL;
	int rc = -1;

	if (fmt_checked(kpath, sizeof(kpath), err, "path", "%s/%s", dir,
			ATTEST_AUTHORITY_KEY) < 0 ||
	    fmt_checked(ppath, sizeof(ppath), err, "path", "%s/%s", dir,
			ATTEST_AUTHORITY_PUB) < 0 ||
	    mkdir_p(dir, 0755, err) < 0)
		return -1;
	if (access(kpath, F_OK) == 0)
		return ferr_set(err, FERR_CONFLICT,
				"%s exists; refusing to overwrite it", kpath);
	key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!key) {
		ferr_set(err, FERR_INTERNAL, "cannot create a P-256 key");
		goto out;
	}
	if (write_pem_file(kpath, key, true, err) < 0 ||
	    write_pem_file(ppath, key, false, err) < 0)
		goto out;
	rc = 0;
out:
	EVP_PKEY_free(key);
	return rc;
}

EVP_PKEY *attest_key_load(const char *path, bool private, struct ferr *err)
{
	char *text = NULL;
	size_t len = 0;
	BIO *bio;
	EVP_PKEY *key = NULL;

	if (file_read_all(path, KEY_FILE_MAX, &text, &len, err) < 0)
		return NULL;
	bio = BIO_new_mem_buf(text, (int)len);
	if (bio)
		key = private ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
			      : PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	secret_wipe(text, len);
	free(text);
	if (key && (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC ||
		    EVP_PKEY_get_bits(key) != 256)) {
		EVP_PKEY_free(key);
		key = NULL;
	}
	if (!key)
		ferr_set(err, FERR_INVALID, "%s: not a PEM EC P-256 %s key",
			 path, private ? "private" : "public");
	return key;
}

/* TPMT_PUBLIC of the authority's key as TPM2_LoadExternal takes it. */
static int authority_tpmt(EVP_PKEY *key, TPMT_PUBLIC *t, struct ferr *err)
{
	BIGNUM *x = NULL, *y = NULL;
	int rc = -1;

	memset(t, 0, sizeof(*t));
	t->type = TPM2_ALG_ECC;
	t->nameAlg = TPM2_ALG_SHA256;
	t->objectAttributes =
		TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_USERWITHAUTH;
	t->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
	t->parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
	t->parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
	t->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
	t->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
	if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
	    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1 ||
	    BN_bn2binpad(x, t->unique.ecc.x.buffer, 32) != 32 ||
	    BN_bn2binpad(y, t->unique.ecc.y.buffer, 32) != 32) {
		ferr_set(err, FERR_INVALID,
			 "the authority key is not a P-256 key");
		goto out;
	}
	t->unique.ecc.x.size = 32;
	t->unique.ecc.y.size = 32;
	rc = 0;
out:
	BN_free(x);
	BN_free(y);
	return rc;
}

int attest_authority_public(EVP_PKEY *key, uint8_t *pub, size_t *len,
			    uint8_t name[ATTEST_NAME_LEN], struct ferr *err)
{
	TPM2B_PUBLIC p = { 0 };
	uint8_t buf[sizeof(TPMT_PUBLIC)];
	size_t n = 0, cap = *len;

	if (authority_tpmt(key, &p.publicArea, err) < 0)
		return -1;
	if (Tss2_MU_TPMT_PUBLIC_Marshal(&p.publicArea, buf, sizeof(buf), &n) !=
	    0)
		return ferr_set(err, FERR_INTERNAL, "cannot marshal a key");
	name[0] = TPM2_ALG_SHA256 >> 8;
	name[1] = TPM2_ALG_SHA256 & 0xff;
	attest_sha256(buf, n, name + 2);
	*len = 0;
	if (pub && Tss2_MU_TPM2B_PUBLIC_Marshal(&p, pub, cap, len) != 0)
		return ferr_set(err, FERR_INTERNAL, "cannot marshal a key");
	return 0;
}

/* Append a big-endian u32 to a digest. */
static void update_u32(EVP_MD_CTX *md, uint32_t v)
{
	uint8_t be[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
			  (uint8_t)(v >> 8), (uint8_t)v };

	EVP_DigestUpdate(md, be, 4);
}

void attest_pcr_policy(unsigned pcr, const uint8_t value[ATTEST_DIGEST_LEN],
		       uint8_t out[ATTEST_DIGEST_LEN])
{
	TPML_PCR_SELECTION sel = { .count = 1 };
	uint8_t zero[ATTEST_DIGEST_LEN] = { 0 }, selbuf[64],
		pcr_digest[ATTEST_DIGEST_LEN];
	size_t n = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
	sel.pcrSelections[0].sizeofSelect = 3;
	sel.pcrSelections[0].pcrSelect[pcr / 8] = (uint8_t)(1u << (pcr % 8));
	Tss2_MU_TPML_PCR_SELECTION_Marshal(&sel, selbuf, sizeof(selbuf), &n);
	attest_sha256(value, ATTEST_DIGEST_LEN, pcr_digest);
	memset(out, 0xff, ATTEST_DIGEST_LEN); /* no context: matches nothing */
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(md);
		return;
	}
	EVP_DigestUpdate(md, zero, sizeof(zero));
	update_u32(md, TPM2_CC_PolicyPCR);
	EVP_DigestUpdate(md, selbuf, n);
	EVP_DigestUpdate(md, pcr_digest, sizeof(pcr_digest));
	EVP_DigestFinal_ex(md, out, NULL);
	EVP_MD_CTX_free(md);
}

int attest_authorize_policy(EVP_PKEY *authority,
			    uint8_t out[ATTEST_DIGEST_LEN], struct ferr *err)
{
	uint8_t name[ATTEST_NAME_LEN], zero[ATTEST_DIGEST_LEN] = { 0 },
		mid[ATTEST_DIGEST_LEN];
	size_t len = 0;
	EVP_MD_CTX *md;

	if (attest_authority_public(authority, NULL, &len, name, err) < 0)
		return -1;
	/* PolicyUpdate(TPM_CC_PolicyAuthorize, keyName, policyRef = ""):
	 * H(H(0 || CC || name) || policyRef) */
	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(md);
		return ferr_set(err, FERR_INTERNAL, "SHA-256 unavailable");
	}
	EVP_DigestUpdate(md, zero, sizeof(zero));
	update_u32(md, TPM2_CC_PolicyAuthorize);
	EVP_DigestUpdate(md, name, sizeof(name));
	EVP_DigestFinal_ex(md, mid, NULL);
	EVP_MD_CTX_free(md);
	attest_sha256(mid, sizeof(mid), out);
	return 0;
}

int attest_sign(EVP_PKEY *key, const uint8_t digest[ATTEST_DIGEST_LEN],
		uint8_t sig[ATTEST_SIG_LEN], struct ferr *err)
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(key, NULL);
	unsigned char der[80];
	const unsigned char *p = der;
	size_t dlen = sizeof(der);
	ECDSA_SIG *es = NULL;
	const BIGNUM *r, *s;
	int rc = -1;

	if (!pc || EVP_PKEY_sign_init(pc) != 1 ||
	    EVP_PKEY_sign(pc, der, &dlen, digest, ATTEST_DIGEST_LEN) != 1 ||
	    !(es = d2i_ECDSA_SIG(NULL, &p, (long)dlen))) {
		ferr_set(err, FERR_INTERNAL, "ECDSA signing failed");
		goto out;
	}
	ECDSA_SIG_get0(es, &r, &s);
	if (BN_bn2binpad(r, sig, 32) != 32 ||
	    BN_bn2binpad(s, sig + 32, 32) != 32) {
		ferr_set(err, FERR_INTERNAL, "ECDSA signing failed");
		goto out;
	}
	rc = 0;
out:
	ECDSA_SIG_free(es);
	EVP_PKEY_CTX_free(pc);
	return rc;
}

bool attest_sig_ok(EVP_PKEY *key, const uint8_t digest[ATTEST_DIGEST_LEN],
		   const uint8_t sig[ATTEST_SIG_LEN])
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
	unsigned char *der = NULL;
	EVP_PKEY_CTX *pc = NULL;
	int dlen;
	bool ok = false;

	if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s))
		goto out;
	r = s = NULL;
	dlen = i2d_ECDSA_SIG(es, &der);
	pc = EVP_PKEY_CTX_new(key, NULL);
	ok = dlen > 0 && pc && EVP_PKEY_verify_init(pc) == 1 &&
	     EVP_PKEY_verify(pc, der, (size_t)dlen, digest,
			     ATTEST_DIGEST_LEN) == 1;
out:
	EVP_PKEY_CTX_free(pc);
	OPENSSL_free(der);
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	return ok;
}

/* What the authority signs for a PCR approval: TPM2_PolicyAuthorize's
 * aHash = H(approvedPolicy || policyRef), policyRef empty. */
static void pcr_ahash(unsigned pcr, const uint8_t value[ATTEST_DIGEST_LEN],
		      uint8_t out[ATTEST_DIGEST_LEN])
{
	uint8_t policy[ATTEST_DIGEST_LEN];

	attest_pcr_policy(pcr, value, policy);
	attest_sha256(policy, sizeof(policy), out);
}

/* What the authority signs to accept a policy file. */
static void policy_ahash(const uint8_t file_sha256[ATTEST_DIGEST_LEN],
			 uint8_t out[ATTEST_DIGEST_LEN])
{
	uint8_t msg[sizeof(ATTEST_ACCEPT_TAG) + ATTEST_DIGEST_LEN];

	memcpy(msg, ATTEST_ACCEPT_TAG, sizeof(ATTEST_ACCEPT_TAG));
	memcpy(msg + sizeof(ATTEST_ACCEPT_TAG), file_sha256,
	       ATTEST_DIGEST_LEN);
	attest_sha256(msg, sizeof(msg), out);
}

json_t *attest_approve_pcr(EVP_PKEY *authority, unsigned pcr,
			   const uint8_t value[ATTEST_DIGEST_LEN],
			   const struct attest_log *events, struct ferr *err)
{
	uint8_t ahash[ATTEST_DIGEST_LEN], sig[ATTEST_SIG_LEN];
	char vhex[ATTEST_DIGEST_HEX_LEN + 1], shex[2 * ATTEST_SIG_LEN + 1];
	json_t *o;

	pcr_ahash(pcr, value, ahash);
	if (attest_sign(authority, ahash, sig, err) < 0)
		return NULL;
	attest_hex(value, ATTEST_DIGEST_LEN, vhex);
	attest_hex(sig, ATTEST_SIG_LEN, shex);
	o = json_pack("{s:s, s:i, s:s, s:s, s:o}", "type", "pcr", "pcr",
		      (int)pcr, "value", vhex, "signature", shex, "events",
		      attest_log_to_json(events));
	if (!o)
		ferr_set(err, FERR_INTERNAL, "out of memory");
	return o;
}

json_t *attest_approve_policy(EVP_PKEY *authority,
			      const uint8_t file_sha256[ATTEST_DIGEST_LEN],
			      struct ferr *err)
{
	uint8_t ahash[ATTEST_DIGEST_LEN], sig[ATTEST_SIG_LEN];
	char dhex[ATTEST_DIGEST_HEX_LEN + 1], shex[2 * ATTEST_SIG_LEN + 1];
	json_t *o;

	policy_ahash(file_sha256, ahash);
	if (attest_sign(authority, ahash, sig, err) < 0)
		return NULL;
	attest_hex(file_sha256, ATTEST_DIGEST_LEN, dhex);
	attest_hex(sig, ATTEST_SIG_LEN, shex);
	o = json_pack("{s:s, s:s, s:s}", "type", "policy", "sha256", dhex,
		      "signature", shex);
	if (!o)
		ferr_set(err, FERR_INTERNAL, "out of memory");
	return o;
}

/* Check one approval; what is checked names entry idx. */
static int approval_check(const json_t *a, size_t idx, EVP_PKEY *authority,
			  struct ferr *err)
{
	static const char *const pcr_fields[] = { "type", "pcr", "value",
						  "signature", "events", NULL };
	static const char *const pol_fields[] = { "type", "sha256",
						  "signature", NULL };
	const char *type = NULL, *value = NULL, *sig = NULL;
	uint8_t v[ATTEST_DIGEST_LEN], s[ATTEST_SIG_LEN],
		ahash[ATTEST_DIGEST_LEN];
	uint64_t pcr = 0;
	char what[32];
	bool is_pcr;
	struct attest_log *log = NULL;
	int rc = -1;

	snprintf(what, sizeof(what), "approvals[%zu]", idx);
	if (json_get_string(a, "type", what, 16, &type, err) < 0)
		return -1;
	if (!type || (strcmp(type, "pcr") != 0 && strcmp(type, "policy") != 0))
		return ferr_set(err, FERR_INVALID,
				"%s.type: \"pcr\" or \"policy\"", what);
	is_pcr = type[0] == 'p' && type[1] == 'c';
	if (json_check_fields(a, is_pcr ? pcr_fields : pol_fields, what,
			      err) < 0 ||
	    json_get_u64(a, "pcr", what, 0, ATTEST_PCR_MAX, &pcr, err) < 0 ||
	    json_get_string(a, is_pcr ? "value" : "sha256", what,
			    ATTEST_DIGEST_HEX_LEN, &value, err) < 0 ||
	    json_get_string(a, "signature", what, 2 * ATTEST_SIG_LEN, &sig,
			    err) < 0)
		return -1;
	if (attest_unhex(value, v, sizeof(v)) < 0 ||
	    attest_unhex(sig, s, sizeof(s)) < 0 ||
	    (is_pcr && !json_object_get(a, "pcr")))
		return ferr_set(err, FERR_INVALID,
				"%s: needs %s and a signature (hex)", what,
				is_pcr ? "pcr, value" : "sha256");
	if (is_pcr) {
		log = calloc(1, sizeof(*log));
		if (!log)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
		if (json_object_get(a, "events") &&
		    attest_log_from_json(json_object_get(a, "events"), log,
					 err) < 0) {
			ferr_wrap(err, "%s", what);
			goto out;
		}
		pcr_ahash((unsigned)pcr, v, ahash);
	} else {
		policy_ahash(v, ahash);
	}
	if (!attest_sig_ok(authority, ahash, s)) {
		ferr_set(err, FERR_FORBIDDEN,
			 "%s: not signed by the attestation authority", what);
		goto out;
	}
	rc = 0;
out:
	free(log);
	return rc;
}

const json_t *attest_approvals_check(const json_t *doc, EVP_PKEY *authority,
				     struct ferr *err)
{
	static const char *const fields[] = { "format", "approvals", NULL };
	const json_t *arr = json_object_get(doc, "approvals");
	uint64_t format = 0;
	size_t i;
	json_t *a;

	if (json_check_fields(doc, fields, "approvals", err) < 0 ||
	    json_get_u64(doc, "format", "approvals", 0, UINT32_MAX, &format,
			 err) < 0)
		return NULL;
	if (format != ATTEST_FORMAT_VERSION || !json_is_array(arr) ||
	    json_array_size(arr) > ATTEST_APPROVALS_MAX) {
		ferr_set(err, FERR_INVALID,
			 "approvals: needs format %d and at most %d approvals",
			 ATTEST_FORMAT_VERSION, ATTEST_APPROVALS_MAX);
		return NULL;
	}
	json_array_foreach(arr, i, a)
		if (approval_check(a, i, authority, err) < 0)
			return NULL;
	return arr;
}

const json_t *attest_approval_find(const json_t *approvals, unsigned pcr,
				   const uint8_t value[ATTEST_DIGEST_LEN],
				   uint8_t sig[ATTEST_SIG_LEN])
{
	char hex[ATTEST_DIGEST_HEX_LEN + 1];
	size_t i;
	json_t *a;

	attest_hex(value, ATTEST_DIGEST_LEN, hex);
	json_array_foreach(approvals, i, a) {
		if (strcmp(json_string_value(json_object_get(a, "type")),
			   "pcr") != 0 ||
		    json_integer_value(json_object_get(a, "pcr")) !=
			    (json_int_t)pcr ||
		    strcmp(json_string_value(json_object_get(a, "value")),
			   hex) != 0)
			continue;
		if (attest_unhex(json_string_value(
					 json_object_get(a, "signature")),
				 sig, ATTEST_SIG_LEN) == 0)
			return a;
	}
	return NULL;
}

bool attest_policy_approved(const json_t *approvals,
			    const uint8_t file_sha256[ATTEST_DIGEST_LEN])
{
	char hex[ATTEST_DIGEST_HEX_LEN + 1];
	size_t i;
	json_t *a;

	attest_hex(file_sha256, ATTEST_DIGEST_LEN, hex);
	json_array_foreach(approvals, i, a)
		if (!strcmp(json_string_value(json_object_get(a, "type")),
			    "policy") &&
		    !strcmp(json_string_value(json_object_get(a, "sha256")),
			    hex))
			return true;
	return false;
}

/* The envelope header (the AEAD's associated data) for name. */
static size_t envelope_header(const char *name, uint8_t *hdr)
{
	size_t n = strlen(name);

	memcpy(hdr, ATTEST_ENVELOPE_MAGIC, ATTEST_ENVELOPE_MAGIC_LEN);
	hdr[8] = 0;
	hdr[9] = ATTEST_FORMAT_VERSION;
	hdr[10] = (uint8_t)(n >> 8);
	hdr[11] = (uint8_t)n;
	memcpy(hdr + ATTEST_ENVELOPE_HDR_LEN, name, n);
	return ATTEST_ENVELOPE_HDR_LEN + n;
}

/* AES-256-GCM one shot; enc or dec. 0 or -1. */
static int gcm(bool enc, const uint8_t key[ATTEST_STORAGE_KEY_LEN],
	       const uint8_t *iv, const uint8_t *aad, size_t aad_len,
	       const uint8_t *in, size_t len, uint8_t *out, uint8_t *tag)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n = 0, fin = 0, ok;

	ok = c && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, iv,
				    enc) == 1 &&
	     EVP_CipherUpdate(c, NULL, &n, aad, (int)aad_len) == 1 &&
	     EVP_CipherUpdate(c, out, &n, in, (int)len) == 1 &&
	     (enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG,
					 ATTEST_ENVELOPE_TAG_LEN, tag) == 1) &&
	     EVP_CipherFinal_ex(c, out + n, &fin) == 1 &&
	     (!enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG,
					  ATTEST_ENVELOPE_TAG_LEN, tag) == 1);
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -1;
}

int attest_envelope_seal(const uint8_t key[ATTEST_STORAGE_KEY_LEN],
			 const char *name, const uint8_t *data, size_t len,
			 uint8_t **out, size_t *out_len, struct ferr *err)
{
	size_t nlen = strlen(name), hlen, total;
	uint8_t *buf;

	if (nlen == 0 || nlen > ATTEST_ENVELOPE_NAME_MAX ||
	    len > ATTEST_ENVELOPE_DATA_MAX)
		return ferr_set(err, FERR_INVALID, "envelope: bad name or "
						   "size");
	total = ATTEST_ENVELOPE_HDR_LEN + nlen + ATTEST_ENVELOPE_IV_LEN + len +
		ATTEST_ENVELOPE_TAG_LEN;
	buf = malloc(total);
	if (!buf)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	hlen = envelope_header(name, buf);
	if (RAND_bytes(buf + hlen, ATTEST_ENVELOPE_IV_LEN) != 1 ||
	    gcm(true, key, buf + hlen, buf, hlen, data, len,
		buf + hlen + ATTEST_ENVELOPE_IV_LEN,
		buf + total - ATTEST_ENVELOPE_TAG_LEN) < 0) {
		free(buf);
		return ferr_set(err, FERR_INTERNAL, "envelope: AES-GCM failed");
	}
	*out = buf;
	*out_len = total;
	return 0;
}

int attest_envelope_open(const uint8_t key[ATTEST_STORAGE_KEY_LEN],
			 const char *name, const uint8_t *in, size_t in_len,
			 uint8_t **out, size_t *out_len, struct ferr *err)
{
	uint8_t hdr[ATTEST_ENVELOPE_HDR_LEN + ATTEST_ENVELOPE_NAME_MAX];
	size_t nlen = strlen(name), hlen, len;
	uint8_t *buf;

	if (nlen == 0 || nlen > ATTEST_ENVELOPE_NAME_MAX)
		return ferr_set(err, FERR_INVALID, "envelope: bad name");
	hlen = envelope_header(name, hdr);
	if (in_len < hlen + ATTEST_ENVELOPE_IV_LEN + ATTEST_ENVELOPE_TAG_LEN ||
	    memcmp(in, hdr, hlen) != 0)
		return ferr_set(err, FERR_INVALID,
				"envelope: not a format %d %s envelope",
				ATTEST_FORMAT_VERSION, name);
	len = in_len - hlen - ATTEST_ENVELOPE_IV_LEN - ATTEST_ENVELOPE_TAG_LEN;
	if (len > ATTEST_ENVELOPE_DATA_MAX)
		return ferr_set(err, FERR_INVALID, "envelope: too large");
	buf = malloc(len + 1);
	if (!buf)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (gcm(false, key, in + hlen, in, hlen,
		in + hlen + ATTEST_ENVELOPE_IV_LEN, len, buf,
		(uint8_t *)in + in_len - ATTEST_ENVELOPE_TAG_LEN) < 0) {
		secret_wipe(buf, len);
		free(buf);
		return ferr_set(err, FERR_FORBIDDEN,
				"envelope %s: authentication failed (another "
				"storage key, or altered)",
				name);
	}
	buf[len] = 0;
	*out = buf;
	*out_len = len;
	return 0;
}
