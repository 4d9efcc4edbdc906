/* output.c - what ferry-detect shows and keeps: lines and JSON on
 * stdout, events.jsonl, series.csv, state.json for the dashboard, and the
 * `alarms` command (detect_int.h). */
#define _GNU_SOURCE
#include "detect_int.h"
#include "audit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STATE_VERSION 1
#define STATE_READ_MAX (16 * 1024 * 1024) /* state.json read by `alarms` */

void dt_copy(char *dst, size_t n, const char *src)
{
	size_t l = strnlen(src, n - 1);

	memmove(dst, src, l);
	dst[l] = '\0';
}

void dt_fmt_time(uint64_t ms, char *out, size_t len)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&s, &tm);
	snprintf(out, len, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min,
		 tm.tm_sec, (int)(ms % 1000));
}

json_t *dt_event_json(const struct run *r, const struct event *e)
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

json_t *dt_alarm_json(const struct alarm *a)
{
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:I, s:s}", "at_ms",
			 (json_int_t)a->at_ms, "kind", a->kind, "vm", a->vm,
			 "host", a->host, "target", a->target, "switchover_ms",
			 (json_int_t)a->switchover_ms, "message", a->message);
}

/* One line to stdout: JSON with --json, else text. */
void dt_emit(const struct run *r, const char *type, json_t *obj,
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

/* ---- state for the dashboard ---- */

void dt_write_state(struct run *r)
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
		json_array_append_new(arr, dt_event_json(r, &r->ev[i]));
	json_object_set_new(o, "events", arr);
	arr = json_array();
	for (unsigned i = 0; i < r->nal; i++)
		json_array_append_new(arr, dt_alarm_json(&r->al[i]));
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
	json_object_set_new(o, "coverage", dt_coverage(r));
	text = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS);
	if (text && file_write_atomic(r->path_state, text, strlen(text), 0644,
				      &err) < 0)
		log_warn("%s", err.msg);
	free(text);
	json_decref(o);
}

/* ---- series ---- */

void dt_csv_row(struct run *r, const struct target *t, uint64_t send_ms,
		double rtt)
{
	if (r->csv)
		fprintf(r->csv, "%llu,%s,%s,%s,%.3f,%d\n",
			(unsigned long long)send_ms, t->addr_s,
			t->local ? "local" : "remote", t->vm, rtt < 0 ? 0 : rtt,
			rtt < 0);
}

void dt_stats_line(struct run *r)
{
	char ts[16];

	dt_fmt_time(wall_ms(), ts, sizeof(ts));
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
		dt_emit(r, "stats",
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

int dt_open_outputs(struct run *r, struct ferr *err)
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
	if (!r->o->no_series && !(r->csv = fopen(path, "a")))
		return ferr_set(err, FERR_IO, "cannot write %s: %s", path,
				strerror(errno));
	if (fmt_checked(path, sizeof(path), err, "path", "%s/events.jsonl",
			d) < 0)
		return -1;
	r->events = fopen(path, "a");
	if (!r->events)
		return ferr_set(err, FERR_IO, "cannot write in %s: %s", d,
				strerror(errno));
	if (r->csv && ftell(r->csv) == 0)
		fprintf(r->csv, "t_ms,target,source,vm,rtt_ms,lost\n");
	if (fmt_checked(path, sizeof(path), err, "path", "%s/audit", d) < 0 ||
	    audit_open(path, "detector", &r->audit, err) < 0)
		return ferr_wrap(err, "the detector's audit log");
	return 0;
}

/* A string field of o, or "-". */
static const char *str_or_dash(const json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v && *v ? v : "-";
}

int dt_alarms(const char *state_dir, bool json, struct ferr *err)
{
	char path[FERRY_PATH_MAX], *text = NULL, ts[16];
	size_t len = 0, i;
	json_t *st, *alarms, *a;

	if (fmt_checked(path, sizeof(path), err, "path", "%s/state.json",
			state_dir) < 0 ||
	    file_read_all(path, STATE_READ_MAX, &text, &len, err) < 0)
		return -1;
	st = json_parse_object(text, len, path, err);
	free(text);
	if (!st)
		return -1;
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
			dt_fmt_time((uint64_t)json_integer_value(
					    json_object_get(a, "at_ms")),
				    ts, sizeof(ts));
			printf("%s %s vm=%s host=%s %s\n", ts,
			       str_or_dash(a, "kind"), str_or_dash(a, "vm"),
			       str_or_dash(a, "host"),
			       str_or_dash(a, "message"));
		}
	json_decref(st);
	return 0;
}
