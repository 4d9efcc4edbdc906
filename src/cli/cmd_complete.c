/* cmd_complete.c - `ferry complete hosts|vms`: names for the shell's
 * completion (dist/bash-completion/ferry), one per line: the hosts of the
 * client config, or the VMs of a host (--host, else the default one). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int cmd_complete(const struct cli_opts *o, int argc, char **argv)
{
	struct cli_config cfg;
	const struct cli_host *host;
	struct client c = { 0 };
	struct ferr err = { 0 };
	json_t *reply = NULL, *vm;
	size_t i;

	if (argc != 1 ||
	    (strcmp(argv[0], "hosts") != 0 && strcmp(argv[0], "vms") != 0)) {
		fprintf(stderr, "usage: ferry complete hosts|vms\n");
		return EXIT_USAGE;
	}
	if (cli_check_opts(o, 0, "complete") != 0)
		return EXIT_USAGE;
	if (!strcmp(argv[0], "hosts")) {
		if (cli_config_load(o->config, &cfg, &err) < 0)
			return cli_fail(&err);
		for (i = 0; i < cfg.nhosts; i++)
			printf("%s\n", cfg.hosts[i].name);
		return EXIT_OK;
	}
	if (cli_connect(o, &cfg, &host, &c, &err) < 0 ||
	    client_call(&c, host, "GET", "/v1/vms", NULL, &reply, &err) < 0) {
		client_free(&c);
		return cli_fail(&err);
	}
	json_array_foreach(json_object_get(reply, "vms"), i, vm) {
		const char *name =
			json_string_value(json_object_get(vm, "name"));

		/* names from the host are hostile: print valid ones only */
		if (name && name_is_valid(name))
			printf("%s\n", name);
	}
	json_decref(reply);
	client_free(&c);
	return EXIT_OK;
}
