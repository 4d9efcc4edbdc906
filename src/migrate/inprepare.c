/* inprepare.c - the destination's prepare of a migration on the loop's
 * thread: the source's request checked (version, policy, the VM's
 * definition, attestation, firewall, shared files), the session opened and
 * journalled, QEMU started waiting for the stream. The hashing of shared
 * files and QEMU's start run on worker threads. */
#define _GNU_SOURCE
#include "migrate_int.h"
#include "fault.h"
#include "audit.h"
#include "policy.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define PREPARE_VERSION_MAJOR 1

/* A prepare in progress: the hash job, QEMU's start, its set-up. */
struct prep {
	struct migrator *m;
	struct in_session *s;  /* a reference */
	struct vm_def def;
	json_t *theirs;        /* the source's file identities */
	bool quote;            /* the source asked for attestation */
	uint8_t nonce[32];     /* ... bound to it and its TLS session */
	json_t *attestation;   /* the quote (worker) for the reply */
	unsigned multifd;
	mig_reply_fn fn;
	void *ctx;
	int rc;
	struct ferr err;
};

static void prep_fail(struct prep *p, const struct ferr *err)
{
	struct migrator *m = p->m;

	log_info("incoming migration %s of vm %s refused: %s", p->s->id,
		 p->def.name, err->msg);
	/* never journalled nor answered: the source has no session id yet */
	if (session_end(&m->sessions, p->s, IN_FAILED))
		unlink(p->s->in_sock);
	p->fn(p->ctx, -1, NULL, err);
	session_put(&m->sessions, p->s);
	json_decref(p->theirs);
	json_decref(p->attestation);
	free(p);
}

/* Worker: QMP set-up of the destination QEMU: capabilities, then listen. */
static int dest_setup(struct qmp *q, void *arg, struct ferr *err)
{
	struct prep *p = arg;
	char uri[FERRY_SOCK_PATH_MAX + 8];
	json_t *caps = json_pack(
		"{s:[{s:s,s:b},{s:s,s:b},{s:s,s:b},{s:s,s:b}]}", "capabilities",
		"capability", "events", "state", 1, "capability",
		"return-path", "state", 1, "capability", "multifd", "state",
		p->multifd > 0, "capability", "postcopy-ram", "state",
		p->s->postcopy);

	if (qmp_command(q, "migrate-set-capabilities", caps, NULL, err) < 0)
		return -1;
	if (p->multifd &&
	    qmp_command(q, "migrate-set-parameters",
			json_pack("{s:i}", "multifd-channels",
				  (int)p->multifd),
			NULL, err) < 0)
		return -1;
	/* QEMU runs in the run folder: the socket's name there (vm.h) */
	snprintf(uri, sizeof(uri), "unix:%s", vm_run_name(p->s->in_sock));
	return qmp_command(q, "migrate-incoming",
			   json_pack("{s:s}", "uri", uri), NULL, err);
}

static void on_dest_ready(void *arg, struct vm *vm, int rc,
			  const struct ferr *err)
{
	struct prep *p = arg;
	struct migrator *m = p->m;
	struct in_session *s = p->s;
	struct timeval tv = { .tv_sec = (time_t)(p->def.max_time_s +
						  MIG_SESSION_GRACE_S) };
	char keyhex[2 * MIG_KEY_LEN + 1];
	struct ferr e2;
	json_t *reply;

	if (rc < 0 || !vm) {
		if (vm)
			vmm_incoming_discard(m->vmm, vm);
		prep_fail(p, err ? err : &(struct ferr){ FERR_UNAVAILABLE,
							 "the VM is gone" });
		return;
	}
	s->timer = evtimer_new(m->base, incoming_session_timeout, s);
	if (!s->timer || evtimer_add(s->timer, &tv) < 0 ||
	    incoming_journal(m, s, "prepared", false, &e2) < 0 ||
	    session_advance(&m->sessions, s, IN_PREPARING, IN_PREPARED,
			    &e2) < 0) {
		if (s->timer) {
			event_free(s->timer);
			s->timer = NULL;
		}
		vmm_incoming_discard(m->vmm, vm);
		prep_fail(p, &e2);
		return;
	}
	fault_point("dst.prepared");
	hex_encode(s->key, sizeof(s->key), keyhex);
	reply = json_pack("{s:s, s:s, s:s, s:i, s:O*}", "id", s->id, "key",
			  keyhex, "data_address", m->cfg->advertise_addr,
			  "data_port", (int)m->cfg->advertise_port,
			  "attestation", p->attestation);
	OPENSSL_cleanse(keyhex, sizeof(keyhex));
	log_info("incoming migration %s: vm %s from %s (migration %s, "
		 "requested by %s), %u channel(s)%s",
		 s->id, s->vm, s->source, s->migration, s->requester,
		 (unsigned)s->nchan, s->insecure ? ", PLAINTEXT" : "");
	p->fn(p->ctx, 0, reply, NULL);
	session_put(&m->sessions, s);
	json_decref(p->theirs);
	json_decref(p->attestation);
	free(p);
}

static void on_dest_started(void *arg, struct vm *vm, int rc,
			    const struct ferr *err)
{
	struct prep *p = arg;
	struct ferr e2;

	if (rc < 0 || !vm) {
		prep_fail(p, err ? err : &(struct ferr){ FERR_UNAVAILABLE,
							 "the VM is gone" });
		return;
	}
	if (p->s->state != IN_PREPARING) {
		/* aborted meanwhile (a stop, QEMU's exit) */
		vmm_incoming_discard(p->m->vmm, vm);
		ferr_set(&e2, FERR_UNAVAILABLE, "migration %s was aborted",
			 p->s->id);
		prep_fail(p, &e2);
		return;
	}
	if (vm_run_qmp(vm, "migrate-incoming", dest_setup, p, on_dest_ready,
		       &e2) < 0) {
		vmm_incoming_discard(p->m->vmm, vm);
		prep_fail(p, &e2);
	}
}

/* Worker: check the VM's constraints' signature, hash our copies of the
 * VM's files and compare them, keep the constraints sealed, and quote for
 * the source when it asked (the TPM may be slow). */
static void prep_hash(void *arg)
{
	struct prep *p = arg;
	json_t *ours = NULL;

	p->rc = mig_constraints_verify(p->m->cfg->attest.registrar, &p->def,
				       &p->err);
	if (p->rc == 0) {
		ours = mig_files_identity(p->m->cfg->shared_dir, &p->def,
					  &p->err);
		p->rc = ours ? mig_files_compare(ours, p->theirs, &p->err) : -1;
	}
	if (p->rc == 0)
		p->rc = mig_constraints_store(p->m, &p->def, &p->err);
	if (p->rc == 0 && p->quote)
		p->rc = migrator_attest_quote(p->m, p->nonce,
					      &p->attestation, &p->err);
	OPENSSL_cleanse(p->nonce, sizeof(p->nonce));
	json_decref(ours);
}

static void prep_hashed(void *arg)
{
	static const char *const extra[] = { "-incoming", "defer", "-S",
					     NULL };
	struct prep *p = arg;
	struct migrator *m = p->m;
	struct vm *vm = NULL;
	struct ferr e2;

	if (p->rc < 0) {
		prep_fail(p, &p->err);
		return;
	}
	if (m->stopping || p->s->state != IN_PREPARING) {
		ferr_set(&e2, FERR_UNAVAILABLE, "ferryd is shutting down");
		prep_fail(p, &e2);
		return;
	}
	if (vmm_start_incoming(m->vmm, &p->def, p->s->id, extra,
			       on_dest_started, p, &vm, &e2) < 0)
		prep_fail(p, &e2);
}

/* The prepare body, checked: fields, versions, names, the policy. */
static int prepare_check(struct migrator *m, const json_t *body,
			 const char *peer, const unsigned char *exporter,
			 struct prep *p, struct ferr *err)
{
	static const char *const fields[] = {
		"version", "migration", "vm", "source", "requester", "multifd",
		"postcopy", "insecure", "files", "attest", "compress",
		"firewall", NULL
	};
	const char *version = NULL, *mig = NULL, *source = NULL;
	const char *requester = NULL, *compress = NULL;
	uint64_t multifd = 0, major = PREPARE_VERSION_MAJOR;
	bool postcopy = false, insecure = false;
	struct in_session *s = p->s;
	uint8_t bin[MIG_SESSION_ID_LEN];

	if (!body || json_check_fields(body, fields, "prepare", err) < 0 ||
	    json_get_string(body, "version", "prepare", 16, &version, err) <
		    0 ||
	    json_get_string(body, "migration", "prepare", MIG_ID_HEX_LEN,
			    &mig, err) < 0 ||
	    json_get_string(body, "source", "prepare", FERRY_NAME_MAX, &source,
			    err) < 0 ||
	    json_get_string(body, "requester", "prepare", FERRY_NAME_MAX,
			    &requester, err) < 0 ||
	    json_get_u64(body, "multifd", "prepare", 0, MIG_MULTIFD_MAX,
			 &multifd, err) < 0 ||
	    json_get_bool(body, "postcopy", "prepare", &postcopy, err) < 0 ||
	    json_get_bool(body, "insecure", "prepare", &insecure, err) < 0 ||
	    json_get_string(body, "compress", "prepare", 16, &compress,
			    err) < 0)
		return -1;
	if (compress && strcmp(compress, "zstd") != 0)
		return ferr_set(err, FERR_INVALID,
				"prepare.compress \"%s\" is not supported by "
				"host %s (it supports \"zstd\")",
				compress, m->cfg->host);
	if (version) {
		char buf[8];
		const char *dot = strchr(version, '.');

		if (!dot || (size_t)(dot - version) >= sizeof(buf))
			return ferr_set(err, FERR_INVALID,
					"prepare.version must be "
					"\"MAJOR.MINOR\"");
		memcpy(buf, version, (size_t)(dot - version));
		buf[dot - version] = '\0';
		if (parse_u64(buf, 0, 1000, &major) < 0 ||
		    major != PREPARE_VERSION_MAJOR)
			return ferr_set(err, FERR_INVALID,
					"prepare version %s is not understood "
					"by this host (major version %d)",
					version, PREPARE_VERSION_MAJOR);
	}
	if (!mig || !source || !requester || !json_object_get(body, "vm"))
		return ferr_set(err, FERR_INVALID,
				"prepare needs migration, source, requester "
				"and vm");
	if (strlen(mig) != MIG_ID_HEX_LEN ||
	    hex_decode(mig, bin, sizeof(bin)) < 0)
		return ferr_set(err, FERR_INVALID,
				"prepare.migration must be %d hex digits",
				MIG_ID_HEX_LEN);
	if (!name_is_valid(requester))
		return ferr_set(err, FERR_INVALID,
				"prepare.requester must be an identity name");
	if (strcmp(source, peer) != 0)
		return ferr_set(err, FERR_FORBIDDEN,
				"%s may not prepare a migration on behalf of "
				"%s",
				peer, source);
	if (vmdef_from_json(json_object_get(body, "vm"), &p->def, err) < 0)
		return -1;
	if (postcopy && multifd)
		return ferr_set(err, FERR_INVALID,
				"post-copy runs without multifd");
	{
		struct policy_vm pvm = { p->def.name, p->def.labels,
					 p->def.nlabels };
		struct policy_decision d;

		policy_check_in(*m->deps.policy, requester, &pvm, source, &d);
		mig_audit(m, peer, "policy.decision", p->def.name,
			  d.allow ? "allow" : "deny",
			  json_pack("{s:s, s:s, s:s, s:s, s:s}", "check",
				    "migrate_in", "from", source, "requester",
				    requester, "rule", d.rule, "reason",
				    d.reason));
		if (!d.allow)
			return ferr_set(err, FERR_FORBIDDEN,
					"host %s refuses: %s", m->cfg->host,
					d.reason);
		if (insecure && (!m->cfg->allow_plaintext || !d.plaintext)) {
			ferr_set(err, FERR_FORBIDDEN,
				 "host %s refuses a plaintext migration: %s",
				 m->cfg->host,
				 !m->cfg->allow_plaintext
					 ? "its migration.allow_plaintext is "
					   "off"
					 : "the rule that allows this move "
					   "does not say \"plaintext\": "
					   "\"allow\"");
			mig_audit(m, peer, "migration.refused", p->def.name,
				  "plaintext",
				  json_pack("{s:s}", "reason", err->msg));
			return -1;
		}
		if (insecure)
			mig_audit(m, peer, "migration.plaintext", p->def.name,
				  "allow",
				  json_pack("{s:s, s:s}", "from", source,
					    "rule", d.rule));
	}
	/* 1.1: attestation in prepare, and the VM's own constraints */
	p->quote = json_object_get(body, "attest") != NULL;
	if (p->quote &&
	    migrator_attest_request(m, json_object_get(body, "attest"),
				    "prepare.attest", mig, exporter, p->nonce,
				    err) < 0)
		return -1;
	if (mig_constraints_check(m, &p->def, requester, p->quote, err) < 0) {
		mig_audit(m, peer, "policy.decision", p->def.name, "deny",
			  json_pack("{s:s, s:s, s:s, s:s}", "check",
				    "vm_constraints", "from", source,
				    "requester", requester, "reason",
				    err->msg));
		return -1;
	}
	/* 1.2: the VM's firewall (its own or its source's default) */
	if (mig_ctx_prepare(m, json_object_get(body, "firewall"), peer,
			    &p->def, s, err) < 0)
		return -1;
	snprintf(s->migration, sizeof(s->migration), "%s", mig);
	snprintf(s->source, sizeof(s->source), "%s", source);
	snprintf(s->requester, sizeof(s->requester), "%s", requester);
	snprintf(s->vm, sizeof(s->vm), "%s", p->def.name);
	snprintf(s->uuid, sizeof(s->uuid), "%s", p->def.uuid);
	s->nchan = (uint16_t)(1 + multifd);
	s->insecure = insecure;
	s->postcopy = postcopy;
	s->frames = compress != NULL;
	s->max_time_s = p->def.max_time_s;
	p->multifd = (unsigned)multifd;
	p->theirs = json_incref(json_object_get(body, "files"));
	return 0;
}

int migrator_prepare(struct migrator *m, const json_t *body,
		     const char *peer, const unsigned char *exporter,
		     mig_reply_fn fn, void *ctx, struct ferr *err)
{
	struct prep *p = NULL;

	if (m->stopping)
		return ferr_set(err, FERR_UNAVAILABLE,
				"ferryd is shutting down");
	if (session_count(&m->sessions) >= m->cfg->max_incoming) {
		ferr_set(err, FERR_RATE,
			 "host %s already receives %u migration(s) "
			 "(migration.max_incoming); try again when one ends",
			 m->cfg->host, m->cfg->max_incoming);
		mig_audit(m, peer, "migration.refused", "-", "limit",
			  json_pack("{s:s}", "reason", err->msg));
		return -1;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	p->m = m;
	p->fn = fn;
	p->ctx = ctx;
	p->s = session_new(&m->sessions, err);
	if (!p->s)
		goto fail;
	p->s->m = m;
	if (prepare_check(m, body, peer, exporter, p, err) < 0 ||
	    vmm_check_unique(m->vmm, &p->def, err) < 0 ||
	    vmm_check_files(m->vmm, &p->def, err) < 0 ||
	    fmt_checked(p->s->in_sock, sizeof(p->s->in_sock), err,
			"socket path", "%s/run/%s.in", m->cfg->state_dir,
			p->s->id) < 0 ||
	    worker_submit(m->deps.pool, prep_hash, prep_hashed, p, err) < 0)
		goto fail;
	return 0;
fail:
	if (p->s) {
		session_end(&m->sessions, p->s, IN_FAILED);
		session_put(&m->sessions, p->s);
	}
	OPENSSL_cleanse(p->nonce, sizeof(p->nonce));
	json_decref(p->theirs);
	free(p);
	return -1;
}

