/* outgoing.c - the source side of a migration: the driver thread
 * (prepare, QEMU set-up, progress, finish or roll back) and its record;
 * QEMU's channels are outchan.c's, the convergence escalation
 * converge.c's. */
#define _GNU_SOURCE
#include "migrate_int.h"
#include "fault.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>


void mig_rec_set(struct mig *g, const char *key, json_t *val)
{
	pthread_mutex_lock(&g->lock);
	json_object_set_new(g->rec, key, val);
	pthread_mutex_unlock(&g->lock);
}

void mig_rec_error(struct mig *g, const char *fmt, ...)
{
	char msg[FERRY_ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&g->lock);
	if (!json_object_get(g->rec, "error"))
		json_object_set_new(g->rec, "error", json_string(msg));
	pthread_mutex_unlock(&g->lock);
	log_warn("migration %s of vm %s: %s", g->id, g->def.name, msg);
}

void mig_rec_step(struct mig *g, uint64_t t0, const char *step,
		  const char *detail)
{
	json_t *e = json_pack("{s:s, s:I, s:s}", "step", step, "at_ms",
			      (json_int_t)(now_ms() - t0), "detail", detail);

	pthread_mutex_lock(&g->lock);
	json_array_append_new(json_object_get(g->rec, "escalation"), e);
	pthread_mutex_unlock(&g->lock);
	log_info("migration %s of vm %s: %s: %s", g->id, g->def.name, step,
		 detail);
	mig_audit(g->m, g->requester, "migration.escalation", g->def.name,
		  step, json_pack("{s:s, s:s}", "id", g->id, "detail", detail));
}

/* Set the record's phase; a change of phase is audited. */
static void set_phase(struct mig *g, const char *phase)
{
	bool changed;

	pthread_mutex_lock(&g->lock);
	changed = strcmp(json_string_value(json_object_get(g->rec, "phase"))
				 ?: "",
			 phase) != 0;
	json_object_set_new(g->rec, "phase", json_string(phase));
	pthread_mutex_unlock(&g->lock);
	if (changed)
		mig_audit(g->m, g->requester, "migration.phase", g->def.name,
			  phase,
			  json_pack("{s:s, s:s, s:s}", "id", g->id, "role",
				    "source", "to", g->opts.to));
}

json_t *mig_journal_rec(struct mig *g, const char *phase)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:i}, s:s, s:s, "
			 "s:b, s:I}",
			 "phase", phase, "session", g->session, "vm",
			 g->def.name, "uuid", g->def.uuid, "peer", "name",
			 g->peer.name, "address", g->peer.address, "port",
			 (int)g->peer.port, "mode", mig_mode_name(g->opts.mode),
			 "requester", g->requester, "was_running",
			 g->was_running, "started_at",
			 (json_int_t)json_integer_value(
				 json_object_get(g->rec, "started_at")));
}

/* Journal g at phase; a failure is recorded on g and makes the caller
 * stop before the step the record should have covered. */
static int journal_phase(struct mig *g, const char *phase)
{
	struct ferr err;
	json_t *rec;
	int rc;

	pthread_mutex_lock(&g->lock);
	rec = mig_journal_rec(g, phase);
	pthread_mutex_unlock(&g->lock);
	if (!rec)
		return ferr_set(&err, FERR_INTERNAL, "out of memory");
	rc = journal_write(g->m->journal_dir, JOURNAL_SOURCE, g->id, rec,
			   &err);
	json_decref(rec);
	if (rc < 0)
		mig_rec_error(g, "%s", err.msg);
	return rc;
}

/* ---- QEMU ---- */

/* Event callback of the migration monitor: note that something changed. */
static void on_event(struct qmp *q, const char *name, json_t *data, void *arg)
{
	bool *changed = arg;

	(void)q;
	(void)data;
	if (!strcmp(name, "MIGRATION") || !strcmp(name, "STOP") ||
	    !strcmp(name, "RESUME"))
		*changed = true;
}

static int qmp_simple(struct qmp *q, const char *cmd, json_t *args,
		      struct ferr *err)
{
	return qmp_command(q, cmd, args, NULL, err);
}

/* Is the source VM running (query-status)? */
static int source_running(struct qmp *q, bool *running, struct ferr *err)
{
	json_t *ret = NULL;

	if (qmp_command(q, "query-status", NULL, &ret, err) < 0)
		return -1;
	*running = json_is_true(json_object_get(ret, "running"));
	json_decref(ret);
	return 0;
}

/* Capabilities and parameters of the source QEMU for this migration. */
static int source_setup(struct mig *g, struct qmp *q, uint64_t downtime,
			struct ferr *err)
{
	json_t *caps, *params;
	uint64_t bw = g->opts.bandwidth_mibps
			      ? g->opts.bandwidth_mibps * 1024 * 1024
			      : MIG_UNLIMITED_BW;

	caps = json_pack("{s:[{s:s,s:b},{s:s,s:b},{s:s,s:b},{s:s,s:b},"
			 "{s:s,s:b}]}",
			 "capabilities", "capability", "events", "state", 1,
			 "capability", "return-path", "state", 1, "capability",
			 "multifd", "state", g->multifd > 0, "capability",
			 "postcopy-ram", "state", g->postcopy_cap,
			 "capability", "auto-converge", "state", 1);
	if (qmp_simple(q, "migrate-set-capabilities", caps, err) < 0)
		return -1;
	/* auto-converge stays at 1 % until the escalation raises it */
	params = json_pack("{s:I, s:I, s:i, s:i, s:i}", "downtime-limit",
			   (json_int_t)downtime, "max-bandwidth",
			   (json_int_t)bw, "cpu-throttle-initial", 1,
			   "cpu-throttle-increment", 1, "max-cpu-throttle", 1);
	if (g->multifd)
		json_object_set_new(params, "multifd-channels",
				    json_integer(g->multifd));
	/* a cap holds for the whole migration, post-copy's background
	 * transfer included (QEMU leaves that one unlimited by default) */
	if (g->postcopy_cap && g->opts.bandwidth_mibps)
		json_object_set_new(params, "max-postcopy-bandwidth",
				    json_integer((json_int_t)bw));
	return qmp_simple(q, "migrate-set-parameters", params, err);
}

/* The progress of query-migrate into the record. */
static void rec_progress(struct mig *g, json_t *qm, uint64_t t0)
{
	json_t *ram = json_object_get(qm, "ram");
	uint64_t total = (uint64_t)json_integer_value(json_object_get(ram, "total"));
	uint64_t rem = (uint64_t)json_integer_value(
		json_object_get(ram, "remaining"));
	double pct = total ? 100.0 * (double)(total - (rem < total ? rem : total)) /
				     (double)total
			   : 0.0;
	json_t *p = json_pack(
		"{s:s, s:I, s:I, s:I, s:I, s:f, s:f, s:I, s:I, s:I, s:I, s:I}",
		"status",
		json_string_value(json_object_get(qm, "status")) ?: "?",
		"elapsed_ms", (json_int_t)(now_ms() - t0), "ram_total",
		(json_int_t)total, "ram_transferred",
		json_integer_value(json_object_get(ram, "transferred")),
		"ram_remaining", (json_int_t)rem, "percent", pct, "mbps",
		json_number_value(json_object_get(ram, "mbps")),
		"dirty_pages_rate",
		json_integer_value(json_object_get(ram, "dirty-pages-rate")),
		"iteration",
		json_integer_value(json_object_get(ram, "dirty-sync-count")),
		"expected_downtime_ms",
		json_integer_value(json_object_get(qm, "expected-downtime")),
		"throttle_pct",
		json_integer_value(json_object_get(qm,
						   "cpu-throttle-percentage")),
		"wire_bytes", (json_int_t)atomic_load(&g->ctr.to_remote));

	mig_rec_set(g, "progress", p);
}

/* ---- the driver ---- */

/* Final figures of the record. total_ms ends when the VM runs on the
 * destination (or the migration failed); downtime_ms is the guest-visible
 * pause: QEMU's stop-and-copy plus the finish round trip, or, when ferry
 * paused the VM (offline), from that pause to the resume. */
static void rec_final(struct mig *g, json_t *qm, const char *outcome,
		      uint64_t total, uint64_t down, uint64_t migrate_ms)
{
	json_t *detail;
	json_t *ram = json_object_get(qm, "ram");
	uint64_t bytes = (uint64_t)json_integer_value(
		json_object_get(ram, "transferred"));
	uint64_t qdown = (uint64_t)json_integer_value(
		json_object_get(qm, "downtime"));

	pthread_mutex_lock(&g->lock);
	json_object_set_new(g->rec, "outcome", json_string(outcome));
	json_object_set_new(g->rec, "phase", json_string("done"));
	json_object_set_new(g->rec, "ended_at",
			    json_integer((json_int_t)wall_ms()));
	json_object_set_new(g->rec, "total_ms", json_integer((json_int_t)total));
	/* from QEMU's migrate command to the VM running on the destination:
	 * what QEMU's own total-time measures, plus the finish */
	json_object_set_new(g->rec, "migrate_ms",
			    json_integer((json_int_t)migrate_ms));
	if (!strcmp(outcome, "completed")) {
		/* the VM runs on the destination: a channel that failed after
		 * QEMU completed (the destination QEMU may reset a multifd
		 * channel when it closes it) is no error of the migration;
		 * mig_rec_error() has logged it */
		json_object_del(g->rec, "error");
		json_object_set_new(g->rec, "downtime_ms",
				    json_integer((json_int_t)down));
		json_object_set_new(g->rec, "qemu_downtime_ms",
				    json_integer((json_int_t)qdown));
	}
	json_object_set_new(g->rec, "ram_bytes", json_integer((json_int_t)bytes));
	json_object_set_new(g->rec, "wire_bytes",
			    json_integer((json_int_t)atomic_load(&g->ctr.wire)));
	json_object_set_new(g->rec, "mean_mbps",
			    json_real(total ? (double)bytes * 8.0 /
						      (double)total / 1000.0
					    : 0.0));
	json_object_set_new(g->rec, "iterations",
			    json_integer(json_integer_value(json_object_get(
				    ram, "dirty-sync-count"))));
	detail = json_pack("{s:s, s:s, s:s, s:I, s:O*}", "id", g->id, "role",
			   "source", "to", g->opts.to, "total_ms",
			   (json_int_t)total, "error",
			   json_object_get(g->rec, "error"));
	pthread_mutex_unlock(&g->lock);
	/* an unresolved migration has not ended: the resolver audits its
	 * end when the destination answers */
	mig_audit(g->m, g->requester,
		  strcmp(outcome, "unresolved") ? "migration.end"
						: "migration.unresolved",
		  g->def.name, outcome, detail);
}

/* Poll the source QEMU until the migration reaches a final state; cancel
 * it on request, on a stall or past the time bound; escalate. Returns the
 * last query-migrate (new reference) or NULL on a QMP failure. */
static json_t *monitor(struct mig *g, struct qmp *q, struct converge *c,
		       bool *paused, uint64_t *pause_at, bool *dest_running,
		       bool *changed, struct ferr *err)
{
	uint64_t last_xfer = 0, last_move = now_ms();
	bool cancel_sent = false, postcopy_started = false;

	for (;;) {
		struct pollfd pfd = { .fd = qmp_fd(q), .events = POLLIN };
		json_t *qm = NULL, *ram;
		const char *st;
		uint64_t xfer, now;
		bool was_paused = *paused;

		if (!*changed)
			poll(&pfd, 1, MIG_POLL_INTERVAL_MS);
		*changed = false;
		if (qmp_poll_events(q, err) < 0 ||
		    qmp_command(q, "query-migrate", NULL, &qm, err) < 0) {
			json_decref(qm);
			return NULL;
		}
		st = json_string_value(json_object_get(qm, "status")) ?: "";
		rec_progress(g, qm, c->t0);
		if (!strcmp(st, "completed") || !strcmp(st, "failed") ||
		    !strcmp(st, "cancelled"))
			return qm;
		if (*dest_running && atomic_load(&g->m->stop))
			return qm; /* the journal keeps it for the next start */
		if (!strcmp(st, "postcopy-paused") && *dest_running) {
			/* the stream broke after the switch: the VM runs on
			 * the destination and needs our pages */
			set_phase(g, "postcopy-paused");
			if (pc_resume(g, q, err) < 0)
				return qm;
			json_decref(qm);
			continue;
		}
		now = now_ms();
		ram = json_object_get(qm, "ram");
		xfer = (uint64_t)json_integer_value(
			json_object_get(ram, "transferred"));
		if (xfer != last_xfer) {
			last_xfer = xfer;
			last_move = now;
			if (!strcmp(st, "active"))
				fault_point("src.precopy");
		}
		if (!strcmp(st, "postcopy-active")) {
			set_phase(g, "postcopy");
			if (!*dest_running && mig_ctx_send(g, err) < 0)
				/* no way back after the switch: the VM goes
				 * on without its flows' state */
				mig_rec_error(g, "post-copy: %s", err->msg);
			if (!*dest_running) {
				/* the VM must run on the destination while
				 * its pages are pulled: the point of no
				 * return */
				if (journal_phase(g, "postcopy") == 0 &&
				    peer_settle(g->m, &g->peer, g->session,
						true,
						now_ms() + 1000ULL * g->m->cfg->confirm_timeout_s,
						&g->m->stop,
						err) == PEER_COMMITTED) {
					*dest_running = true;
					fault_point("src.postcopy");
				} else
					mig_rec_error(g, "post-copy: %s", err->msg);
			}
		} else if (!strcmp(st, "active")) {
			set_phase(g, *paused ? "offline" : "precopy");
		}
		if (!cancel_sent && !*dest_running) {
			const char *why = NULL;
			char buf[128];

			if (atomic_load(&g->cancel)) {
				why = "cancelled by request";
			} else if (now - last_move >
				   1000ULL * g->m->cfg->stall_timeout_s) {
				snprintf(buf, sizeof(buf),
					 "the data path stalled: no progress "
					 "for %u s",
					 g->m->cfg->stall_timeout_s);
				why = buf;
			} else if (now >= c->deadline) {
				snprintf(buf, sizeof(buf),
					 "not finished within its time bound "
					 "(%llu s)",
					 (unsigned long long)g->opts.max_time_s);
				why = buf;
			}
			if (why) {
				if (!atomic_load(&g->cancel))
					mig_rec_error(g, "%s", why);
				cancel_sent = true;
				if (qmp_simple(q, "migrate_cancel", NULL,
					       err) < 0) {
					json_decref(qm);
					return NULL;
				}
				/* close QEMU's channel sockets too: its
				 * cancel only shuts the main channel, and
				 * multifd threads blocked writing to a relay
				 * that cannot forward (a stalled path) would
				 * keep it "cancelling" for ever */
				atomic_store(&g->relay_stop, true);
			}
		}
		if (!cancel_sent && !strcmp(st, "active")) {
			if (g->opts.mode == MIG_POSTCOPY && !postcopy_started &&
			    json_integer_value(json_object_get(
				    ram, "dirty-sync-count")) >= 1) {
				postcopy_started = true;
				c->postcopy = true;
				mig_rec_step(g, c->t0, "postcopy",
					 "post-copy mode: switching after the "
					 "first pass");
				if (qmp_simple(q, "migrate-start-postcopy",
					       NULL, err) < 0) {
					json_decref(qm);
					return NULL;
				}
			} else if (g->opts.mode == MIG_LIVE &&
				   mig_converge_check(g, q, c, qm, paused, err) <
					   0) {
				json_decref(qm);
				return NULL;
			}
			if (*paused && !was_paused)
				*pause_at = now_ms();
		}
		json_decref(qm);
	}
}

/* Post-copy failed after the switch (a QEMU died, recovery was refused):
 * the VM's memory is split between the hosts and neither half can run
 * alone; it crashed. The destination owns the VM since the switch: it is
 * told to stop its copy if that still waits for pages; the source's copy
 * goes when the migration ends (on_mig_done). docs/migration-protocol.md,
 * "Post-copy recovery". */
static void split_end(struct mig *g)
{
	uint64_t deadline = now_ms() + 1000ULL * g->m->cfg->confirm_timeout_s;
	unsigned backoff = MIG_RESOLVE_MIN_S;
	struct ferr e2 = { 0 };

	g->split = true;
	mig_rec_error(g, "the migration failed after the switch to post-copy: "
		     "the VM's memory was split between the hosts and the VM "
		     "crashed");
	while (peer_lost(g->m, &g->peer, g->session, &e2) < 0) {
		if (atomic_load(&g->m->stop) ||
		    now_ms() + 1000ULL * backoff >= deadline) {
			log_error("migration %s: %s was not told that the "
				  "source's half of vm %s is lost (%s); its "
				  "copy may hang until it is stopped",
				  g->id, g->peer.name, g->def.name, e2.msg);
			return;
		}
		usleep(1000U * 1000U * backoff);
		backoff *= 2;
	}
}

/* Make sure the source VM runs again if it ran before. */
static void source_resume(struct mig *g, struct qmp *q, bool was_running)
{
	bool running = false;
	struct ferr err;

	if (!was_running || !q)
		return;
	if (source_running(q, &running, &err) == 0 && running)
		return;
	if (qmp_simple(q, "cont", NULL, &err) < 0)
		mig_rec_error(g, "cannot resume the source VM: %s", err.msg);
	else
		log_info("migration %s: source vm %s resumed", g->id,
			 g->def.name);
}

/* Prepare the destination, waiting while it is at its limit of incoming
 * migrations (the record shows it), until cancelled or the time bound. */
static int prepare_dest(struct mig *g, const json_t *files,
			uint64_t deadline, struct ferr *err)
{
	struct peer_session ps = { 0 };
	json_t *body;
	bool waiting = false;
	int rc;

	body = json_pack("{s:s, s:s, s:o, s:s, s:s, s:I, s:b, s:b, s:O}",
			 "version", "1.2", "migration", g->id, "vm",
			 vmdef_to_json(&g->def), "source", g->m->cfg->host,
			 "requester", g->requester, "multifd",
			 (json_int_t)g->multifd, "postcopy", g->postcopy_cap,
			 "insecure", g->opts.insecure, "files", files);
	if (!body)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (mig_attest_body(g, body, err) < 0 ||
	    mig_ctx_body(g, body, err) < 0) {
		json_decref(body);
		return -1;
	}
	if (g->plan.z != RELAY_Z_OFF)
		json_object_set_new(body, "compress", json_string("zstd"));
	for (;;) {
		rc = peer_prepare(g->m, &g->peer, body, &ps, err);
		if (rc < 0 && mig_plan_fallback(&g->plan, g->opts.compress,
						err)) {
			json_object_del(body, "compress");
			continue;
		}
		if (rc == 0 || err->code != FERR_RATE)
			break;
		if (!waiting) {
			waiting = true;
			set_phase(g, "waiting");
			mig_rec_set(g, "waiting", json_string(err->msg));
		}
		for (uint64_t until = now_ms() + MIG_DEST_BUSY_RETRY_MS;
		     now_ms() < until;)
			usleep(50 * 1000);
		if (atomic_load(&g->cancel) || now_ms() >= deadline) {
			if (!atomic_load(&g->cancel))
				ferr_set(err, FERR_TIMEOUT,
					 "%s stayed at its limit of incoming "
					 "migrations",
					 g->peer.name);
			break;
		}
	}
	if (waiting) {
		pthread_mutex_lock(&g->lock);
		json_object_del(g->rec, "waiting");
		pthread_mutex_unlock(&g->lock);
	}
	json_decref(body);
	if (rc == 0) {
		memcpy(g->session, ps.id, sizeof(g->session));
		hex_decode(ps.id, g->sid, sizeof(g->sid));
		memcpy(g->key, ps.key, sizeof(g->key));
		snprintf(g->data_addr, sizeof(g->data_addr), "%s",
			 ps.data_addr);
		g->data_port = ps.data_port;
		mig_rec_set(g, "session", json_string(g->session));
		g->att.answer = ps.attestation;
		memcpy(g->att.exporter, ps.exporter, sizeof(g->att.exporter));
	}
	OPENSSL_cleanse(ps.key, sizeof(ps.key));
	return rc;
}

void *mig_driver(void *arg)
{
	struct mig *g = arg;
	struct ferr err = { 0 };
	struct qmp *q = NULL;
	struct converge c = { 0 };
	json_t *files = NULL, *qm = NULL;
	bool prepared = false, paused = false;
	bool dest_running = false, changed = false;
	uint64_t pause_at = 0, t_done, t_end = 0, downtime = 0, t_migrate = 0;
	uint64_t t_prepare = 0;
	const char *outcome = "failed";
	const char *st;

	c.t0 = now_ms();
	c.deadline = c.t0 + g->opts.max_time_s * 1000;
	c.max_downtime = g->opts.max_downtime_ms;
	c.downtime = c.max_downtime / 4 ? c.max_downtime / 4 : 1;
	if (g->opts.mode != MIG_LIVE)
		c.downtime = c.max_downtime;
	c.iter_remaining = UINT64_MAX;
	mig_rec_set(g, "downtime_limit_ms", json_integer((json_int_t)c.downtime));

	set_phase(g, g->resume_only ? "postcopy" : "prepare");
	if (qmp_connect(g->paths.mqmp, FERRY_QMP_TIMEOUT_MS, &q, &err) < 0)
		goto fail;
	qmp_set_event_cb(q, on_event, &changed);
	if (g->resume_only) {
		/* adopted after a restart: the VM runs on the destination */
		dest_running = true;
		c.postcopy = true;
		t_migrate = now_ms();
		goto transfer;
	}
	if (source_running(q, &g->was_running, &err) < 0)
		goto fail;
	files = mig_files_identity(g->m->cfg->shared_dir, &g->def, &err);
	t_prepare = now_ms();
	/* journalled before the destination can start anything, so that a
	 * restart can abort it there */
	if (!files || journal_phase(g, "preparing") < 0 ||
	    prepare_dest(g, files, c.deadline, &err) < 0)
		goto fail;
	prepared = true;
	/* the destination's attestation, before a single data-plane byte */
	if (mig_attest_check(g, &err) < 0)
		goto fail;
	mig_rec_set(g, "prepare_ms", json_integer((json_int_t)(now_ms() -
								 t_prepare)));
	if (journal_phase(g, "prepared") < 0)
		goto fail;
	fault_point("src.prepared");

	set_phase(g, "setup");
	if (channels_start(g, &err) < 0)
		goto fail;
	if (source_setup(g, q, c.downtime, &err) < 0)
		goto fail;
	if (g->opts.mode == MIG_OFFLINE && g->was_running) {
		if (qmp_simple(q, "stop", NULL, &err) < 0)
			goto fail;
		paused = true;
		pause_at = now_ms();
		c.offline = true;
		mig_rec_step(g, c.t0, "offline", "offline mode: VM paused for the "
					     "whole transfer");
	}
	if (journal_phase(g, "migrating") < 0)
		goto fail;
	{
		char uri[FERRY_SOCK_PATH_MAX + 8];

		snprintf(uri, sizeof(uri), "unix:%s",
			 vm_run_name(g->out_sock)); /* QEMU's folder: vm.h */
		t_migrate = now_ms();
		if (qmp_simple(q, "migrate", json_pack("{s:s}", "uri", uri),
			       &err) < 0)
			goto fail;
	}
	set_phase(g, paused ? "offline" : "precopy");
transfer:
	qm = monitor(g, q, &c, &paused, &pause_at, &dest_running, &changed,
		     &err);
	if (!qm)
		goto fail;
	st = json_string_value(json_object_get(qm, "status")) ?: "";
	t_done = now_ms();
	if (!strcmp(st, "completed")) {
		/* the VM is stopped: its tracked flows reach the destination
		 * before anything can resume it there; failing that, the
		 * migration fails before the switchover */
		if (!dest_running && mig_ctx_send(g, &err) < 0) {
			mig_rec_error(g, "%s", err.msg);
			goto end;
		}
		set_phase(g, "switchover");
		if (!dest_running) {
			enum peer_outcome o = PEER_UNKNOWN;

			/* the source VM is stopped: from here it resumes
			 * only on the destination's explicit "never" */
			if (journal_phase(g, "switchover") == 0) {
				fault_point("src.switchover");
				o = peer_settle(g->m, &g->peer, g->session,
						g->was_running,
						now_ms() + 1000ULL * g->m->cfg->confirm_timeout_s,
						&g->m->stop, &err);
			}
			if (o == PEER_COMMITTED) {
				dest_running = true;
				fault_point("src.committed");
			} else if (o == PEER_NOT_COMMITTED) {
				mig_rec_error(g, "%s did not take the VM: %s",
					  g->peer.name, err.msg);
				prepared = false; /* nothing left to abort */
			} else {
				/* unknown: never resume on a guess */
				mig_rec_error(g,
					  "%s gave no answer after the "
					  "switchover (%s); the source VM "
					  "stays paused and ferryd keeps "
					  "asking",
					  g->peer.name, err.msg);
				g->unresolved = true;
			}
		}
		t_end = now_ms();
		if (dest_running) {
			outcome = "completed";
			downtime = pause_at ? t_end - pause_at
					    : (uint64_t)json_integer_value(
						      json_object_get(
							      qm, "downtime")) +
						      (t_end - t_done);
		} else if (g->unresolved) {
			outcome = "unresolved";
		}
	} else if (atomic_load(&g->cancel) &&
		   (!strcmp(st, "cancelled") || !strcmp(st, "failed"))) {
		/* cancelled by request: QEMU may end "failed" instead, when
		 * its cancel races with the channel sockets ferry closes */
		outcome = "cancelled";
	} else {
		const char *desc = json_string_value(
			json_object_get(qm, "error-desc"));

		mig_rec_error(g, "QEMU: migration %s%s%s", st, desc ? ": " : "",
			  desc ? desc : "");
	}
	goto end;
fail:
	if (atomic_load(&g->cancel) && !prepared)
		outcome = "cancelled";
	else
		mig_rec_error(g, "%s", err.msg);
	if (q && qm == NULL) {
		/* a failure after `migrate` was sent: stop QEMU's side */
		struct ferr e2;

		qmp_simple(q, "migrate_cancel", NULL, &e2);
	}
end:
	if (dest_running && strcmp(outcome, "completed") != 0) {
		if (atomic_load(&g->m->stop)) {
			/* the next start carries the stream again */
			g->interrupted = true;
			outcome = "interrupted";
		} else {
			split_end(g);
		}
	}
	if (!dest_running && !g->unresolved) {
		source_resume(g, q, g->was_running);
		if (prepared) {
			struct ferr e2;

			if (peer_abort(g->m, &g->peer, g->session,
				       err.code ? err.msg : NULL, &e2) < 0 &&
			    e2.code != FERR_NOT_FOUND) {
				log_warn("migration %s: abort at %s: %s; "
					 "retrying",
					 g->id, g->peer.name, e2.msg);
				g->abort_pending = true;
			}
		}
	}
	if (!t_end)
		t_end = now_ms();
	if (g->rsession[0] && !strcmp(outcome, "completed")) {
		/* end the session that carried the recovered stream */
		struct ferr e2;

		if (peer_finish(g->m, &g->peer, g->rsession, true, &e2) !=
		    PEER_COMMITTED)
			log_warn("migration %s: ending recovery session %s: "
				 "%s",
				 g->id, g->rsession, e2.msg);
	}
	channels_finish(g);
	rec_final(g, qm, outcome, t_end - c.t0, downtime,
		  t_migrate ? t_end - t_migrate : 0);
	json_decref(qm);
	json_decref(files);
	qmp_close(q);
	OPENSSL_cleanse(g->key, sizeof(g->key));
	event_active(g->done_ev, EV_TIMEOUT, 0);
	return NULL;
}
