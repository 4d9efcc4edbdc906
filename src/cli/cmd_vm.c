/* cmd_vm.c - `ferry vm define|start|stop|pause|resume|delete|list|info|
 * console` (and `firewall`: cmd_firewall.c). */
#define _GNU_SOURCE
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POLL_INTERVAL_US (250 * 1000)
#define STOP_GRACE_S 15 /* beyond the stop timeout: quit, then SIGKILL */

static int usage(void)
{
	fprintf(stderr,
		"usage: ferry vm list\n"
		"       ferry vm define FILE|-\n"
		"       ferry vm sign FILE --dir PKI   (signs its constraints)\n"
		"       ferry vm info|start|pause|delete NAME\n"
		"       ferry vm resume NAME [--force]\n"
		"       ferry vm stop NAME [--force] [--timeout S] [--no-wait]\n"
		"       ferry vm console NAME [--follow] [--offset N]\n"
		"       ferry vm firewall show|set|clear NAME [FILE|-]\n"
		"  (all take --host NAME --json --config FILE)\n");
	return EXIT_USAGE;
}

json_t *cli_read_json(const char *path, struct ferr *err)
{
	json_error_t jerr;
	json_t *obj;
	FILE *f = strcmp(path, "-") ? fopen(path, "re") : stdin;

	if (!f) {
		ferr_set(err, FERR_INVALID, "cannot open %s", path);
		return NULL;
	}
	obj = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
	if (f != stdin)
		fclose(f);
	if (!obj) {
		ferr_set(err, FERR_INVALID, "%s: line %d: %s", path, jerr.line,
			 jerr.text);
		return NULL;
	}
	if (json_check_depth(obj, path, err) < 0) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

static void print_vm(const struct cli_opts *o, const json_t *vm)
{
	static const char *const keys[] = {
		"name", "uuid", "state", "memory_mib", "vcpus", "pid",
		"uptime_s", "kernel", "initrd", "cmdline", "disk", "network",
		"last_error", NULL
	};

	if (o->json)
		print_json(vm);
	else
		print_kv(vm, keys);
}

static void print_state(const struct cli_opts *o, const json_t *vm)
{
	if (o->json) {
		print_json(vm);
		return;
	}
	printf("vm %s: %s", json_string_value(json_object_get(vm, "name")),
	       json_string_value(json_object_get(vm, "state")));
	if (json_integer_value(json_object_get(vm, "pid")) > 0)
		printf(" (QEMU pid %lld)",
		       (long long)json_integer_value(json_object_get(vm, "pid")));
	printf("\n");
}

static int vm_list(const struct cli_opts *o, struct client *c,
		   const struct cli_host *h, struct ferr *err)
{
	static const char *const cols[] = { "name", "state", "memory",
					    "vcpus", "pid", "uptime_s", NULL };
	static const char *const heads[] = { "NAME", "STATE", "MEMORY",
					     "VCPUS", "PID", "UPTIME(s)",
					     NULL };
	json_t *reply = NULL, *vms, *vm;
	size_t i;

	if (client_call(c, h, "GET", "/v1/vms", NULL, &reply, err) < 0)
		return -1;
	vms = json_object_get(reply, "vms");
	if (o->json) {
		print_json(reply);
	} else {
		json_array_foreach(vms, i, vm) {
			const char *st = json_string_value(
				json_object_get(vm, "state"));
			char mem[32];

			fmt_mib((uint64_t)json_integer_value(
					json_object_get(vm, "memory_mib")),
				mem, sizeof(mem));
			json_object_set_new(vm, "memory", json_string(mem));
			/* left paused by a migration of unknown outcome */
			if (st && !strcmp(st, "unresolved"))
				json_object_set_new(
					vm, "state",
					json_string("migrating (unresolved)"));
		}
		print_table(vms, cols, heads);
	}
	json_decref(reply);
	return 0;
}

/* Poll the VM until its state is want or the deadline passes. */
static int wait_state(struct client *c, const struct cli_host *h,
		      const char *path, const char *want, unsigned timeout_s,
		      json_t **last, struct ferr *err)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_s * 1000u;

	for (;;) {
		json_t *vm = NULL;

		if (client_call(c, h, "GET", path, NULL, &vm, err) < 0)
			return -1;
		if (!strcmp(json_string_value(json_object_get(vm, "state"))
				    ?: "",
			    want)) {
			*last = vm;
			return 0;
		}
		json_decref(vm);
		if (now_ms() >= deadline)
			return ferr_set(err, FERR_TIMEOUT,
					"the VM did not reach state %s within "
					"%u s",
					want, timeout_s);
		usleep(POLL_INTERVAL_US);
	}
}

static int vm_console(const struct cli_opts *o, struct client *c,
		      const struct cli_host *h, const char *name,
		      struct ferr *err)
{
	uint64_t offset = o->offset;

	for (;;) {
		char path[256];
		json_t *reply = NULL;
		const char *data;
		json_int_t next;

		snprintf(path, sizeof(path), "/v1/vms/%s/console?offset=%llu",
			 name, (unsigned long long)offset);
		if (client_call(c, h, "GET", path, NULL, &reply, err) < 0)
			return -1;
		if (o->json) {
			print_json(reply);
		} else {
			data = json_string_value(json_object_get(reply, "data"));
			fputs(data ? data : "", stdout);
		}
		fflush(stdout);
		next = json_integer_value(json_object_get(reply, "next"));
		json_decref(reply);
		if (next >= 0 && (uint64_t)next > offset) {
			offset = (uint64_t)next;
			continue; /* more may be there already */
		}
		if (!o->follow)
			return 0;
		usleep(POLL_INTERVAL_US * 2);
	}
}

int cmd_vm(const struct cli_opts *o, int argc, char **argv)
{
	struct cli_config cfg;
	const struct cli_host *h;
	struct client c = { 0 };
	struct ferr err = { 0 };
	json_t *reply = NULL, *body = NULL;
	const char *verb;
	char path[256];
	int rc = EXIT_OK;

	if (argc < 1)
		return usage();
	verb = argv[0];
	if (!strcmp(verb, "firewall"))
		return cmd_vm_firewall(o, argc - 1, argv + 1);
	if (!strcmp(verb, "list")) {
		if (argc != 1 || cli_check_opts(o, 0, "vm list"))
			return usage();
	} else if (argc != 2) {
		return usage();
	} else if (!strcmp(verb, "sign")) {
		if (cli_check_opts(o, OPT_DIR, "vm sign"))
			return EXIT_USAGE;
		return cmd_vm_sign(o, argv[1]);
	} else if (!strcmp(verb, "stop")) {
		if (cli_check_opts(o, OPT_FORCE | OPT_NO_WAIT, "vm stop"))
			return EXIT_USAGE;
	} else if (!strcmp(verb, "console")) {
		if (cli_check_opts(o, OPT_FOLLOW | OPT_OFFSET, "vm console"))
			return EXIT_USAGE;
	} else if (!strcmp(verb, "resume")) {
		if (cli_check_opts(o, OPT_FORCE, "vm resume"))
			return EXIT_USAGE;
	} else if (!strcmp(verb, "define") || !strcmp(verb, "info") ||
		   !strcmp(verb, "start") || !strcmp(verb, "pause") ||
		   !strcmp(verb, "delete")) {
		if (cli_check_opts(o, 0, verb))
			return EXIT_USAGE;
	} else {
		return usage();
	}
	if (!strcmp(verb, "define")) {
		body = cli_read_json(argv[1], &err);
		if (!body)
			return cli_fail(&err);
	} else if (argc == 2 && !name_is_valid(argv[1])) {
		fprintf(stderr, "ferry: error: \"%s\" is not a valid VM name\n",
			argv[1]);
		return EXIT_USAGE;
	}
	if (cli_connect(o, &cfg, &h, &c, &err) < 0) {
		json_decref(body);
		return cli_fail(&err);
	}
	if (argc == 2)
		snprintf(path, sizeof(path), "/v1/vms/%s", argv[1]);

	if (!strcmp(verb, "list")) {
		if (vm_list(o, &c, h, &err) < 0)
			goto fail;
	} else if (!strcmp(verb, "define")) {
		if (client_call(&c, h, "POST", "/v1/vms", body, &reply, &err) <
		    0)
			goto fail;
		if (o->json)
			print_json(reply);
		else
			printf("vm %s: defined (uuid %s)\n",
			       json_string_value(json_object_get(reply, "name")),
			       json_string_value(
				       json_object_get(reply, "uuid")));
	} else if (!strcmp(verb, "info")) {
		json_t *fw = NULL;
		char fpath[300];

		if (client_call(&c, h, "GET", path, NULL, &reply, &err) < 0)
			goto fail;
		/* a bridged VM's rules and their counters */
		snprintf(fpath, sizeof(fpath), "%s/firewall", path);
		if (json_is_object(json_object_get(reply, "network")) &&
		    client_call(&c, h, "GET", fpath, NULL, &fw, &err) < 0)
			goto fail;
		if (o->json && fw)
			json_object_set_new(reply, "firewall_status", fw);
		print_vm(o, reply);
		if (!o->json && fw) {
			print_firewall(fw);
			json_decref(fw);
		}
	} else if (!strcmp(verb, "delete")) {
		if (client_call(&c, h, "DELETE", path, NULL, &reply, &err) < 0)
			goto fail;
		if (o->json)
			print_json(reply);
		else
			printf("vm %s: deleted\n", argv[1]);
	} else if (!strcmp(verb, "console")) {
		if (vm_console(o, &c, h, argv[1], &err) < 0)
			goto fail;
	} else if (!strcmp(verb, "stop")) {
		unsigned t = o->timeout_s ? o->timeout_s
					  : FERRY_STOP_TIMEOUT_S_DEFAULT;
		char vpath[300];

		body = json_pack("{s:b, s:I}", "force", o->force, "timeout_s",
				 (json_int_t)t);
		snprintf(vpath, sizeof(vpath), "%s/stop", path);
		if (client_call(&c, h, "POST", vpath, body, &reply, &err) < 0)
			goto fail;
		if (!o->no_wait) {
			json_decref(reply);
			reply = NULL;
			if (wait_state(&c, h, path, "shutoff",
				       (o->force ? 0 : t) + STOP_GRACE_S,
				       &reply, &err) < 0)
				goto fail;
		}
		print_state(o, reply);
	} else {
		/* start, pause, resume */
		char vpath[300];

		snprintf(vpath, sizeof(vpath), "%s/%s", path, verb);
		if (o->force)
			body = json_pack("{s:b}", "force", 1);
		if (client_call(&c, h, "POST", vpath, body, &reply, &err) < 0)
			goto fail;
		print_state(o, reply);
	}
	goto out;
fail:
	rc = cli_fail(&err);
out:
	json_decref(reply);
	json_decref(body);
	client_free(&c);
	return rc;
}
