/* cmd_host.c - `ferry host info`; drains are in cmd_balance.c, enroll,
 * attest and reseal in cmd_attest.c. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int cmd_host(const struct cli_opts *o, int argc, char **argv)
{
	static const char *const keys[] = {
		"name", "version", "address", "port", "accel", "cpus",
		"memory_total_mib", "memory_available_mib",
		"memory_committed_mib", "vms_defined", "vms_active",
		"draining", NULL
	};
	struct cli_config cfg;
	const struct cli_host *host;
	struct client c = { 0 };
	struct ferr err = { 0 };
	json_t *reply = NULL;
	int rc;

	if (argc == 2 &&
	    (!strcmp(argv[0], "drain") || !strcmp(argv[0], "undrain")))
		return cmd_host_drain(o, argv[0], argv[1]);
	if (argc >= 1 &&
	    (!strcmp(argv[0], "enroll") || !strcmp(argv[0], "attest") ||
	     !strcmp(argv[0], "reseal")))
		return cmd_host_attest(o, argc, argv);
	if (argc != 1 || strcmp(argv[0], "info") != 0) {
		fprintf(stderr, "usage: ferry host info [--host NAME]\n"
				"       ferry host drain|undrain HOST\n"
				"       ferry host enroll|attest HOST --dir PKI "
				"[--policy FILE]\n"
				"       ferry host reseal --ferryd FILE --dir "
				"PKI\n");
		return EXIT_USAGE;
	}
	if (cli_check_opts(o, 0, "host info") != 0)
		return EXIT_USAGE;
	if (cli_connect(o, &cfg, &host, &c, &err) < 0)
		return cli_fail(&err);
	if (client_call(&c, host, "GET", "/v1/host", NULL, &reply, &err) < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	if (o->json)
		print_json(reply);
	else
		print_kv(reply, keys);
	rc = EXIT_OK;
out:
	json_decref(reply);
	client_free(&c);
	return rc;
}
