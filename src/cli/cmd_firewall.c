/* cmd_firewall.c - `ferry vm firewall show|set|clear NAME`, and the
 * firewall part of `ferry vm info` (docs/cli.md). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static int usage(void)
{
	fprintf(stderr,
		"usage: ferry vm firewall show NAME\n"
		"       ferry vm firewall set NAME FILE|-   (the rules, JSON)\n"
		"       ferry vm firewall clear NAME        (the cluster default "
		"applies)\n"
		"  (all take --host NAME --json --config FILE)\n");
	return EXIT_USAGE;
}

/* The counter of rule (a number or a name) in one direction's list. */
static const json_t *counter_of(const json_t *list, const json_t *rule)
{
	size_t i;
	json_t *c;

	json_array_foreach(list, i, c)
		if (json_equal(json_object_get(c, "rule"), rule))
			return c;
	return NULL;
}

/* One line of the table; cnt NULL: "-" for its counters, or the headers
 * when num is "#". */
static void print_row(const char *num, const char *dir, const char *action,
		      const char *proto, const char *port, const char *peer,
		      const json_t *cnt)
{
	bool head = !strcmp(num, "#");
	char pk[24], by[24];

	snprintf(pk, sizeof(pk), "%s", head ? "PACKETS" : "-");
	snprintf(by, sizeof(by), "%s", head ? "BYTES" : "-");
	if (cnt) {
		snprintf(pk, sizeof(pk), "%lld",
			 (long long)json_integer_value(
				 json_object_get(cnt, "packets")));
		snprintf(by, sizeof(by), "%lld",
			 (long long)json_integer_value(
				 json_object_get(cnt, "bytes")));
	}
	printf("  %-4s %-4s %-7s %-7s %-12s %-20s %10s %12s\n", num, dir,
	       action, proto, port, peer, pk, by);
}

void print_firewall(const json_t *fw)
{
	const json_t *rules = json_object_get(fw, "rules");
	const json_t *inst = json_object_get(fw, "installed");
	const json_t *cnt = json_object_get(inst, "counters");
	const char *dirs[] = { "in", "out" };
	size_t i;
	json_t *r;

	if (!json_is_object(rules)) {
		printf("firewall: none (origin: %s)\n",
		       json_string_value(json_object_get(fw, "origin")) ?: "?");
		return;
	}
	printf("firewall: default %s (origin: %s)",
	       json_string_value(json_object_get(rules, "default")) ?: "?",
	       json_string_value(json_object_get(fw, "origin")) ?: "?");
	if (json_is_true(json_object_get(inst, "installed")))
		printf(", on tap %s\n",
		       json_string_value(json_object_get(inst, "tap")) ?: "?");
	else
		printf(", not installed (the VM does not run here)\n");
	print_row("#", "DIR", "ACTION", "PROTO", "PORT", "PEER", NULL);
	json_array_foreach(json_object_get(rules, "rules"), i, r) {
		const char *dir = json_string_value(json_object_get(r, "dir"));
		const json_t *port = json_object_get(r, "port");
		const json_t *peer = json_object_get(r, "from")
					     ?: json_object_get(r, "to");
		json_t *idx = json_integer((json_int_t)i);
		char num[16], ports[16] = "any";

		snprintf(num, sizeof(num), "%zu", i);
		if (json_is_integer(port))
			snprintf(ports, sizeof(ports), "%lld",
				 (long long)json_integer_value(port));
		else if (json_is_string(port))
			snprintf(ports, sizeof(ports), "%s",
				 json_string_value(port));
		print_row(num, dir ?: "?",
			  json_string_value(json_object_get(r, "action")) ?: "?",
			  json_string_value(json_object_get(r, "proto")) ?: "?",
			  ports, json_string_value(peer) ?: "any",
			  counter_of(json_object_get(cnt, dir ?: ""), idx));
		json_decref(idx);
	}
	for (int d = 0; d < 2; d++) {
		const char *names[] = { "established", "invalid", "not_syn",
					"default" };

		for (int k = 0; k < 4; k++) {
			json_t *name = json_string(names[k]);
			const json_t *c = counter_of(json_object_get(cnt, dirs[d]),
						     name);

			json_decref(name);
			if (c || k == 3)
				print_row("-", dirs[d],
					  k == 0 ? "accept"
					  : k < 3
						  ? "drop"
						  : json_string_value(json_object_get(
							    rules, "default")) ?: "?",
					  names[k], "", "", c);
		}
	}
}

int cmd_vm_firewall(const struct cli_opts *o, int argc, char **argv)
{
	struct cli_config cfg;
	const struct cli_host *h;
	struct client c = { 0 };
	struct ferr err = { 0 };
	json_t *reply = NULL, *body = NULL;
	const char *verb;
	char path[256];
	int rc = EXIT_OK;

	if (argc < 2 || cli_check_opts(o, 0, "vm firewall"))
		return usage();
	verb = argv[0];
	if (!((!strcmp(verb, "show") && argc == 2) ||
	      (!strcmp(verb, "clear") && argc == 2) ||
	      (!strcmp(verb, "set") && argc == 3)))
		return usage();
	if (!name_is_valid(argv[1])) {
		fprintf(stderr, "ferry: error: \"%s\" is not a valid VM name\n",
			argv[1]);
		return EXIT_USAGE;
	}
	if (!strcmp(verb, "set")) {
		json_t *rules = cli_read_json(argv[2], &err);

		if (!rules)
			return cli_fail(&err);
		body = json_pack("{s:o}", "firewall", rules);
	} else if (!strcmp(verb, "clear")) {
		body = json_pack("{s:n}", "firewall");
	}
	if (cli_connect(o, &cfg, &h, &c, &err) < 0) {
		json_decref(body);
		return cli_fail(&err);
	}
	snprintf(path, sizeof(path), "/v1/vms/%s/firewall", argv[1]);
	if (client_call(&c, h, body ? "POST" : "GET", path, body, &reply,
			&err) < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	if (o->json)
		print_json(reply);
	else if (body)
		printf("vm %s: firewall %s\n", argv[1],
		       !strcmp(verb, "set") ? "set" : "cleared (the cluster "
						      "default applies)");
	else
		print_firewall(reply);
out:
	json_decref(reply);
	json_decref(body);
	client_free(&c);
	return rc;
}
