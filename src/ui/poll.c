/* poll.c - fetch every host at once, every round, with asynchronous HTTPS
 * requests on the dashboard's loop. Each request has a deadline; a host
 * whose request is still in flight is not asked again, so a slow or
 * unreachable host never holds up the others. */
#include "ui_int.h"
#include "httpc.h"

#include <string.h>

static const char *const res_path[RES_COUNT] = {
	[RES_INFO] = "/v1/host",
	[RES_VMS] = "/v1/vms",
	[RES_LOAD] = "/v1/load",
	[RES_MIGS] = "/v1/migrations",
	[RES_BALANCE] = "/v1/balance",
	[RES_PLAN] = "/v1/balance/plan",
	[RES_DRAINS] = "/v1/balance/drains",
};

struct ui_hoststate *ui_host_state(struct ui *ui, const char *name)
{
	for (size_t i = 0; i < ui->nhosts; i++)
		if (!strcmp(ui->hosts[i].host->name, name))
			return &ui->hosts[i];
	return NULL;
}

/* A load report becomes a chart sample. */
static void add_sample(struct ui_hoststate *hs, const json_t *load)
{
	struct ui_sample *s = &hs->series[hs->next];
	const json_t *vm;
	size_t i;

	s->ts = (uint64_t)json_integer_value(json_object_get(load, "ts"));
	if (!s->ts)
		s->ts = wall_ms();
	s->cpu = json_number_value(json_object_get(load, "cpu_util"));
	s->mem_mib = json_number_value(
		json_object_get(load, "memory_committed_mib"));
	s->dirty_mibps = 0;
	json_array_foreach(json_object_get(load, "vms"), i, vm)
		s->dirty_mibps +=
			json_number_value(json_object_get(vm, "dirty_mibps"));
	hs->next = (hs->next + 1) % UI_SERIES_MAX;
	if (hs->nseries < UI_SERIES_MAX)
		hs->nseries++;
}

static void on_fetched(int status, json_t *reply, const struct ferr *err,
		       void *arg)
{
	struct ui_fetch *f = arg;
	struct ui_hoststate *hs = f->hs;

	f->busy = false;
	if (!reply) {
		/* no HTTP answer: the host is unreachable */
		hs->reachable = false;
		snprintf(hs->error, sizeof(hs->error), "%s", err->msg);
		snprintf(f->error, sizeof(f->error), "%s", err->msg);
	} else {
		hs->reachable = hs->answered = true;
		hs->error[0] = '\0';
		hs->last_ok_ms = wall_ms();
		if (status >= 200 && status < 300) {
			json_decref(f->reply);
			f->reply = reply;
			f->error[0] = '\0';
			if (f->res == RES_LOAD)
				add_sample(hs, reply);
		} else {
			/* e.g. 403: the operator may not read this */
			const char *m = json_string_value(json_object_get(
				json_object_get(reply, "error"), "message"));

			snprintf(f->error, sizeof(f->error), "HTTP %d: %s",
				 status, m ? m : "refused");
			json_decref(reply);
		}
	}
}

static void fetch(struct ui_fetch *f)
{
	struct ui_hoststate *hs = f->hs;
	struct ui *ui = hs->ui;
	struct httpc_peer peer = { .name = hs->host->name,
				   .address = hs->host->address,
				   .port = hs->host->port };
	struct ferr err = { 0 };

	if (f->busy || ui->stopping)
		return;
	if (httpc_start(ui->base, ui->ctx, &peer, ui->timeout_s, "GET",
			res_path[f->res], NULL, on_fetched, f, &err) < 0) {
		snprintf(f->error, sizeof(f->error), "%s", err.msg);
		return;
	}
	f->busy = true;
}

void ui_poll_host(struct ui_hoststate *hs)
{
	for (int r = RES_VMS; r <= RES_MIGS; r++)
		fetch(&hs->fetch[r]);
	if (hs->rounds % UI_HOST_INFO_EVERY == 0 || !hs->fetch[RES_INFO].reply)
		fetch(&hs->fetch[RES_INFO]);
	if (hs->is_controller)
		for (int r = RES_BALANCE; r <= RES_DRAINS; r++)
			fetch(&hs->fetch[r]);
	hs->rounds++;
}

void ui_poll_round(struct ui *ui)
{
	for (size_t i = 0; i < ui->nhosts; i++)
		ui_poll_host(&ui->hosts[i]);
}

void ui_poll_free(struct ui *ui)
{
	for (size_t i = 0; i < ui->nhosts; i++)
		for (int r = 0; r < RES_COUNT; r++)
			json_decref(ui->hosts[i].fetch[r].reply);
}
