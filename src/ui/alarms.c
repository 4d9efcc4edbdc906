/* alarms.c - what stands out at the top of the page. Each source looks at
 * the merged state and appends alarms {"severity": "critical"|"warning",
 * "source", "title", "detail", "host", "vm"}. To add a source (e.g. the
 * detector's unexplained migrations, once hosts report them): write one
 * function and add a row to `sources`. */
#include "ui_int.h"

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

static const struct {
	const char *name;
	alarm_fn fn;
} sources[] = {
	{ "unresolved", unresolved },
	{ "unreachable", unreachable },
	{ "migration-failed", failed },
};

void ui_alarms(struct ui *ui, const json_t *vms, const json_t *migs,
	       json_t *alarms)
{
	for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++)
		sources[i].fn(ui, vms, migs, alarms);
}
