/* cmd_migrate.c - `ferry migrate NAME --to HOST`, with a live progress bar,
 * `ferry migrate --cancel NAME` and `ferry migrate history`. */
#define _GNU_SOURCE
#include "cli.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define PROGRESS_INTERVAL_US (250 * 1000)
#define BAR_WIDTH 24
#define MIB (1024.0 * 1024.0)

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	g_interrupted = 1;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: ferry migrate NAME --to HOST [--offline|--postcopy]\n"
		"         [--max-downtime MS] [--bandwidth MIBPS] [--channels "
		"N]\n"
		"         [--max-time S] [--compress auto|on|off] [--insecure] "
		"[--json]\n"
		"       ferry migrate --cancel NAME\n"
		"       ferry migrate history [--json]\n");
	return EXIT_USAGE;
}

static double num(const json_t *o, const char *key)
{
	return json_number_value(json_object_get(o, key));
}

static const char *str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

/* One progress line, redrawn in place on a terminal. */
static void draw_progress(const json_t *rec, bool tty)
{
	const json_t *p = json_object_get(rec, "progress");
	double pct = num(p, "percent");
	int fill = (int)(pct / 100.0 * BAR_WIDTH + 0.5);
	char bar[BAR_WIDTH + 1];

	if (fill < 0)
		fill = 0;
	if (fill > BAR_WIDTH)
		fill = BAR_WIDTH;
	memset(bar, '#', (size_t)fill);
	memset(bar + fill, '-', (size_t)(BAR_WIDTH - fill));
	bar[BAR_WIDTH] = '\0';
	fprintf(stdout,
		"%s[%s] %5.1f%% %-10s iter %-3.0f %7.1f MiB/s  dirty %6.0f "
		"pages/s  left %7.1f MiB  exp. downtime %4.0f ms  %5.1f s%s",
		tty ? "\r\033[K" : "", bar, pct, str(rec, "phase"),
		num(p, "iteration"), num(p, "mbps") / 8.0 * 1e6 / MIB,
		num(p, "dirty_pages_rate"), num(p, "ram_remaining") / MIB,
		num(p, "expected_downtime_ms"), num(p, "elapsed_ms") / 1000.0,
		tty ? "" : "\n");
	fflush(stdout);
}

/* The final summary of a migration record. */
static void print_summary(const json_t *rec)
{
	const char *outcome = str(rec, "outcome");
	const json_t *att = json_object_get(rec, "attestation");
	const json_t *ctx = json_object_get(rec, "context");

	/* the destination's quote, checked in prepare before any memory */
	if (json_is_true(json_object_get(att, "verified")))
		printf("destination %s attested before any memory moved: quote "
		       "verified against its enrolled AK, %zu events allowed "
		       "for %s (quote %.0f ms, check %.0f ms)\n",
		       str(att, "host"),
		       json_array_size(json_object_get(att, "events")),
		       str(att, "scope"), num(att, "quote_ms"),
		       num(att, "verify_ms"));
	else if (att)
		printf("destination %s NOT attested: %s\n", str(att, "host"),
		       str(att, "reason"));

	if (!strcmp(outcome, "completed")) {
		printf("vm %s migrated from %s to %s in %.2f s: downtime %.0f "
		       "ms, %.1f MiB of RAM, %.1f MiB on the wire, mean %.2f "
		       "Gbit/s, %.0f iterations\n",
		       str(rec, "vm"), str(rec, "source"),
		       str(rec, "destination"), num(rec, "total_ms") / 1000.0,
		       num(rec, "downtime_ms"), num(rec, "ram_bytes") / MIB,
		       num(rec, "wire_bytes") / MIB,
		       num(rec, "mean_mbps") / 1000.0, num(rec, "iterations"));
		if (ctx)
			printf("security context: %.0f tracked flows carried "
			       "and imported in %.0f ms before the VM resumed "
			       "on %s\n",
			       num(ctx, "flows"), num(ctx, "ms"),
			       str(rec, "destination"));
	} else {
		printf("migration of vm %s from %s to %s %s after %.2f s%s%s\n",
		       str(rec, "vm"), str(rec, "source"),
		       str(rec, "destination"), outcome,
		       num(rec, "total_ms") / 1000.0,
		       json_object_get(rec, "error") ? ": " : "",
		       str(rec, "error"));
	}
}

/* JSON line for --json output: the record with an "event" tag. */
static void print_event(const char *event, const json_t *rec)
{
	json_t *o = json_deep_copy(rec);

	json_object_set_new(o, "event", json_string(event));
	print_json(o);
	fflush(stdout);
	json_decref(o);
}

/* Poll the migration until it ends; SIGINT cancels it. */
static int follow(const struct cli_opts *o, struct client *c,
		  const struct cli_host *h, const char *id, json_t **last,
		  struct ferr *err)
{
	bool tty = isatty(STDOUT_FILENO) && !o->json;
	bool cancel_sent = false;
	char path[128];

	snprintf(path, sizeof(path), "/v1/migrations/%s", id);
	for (;;) {
		json_t *rec = NULL;

		if (client_call(c, h, "GET", path, NULL, &rec, err) < 0)
			return -1;
		if (strcmp(str(rec, "outcome"), "running") != 0) {
			if (tty)
				fputc('\n', stdout);
			*last = rec;
			return 0;
		}
		if (o->json)
			print_event("progress", rec);
		else
			draw_progress(rec, tty);
		json_decref(rec);
		if (g_interrupted && !cancel_sent) {
			char cpath[160];
			json_t *r = NULL;

			snprintf(cpath, sizeof(cpath), "%s/cancel", path);
			fprintf(stderr, "\nferry: cancelling the migration\n");
			if (client_call(c, h, "POST", cpath, NULL, &r, err) < 0)
				return -1;
			json_decref(r);
			cancel_sent = true;
		}
		usleep(PROGRESS_INTERVAL_US);
	}
}

/* ferry migrate history */
static int history(const struct cli_opts *o, struct client *c,
		   const struct cli_host *h, struct ferr *err)
{
	static const char *const cols[] = { "id8", "vm", "role", "peer",
					    "mode", "outcome", "total_s",
					    "downtime_ms", "ram_mib", "error",
					    NULL };
	static const char *const heads[] = { "ID", "VM", "ROLE", "PEER",
					     "MODE", "OUTCOME", "TOTAL(s)",
					     "DOWNTIME(ms)", "RAM(MiB)",
					     "ERROR", NULL };
	json_t *reply = NULL, *arr, *rec;
	size_t i;

	if (client_call(c, h, "GET", "/v1/migrations", NULL, &reply, err) < 0)
		return -1;
	arr = json_object_get(reply, "migrations");
	if (o->json) {
		print_json(reply);
		json_decref(reply);
		return 0;
	}
	json_array_foreach(arr, i, rec) {
		char id8[9], buf[32];
		bool src = !strcmp(str(rec, "role"), "source");

		snprintf(id8, sizeof(id8), "%s", str(rec, "id"));
		json_object_set_new(rec, "id8", json_string(id8));
		json_object_set_new(rec, "peer",
				    json_string(src ? str(rec, "destination")
						    : str(rec, "source")));
		snprintf(buf, sizeof(buf), "%.2f", num(rec, "total_ms") / 1000.0);
		json_object_set_new(rec, "total_s", json_string(buf));
		snprintf(buf, sizeof(buf), "%.1f", num(rec, "ram_bytes") / MIB);
		json_object_set_new(rec, "ram_mib", json_string(buf));
	}
	print_table(arr, cols, heads);
	json_decref(reply);
	return 0;
}

/* ferry migrate --cancel NAME */
static int cancel(const struct cli_opts *o, struct client *c,
		  const struct cli_host *h, const char *vm, struct ferr *err)
{
	char path[128];
	json_t *info = NULL, *r = NULL;
	const char *id;

	snprintf(path, sizeof(path), "/v1/vms/%s", vm);
	if (client_call(c, h, "GET", path, NULL, &info, err) < 0)
		return -1;
	id = json_string_value(json_object_get(info, "active_migration"));
	if (!id || !strcmp(str(info, "state"), "incoming")) {
		json_decref(info);
		return ferr_set(err, FERR_CONFLICT,
				"vm %s has no outgoing migration on host %s",
				vm, h->name);
	}
	snprintf(path, sizeof(path), "/v1/migrations/%s/cancel", id);
	if (client_call(c, h, "POST", path, NULL, &r, err) < 0) {
		json_decref(info);
		return -1;
	}
	if (o->json)
		print_json(r);
	else
		printf("migration %s of vm %s: cancel requested\n", id, vm);
	json_decref(r);
	json_decref(info);
	return 0;
}

int cmd_migrate(const struct cli_opts *o, int argc, char **argv)
{
	const uint64_t run_opts = OPT_TO | OPT_OFFLINE | OPT_POSTCOPY |
				  OPT_MAX_DOWNTIME | OPT_BANDWIDTH |
				  OPT_CHANNELS | OPT_INSECURE | OPT_MAX_TIME |
				  OPT_NO_WAIT | OPT_COMPRESS;
	struct cli_config cfg;
	const struct cli_host *h, *dst;
	struct client c = { 0 };
	struct ferr err = { 0 };
	json_t *body = NULL, *reply = NULL, *last = NULL;
	char path[128];
	int rc = EXIT_OK;

	if (argc != 1)
		return usage();
	if (!strcmp(argv[0], "history")) {
		if (cli_check_opts(o, 0, "migrate history"))
			return EXIT_USAGE;
	} else if (o->cancel) {
		if (cli_check_opts(o, OPT_CANCEL, "migrate --cancel"))
			return EXIT_USAGE;
	} else {
		if (cli_check_opts(o, run_opts, "migrate"))
			return EXIT_USAGE;
		if (!o->to) {
			fprintf(stderr, "ferry: error: --to HOST is required\n");
			return EXIT_USAGE;
		}
		if (o->offline && o->postcopy) {
			fprintf(stderr, "ferry: error: --offline and "
					"--postcopy exclude each other\n");
			return EXIT_USAGE;
		}
	}
	if (strcmp(argv[0], "history") && !name_is_valid(argv[0])) {
		fprintf(stderr, "ferry: error: \"%s\" is not a valid VM name\n",
			argv[0]);
		return EXIT_USAGE;
	}
	if (cli_connect(o, &cfg, &h, &c, &err) < 0)
		return cli_fail(&err);
	if (!strcmp(argv[0], "history")) {
		if (history(o, &c, h, &err) < 0)
			rc = cli_fail(&err);
		goto out;
	}
	if (o->cancel) {
		if (cancel(o, &c, h, argv[0], &err) < 0)
			rc = cli_fail(&err);
		goto out;
	}
	dst = cli_host_find(&cfg, o->to, &err);
	if (!dst) {
		rc = cli_fail(&err);
		goto out;
	}
	body = json_pack("{s:s, s:s, s:i, s:s, s:b}", "to", dst->name,
			 "address", dst->address, "port", (int)dst->port,
			 "mode",
			 o->offline    ? "offline"
			 : o->postcopy ? "postcopy"
				       : "live",
			 "insecure", o->insecure);
	if (o->max_downtime_ms)
		json_object_set_new(body, "max_downtime_ms",
				    json_integer((json_int_t)o->max_downtime_ms));
	if (o->bandwidth_mibps)
		json_object_set_new(body, "bandwidth_mibps",
				    json_integer((json_int_t)o->bandwidth_mibps));
	if (o->channels)
		json_object_set_new(body, "channels",
				    json_integer((json_int_t)o->channels));
	if (o->max_time_s)
		json_object_set_new(body, "max_time_s",
				    json_integer((json_int_t)o->max_time_s));
	if (o->compress) /* ferryd checks the value */
		json_object_set_new(body, "compress",
				    json_string(o->compress));
	if (o->insecure)
		fprintf(stderr, "ferry: WARNING: --insecure: guest memory will "
				"cross the network unencrypted and "
				"unauthenticated\n");
	snprintf(path, sizeof(path), "/v1/vms/%s/migrate", argv[0]);
	if (client_call(&c, h, "POST", path, body, &reply, &err) < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	if (!o->json && json_object_get(reply, "ha"))
		/* a protected VM: its protection ended here and follows it */
		printf("vm %s: HA protection handed over: %s protects it "
		       "once it arrives (backup %s, or another)\n",
		       argv[0], dst->name,
		       str(json_object_get(reply, "ha"), "backup"));
	if (o->no_wait) {
		if (o->json)
			print_event("started", reply);
		else
			printf("migration %s of vm %s to %s started\n",
			       str(reply, "id"), argv[0], dst->name);
		goto out;
	}
	if (o->json)
		print_event("started", reply);
	signal(SIGINT, on_sigint);
	if (follow(o, &c, h, str(reply, "id"), &last, &err) < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	if (o->json)
		print_event("summary", last);
	else
		print_summary(last);
	if (strcmp(str(last, "outcome"), "completed") != 0) {
		ferr_set(&err, FERR_UNAVAILABLE, "migration of vm %s %s%s%s",
			 argv[0], str(last, "outcome"),
			 json_object_get(last, "error") ? ": " : "",
			 str(last, "error"));
		fprintf(stderr, "ferry: error: %s\n", err.msg);
		rc = EXIT_FAILED;
	}
out:
	json_decref(last);
	json_decref(reply);
	json_decref(body);
	client_free(&c);
	return rc;
}
