/* run.c - ferry-detect's loop: probes, announcements, local series, events,
 * the audit cross-check, alarms and the state the dashboard reads. */
#define _GNU_SOURCE
#include "detect_int.h"
#include "audit.h"
#include "netdev.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TICK_MS 10
#define STATE_EVERY_MS 1000
#define MATCH_SLACK_MS 5000   /* coverage: records this far around an event */
#define MATCH_BEFORE_MS 1000  /* a switchover this far before a migration's */
#define MATCH_AFTER_MS 2000   /* first record, or after its last, matches */
#define ALARM_MERGE_MS 30000  /* one alarm per VM and switchover */
#define LOCAL_LOST_MS 2000    /* netprobe's timeout */
#define STATE_VERSION 1
#define OFFSET_READS 10       /* console reads the guest clock maps from */

struct target {
	char addr_s[INET_ADDRSTRLEN];
	uint32_t addr;
	char vm[FERRY_NAME_MAX + 1];
	char mac[18];
	bool local;               /* the guest's own probes */
	unsigned local_idx;
	struct det det;
	uint32_t next_seq, oldest;
	uint64_t sent[DT_WINDOW];  /* us */
	bool answered[DT_WINDOW];
	/* local: wall - guest clock, the smallest (read time - guest time) of
	 * each of the last OFFSET_READS reads; their minimum is the offset.
	 * Recent reads only: the guest's clock stops whenever the VM does */
	int64_t offsets[OFFSET_READS];
	unsigned noffsets;
	/* last second's statistics */
	unsigned n_ok, n_lost;
	double sum_rtt, last_rtt;
	int event;                /* index of its open reported event, or -1 */
};

enum ev_state { EV_PENDING, EV_EXPLAINED, EV_ALARMED };

struct event {
	unsigned target;
	struct det_event ev;
	bool closed;
	enum ev_state state;
	char vm[FERRY_NAME_MAX + 1];
	char explained_by[40];
};

struct alarm {
	uint64_t at_ms;
	char kind[32];            /* unexplained_migration, audit_tampered */
	char vm[FERRY_NAME_MAX + 1];
	char host[FERRY_NAME_MAX + 1];
	char target[INET_ADDRSTRLEN + 8];
	uint64_t switchover_ms;
	char message[FERRY_ERR_MSG_MAX];
};

struct run {
	const struct dt_opts *o;
	struct target t[DT_TARGETS_MAX * 2];
	unsigned nt;
	struct event ev[DT_EVENTS_MAX];
	unsigned nev;
	struct alarm al[DT_ALARMS_MAX];
	unsigned nal;
	bool host_bad[DT_HOSTS_MAX];
	struct dt_view view;
	struct dt_api api;
	struct audit *audit;
	FILE *csv, *events;
	char path_state[FERRY_PATH_MAX];
	uint64_t started_ms;
};

static volatile sig_atomic_t g_stop;

/* Copy string src into dst of size n, cut to fit. */
static void scopy(char *dst, size_t n, const char *src)
{
	size_t l = strnlen(src, n - 1);

	memmove(dst, src, l);
	dst[l] = '\0';
}

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static void fmt_time(uint64_t ms, char *out, size_t len)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&s, &tm);
	snprintf(out, len, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min,
		 tm.tm_sec, (int)(ms % 1000));
}

static json_t *event_json(const struct run *r, const struct event *e)
{
	const struct target *t = &r->t[e->target];
	char sig[96];
	static const char *const st[] = { "pending", "explained", "alarmed" };

	det_signals_str(e->ev.signals, sig, sizeof(sig));
	return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, "
			 "s:s, s:f, s:b, s:s, s:s, s:f, s:f, s:f, s:i}",
			 "target", t->addr_s, "source",
			 t->local ? "local" : "remote", "vm", e->vm, "mac",
			 t->mac, "start_ms", (json_int_t)e->ev.start_ms,
			 "opened_ms", (json_int_t)e->ev.opened_ms,
			 "switchover_ms", (json_int_t)e->ev.switchover_ms,
			 "end_ms", (json_int_t)e->ev.end_ms, "detected_ms",
			 (json_int_t)e->ev.detected_ms, "switchover_known_ms",
			 (json_int_t)e->ev.switchover_known_ms, "signals", sig,
			 "confidence", e->ev.confidence, "closed", e->closed,
			 "check", st[e->state], "explained_by",
			 e->explained_by, "rtt_before_ms",
			 e->ev.rtt_before_ms, "rtt_after_ms",
			 e->ev.rtt_after_ms, "peak_ms", e->ev.peak_ms,
			 "stalls", (int)e->ev.stalls);
}

static json_t *alarm_json(const struct alarm *a)
{
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:I, s:s}", "at_ms",
			 (json_int_t)a->at_ms, "kind", a->kind, "vm", a->vm,
			 "host", a->host, "target", a->target, "switchover_ms",
			 (json_int_t)a->switchover_ms, "message", a->message);
}

/* One line to stdout: JSON with --json, else text. */
static void emit(const struct run *r, const char *type, json_t *obj,
		 const char *text)
{
	if (r->o->json) {
		json_object_set_new(obj, "type", json_string(type));
		print_json(obj);
	} else if (text) {
		printf("%s\n", text);
	}
	fflush(stdout);
	if (r->events && strcmp(type, "stats")) {
		char *s;

		json_object_set_new(obj, "type", json_string(type));
		s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
		if (s)
			fprintf(r->events, "%s\n", s);
		free(s);
		fflush(r->events);
	}
	json_decref(obj);
}

static void raise_alarm(struct run *r, const char *kind, const char *vm,
			const char *host, const char *target, uint64_t sw,
			const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static void raise_alarm(struct run *r, const char *kind, const char *vm,
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
	scopy(a->kind, sizeof(a->kind), kind);
	scopy(a->vm, sizeof(a->vm), vm);
	scopy(a->host, sizeof(a->host), host);
	scopy(a->target, sizeof(a->target), target);
	a->switchover_ms = sw;
	va_start(ap, fmt);
	vsnprintf(a->message, sizeof(a->message), fmt, ap);
	va_end(ap);
	log_warn("ALARM %s: %s", kind, a->message);
	if (r->audit &&
	    audit_log(r->audit, "ferry-detect", "detect.alarm",
		      vm[0] ? vm : "-", kind, alarm_json(a), &err) < 0)
		log_error("detector audit log: %s", err.msg);
	fmt_time(a->at_ms, ts, sizeof(ts));
	snprintf(line, sizeof(line), "%s ALARM %s vm=%s %s", ts, kind,
		 vm[0] ? vm : "-", a->message);
	emit(r, "alarm", alarm_json(a), line);
}

/* ---- targets ---- */

static struct target *add_target(struct run *r, const char *addr_s,
				 const char *vm, bool local, struct ferr *err)
{
	struct target *t;
	struct in_addr a = { 0 };

	if (r->nt >= sizeof(r->t) / sizeof(r->t[0])) {
		ferr_set(err, FERR_INVALID, "too many targets");
		return NULL;
	}
	if (!local && inet_pton(AF_INET, addr_s, &a) != 1) {
		ferr_set(err, FERR_INVALID, "target %s is not an IPv4 address",
			 addr_s);
		return NULL;
	}
	t = &r->t[r->nt++];
	memset(t, 0, sizeof(*t));
	scopy(t->addr_s, sizeof(t->addr_s), addr_s);
	t->addr = a.s_addr;
	scopy(t->vm, sizeof(t->vm), vm ? vm : "");
	t->local = local;
	t->event = -1;
	det_init(&t->det, &r->o->det, NULL, NULL);
	return t;
}

/* Learn VM names and MACs from the hosts' lists. */
static void resolve_targets(struct run *r)
{
	for (unsigned i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];

		for (unsigned k = 0; k < r->view.nvms; k++) {
			const struct dt_vm *v = &r->view.vms[k];

			if ((t->vm[0] && !strcmp(v->name, t->vm)) ||
			    (!t->vm[0] && ((v->ip && v->ip == t->addr) ||
					   (t->mac[0] &&
					    !strcmp(v->mac, t->mac))))) {
				scopy(t->vm, sizeof(t->vm), v->name);
				if (v->mac[0])
					scopy(t->mac, sizeof(t->mac), v->mac);
			}
		}
	}
}

/* ---- events ---- */

static void on_det(const struct det_event *ev, enum det_report what,
		   void *arg);

struct det_ctx {
	struct run *r;
	unsigned target;
};
static struct det_ctx g_ctx[DT_TARGETS_MAX * 2];

static void on_det(const struct det_event *ev, enum det_report what,
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
		scopy(e->vm, sizeof(e->vm), t->vm);
		t->event = (int)r->nev++;
		det_signals_str(ev->signals, sig, sizeof(sig));
		fmt_time(ev->start_ms, ts, sizeof(ts));
		fmt_time(ev->switchover_ms, sw, sizeof(sw));
		snprintf(line, sizeof(line),
			 "%s MIGRATION %s %s vm=%s start=%s switchover=%s "
			 "signals=%s confidence=%.2f",
			 ts, t->local ? "local" : "remote", t->addr_s,
			 t->vm[0] ? t->vm : "?", ts,
			 ev->switchover_ms ? sw : "-", sig, ev->confidence);
		emit(r, "detected", event_json(r, e), line);
		return;
	}
	if (t->event >= 0) {
		e = &r->ev[t->event];
		e->ev = *ev;
		e->closed = true;
		t->event = -1;
		det_signals_str(ev->signals, sig, sizeof(sig));
		fmt_time(ev->end_ms, ts, sizeof(ts));
		snprintf(line, sizeof(line),
			 "%s END %s %s vm=%s signals=%s confidence=%.2f "
			 "rtt %.2f -> %.2f ms",
			 ts, t->local ? "local" : "remote", t->addr_s,
			 e->vm[0] ? e->vm : "?", sig, ev->confidence,
			 ev->rtt_before_ms, ev->rtt_after_ms);
		emit(r, "closed", event_json(r, e), line);
	} else {
		/* below the confidence: an anomaly, not a migration */
		struct event tmp = { .target = c->target, .ev = *ev,
				     .closed = true };

		scopy(tmp.vm, sizeof(tmp.vm), t->vm);
		det_signals_str(ev->signals, sig, sizeof(sig));
		fmt_time(ev->start_ms, ts, sizeof(ts));
		snprintf(line, sizeof(line),
			 "%s anomaly %s %s signals=%s confidence=%.2f", ts,
			 t->local ? "local" : "remote", t->addr_s, sig,
			 ev->confidence);
		emit(r, "anomaly", event_json(r, &tmp), r->o->watch ? line : NULL);
	}
}

/* Keep open events current (the switchover may be refined). */
static void sync_events(struct run *r)
{
	for (unsigned i = 0; i < r->nt; i++)
		if (r->t[i].event >= 0 && r->t[i].det.open)
			r->ev[r->t[i].event].ev = r->t[i].det.ev;
}

/* ---- the audit cross-check ---- */

static void cross_check(struct run *r)
{
	struct dt_view *v = &r->view;

	for (unsigned h = 0; h < v->nhosts; h++) {
		bool bad = v->hosts[h].reached && !v->hosts[h].audit_ok;

		if (bad && !r->host_bad[h])
			raise_alarm(r, "audit_tampered", "", v->hosts[h].name,
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
			scopy(e->vm, sizeof(e->vm), t->vm);
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
					scopy(e->explained_by,
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
		raise_alarm(r, "unexplained_migration", e->vm, "", t->addr_s,
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
static json_t *coverage(const struct run *r)
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

/* ---- state for the dashboard ---- */

static void write_state(struct run *r)
{
	json_t *o, *arr;
	char *text;
	struct ferr err;

	o = json_pack("{s:i, s:I, s:I}", "version", STATE_VERSION, "updated_ms",
		      (json_int_t)wall_ms(), "started_ms",
		      (json_int_t)r->started_ms);
	arr = json_array();
	for (unsigned i = 0; i < r->nt; i++) {
		const struct target *t = &r->t[i];

		json_array_append_new(
			arr,
			json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:b}",
				  "target", t->addr_s, "source",
				  t->local ? "local" : "remote", "vm", t->vm,
				  "mac", t->mac, "rtt_ms", t->last_rtt,
				  "baseline_ms", det_baseline_ms(&t->det),
				  "in_event", t->det.open));
	}
	json_object_set_new(o, "targets", arr);
	arr = json_array();
	for (unsigned i = 0; i < r->nev; i++)
		json_array_append_new(arr, event_json(r, &r->ev[i]));
	json_object_set_new(o, "events", arr);
	arr = json_array();
	for (unsigned i = 0; i < r->nal; i++)
		json_array_append_new(arr, alarm_json(&r->al[i]));
	json_object_set_new(o, "alarms", arr);
	arr = json_array();
	for (unsigned h = 0; h < r->view.nhosts; h++)
		json_array_append_new(
			arr, json_pack("{s:s, s:b, s:b, s:s, s:I}", "host",
				       r->view.hosts[h].name, "reached",
				       r->view.hosts[h].reached, "audit_ok",
				       r->view.hosts[h].audit_ok, "message",
				       r->view.hosts[h].audit_msg, "records",
				       (json_int_t)r->view.hosts[h]
					       .audit_records));
	json_object_set_new(o, "hosts", arr);
	json_object_set_new(o, "coverage", coverage(r));
	text = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS);
	if (text && file_write_atomic(r->path_state, text, strlen(text), 0644,
				      &err) < 0)
		log_warn("%s", err.msg);
	free(text);
	json_decref(o);
}

/* ---- series ---- */

static void csv_row(struct run *r, const struct target *t, uint64_t send_ms,
		    double rtt)
{
	if (r->csv)
		fprintf(r->csv, "%llu,%s,%s,%s,%.3f,%d\n",
			(unsigned long long)send_ms, t->addr_s,
			t->local ? "local" : "remote", t->vm, rtt < 0 ? 0 : rtt,
			rtt < 0);
}

static void sample(struct run *r, struct target *t, uint64_t send_ms,
		   double rtt, uint64_t now)
{
	if (rtt < 0)
		t->n_lost++;
	else {
		t->n_ok++;
		t->sum_rtt += rtt;
		t->last_rtt = rtt;
	}
	csv_row(r, t, send_ms, rtt);
	det_sample(&t->det, send_ms, rtt, now);
}

static void probe_tick(struct run *r, struct probe_sock *ps, uint64_t now,
		       bool send)
{
	uint64_t now_us = wall_us();

	for (unsigned i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];

		if (t->local)
			continue;
		/* time out the oldest probes */
		while (t->oldest != t->next_seq) {
			unsigned s = t->oldest % DT_WINDOW;

			if (!t->answered[s]) {
				if (now_us < t->sent[s] +
						     r->o->timeout_ms * 1000ULL)
					break;
				sample(r, t, t->sent[s] / 1000, -1, now);
			}
			t->oldest++;
		}
		if (send && t->next_seq - t->oldest < DT_WINDOW) {
			unsigned s = t->next_seq % DT_WINDOW;

			t->sent[s] = now_us;
			t->answered[s] = false;
			if (probe_send(ps, t->addr, (uint16_t)t->next_seq) < 0)
				log_debug("probe %s: %s", t->addr_s,
					  strerror(errno));
			det_sent(&t->det, now);
			t->next_seq++;
		}
		det_tick(&t->det, now);
	}
}

static void on_reply(struct run *r, uint32_t addr, uint16_t seq16,
		     uint64_t at_us)
{
	for (unsigned i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];
		uint32_t seq;
		unsigned s;

		if (t->local || t->addr != addr)
			continue;
		seq = t->oldest + (uint16_t)(seq16 - (uint16_t)t->oldest);
		s = seq % DT_WINDOW;
		if (seq >= t->next_seq || t->answered[s])
			continue;
		t->answered[s] = true;
		sample(r, t, t->sent[s] / 1000,
		       at_us > t->sent[s] ? (double)(at_us - t->sent[s]) / 1000.0
					  : 0.0,
		       at_us / 1000);
	}
}

static void on_frame(struct run *r, const struct frame_info *fi, uint64_t at)
{
	char mac[18];

	mac_format(fi->mac, mac);
	for (unsigned i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];
		bool by_ip = fi->ip && !t->local && fi->ip == t->addr;

		if (by_ip && !t->mac[0])
			scopy(t->mac, sizeof(t->mac), mac);
		if (fi->kind == FRAME_ARP_REPLY)
			continue;
		if (by_ip || (t->mac[0] && !strcmp(t->mac, mac)))
			det_announce(&t->det,
				     fi->kind == FRAME_RARP ? DET_SIG_RARP
							    : DET_SIG_GARP,
				     at);
	}
	if (fi->kind != FRAME_ARP_REPLY)
		log_debug("%s from %s", fi->kind == FRAME_RARP ? "RARP" : "GARP",
			  mac);
}

/* Local samples from the API thread, in guest-time order per VM. */
static void take_local(struct run *r)
{
	for (unsigned i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];
		int64_t off = INT64_MAX;
		bool any = false;

		if (!t->local)
			continue;
		for (unsigned k = 0; k < r->view.nlocal; k++) {
			const struct dt_local *l = &r->view.local[k];
			int64_t o = (int64_t)l->read_ms - (int64_t)l->guest_ms;

			if (l->vm == t->local_idx && o < off)
				off = o;
			any |= l->vm == t->local_idx;
		}
		if (!any)
			continue;
		t->offsets[t->noffsets++ % OFFSET_READS] = off;
		for (unsigned k = 0; k < OFFSET_READS && k < t->noffsets; k++)
			if (t->offsets[k] < off)
				off = t->offsets[k];
		for (unsigned k = 0; k < r->view.nlocal; k++) {
			const struct dt_local *l = &r->view.local[k];
			uint64_t send, done;

			if (l->vm != t->local_idx)
				continue;
			send = (uint64_t)((int64_t)l->guest_ms + off);
			done = send + (uint64_t)(l->rtt_ms < 0 ? LOCAL_LOST_MS
							      : l->rtt_ms);
			det_sent(&t->det, send);
			sample(r, t, send, l->rtt_ms, done);
			det_tick(&t->det, done);
		}
	}
	r->view.nlocal = 0;
}

static void stats_line(struct run *r)
{
	char ts[16];

	fmt_time(wall_ms(), ts, sizeof(ts));
	for (unsigned i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];
		unsigned n = t->n_ok + t->n_lost;
		double avg = t->n_ok ? t->sum_rtt / t->n_ok : 0;
		char line[256];

		snprintf(line, sizeof(line),
			 "%s %-6s %-15s %-12s rtt %7.2f ms  base %6.2f ms  "
			 "loss %3u/%-3u%s",
			 ts, t->local ? "local" : "remote", t->addr_s,
			 t->vm[0] ? t->vm : "?", avg,
			 det_baseline_ms(&t->det), t->n_lost, n,
			 t->det.open ? (t->event >= 0 ? "  << MIGRATION"
						      : "  < anomaly")
				     : "");
		emit(r, "stats",
		     json_pack("{s:s, s:s, s:s, s:f, s:f, s:i, s:i, s:b}",
			       "target", t->addr_s, "source",
			       t->local ? "local" : "remote", "vm", t->vm,
			       "rtt_ms", avg, "baseline_ms",
			       det_baseline_ms(&t->det), "lost",
			       (int)t->n_lost, "probes", (int)n, "in_event",
			       t->det.open),
		     line);
		t->n_ok = t->n_lost = 0;
		t->sum_rtt = 0;
	}
}

/* ---- set-up ---- */

static int open_outputs(struct run *r, struct ferr *err)
{
	const char *d = r->o->state_dir;
	char path[FERRY_PATH_MAX];

	if (mkdir_p(d, 0700, err) < 0)
		return -1;
	if (fmt_checked(r->path_state, sizeof(r->path_state), err, "path",
			"%s/state.json", d) < 0 ||
	    fmt_checked(path, sizeof(path), err, "path", "%s/series.csv", d) <
		    0)
		return -1;
	r->csv = fopen(path, "a");
	if (fmt_checked(path, sizeof(path), err, "path", "%s/events.jsonl",
			d) < 0)
		return -1;
	r->events = fopen(path, "a");
	if (!r->csv || !r->events)
		return ferr_set(err, FERR_IO, "cannot write in %s: %s", d,
				strerror(errno));
	if (ftell(r->csv) == 0)
		fprintf(r->csv, "t_ms,target,source,vm,rtt_ms,lost\n");
	if (fmt_checked(path, sizeof(path), err, "path", "%s/audit", d) < 0 ||
	    audit_open(path, "detector", &r->audit, err) < 0)
		return ferr_wrap(err, "the detector's audit log");
	return 0;
}

static int setup_targets(struct run *r, struct ferr *err)
{
	const struct dt_opts *o = r->o;

	for (unsigned i = 0; i < o->ntargets; i++) {
		char buf[INET_ADDRSTRLEN + FERRY_NAME_MAX + 2];
		char *eq;

		scopy(buf, sizeof(buf), o->targets[i]);
		eq = strchr(buf, '=');
		if (eq)
			*eq++ = '\0';
		if (eq && !name_is_valid(eq))
			return ferr_set(err, FERR_INVALID,
					"--target %s: bad VM name", o->targets[i]);
		if (!add_target(r, buf, eq, false, err))
			return -1;
	}
	if (o->from_hosts)
		for (unsigned k = 0; k < r->view.nvms; k++) {
			char a[INET_ADDRSTRLEN];
			bool dup = false;

			if (!r->view.vms[k].ip || !r->view.vms[k].mac[0])
				continue;
			inet_ntop(AF_INET, &r->view.vms[k].ip, a, sizeof(a));
			for (unsigned i = 0; i < r->nt; i++)
				dup |= !strcmp(r->t[i].addr_s, a);
			if (!dup && !add_target(r, a, r->view.vms[k].name,
						false, err))
				return -1;
		}
	for (unsigned i = 0; i < o->nlocal; i++) {
		struct target *t = add_target(r, "local", o->local_vms[i],
					      true, err);

		if (!t)
			return -1;
		t->local_idx = i;
	}
	if (!r->nt)
		return ferr_set(err, FERR_INVALID,
				"nothing to watch: give --target, --local or "
				"--from-hosts");
	for (unsigned i = 0; i < r->nt; i++) {
		g_ctx[i] = (struct det_ctx){ r, i };
		r->t[i].det.cb = on_det;
		r->t[i].det.cb_arg = &g_ctx[i];
	}
	return 0;
}

int dt_run(const struct dt_opts *o, struct ferr *err)
{
	struct run *r = calloc(1, sizeof(*r));
	struct probe_sock ps = { .fd = -1 };
	int pkt = -1, wake[2] = { -1, -1 }, rc = -1;
	uint64_t next_probe, next_state, end, gen_seen = 0;

	if (!r)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	r->o = o;
	r->started_ms = wall_ms();
	pthread_mutex_init(&r->view.mu, NULL);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	if (open_outputs(r, err) < 0 ||
	    cli_config_load(o->config, &r->api.cfg, err) < 0 ||
	    client_init(&r->api.client, &r->api.cfg, 10, err) < 0)
		goto out;
	if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		ferr_set(err, FERR_IO, "pipe: %s", strerror(errno));
		goto out;
	}
	r->api.view = &r->view;
	r->api.interval_ms = o->api_interval_ms;
	r->api.wake_fd = wake[1];
	for (unsigned i = 0; i < o->nlocal; i++)
		r->api.local_vms[i] = o->local_vms[i];
	r->api.nlocal_vms = o->nlocal;
	if (probe_open(o->netns, &ps, err) < 0)
		goto out;
	if (o->iface && (pkt = packet_open(o->netns, o->iface, err)) < 0)
		goto out;
	if (api_start(&r->api, err) < 0)
		goto out;
	/* the first look at the hosts: names, MACs, audit logs */
	for (uint64_t dl = now_ms() + 15000; !g_stop && now_ms() < dl;) {
		pthread_mutex_lock(&r->view.mu);
		gen_seen = r->view.generation;
		pthread_mutex_unlock(&r->view.mu);
		if (gen_seen)
			break;
		poll(NULL, 0, 20);
	}
	pthread_mutex_lock(&r->view.mu);
	rc = setup_targets(r, err);
	resolve_targets(r);
	r->view.nlocal = 0; /* console history before we started */
	pthread_mutex_unlock(&r->view.mu);
	if (rc < 0)
		goto out;
	rc = -1;
	audit_log(r->audit, "ferry-detect", "detect.start", "-", "ok",
		  json_pack("{s:i}", "targets", (int)r->nt), err);
	log_info("watching %u target(s)%s%s", r->nt,
		 o->iface ? ", announcements on " : "", o->iface ? o->iface : "");
	next_probe = next_state = wall_ms();
	end = o->duration_s ? now_ms() + o->duration_s * 1000ULL : 0;
	while (!g_stop && (!end || now_ms() < end)) {
		struct pollfd pf[3] = { { ps.fd, POLLIN, 0 },
					{ pkt, POLLIN, 0 },
					{ wake[0], POLLIN, 0 } };
		uint64_t now = wall_ms();
		int wait = next_probe > now ? (int)(next_probe - now) : 0;
		uint32_t addr;
		uint16_t seq;
		uint64_t at;
		struct frame_info fi;

		poll(pf, 3, wait < TICK_MS ? wait : TICK_MS);
		while (probe_recv(&ps, &addr, &seq, &at) > 0)
			on_reply(r, addr, seq, at ? at : wall_us());
		while (pkt >= 0 && packet_recv(pkt, &fi, &at) > 0)
			on_frame(r, &fi, (at ? at : wall_us()) / 1000);
		now = wall_ms();
		probe_tick(r, &ps, now, now >= next_probe);
		if (now >= next_probe) {
			next_probe += o->det.interval_ms;
			if (next_probe < now) /* we were late: no burst */
				next_probe = now + o->det.interval_ms;
		}
		if (pf[2].revents & POLLIN) {
			char buf[64];

			while (read(wake[0], buf, sizeof(buf)) > 0)
				;
			pthread_mutex_lock(&r->view.mu);
			resolve_targets(r);
			take_local(r);
			sync_events(r);
			cross_check(r);
			pthread_mutex_unlock(&r->view.mu);
		}
		if (now >= next_state) {
			next_state = now + STATE_EVERY_MS;
			sync_events(r);
			if (o->watch)
				stats_line(r);
			pthread_mutex_lock(&r->view.mu);
			write_state(r);
			pthread_mutex_unlock(&r->view.mu);
			if (r->csv)
				fflush(r->csv);
		}
	}
	rc = 0;
out:
	r->api.stop = 1; /* ends within a refresh; the view stays valid */
	if (rc == 0) {
		pthread_mutex_lock(&r->view.mu);
		sync_events(r);
		write_state(r);
		pthread_mutex_unlock(&r->view.mu);
		audit_log(r->audit, "ferry-detect", "detect.stop", "-", "ok",
			  NULL, err);
	}
	api_stop(&r->api);
	client_free(&r->api.client);
	if (ps.fd >= 0)
		close(ps.fd);
	if (pkt >= 0)
		close(pkt);
	for (int i = 0; i < 2; i++)
		if (wake[i] >= 0)
			close(wake[i]);
	if (r->csv)
		fclose(r->csv);
	if (r->events)
		fclose(r->events);
	audit_close(r->audit);
	pthread_mutex_destroy(&r->view.mu);
	free(r);
	return rc;
}

int dt_alarms(const char *state_dir, bool json, struct ferr *err)
{
	char path[FERRY_PATH_MAX], *text = NULL, ts[16];
	size_t len = 0, i;
	json_t *st, *alarms, *a;

	if (fmt_checked(path, sizeof(path), err, "path", "%s/state.json",
			state_dir) < 0 ||
	    file_read_all(path, 64 * 1024 * 1024, &text, &len, err) < 0)
		return -1;
	st = json_loadb(text, len, 0, NULL);
	free(text);
	alarms = json_object_get(st, "alarms");
	if (!json_is_array(alarms)) {
		json_decref(st);
		return ferr_set(err, FERR_INVALID, "%s has no alarms list",
				path);
	}
	if (json)
		print_json(alarms);
	else
		json_array_foreach(alarms, i, a) {
			fmt_time((uint64_t)json_integer_value(
					 json_object_get(a, "at_ms")),
				 ts, sizeof(ts));
			printf("%s %s vm=%s host=%s %s\n", ts,
			       json_string_value(json_object_get(a, "kind")),
			       json_string_value(json_object_get(a, "vm")),
			       json_string_value(json_object_get(a, "host")),
			       json_string_value(
				       json_object_get(a, "message")));
		}
	json_decref(st);
	return 0;
}
