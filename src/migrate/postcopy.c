/* postcopy.c - recovery of a post-copy migration whose stream broke (a
 * ferryd restarted, the link was cut): the VM already runs on the
 * destination and pulls its missing pages from the source, so neither
 * side may give up. QEMU pauses both ends ("postcopy-paused"); the source
 * asks the destination to listen again (QEMU's migrate-recover) through a
 * new one-channel session, carries that channel like any other, and tells
 * its QEMU to resume the migration. docs/migration-protocol.md,
 * "Post-copy recovery". */
#define _GNU_SOURCE
#include "migrate_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define RECOVERY_DIAL_MS 30000   /* retries of one recovery channel */
#define RECOVERY_DIAL_MIN_MS 500 /* its first backoff, doubling */
#define RECOVERY_RESUME_MS 10000 /* QEMU takes the channel within */

/* ---- the destination ---- */

struct recov {
	struct migrator *m;
	struct in_session *s; /* the new session, a reference */
	mig_reply_fn fn;
	void *ctx;
};

/* Worker: listen again. Out of band, and with no query first: the VM's
 * QEMU may be blocked on a page that only the new stream brings. QEMU
 * refuses unless its post-copy is paused. */
static int recover_setup(struct qmp *q, void *arg, struct ferr *err)
{
	struct recov *r = arg;
	char uri[FERRY_SOCK_PATH_MAX + 8];

	snprintf(uri, sizeof(uri), "unix:%s", vm_run_name(r->s->in_sock));
	return qmp_command_oob(q, "migrate-recover",
			       json_pack("{s:s}", "uri", uri), NULL, err);
}

static void on_session_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct in_session *s = arg;

	(void)fd;
	(void)what;
	event_free(s->timer);
	s->timer = NULL;
	if (session_end(&s->m->sessions, s, IN_ABORTED))
		unlink(s->in_sock);
}

static void on_recover_ready(void *arg, struct vm *vm, int rc,
			     const struct ferr *err)
{
	struct recov *r = arg;
	struct in_session *s = r->s;
	struct migrator *m = r->m;
	struct timeval tv = { .tv_sec = (time_t)(s->max_time_s +
						  MIG_SESSION_GRACE_S) };
	char keyhex[2 * MIG_KEY_LEN + 1];
	struct ferr e2;

	if (rc < 0 || !vm) {
		if (session_end(&m->sessions, s, IN_FAILED))
			unlink(s->in_sock);
		r->fn(r->ctx, -1, NULL,
		      err ? err
			  : &(struct ferr){ FERR_NOT_FOUND, "the VM is gone" });
		goto out;
	}
	s->timer = evtimer_new(m->base, on_session_timeout, s);
	if (!s->timer || evtimer_add(s->timer, &tv) < 0 ||
	    session_advance(&m->sessions, s, IN_PREPARING, IN_PREPARED, &e2) <
		    0) {
		if (s->timer) {
			event_free(s->timer);
			s->timer = NULL;
		}
		if (session_end(&m->sessions, s, IN_FAILED))
			unlink(s->in_sock);
		r->fn(r->ctx, -1, NULL, &e2);
		goto out;
	}
	hex_encode(s->key, sizeof(s->key), keyhex);
	log_info("migration %s of vm %s: post-copy recovery from %s through "
		 "session %s",
		 s->migration, s->vm, s->source, s->id);
	mig_audit(m, s->source, "migration.recover", s->vm, "ok",
		  json_pack("{s:s, s:s}", "id", s->migration, "session",
			    s->id));
	r->fn(r->ctx, 0,
	      json_pack("{s:s, s:s, s:s, s:i}", "id", s->id, "key", keyhex,
			"data_address", m->cfg->advertise_addr, "data_port",
			(int)m->cfg->advertise_port),
	      NULL);
	OPENSSL_cleanse(keyhex, sizeof(keyhex));
out:
	session_put(&m->sessions, s);
	free(r);
}

/* The VM that committed session id brought here from peer, its source,
 * while its QEMU runs; *rec gets the session's journal record (a new
 * reference, or NULL). NULL with FERR_NOT_FOUND (no such committed session
 * or running VM) or FERR_FORBIDDEN (another source's). Loop. */
static struct vm *committed_vm(struct migrator *m, const char *id,
			       const char *peer, json_t **rec,
			       struct ferr *err)
{
	struct ferr e2;
	const char *phase, *src;
	struct vm *vm;

	*rec = journal_read(m->journal_dir, JOURNAL_DEST, id, &e2);
	phase = json_string_value(json_object_get(*rec, "phase"));
	src = json_string_value(json_object_get(*rec, "source"));
	if (!phase || (strcmp(phase, "committed") != 0 &&
		       strcmp(phase, "committing") != 0)) {
		ferr_set(err, FERR_NOT_FOUND,
			 "no committed migration %s on this host", id);
		return NULL;
	}
	if (!src || strcmp(src, peer) != 0) {
		ferr_set(err, FERR_FORBIDDEN,
			 "migration %s belongs to %s, not %s", id,
			 src ? src : "?", peer);
		return NULL;
	}
	vm = vmm_find_uuid(m->vmm, json_string_value(
					   json_object_get(*rec, "uuid")) ?: "");
	if (!vm || vm->incoming || !vm->qmp) {
		ferr_set(err, FERR_NOT_FOUND,
			 "the VM of migration %s does not run here any more",
			 id);
		return NULL;
	}
	return vm;
}

int migrator_recover(struct migrator *m, const char *id, const char *peer,
		     mig_reply_fn fn, void *ctx, struct ferr *err)
{
	json_t *rec = NULL;
	struct recov *r = NULL;
	struct vm *vm;
	int rc = -1;

	if (m->stopping) {
		ferr_set(err, FERR_UNAVAILABLE, "ferryd is shutting down");
		goto out;
	}
	vm = committed_vm(m, id, peer, &rec, err);
	if (!vm)
		goto out;
	r = calloc(1, sizeof(*r));
	if (!r || !(r->s = session_new(&m->sessions, err))) {
		if (r)
			goto out;
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	r->m = m;
	r->fn = fn;
	r->ctx = ctx;
	r->s->m = m;
	r->s->recovery = true;
	r->s->postcopy = true;
	r->s->nchan = 1;
	r->s->max_time_s = vm->def.max_time_s;
	snprintf(r->s->migration, sizeof(r->s->migration), "%s",
		 json_string_value(json_object_get(rec, "migration")) ?: id);
	snprintf(r->s->source, sizeof(r->s->source), "%s", peer);
	snprintf(r->s->requester, sizeof(r->s->requester), "%s", peer);
	snprintf(r->s->vm, sizeof(r->s->vm), "%s", vm->def.name);
	snprintf(r->s->uuid, sizeof(r->s->uuid), "%s", vm->def.uuid);
	if (fmt_checked(r->s->in_sock, sizeof(r->s->in_sock), err,
			"socket path", "%s/run/%s.in", m->cfg->state_dir,
			r->s->id) < 0 ||
	    vm_run_qmp(vm, "migrate-recover", recover_setup, r,
		       on_recover_ready, err) < 0)
		goto out;
	r = NULL;
	rc = 0;
out:
	if (r) {
		if (r->s) {
			session_end(&m->sessions, r->s, IN_FAILED);
			session_put(&m->sessions, r->s);
		}
		free(r);
	}
	json_decref(rec);
	return rc;
}

/* ---- the destination: the source lost its copy ---- */

int migrator_source_lost(struct migrator *m, const char *id,
			 const char *peer, json_t **reply, struct ferr *err)
{
	struct ferr e2;
	json_t *rec = NULL;
	const char *outcome = "whole";
	struct vm *vm = committed_vm(m, id, peer, &rec, err);
	int rc = -1;

	if (!vm)
		goto out;
	/* QEMU's own word (its MIGRATION events): its monitor may hang
	 * while a vCPU waits for a page that will never come */
	if (!strncmp(vm->mig_status, "postcopy-", 9)) {
		outcome = "crashed";
		snprintf(vm->last_error, sizeof(vm->last_error),
			 "crashed: the source of post-copy migration %s lost "
			 "its half of the VM's memory",
			 id);
		log_error("vm %s: %s", vm->def.name, vm->last_error);
		mig_audit(m, peer, "vm.crashed", vm->def.name, "crashed",
			  json_pack("{s:s, s:s}", "id", id, "reason",
				    "post-copy source lost"));
		if (vm->state != VM_STOPPING &&
		    vmm_stop(m->vmm, vm, true, 0, NULL, NULL, &e2) < 0)
			log_error("vm %s: %s", vm->def.name, e2.msg);
	}
	*reply = json_pack("{s:s, s:s}", "id", id, "outcome", outcome);
	rc = 0;
out:
	json_decref(rec);
	return rc;
}

/* ---- the source ---- */

/* Dial the recovery channel of g's new session, retrying with backoff up
 * to RECOVERY_DIAL_MS: a handshake that failed (a flipped byte, a cut)
 * before the destination took the HELLO leaves the session and QEMU's
 * listener there as they were. Done before QEMU is told to resume, so
 * that a failure leaves it in postcopy-paused, where it can be told again
 * (QEMU 7.2 wedges when the stream breaks inside its resume handshake). */
static int recovery_dial(struct mig *g, struct ferr *err)
{
	uint64_t deadline = now_ms() + RECOVERY_DIAL_MS;
	unsigned wait_ms = RECOVERY_DIAL_MIN_MS;

	for (;;) {
		if (mig_dial(g, 0, &g->ready, err) == 0)
			return 0;
		log_warn("migration %s of vm %s: recovery channel: %s; again "
			 "in %u ms",
			 g->id, g->def.name, err->msg, wait_ms);
		if (now_ms() + wait_ms >= deadline)
			return -1;
		for (uint64_t until = now_ms() + wait_ms; now_ms() < until;) {
			if (atomic_load(&g->m->stop))
				return ferr_set(err, FERR_UNAVAILABLE,
						"ferryd is stopping");
			usleep(100 * 1000);
		}
		wait_ms *= 2;
	}
}

/* QEMU leaves postcopy-paused only when its new channel is connected,
 * asynchronously, after `migrate` returned: wait for that, so that the
 * monitor does not take the state it had for a new break. */
static int wait_resumed(struct qmp *q, struct ferr *err)
{
	uint64_t deadline = now_ms() + RECOVERY_RESUME_MS;

	while (now_ms() < deadline) {
		json_t *qm = NULL;
		bool paused;

		if (qmp_command(q, "query-migrate", NULL, &qm, err) < 0)
			return -1;
		paused = !strcmp(json_string_value(json_object_get(
					 qm, "status")) ?: "",
				 "postcopy-paused");
		json_decref(qm);
		if (!paused)
			return 0;
		usleep(50 * 1000);
	}
	return ferr_set(err, FERR_TIMEOUT,
			"QEMU did not take the recovery channel");
}

/* Have the destination end recovery session g->rsession, which will
 * carry nothing (best effort: it ends by itself at its time bound). */
static void drop_rsession(struct mig *g)
{
	struct ferr e2;

	if (!g->rsession[0])
		return;
	if (peer_finish(g->m, &g->peer, g->rsession, true, &e2) !=
	    PEER_COMMITTED)
		log_warn("migration %s: ending recovery session %s: %s", g->id,
			 g->rsession, e2.msg);
	g->rsession[0] = '\0';
}

int pc_resume(struct mig *g, struct qmp *q, struct ferr *err)
{
	unsigned backoff = MIG_RESOLVE_MIN_S;

	for (;;) {
		struct peer_session ps = { 0 };
		char uri[FERRY_SOCK_PATH_MAX + 8];
		int rc;

		/* the old channels ended with their connection */
		channels_finish(g);
		drop_rsession(g);
		rc = peer_recover(g->m, &g->peer, g->session, &ps, err);
		if (rc == 0) {
			memcpy(g->rsession, ps.id, sizeof(g->rsession));
			hex_decode(ps.id, g->sid, sizeof(g->sid));
			memcpy(g->key, ps.key, sizeof(g->key));
			OPENSSL_cleanse(ps.key, sizeof(ps.key));
			snprintf(g->data_addr, sizeof(g->data_addr), "%s",
				 ps.data_addr);
			g->data_port = ps.data_port;
			g->nchan = 1;
			/* a recovery session carries no frames */
			g->plan.z = RELAY_Z_OFF;
			/* the channel is up before QEMU hears of it; its
			 * socket is named by channels_start */
			if (recovery_dial(g, err) == 0 &&
			    channels_start(g, err) == 0 &&
			    snprintf(uri, sizeof(uri), "unix:%s",
				     vm_run_name(g->out_sock)) > 0 &&
			    qmp_command(q, "migrate",
					json_pack("{s:s, s:b}", "uri", uri,
						  "resume", 1),
					NULL, err) == 0 &&
			    wait_resumed(q, err) == 0) {
				g->recoveries++;
				mig_rec_set(g, "postcopy_recoveries",
					    json_integer(g->recoveries));
				log_info("migration %s of vm %s: post-copy "
					 "resumed (recovery %u)",
					 g->id, g->def.name, g->recoveries);
				return 0;
			}
		} else if (err->code == FERR_NOT_FOUND ||
			   err->code == FERR_FORBIDDEN) {
			/* the destination says it cannot: the VM is gone
			 * there (its QEMU crashed) */
			return -1;
		}
		OPENSSL_cleanse(ps.key, sizeof(ps.key));
		log_warn("migration %s of vm %s: post-copy recovery: %s; "
			 "again in %u s",
			 g->id, g->def.name, err->msg, backoff);
		for (uint64_t until = now_ms() + 1000ULL * backoff;
		     now_ms() < until;) {
			if (atomic_load(&g->m->stop))
				return ferr_set(err, FERR_UNAVAILABLE,
						"ferryd is stopping");
			usleep(100 * 1000);
		}
		backoff = backoff * 2 > MIG_RESOLVE_MAX_S ? MIG_RESOLVE_MAX_S
							  : backoff * 2;
	}
}
