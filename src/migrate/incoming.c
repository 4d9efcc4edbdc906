/* incoming.c - the destination side of a migration on the loop's thread:
 * finish and abort of sessions, and their records (prepare: inprepare.c).
 * Every wait for QEMU runs on a worker thread; each step's result comes
 * back to the loop and the API's answer follows through a mig_reply_fn. */
#define _GNU_SOURCE
#include "migrate_int.h"
#include "fault.h"
#include "audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FINISH_POLL_US (10 * 1000)

/* ---- records ---- */

int incoming_journal(struct migrator *m, const struct in_session *s,
		     const char *phase, bool resume, struct ferr *err)
{
	json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:I}",
				"phase", phase, "migration", s->migration,
				"source", s->source, "requester", s->requester,
				"vm", s->vm, "uuid", s->uuid, "resume", resume,
				"started_at", (json_int_t)s->created_wall_ms);
	int rc;

	if (!rec)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	rc = journal_write(m->journal_dir, JOURNAL_DEST, s->id, rec, err);
	json_decref(rec);
	return rc;
}

/* A destination-side history entry and its audit record. */
static void history_in(struct migrator *m, const struct in_session *s,
		       const char *outcome, const char *error)
{
	/* the source's migration id, so both hosts name it alike */
	json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, "
				"s:I}",
				"id", s->migration, "session", s->id, "role",
				"destination", "vm", s->vm, "uuid", s->uuid,
				"source", s->source, "started_at",
				(json_int_t)s->created_wall_ms, "ended_at",
				(json_int_t)wall_ms(), "wire_bytes",
				(json_int_t)atomic_load(&s->ctr.wire));

	if (rec) {
		json_object_set_new(rec, "outcome", json_string(outcome));
		if (error)
			json_object_set_new(rec, "error", json_string(error));
		history_add(&m->history, rec);
		mig_stats_note(m, rec);
	}
	json_decref(rec);
	mig_audit(m, s->source, "migration.end", s->vm, outcome,
		  json_pack("{s:s, s:s, s:s, s:s, s:s*}", "id", s->migration,
			    "session", s->id, "role", "destination", "from",
			    s->source, "error", error));
}

/* The incoming VM of session s, or NULL. */
static struct vm *session_vm(struct migrator *m, const struct in_session *s)
{
	struct vm *vm = vmm_find(m->vmm, s->vm);

	if (vm && vm->incoming && !strcmp(vm->hold.owner, s->id))
		return vm;
	return NULL;
}

/* End s as aborted or failed: record it, discard its VM. Nothing when it
 * has ended already. Loop. */
static void session_abort(struct migrator *m, struct in_session *s,
			  enum in_state st, const char *why)
{
	struct vm *vm = session_vm(m, s);
	struct ferr err;

	if (s->timer) {
		event_free(s->timer);
		s->timer = NULL;
	}
	if (!session_end(&m->sessions, s, st))
		return;
	/* QEMU removes its listening socket only when it closes it cleanly,
	 * not when it exits on a failed load or is killed */
	unlink(s->in_sock);
	log_info("incoming migration %s of vm %s: %s: %s", s->id, s->vm,
		 in_state_name(st), why);
	if (s->recovery)
		return; /* it carried a committed VM's stream: nothing to undo */
	if (incoming_journal(m, s, "aborted", false, &err) < 0)
		log_error("incoming migration %s: %s", s->id, err.msg);
	history_in(m, s, "failed", why);
	if (vm)
		vmm_incoming_discard(m->vmm, vm);
}

void incoming_session_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct in_session *s = arg;
	struct migrator *m = s->m;

	(void)fd;
	(void)what;
	event_free(s->timer);
	s->timer = NULL;
	session_abort(m, s, IN_ABORTED,
		      "the source never finished the migration");
}

void incoming_vm_exited(struct migrator *m, struct vm *vm)
{
	struct in_session *s = session_get(&m->sessions, vm->hold.owner);

	if (!s)
		return;
	if (s->committing) {
		/* QEMU may have run the VM: it stays this host's, crashed */
		struct ferr err;

		vmm_incoming_adopt(m->vmm, vm, &err);
		log_error("incoming migration %s: QEMU exited while the VM "
			  "was being resumed: the VM crashed on this host",
			  s->id);
	} else {
		log_warn("incoming migration %s of vm %s: QEMU exited", s->id,
			 s->vm);
		session_abort(m, s, IN_FAILED, "the destination QEMU exited");
	}
	session_put(&m->sessions, s);
}

void incoming_abort_all(struct migrator *m)
{
	struct in_session *s;

	while ((s = session_first(&m->sessions))) {
		if (s->stream_fn) {
			session_end(&m->sessions, s, IN_ABORTED);
		} else if (s->state == IN_FINISHING && s->committing) {
			/* its commit ends on its own; it is no longer ours
			 * to abort */
			session_end(&m->sessions, s, IN_COMMITTED);
		} else {
			session_abort(m, s, IN_ABORTED,
				      "ferryd is shutting down");
		}
		session_put(&m->sessions, s);
	}
}

/* ---- finish ---- */

struct fin {
	struct migrator *m;
	struct in_session *s;  /* a reference */
	bool resume;
	mig_reply_fn fn;
	void *ctx;
};

static void fin_end(struct fin *f, int rc, json_t *reply,
		    const struct ferr *err)
{
	f->fn(f->ctx, rc, reply, err);
	session_put(&f->m->sessions, f->s);
	free(f);
}

/* Worker: wait until the destination QEMU has loaded the migration (or,
 * in post-copy, switched over). */
static int wait_loaded(struct qmp *q, void *arg, struct ferr *err)
{
	struct fin *f = arg;
	uint64_t deadline = now_ms() + MIG_FINISH_WAIT_MS;

	for (;;) {
		json_t *ret = NULL;
		const char *st;

		if (qmp_command(q, "query-migrate", NULL, &ret, err) < 0)
			return -1;
		st = json_string_value(json_object_get(ret, "status")) ?: "";
		if (!strcmp(st, "completed") ||
		    (f->s->postcopy && !strcmp(st, "postcopy-active"))) {
			json_decref(ret);
			return 0;
		}
		if (!strcmp(st, "failed") || !strcmp(st, "cancelled")) {
			ferr_set(err, FERR_UNAVAILABLE,
				 "the destination QEMU's migration %s", st);
			json_decref(ret);
			return -1;
		}
		json_decref(ret);
		if (now_ms() >= deadline)
			return ferr_set(err, FERR_TIMEOUT,
					"the destination QEMU has not loaded "
					"the VM after %d ms",
					MIG_FINISH_WAIT_MS);
		usleep(FINISH_POLL_US);
	}
}

static void on_committed(void *arg, struct vm *vm, int rc,
			 const struct ferr *err)
{
	struct fin *f = arg;
	struct migrator *m = f->m;
	struct in_session *s = f->s;
	struct ferr e2;
	json_t *reply;

	if (!vm || vm->incoming) {
		/* QEMU refused to resume and does not run the VM: the
		 * source keeps it */
		session_abort(m, s, IN_FAILED,
			      err ? err->msg : "the VM is gone");
		fin_end(f, -1, NULL,
			err ? err
			    : &(struct ferr){ FERR_UNAVAILABLE,
					      "the incoming VM is gone" });
		return;
	}
	/* the VM runs here (or crashed here after it might have): committed,
	 * whatever else fails now */
	if (incoming_journal(m, s, "committed", f->resume, &e2) < 0)
		log_error("incoming migration %s: %s (the committing record "
			  "stands)",
			  s->id, e2.msg);
	if (s->timer) {
		event_free(s->timer);
		s->timer = NULL;
	}
	session_end(&m->sessions, s, IN_COMMITTED);
	/* QEMU took its channels; it removes the socket only when it closes
	 * it cleanly, which a VM killed later (in post-copy) never does */
	unlink(s->in_sock);
	history_in(m, s, "completed", rc < 0 && err ? err->msg : NULL);
	vm_release(vm, s->id);
	fault_point("dst.committed");
	reply = vm_to_json(vm);
	json_object_set_new(reply, "committed", json_true());
	fin_end(f, 0, reply, NULL);
}

static void on_loaded(void *arg, struct vm *vm, int rc,
		      const struct ferr *err)
{
	struct fin *f = arg;
	struct migrator *m = f->m;
	struct in_session *s = f->s;
	struct ferr e2;

	if (s->state != IN_FINISHING) {
		/* ended meanwhile (QEMU exited, a stop) */
		ferr_set(&e2, FERR_UNAVAILABLE, "migration %s is %s", s->id,
			 in_state_name(s->state));
		fin_end(f, -1, NULL, &e2);
		return;
	}
	if (rc < 0 || !vm) {
		struct ferr cp = err ? *err
				     : (struct ferr){ FERR_UNAVAILABLE,
						      "the incoming VM is gone" };

		session_abort(m, s, IN_FAILED, cp.msg);
		fin_end(f, -1, NULL, &cp);
		return;
	}
	/* the point of no return: once the journal says committing, a
	 * restart finishes the commit rather than give the VM back */
	if (incoming_journal(m, s, "committing", f->resume, &e2) < 0) {
		session_abort(m, s, IN_FAILED, e2.msg);
		fin_end(f, -1, NULL, &e2);
		return;
	}
	s->committing = true;
	fault_point("dst.committing");
	if (vmm_incoming_commit(m->vmm, vm, f->resume, on_committed, f,
				&e2) < 0) {
		/* nothing was queued: QEMU was not asked to resume */
		s->committing = false;
		session_abort(m, s, IN_FAILED, e2.msg);
		fin_end(f, -1, NULL, &e2);
	}
}

/* The answer for a session that is no longer live, from its journal. */
static int ended_reply(struct migrator *m, const char *id, const char *peer,
		       bool finish, json_t **reply, struct ferr *err)
{
	struct ferr e2;
	json_t *rec = journal_read(m->journal_dir, JOURNAL_DEST, id, &e2);
	const char *phase = json_string_value(json_object_get(rec, "phase"));
	const char *src = json_string_value(json_object_get(rec, "source"));
	const char *vm = json_string_value(json_object_get(rec, "vm"));
	int rc = 0;

	if (rec && src && strcmp(src, peer) != 0) {
		rc = ferr_set(err, FERR_FORBIDDEN,
			      "migration %s belongs to %s, not %s", id, src,
			      peer);
	} else if (phase && (!strcmp(phase, "committed") ||
			     !strcmp(phase, "committing"))) {
		*reply = json_pack("{s:s, s:s?, s:s, s:s, s:b}", "id", id,
				   "vm", vm, "state", "committed", "outcome",
				   "committed", "committed", 1);
	} else if (finish) {
		rc = ferr_set(err, FERR_CONFLICT,
			      "migration %s was not committed on %s and never "
			      "will be",
			      id, m->cfg->host);
	} else {
		/* aborted, or never prepared here (or long forgotten) */
		*reply = json_pack("{s:s, s:s?, s:s, s:s}", "id", id, "vm", vm,
				   "state", rec ? "aborted" : "unknown",
				   "outcome", "not_committed");
	}
	json_decref(rec);
	if (rc == 0 && !*reply)
		rc = ferr_set(err, FERR_INTERNAL, "out of memory");
	return rc;
}

/* The live session id prepared by peer, with a reference, or NULL (err
 * set only when it is live but not peer's). */
static struct in_session *live_session(struct migrator *m, const char *id,
				       const char *peer, struct ferr *err)
{
	struct in_session *s = session_get(&m->sessions, id);

	if (s && strcmp(s->source, peer) != 0) {
		ferr_set(err, FERR_FORBIDDEN,
			 "migration %s belongs to %s, not %s", id, s->source,
			 peer);
		session_put(&m->sessions, s);
		return NULL;
	}
	return s;
}

/* A reply of a finish answered at once, delivered like the others. */
struct now_reply {
	mig_reply_fn fn;
	void *ctx;
	json_t *reply;
};

static void on_now_reply(evutil_socket_t fd, short what, void *arg)
{
	struct now_reply *r = arg;

	(void)fd;
	(void)what;
	r->fn(r->ctx, 0, r->reply, NULL);
	free(r);
}

/* Answer reply (taken) through fn from the loop, after this returns. */
static int now_reply(struct migrator *m, mig_reply_fn fn, void *ctx,
		     json_t *reply, struct ferr *err)
{
	struct now_reply *r = calloc(1, sizeof(*r));

	if (!r || event_base_once(m->base, -1, EV_TIMEOUT, on_now_reply, r,
				  &(struct timeval){ 0 }) < 0) {
		free(r);
		json_decref(reply);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	*r = (struct now_reply){ fn, ctx, reply };
	return 0;
}

int migrator_finish(struct migrator *m, const char *id, const json_t *body,
		    const char *peer, mig_reply_fn fn, void *ctx,
		    struct ferr *err)
{
	static const char *const fields[] = { "resume", NULL };
	struct ferr e2 = { 0 };
	struct in_session *s = live_session(m, id, peer, &e2);
	struct fin *f;
	struct vm *vm;
	bool resume = true;

	if (body && (json_check_fields(body, fields, "finish", err) < 0 ||
		     json_get_bool(body, "resume", "finish", &resume, err) <
			     0)) {
		session_put(&m->sessions, s);
		return -1;
	}
	if (!s) {
		json_t *reply = NULL;

		if (e2.code)
			return ferr_set(err, e2.code, "%s", e2.msg);
		if (ended_reply(m, id, peer, true, &reply, err) < 0)
			return -1;
		return now_reply(m, fn, ctx, reply, err);
	}
	if (session_advance(&m->sessions, s, IN_PREPARED, IN_FINISHING, err) <
	    0) {
		session_put(&m->sessions, s);
		return -1;
	}
	if (s->recovery) {
		/* a post-copy recovery's stream ended: its VM was committed
		 * long ago; the session just ends */
		struct vm *rvm = vmm_find_uuid(m->vmm, s->uuid);
		json_t *reply = rvm ? vm_to_json(rvm) : json_object();

		if (s->timer) {
			event_free(s->timer);
			s->timer = NULL;
		}
		session_end(&m->sessions, s, IN_COMMITTED);
		unlink(s->in_sock); /* in case QEMU never took it */
		session_put(&m->sessions, s);
		json_object_set_new(reply, "committed", json_true());
		return now_reply(m, fn, ctx, reply, err);
	}
	vm = session_vm(m, s);
	f = calloc(1, sizeof(*f));
	if (!vm || !f) {
		free(f);
		session_abort(m, s, IN_FAILED,
			      vm ? "out of memory" : "its VM is gone");
		session_put(&m->sessions, s);
		return ferr_set(err, FERR_UNAVAILABLE,
				"the incoming VM of migration %s is gone", id);
	}
	*f = (struct fin){ .m = m, .s = s, .resume = resume, .fn = fn,
			   .ctx = ctx };
	fault_point("dst.loading");
	if (vm_run_qmp(vm, "load", wait_loaded, f, on_loaded, err) < 0) {
		session_advance(&m->sessions, s, IN_FINISHING, IN_PREPARED,
				&e2);
		session_put(&m->sessions, s);
		free(f);
		return -1;
	}
	return 0;
}

/* ---- abort, query ---- */

int migrator_abort(struct migrator *m, const char *id, const json_t *body,
		   const char *peer, json_t **reply, struct ferr *err)
{
	static const char *const fields[] = { "reason", NULL };
	struct ferr e2 = { 0 };
	struct in_session *s;
	const char *reason = NULL;
	char why[FERRY_ERR_MSG_MAX];

	if (body && (json_check_fields(body, fields, "abort", err) < 0 ||
		     json_get_string(body, "reason", "abort",
				     FERRY_ERR_MSG_MAX, &reason, err) < 0))
		return -1;
	snprintf(why, sizeof(why), "aborted by the source%s%s",
		 reason ? ": " : "", reason ? reason : "");
	for (char *c = why; *c; c++)   /* the peer's text, for logs */
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	s = live_session(m, id, peer, &e2);
	if (!s) {
		if (e2.code)
			return ferr_set(err, e2.code, "%s", e2.msg);
		if (ended_reply(m, id, peer, false, reply, err) < 0)
			return -1;
		if (!strcmp(json_string_value(json_object_get(*reply,
							      "outcome")),
			    "committed")) {
			json_decref(*reply);
			*reply = NULL;
			return ferr_set(err, FERR_CONFLICT,
					"migration %s is finished: the VM runs "
					"here",
					id);
		}
		return 0;
	}
	if (s->state == IN_FINISHING) {
		session_put(&m->sessions, s);
		return ferr_set(err, FERR_CONFLICT,
				"migration %s is being finished", id);
	}
	session_abort(m, s, IN_ABORTED, why);
	*reply = json_pack("{s:s, s:s, s:s, s:s}", "id", id, "vm", s->vm,
			   "state", "aborted", "outcome", "not_committed");
	session_put(&m->sessions, s);
	return 0;
}

int migrator_incoming_get(struct migrator *m, const char *id,
			  const char *peer, json_t **reply, struct ferr *err)
{
	struct ferr e2 = { 0 };
	struct in_session *s = live_session(m, id, peer, &e2);

	if (!s) {
		if (e2.code)
			return ferr_set(err, e2.code, "%s", e2.msg);
		return ended_reply(m, id, peer, false, reply, err);
	}
	*reply = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", s->id, "vm",
			   s->vm, "source", s->source, "state",
			   in_state_name(s->state), "outcome", "pending");
	session_put(&m->sessions, s);
	return *reply ? 0 : ferr_set(err, FERR_INTERNAL, "out of memory");
}
