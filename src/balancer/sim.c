/* sim.c - the simulator: a cluster replaying a load trace, migrations under
 * a pre-copy cost model, our balancer (the same bal_* calls as the live
 * controller) and two baselines, with CloudSim-style metrics
 * (docs/balancer.md, "Simulator"). Also the benchmark cluster. */
#define _GNU_SOURCE
#include "bal_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Simulator defaults (docs/balancer.md, "Simulator"). */
#define DEF_HOSTS 40
#define DEF_CORES 16.0
#define DEF_MEM_MIB (64ULL * 1024)
#define DEF_INTERVAL_S 300ULL          /* 288 intervals a day */
#define DEF_BANDWIDTH_MIBPS 125.0      /* a 1 Gbit/s share */
/* ferry's default max downtime */
#define DEF_DOWNTIME_S (FERRY_MIG_DOWNTIME_MS_DEFAULT / 1000.0)
#define DEF_MAX_ROUNDS 30u
#define DEF_SETUP_S 2.0
#define DEF_MIG_CPU 0.5                /* cores, on each host */
#define DEF_PDM_SHARE 0.1              /* CloudSim: 10% of the demand */
#define DEF_OSC_WINDOW 10u             /* intervals */

#define SIM_CORES_MAX 4096.0
#define SIM_INTERVAL_MAX_S 86400ULL
#define SIM_BANDWIDTH_MAX 1048576.0
#define SIM_ROUNDS_MAX 1000u
#define SIM_OSC_WINDOW_MAX 100000u
#define OVERLOAD_EPS 1e-9
#define P95 0.95
#define SECONDS_PER_HOUR 3600.0

/* The benchmark cluster (bal_bench_build). */
#define BENCH_CORES 32.0
#define BENCH_MEM_MIB (256ULL * 1024)
#define BENCH_CPU_MIN 0.4
#define BENCH_CPU_MAX 3.1
#define BENCH_HOT_EVERY 10      /* hosts h % 10 == 3 are overloaded */
#define BENCH_HOT_OFFSET 3
#define BENCH_HOT_FACTOR 1.9
#define BENCH_DRAIN_EVERY 1000  /* hosts h % 1000 == 7 drain */
#define BENCH_DRAIN_OFFSET 7
#define BENCH_AFF_EVERY 97      /* VM i and i + hosts share a group */
#define BENCH_ANTI_EVERY 89     /* VMs i, i+1, i+2 share a group */
#define BENCH_ANTI_SIZE 3
#define BENCH_ROUND_S 60
#define BENCH_MEM_CHOICES 4
static const uint64_t bench_mem_mib[BENCH_MEM_CHOICES] = { 2048, 4096, 8192,
							   16384 };

void bal_sim_default(struct bal_sim_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->hosts = DEF_HOSTS;
	cfg->cores = DEF_CORES;
	cfg->mem_mib = DEF_MEM_MIB;
	cfg->interval_s = DEF_INTERVAL_S;
	cfg->placement = BAL_PLACE_ROUND_ROBIN;
	cfg->bandwidth_mibps = DEF_BANDWIDTH_MIBPS;
	cfg->dirty_per_core_mibps = BAL_DIRTY_PER_CORE_MIBPS;
	cfg->downtime_s = DEF_DOWNTIME_S;
	cfg->max_rounds = DEF_MAX_ROUNDS;
	cfg->setup_s = DEF_SETUP_S;
	cfg->mig_cpu = DEF_MIG_CPU;
	cfg->pdm_share = DEF_PDM_SHARE;
	cfg->osc_window = DEF_OSC_WINDOW;
	bal_params_default(&cfg->params);
}

const char *bal_sim_policy_name(enum bal_sim_policy p)
{
	static const char *const n[BAL_SIM__COUNT] = {
		[BAL_SIM_BALANCER] = "balancer",
		[BAL_SIM_NAIVE] = "naive-least-loaded",
		[BAL_SIM_STATIC] = "static-threshold",
		[BAL_SIM_NONE] = "none",
	};

	return (unsigned)p < BAL_SIM__COUNT ? n[p] : "?";
}

double bal_sim_migration_s(const struct bal_sim_config *cfg, double mem_mib,
			   double dirty_mibps)
{
	double b = cfg->bandwidth_mibps, rest = mem_mib, t = cfg->setup_s;

	for (unsigned r = 0; r < cfg->max_rounds; r++) {
		double tx = rest / b;

		t += tx;
		rest = dirty_mibps * tx;
		if (rest > mem_mib)
			rest = mem_mib;
		if (rest <= b * cfg->downtime_s)
			break;
	}
	return t + rest / b; /* stop-and-copy */
}

static int check_config(const struct bal_sim_config *cfg,
			const struct bal_trace *t, struct ferr *err)
{
	if (cfg->hosts < 2 || cfg->hosts > BAL_SIM_HOSTS_MAX)
		return ferr_set(err, FERR_INVALID,
				"simulator: hosts must be between 2 and %d",
				BAL_SIM_HOSTS_MAX);
	if (!(cfg->cores > 0 && cfg->cores <= SIM_CORES_MAX))
		return ferr_set(err, FERR_INVALID,
				"simulator: cores must be above 0 and at most "
				"%g",
				SIM_CORES_MAX);
	if (cfg->mem_mib < FERRY_VM_MEM_MIN_MIB ||
	    cfg->mem_mib > FERRY_VM_MEM_MAX_MIB * 1024)
		return ferr_set(err, FERR_INVALID,
				"simulator: mem_mib out of range");
	if (cfg->interval_s == 0 || cfg->interval_s > SIM_INTERVAL_MAX_S)
		return ferr_set(err, FERR_INVALID,
				"simulator: interval_s must be between 1 and "
				"%llu",
				SIM_INTERVAL_MAX_S);
	if (!(cfg->bandwidth_mibps > 0 &&
	      cfg->bandwidth_mibps <= SIM_BANDWIDTH_MAX) ||
	    !(cfg->dirty_per_core_mibps >= 0 &&
	      cfg->dirty_per_core_mibps <= BAL_DIRTY_MAX_MIBPS) ||
	    !(cfg->downtime_s >= 0 && cfg->downtime_s <= SIM_INTERVAL_MAX_S) ||
	    !(cfg->setup_s >= 0 && cfg->setup_s <= SIM_INTERVAL_MAX_S) ||
	    !(cfg->mig_cpu >= 0 && cfg->mig_cpu <= SIM_CORES_MAX) ||
	    !(cfg->pdm_share >= 0 && cfg->pdm_share <= 1) ||
	    cfg->max_rounds > SIM_ROUNDS_MAX ||
	    cfg->osc_window > SIM_OSC_WINDOW_MAX)
		return ferr_set(err, FERR_INVALID,
				"simulator: a migration model parameter is out "
				"of range");
	if (bal_params_check(&cfg->params, err) < 0)
		return -1;
	for (size_t c = 0; c < t->nvms * t->nintervals; c++)
		if (t->mem_mib[c] > cfg->mem_mib)
			return ferr_set(err, FERR_INVALID,
					"simulator: vm %s needs %u MiB, more "
					"than a host has",
					t->names[c % t->nvms], t->mem_mib[c]);
	return 0;
}

/* ---- one simulated run ---- */

struct mig {
	size_t vm, from, to;
	double end;
};

struct departure {
	size_t host;
	double t;
	bool used;
};

struct run {
	const struct bal_sim_config *cfg;
	const struct bal_trace *t;
	enum bal_sim_policy pol;
	struct bal_cluster *c;   /* balancer and static policies */
	size_t nh, nv;
	char (*hname)[FERRY_NAME_MAX + 1];
	size_t *host;            /* per VM: where it runs */
	bool *migrating;
	struct mig *migs;        /* in flight */
	size_t nmigs;
	double *hcpu;            /* per host: CPU of the current segment */
	unsigned *hvms;          /* per host: VMs of the current segment */
	double *acc;             /* per host: integral of CPU, interval */
	double *ovh;             /* per host: integral of overhead, interval */
	double *load;            /* per host: end-of-interval load */
	uint64_t *hmem;          /* per host: memory (in flight: both) */
	double *active_s, *over_s;
	double *imb;             /* per interval */
	struct departure (*dep)[BAL_SIM_DEPARTURES];
	unsigned *dep_next;
	double demand, pdm_num, mig_s, moved_mib;
	uint64_t hot, migrations, oscillations, unplaced;
};

static double cell_cpu(const struct run *r, size_t i, size_t v)
{
	return (double)r->t->cpu[i * r->nv + v];
}

static uint64_t cell_mem(const struct run *r, size_t i, size_t v)
{
	return r->t->mem_mib[i * r->nv + v];
}

static double cell_dirty(const struct run *r, size_t i, size_t v)
{
	if (r->t->dirty)
		return (double)r->t->dirty[i * r->nv + v];
	return cell_cpu(r, i, v) * r->cfg->dirty_per_core_mibps;
}

static void run_free(struct run *r)
{
	bal_cluster_free(r->c);
	free(r->hname);
	free(r->host);
	free(r->migrating);
	free(r->migs);
	free(r->hcpu);
	free(r->hvms);
	free(r->acc);
	free(r->ovh);
	free(r->load);
	free(r->hmem);
	free(r->active_s);
	free(r->over_s);
	free(r->imb);
	free(r->dep);
	free(r->dep_next);
}

static int run_init(struct run *r, struct ferr *err)
{
	size_t nh = r->nh, nv = r->nv;

	r->hname = calloc(nh, sizeof(*r->hname));
	r->host = calloc(nv, sizeof(*r->host));
	r->migrating = calloc(nv, sizeof(*r->migrating));
	r->migs = calloc(nv, sizeof(*r->migs));
	r->hcpu = calloc(nh, sizeof(*r->hcpu));
	r->hvms = calloc(nh, sizeof(*r->hvms));
	r->acc = calloc(nh, sizeof(*r->acc));
	r->ovh = calloc(nh, sizeof(*r->ovh));
	r->load = calloc(nh, sizeof(*r->load));
	r->hmem = calloc(nh, sizeof(*r->hmem));
	r->active_s = calloc(nh, sizeof(*r->active_s));
	r->over_s = calloc(nh, sizeof(*r->over_s));
	r->imb = calloc(r->t->nintervals, sizeof(*r->imb));
	r->dep = calloc(nv, sizeof(*r->dep));
	r->dep_next = calloc(nv, sizeof(*r->dep_next));
	if (!r->hname || !r->host || !r->migrating || !r->migs || !r->hcpu ||
	    !r->hvms || !r->acc || !r->ovh || !r->load || !r->hmem ||
	    !r->active_s || !r->over_s || !r->imb || !r->dep || !r->dep_next)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	for (size_t h = 0; h < nh; h++)
		snprintf(r->hname[h], sizeof(r->hname[h]), "host-%03zu", h);
	if (r->pol == BAL_SIM_BALANCER || r->pol == BAL_SIM_STATIC) {
		struct bal_params p = r->cfg->params;

		if (r->pol == BAL_SIM_STATIC) {
			p.hold_rounds = 1;
			p.cooldown_base_s = 0;
			p.cooldown_max_s = 0;
			p.return_ban_s = 0;
		}
		if (bal_cluster_new(&p, &r->c, err) < 0)
			return -1;
	}
	return 0;
}

/* Initial placement from interval 0's demands (docs/balancer.md). */
static int place(struct run *r, struct ferr *err)
{
	const struct bal_sim_config *cfg = r->cfg;
	double *cpu = calloc(r->nh, sizeof(*cpu));

	if (!cpu)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	memset(r->hmem, 0, r->nh * sizeof(*r->hmem));
	for (size_t v = 0; v < r->nv; v++) {
		double vc = cell_cpu(r, 0, v);
		uint64_t vm = cell_mem(r, 0, v);
		size_t pick = BAL_NONE, best = BAL_NONE;

		for (size_t k = 0; k < r->nh; k++) {
			size_t h = cfg->placement == BAL_PLACE_ROUND_ROBIN
					   ? (v + k) % r->nh
					   : k;

			if (r->hmem[h] + vm > cfg->mem_mib)
				continue;
			if (best == BAL_NONE || cpu[h] < cpu[best])
				best = h;
			if (cfg->placement == BAL_PLACE_ROUND_ROBIN ||
			    cpu[h] + vc <= cfg->cores * cfg->params.high) {
				pick = h;
				break;
			}
		}
		if (pick == BAL_NONE) {
			pick = best;
			r->unplaced++;
		}
		if (pick == BAL_NONE) {
			free(cpu);
			return ferr_set(err, FERR_INVALID,
					"simulator: no host has memory for vm "
					"%s; use more hosts or --mem-mib",
					r->t->names[v]);
		}
		r->host[v] = pick;
		cpu[pick] += vc;
		r->hmem[pick] += vm;
	}
	free(cpu);
	return 0;
}

/* Account one stretch of `len` seconds of interval i with constant
 * placement and migrations. */
static void segment(struct run *r, size_t i, double len)
{
	const struct bal_sim_config *cfg = r->cfg;

	for (size_t h = 0; h < r->nh; h++) {
		r->hcpu[h] = 0;
		r->hvms[h] = 0;
	}
	for (size_t v = 0; v < r->nv; v++) {
		r->hcpu[r->host[v]] += cell_cpu(r, i, v);
		r->hvms[r->host[v]]++;
	}
	for (size_t k = 0; k < r->nmigs; k++) {
		const struct mig *m = &r->migs[k];

		r->hcpu[m->from] += cfg->mig_cpu;
		r->hcpu[m->to] += cfg->mig_cpu;
		r->hvms[m->to]++;
		r->ovh[m->from] += cfg->mig_cpu * len;
		r->ovh[m->to] += cfg->mig_cpu * len;
		r->pdm_num += cfg->pdm_share * cell_cpu(r, i, m->vm) * len;
	}
	for (size_t h = 0; h < r->nh; h++) {
		r->acc[h] += r->hcpu[h] * len;
		if (!r->hvms[h])
			continue;
		r->active_s[h] += len;
		if (r->hcpu[h] >= cfg->cores * (1 - OVERLOAD_EPS))
			r->over_s[h] += len;
	}
}

/* Finish the migrations ending at or before now. */
static int complete(struct run *r, double now, struct ferr *err)
{
	size_t k = 0;

	while (k < r->nmigs) {
		struct mig m = r->migs[k];

		if (m.end > now) {
			k++;
			continue;
		}
		r->host[m.vm] = m.to;
		r->migrating[m.vm] = false;
		r->migs[k] = r->migs[--r->nmigs];
		if (r->c && bal_done(r->c, m.vm, true, (uint64_t)ceil(m.end),
				     err) < 0)
			return -1;
	}
	return 0;
}

/* Start migrating VM v to host `to` at now (the end of interval i). */
static void start_mig(struct run *r, size_t v, size_t to, double now,
		      size_t i)
{
	size_t next = i + 1 < r->t->nintervals ? i + 1 : i;
	double window = (double)r->cfg->osc_window * (double)r->cfg->interval_s;
	double d = bal_sim_migration_s(r->cfg, (double)cell_mem(r, next, v),
				       cell_dirty(r, next, v));
	struct departure *dep = r->dep[v];

	for (unsigned k = 0; k < BAL_SIM_DEPARTURES; k++) {
		if (dep[k].used && dep[k].host == to &&
		    now - dep[k].t <= window) {
			r->oscillations++;
			break;
		}
	}
	dep[r->dep_next[v]].host = r->host[v];
	dep[r->dep_next[v]].t = now;
	dep[r->dep_next[v]].used = true;
	r->dep_next[v] = (r->dep_next[v] + 1) % BAL_SIM_DEPARTURES;
	r->migs[r->nmigs].vm = v;
	r->migs[r->nmigs].from = r->host[v];
	r->migs[r->nmigs].to = to;
	r->migs[r->nmigs].end = now + d;
	r->nmigs++;
	r->migrating[v] = true;
	r->migrations++;
	r->mig_s += d;
	r->moved_mib += (double)cell_mem(r, next, v);
}

/* The destination of v's migration, when it has one. */
static size_t mig_dest(const struct run *r, size_t v)
{
	for (size_t k = 0; k < r->nmigs; k++)
		if (r->migs[k].vm == v)
			return r->migs[k].to;
	return BAL_NONE;
}

/* Our balancer (or the static baseline): report, observe, plan, start. */
static int control_bal(struct run *r, size_t i, double now, struct ferr *err)
{
	const struct bal_sim_config *cfg = r->cfg;
	uint64_t now_s = (uint64_t)now;
	struct bal_plan plan;
	int rc = -1;

	memset(&plan, 0, sizeof(plan));
	bal_round_begin(r->c, now_s);
	for (size_t h = 0; h < r->nh; h++) {
		struct bal_host_report hr = {
			.name = r->hname[h],
			.cores = cfg->cores,
			.mem_mib = cfg->mem_mib,
			.cpu_other = r->ovh[h] / (double)cfg->interval_s,
		};
		size_t idx;

		if (bal_host_report(r->c, &hr, &idx, err) < 0)
			goto out;
		if (idx != h)
			goto mismatch;
	}
	for (size_t v = 0; v < r->nv; v++) {
		size_t to = r->migrating[v] ? mig_dest(r, v) : BAL_NONE;
		struct bal_vm_report vr = {
			.name = r->t->names[v],
			.host = r->hname[r->host[v]],
			.migrating_to = to != BAL_NONE ? r->hname[to] : NULL,
			.cpu = cell_cpu(r, i, v),
			.mem_mib = cell_mem(r, i, v),
			.dirty_mibps = cell_dirty(r, i, v),
		};
		size_t idx;

		if (bal_vm_report(r->c, &vr, &idx, err) < 0)
			goto out;
		if (idx != v)
			goto mismatch;
	}
	bal_observe(r->c);
	if (bal_plan(r->c, &plan, err) < 0)
		goto out;
	for (size_t k = 0; k < plan.nmoves; k++) {
		const struct bal_move *m = &plan.moves[k];

		start_mig(r, m->vm, m->to, now, i);
		if (bal_moved(r->c, m->vm, m->to, now_s, err) < 0)
			goto out;
	}
	rc = 0;
out:
	bal_plan_free(&plan);
	return rc;
mismatch:
	bal_plan_free(&plan);
	return ferr_set(err, FERR_INTERNAL,
			"simulator: cluster indices out of step");
}

/* Baseline 1: when any host is above the threshold now, move the largest
 * VM of the most loaded one to the least loaded host it fits on. */
static void control_naive(struct run *r, size_t i, double now)
{
	const struct bal_sim_config *cfg = r->cfg;
	size_t src = BAL_NONE, vm = BAL_NONE, dst = BAL_NONE;

	for (size_t h = 0; h < r->nh; h++)
		if (r->load[h] > cfg->params.high &&
		    (src == BAL_NONE || r->load[h] > r->load[src]))
			src = h;
	if (src == BAL_NONE)
		return;
	for (size_t v = 0; v < r->nv; v++)
		if (r->host[v] == src && !r->migrating[v] &&
		    (vm == BAL_NONE || cell_cpu(r, i, v) > cell_cpu(r, i, vm)))
			vm = v;
	if (vm == BAL_NONE)
		return;
	for (size_t h = 0; h < r->nh; h++)
		if (h != src && r->hmem[h] + cell_mem(r, i, vm) <= cfg->mem_mib &&
		    (dst == BAL_NONE || r->load[h] < r->load[dst]))
			dst = h;
	if (dst != BAL_NONE)
		start_mig(r, vm, dst, now, i);
}

/* End of interval i: loads, imbalance, hot hosts. */
static void observe_interval(struct run *r, size_t i)
{
	const struct bal_sim_config *cfg = r->cfg;
	double sum = 0, dev = 0, mean;

	memset(r->hmem, 0, r->nh * sizeof(*r->hmem));
	for (size_t v = 0; v < r->nv; v++)
		r->hmem[r->host[v]] += cell_mem(r, i, v);
	for (size_t h = 0; h < r->nh; h++) {
		double lc = r->acc[h] / (double)cfg->interval_s / cfg->cores;
		double lm = (double)r->hmem[h] / (double)cfg->mem_mib;

		r->load[h] = lc > lm ? lc : lm;
		sum += r->load[h];
		r->hot += r->load[h] > cfg->params.high;
	}
	mean = sum / (double)r->nh;
	for (size_t h = 0; h < r->nh; h++)
		dev += (r->load[h] - mean) * (r->load[h] - mean);
	r->imb[i] = sqrt(dev / (double)r->nh);
	/* memory committed to destinations too, for placement checks */
	for (size_t k = 0; k < r->nmigs; k++)
		r->hmem[r->migs[k].to] += cell_mem(r, i, r->migs[k].vm);
}

static int interval(struct run *r, size_t i, struct ferr *err)
{
	double t0 = (double)i * (double)r->cfg->interval_s;
	double t1 = t0 + (double)r->cfg->interval_s, cur = t0;

	for (size_t h = 0; h < r->nh; h++) {
		r->acc[h] = 0;
		r->ovh[h] = 0;
	}
	for (size_t v = 0; v < r->nv; v++)
		r->demand += cell_cpu(r, i, v) * (double)r->cfg->interval_s;
	while (cur < t1) {
		double next = t1;

		for (size_t k = 0; k < r->nmigs; k++)
			if (r->migs[k].end < next)
				next = r->migs[k].end;
		if (next > cur)
			segment(r, i, next - cur);
		if (complete(r, next, err) < 0)
			return -1;
		cur = next;
	}
	observe_interval(r, i);
	if (i + 1 == r->t->nintervals)
		return 0;
	switch (r->pol) {
	case BAL_SIM_BALANCER:
	case BAL_SIM_STATIC:
		return control_bal(r, i, t1, err);
	case BAL_SIM_NAIVE:
		control_naive(r, i, t1);
		return 0;
	case BAL_SIM_NONE:
	case BAL_SIM__COUNT:
		break;
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void finish(struct run *r, struct bal_sim_metrics *m)
{
	size_t nact = 0, n = r->t->nintervals;
	double sla = 0, over = 0, imb = 0;

	for (size_t h = 0; h < r->nh; h++) {
		over += r->over_s[h];
		if (r->active_s[h] > 0) {
			sla += r->over_s[h] / r->active_s[h];
			nact++;
		}
	}
	for (size_t i = 0; i < n; i++)
		imb += r->imb[i];
	qsort(r->imb, n, sizeof(*r->imb), cmp_double);
	memset(m, 0, sizeof(*m));
	m->policy = r->pol;
	m->migrations = r->migrations;
	m->oscillations = r->oscillations;
	m->slatah = nact ? sla / (double)nact : 0;
	m->overload_host_h = over / SECONDS_PER_HOUR;
	m->pdm = r->demand > 0 ? r->pdm_num / r->demand : 0;
	m->slav = m->slatah * m->pdm;
	m->imbalance_mean = imb / (double)n;
	m->imbalance_p95 = r->imb[(size_t)ceil(P95 * (double)n) - 1];
	m->hot_share = (double)r->hot / ((double)n * (double)r->nh);
	m->moved_gib = r->moved_mib / BAL_MIB_PER_GIB;
	m->mig_mean_s = r->migrations ? r->mig_s / (double)r->migrations : 0;
	m->unplaced = r->unplaced;
}

int bal_sim_run(const struct bal_sim_config *cfg, const struct bal_trace *t,
		enum bal_sim_policy policy, struct bal_sim_metrics *m,
		struct ferr *err)
{
	struct run r;
	int rc = -1;

	memset(&r, 0, sizeof(r));
	if ((unsigned)policy >= BAL_SIM__COUNT)
		return ferr_set(err, FERR_INVALID, "simulator: no such policy");
	if (t->nvms == 0 || t->nintervals == 0)
		return ferr_set(err, FERR_INVALID, "simulator: empty trace");
	if (check_config(cfg, t, err) < 0)
		return -1;
	r.cfg = cfg;
	r.t = t;
	r.pol = policy;
	r.nh = cfg->hosts;
	r.nv = t->nvms;
	if (run_init(&r, err) < 0 || place(&r, err) < 0)
		goto out;
	for (size_t i = 0; i < t->nintervals; i++)
		if (interval(&r, i, err) < 0)
			goto out;
	finish(&r, m);
	rc = 0;
out:
	run_free(&r);
	return rc;
}

/* ---- the benchmark cluster ---- */

int bal_bench_build(struct bal_cluster *c, size_t hosts, size_t vms,
		    uint64_t seed, struct ferr *err)
{
	struct bal_rng rng = { seed };
	double *cpu = NULL;
	uint64_t *mem = NULL;
	char name[FERRY_NAME_MAX + 1], host[FERRY_NAME_MAX + 1];
	char aff[FERRY_NAME_MAX + 1], anti[FERRY_NAME_MAX + 1];
	int rc = -1;

	if (hosts < 2 || hosts > BAL_HOSTS_MAX || vms == 0 ||
	    vms > BAL_VMS_MAX)
		return ferr_set(err, FERR_INVALID,
				"bench: 2..%d hosts and 1..%d VMs", BAL_HOSTS_MAX,
				BAL_VMS_MAX);
	cpu = calloc(vms, sizeof(*cpu));
	mem = calloc(vms, sizeof(*mem));
	if (!cpu || !mem) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	for (size_t v = 0; v < vms; v++) {
		size_t h = v % hosts;

		cpu[v] = bal_rng_range(&rng, BENCH_CPU_MIN, BENCH_CPU_MAX);
		if (h % BENCH_HOT_EVERY == BENCH_HOT_OFFSET)
			cpu[v] *= BENCH_HOT_FACTOR;
		mem[v] = bench_mem_mib[bal_rng_next(&rng) % BENCH_MEM_CHOICES];
	}
	for (unsigned round = 0; round < bal_cluster_params(c)->hold_rounds;
	     round++) {
		bal_round_begin(c, (uint64_t)round * BENCH_ROUND_S);
		for (size_t h = 0; h < hosts; h++) {
			struct bal_host_report hr = {
				.name = host,
				.cores = BENCH_CORES,
				.mem_mib = BENCH_MEM_MIB,
				.draining = h % BENCH_DRAIN_EVERY ==
					    BENCH_DRAIN_OFFSET,
			};

			snprintf(host, sizeof(host), "h%06zu", h);
			if (bal_host_report(c, &hr, NULL, err) < 0)
				goto out;
		}
		for (size_t v = 0; v < vms; v++) {
			struct bal_vm_report vr = {
				.name = name,
				.host = host,
				.cpu = cpu[v],
				.mem_mib = mem[v],
			};
			size_t a = v % hosts, grp = v / hosts;

			snprintf(name, sizeof(name), "vm%07zu", v);
			snprintf(host, sizeof(host), "h%06zu", v % hosts);
			/* VM a and a + hosts (same host) pair up */
			if (a % BENCH_AFF_EVERY == 0 && grp < 2 &&
			    hosts + a < vms) {
				snprintf(aff, sizeof(aff), "a%zu", a);
				vr.affinity = aff;
			}
			if ((v / BENCH_ANTI_SIZE) % BENCH_ANTI_EVERY == 0) {
				snprintf(anti, sizeof(anti), "x%zu",
					 v / BENCH_ANTI_SIZE);
				vr.anti_affinity = anti;
			}
			if (bal_vm_report(c, &vr, NULL, err) < 0)
				goto out;
		}
		bal_observe(c);
	}
	rc = 0;
out:
	free(cpu);
	free(mem);
	return rc;
}
