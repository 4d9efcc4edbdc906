/* state.c - the cluster as the page shows it, merged from every host's
 * last replies (GET /api/state). */
#include "ui_int.h"

#include <stdlib.h>
#include <string.h>

static json_t *reply_of(const struct ui_hoststate *hs, enum ui_res r)
{
	return hs->fetch[r].reply;
}

/* The chart series of a host, oldest first: {"ts": [...], "cpu": [...],
 * "mem_mib": [...], "dirty_mibps": [...]}. */
static json_t *series_json(const struct ui_hoststate *hs)
{
	json_t *ts = json_array(), *cpu = json_array(), *mem = json_array(),
	       *dirty = json_array();
	size_t first = (hs->next + UI_SERIES_MAX - hs->nseries) % UI_SERIES_MAX;

	for (size_t k = 0; k < hs->nseries; k++) {
		const struct ui_sample *s =
			&hs->series[(first + k) % UI_SERIES_MAX];

		json_array_append_new(ts, json_integer((json_int_t)s->ts));
		json_array_append_new(cpu, json_real(s->cpu));
		json_array_append_new(mem, json_real(s->mem_mib));
		json_array_append_new(dirty, json_real(s->dirty_mibps));
	}
	return json_pack("{s:o, s:o, s:o, s:o}", "ts", ts, "cpu", cpu,
			 "mem_mib", mem, "dirty_mibps", dirty);
}

/* The per-resource errors of a host, e.g. {"load": "HTTP 403: ..."}. */
static json_t *errors_json(const struct ui_hoststate *hs)
{
	static const char *const names[RES_COUNT] = {
		"host", "vms", "load", "migrations", "balance", "plan",
		"drains"
	};
	json_t *o = json_object();

	for (int r = 0; r < RES_COUNT; r++)
		if (hs->fetch[r].error[0])
			json_object_set_new(o, names[r],
					    json_string(hs->fetch[r].error));
	return o;
}

static json_t *host_json(const struct ui_hoststate *hs)
{
	const json_t *info = reply_of(hs, RES_INFO);
	const json_t *load = reply_of(hs, RES_LOAD);
	const json_t *vms = json_object_get(reply_of(hs, RES_VMS), "vms");
	const struct ui_sample *last =
		hs->nseries ? &hs->series[(hs->next + UI_SERIES_MAX - 1) %
					  UI_SERIES_MAX]
			    : NULL;
	size_t running = 0, i;
	const json_t *vm;
	json_t *o;

	json_array_foreach(vms, i, vm)
		if (!strcmp(json_string_value(json_object_get(vm, "state"))
				    ?: "",
			    "running"))
			running++;
	o = json_pack("{s:s, s:s, s:i, s:b, s:b, s:I, s:I, s:I, s:o, s:o}",
		      "name", hs->host->name, "address", hs->host->address,
		      "port", (int)hs->host->port, "reachable", hs->reachable,
		      "answered", hs->answered, "last_ok_ms",
		      (json_int_t)hs->last_ok_ms, "vms_total",
		      (json_int_t)json_array_size(vms), "vms_running",
		      (json_int_t)running, "errors", errors_json(hs), "series",
		      series_json(hs));
	if (hs->error[0])
		json_object_set_new(o, "error", json_string(hs->error));
	if (info) {
		static const char *const keys[] = { "version", "accel", "cpus",
						    "memory_total_mib", NULL };

		for (int k = 0; keys[k]; k++)
			json_object_set(o, keys[k],
					json_object_get(info, keys[k]));
	}
	if (load) {
		static const char *const keys[] = { "cpus", "cpu_util",
						    "vm_cpu_cores",
						    "memory_total_mib",
						    "memory_committed_mib",
						    "memory_free_mib",
						    "draining", NULL };

		for (int k = 0; keys[k]; k++)
			json_object_set(o, keys[k],
					json_object_get(load, keys[k]));
		json_object_set_new(o, "dirty_mibps",
				    json_real(last ? last->dirty_mibps : 0));
	}
	/* the attestation state, once hosts report one */
	json_object_set(o, "attestation",
			info && json_object_get(info, "attestation")
				? json_object_get(info, "attestation")
				: json_null());
	return o;
}

/* The load report's entry of VM name on a host, or NULL. */
static const json_t *load_vm(const json_t *load, const char *name)
{
	const json_t *v;
	size_t i;

	json_array_foreach(json_object_get(load, "vms"), i, v)
		if (!strcmp(json_string_value(json_object_get(v, "name")) ?: "",
			    name))
			return v;
	return NULL;
}

/* Append the VMs of a host: its VM objects plus "host" and, from the load
 * report, "cpu_cores" and "dirty_mibps". */
static void add_vms(const struct ui_hoststate *hs, json_t *out)
{
	const json_t *load = reply_of(hs, RES_LOAD), *vm;
	size_t i;

	json_array_foreach(json_object_get(reply_of(hs, RES_VMS), "vms"), i,
			   vm) {
		json_t *o = json_deep_copy(vm);
		const json_t *l = load_vm(
			load, json_string_value(json_object_get(vm, "name"))
				      ?: "");

		json_object_set_new(o, "host", json_string(hs->host->name));
		json_object_del(o, "cmdline");
		if (l) {
			json_object_set(o, "cpu_cores",
					json_object_get(l, "cpu_cores"));
			json_object_set(o, "dirty_mibps",
					json_object_get(l, "dirty_mibps"));
		}
		json_array_append_new(out, o);
	}
}

static const char *s_of(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

/* A list of migration records, one per id, with an index by id. */
struct migset {
	json_t *arr;
	json_t *idx; /* id -> position in arr */
};

/* Add a record to set: the source's record wins (it carries the
 * progress), else the first seen. */
static void add_migration(struct migset *set, const json_t *rec,
			  const char *host)
{
	const char *id = s_of(rec, "id");
	json_t *at = json_object_get(set->idx, id);
	json_t *o;

	if (at && strcmp(s_of(rec, "role"), "source") != 0)
		return;
	o = json_deep_copy(rec);
	json_object_set_new(o, "reported_by", json_string(host));
	if (at) {
		json_array_set_new(set->arr, (size_t)json_integer_value(at), o);
		return;
	}
	json_object_set_new(set->idx, id,
			    json_integer((json_int_t)json_array_size(set->arr)));
	json_array_append_new(set->arr, o);
}

static int newest_first(const void *a, const void *b)
{
	const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	json_int_t tx = json_integer_value(json_object_get(x, "started_at"));
	json_int_t ty = json_integer_value(json_object_get(y, "started_at"));

	return tx < ty ? 1 : tx > ty ? -1 : 0;
}

/* Sort arr newest first and keep at most max records. */
static json_t *sorted(json_t *arr, size_t max)
{
	size_t n = json_array_size(arr);
	json_t **v = n ? calloc(n, sizeof(*v)) : NULL;
	json_t *out = json_array();

	for (size_t i = 0; v && i < n; i++)
		v[i] = json_array_get(arr, i);
	if (v)
		qsort(v, n, sizeof(*v), newest_first);
	for (size_t i = 0; v && i < n && i < max; i++)
		json_array_append(out, v[i]);
	free(v);
	json_decref(arr);
	return out;
}

static json_t *migrations_json(struct ui *ui)
{
	struct migset run = { json_array(), json_object() };
	struct migset done = { json_array(), json_object() };
	json_t *running = json_array(), *rec;
	size_t k;

	for (size_t i = 0; i < ui->nhosts; i++) {
		const struct ui_hoststate *hs = &ui->hosts[i];

		json_array_foreach(json_object_get(reply_of(hs, RES_MIGS),
						   "migrations"),
				   k, rec)
			add_migration(strcmp(s_of(rec, "outcome"), "running")
					      ? &done
					      : &run,
				      rec, hs->host->name);
	}
	/* a migration the source already finished is no longer running,
	 * whatever the destination's record says for a moment */
	json_array_foreach(run.arr, k, rec)
		if (!json_object_get(done.idx, s_of(rec, "id")))
			json_array_append(running, rec);
	json_decref(run.arr);
	json_decref(run.idx);
	json_decref(done.idx);
	return json_pack("{s:o, s:o}", "running", sorted(running, SIZE_MAX),
			 "history", sorted(done.arr, UI_HISTORY_MAX));
}

static json_t *balance_json(struct ui *ui)
{
	struct ui_hoststate *c = ui->controller;

	if (!c)
		return json_null();
	return json_pack("{s:s, s:b, s:O?, s:O?, s:O?, s:o}", "controller",
			 c->host->name, "reachable", c->reachable, "status",
			 reply_of(c, RES_BALANCE), "plan", reply_of(c, RES_PLAN),
			 "drains", reply_of(c, RES_DRAINS), "errors",
			 errors_json(c));
}

json_t *ui_state_json(struct ui *ui)
{
	json_t *hosts = json_array(), *vms = json_array(), *migs, *alarms;
	json_t *o;

	for (size_t i = 0; i < ui->nhosts; i++) {
		json_array_append_new(hosts, host_json(&ui->hosts[i]));
		add_vms(&ui->hosts[i], vms);
	}
	migs = migrations_json(ui);
	alarms = json_array();
	ui_alarms(ui, vms, migs, alarms);
	o = json_pack("{s:I, s:s, s:i, s:o, s:o, s:o, s:o, s:o}", "now",
		      (json_int_t)wall_ms(), "identity", ui->identity,
		      "poll_ms",
		      (int)(ui->cfg->poll_ms ? ui->cfg->poll_ms
					     : UI_POLL_MS_DEFAULT),
		      "hosts", hosts, "vms", vms, "migrations", migs,
		      "balance", balance_json(ui), "alarms", alarms);
	return o;
}
