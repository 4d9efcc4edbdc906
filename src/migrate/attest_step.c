/* attest_step.c - attestation in every migration (docs/attestation.md,
 * "In a migration") and the VM's own constraints:
 *  - source: a fresh challenge in prepare, then, before any channel, the
 *    destination's quote checked against its enrolled AK, the nonce bound
 *    to this migration and this TLS session, the event log and the
 *    reference values for the destination;
 *  - destination: the nonce and the quote (on a worker thread: the TPM is
 *    slow), the VM's signed constraints checked and kept sealed.
 * The migrator_attest_* functions (migrate.h) are the same checks for
 * other peers that get a VM's state: checkpoint HA's backup (src/ha). */
#define _GNU_SOURCE
#include "migrate_int.h"
#include "attest.h"
#include "audit.h"
#include "policy.h"
#include "tls.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

_Static_assert(sizeof(((struct mig_attest *)0)->challenge) ==
		       ATTEST_CHALLENGE_LEN,
	       "the challenge is an attestation challenge");
_Static_assert(MIG_EXPORTER_LEN == ATTEST_EXPORTER_LEN &&
		       TLS_EXPORTER_LEN == ATTEST_EXPORTER_LEN,
	       "one TLS exporter length");
_Static_assert(ATTEST_NONCE_LEN == 32, "nonces are 32 bytes");
_Static_assert(MIG_ID_HEX_LEN <= ATTEST_CONTEXT_MAX,
	       "a migration id fits the nonce's context");

/* ---- source ---- */

_Static_assert(sizeof(((struct mig_attest *)0)->exporter) ==
		       MIG_EXPORTER_LEN,
	       "the exporter is a TLS exporter");

int migrator_attest_plan(struct migrator *m, bool rule_requires,
			 bool vm_requires, const char *to,
			 struct mig_attest *a, struct ferr *err)
{
	migrator_attest_clear(a);
	a->on = rule_requires || vm_requires ||
		m->cfg->attest.mode == ATTEST_MODE_REQUIRED;
	if (!a->on)
		return 0;
	/* the loop's policy now: other threads must not read it later */
	a->refs = policy_attest_refs(*m->deps.policy, to, a->scope,
				     sizeof(a->scope));
	if (!a->refs)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	return 0;
}

int mig_attest_plan(struct migrator *m, struct mig *g, bool rule_requires,
		    struct ferr *err)
{
	return migrator_attest_plan(m, rule_requires, g->def.cons.attest,
				    g->opts.to, &g->att, err);
}

int migrator_attest_body(struct mig_attest *a, json_t *body,
			 struct ferr *err)
{
	char hex[2 * ATTEST_CHALLENGE_LEN + 1];

	if (!a->on)
		return 0;
	if (RAND_bytes(a->challenge, sizeof(a->challenge)) != 1)
		return ferr_set(err, FERR_INTERNAL, "no randomness");
	attest_hex(a->challenge, sizeof(a->challenge), hex);
	if (json_object_set_new(body, "attest",
				json_pack("{s:s}", "challenge", hex)) < 0)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	return 0;
}

int mig_attest_body(struct mig *g, json_t *body, struct ferr *err)
{
	return migrator_attest_body(&g->att, body, err);
}

/* The verify operation: this host's attest_ops, or the registrar folder
 * alone on a host without a TPM. */
static int verify(struct migrator *m, const char *host, const json_t *blob,
		  const struct attest_expect *x, json_t **report,
		  struct ferr *err)
{
	const struct attest_ops *ops = m->deps.attest;

	if (ops && ops->verify)
		return ops->verify(ops->ctx, host, blob, x, report, err);
	if (!m->cfg->attest.registrar[0])
		return ferr_set(err, FERR_FORBIDDEN,
				"cannot attest %s: attestation.registrar is "
				"not configured on %s",
				host, m->cfg->host);
	return attest_registrar_verify((void *)m->cfg->attest.registrar, host,
				       blob, x, report, err);
}

int migrator_attest_verify(struct migrator *m, const struct mig_attest *a,
			   const char *host, const char *context,
			   json_t **report, struct ferr *err)
{
	uint8_t nonce[ATTEST_NONCE_LEN];
	const json_t *blob = json_object_get(a->answer, "quote");
	json_t *quote_ms = json_object_get(a->answer, "quote_ms");
	uint64_t t0 = now_ms();
	int rc;

	*report = NULL;
	if (!blob) {
		rc = ferr_set(err, FERR_FORBIDDEN,
			      "%s sent no quote: it cannot be attested (is "
			      "its attestation off?)",
			      host);
	} else {
		struct attest_expect x = { .nonce = nonce,
					   .refs = a->refs,
					   .scope = a->scope };

		rc = attest_nonce(a->challenge, context, a->exporter, nonce,
				  err);
		if (rc == 0)
			rc = verify(m, host, blob, &x, report, err);
	}
	if (!*report)
		*report = json_pack("{s:s, s:b}", "host", host, "verified", 0);
	if (rc < 0)
		json_object_set_new(*report, "reason", json_string(err->msg));
	json_object_set_new(*report, "scope", json_string(a->scope));
	json_object_set_new(*report, "verify_ms",
			    json_integer((json_int_t)(now_ms() - t0)));
	/* the peer's word, for the record only */
	if (json_is_integer(quote_ms) && json_integer_value(quote_ms) >= 0 &&
	    json_integer_value(quote_ms) <= ATTEST_TPM_TIMEOUT_MS)
		json_object_set(*report, "quote_ms", quote_ms);
	if (rc < 0) {
		char msg[FERRY_ERR_MSG_MAX];

		snprintf(msg, sizeof(msg), "%s", err->msg);
		ferr_set(err, FERR_FORBIDDEN, "attestation of %s refused: %s",
			 host, msg);
	}
	OPENSSL_cleanse(nonce, sizeof(nonce));
	return rc;
}

int mig_attest_check(struct mig *g, struct ferr *err)
{
	struct migrator *m = g->m;
	json_t *report;
	int rc;

	if (!g->att.on)
		return 0;
	rc = migrator_attest_verify(m, &g->att, g->peer.name, g->id, &report,
				    err);
	mig_rec_set(g, "attestation", json_incref(report));
	mig_audit(m, g->requester, "migration.attest", g->def.name,
		  rc < 0 ? "refused" : "verified",
		  json_pack("{s:s, s:s, s:s, s:s*}", "id", g->id, "host",
			    g->peer.name, "scope", g->att.scope, "reason",
			    json_string_value(
				    json_object_get(report, "reason"))));
	json_decref(report);
	if (rc == 0)
		log_info("migration %s: %s attested (%s)", g->id,
			 g->peer.name, g->att.scope);
	return rc;
}

void migrator_attest_clear(struct mig_attest *a)
{
	json_decref(a->refs);
	json_decref(a->answer);
	a->refs = a->answer = NULL;
}

/* ---- destination ---- */

int migrator_attest_request(struct migrator *m, const json_t *req,
			    const char *what, const char *context,
			    const uint8_t *exporter, uint8_t nonce[32],
			    struct ferr *err)
{
	static const char *const fields[] = { "challenge", NULL };
	const char *hex = NULL;
	uint8_t challenge[ATTEST_CHALLENGE_LEN];

	if (json_check_fields(req, fields, what, err) < 0 ||
	    json_get_string(req, "challenge", what, 2 * ATTEST_CHALLENGE_LEN,
			    &hex, err) < 0)
		return -1;
	if (!hex || attest_unhex(hex, challenge, sizeof(challenge)) < 0)
		return ferr_set(err, FERR_INVALID, "%s.challenge: %d hex digits",
				what, 2 * ATTEST_CHALLENGE_LEN);
	if (!m->deps.attest || !m->deps.attest->quote)
		return ferr_set(err, FERR_CONFLICT,
				"host %s cannot be attested: its attestation "
				"is off (ferryd.json: attestation)",
				m->cfg->host);
	if (!exporter)
		return ferr_set(err, FERR_INTERNAL,
				"no TLS exporter for this connection");
	return attest_nonce(challenge, context, exporter, nonce, err);
}

int migrator_attest_quote(struct migrator *m, const uint8_t nonce[32],
			  json_t **attestation, struct ferr *err)
{
	const struct attest_ops *ops = m->deps.attest;
	uint64_t t0 = now_ms();
	json_t *blob = NULL;

	if (ops->quote(ops->ctx, nonce, &blob, err) < 0)
		return -1;
	*attestation = json_pack("{s:o, s:I}", "quote", blob, "quote_ms",
				 (json_int_t)(now_ms() - t0));
	return *attestation ? 0
			    : ferr_set(err, FERR_INTERNAL, "out of memory");
}

/* Does the destination's label set satisfy the VM's destinations? For
 * each key listed, one of its values. */
static bool labels_ok(const struct vm_constraints *c, const json_t *labels,
		      char *why, size_t len)
{
	for (unsigned i = 0; i < c->ndest; i++) {
		const char *have = json_string_value(
			json_object_get(labels, c->dest[i].key));
		bool found = false;

		for (unsigned j = 0; j < c->ndest && !found; j++)
			found = !strcmp(c->dest[j].key, c->dest[i].key) &&
				have && !strcmp(c->dest[j].value, have);
		if (!found) {
			snprintf(why, len, "its label %s is %s, not one the VM "
					   "allows",
				 c->dest[i].key, have ? have : "unset");
			return false;
		}
	}
	return true;
}

int mig_constraints_check(struct migrator *m, const struct vm_def *def,
			  const char *requester, bool attested,
			  struct ferr *err)
{
	const struct vm_constraints *c = &def->cons;
	const struct policy *p = *m->deps.policy;
	char why[FERRY_ERR_MSG_MAX];

	if (!c->present)
		return 0;
	if (!labels_ok(c, policy_host_labels(p, m->cfg->host), why,
		       sizeof(why)))
		return ferr_set(err, FERR_FORBIDDEN,
				"vm %s's constraints refuse host %s: %s",
				def->name, m->cfg->host, why);
	if (c->attest && !attested)
		return ferr_set(err, FERR_FORBIDDEN,
				"vm %s's constraints require the destination's "
				"attestation, and the source asked for none",
				def->name);
	if (c->nroles) {
		unsigned have = policy_roles(p, requester);
		bool ok = false;

		for (unsigned i = 0; i < c->nroles && !ok; i++)
			for (unsigned b = 0; b < 32 && !ok; b++)
				ok = (have & (1u << b)) &&
				     !strcmp(role_name((enum role)(1u << b)),
					     c->roles[i]);
		if (!ok)
			return ferr_set(err, FERR_FORBIDDEN,
					"vm %s's constraints refuse requester "
					"%s: it holds none of the VM's allowed "
					"roles",
					def->name, requester);
	}
	return 0;
}

int mig_constraints_verify(const char *registrar, const struct vm_def *def,
			   struct ferr *err)
{
	char path[FERRY_PATH_MAX];
	uint8_t d[ATTEST_DIGEST_LEN];
	json_t *tbs;
	EVP_PKEY *key;
	int rc;

	if (!def->cons.present)
		return 0;
	if (!registrar[0])
		return ferr_set(err, FERR_FORBIDDEN,
				"vm %s carries signed constraints, and this "
				"host cannot check them (attestation.registrar "
				"is not configured)",
				def->name);
	if (fmt_checked(path, sizeof(path), err, "path", "%s/%s", registrar,
			ATTEST_AUTHORITY_PUB) < 0 ||
	    !(key = attest_key_load(path, false, err)))
		return -1;
	tbs = vm_constraints_to_json(&def->cons, false);
	rc = tbs ? attest_constraints_digest(def->uuid, tbs, d, err)
		 : ferr_set(err, FERR_INTERNAL, "out of memory");
	if (rc == 0 && !attest_sig_ok(key, d, def->cons.signature))
		rc = ferr_set(err, FERR_FORBIDDEN,
			      "vm %s's constraints are not signed by the "
			      "attestation authority (%s)",
			      def->name, path);
	json_decref(tbs);
	EVP_PKEY_free(key);
	return rc;
}

int mig_constraints_store(struct migrator *m, const struct vm_def *def,
			  struct ferr *err)
{
	const struct attest_ops *ops = m->deps.attest;
	char file[64];
	char *text;
	json_t *c;
	int rc;

	if (!def->cons.present || !ops || !ops->store ||
	    !m->cfg->attest.seal)
		return 0;
	c = vm_constraints_to_json(&def->cons, true);
	text = c ? json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(c);
	if (!text)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	snprintf(file, sizeof(file), "constraints-%s.sealed", def->uuid);
	rc = ops->store(ops->ctx, ATTEST_CONSTRAINTS_ENVELOPE, file,
			(const uint8_t *)text, strlen(text), err);
	free(text);
	return rc;
}
