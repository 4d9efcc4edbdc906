/* cmd_attest.c - `ferry host enroll|attest|reseal`: the registrar and the
 * verifier on the admin's side (docs/attestation.md). The registrar folder
 * is <--dir>/attest: the authority's key, the TPM manufacturers' CA
 * certificates, and one record per enrolled host. */
#define _GNU_SOURCE
#include "attest.h"
#include "cli.h"
#include "config.h"
#include "policy.h"
#include "vm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

static int usage(void)
{
	fprintf(stderr,
		"usage: ferry host enroll HOST --dir PKI [--policy FILE]\n"
		"       ferry host attest HOST --dir PKI --policy FILE\n"
		"       ferry host reseal --ferryd FERRYD_JSON --dir PKI "
		"[--policy FILE]\n");
	return EXIT_USAGE;
}

/* <pki>/attest */
static int registrar_dir(const struct cli_opts *o, char *out, size_t len,
			 struct ferr *err)
{
	if (!o->dir)
		return ferr_set(err, FERR_INVALID,
				"--dir PKI (the cluster PKI folder) is "
				"required");
	return fmt_checked(out, len, err, "path", "%s/attest", o->dir);
}

/* Reference values for host from the policy file at path. */
static json_t *load_refs(const char *path, const char *host, char *scope,
			 size_t scope_len, struct ferr *err)
{
	struct policy *p = NULL;
	json_t *refs;

	if (policy_load(path, &p, err) < 0)
		return NULL;
	refs = policy_attest_refs(p, host, scope, scope_len);
	policy_free(p);
	if (!refs)
		ferr_set(err, FERR_INTERNAL, "out of memory");
	return refs;
}

/* Ask host for a quote bound to a fresh challenge and this TLS session
 * and verify it against rec and refs. *blob (when not NULL) keeps the
 * quote; *report gets the verifier's report whenever it parsed. */
static int quote_verify(struct client *c, const struct cli_host *host,
			const struct attest_record *rec, const json_t *refs,
			const char *scope, json_t **blob, json_t **report,
			struct ferr *err)
{
	uint8_t challenge[ATTEST_CHALLENGE_LEN], nonce[ATTEST_NONCE_LEN],
		exporter[ATTEST_EXPORTER_LEN];
	char hex[2 * ATTEST_CHALLENGE_LEN + 1];
	struct attest_expect x = { .nonce = nonce, .refs = refs,
				   .scope = scope };
	json_t *body, *reply = NULL;
	int rc = -1;

	*report = NULL;
	if (RAND_bytes(challenge, sizeof(challenge)) != 1)
		return ferr_set(err, FERR_INTERNAL, "no randomness");
	attest_hex(challenge, sizeof(challenge), hex);
	body = json_pack("{s:s}", "challenge", hex);
	if (client_call_bound(c, host, "POST", "/v1/attest/quote", body,
			      &reply, exporter, err) < 0 ||
	    attest_nonce(challenge, ATTEST_CONTEXT_CLI, exporter, nonce, err) <
		    0)
		goto out;
	rc = attest_verify(json_object_get(reply, "quote"), rec, &x, report,
			   err);
	if (blob)
		*blob = json_incref(json_object_get(reply, "quote"));
out:
	json_decref(body);
	json_decref(reply);
	return rc;
}

/* "0123456789abcdef…" */
static const char *short_hex(const char *hex)
{
	static char buf[32];

	snprintf(buf, sizeof(buf), "%.16s\u2026", hex ? hex : "-");
	return buf;
}

static void print_report(const json_t *r)
{
	const json_t *tpm = json_object_get(r, "tpm"), *v, *e;
	const char *k;
	char when[64];
	time_t t = (time_t)(json_integer_value(json_object_get(r, "time_ms")) /
			    1000);
	size_t i;

	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
	printf("host %s: %s at %s\n",
	       json_string_value(json_object_get(r, "host")),
	       json_is_true(json_object_get(r, "verified"))
		       ? "quote verified"
		       : "quote NOT verified",
	       when);
	if (!json_is_true(json_object_get(r, "verified")))
		printf("reason: %s\n",
		       json_string_value(json_object_get(r, "reason")));
	if (tpm)
		printf("TPM clock %lld ms, resets %lld, restarts %lld\n",
		       (long long)json_integer_value(
			       json_object_get(tpm, "clock_ms")),
		       (long long)json_integer_value(
			       json_object_get(tpm, "reset_count")),
		       (long long)json_integer_value(
			       json_object_get(tpm, "restart_count")));
	json_object_foreach((json_t *)json_object_get(r, "pcrs"), k, v)
		printf("PCR %-3s %s\n", k, json_string_value(v));
	printf("%-4s %-7s %-18s %-12s %s\n", "PCR", "KIND", "SHA256",
	       "VERDICT", "PATH");
	json_array_foreach(json_object_get(r, "events"), i, e)
		printf("%-4lld %-7s %-18s %-12s %s\n",
		       (long long)json_integer_value(json_object_get(e, "pcr")),
		       json_string_value(json_object_get(e, "kind")),
		       short_hex(json_string_value(json_object_get(e, "sha256"))),
		       json_string_value(json_object_get(e, "verdict")),
		       json_string_value(json_object_get(e, "path")));
}

/* The approvals for PCR pcr holding what log's events of that PCR make
 * it, and what the latest ferryd and QEMU measured from a reset make it
 * (the value after the next reboot); plus, when policy_sha256 is not
 * NULL, the acceptance of that policy file. */
static json_t *make_approvals(EVP_PKEY *auth, unsigned pcr,
			      const struct attest_log *log,
			      const uint8_t *policy_sha256, struct ferr *err)
{
	struct attest_log *sw = calloc(1, sizeof(*sw)),
			  *fresh = calloc(1, sizeof(*fresh));
	uint8_t now[ATTEST_DIGEST_LEN], canon[ATTEST_DIGEST_LEN];
	json_t *arr = json_array(), *doc = NULL;

	if (!sw || !fresh || !arr) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < log->n; i++)
		if (log->ev[i].pcr == pcr)
			sw->ev[sw->n++] = log->ev[i];
	for (int k = ATTEST_KIND_FERRYD; k <= ATTEST_KIND_QEMU; k++) {
		const struct attest_event *e = attest_log_latest(sw, k);

		if (e)
			fresh->ev[fresh->n++] = *e;
	}
	attest_log_replay(sw, pcr, now);
	attest_log_replay(fresh, pcr, canon);
	if (json_array_append_new(arr, attest_approve_pcr(auth, pcr, now, sw,
							  err)) < 0 ||
	    (memcmp(now, canon, sizeof(now)) != 0 &&
	     json_array_append_new(arr, attest_approve_pcr(auth, pcr, canon,
							   fresh, err)) < 0) ||
	    (policy_sha256 &&
	     json_array_append_new(arr, attest_approve_policy(auth,
							      policy_sha256,
							      err)) < 0))
		goto out;
	doc = json_pack("{s:i, s:O}", "format", ATTEST_FORMAT_VERSION,
			"approvals", arr);
out:
	json_decref(arr);
	free(sw);
	free(fresh);
	return doc;
}

static EVP_PKEY *authority_key(const char *reg, struct ferr *err)
{
	char path[FERRY_PATH_MAX];

	if (fmt_checked(path, sizeof(path), err, "path", "%s/%s", reg,
			ATTEST_AUTHORITY_KEY) < 0)
		return NULL;
	return attest_key_load(path, true, err);
}

/* Identity, EK certificate, credential activation: the record. */
static int enroll_record(struct client *c, const struct cli_host *host,
			 const char *reg, struct attest_record *rec,
			 bool *sealed, struct ferr *err)
{
	char mfr[FERRY_PATH_MAX];
	uint8_t *der = NULL, *pub = NULL, secret[ATTEST_CREDENTIAL_LEN],
		proof[ATTEST_DIGEST_LEN], got[ATTEST_DIGEST_LEN],
		blob[ATTEST_ID_OBJECT_MAX], enc[ATTEST_ENC_SECRET_MAX];
	size_t der_len = 0, pub_len = 0, blen = sizeof(blob),
	       elen = sizeof(enc);
	json_t *id = NULL, *req = NULL, *reply = NULL;
	EVP_PKEY *ek = NULL;
	int rc = -1;

	memset(rec, 0, sizeof(*rec));
	if (client_call_bound(c, host, "GET", "/v1/attest/identity", NULL,
			      &id, NULL, err) < 0 ||
	    fmt_checked(mfr, sizeof(mfr), err, "path", "%s/%s", reg,
			ATTEST_MANUFACTURERS_DIR) < 0 ||
	    attest_b64_decode(json_string_value(json_object_get(id, "ek_cert")),
			      ATTEST_EK_CERT_MAX, "ek_cert", &der, &der_len,
			      err) < 0 ||
	    attest_b64_decode(json_string_value(
				      json_object_get(id, "ak_public")),
			      ATTEST_PUBLIC_MAX, "ak_public", &pub, &pub_len,
			      err) < 0 ||
	    attest_ek_check(der, der_len, mfr, &ek, rec->ek_cert_sha256,
			    rec->ek_issuer, sizeof(rec->ek_issuer), err) < 0 ||
	    attest_ak_check(pub, pub_len, rec->ak_name, NULL, err) < 0)
		goto out;
	/* the AK must live in the TPM whose EK the certificate holds */
	RAND_bytes(secret, sizeof(secret));
	if (attest_make_credential(ek, rec->ak_name, secret, blob, &blen, enc,
				   &elen, err) < 0)
		goto out;
	req = json_pack("{s:o, s:o}", "credential", attest_b64_json(blob, blen),
			"secret", attest_b64_json(enc, elen));
	if (client_call_bound(c, host, "POST", "/v1/attest/activate", req,
			      &reply, NULL, err) < 0)
		goto out;
	attest_enroll_proof(secret, host->name, rec->ak_name, proof);
	if (attest_unhex(json_string_value(json_object_get(reply, "proof")),
			 got, sizeof(got)) < 0 ||
	    CRYPTO_memcmp(got, proof, sizeof(got)) != 0) {
		ferr_set(err, FERR_FORBIDDEN,
			 "host %s did not activate the credential: its AK is "
			 "not in the TPM of its EK certificate",
			 host->name);
		goto out;
	}
	snprintf(rec->host, sizeof(rec->host), "%s", host->name);
	memcpy(rec->ak_public, pub, pub_len);
	rec->ak_public_len = pub_len;
	rec->pcr = (unsigned)json_integer_value(json_object_get(id, "pcr"));
	rec->policy_pcr =
		(unsigned)json_integer_value(json_object_get(id, "policy_pcr"));
	rec->enrolled_ms = wall_ms();
	*sealed = json_is_true(json_object_get(id, "sealed"));
	rc = attest_record_save(reg, rec, err);
out:
	secret_wipe(secret, sizeof(secret));
	EVP_PKEY_free(ek);
	free(der);
	free(pub);
	json_decref(id);
	json_decref(req);
	json_decref(reply);
	return rc;
}

/* ferry host enroll HOST: bind HOST's AK to its EK and its name; then,
 * with --policy, verify a quote and (when HOST seals its keys) approve
 * the software it runs. */
static int enroll(const struct cli_opts *o, const char *name, struct ferr *err)
{
	struct cli_config cfg;
	const struct cli_host *host;
	struct client c = { 0 };
	struct attest_record rec;
	struct attest_log *log = calloc(1, sizeof(*log));
	char reg[FERRY_PATH_MAX], scope[FERRY_ERR_MSG_MAX];
	json_t *refs = NULL, *blob = NULL, *report = NULL, *doc = NULL,
	       *reply = NULL;
	EVP_PKEY *auth = NULL;
	bool sealed = false;
	int rc = -1;

	if (!log)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (registrar_dir(o, reg, sizeof(reg), err) < 0 ||
	    cli_config_load(o->config, &cfg, err) < 0 ||
	    !(host = cli_host_find(&cfg, name, err)) ||
	    client_init(&c, &cfg, CLI_TIMEOUT_S_DEFAULT, err) < 0 ||
	    enroll_record(&c, host, reg, &rec, &sealed, err) < 0)
		goto out;
	printf("enrolled %s: AK bound to its EK (issuer %s), record %s/%s/"
	       "%s.json\n",
	       rec.host, rec.ek_issuer, reg, ATTEST_HOSTS_DIR, rec.host);
	if (!o->policy) {
		if (sealed)
			printf("no --policy: the software of %s is not "
			       "approved for its sealed keys yet (run `ferry "
			       "host enroll` with --policy, or `ferry host "
			       "reseal`)\n",
			       rec.host);
		rc = 0;
		goto out;
	}
	if (!(refs = load_refs(o->policy, rec.host, scope, sizeof(scope),
			       err)))
		goto out;
	rc = quote_verify(&c, host, &rec, refs, scope, &blob, &report, err);
	if (report && !o->json)
		print_report(report);
	if (rc < 0 || !sealed)
		goto out;
	rc = -1;
	if (attest_log_from_json(json_object_get(blob, "events"), log, err) <
		    0 ||
	    !(auth = authority_key(reg, err)) ||
	    !(doc = make_approvals(auth, rec.pcr, log, NULL, err)) ||
	    client_call_bound(&c, host, "POST", "/v1/attest/approvals", doc,
			      &reply, NULL, err) < 0)
		goto out;
	printf("approved the software of %s for its sealed keys (%lld "
	       "approvals)\n",
	       rec.host,
	       (long long)json_integer_value(
		       json_object_get(reply, "approvals")));
	rc = 0;
out:
	if (o->json && report)
		print_json(report);
	EVP_PKEY_free(auth);
	json_decref(refs);
	json_decref(blob);
	json_decref(report);
	json_decref(doc);
	json_decref(reply);
	client_free(&c);
	free(log);
	return rc;
}

/* ferry host attest HOST: a verified quote, shown. */
static int attest(const struct cli_opts *o, const char *name, struct ferr *err)
{
	struct cli_config cfg;
	const struct cli_host *host;
	struct client c = { 0 };
	struct attest_record rec;
	char reg[FERRY_PATH_MAX], scope[FERRY_ERR_MSG_MAX];
	json_t *refs = NULL, *report = NULL;
	int rc = -1;

	if (!o->policy)
		return ferr_set(err, FERR_INVALID,
				"--policy FILE (with the reference values) is "
				"required");
	if (registrar_dir(o, reg, sizeof(reg), err) < 0 ||
	    cli_config_load(o->config, &cfg, err) < 0 ||
	    !(host = cli_host_find(&cfg, name, err)) ||
	    attest_record_load(reg, host->name, &rec, err) < 0 ||
	    !(refs = load_refs(o->policy, host->name, scope, sizeof(scope),
			       err)) ||
	    client_init(&c, &cfg, CLI_TIMEOUT_S_DEFAULT, err) < 0)
		goto out;
	rc = quote_verify(&c, host, &rec, refs, scope, NULL, &report, err);
	if (report)
		o->json ? print_json(report) : print_report(report);
out:
	json_decref(refs);
	json_decref(report);
	client_free(&c);
	return rc;
}

/* ferry host reseal --ferryd FILE: approve what a ferryd that refused to
 * start measured (its pending.json), when the reference values allow
 * it, by writing authority-signed approvals into its state folder. */
static int reseal(const struct cli_opts *o, struct ferr *err)
{
	static const char *const fields[] = { "format", "host", "pcr",
					      "pcr_value", "events",
					      "policy_sha256", "reason", NULL };
	struct ferryd_config cfg = { 0 };
	struct attest_log *log = calloc(1, sizeof(*log));
	const char *verdict[ATTEST_EVENTS_MAX];
	char reg[FERRY_PATH_MAX], path[FERRY_PATH_MAX], scope[FERRY_ERR_MSG_MAX];
	char *text = NULL;
	const char *phex = NULL, *vhex = NULL;
	uint8_t value[ATTEST_DIGEST_LEN], replay[ATTEST_DIGEST_LEN],
		psha[ATTEST_DIGEST_LEN];
	uint64_t pcr = 0;
	size_t len = 0;
	json_t *pending = NULL, *refs = NULL, *doc = NULL;
	EVP_PKEY *auth = NULL;
	int rc = -1;

	if (!log)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (!o->ferryd) {
		ferr_set(err, FERR_INVALID,
			 "--ferryd FILE (the host's ferryd.json) is required");
		goto out;
	}
	if (registrar_dir(o, reg, sizeof(reg), err) < 0 ||
	    config_load(o->ferryd, &cfg, err) < 0 ||
	    fmt_checked(path, sizeof(path), err, "path", "%s/%s/%s",
			cfg.state_dir, ATTEST_DIR_NAME,
			ATTEST_PENDING_NAME) < 0)
		goto out;
	if (file_read_all(path, ATTEST_FILE_MAX, &text, &len, err) < 0) {
		if (err->code == FERR_NOT_FOUND)
			ferr_set(err, FERR_NOT_FOUND,
				 "nothing to reseal: %s does not exist (ferryd "
				 "writes it when it refuses to start)",
				 path);
		goto out;
	}
	if (!(pending = json_parse_object(text, len, path, err)) ||
	    json_check_fields(pending, fields, path, err) < 0 ||
	    json_get_u64(pending, "pcr", path, 0, ATTEST_PCR_MAX, &pcr, err) <
		    0 ||
	    json_get_string(pending, "pcr_value", path, ATTEST_DIGEST_HEX_LEN,
			    &vhex, err) < 0 ||
	    json_get_string(pending, "policy_sha256", path,
			    ATTEST_DIGEST_HEX_LEN, &phex, err) < 0 ||
	    attest_log_from_json(json_object_get(pending, "events"), log,
				 err) < 0)
		goto out;
	attest_log_replay(log, (unsigned)pcr, replay);
	if (pcr != cfg.attest.pcr || !vhex ||
	    attest_unhex(vhex, value, sizeof(value)) < 0 ||
	    memcmp(value, replay, sizeof(value)) != 0 ||
	    (phex && attest_unhex(phex, psha, sizeof(psha)) < 0)) {
		ferr_set(err, FERR_INVALID,
			 "%s does not agree with itself or with %s", path,
			 o->ferryd);
		goto out;
	}
	printf("%s refused to start: %s\n", cfg.host,
	       json_string_value(json_object_get(pending, "reason")));
	if (!(refs = load_refs(o->policy ? o->policy : cfg.policy_file,
			       cfg.host, scope, sizeof(scope), err)) ||
	    attest_log_judge(log, refs, cfg.host, scope, verdict, err) < 0 ||
	    !(auth = authority_key(reg, err)) ||
	    !(doc = make_approvals(auth, (unsigned)pcr, log,
				   phex ? psha : NULL, err)) ||
	    fmt_checked(path, sizeof(path), err, "path", "%s/%s/%s",
			cfg.state_dir, ATTEST_DIR_NAME,
			ATTEST_APPROVALS_NAME) < 0)
		goto out;
	free(text);
	text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!text || file_write_atomic(path, text, strlen(text), 0600, err) < 0)
		goto out;
	for (unsigned i = 0; i < log->n; i++) {
		char hex[ATTEST_DIGEST_HEX_LEN + 1];

		attest_hex(log->ev[i].sha256, ATTEST_DIGEST_LEN, hex);
		printf("  %-7s %-18s %-12s %s\n",
		       attest_kind_name(log->ev[i].kind), short_hex(hex),
		       verdict[i], log->ev[i].path);
	}
	printf("resealed %s: %zu approvals in %s; start ferryd again\n",
	       cfg.host, json_array_size(json_object_get(doc, "approvals")),
	       path);
	rc = 0;
out:
	EVP_PKEY_free(auth);
	json_decref(pending);
	json_decref(refs);
	json_decref(doc);
	free(text);
	free(log);
	config_clear(&cfg);
	return rc;
}

int cmd_host_attest(const struct cli_opts *o, int argc, char **argv)
{
	struct ferr err = { 0 };
	bool re = !strcmp(argv[0], "reseal");
	int rc;

	if (argc != (re ? 1 : 2) ||
	    cli_check_opts(o, OPT_DIR | OPT_POLICY | (re ? OPT_FERRYD : 0),
			   argv[0]) != 0)
		return usage();
	if (re)
		rc = reseal(o, &err);
	else if (!strcmp(argv[0], "enroll"))
		rc = enroll(o, argv[1], &err);
	else
		rc = attest(o, argv[1], &err);
	return rc < 0 ? cli_fail(&err) : EXIT_OK;
}

/* `ferry vm sign FILE --dir PKI`: sign the "constraints" of a VM
 * definition with the attestation authority's key, bound to its uuid;
 * the signed definition goes to stdout. */
int cmd_vm_sign(const struct cli_opts *o, const char *file)
{
	char reg[FERRY_PATH_MAX], hex[2 * ATTEST_SIG_LEN + 1];
	uint8_t d[ATTEST_DIGEST_LEN], sig[ATTEST_SIG_LEN];
	struct vm_def *def = calloc(1, sizeof(*def));
	struct ferr err = { 0 };
	json_error_t jerr;
	json_t *obj = NULL, *cons, *tbs = NULL;
	EVP_PKEY *key = NULL;
	int rc = EXIT_FAILED;

	if (!def) {
		ferr_set(&err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	obj = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj) {
		ferr_set(&err, FERR_INVALID, "%s: line %d: %s", file, jerr.line,
			 jerr.text);
		goto out;
	}
	cons = json_object_get(obj, "constraints");
	if (!json_is_string(json_object_get(obj, "uuid")) ||
	    !json_is_object(cons)) {
		ferr_set(&err, FERR_INVALID,
			 "%s: the definition needs a uuid and a constraints "
			 "object (the signature binds them)",
			 file);
		goto out;
	}
	/* a placeholder so the strict parser checks the rest */
	memset(hex, '0', sizeof(hex) - 1);
	hex[sizeof(hex) - 1] = '\0';
	json_object_set_new(cons, "signature", json_string(hex));
	if (registrar_dir(o, reg, sizeof(reg), &err) < 0 ||
	    vmdef_from_json(obj, def, &err) < 0 ||
	    !(tbs = vm_constraints_to_json(&def->cons, false)) ||
	    attest_constraints_digest(def->uuid, tbs, d, &err) < 0 ||
	    !(key = authority_key(reg, &err)) ||
	    attest_sign(key, d, sig, &err) < 0) {
		if (!err.code)
			ferr_set(&err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	attest_hex(sig, sizeof(sig), hex);
	json_object_set_new(cons, "signature", json_string(hex));
	print_json(obj);
	rc = EXIT_OK;
out:
	if (rc != EXIT_OK)
		cli_fail(&err);
	EVP_PKEY_free(key);
	json_decref(tbs);
	json_decref(obj);
	free(def);
	return rc;
}
