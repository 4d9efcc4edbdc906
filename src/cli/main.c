/* ferry - command line client of ferryd. */
#define _GNU_SOURCE
#include "cli.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry [--config FILE] [--host NAME] [--json] COMMAND\n"
		"commands:\n"
		"  host info | host drain HOST | host undrain HOST\n"
		"  balance status | balance plan | balance mode "
		"off|recommend|auto\n"
		"  vm list | define FILE | info NAME | start NAME | stop NAME\n"
		"     | pause NAME | resume NAME | delete NAME | console NAME\n"
		"  migrate NAME --to HOST [--offline|--postcopy] [--max-downtime "
		"MS]\n"
		"     [--bandwidth MIBPS] [--channels N] [--max-time S] "
		"[--insecure]\n"
		"  migrate --cancel NAME | migrate history\n"
		"  audit verify [--log FILE --key FILE] | audit show [--since T]\n"
		"     [--until T] [--vm NAME] [--actor ID] [--action A] [--limit "
		"N]\n"
		"  policy reload\n"
		"  pki init | host NAME | user NAME   (--dir DIR)\n"
		"see docs/cli.md; exit codes: 0 ok, 1 failed, 2 usage,\n"
		"3 host unreachable or TLS refused, 4 not found\n");
}

int cli_check_opts(const struct cli_opts *o, unsigned allowed,
		   const char *cmd)
{
	static const char *const names[] = {
		"--config", "--host", "--json", "--force", "--timeout",
		"--no-wait", "--follow", "--dir", "--ip", "--dns", "--days",
		"--cluster", "--offset", "--to", "--offline", "--postcopy",
		"--max-downtime", "--bandwidth", "--channels", "--insecure",
		"--max-time", "--cancel", "--log", "--key", "--since",
		"--until", "--vm", "--actor", "--action", "--limit",
	};
	unsigned bad = o->set & ~(allowed | OPT_GLOBAL);

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (bad & (1u << i)) {
			fprintf(stderr,
				"ferry: error: option %s does not apply to "
				"'%s'\n",
				names[i], cmd);
			return EXIT_USAGE;
		}
	}
	return 0;
}

int cli_connect(const struct cli_opts *o, struct cli_config *cfg,
		const struct cli_host **host, struct client *c,
		struct ferr *err)
{
	unsigned t = o->timeout_s > CLI_TIMEOUT_S_DEFAULT
			     ? o->timeout_s
			     : CLI_TIMEOUT_S_DEFAULT;

	if (cli_config_load(o->config, cfg, err) < 0)
		return -1;
	*host = cli_host_find(cfg, o->host, err);
	if (!*host)
		return -1;
	return client_init(c, cfg, t, err);
}

/* A UTC time "YYYY-MM-DDTHH:MM:SSZ" or seconds since the epoch, in ms. */
static int parse_time(const char *s, uint64_t *ms)
{
	struct tm tm = { 0 };
	uint64_t secs;
	const char *end;

	if (parse_u64(s, 0, UINT32_MAX, &secs) == 0) {
		*ms = secs * 1000;
		return 0;
	}
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!end || *end)
		return -1;
	*ms = (uint64_t)timegm(&tm) * 1000;
	return 0;
}

/* Append value to a NULL-terminated list of at most CLI_SANS_MAX. */
static int add_san(const char **list, const char *v)
{
	for (int i = 0; i < CLI_SANS_MAX; i++) {
		if (!list[i]) {
			list[i] = v;
			return 0;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "host", required_argument, NULL, 'H' },
		{ "json", no_argument, NULL, 'j' },
		{ "force", no_argument, NULL, 'f' },
		{ "timeout", required_argument, NULL, 't' },
		{ "no-wait", no_argument, NULL, 'W' },
		{ "follow", no_argument, NULL, 'F' },
		{ "dir", required_argument, NULL, 'd' },
		{ "ip", required_argument, NULL, 'i' },
		{ "dns", required_argument, NULL, 'n' },
		{ "days", required_argument, NULL, 'D' },
		{ "cluster", required_argument, NULL, 'C' },
		{ "offset", required_argument, NULL, 'o' },
		{ "to", required_argument, NULL, 'T' },
		{ "offline", no_argument, NULL, 'O' },
		{ "postcopy", no_argument, NULL, 'P' },
		{ "max-downtime", required_argument, NULL, 'M' },
		{ "bandwidth", required_argument, NULL, 'B' },
		{ "channels", required_argument, NULL, 'N' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "max-time", required_argument, NULL, 'X' },
		{ "cancel", no_argument, NULL, 'K' },
		{ "log", required_argument, NULL, 'L' },
		{ "key", required_argument, NULL, 'k' },
		{ "since", required_argument, NULL, 's' },
		{ "until", required_argument, NULL, 'u' },
		{ "vm", required_argument, NULL, 'v' },
		{ "actor", required_argument, NULL, 'a' },
		{ "action", required_argument, NULL, 'A' },
		{ "limit", required_argument, NULL, 'Z' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_opts o = { 0 };
	uint64_t v;
	int c;

	signal(SIGPIPE, SIG_IGN);
	while ((c = getopt_long(argc, argv, "c:H:jft:WFd:i:n:D:C:o:T:OPM:B:N:IX:KL:k:s:u:v:a:A:Z:hV", opts,
				NULL)) != -1) {
		switch (c) {
		case 'c':
			o.config = optarg;
			o.set |= OPT_CONFIG;
			break;
		case 'H':
			o.host = optarg;
			o.set |= OPT_HOST;
			break;
		case 'j':
			o.json = true;
			o.set |= OPT_JSON;
			break;
		case 'f':
			o.force = true;
			o.set |= OPT_FORCE;
			break;
		case 't':
			if (parse_u64(optarg, 1, FERRY_STOP_TIMEOUT_S_MAX,
				      &v) < 0) {
				fprintf(stderr, "ferry: error: --timeout must "
						"be 1..%d seconds\n",
					FERRY_STOP_TIMEOUT_S_MAX);
				return EXIT_USAGE;
			}
			o.timeout_s = (unsigned)v;
			o.set |= OPT_TIMEOUT;
			break;
		case 'W':
			o.no_wait = true;
			o.set |= OPT_NO_WAIT;
			break;
		case 'F':
			o.follow = true;
			o.set |= OPT_FOLLOW;
			break;
		case 'd':
			o.dir = optarg;
			o.set |= OPT_DIR;
			break;
		case 'i':
		case 'n':
			if (add_san(c == 'i' ? o.ips : o.dns, optarg) < 0) {
				fprintf(stderr, "ferry: error: at most %d "
						"--ip and %d --dns\n",
					CLI_SANS_MAX, CLI_SANS_MAX);
				return EXIT_USAGE;
			}
			o.set |= c == 'i' ? OPT_IP : OPT_DNS;
			break;
		case 'D':
			if (parse_u64(optarg, 1, FERRY_CERT_DAYS_MAX, &v) < 0) {
				fprintf(stderr, "ferry: error: --days must be "
						"1..%d\n",
					FERRY_CERT_DAYS_MAX);
				return EXIT_USAGE;
			}
			o.days = (unsigned)v;
			o.set |= OPT_DAYS;
			break;
		case 'C':
			o.cluster = optarg;
			o.set |= OPT_CLUSTER;
			break;
		case 'o':
			if (parse_u64(optarg, 0, INT64_MAX, &o.offset) < 0) {
				fprintf(stderr, "ferry: error: --offset must "
						"be a byte offset\n");
				return EXIT_USAGE;
			}
			o.set |= OPT_OFFSET;
			break;
		case 'T':
			o.to = optarg;
			o.set |= OPT_TO;
			break;
		case 'O':
			o.offline = true;
			o.set |= OPT_OFFLINE;
			break;
		case 'P':
			o.postcopy = true;
			o.set |= OPT_POSTCOPY;
			break;
		case 'I':
			o.insecure = true;
			o.set |= OPT_INSECURE;
			break;
		case 'K':
			o.cancel = true;
			o.set |= OPT_CANCEL;
			break;
		case 'M':
		case 'B':
		case 'N':
		case 'X': {
			static const struct {
				int opt;
				const char *name;
				uint64_t min, max;
				unsigned bit;
			} nums[] = {
				{ 'M', "--max-downtime (ms)", 1, 60000,
				  OPT_MAX_DOWNTIME },
				{ 'B', "--bandwidth (MiB/s)", 1, 1000000,
				  OPT_BANDWIDTH },
				{ 'N', "--channels", 1, 15, OPT_CHANNELS },
				{ 'X', "--max-time (s)", 5, 86400, OPT_MAX_TIME },
			};
			uint64_t *dst[] = { &o.max_downtime_ms,
					    &o.bandwidth_mibps, &o.channels,
					    &o.max_time_s };

			for (int k = 0; k < 4; k++) {
				if (nums[k].opt != c)
					continue;
				if (parse_u64(optarg, nums[k].min, nums[k].max,
					      dst[k]) < 0) {
					fprintf(stderr,
						"ferry: error: %s must be "
						"%llu..%llu\n",
						nums[k].name,
						(unsigned long long)nums[k].min,
						(unsigned long long)nums[k].max);
					return EXIT_USAGE;
				}
				o.set |= nums[k].bit;
			}
			break;
		}
		case 'L':
			o.log = optarg;
			o.set |= OPT_LOG;
			break;
		case 'k':
			o.key = optarg;
			o.set |= OPT_KEY;
			break;
		case 's':
		case 'u':
			if (parse_time(optarg, c == 's' ? &o.since_ms
							: &o.until_ms) < 0) {
				fprintf(stderr,
					"ferry: error: --%s takes a UTC time "
					"YYYY-MM-DDTHH:MM:SSZ or seconds since "
					"the epoch\n",
					c == 's' ? "since" : "until");
				return EXIT_USAGE;
			}
			o.set |= c == 's' ? OPT_SINCE : OPT_UNTIL;
			break;
		case 'v':
			o.vm = optarg;
			o.set |= OPT_VM;
			break;
		case 'a':
			o.actor = optarg;
			o.set |= OPT_ACTOR;
			break;
		case 'A':
			o.action = optarg;
			o.set |= OPT_ACTION;
			break;
		case 'Z':
			if (parse_u64(optarg, 1, FERRY_AUDIT_QUERY_MAX,
				      &o.limit) < 0) {
				fprintf(stderr, "ferry: error: --limit must be "
						"1..%d\n",
					FERRY_AUDIT_QUERY_MAX);
				return EXIT_USAGE;
			}
			o.set |= OPT_LIMIT;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'V':
			printf("ferry %s\n", FERRY_VERSION);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[optind], "host"))
		return cmd_host(&o, argc - optind - 1, argv + optind + 1);
	if (!strcmp(argv[optind], "vm"))
		return cmd_vm(&o, argc - optind - 1, argv + optind + 1);
	if (!strcmp(argv[optind], "pki"))
		return cmd_pki(&o, argc - optind - 1, argv + optind + 1);
	if (!strcmp(argv[optind], "migrate"))
		return cmd_migrate(&o, argc - optind - 1, argv + optind + 1);
	if (!strcmp(argv[optind], "audit"))
		return cmd_audit(&o, argc - optind - 1, argv + optind + 1);
	if (!strcmp(argv[optind], "policy"))
		return cmd_policy(&o, argc - optind - 1, argv + optind + 1);
	if (!strcmp(argv[optind], "balance"))
		return cmd_balance(&o, argc - optind - 1, argv + optind + 1);
	fprintf(stderr, "ferry: error: unknown command \"%s\"\n",
		argv[optind]);
	usage(stderr);
	return EXIT_USAGE;
}
