/* events.c - ferry-detect's events, the audit cross-check, alarms and
 * the coverage metric (detect_int.h). */
#define _GNU_SOURCE
#include "detect_int.h"
#include "audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MATCH_SLACK_MS 5000   /* coverage: records this far around an event */
#define MATCH_BEFORE_MS 1000  /* a switchover this far before a migration's */
#define MATCH_AFTER_MS 2000   /* first record, or after its last, matches */
#define ALARM_MERGE_MS 30000  /* one alarm per VM and switchover */

void dt_raise_alarm(struct run *r, const char *kind, const char *vm,
		    const char *host, const char *target, uint64_t sw,
		    const char *fmt, ...)
{
	struct alarm *a;
	va_list ap;
	char line[512], ts[16];
	struct ferr err;

	for (unsigned i = 0; i < r->nal; i++) /* one per VM and switchover */
		if (!strcmp(r->al[i].kind, kind) && !strcmp(r->al[i].vm, vm) &&
		    !strcmp(r->al[i].host, host) &&
		    (sw > r->al[i].switchover_ms
			     ? sw - r->al[i].switchover_ms
			     : r->al[i].switchover_ms - sw) < ALARM_MERGE_MS)
			return;
	if (r->nal >= DT_ALARMS_MAX)
		memmove(r->al, r->al + 1, --r->nal * sizeof(*a));
	a = &r->al[r->nal++];
	memset(a, 0, sizeof(*a));
	a->at_ms = wall_ms();
	dt_copy(a->kind, sizeof(a->kind), kind);
	dt_copy(a->vm, sizeof(a->vm), vm);
	dt_copy(a->host, sizeof(a->host), host);
	dt_copy(a->target, sizeof(a->target), target);
	a->switchover_ms = sw;
	va_start(ap, fmt);
	vsnprintf(a->message, sizeof(a->message), fmt, ap);
	va_end(ap);
	log_warn("ALARM %s: %s", kind, a->message);
	if (r->audit &&
	    audit_log(r->audit, "ferry-detect", "detect.alarm",
		      vm[0] ? vm : "-", kind, dt_alarm_json(a), &err) < 0)
		log_error("detector audit log: %s", err.msg);
	dt_fmt_time(a->at_ms, ts, sizeof(ts));
	snprintf(line, sizeof(line), "%s ALARM %s vm=%s %s", ts, kind,
		 vm[0] ? vm : "-", a->message);
	dt_emit(r, "alarm", dt_alarm_json(a), line);
}

/* ---- events ---- */

void dt_on_det(const struct det_event *ev, enum det_report what,
	       void *arg)
{
	struct det_ctx *c = arg;
	struct run *r = c->r;
	struct target *t = &r->t[c->target];
	struct event *e;
	char line[512], ts[16], sw[16], sig[96];

	if (what == DET_REPORT_DETECTED) {
		if (r->nev >= DT_EVENTS_MAX) { /* forget the oldest closed */
			unsigned k = 0;

			while (k < r->nev && !r->ev[k].closed)
				k++;
			if (k == r->nev)
				return;
			memmove(&r->ev[k], &r->ev[k + 1],
				(r->nev - k - 1) * sizeof(r->ev[0]));
			r->nev--;
			for (unsigned i = 0; i < r->nt; i++)
				if (r->t[i].event > (int)k)
					r->t[i].event--;
		}
		e = &r->ev[r->nev];
		memset(e, 0, sizeof(*e));
		e->target = c->target;
		e->ev = *ev;
		dt_copy(e->vm, sizeof(e->vm), t->vm);
		t->event = (int)r->nev++;
		det_signals_str(ev->signals, sig, sizeof(sig));
		dt_fmt_time(ev->start_ms, ts, sizeof(ts));
		dt_fmt_time(ev->switchover_ms, sw, sizeof(sw));
		snprintf(line, sizeof(line),
			 "%s MIGRATION %s %s vm=%s start=%s switchover=%s "
			 "signals=%s confidence=%.2f",
			 ts, t->local ? "local" : "remote", t->addr_s,
			 t->vm[0] ? t->vm : "?", ts,
			 ev->switchover_ms ? sw : "-", sig, ev->confidence);
		dt_emit(r, "detected", dt_event_json(r, e), line);
		return;
	}
	if (t->event >= 0) {
		e = &r->ev[t->event];
		e->ev = *ev;
		e->closed = true;
		t->event = -1;
		det_signals_str(ev->signals, sig, sizeof(sig));
		dt_fmt_time(ev->end_ms, ts, sizeof(ts));
		snprintf(line, sizeof(line),
			 "%s END %s %s vm=%s signals=%s confidence=%.2f "
			 "rtt %.2f -> %.2f ms",
			 ts, t->local ? "local" : "remote", t->addr_s,
			 e->vm[0] ? e->vm : "?", sig, ev->confidence,
			 ev->rtt_before_ms, ev->rtt_after_ms);
		dt_emit(r, "closed", dt_event_json(r, e), line);
	} else {
		/* below the confidence: an anomaly, not a migration */
		struct event tmp = { .target = c->target, .ev = *ev,
				     .closed = true };

		dt_copy(tmp.vm, sizeof(tmp.vm), t->vm);
		det_signals_str(ev->signals, sig, sizeof(sig));
		dt_fmt_time(ev->start_ms, ts, sizeof(ts));
		snprintf(line, sizeof(line),
			 "%s anomaly %s %s signals=%s confidence=%.2f", ts,
			 t->local ? "local" : "remote", t->addr_s, sig,
			 ev->confidence);
		dt_emit(r, "anomaly", dt_event_json(r, &tmp), r->o->watch ? line : NULL);
	}
}

/* Keep open events current (the switchover may be refined). */
void dt_sync_events(struct run *r)
{
	for (unsigned i = 0; i < r->nt; i++)
		if (r->t[i].event >= 0 && r->t[i].det.open)
			r->ev[r->t[i].event].ev = r->t[i].det.ev;
}

/* ---- the audit cross-check ---- */

void dt_cross_check(struct run *r)
{
	struct dt_view *v = &r->view;

	for (unsigned h = 0; h < v->nhosts; h++) {
		bool bad = v->hosts[h].reached && !v->hosts[h].audit_ok;

		if (bad && !r->host_bad[h])
			dt_raise_alarm(r, "audit_tampered", "", v->hosts[h].name,
				    "", 0, "host %s: %s; its records are not "
				    "trusted", v->hosts[h].name,
				    v->hosts[h].audit_msg);
		r->host_bad[h] = bad;
	}
	for (unsigned i = 0; i < r->nev; i++) {
		struct event *e = &r->ev[i];
		const struct target *t = &r->t[e->target];
		uint64_t at;
		char untrusted[256] = "";
		bool found = false;

		if (e->state != EV_PENDING)
			continue;
		if (!e->vm[0] && t->vm[0])
			dt_copy(e->vm, sizeof(e->vm), t->vm);
		/* a migration's records (one id) span its request to its end:
		 * the switchover must fall inside, give or take the slack */
		at = e->ev.switchover_ms ? e->ev.switchover_ms : e->ev.start_ms;
		for (unsigned h = 0; h < v->nhosts && !found; h++) {
			const struct dt_host *dh = &v->hosts[h];

			if (!dh->audit_ok) {
				size_t n = strlen(untrusted);

				snprintf(untrusted + n, sizeof(untrusted) - n,
					 "%s%s (%s)", n ? ", " : "", dh->name,
					 dh->audit_msg);
				continue;
			}
			for (unsigned k = 0; k < dh->nrecs && !found; k++) {
				const struct dt_mig_rec *m = &dh->recs[k];
				uint64_t lo = m->ts, hi = m->ts;

				if (!e->vm[0] || strcmp(m->vm, e->vm) || !m->id[0])
					continue;
				for (unsigned j = 0; j < dh->nrecs; j++)
					if (!strcmp(dh->recs[j].id, m->id)) {
						lo = dh->recs[j].ts < lo
							     ? dh->recs[j].ts
							     : lo;
						hi = dh->recs[j].ts > hi
							     ? dh->recs[j].ts
							     : hi;
					}
				if (at + MATCH_BEFORE_MS >= lo &&
				    at <= hi + MATCH_AFTER_MS) {
					found = true;
					dt_copy(e->explained_by,
					      sizeof(e->explained_by), m->id);
				}
			}
		}
		if (found) {
			e->state = EV_EXPLAINED;
			log_info("migration of %s at %s explained by the audit "
				 "log (%s)", e->vm[0] ? e->vm : t->addr_s,
				 t->addr_s, e->explained_by);
			continue;
		}
		/* records may lag the detection a little */
		if (v->refreshed_ms < e->ev.detected_ms + r->o->grace_ms)
			continue;
		e->state = EV_ALARMED;
		dt_raise_alarm(r, "unexplained_migration", e->vm, "", t->addr_s,
			    e->ev.switchover_ms,
			    "%s migration of %s (%s) with no migration record "
			    "in any host's audit log%s%s",
			    t->local ? "local" : "remote",
			    e->vm[0] ? e->vm : "an unknown VM", t->addr_s,
			    untrusted[0] ? "; not verifiable: " : "",
			    untrusted);
	}
}

/* Recorded migrations (migration.end) of watched VMs that no event
 * covers: the coverage metric. */
json_t *dt_coverage(const struct run *r)
{
	const struct dt_view *v = &r->view;
	unsigned recorded = 0, detected = 0;
	json_t *missed = json_array();

	for (unsigned h = 0; h < v->nhosts; h++)
		for (unsigned k = 0; k < v->hosts[h].nrecs; k++) {
			const struct dt_mig_rec *m = &v->hosts[h].recs[k];
			bool watched = false, seen = false;

			if (strcmp(m->action, "migration.end") ||
			    m->ts < r->started_ms)
				continue;
			for (unsigned i = 0; i < r->nt; i++)
				watched |= !strcmp(r->t[i].vm, m->vm);
			if (!watched)
				continue;
			/* both ends record an end: count the migration once */
			if (h > 0) {
				bool dup = false;

				for (unsigned g = 0; g < h && !dup; g++)
					for (unsigned j = 0;
					     j < v->hosts[g].nrecs; j++)
						dup |= !strcmp(v->hosts[g]
								       .recs[j]
								       .id,
							       m->id) &&
						       m->id[0];
				if (dup)
					continue;
			}
			recorded++;
			for (unsigned i = 0; i < r->nev && !seen; i++)
				seen = !strcmp(r->ev[i].vm, m->vm) &&
				       r->ev[i].ev.start_ms <=
					       m->ts + MATCH_SLACK_MS &&
				       (r->ev[i].closed ? r->ev[i].ev.end_ms
							: wall_ms()) +
						       MATCH_SLACK_MS >=
					       m->ts;
			if (seen)
				detected++;
			else
				json_array_append_new(
					missed, json_pack("{s:s, s:s, s:I}",
							  "vm", m->vm, "id",
							  m->id, "ts",
							  (json_int_t)m->ts));
		}
	return json_pack("{s:i, s:i, s:o}", "recorded", (int)recorded,
			 "detected", (int)detected, "undetected", missed);
}
