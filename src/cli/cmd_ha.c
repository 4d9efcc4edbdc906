/* cmd_ha.c - `ferry ha enable|status|disable|failover` (docs/ha.md). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
	fprintf(stderr,
		"usage: ferry ha enable NAME --backup HOST [--interval 10s]\n"
		"       ferry ha status [NAME] | ha disable NAME [--force] | "
		"ha failover NAME\n");
	return EXIT_USAGE;
}

/* "N" or "Ns": seconds, 1..3600. */
static int parse_interval(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (end == s || (*end && strcmp(end, "s") != 0) || v < 1 || v > 3600)
		return -1;
	*out = v;
	return 0;
}

static void print_status(const json_t *st)
{
	static const char *const keys[] = { "vm",     "role",	"backup",
					    "primary", "health", "alarm",
					    "interval_s", "checkpoints",
					    "failures", "lease_holder", "lease",
					    NULL };
	const json_t *last = json_object_get(st, "last_checkpoint");
	const json_t *pause = json_object_get(st, "pause_ms");

	print_kv(st, keys);
	if (last)
		printf("last checkpoint  #%lld, %.1f s ago, %lld bytes "
		       "(%lld pages), pause %.1f ms\n",
		       (long long)json_integer_value(json_object_get(last, "seq")),
		       json_integer_value(json_object_get(last, "age_ms")) /
			       1000.0,
		       (long long)json_integer_value(
			       json_object_get(last, "bytes")),
		       (long long)json_integer_value(
			       json_object_get(last, "pages")),
		       json_real_value(json_object_get(last, "pause_ms")));
	if (pause)
		printf("pause            median %.1f ms, p99 %.1f ms (%lld "
		       "checkpoints)\n",
		       json_real_value(json_object_get(pause, "median")),
		       json_real_value(json_object_get(pause, "p99")),
		       (long long)json_integer_value(
			       json_object_get(pause, "samples")));
}

int cmd_ha(const struct cli_opts *o, int argc, char **argv)
{
	struct cli_config cfg;
	const struct cli_host *h, *dst = NULL;
	struct client c = { 0 };
	struct ferr err = { 0 };
	json_t *body = NULL, *reply = NULL;
	const char *verb, *method = "GET";
	char path[128];
	uint64_t interval = 10;
	int rc = EXIT_OK;

	if (argc < 1 || argc > 2)
		return usage();
	verb = argv[0];
	if (!strcmp(verb, "enable")) {
		if (argc != 2 ||
		    cli_check_opts(o, OPT_BACKUP | OPT_INTERVAL, "ha enable"))
			return EXIT_USAGE;
		if (!o->backup) {
			fprintf(stderr, "ferry: error: --backup HOST is "
					"required\n");
			return EXIT_USAGE;
		}
		if (o->interval && parse_interval(o->interval, &interval) < 0) {
			fprintf(stderr, "ferry: error: --interval takes 1 to "
					"3600 seconds, e.g. 10s\n");
			return EXIT_USAGE;
		}
	} else if (!strcmp(verb, "status")) {
		if (cli_check_opts(o, 0, "ha status"))
			return EXIT_USAGE;
	} else if (!strcmp(verb, "disable")) {
		if (argc != 2 || cli_check_opts(o, OPT_FORCE, "ha disable"))
			return EXIT_USAGE;
	} else if (!strcmp(verb, "failover")) {
		if (argc != 2 || cli_check_opts(o, 0, "ha"))
			return EXIT_USAGE;
	} else {
		return usage();
	}
	if (argc == 2 && !name_is_valid(argv[1])) {
		fprintf(stderr, "ferry: error: \"%s\" is not a valid VM name\n",
			argv[1]);
		return EXIT_USAGE;
	}
	if (cli_connect(o, &cfg, &h, &c, &err) < 0)
		return cli_fail(&err);
	if (!strcmp(verb, "enable")) {
		dst = cli_host_find(&cfg, o->backup, &err);
		if (!dst) {
			rc = cli_fail(&err);
			goto out;
		}
		body = json_pack("{s:s, s:s, s:i, s:I}", "backup", dst->name,
				 "address", dst->address, "port",
				 (int)dst->port, "interval_s",
				 (json_int_t)interval);
		method = "POST";
		snprintf(path, sizeof(path), "/v1/vms/%s/ha", argv[1]);
	} else if (!strcmp(verb, "disable")) {
		method = "DELETE";
		snprintf(path, sizeof(path), "/v1/vms/%s/ha", argv[1]);
		if (o->force)
			body = json_pack("{s:b}", "force", 1);
	} else if (!strcmp(verb, "failover")) {
		method = "POST";
		snprintf(path, sizeof(path), "/v1/vms/%s/failover", argv[1]);
	} else if (argc == 2) {
		snprintf(path, sizeof(path), "/v1/vms/%s/ha", argv[1]);
	} else {
		snprintf(path, sizeof(path), "/v1/ha");
	}
	if (client_call(&c, h, method, path, body, &reply, &err) < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	if (o->json) {
		print_json(reply);
	} else if (!strcmp(verb, "enable")) {
		printf("vm %s protected by %s every %llu s\n", argv[1],
		       dst->name, (unsigned long long)interval);
	} else if (!strcmp(verb, "disable")) {
		printf("vm %s: HA disabled\n", argv[1]);
	} else if (!strcmp(verb, "failover")) {
		printf("vm %s now runs on %s\n", argv[1],
		       json_string_value(json_object_get(reply, "runs_on")));
	} else if (argc == 2) {
		print_status(reply);
	} else {
		static const char *const cols[] = { "vm", "role", "health",
						    "backup", "checkpoints",
						    NULL };
		static const char *const hdrs[] = { "VM", "ROLE", "HEALTH",
						    "BACKUP", "CHECKPOINTS",
						    NULL };

		print_table(json_object_get(reply, "ha"), cols, hdrs);
	}
out:
	json_decref(reply);
	json_decref(body);
	client_free(&c);
	return rc;
}
