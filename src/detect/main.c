/* main.c - ferry-detect: see migrations from outside the hypervisor and
 * raise an alarm for each one the hosts' audit logs do not explain
 * (docs/detection.md). */
#define _GNU_SOURCE
#include "detect_int.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry-detect run|watch [options]\n"
		"       ferry-detect alarms [--state-dir DIR] [--json]\n"
		"       ferry-detect replay --csv FILE [--source remote|local]\n"
		"                    [--target ADDR] [detector options]\n"
		"       ferry-detect --version\n"
		"options of run and watch:\n"
		"  --config FILE        client.json with an auditor identity\n"
		"  --state-dir DIR      state.json, events.jsonl, series.csv,\n"
		"                       audit/ (default ./ferry-detect)\n"
		"  --netns NAME         probe and listen in this network "
		"namespace\n"
		"  --iface IF           listen for RARP/ARP announcements on IF;\n"
		"                       a migration then needs one\n"
		"  --icmp-suffices      with --iface: ICMP signatures alone may\n"
		"                       still report a migration\n"
		"  --target ADDR[=VM]   ping ADDR (repeatable)\n"
		"  --from-hosts         also every bridged VM with ferry.ip=,\n"
		"                       as the hosts list them\n"
		"  --local VM           read VM's own probes from its console\n"
		"  --interval MS        probe interval (50)\n"
		"  --timeout MS         a probe is lost after this (1000)\n"
		"  --stall-ms MS        no answer this long is a stall (150)\n"
		"  --cusum-h X          CUSUM threshold (4)\n"
		"  --quiet-ms MS        an event ends after this long quiet "
		"(3000)\n"
		"  --min-confidence X   report migrations from this (0.5)\n"
		"  --max-stop-ms MS     longest stop taken for a switchover "
		"(1500)\n"
		"  --api-interval MS    read the hosts this often (1000)\n"
		"  --grace MS           wait this long for audit records (2000)\n"
		"  --duration S         stop after S seconds (0: on a signal)\n"
		"  --json               JSON lines on stdout\n"
		"  --no-series          keep no series.csv (a line per probe)\n"
		"  --log-level L        debug, info, warn, error (info)\n");
}

static int num(const char *s, uint64_t min, uint64_t max, unsigned *out)
{
	uint64_t v;

	if (parse_u64(s, min, max, &v) < 0)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int real(const char *s, double min, double max, double *out)
{
	char *end;
	double v = strtod(s, &end);

	if (!*s || *end || !(v >= min && v <= max))
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, 0, 'c' },
		{ "state-dir", required_argument, 0, 's' },
		{ "netns", required_argument, 0, 'n' },
		{ "iface", required_argument, 0, 'i' },
		{ "target", required_argument, 0, 't' },
		{ "from-hosts", no_argument, 0, 'F' },
		{ "local", required_argument, 0, 'L' },
		{ "interval", required_argument, 0, 'I' },
		{ "timeout", required_argument, 0, 'T' },
		{ "stall-ms", required_argument, 0, 'S' },
		{ "cusum-h", required_argument, 0, 'H' },
		{ "quiet-ms", required_argument, 0, 'Q' },
		{ "min-confidence", required_argument, 0, 'M' },
		{ "api-interval", required_argument, 0, 'A' },
		{ "grace", required_argument, 0, 'G' },
		{ "duration", required_argument, 0, 'D' },
		{ "json", no_argument, 0, 'j' },
		{ "log-level", required_argument, 0, 'l' },
		{ "csv", required_argument, 0, 'C' },
		{ "source", required_argument, 0, 'R' },
		{ "max-stop-ms", required_argument, 0, 'P' },
		{ "icmp-suffices", no_argument, 0, 'X' },
		{ "no-series", no_argument, 0, 'N' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 }
	};
	struct dt_opts o = { .state_dir = "ferry-detect", .timeout_ms = 1000,
			     .api_interval_ms = 1000, .grace_ms = 2000 };
	struct ferr err = { 0 };
	const char *cmd, *csv = NULL, *source = "remote";
	bool icmp_suffices = false;
	int c, li = 0, bad = 0;

	det_params_default(&o.det);
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("ferry-detect %s\n", FERRY_VERSION);
		return 0;
	}
	cmd = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "", opts, &li)) != -1) {
		switch (c) {
		case 'c': o.config = optarg; break;
		case 's': o.state_dir = optarg; break;
		case 'n': o.netns = optarg; break;
		case 'i': o.iface = optarg; break;
		case 't':
			if (o.ntargets >= DT_TARGETS_MAX)
				bad = 1;
			else
				o.targets[o.ntargets++] = optarg;
			break;
		case 'F': o.from_hosts = true; break;
		case 'L':
			if (o.nlocal >= DT_TARGETS_MAX || !name_is_valid(optarg))
				bad = 1;
			else
				o.local_vms[o.nlocal++] = optarg;
			break;
		case 'I': bad |= num(optarg, 10, 10000, &o.det.interval_ms); break;
		case 'T': bad |= num(optarg, 50, 60000, &o.timeout_ms); break;
		case 'S': bad |= num(optarg, 50, 60000, &o.det.stall_ms); break;
		case 'H': bad |= real(optarg, 0.1, 1000, &o.det.cusum_h); break;
		case 'Q': bad |= num(optarg, 100, 600000, &o.det.quiet_ms); break;
		case 'M': bad |= real(optarg, 0, 1, &o.det.min_confidence); break;
		case 'A': bad |= num(optarg, 100, 600000, &o.api_interval_ms); break;
		case 'G': bad |= num(optarg, 0, 600000, &o.grace_ms); break;
		case 'D': bad |= num(optarg, 0, 86400 * 365, &o.duration_s); break;
		case 'j': o.json = true; break;
		case 'N': o.no_series = true; break;
		case 'C': csv = optarg; break;
		case 'X': icmp_suffices = true; break;
		case 'R': source = optarg; break;
		case 'P': bad |= num(optarg, 100, 600000, &o.det.max_stop_ms); break;
		case 'l':
			if (!strcmp(optarg, "debug"))
				log_set_level(LOG_DEBUG);
			else if (!strcmp(optarg, "info"))
				log_set_level(LOG_INFO);
			else if (!strcmp(optarg, "warn"))
				log_set_level(LOG_WARN);
			else if (!strcmp(optarg, "error"))
				log_set_level(LOG_ERROR);
			else
				bad = 1;
			break;
		case 'h': usage(stdout); return 0;
		default: return 2; /* getopt_long said why */
		}
		if (bad) {
			fprintf(stderr, "ferry-detect: bad value for --%s\n",
				opts[li].name);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(cmd, "alarms")) {
		if (dt_alarms(o.state_dir, o.json, &err) < 0) {
			fprintf(stderr, "ferry-detect: %s\n", err.msg);
			return 1;
		}
		return 0;
	}
	if (!strcmp(cmd, "replay")) {
		if (!csv || o.ntargets > 1) {
			usage(stderr);
			return 2;
		}
		if (dt_replay(csv, o.ntargets ? o.targets[0] : NULL, source,
			      &o.det, o.timeout_ms, &err) < 0) {
			fprintf(stderr, "ferry-detect: %s\n", err.msg);
			return 1;
		}
		return 0;
	}
	if (strcmp(cmd, "run") && strcmp(cmd, "watch")) {
		usage(stderr);
		return 2;
	}
	o.watch = !strcmp(cmd, "watch");
	/* listening for announcements: a migration needs one (ICMP alone is
	 * ambiguous under host CPU load and link floods, detection.md) */
	o.det.require_announce = o.iface && !icmp_suffices;
	if (dt_run(&o, &err) < 0) {
		fprintf(stderr, "ferry-detect: %s\n", err.msg);
		return 1;
	}
	return 0;
}
