/* recover.c - after a restart, every migration the journal holds and every
 * VM QEMU left in a migration state is resolved by the rules of
 * docs/migration-protocol.md ("Recovery"): a source VM is resumed only on
 * the destination's explicit "never committed", a destination commit that
 * began is finished, anything unknown waits, paused and "unresolved",
 * while the resolver keeps asking the destination with backoff. */
#define _GNU_SOURCE
#include "migrate_int.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CANCEL_WAIT_MS 5000  /* a source QEMU's cancel, at start-up */
#define SETTLE_MS 20000      /* one resolver attempt */

/* ---- records ---- */

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k)) ?: "";
}

/* The peer of a source record. */
static int target_of(const json_t *rec, struct peer_target *t)
{
	const json_t *p = json_object_get(rec, "peer");
	json_int_t port = json_integer_value(json_object_get(p, "port"));

	memset(t, 0, sizeof(*t));
	if (!name_is_valid(jstr(p, "name")) || port < 1 || port > 65535 ||
	    strlen(jstr(p, "address")) >= sizeof(t->address) ||
	    !jstr(p, "address")[0])
		return -1;
	snprintf(t->name, sizeof(t->name), "%s", jstr(p, "name"));
	snprintf(t->address, sizeof(t->address), "%s", jstr(p, "address"));
	t->port = (uint16_t)port;
	return 0;
}

/* The end of a migration found by recovery: its history record and audit
 * record; the source's journal record goes. */
static void settle_record(struct migrator *m, const json_t *rec,
			  const char *outcome, const char *why)
{
	bool src = !strcmp(jstr(rec, "role"), "source");
	/* histories name a migration by the source's id on both hosts */
	const char *id = src ? jstr(rec, "id") : jstr(rec, "migration");
	json_t *h = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, "
			      "s:b}",
			      "id", id, "role", jstr(rec, "role"),
			      "vm", jstr(rec, "vm"), "uuid", jstr(rec, "uuid"),
			      "outcome", outcome, src ? "destination" : "source",
			      src ? jstr(json_object_get(rec, "peer"), "name")
				  : jstr(rec, "source"),
			      "started_at",
			      json_integer_value(json_object_get(rec,
								 "started_at")),
			      "ended_at", (json_int_t)wall_ms(), "error", why,
			      "recovered", 1);
	struct ferr err;

	if (h) {
		const char *session = src ? jstr(rec, "session")
					  : jstr(rec, "id");

		if (session[0])
			json_object_set_new(h, "session", json_string(session));
		history_add(&m->history, h);
		mig_stats_note(m, h);
	}
	json_decref(h);
	mig_audit(m, jstr(rec, "requester")[0] ? jstr(rec, "requester") : "-",
		  "migration.end", jstr(rec, "vm"), outcome,
		  json_pack("{s:s, s:s, s:s, s:b}", "id", id, "role",
			    jstr(rec, "role"), "reason", why, "recovered", 1));
	log_info("migration %s of vm %s (%s): %s after a restart: %s", id,
		 jstr(rec, "vm"), jstr(rec, "role"), outcome, why);
	if (src && journal_remove(m->journal_dir, JOURNAL_SOURCE,
				  jstr(rec, "id"), &err) < 0)
		log_error("migration %s: %s", jstr(rec, "id"), err.msg);
}

/* Rewrite a destination record at a new phase. */
static void dest_phase(struct migrator *m, const json_t *rec,
		       const char *phase)
{
	json_t *copy = json_deep_copy(rec);
	struct ferr err;

	json_object_set_new(copy, "phase", json_string(phase));
	if (journal_write(m->journal_dir, JOURNAL_DEST, jstr(rec, "id"), copy,
			  &err) < 0)
		log_error("incoming migration %s: %s", jstr(rec, "id"),
			  err.msg);
	json_decref(copy);
}

/* ---- aborts at the destination, retried ---- */

/* An abort the destination has not confirmed yet: retried with backoff
 * until it answers or MIG_ABORT_RETRY_S pass (its session expires there
 * by itself after that). The source's journal keeps the record ("aborting")
 * until then, so a restart goes on asking. */
struct aborter {
	struct migrator *m;
	struct peer_target t;
	char id[MIG_ID_HEX_LEN + 1];      /* the source's migration */
	char session[MIG_ID_HEX_LEN + 1];
	bool journalled;
	bool running;             /* an attempt runs on a worker thread */
	unsigned backoff_s;
	uint64_t until_ms;
	int rc;
	struct ferr err;
	struct event *timer;
	struct aborter *next;
};

static void aborter_free(struct migrator *m, struct aborter *a)
{
	struct ferr err;

	for (struct aborter **pp = &m->aborters; *pp; pp = &(*pp)->next) {
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	}
	if (a->journalled &&
	    journal_remove(m->journal_dir, JOURNAL_SOURCE, a->id, &err) < 0)
		log_error("migration %s: %s", a->id, err.msg);
	if (a->timer)
		event_free(a->timer);
	free(a);
}

static void abort_work(void *arg)
{
	struct aborter *a = arg;

	a->rc = peer_abort(a->m, &a->t, a->session, NULL, &a->err);
}

static void abort_try(evutil_socket_t fd, short what, void *arg);

static void abort_done(void *arg)
{
	struct aborter *a = arg;
	struct migrator *m = a->m;
	struct timeval tv;

	a->running = false;
	/* 404: the destination has no such session (any more): done too */
	if (a->rc == 0 || a->err.code == FERR_NOT_FOUND ||
	    a->err.code == FERR_CONFLICT) {
		log_info("migration %s: session %s at %s aborted", a->id,
			 a->session, a->t.name);
		aborter_free(m, a);
		return;
	}
	if (m->stopping || now_ms() >= a->until_ms) {
		/* a stop keeps the journal record for the next start */
		log_info("migration %s: session %s at %s: abort: %s (%s)",
			 a->id, a->session, a->t.name, a->err.msg,
			 m->stopping ? "ferryd stops"
				     : "it expires there by itself");
		if (m->stopping)
			a->journalled = false;
		aborter_free(m, a);
		return;
	}
	a->backoff_s = a->backoff_s ? a->backoff_s * 2 : MIG_RESOLVE_MIN_S;
	if (a->backoff_s > MIG_RESOLVE_MAX_S)
		a->backoff_s = MIG_RESOLVE_MAX_S;
	tv = (struct timeval){ .tv_sec = a->backoff_s };
	evtimer_add(a->timer, &tv);
}

static void abort_try(evutil_socket_t fd, short what, void *arg)
{
	struct aborter *a = arg;
	struct ferr err;

	(void)fd;
	(void)what;
	a->running = true;
	if (worker_submit(a->m->deps.pool, abort_work, abort_done, a,
			  &err) < 0) {
		a->rc = -1;
		a->err = err;
		abort_done(a);
	}
}

void recover_abort(struct migrator *m, const json_t *rec, bool journalled)
{
	struct aborter *a;

	if (strlen(jstr(rec, "session")) != MIG_ID_HEX_LEN) {
		/* prepare never answered: the session expires there */
		if (journalled)
			journal_remove(m->journal_dir, JOURNAL_SOURCE,
				       jstr(rec, "id"), &(struct ferr){ 0 });
		return;
	}
	a = calloc(1, sizeof(*a));
	if (!a || target_of(rec, &a->t) < 0 ||
	    !(a->timer = evtimer_new(m->base, abort_try, a))) {
		free(a);
		return;
	}
	a->m = m;
	a->journalled = journalled;
	a->until_ms = now_ms() + 1000ULL * MIG_ABORT_RETRY_S;
	snprintf(a->id, sizeof(a->id), "%s", jstr(rec, "id"));
	snprintf(a->session, sizeof(a->session), "%s", jstr(rec, "session"));
	a->next = m->aborters;
	m->aborters = a;
	evtimer_add(a->timer, &(struct timeval){ 0 });
}

/* ---- the resolver ---- */

static void resolver_ask(evutil_socket_t fd, short what, void *arg);

static void unresolved_free(struct unresolved *u)
{
	if (u->timer)
		event_free(u->timer);
	json_decref(u->jrec);
	free(u);
}

static void unresolved_unlink(struct migrator *m, struct unresolved *u)
{
	for (struct unresolved **pp = &m->unresolved; *pp;
	     pp = &(*pp)->next) {
		if (*pp == u) {
			*pp = u->next;
			return;
		}
	}
}

static void schedule(struct unresolved *u, unsigned secs)
{
	struct timeval tv = { .tv_sec = secs };

	evtimer_add(u->timer, &tv);
}

void recover_unresolved(struct migrator *m, json_t *jrec)
{
	struct unresolved *u = calloc(1, sizeof(*u));
	struct vm *vm = vmm_find_uuid(m->vmm, jstr(jrec, "uuid"));

	if (!u || !(u->timer = evtimer_new(m->base, resolver_ask, u))) {
		log_error("migration %s: out of memory; vm %s stays paused "
			  "for the operator",
			  jstr(jrec, "id"), jstr(jrec, "vm"));
		free(u);
		json_decref(jrec);
		return;
	}
	u->m = m;
	u->jrec = jrec;
	snprintf(u->id, sizeof(u->id), "%s", jstr(jrec, "id"));
	snprintf(u->vm, sizeof(u->vm), "%s", jstr(jrec, "vm"));
	snprintf(u->uuid, sizeof(u->uuid), "%s", jstr(jrec, "uuid"));
	if (vm)
		vm_hold(vm, u->id, "unresolved", true);
	u->next = m->unresolved;
	m->unresolved = u;
	log_warn("migration %s of vm %s: outcome unknown; the VM stays "
		 "paused (unresolved) while ferryd asks %s",
		 u->id, u->vm, jstr(json_object_get(jrec, "peer"), "name"));
	schedule(u, 0);
}

/* Worker: one attempt to learn (or settle) the outcome. */
static void resolve_work(void *arg)
{
	struct unresolved *u = arg;
	struct peer_target t;

	if (target_of(u->jrec, &t) < 0) {
		u->answer = PEER_UNKNOWN;
		ferr_set(&u->err, FERR_INVALID,
			 "its journal record names no usable peer");
		return;
	}
	/* a pending session is finished: the source VM is stopped with all
	 * its state sent, so the destination can still take it */
	u->answer = peer_settle(u->m, &t, jstr(u->jrec, "session"),
				json_is_true(json_object_get(u->jrec,
							     "was_running")),
				now_ms() + SETTLE_MS, &u->m->stop, &u->err);
}

/* Resume the source copy: the destination never committed. */
static int resume_work(struct qmp *q, void *arg, struct ferr *err)
{
	(void)arg;
	return qmp_command(q, "cont", NULL, NULL, err);
}

static void on_resumed(void *arg, struct vm *vm, int rc,
		       const struct ferr *err)
{
	(void)arg;
	if (vm && rc < 0)
		log_error("vm %s: cannot resume it after its migration was "
			  "not committed: %s",
			  vm->def.name, err ? err->msg : "?");
	else if (vm)
		log_info("vm %s: resumed; its migration was never committed",
			 vm->def.name);
}

static void resolve_done(void *arg)
{
	struct unresolved *u = arg;
	struct migrator *m = u->m;
	struct vm *vm = vmm_find_uuid(m->vmm, u->uuid);
	struct ferr err;

	u->asking = false;
	u->attempts++;
	if (vm && strcmp(vm->hold.owner, u->id) != 0) {
		/* the operator took over (resume or stop with --force) */
		settle_record(m, u->jrec, "failed",
			      "resolved by the operator (--force)");
		goto drop;
	}
	switch (u->answer) {
	case PEER_COMMITTED:
		if (vm) {
			vm_release(vm, u->id);
			vmm_migrated_away(m->vmm, vm);
		}
		settle_record(m, u->jrec, "completed",
			      "the destination confirmed the VM runs there");
		goto drop;
	case PEER_NOT_COMMITTED:
		if (vm) {
			vm_release(vm, u->id);
			if (json_is_true(json_object_get(u->jrec,
							 "was_running")) &&
			    vm->qmp &&
			    vm_run_qmp(vm, "cont", resume_work, NULL,
				       on_resumed, &err) < 0)
				log_error("vm %s: cannot resume: %s",
					  vm->def.name, err.msg);
		}
		settle_record(m, u->jrec, "failed",
			      vm ? "the destination never committed it; the "
				   "source copy is resumed"
				 : "the destination never committed it, and "
				   "the source QEMU is gone: the VM crashed");
		goto drop;
	default:
		u->backoff_s = u->backoff_s ? u->backoff_s * 2
					    : MIG_RESOLVE_MIN_S;
		if (u->backoff_s > MIG_RESOLVE_MAX_S)
			u->backoff_s = MIG_RESOLVE_MAX_S;
		log_info("migration %s: still unresolved (%s); asking again "
			 "in %u s",
			 u->id, u->err.msg, u->backoff_s);
		if (!m->stopping)
			schedule(u, u->backoff_s);
		return;
	}
drop:
	unresolved_unlink(m, u);
	unresolved_free(u);
}

static void resolver_ask(evutil_socket_t fd, short what, void *arg)
{
	struct unresolved *u = arg;
	struct ferr err;

	(void)fd;
	(void)what;
	if (u->asking || u->m->stopping)
		return;
	if (worker_submit(u->m->deps.pool, resolve_work, resolve_done, u,
			  &err) < 0) {
		schedule(u, MIG_RESOLVE_MIN_S);
		return;
	}
	u->asking = true;
}

void recover_stop(struct migrator *m)
{
	/* aborts whose attempt runs end in abort_done (m->stopping); the
	 * others end here, their journal records kept for the next start */
	for (struct aborter *a = m->aborters, *n; a; a = n) {
		n = a->next;
		if (a->running)
			continue;
		a->journalled = false;
		aborter_free(m, a);
	}
	/* entries whose query runs are freed by its done (the pool is
	 * drained after this); the journal keeps them for the next start */
	for (struct unresolved **pp = &m->unresolved; *pp;) {
		struct unresolved *u = *pp;

		evtimer_del(u->timer);
		if (u->asking) {
			pp = &u->next;
			continue;
		}
		*pp = u->next;
		unresolved_free(u);
	}
}

/* ---- the destination's records ---- */

static void on_recommitted(void *arg, struct vm *vm, int rc,
			   const struct ferr *err)
{
	char *id = arg;

	if (vm)
		vm_release(vm, id);
	if (vm)
		log_info("incoming migration %s: commit finished after the "
			 "restart%s%s",
			 id, rc < 0 ? ": " : "", rc < 0 && err ? err->msg : "");
	free(id);
}

/* A destination record: finish what a commit began, drop the rest. */
static void recover_dest(struct migrator *m, const json_t *rec)
{
	const char *phase = jstr(rec, "phase");
	struct vm *vm = vmm_find_uuid(m->vmm, jstr(rec, "uuid"));
	bool queued = false;
	struct ferr err;

	if (!strcmp(phase, "aborted"))
		return; /* kept to answer the source */
	if (!strcmp(phase, "committed") || !strcmp(phase, "committing")) {
		if (vm && vm->incoming) {
			/* ours to finish: not an orphan for the sweep below */
			vm_hold(vm, jstr(rec, "id"), "", false);
			if (vm->state == VM_PAUSED &&
			    !strcmp(phase, "committing") &&
			    json_is_true(json_object_get(rec, "resume"))) {
				/* loaded, never resumed: finish the commit
				 * (the source resumes only on "never") */
				char *id = strdup(jstr(rec, "id"));

				if (!id ||
				    vmm_incoming_commit(m->vmm, vm, true,
							on_recommitted, id,
							&err) < 0) {
					free(id);
					vmm_incoming_adopt(m->vmm, vm, &err);
				} else {
					queued = true; /* released when done */
				}
			} else {
				if (vm->state == VM_SHUTOFF)
					snprintf(vm->last_error,
						 sizeof(vm->last_error),
						 "QEMU was gone when ferryd "
						 "restarted during the commit "
						 "of migration %s: the VM "
						 "crashed here",
						 jstr(rec, "id"));
				vmm_incoming_adopt(m->vmm, vm, &err);
			}
		}
		if (vm && !queued)
			vm_release(vm, jstr(rec, "id"));
		if (strcmp(phase, "committed") != 0) {
			dest_phase(m, rec, "committed");
			settle_record(m, rec, "completed",
				      "the commit had begun: it is finished");
		}
		return;
	}
	/* prepared: never committed, and now it never will be */
	if (vm && vm->incoming)
		vmm_incoming_discard(m->vmm, vm);
	dest_phase(m, rec, "aborted");
	settle_record(m, rec, "failed",
		      "ferryd restarted before the migration was finished");
}

/* ---- the source's records ---- */

/* Worker: end the source QEMU's broken migration (the relay died with
 * the old ferryd) and resume the VM if it ran before and QEMU did not
 * resume it itself (offline mode paused it). Never from postmigrate. */
static int unfail_work(struct qmp *q, void *arg, struct ferr *err)
{
	uint64_t deadline = now_ms() + CANCEL_WAIT_MS;
	bool was_running = arg != NULL;
	json_t *ret = NULL;
	const char *st;
	struct ferr ignored;

	qmp_command(q, "migrate_cancel", NULL, NULL, &ignored);
	for (;;) {
		if (qmp_command(q, "query-migrate", NULL, &ret, err) < 0)
			return -1;
		st = json_string_value(json_object_get(ret, "status")) ?: "";
		if (strcmp(st, "active") && strcmp(st, "setup") &&
		    strcmp(st, "cancelling") && strcmp(st, "device") &&
		    strcmp(st, "pre-switchover"))
			break;
		json_decref(ret);
		ret = NULL;
		if (now_ms() >= deadline)
			return ferr_set(err, FERR_TIMEOUT,
					"QEMU's migration did not end");
		usleep(20 * 1000);
	}
	json_decref(ret);
	ret = NULL;
	if (!was_running ||
	    qmp_command(q, "query-status", NULL, &ret, err) < 0)
		return was_running ? -1 : 0;
	st = json_string_value(json_object_get(ret, "status")) ?: "";
	if (!strcmp(st, "paused")) {
		json_decref(ret);
		return qmp_command(q, "cont", NULL, NULL, err);
	}
	json_decref(ret);
	return 0;
}

static void on_unfailed(void *arg, struct vm *vm, int rc,
			const struct ferr *err)
{
	(void)arg;
	if (vm && rc < 0)
		log_error("vm %s: after the broken migration: %s",
			  vm->def.name, err ? err->msg : "?");
}

/* A source record whose QEMU never got `migrate`, or whose transfer the
 * restart broke: the VM is (or will be again) running here. */
static void source_failed(struct migrator *m, struct vm *vm,
			  const json_t *rec, const char *why)
{
	struct ferr err;

	if (vm && vm->qmp &&
	    vm_run_qmp(vm, "unfail", unfail_work,
		       json_is_true(json_object_get(rec, "was_running"))
			       ? (void *)1
			       : NULL,
		       on_unfailed, &err) < 0)
		log_error("vm %s: %s", vm->def.name, err.msg);
	settle_record(m, rec, "failed", why);
	recover_abort(m, rec, false);
}

/* At start-up (blocking, with deadlines): the status of the source QEMU's
 * outgoing migration, from its migration monitor, into out. */
static void source_migration(struct migrator *m, struct vm *vm, char *out,
			     size_t len)
{
	struct vm_paths p;
	struct qmp *q = NULL;
	struct ferr err;
	json_t *ret = NULL;

	snprintf(out, len, "none");
	if (vm_paths_get(m->cfg, &vm->def, &p, &err) < 0 ||
	    qmp_connect(p.mqmp, FERRY_QMP_TIMEOUT_MS, &q, &err) < 0)
		return;
	if (qmp_command(q, "query-migrate", NULL, &ret, &err) == 0)
		snprintf(out, len, "%s",
			 json_string_value(json_object_get(ret, "status"))
				 ?: "none");
	json_decref(ret);
	qmp_close(q);
}

static void recover_source(struct migrator *m, json_t *rec)
{
	const char *phase = jstr(rec, "phase");
	struct vm *vm = vmm_find_uuid(m->vmm, jstr(rec, "uuid"));
	bool postmigrate = vm && (!strcmp(vm->qemu_status, "postmigrate") ||
				  !strcmp(vm->qemu_status, "finish-migrate"));

	if (!strcmp(phase, "aborting")) {
		/* failed already (its history says so): the destination had
		 * not confirmed the abort yet */
		recover_abort(m, rec, true);
		json_decref(rec);
		return;
	}
	if (!strcmp(phase, "preparing") || !strcmp(phase, "prepared")) {
		source_failed(m, NULL, rec,
			      "ferryd restarted before the transfer began");
		json_decref(rec);
		return;
	}
	if (!strcmp(phase, "migrating") && !postmigrate) {
		/* the relay died with ferryd: QEMU's migration failed (and
		 * QEMU resumed the VM if it ran) or is failing now */
		source_failed(m, vm, rec,
			      vm && vm->state != VM_SHUTOFF
				      ? "ferryd restarted during the transfer"
				      : "ferryd restarted during the "
					"transfer, and the source QEMU is "
					"gone: the VM crashed");
		json_decref(rec);
		return;
	}
	if (!strcmp(phase, "postcopy") && vm && vm->qmp) {
		char st[32];
		struct ferr err;

		source_migration(m, vm, st, sizeof(st));
		if (!strcmp(st, "postcopy-paused") ||
		    !strcmp(st, "postcopy-active") ||
		    !strcmp(st, "postcopy-recover")) {
			/* the VM runs on the destination and needs the pages
			 * this QEMU still holds: carry the stream again */
			log_info("migration %s of vm %s: post-copy was %s; "
				 "resuming it",
				 jstr(rec, "id"), vm->def.name, st);
			if (mig_resume_postcopy(m, vm, rec, &err) == 0) {
				json_decref(rec);
				return;
			}
			log_error("migration %s: %s", jstr(rec, "id"),
				  err.msg);
		}
	}
	/* switchover or later, or QEMU completed: only the destination
	 * knows where the VM is */
	recover_unresolved(m, rec);
}

void recover_all(struct migrator *m)
{
	struct ferr err;
	json_t *all = journal_load(m->journal_dir, &err), *rec;
	size_t i;

	if (!all) {
		log_error("migration journal: %s", err.msg);
		return;
	}
	json_array_foreach(json_object_get(all, "destination"), i, rec)
		recover_dest(m, rec);
	json_array_foreach(json_object_get(all, "source"), i, rec)
		recover_source(m, json_incref(rec));
	/* incoming VMs without a journal record (a restart between QEMU's
	 * start and the first record): never committed */
	for (struct vm *vm = vmm_first(m->vmm), *next; vm; vm = next) {
		next = vm->next;
		if (vm->incoming && !vm->leaving && !vm->hold.owner[0]) {
			log_info("vm %s: an incoming migration without a "
				 "journal record; discarding it",
				 vm->def.name);
			vmm_incoming_discard(m->vmm, vm);
		} else if (!vm->hold.owner[0] &&
			   (!strcmp(vm->qemu_status, "postmigrate") ||
			    !strcmp(vm->qemu_status, "finish-migrate"))) {
			/* a migration we have no record of left it paused:
			 * only the operator can tell where it runs */
			vm_hold(vm, "no-journal", "unresolved", true);
			log_error("vm %s: QEMU is in %s but no migration "
				  "journal names it; it stays paused until an "
				  "operator resumes it (--force) or stops it",
				  vm->def.name, vm->qemu_status);
		}
	}
	json_decref(all);
}
