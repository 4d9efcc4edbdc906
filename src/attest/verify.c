/* verify.c - the verifier: a quote blob from a peer (hostile) against the
 * peer's enrolled AK, the expected nonce and the reference values. Needs
 * only tss2-mu (TPM structures) and OpenSSL. */
#include "attest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/param_build.h>
#include <tss2/tss2_mu.h>

#define SHORT_HEX 16 /* digits of a digest quoted in messages */

int attest_ak_check(const uint8_t *pub, size_t len,
		    uint8_t name[ATTEST_NAME_LEN], EVP_PKEY **pkey,
		    struct ferr *err)
{
	const TPMA_OBJECT need = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
				 TPMA_OBJECT_SENSITIVEDATAORIGIN |
				 TPMA_OBJECT_RESTRICTED |
				 TPMA_OBJECT_SIGN_ENCRYPT;
	uint8_t tbuf[sizeof(TPMT_PUBLIC)], point[65];
	TPM2B_PUBLIC p = { 0 };
	size_t off = 0, tlen = 0;
	const TPMS_ECC_PARMS *ecc;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *kctx = NULL;
	int rc = -1;

	if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(pub, len, &off, &p) != 0 ||
	    off != len)
		return ferr_set(err, FERR_INVALID,
				"AK public: not a TPM2B_PUBLIC");
	ecc = &p.publicArea.parameters.eccDetail;
	if (p.publicArea.type != TPM2_ALG_ECC ||
	    p.publicArea.nameAlg != TPM2_ALG_SHA256 ||
	    ecc->curveID != TPM2_ECC_NIST_P256 ||
	    ecc->scheme.scheme != TPM2_ALG_ECDSA ||
	    ecc->scheme.details.ecdsa.hashAlg != TPM2_ALG_SHA256 ||
	    (p.publicArea.objectAttributes & need) != need ||
	    (p.publicArea.objectAttributes & TPMA_OBJECT_DECRYPT) ||
	    p.publicArea.unique.ecc.x.size != 32 ||
	    p.publicArea.unique.ecc.y.size != 32)
		return ferr_set(err, FERR_INVALID,
				"AK public: not a restricted, fixedTPM ECC "
				"P-256 ECDSA-SHA256 signing key");
	if (Tss2_MU_TPMT_PUBLIC_Marshal(&p.publicArea, tbuf, sizeof(tbuf),
					&tlen) != 0)
		return ferr_set(err, FERR_INVALID, "AK public: cannot marshal");
	name[0] = TPM2_ALG_SHA256 >> 8;
	name[1] = TPM2_ALG_SHA256 & 0xff;
	attest_sha256(tbuf, tlen, name + 2);
	if (!pkey)
		return 0;
	point[0] = 0x04;
	memcpy(point + 1, p.publicArea.unique.ecc.x.buffer, 32);
	memcpy(point + 33, p.publicArea.unique.ecc.y.buffer, 32);
	bld = OSSL_PARAM_BLD_new();
	if (!bld ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
					     "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
					      point, sizeof(point)) ||
	    !(params = OSSL_PARAM_BLD_to_param(bld)) ||
	    !(kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) ||
	    EVP_PKEY_fromdata_init(kctx) != 1 ||
	    EVP_PKEY_fromdata(kctx, pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
		ferr_set(err, FERR_INVALID,
			 "AK public: not a point on P-256");
		goto out;
	}
	rc = 0;
out:
	EVP_PKEY_CTX_free(kctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	return rc;
}

/* Does sig (a marshalled TPMT_SIGNATURE) sign data with key? */
static bool quote_sig_ok(EVP_PKEY *key, const uint8_t *data, size_t len,
			 const uint8_t *sig, size_t sig_len)
{
	TPMT_SIGNATURE s = { 0 };
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *sv = NULL;
	unsigned char *der = NULL;
	EVP_MD_CTX *md = NULL;
	size_t off = 0;
	int der_len;
	bool ok = false;

	if (Tss2_MU_TPMT_SIGNATURE_Unmarshal(sig, sig_len, &off, &s) != 0 ||
	    off != sig_len || s.sigAlg != TPM2_ALG_ECDSA ||
	    s.signature.ecdsa.hash != TPM2_ALG_SHA256 ||
	    s.signature.ecdsa.signatureR.size > 32 ||
	    s.signature.ecdsa.signatureS.size > 32)
		return false;
	es = ECDSA_SIG_new();
	r = BN_bin2bn(s.signature.ecdsa.signatureR.buffer,
		      s.signature.ecdsa.signatureR.size, NULL);
	sv = BN_bin2bn(s.signature.ecdsa.signatureS.buffer,
		       s.signature.ecdsa.signatureS.size, NULL);
	if (!es || !r || !sv || !ECDSA_SIG_set0(es, r, sv))
		goto out;
	r = sv = NULL; /* owned by es */
	der_len = i2d_ECDSA_SIG(es, &der);
	md = EVP_MD_CTX_new();
	ok = der_len > 0 && md &&
	     EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	     EVP_DigestVerify(md, der, (size_t)der_len, data, len) == 1;
out:
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	BN_free(r);
	BN_free(sv);
	ECDSA_SIG_free(es);
	return ok;
}

/* Is the 32-byte digest listed (as hex) in refs[kind]? */
static bool ref_allows(const json_t *refs, enum attest_kind k,
		       const uint8_t d[ATTEST_DIGEST_LEN])
{
	char hex[ATTEST_DIGEST_HEX_LEN + 1];
	size_t i;
	json_t *v;

	attest_hex(d, ATTEST_DIGEST_LEN, hex);
	json_array_foreach(json_object_get(refs, attest_kind_name(k)), i, v)
		if (json_is_string(v) && !strcmp(json_string_value(v), hex))
			return true;
	return false;
}

/* The quote's PCR selection as a bit mask of PCRs 0-15 (SHA-256 bank
 * only); UINT32_MAX for anything else. */
static uint32_t selection_mask(const TPML_PCR_SELECTION *sel)
{
	const TPMS_PCR_SELECTION *s = &sel->pcrSelections[0];
	uint32_t mask = 0;

	if (sel->count != 1 || s->hash != TPM2_ALG_SHA256 ||
	    s->sizeofSelect < 2 || s->sizeofSelect > TPM2_PCR_SELECT_MAX)
		return UINT32_MAX;
	for (unsigned i = 0; i < s->sizeofSelect; i++)
		mask |= (uint32_t)s->pcrSelect[i] << (8 * i);
	return mask;
}

/* The state of one verification, for the report. */
struct vstate {
	const struct attest_record *rec;
	const struct attest_expect *x;
	TPMS_ATTEST att;
	bool att_ok;         /* signature checked, att is TPM-made */
	bool replayed;       /* pcr values below are the quoted ones */
	uint8_t pcr_val[2][ATTEST_DIGEST_LEN];
	struct attest_log *log;
	const char *verdict[ATTEST_EVENTS_MAX];
};

static json_t *report_new(const struct vstate *v, bool ok,
			  const char *reason)
{
	json_t *r = json_pack("{s:s, s:b, s:s, s:I}", "host", v->rec->host,
			      "verified", ok, "reason", reason, "time_ms",
			      (json_int_t)wall_ms());
	json_t *pcrs = json_object(), *evs;
	char hex[ATTEST_DIGEST_HEX_LEN + 1], key[8];

	if (!r || !pcrs) {
		json_decref(r);
		json_decref(pcrs);
		return NULL;
	}
	if (v->att_ok) {
		const TPMS_CLOCK_INFO *c = &v->att.clockInfo;

		json_object_set_new(
			r, "tpm",
			json_pack("{s:I, s:I, s:I, s:b}", "clock_ms",
				  (json_int_t)c->clock, "reset_count",
				  (json_int_t)c->resetCount, "restart_count",
				  (json_int_t)c->restartCount, "safe",
				  c->safe != 0));
	}
	for (int i = 0; v->replayed && i < 2; i++) {
		snprintf(key, sizeof(key), "%u",
			 i ? v->rec->policy_pcr : v->rec->pcr);
		attest_hex(v->pcr_val[i], ATTEST_DIGEST_LEN, hex);
		json_object_set_new(pcrs, key, json_string(hex));
	}
	json_object_set_new(r, "pcrs", pcrs);
	evs = v->log ? attest_log_to_json(v->log) : json_array();
	for (unsigned i = 0; v->log && evs && i < v->log->n; i++)
		json_object_set_new(json_array_get(evs, i), "verdict",
				    json_string(v->verdict[i]
							? v->verdict[i]
							: "unchecked"));
	json_object_set_new(r, "events", evs ? evs : json_array());
	return r;
}

/* Checks after the signature: nonce, selection, replay, reference
 * values. 0, or -1 with FERR_FORBIDDEN and the reason. */
static int check_quote(struct vstate *v, struct ferr *err)
{
	const struct attest_record *rec = v->rec;
	const TPMS_QUOTE_INFO *q = &v->att.attested.quote;
	const char *scope = v->x->scope ? v->x->scope : rec->host;
	uint32_t want = (1u << rec->pcr) | (1u << rec->policy_pcr);
	uint8_t both[2 * ATTEST_DIGEST_LEN], digest[ATTEST_DIGEST_LEN];

	if (v->att.magic != TPM2_GENERATED_VALUE ||
	    v->att.type != TPM2_ST_ATTEST_QUOTE)
		return ferr_set(err, FERR_FORBIDDEN,
				"host %s: the signed structure is not a TPM "
				"quote",
				rec->host);
	if (v->att.extraData.size != ATTEST_NONCE_LEN ||
	    memcmp(v->att.extraData.buffer, v->x->nonce, ATTEST_NONCE_LEN) !=
		    0)
		return ferr_set(err, FERR_FORBIDDEN,
				"host %s: the quote's nonce is not this "
				"attestation's (a replayed or relayed quote)",
				rec->host);
	if (selection_mask(&q->pcrSelect) != want)
		return ferr_set(err, FERR_FORBIDDEN,
				"host %s: the quote does not cover exactly "
				"the enrolled PCRs %u and %u",
				rec->host, rec->pcr, rec->policy_pcr);
	for (unsigned i = 0; i < v->log->n; i++) {
		const struct attest_event *e = &v->log->ev[i];
		unsigned pcr = e->kind == ATTEST_KIND_POLICY ? rec->policy_pcr
							      : rec->pcr;

		if (e->pcr != pcr)
			return ferr_set(err, FERR_FORBIDDEN,
					"host %s: event %u (%s) is in PCR %u, "
					"not in PCR %u",
					rec->host, i, attest_kind_name(e->kind),
					e->pcr, pcr);
	}
	/* TPM2_Quote digests the selected PCRs in ascending order */
	attest_log_replay(v->log, rec->pcr, v->pcr_val[0]);
	attest_log_replay(v->log, rec->policy_pcr, v->pcr_val[1]);
	if (rec->pcr < rec->policy_pcr) {
		memcpy(both, v->pcr_val[0], ATTEST_DIGEST_LEN);
		memcpy(both + ATTEST_DIGEST_LEN, v->pcr_val[1],
		       ATTEST_DIGEST_LEN);
	} else {
		memcpy(both, v->pcr_val[1], ATTEST_DIGEST_LEN);
		memcpy(both + ATTEST_DIGEST_LEN, v->pcr_val[0],
		       ATTEST_DIGEST_LEN);
	}
	attest_sha256(both, sizeof(both), digest);
	if (q->pcrDigest.size != ATTEST_DIGEST_LEN ||
	    memcmp(q->pcrDigest.buffer, digest, ATTEST_DIGEST_LEN) != 0)
		return ferr_set(err, FERR_FORBIDDEN,
				"host %s: the event log does not replay to "
				"the quoted PCRs %u and %u (events missing or "
				"altered)",
				rec->host, rec->pcr, rec->policy_pcr);
	v->replayed = true;
	for (int k = 1; k <= ATTEST_KINDS; k++)
		if (!attest_log_latest(v->log, (enum attest_kind)k))
			return ferr_set(err, FERR_FORBIDDEN,
					"host %s: no %s measurement in its "
					"event log",
					rec->host,
					attest_kind_name((enum attest_kind)k));
	return attest_log_judge(v->log, v->x->refs, rec->host, scope,
				v->verdict, err);
}

int attest_log_judge(const struct attest_log *log, const json_t *refs,
		     const char *host, const char *scope, const char **verdict,
		     struct ferr *err)
{
	char hex[ATTEST_DIGEST_HEX_LEN + 1];

	/* judge every event (all of them, so a report is complete), then
	 * fail on the first one outside the reference values */
	for (unsigned i = 0; i < log->n; i++) {
		const struct attest_event *e = &log->ev[i];

		if (e->kind == ATTEST_KIND_POLICY &&
		    e != attest_log_latest(log, ATTEST_KIND_POLICY))
			verdict[i] = "superseded";
		else if (ref_allows(refs, e->kind, e->sha256))
			verdict[i] = "allowed";
		else
			verdict[i] = "not allowed";
	}
	for (unsigned i = 0; i < log->n; i++) {
		const struct attest_event *e = &log->ev[i];

		if (strcmp(verdict[i], "not allowed") != 0)
			continue;
		attest_hex(e->sha256, ATTEST_DIGEST_LEN, hex);
		return ferr_set(err, FERR_FORBIDDEN,
				"host %s: %s digest %.*s\u2026 (%.96s) is not "
				"in the allowlist for %s",
				host, attest_kind_name(e->kind), SHORT_HEX, hex,
				e->path, scope);
	}
	return 0;
}

int attest_verify(const json_t *blob, const struct attest_record *rec,
		  const struct attest_expect *x, json_t **report,
		  struct ferr *err)
{
	static const char *const fields[] = { "format", "attest", "signature",
					      "events", NULL };
	struct vstate v = { .rec = rec, .x = x };
	const char *a64 = NULL, *s64 = NULL;
	uint8_t *att = NULL, *sig = NULL, name[ATTEST_NAME_LEN];
	size_t att_len = 0, sig_len = 0, off = 0;
	uint64_t format = 0;
	EVP_PKEY *ak = NULL;
	int rc = -1;

	if (report)
		*report = NULL;
	if (json_check_fields(blob, fields, "quote", err) < 0 ||
	    json_get_u64(blob, "format", "quote", 0, UINT32_MAX, &format,
			 err) < 0 ||
	    json_get_string(blob, "attest", "quote", ATTEST_ATTEST_MAX * 2,
			    &a64, err) < 0 ||
	    json_get_string(blob, "signature", "quote",
			    ATTEST_SIGNATURE_MAX * 2, &s64, err) < 0)
		goto out;
	if (format != ATTEST_FORMAT_VERSION) {
		ferr_set(err, FERR_INVALID,
			 "quote: format %llu is not %d",
			 (unsigned long long)format, ATTEST_FORMAT_VERSION);
		goto out;
	}
	v.log = calloc(1, sizeof(*v.log));
	if (!v.log) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	if (attest_b64_decode(a64, ATTEST_ATTEST_MAX, "quote.attest", &att,
			      &att_len, err) < 0 ||
	    attest_b64_decode(s64, ATTEST_SIGNATURE_MAX, "quote.signature",
			      &sig, &sig_len, err) < 0 ||
	    attest_log_from_json(json_object_get(blob, "events"), v.log,
				 err) < 0)
		goto out;
	if (Tss2_MU_TPMS_ATTEST_Unmarshal(att, att_len, &off, &v.att) != 0 ||
	    off != att_len) {
		ferr_set(err, FERR_INVALID,
			 "quote.attest: not a TPMS_ATTEST");
		goto out;
	}
	if (attest_ak_check(rec->ak_public, rec->ak_public_len, name, &ak,
			    err) < 0) {
		ferr_wrap(err, "enrolled record of %s", rec->host);
		goto out;
	}
	if (!quote_sig_ok(ak, att, att_len, sig, sig_len)) {
		ferr_set(err, FERR_FORBIDDEN,
			 "host %s: the quote's signature does not verify with "
			 "its enrolled AK (made by another TPM, or forged)",
			 rec->host);
		goto report;
	}
	v.att_ok = true;
	if (check_quote(&v, err) < 0)
		goto report;
	rc = 0;
report:
	if (report)
		*report = report_new(&v, rc == 0, rc == 0 ? "" : err->msg);
out:
	EVP_PKEY_free(ak);
	free(att);
	free(sig);
	free(v.log);
	return rc;
}

json_t *attest_blob_new(const uint8_t *attest, size_t attest_len,
			const uint8_t *sig, size_t sig_len,
			const struct attest_log *log)
{
	return json_pack("{s:i, s:o, s:o, s:o}", "format",
			 ATTEST_FORMAT_VERSION, "attest",
			 attest_b64_json(attest, attest_len), "signature",
			 attest_b64_json(sig, sig_len), "events",
			 attest_log_to_json(log));
}

int attest_registrar_verify(void *ctx, const char *host, const json_t *blob,
			    const struct attest_expect *x, json_t **report,
			    struct ferr *err)
{
	struct attest_record rec;

	if (report)
		*report = NULL;
	if (attest_record_load(ctx, host, &rec, err) < 0)
		return -1;
	return attest_verify(blob, &rec, x, report, err);
}
