/* alarms.c - what stands out at the top of the page. Each source looks at
 * the merged state and appends alarms {"severity": "critical"|"warning",
 * "source", "title", "detail", "host", "vm"}. To add a source (e.g. the
 * detector's unexplained migrations, once hosts report them): write one
 * function and add a row to `sources`. ferry-detect's alarms come from
 * its state file (client.json "detector_state"). */
#include "ui_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*alarm_fn)(struct ui *ui, const json_t *vms,
			 const json_t *migs, json_t *out);

static const char *s_of(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

static void add(json_t *out, const char *severity, const char *source,
		const char *title, const char *detail, const char *host,
		const char *vm)
{
	json_array_append_new(out,
			      json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?}",
					"severity", severity, "source", source,
					"title", title, "detail", detail,
					"host", host, "vm", vm));
}

/* A VM a migration left paused whose outcome is not known yet: it runs
 * nowhere until an operator (or recovery) resolves it. */
static void unresolved(struct ui *ui, const json_t *vms, const json_t *migs,
		       json_t *out)
{
	const json_t *vm;
	size_t i;
	char title[256], detail[256];

	(void)ui;
	(void)migs;
	json_array_foreach(vms, i, vm) {
		if (strcmp(s_of(vm, "state"), "unresolved") != 0)
			continue;
		snprintf(title, sizeof(title),
			 "VM %s on %s: migration outcome unresolved",
			 s_of(vm, "name"), s_of(vm, "host"));
		snprintf(detail, sizeof(detail),
			 "left paused by migration %s; it runs nowhere until "
			 "resolved",
			 json_is_string(json_object_get(vm,
							"active_migration"))
				 ? s_of(vm, "active_migration")
				 : "(unknown)");
		add(out, "critical", "unresolved", title, detail,
		    s_of(vm, "host"), s_of(vm, "name"));
	}
}

/* A host that does not answer. */
static void unreachable(struct ui *ui, const json_t *vms, const json_t *migs,
			json_t *out)
{
	char title[128];

	(void)vms;
	(void)migs;
	for (size_t i = 0; i < ui->nhosts; i++) {
		const struct ui_hoststate *hs = &ui->hosts[i];

		if (hs->reachable || (!hs->answered && !hs->error[0]))
			continue; /* fine, or not asked yet */
		snprintf(title, sizeof(title), "host %s is unreachable",
			 hs->host->name);
		add(out, "critical", "unreachable", title, hs->error,
		    hs->host->name, NULL);
	}
}

/* A migration that failed in the last ALARM_FAILED_MS. */
#define ALARM_FAILED_MS (10 * 60 * 1000)

static void failed(struct ui *ui, const json_t *vms, const json_t *migs,
		   json_t *out)
{
	uint64_t now = wall_ms();
	const json_t *rec;
	size_t i;
	char title[256];

	(void)ui;
	(void)vms;
	json_array_foreach(json_object_get(migs, "history"), i, rec) {
		json_int_t end = json_integer_value(
			json_object_get(rec, "ended_at"));

		if (strcmp(s_of(rec, "outcome"), "failed") != 0 ||
		    end <= 0 || now - (uint64_t)end > ALARM_FAILED_MS)
			continue;
		snprintf(title, sizeof(title),
			 "migration of %s from %s to %s failed",
			 s_of(rec, "vm"), s_of(rec, "source"),
			 s_of(rec, "destination"));
		add(out, "warning", "migration-failed", title,
		    s_of(rec, "error"), s_of(rec, "source"), s_of(rec, "vm"));
	}
}

#define DETECTOR_STATE_MAX (16 * 1024 * 1024)

void ui_detector_alarms(const char *text, size_t len, uint64_t now_ms,
			json_t *out)
{
	struct ferr err;
	json_t *st = json_parse_object(text, len, "detector state", &err);
	json_t *alarms = json_object_get(st, "alarms"), *a;
	json_int_t updated = json_integer_value(json_object_get(st,
								"updated_ms"));
	char title[256];
	size_t i;

	if (!st || json_integer_value(json_object_get(st, "version")) != 1 ||
	    !json_is_array(alarms)) {
		add(out, "warning", "detector", "ferry-detect's state is unreadable",
		    st ? "not a version 1 state file" : err.msg, NULL, NULL);
		json_decref(st);
		return;
	}
	if (updated <= 0 || now_ms > (uint64_t)updated + UI_DETECTOR_STALE_MS) {
		snprintf(title, sizeof(title),
			 "ferry-detect has not updated its state for %llu s",
			 updated > 0 ? (unsigned long long)(now_ms -
							    (uint64_t)updated) /
					       1000
				     : 0ULL);
		add(out, "warning", "detector", title,
		    "migrations are not being watched", NULL, NULL);
	}
	json_array_foreach(alarms, i, a) {
		const char *kind = s_of(a, "kind"), *vm = s_of(a, "vm"),
			   *host = s_of(a, "host");

		if (!strcmp(kind, "unexplained_migration"))
			snprintf(title, sizeof(title),
				 "VM %.64s migrated with no audit record",
				 vm[0] ? vm : "(unknown)");
		else if (!strcmp(kind, "audit_tampered"))
			snprintf(title, sizeof(title),
				 "the audit log of %.64s fails verification",
				 host);
		else
			snprintf(title, sizeof(title), "ferry-detect: %.64s",
				 kind);
		add(out, "critical", "detector", title, s_of(a, "message"),
		    host[0] ? host : NULL, vm[0] ? vm : NULL);
	}
	json_decref(st);
}

/* ferry-detect's alarms (detection.md), from its state file. */
static void detector(struct ui *ui, const json_t *vms, const json_t *migs,
		     json_t *out)
{
	char *text = NULL;
	size_t len = 0;
	struct ferr err;

	(void)vms;
	(void)migs;
	if (!ui->cfg->detector_state)
		return;
	if (file_read_all(ui->cfg->detector_state, DETECTOR_STATE_MAX, &text,
			  &len, &err) < 0) {
		add(out, "warning", "detector",
		    "ferry-detect's state cannot be read", err.msg, NULL, NULL);
		return;
	}
	ui_detector_alarms(text, len, wall_ms(), out);
	free(text);
}

static const struct {
	const char *name;
	alarm_fn fn;
} sources[] = {
	{ "unresolved", unresolved },
	{ "unreachable", unreachable },
	{ "migration-failed", failed },
	{ "detector", detector },
};

void ui_alarms(struct ui *ui, const json_t *vms, const json_t *migs,
	       json_t *alarms)
{
	for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++)
		sources[i].fn(ui, vms, migs, alarms);
}
