/* opts.c - the `ferry` command line's options (one table), option checks
 * per command and the connection set-up every command shares. */
#define _GNU_SOURCE
#include "cli.h"

#include <ctype.h>
#include <getopt.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

enum opt_kind {
	K_FLAG,   /* bool field set to true */
	K_STRING, /* const char * field = optarg */
	K_U64,    /* uint64_t field, parsed within [min, max] */
	K_U32,    /* unsigned field, parsed within [min, max] */
	K_TIME,   /* uint64_t ms field: a UTC time or seconds since the epoch */
	K_SAN,    /* append to a NULL-terminated list of CLI_SANS_MAX */
};

struct opt_row {
	const char *name; /* long option, without "--" */
	uint64_t bit;
	enum opt_kind kind;
	size_t off;       /* field in struct cli_opts */
	uint64_t min, max;
	const char *what; /* the value's description in errors */
};

#define F(field) offsetof(struct cli_opts, field)

/* Every option; the index of a row is its getopt value. */
static const struct opt_row rows[] = {
	{ "config", OPT_CONFIG, K_STRING, F(config), 0, 0, NULL },
	{ "host", OPT_HOST, K_STRING, F(host), 0, 0, NULL },
	{ "json", OPT_JSON, K_FLAG, F(json), 0, 0, NULL },
	{ "force", OPT_FORCE, K_FLAG, F(force), 0, 0, NULL },
	{ "timeout", OPT_TIMEOUT, K_U32, F(timeout_s), 1,
	  FERRY_STOP_TIMEOUT_S_MAX, "seconds" },
	{ "no-wait", OPT_NO_WAIT, K_FLAG, F(no_wait), 0, 0, NULL },
	{ "follow", OPT_FOLLOW, K_FLAG, F(follow), 0, 0, NULL },
	{ "dir", OPT_DIR, K_STRING, F(dir), 0, 0, NULL },
	{ "ip", OPT_IP, K_SAN, F(ips), 0, 0, NULL },
	{ "dns", OPT_DNS, K_SAN, F(dns), 0, 0, NULL },
	{ "days", OPT_DAYS, K_U32, F(days), 1, FERRY_CERT_DAYS_MAX, "days" },
	{ "cluster", OPT_CLUSTER, K_STRING, F(cluster), 0, 0, NULL },
	{ "offset", OPT_OFFSET, K_U64, F(offset), 0, INT64_MAX,
	  "a byte offset" },
	{ "to", OPT_TO, K_STRING, F(to), 0, 0, NULL },
	{ "offline", OPT_OFFLINE, K_FLAG, F(offline), 0, 0, NULL },
	{ "postcopy", OPT_POSTCOPY, K_FLAG, F(postcopy), 0, 0, NULL },
	{ "max-downtime", OPT_MAX_DOWNTIME, K_U64, F(max_downtime_ms), 1,
	  60000, "ms" },
	{ "bandwidth", OPT_BANDWIDTH, K_U64, F(bandwidth_mibps), 1, 1000000,
	  "MiB/s" },
	{ "channels", OPT_CHANNELS, K_U64, F(channels), 1, 15, "channels" },
	{ "insecure", OPT_INSECURE, K_FLAG, F(insecure), 0, 0, NULL },
	{ "max-time", OPT_MAX_TIME, K_U64, F(max_time_s), 5, 86400,
	  "seconds" },
	{ "cancel", OPT_CANCEL, K_FLAG, F(cancel), 0, 0, NULL },
	{ "log", OPT_LOG, K_STRING, F(log), 0, 0, NULL },
	{ "key", OPT_KEY, K_STRING, F(key), 0, 0, NULL },
	{ "since", OPT_SINCE, K_TIME, F(since_ms), 0, 0, NULL },
	{ "until", OPT_UNTIL, K_TIME, F(until_ms), 0, 0, NULL },
	{ "vm", OPT_VM, K_STRING, F(vm), 0, 0, NULL },
	{ "actor", OPT_ACTOR, K_STRING, F(actor), 0, 0, NULL },
	{ "action", OPT_ACTION, K_STRING, F(action), 0, 0, NULL },
	{ "limit", OPT_LIMIT, K_U64, F(limit), 1, FERRY_AUDIT_QUERY_MAX,
	  "records" },
	{ "port", OPT_PORT, K_U32, F(port), 0, 65535, "a TCP port" },
	{ "policy", OPT_POLICY, K_STRING, F(policy), 0, 0, NULL },
	{ "ferryd", OPT_FERRYD, K_STRING, F(ferryd), 0, 0, NULL },
	{ "backup", OPT_BACKUP, K_STRING, F(backup), 0, 0, NULL },
	{ "interval", OPT_INTERVAL, K_STRING, F(interval), 0, 0, NULL },
	{ "compress", OPT_COMPRESS, K_STRING, F(compress), 0, 0, NULL },
};

#define NROWS (sizeof(rows) / sizeof(rows[0]))
#define OPT_HELP 1000
#define OPT_VERSION 1001

_Static_assert(NROWS <= 64, "struct cli_opts.set has 64 bits");

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

/* Store optarg for row r into o. Returns 0 or EXIT_USAGE (printed). */
static int store(const struct opt_row *r, struct cli_opts *o,
		 const char *arg)
{
	char *field = (char *)o + r->off;
	uint64_t v;

	switch (r->kind) {
	case K_FLAG:
		*(bool *)field = true;
		break;
	case K_STRING:
		*(const char **)field = arg;
		break;
	case K_U64:
	case K_U32:
		if (parse_u64(arg, r->min, r->max, &v) < 0) {
			fprintf(stderr,
				"ferry: error: --%s must be %llu..%llu %s\n",
				r->name, (unsigned long long)r->min,
				(unsigned long long)r->max, r->what);
			return EXIT_USAGE;
		}
		if (r->kind == K_U64)
			*(uint64_t *)field = v;
		else
			*(unsigned *)field = (unsigned)v;
		break;
	case K_TIME:
		if (parse_time(arg, (uint64_t *)field) < 0) {
			fprintf(stderr,
				"ferry: error: --%s takes a UTC time "
				"YYYY-MM-DDTHH:MM:SSZ or seconds since the "
				"epoch\n",
				r->name);
			return EXIT_USAGE;
		}
		break;
	case K_SAN: {
		const char **list = (const char **)field;
		int i = 0;

		while (i < CLI_SANS_MAX && list[i])
			i++;
		if (i == CLI_SANS_MAX) {
			fprintf(stderr, "ferry: error: at most %d --%s\n",
				CLI_SANS_MAX, r->name);
			return EXIT_USAGE;
		}
		list[i] = arg;
		break;
	}
	}
	o->set |= r->bit;
	return 0;
}

int cli_parse_opts(int argc, char **argv, struct cli_opts *o,
		   void (*usage)(FILE *))
{
	struct option lopts[NROWS + 3];
	int c;

	for (size_t i = 0; i < NROWS; i++)
		lopts[i] = (struct option){ rows[i].name,
					    rows[i].kind == K_FLAG
						    ? no_argument
						    : required_argument,
					    NULL, (int)i };
	lopts[NROWS] = (struct option){ "help", no_argument, NULL, OPT_HELP };
	lopts[NROWS + 1] =
		(struct option){ "version", no_argument, NULL, OPT_VERSION };
	lopts[NROWS + 2] = (struct option){ NULL, 0, NULL, 0 };
	/* GNU getopt permutes: options may come before or after the
	 * command words, which end up in order from optind on */
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		int rc;

		if (c == 'h' || c == OPT_HELP) {
			usage(stdout);
			return EXIT_OK;
		}
		if (c == OPT_VERSION) {
			printf("ferry %s\n", FERRY_VERSION);
			return EXIT_OK;
		}
		if (c < 0 || (size_t)c >= NROWS) {
			usage(stderr);
			return EXIT_USAGE;
		}
		rc = store(&rows[c], o, optarg);
		if (rc)
			return rc;
	}
	return -1;
}

void cli_usage_options(FILE *f)
{
	size_t col = 0;

	fputs("options (ferry(1) says which commands take each):\n", f);
	for (size_t i = 0; i < NROWS; i++) {
		char word[64], arg[32] = "";
		const char *r = rows[i].name;
		size_t k = 0;

		switch (rows[i].kind) {
		case K_FLAG:
			break;
		case K_U64:
		case K_U32:
			snprintf(arg, sizeof(arg), " N");
			break;
		case K_TIME:
			snprintf(arg, sizeof(arg), " TIME");
			break;
		default: /* a string: the option's name in capitals */
			arg[k++] = ' ';
			for (; *r && k < sizeof(arg) - 1; r++)
				arg[k++] = *r == '-' ? '_' : (char)toupper(*r);
			arg[k] = '\0';
		}
		snprintf(word, sizeof(word), "[--%s%s]", rows[i].name, arg);
		if (col && col + 1 + strlen(word) > 76) {
			fputc('\n', f);
			col = 0;
		}
		col += (size_t)fprintf(f, "%s%s", col ? " " : "  ", word);
	}
	fputs("\n  [--help] [--version]\n", f);
}

int cli_check_opts(const struct cli_opts *o, uint64_t allowed,
		   const char *cmd)
{
	uint64_t bad = o->set & ~(allowed | OPT_GLOBAL);

	for (size_t i = 0; i < NROWS; i++) {
		if (bad & rows[i].bit) {
			fprintf(stderr,
				"ferry: error: option --%s does not apply to "
				"'%s'\n",
				rows[i].name, cmd);
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
