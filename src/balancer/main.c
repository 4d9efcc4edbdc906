/* ferry-balancer - offline tool of the balancer's decision code: simulate a
 * trace under our controller and two baselines, generate synthetic traces,
 * benchmark one planning round (docs/balancer.md). */
#define _GNU_SOURCE
#include "balancer.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_FAILED 1
#define EXIT_USAGE 2

#define GEN_VMS_DEFAULT 200
#define GEN_INTERVALS_DEFAULT 288
#define BENCH_HOSTS_DEFAULT 10000
#define BENCH_VMS_DEFAULT 100000
#define BENCH_RUNS_DEFAULT 5
#define BENCH_RUNS_MAX 101
#define BENCH_POLICY_MOD 53  /* the bench policy refuses 1 pair in 53 */
#define PARAMS_MAX 64        /* --param options */
#define OSC_WINDOW_MAX 100000 /* intervals */
#define NS_PER_S 1e9
#define MS_PER_S 1e3

enum mode { MODE_NONE, MODE_SIMULATE, MODE_GENERATE, MODE_BENCH,
	    MODE_DEFAULTS };

struct opts {
	enum mode mode;
	const char *trace;
	enum bal_trace_kind kind;
	bool json;
	uint64_t hosts, vms, intervals, seed, runs;
	bool hosts_set, vms_set;
	struct bal_sim_config sim;
	const char *params[PARAMS_MAX];
	unsigned nparams;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry-balancer --simulate TRACE [--hosts N] [--cores C] "
		"[--mem-mib M]\n"
		"         [--interval-s S] [--placement round-robin|first-fit]\n"
		"         [--bandwidth MIBPS] [--mig-cpu CORES] [--osc-window "
		"INTERVALS]\n"
		"         [--param KEY=VALUE]... [--json]\n"
		"       ferry-balancer --generate diurnal|bursty|steady [--vms N] "
		"[--intervals T]\n"
		"         [--seed S] > trace.csv\n"
		"       ferry-balancer --bench-plan [--hosts 10000] [--vms "
		"100000] [--runs 5]\n"
		"         [--seed S] [--param KEY=VALUE]... [--json]\n"
		"       ferry-balancer --defaults\n"
		"see docs/balancer.md; exit codes: 0 ok, 1 failed, 2 usage\n");
}

static int num_opt(const char *name, const char *v, uint64_t min,
		   uint64_t max, uint64_t *out)
{
	if (parse_u64(v, min, max, out) < 0) {
		fprintf(stderr,
			"ferry-balancer: error: %s must be an integer between "
			"%llu and %llu\n",
			name, (unsigned long long)min,
			(unsigned long long)max);
		return -1;
	}
	return 0;
}

static int dec_opt(const char *name, const char *v, double max, double *out)
{
	if (bal_parse_decimal(v, max, out) < 0) {
		fprintf(stderr,
			"ferry-balancer: error: %s must be a decimal number "
			"between 0 and %g\n",
			name, max);
		return -1;
	}
	return 0;
}

static int set_mode(struct opts *o, enum mode m)
{
	if (o->mode != MODE_NONE) {
		fprintf(stderr, "ferry-balancer: error: give one of "
				"--simulate, --generate, --bench-plan, "
				"--defaults\n");
		return -1;
	}
	o->mode = m;
	return 0;
}

enum { O_SIM = 256, O_GEN, O_BENCH, O_DEFAULTS, O_HOSTS, O_CORES, O_MEM,
       O_INTERVAL, O_PLACEMENT, O_BW, O_MIGCPU, O_PARAM, O_JSON, O_VMS,
       O_INTERVALS, O_SEED, O_RUNS, O_OSC, O_HELP };

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "simulate", required_argument, NULL, O_SIM },
		{ "generate", required_argument, NULL, O_GEN },
		{ "bench-plan", no_argument, NULL, O_BENCH },
		{ "defaults", no_argument, NULL, O_DEFAULTS },
		{ "hosts", required_argument, NULL, O_HOSTS },
		{ "cores", required_argument, NULL, O_CORES },
		{ "mem-mib", required_argument, NULL, O_MEM },
		{ "interval-s", required_argument, NULL, O_INTERVAL },
		{ "placement", required_argument, NULL, O_PLACEMENT },
		{ "bandwidth", required_argument, NULL, O_BW },
		{ "mig-cpu", required_argument, NULL, O_MIGCPU },
		{ "param", required_argument, NULL, O_PARAM },
		{ "json", no_argument, NULL, O_JSON },
		{ "vms", required_argument, NULL, O_VMS },
		{ "intervals", required_argument, NULL, O_INTERVALS },
		{ "seed", required_argument, NULL, O_SEED },
		{ "runs", required_argument, NULL, O_RUNS },
		{ "osc-window", required_argument, NULL, O_OSC },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	o->seed = 1;
	o->runs = BENCH_RUNS_DEFAULT;
	bal_sim_default(&o->sim);
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		uint64_t u;
		int rc = 0;

		switch (ch) {
		case O_SIM:
			rc = set_mode(o, MODE_SIMULATE);
			o->trace = optarg;
			break;
		case O_GEN:
			rc = set_mode(o, MODE_GENERATE);
			if (!rc && bal_trace_kind_parse(optarg, &o->kind) < 0) {
				fprintf(stderr,
					"ferry-balancer: error: --generate "
					"takes diurnal, bursty or steady\n");
				rc = -1;
			}
			break;
		case O_BENCH:
			rc = set_mode(o, MODE_BENCH);
			break;
		case O_DEFAULTS:
			rc = set_mode(o, MODE_DEFAULTS);
			break;
		case O_HOSTS:
			rc = num_opt("--hosts", optarg, 2, BAL_HOSTS_MAX,
				     &o->hosts);
			o->hosts_set = true;
			break;
		case O_CORES:
			rc = dec_opt("--cores", optarg, BAL_CORES_MAX,
				     &o->sim.cores);
			break;
		case O_MEM:
			rc = num_opt("--mem-mib", optarg, FERRY_VM_MEM_MIN_MIB,
				     FERRY_VM_MEM_MAX_MIB * 1024, &u);
			o->sim.mem_mib = u;
			break;
		case O_INTERVAL:
			rc = num_opt("--interval-s", optarg, 1, 86400, &u);
			o->sim.interval_s = u;
			break;
		case O_PLACEMENT:
			if (!strcmp(optarg, "round-robin")) {
				o->sim.placement = BAL_PLACE_ROUND_ROBIN;
			} else if (!strcmp(optarg, "first-fit")) {
				o->sim.placement = BAL_PLACE_FIRST_FIT;
			} else {
				fprintf(stderr,
					"ferry-balancer: error: --placement "
					"takes round-robin or first-fit\n");
				rc = -1;
			}
			break;
		case O_BW:
			rc = dec_opt("--bandwidth", optarg, 1048576,
				     &o->sim.bandwidth_mibps);
			break;
		case O_MIGCPU:
			rc = dec_opt("--mig-cpu", optarg, 4096, &o->sim.mig_cpu);
			break;
		case O_PARAM:
			if (o->nparams == PARAMS_MAX) {
				fprintf(stderr, "ferry-balancer: error: at most "
						"%d --param\n",
					PARAMS_MAX);
				rc = -1;
				break;
			}
			o->params[o->nparams++] = optarg;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_VMS:
			rc = num_opt("--vms", optarg, 1, BAL_VMS_MAX, &o->vms);
			o->vms_set = true;
			break;
		case O_INTERVALS:
			rc = num_opt("--intervals", optarg, 1,
				     BAL_TRACE_INTERVALS_MAX, &o->intervals);
			break;
		case O_SEED:
			rc = num_opt("--seed", optarg, 0, UINT64_MAX, &o->seed);
			break;
		case O_RUNS:
			rc = num_opt("--runs", optarg, 1, BENCH_RUNS_MAX,
				     &o->runs);
			break;
		case O_OSC:
			rc = num_opt("--osc-window", optarg, 1, OSC_WINDOW_MAX,
				     &u);
			o->sim.osc_window = (unsigned)u;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			rc = -1;
			break;
		}
		if (rc < 0)
			return -1;
	}
	if (optind != argc) {
		fprintf(stderr, "ferry-balancer: error: unexpected argument "
				"\"%s\"\n",
			argv[optind]);
		return -1;
	}
	if (o->mode == MODE_NONE) {
		usage(stderr);
		return -1;
	}
	return 0;
}

/* Apply the --param KEY=VALUE options to p and check the result. */
static int apply_params(const struct opts *o, struct bal_params *p)
{
	struct ferr err = { 0 };

	for (unsigned i = 0; i < o->nparams; i++) {
		char key[FERRY_NAME_MAX + 1];
		const char *eq = strchr(o->params[i], '=');

		if (!eq || (size_t)(eq - o->params[i]) >= sizeof(key)) {
			fprintf(stderr, "ferry-balancer: error: --param takes "
					"KEY=VALUE\n");
			return -1;
		}
		memcpy(key, o->params[i], (size_t)(eq - o->params[i]));
		key[eq - o->params[i]] = '\0';
		if (bal_params_set(p, key, eq + 1, &err) < 0)
			goto bad;
	}
	if (bal_params_check(p, &err) < 0)
		goto bad;
	return 0;
bad:
	fprintf(stderr, "ferry-balancer: error: %s\n", err.msg);
	return -1;
}

static json_t *metrics_json(const struct bal_sim_metrics *m)
{
	return json_pack("{s:s, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f,"
			 " s:f, s:f, s:I}",
			 "policy", bal_sim_policy_name(m->policy),
			 "migrations", (json_int_t)m->migrations,
			 "oscillations", (json_int_t)m->oscillations,
			 "slatah", m->slatah, "overload_host_hours",
			 m->overload_host_h, "pdm", m->pdm, "slav", m->slav,
			 "imbalance_mean", m->imbalance_mean, "imbalance_p95",
			 m->imbalance_p95, "hot_share", m->hot_share,
			 "moved_gib", m->moved_gib, "migration_mean_s",
			 m->mig_mean_s, "unplaced", (json_int_t)m->unplaced);
}

static int simulate(struct opts *o)
{
	struct bal_sim_metrics m[BAL_SIM__COUNT];
	struct bal_trace t;
	struct ferr err = { 0 };
	int rc = EXIT_FAILED;

	if (o->hosts_set)
		o->sim.hosts = o->hosts;
	if (apply_params(o, &o->sim.params) < 0)
		return EXIT_USAGE;
	if (bal_trace_load(o->trace, &t, &err) < 0) {
		fprintf(stderr, "ferry-balancer: error: %s\n", err.msg);
		return EXIT_FAILED;
	}
	for (unsigned p = 0; p < BAL_SIM__COUNT; p++) {
		if (bal_sim_run(&o->sim, &t, (enum bal_sim_policy)p, &m[p],
				&err) < 0) {
			fprintf(stderr, "ferry-balancer: error: %s\n", err.msg);
			goto out;
		}
	}
	if (o->json) {
		json_t *pol = json_array(), *root;

		for (unsigned p = 0; p < BAL_SIM__COUNT; p++)
			json_array_append_new(pol, metrics_json(&m[p]));
		root = json_pack("{s:{s:s, s:I, s:I, s:b}, s:{s:I, s:f, s:I,"
				 " s:I, s:s, s:f, s:f}, s:o, s:o}",
				 "trace", "file", o->trace, "vms",
				 (json_int_t)t.nvms, "intervals",
				 (json_int_t)t.nintervals, "dirty",
				 t.dirty != NULL, "cluster", "hosts",
				 (json_int_t)o->sim.hosts, "cores",
				 o->sim.cores, "mem_mib",
				 (json_int_t)o->sim.mem_mib, "interval_s",
				 (json_int_t)o->sim.interval_s, "placement",
				 o->sim.placement == BAL_PLACE_FIRST_FIT
					 ? "first-fit"
					 : "round-robin",
				 "bandwidth_mibps", o->sim.bandwidth_mibps,
				 "mig_cpu", o->sim.mig_cpu, "params",
				 bal_params_json(&o->sim.params), "policies",
				 pol);
		if (!root || json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) < 0) {
			fprintf(stderr, "ferry-balancer: error: JSON output\n");
			json_decref(root);
			goto out;
		}
		putchar('\n');
		json_decref(root);
	} else {
		printf("trace %s: %zu VMs, %zu intervals of %llu s; %zu hosts "
		       "of %g cores, %llu MiB; placement %s\n",
		       o->trace, t.nvms, t.nintervals,
		       (unsigned long long)o->sim.interval_s, o->sim.hosts,
		       o->sim.cores, (unsigned long long)o->sim.mem_mib,
		       o->sim.placement == BAL_PLACE_FIRST_FIT ? "first-fit"
							       : "round-robin");
		printf("%-19s %6s %5s %8s %9s %7s %9s %8s %7s %6s %8s %6s\n",
		       "policy", "migr", "osc", "SLATAH%", "overl-h", "PDM%",
		       "SLAV*1e5", "imb-mean", "imb-p95", "hot%", "GiB", "mig-s");
		for (unsigned p = 0; p < BAL_SIM__COUNT; p++)
			printf("%-19s %6llu %5llu %8.3f %9.2f %7.4f %9.3f "
			       "%8.4f %7.4f %6.2f %8.1f %6.1f\n",
			       bal_sim_policy_name(m[p].policy),
			       (unsigned long long)m[p].migrations,
			       (unsigned long long)m[p].oscillations,
			       100 * m[p].slatah, m[p].overload_host_h,
			       100 * m[p].pdm, 1e5 * m[p].slav,
			       m[p].imbalance_mean, m[p].imbalance_p95,
			       100 * m[p].hot_share, m[p].moved_gib,
			       m[p].mig_mean_s);
	}
	rc = 0;
out:
	bal_trace_free(&t);
	return rc;
}

static int generate(const struct opts *o)
{
	struct bal_trace t;
	struct ferr err = { 0 };
	int rc = 0;

	if (bal_trace_generate(o->kind, o->vms_set ? o->vms : GEN_VMS_DEFAULT,
			       o->intervals ? o->intervals
					    : GEN_INTERVALS_DEFAULT,
			       o->seed, &t, &err) < 0 ||
	    bal_trace_write(stdout, &t, &err) < 0) {
		fprintf(stderr, "ferry-balancer: error: %s\n", err.msg);
		rc = EXIT_FAILED;
	}
	bal_trace_free(&t);
	return rc;
}

/* The bench's policy: refuses a deterministic 1 in BENCH_POLICY_MOD pairs,
 * so the callback path costs what it would. */
static bool bench_allowed(void *arg, const struct bal_vm *vm,
			  const struct bal_host *from,
			  const struct bal_host *to, char *why, size_t len)
{
	size_t h = 0;

	(void)arg;
	(void)from;
	for (const char *s = vm->name; *s; s++)
		h = h * 31 + (unsigned char)*s;
	for (const char *s = to->name; *s; s++)
		h = h * 31 + (unsigned char)*s;
	if (h % BENCH_POLICY_MOD)
		return true;
	snprintf(why, len, "bench rule refuses %s on %s", vm->name, to->name);
	return false;
}

static double elapsed_s(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) +
	       (double)(b->tv_nsec - a->tv_nsec) / NS_PER_S;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int bench(struct opts *o)
{
	size_t hosts = o->hosts_set ? o->hosts : BENCH_HOSTS_DEFAULT;
	size_t vms = o->vms_set ? o->vms : BENCH_VMS_DEFAULT;
	double t_plan[BENCH_RUNS_MAX], t_obs[BENCH_RUNS_MAX];
	struct bal_cluster *c = NULL;
	struct bal_params p;
	struct bal_plan plan;
	struct bal_stats st;
	struct ferr err = { 0 };
	struct timespec a, b;
	int rc = EXIT_FAILED;

	memset(&plan, 0, sizeof(plan));
	bal_params_default(&p);
	if (apply_params(o, &p) < 0)
		return EXIT_USAGE;
	if (bal_cluster_new(&p, &c, &err) < 0 ||
	    bal_bench_build(c, hosts, vms, o->seed, &err) < 0)
		goto fail;
	bal_set_policy(c, bench_allowed, NULL);
	for (uint64_t r = 0; r < o->runs; r++) {
		/* observe advances the hysteresis: time it on its own */
		clock_gettime(CLOCK_MONOTONIC, &a);
		bal_observe(c);
		clock_gettime(CLOCK_MONOTONIC, &b);
		t_obs[r] = elapsed_s(&a, &b);
		bal_plan_free(&plan);
		clock_gettime(CLOCK_MONOTONIC, &a);
		if (bal_plan(c, &plan, &err) < 0)
			goto fail;
		clock_gettime(CLOCK_MONOTONIC, &b);
		t_plan[r] = elapsed_s(&a, &b);
	}
	qsort(t_plan, o->runs, sizeof(double), cmp_double);
	qsort(t_obs, o->runs, sizeof(double), cmp_double);
	bal_stats(c, &st);
	if (o->json) {
		json_t *j = json_pack("{s:I, s:I, s:I, s:f, s:f, s:f, s:I, s:I,"
				      " s:I, s:I, s:I, s:I}",
				      "hosts", (json_int_t)hosts, "vms",
				      (json_int_t)vms, "runs",
				      (json_int_t)o->runs, "plan_median_ms",
				      MS_PER_S * t_plan[o->runs / 2],
				      "plan_max_ms",
				      MS_PER_S * t_plan[o->runs - 1],
				      "observe_median_ms",
				      MS_PER_S * t_obs[o->runs / 2], "moves",
				      (json_int_t)plan.nmoves, "candidates",
				      (json_int_t)plan.candidates,
				      "evaluations",
				      (json_int_t)plan.evaluations,
				      "blocked", (json_int_t)plan.blocked_total,
				      "hot_hosts", (json_int_t)st.hosts_hot,
				      "draining_hosts",
				      (json_int_t)st.hosts_draining);

		if (!j || json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) < 0) {
			json_decref(j);
			ferr_set(&err, FERR_INTERNAL, "JSON output");
			goto fail;
		}
		putchar('\n');
		json_decref(j);
	} else {
		printf("bench-plan: %zu hosts, %zu VMs (%zu hot, %zu draining, "
		       "imbalance %.3f%s)\n",
		       hosts, vms, st.hosts_hot, st.hosts_draining,
		       st.imbalance,
		       st.imbalance_triggered ? ", triggered" : "");
		printf("plan: median %.1f ms, max %.1f ms over %llu runs; "
		       "observe: median %.1f ms\n",
		       MS_PER_S * t_plan[o->runs / 2],
		       MS_PER_S * t_plan[o->runs - 1],
		       (unsigned long long)o->runs,
		       MS_PER_S * t_obs[o->runs / 2]);
		printf("moves %zu, candidates %zu, destinations examined %zu, "
		       "blocked %zu (max_cluster %u)\n",
		       plan.nmoves, plan.candidates, plan.evaluations,
		       plan.blocked_total, p.max_cluster);
	}
	rc = 0;
	goto out;
fail:
	fprintf(stderr, "ferry-balancer: error: %s\n", err.msg);
out:
	bal_plan_free(&plan);
	bal_cluster_free(c);
	return rc;
}

static int defaults(void)
{
	struct bal_params p;
	json_t *j;

	bal_params_default(&p);
	j = bal_params_json(&p);
	if (!j || json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) < 0) {
		json_decref(j);
		return EXIT_FAILED;
	}
	putchar('\n');
	json_decref(j);
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;

	memset(&o, 0, sizeof(o));
	if (parse_opts(argc, argv, &o) < 0)
		return EXIT_USAGE;
	switch (o.mode) {
	case MODE_SIMULATE:
		return simulate(&o);
	case MODE_GENERATE:
		return generate(&o);
	case MODE_BENCH:
		return bench(&o);
	case MODE_DEFAULTS:
		return defaults();
	case MODE_NONE:
		break;
	}
	return EXIT_USAGE;
}
