/* ferry - command line client of ferryd. */
#define _GNU_SOURCE
#include "attest.h"
#include "cli.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry [--config FILE] [--host NAME] [--json] COMMAND\n"
		"commands:\n"
		"  host info | host drain HOST | host undrain HOST\n"
		"  host enroll HOST | host attest HOST   (--dir PKI --policy "
		"FILE)\n"
		"  host reseal --ferryd FERRYD_JSON --dir PKI\n"
		"  balance status | balance plan | balance mode "
		"off|recommend|auto\n"
		"  vm list | define FILE | info NAME | start NAME | stop NAME\n"
		"     | pause NAME | resume NAME | delete NAME | console NAME\n"
		"  migrate NAME --to HOST [--offline|--postcopy] [--max-downtime "
		"MS]\n"
		"     [--bandwidth MIBPS] [--channels N] [--max-time S] "
		"[--insecure]\n"
		"     [--compress auto|on|off]\n"
		"  migrate --cancel NAME | migrate history\n"
		"  audit verify [--log FILE --key FILE] | audit show [--since T]\n"
		"     [--until T] [--vm NAME] [--actor ID] [--action A] [--limit "
		"N]\n"
		"  ha enable NAME --backup HOST [--interval 10s] | ha status "
		"[NAME]\n"
		"     | ha disable NAME | ha failover NAME\n"
		"  policy reload | policy digest FILE\n"
		"  ui [--port N]       the web dashboard (docs/dashboard.md)\n"
		"  pki init | host NAME | user NAME   (--dir DIR)\n"
		"  complete hosts | complete vms   names for shell completion\n"
		"see docs/cli.md; exit codes: 0 ok, 1 failed, 2 usage,\n"
		"3 host unreachable or TLS refused, 4 not found\n");
	cli_usage_options(f);
}

/* The command groups: the first word after the options. */
static const struct {
	const char *name;
	int (*fn)(const struct cli_opts *o, int argc, char **argv);
} groups[] = {
	{ "host", cmd_host },       { "vm", cmd_vm },
	{ "pki", cmd_pki },         { "migrate", cmd_migrate },
	{ "audit", cmd_audit },     { "policy", cmd_policy },
	{ "balance", cmd_balance }, { "ui", cmd_ui },
	{ "ha", cmd_ha },
	{ "complete", cmd_complete },
};

int main(int argc, char **argv)
{
	struct cli_opts o = { 0 };
	int rc;

	signal(SIGPIPE, SIG_IGN);
	setenv(ATTEST_TSS2_LOG_ENV, ATTEST_TSS2_LOG_QUIET, 0);
	rc = cli_parse_opts(argc, argv, &o, usage);
	if (rc >= 0)
		return rc;
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
		if (!strcmp(argv[optind], groups[i].name))
			return groups[i].fn(&o, argc - optind - 1,
					    argv + optind + 1);
	fprintf(stderr, "ferry: error: unknown command \"%s\"\n",
		argv[optind]);
	usage(stderr);
	return EXIT_USAGE;
}
