/* balancer.h - the load balancer's decision code, its simulator and trace
 * files.
 *
 * The decision code keeps a model of the cluster (hosts, VMs, migrations in
 * flight, per-VM migration history) that the caller refreshes once per round
 * from load samples, advances the hysteresis of the round (bal_observe) and
 * plans migrations with the reasons for each (bal_plan). The live controller
 * and the simulator (bal_sim_run) drive the very same functions.
 * docs/balancer.md describes the algorithm, its parameters and the
 * simulator's model and metrics.
 *
 * A round, for a caller:
 *
 *   bal_round_begin(c, now_s);
 *   for each host that answered:  bal_host_report(c, &hr, &h, &err);
 *   for each VM on those hosts:   bal_vm_report(c, &vr, &v, &err);
 *   bal_observe(c);                     hysteresis, prunes vanished VMs
 *   bal_plan(c, &plan, &err);           what to move, and why (read-only)
 *   for each move the caller starts: bal_moved(c, vm, to, now_s, &err);
 *   when a migration ends:          bal_done(c, vm, ok, now_s, &err)
 *                                   (or the next reports show where the VM
 *                                   is, which counts as done)
 *   bal_plan_free(&plan);
 *
 * Not thread-safe: one caller at a time per cluster.
 */
#ifndef FERRY_BALANCER_H
#define FERRY_BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "common.h"

/* ---- limits ---- */
#define BAL_HOSTS_MAX 200000            /* hosts in one cluster */
#define BAL_VMS_MAX 1000000             /* VMs in one cluster */
#define BAL_CORES_MAX 100000.0          /* cores of one host */
#define BAL_VM_CPU_MAX 4096.0           /* cores one VM can demand */
#define BAL_DIRTY_MAX_MIBPS 1048576.0   /* dirty rate of one VM */
#define BAL_LOAD_THRESHOLD_MAX 4.0      /* high threshold (overcommit) */
#define BAL_TIME_MAX_S (366ULL * 86400) /* cooldowns and windows */
#define BAL_CAP_MAX 1000000u            /* concurrency caps */
#define BAL_HOLD_MAX 10000u             /* hold rounds */
#define BAL_BLOCKED_MAX 1024            /* blocked entries kept per plan */
#define BAL_REASON_MAX 200              /* bytes of one blocked reason */
#define BAL_LEFT_MAX 4                  /* departures remembered per VM */

#define BAL_NONE SIZE_MAX /* "no host" / "not in flight" index */

/* ---- parameters ---- */

/* Every tunable of the decision algorithm. bal_params_default() gives the
 * documented defaults (docs/balancer.md, "Parameters"). */
struct bal_params {
	double high;             /* hot threshold of the normalized load */
	double headroom;         /* hot hosts are relieved until their load
				    is at or below high - headroom */
	double critical;         /* a host above high whose load, projected
				    to the end of the hold, reaches this is
				    hot without waiting (a host with its own
				    high: shifted by the same amount) */
	double imbalance;        /* std-dev of active hosts' loads that is
				    an imbalance */
	unsigned hold_rounds;    /* consecutive rounds a trigger must hold */
	double min_improvement;  /* least peak reduction of a planned move */
	uint64_t cooldown_base_s;  /* backoff base after a migration */
	uint64_t cooldown_max_s;   /* backoff cap */
	uint64_t backoff_window_s; /* quiet time that resets the backoff */
	uint64_t return_ban_s;     /* a VM may not go back to a host it left
				      this recently */
	unsigned max_cluster;      /* migrations in flight in the cluster */
	unsigned max_out_per_host; /* in flight out of one host */
	unsigned max_in_per_host;  /* in flight into one host */
	unsigned dest_candidates;  /* k feasible destinations compared */
	unsigned dest_scan_max;    /* hosts examined to find them */
};

/* Fill p with the defaults. */
void bal_params_default(struct bal_params *p);

/* Check every field's range and the relations between them (headroom <
 * high, base <= max, candidates <= scan). FERR_INVALID naming the field. */
int bal_params_check(const struct bal_params *p, struct ferr *err);

/* Set one field by its name in docs/balancer.md (e.g. "high",
 * "hold_rounds") from a decimal string. Does not run bal_params_check.
 * FERR_INVALID for an unknown key or a malformed/out-of-range value. */
int bal_params_set(struct bal_params *p, const char *key, const char *value,
		   struct ferr *err);

/* Apply a JSON object {"high": 0.8, "hold_rounds": 3, ...} (any subset of
 * the fields) onto p, then bal_params_check. Unknown keys and wrong types
 * are FERR_INVALID naming `what.key`. On error p may be partly updated:
 * apply to a copy. */
int bal_params_from_json(const json_t *obj, const char *what,
			 struct bal_params *p, struct ferr *err);

/* The parameters as a JSON object with the same keys; NULL when out of
 * memory. */
json_t *bal_params_json(const struct bal_params *p);

/* ---- the cluster model ---- */

/* A host as the decision code sees it. The fields up to `user` come from
 * the latest bal_host_report; the rest are computed (read-only). */
struct bal_host {
	char name[FERRY_NAME_MAX + 1];
	double cores;       /* CPU capacity in cores, > 0 */
	uint64_t mem_mib;   /* memory capacity, > 0 */
	double cpu_other;   /* cores in use besides the VMs (host, ferryd,
			       migrations) */
	double high;        /* this host's hot threshold */
	bool draining;      /* empty it; never a destination */
	bool up;            /* reported in the current round */
	void *user;         /* the caller's, passed through */
	/* computed by bal_observe: */
	double cpu;         /* committed CPU: cpu_other + its VMs' cpu */
	uint64_t mem_used;  /* committed memory of its VMs */
	double load;        /* max(cpu / cores, mem_used / mem_mib) */
	unsigned hot_rounds; /* consecutive rounds with load > high */
	double projected;   /* load + its rise since the last round times
			       the rounds left of the hold; the host is hot
			       at hold_rounds, or before when this reaches
			       params.critical */
	bool observed;      /* load is from an up host's round */
	unsigned out, in;   /* migrations in flight from / to it */
};

/* A VM. Fields up to `user` come from the latest bal_vm_report; the
 * history is kept by the decision code across rounds (read-only). An
 * in-flight VM counts, for loads, on its destination only. */
struct bal_vm {
	char name[FERRY_NAME_MAX + 1];
	char affinity[FERRY_NAME_MAX + 1];      /* group name, "" for none */
	char anti_affinity[FERRY_NAME_MAX + 1]; /* group name, "" for none */
	size_t host;        /* host index it runs on (source while in flight) */
	size_t to;          /* destination while in flight, else BAL_NONE */
	double cpu;         /* CPU demand in cores (the caller's window) */
	uint64_t mem_mib;   /* memory a migration copies */
	double dirty_mibps; /* page dirty rate, 0 when unknown */
	bool pinned;        /* never moved */
	void *user;         /* the caller's, passed through */
	/* history: */
	unsigned moves;           /* migrations in the backoff window */
	uint64_t move_start_s;    /* start of the latest migration */
	uint64_t last_done_s;     /* end of the latest migration */
	uint64_t last_duration_s; /* its duration */
	uint64_t cooldown_until_s; /* not a candidate before this time */
	size_t left_host[BAL_LEFT_MAX]; /* hosts it left (BAL_NONE: unused) */
	uint64_t left_s[BAL_LEFT_MAX];  /* ... and when */
	bool seen;                /* reported in the current round */
};

/* May vm move from `from` to `to`? Called by bal_plan for each member of a
 * candidate and each destination it examines (only after every cheaper
 * check passed). Return false to refuse, with a reason in why (why_len
 * bytes, already ""). The live controller wires policy_check_out and
 * policy_check_in here. */
typedef bool (*bal_allowed_fn)(void *arg, const struct bal_vm *vm,
			       const struct bal_host *from,
			       const struct bal_host *to, char *why,
			       size_t why_len);

struct bal_cluster;

/* A new, empty cluster using a copy of p (checked first). */
int bal_cluster_new(const struct bal_params *p, struct bal_cluster **out,
		    struct ferr *err);

/* Free c (NULL is fine). */
void bal_cluster_free(struct bal_cluster *c);

/* Replace the parameters (checked first; on error nothing changes).
 * Hysteresis counters and histories are kept. */
int bal_cluster_set_params(struct bal_cluster *c, const struct bal_params *p,
			   struct ferr *err);

/* The parameters in force. */
const struct bal_params *bal_cluster_params(const struct bal_cluster *c);

/* Use fn(arg, ...) as the policy check of bal_plan; NULL allows every
 * move. */
void bal_set_policy(struct bal_cluster *c, bal_allowed_fn fn, void *arg);

/* Start a round at time now_s (seconds on any clock that never goes back;
 * the same clock for bal_moved/bal_done). Every host is marked not up and
 * every VM not seen until reported again. */
void bal_round_begin(struct bal_cluster *c, uint64_t now_s);

/* What a host reported this round. */
struct bal_host_report {
	const char *name;   /* a valid ferry name */
	double cores;       /* > 0 */
	uint64_t mem_mib;   /* > 0 */
	double cpu_other;   /* >= 0; cores used besides the VMs */
	double high;        /* this host's hot threshold; 0 for params.high */
	bool draining;
	void *user;
};

/* Add or update a host (by name) and mark it up; *idx (may be NULL) gets
 * its index, stable for the cluster's life (hosts are never removed; one
 * that stops reporting is simply not up). FERR_INVALID for a bad name or
 * value, FERR_CONFLICT when reported twice in a round, FERR_TOO_LARGE
 * past BAL_HOSTS_MAX. */
int bal_host_report(struct bal_cluster *c, const struct bal_host_report *r,
		    size_t *idx, struct ferr *err);

/* What was reported about a VM this round, from the host it runs on (the
 * source while a migration is in flight). */
struct bal_vm_report {
	const char *name;          /* a valid ferry name */
	const char *host;          /* reported this round */
	const char *migrating_to;  /* destination when in flight, else NULL */
	double cpu;                /* cores, >= 0: the window's demand */
	uint64_t mem_mib;          /* memory a migration would copy */
	double dirty_mibps;        /* >= 0, 0 when unknown */
	bool pinned;
	const char *affinity;      /* group or NULL: members move together */
	const char *anti_affinity; /* group or NULL: never two on one host */
	void *user;
};

/* Add or update a VM (by name) and mark it seen; *idx (may be NULL) gets
 * its index, valid until the next bal_observe. The report also settles
 * migrations: a VM known in flight that shows up on its destination (not
 * migrating) is done, back on its source is failed; a VM found on another
 * host than known, or migrating when not known to be, had a migration
 * someone else started - each counts in its history like bal_moved and
 * bal_done. FERR_INVALID for bad names/values, FERR_NOT_FOUND for a host
 * not up this round, FERR_CONFLICT when reported twice in a round,
 * FERR_TOO_LARGE past BAL_VMS_MAX. */
int bal_vm_report(struct bal_cluster *c, const struct bal_vm_report *r,
		  size_t *idx, struct ferr *err);

/* End the round's reports and advance the hysteresis: forget VMs not seen
 * on hosts that are up (deleted; VMs of hosts that did not report are
 * kept), compute every host's committed CPU, memory and load, count the
 * consecutive rounds each up, non-draining host has been above its high
 * threshold and the cluster's std-dev of loads above params.imbalance.
 * VM indices may change (hosts' do not). */
void bal_observe(struct bal_cluster *c);

/* The cluster's state after the last bal_observe. */
struct bal_stats {
	uint64_t round;           /* bal_observe calls so far */
	uint64_t now_s;
	size_t hosts_up;          /* reported this round */
	size_t hosts_active;      /* up and not draining */
	size_t hosts_draining;    /* up and draining */
	size_t hosts_hot;         /* active and hot (hold, or critical) */
	size_t hosts_over;        /* active, load > high now */
	double mean_load;         /* of active hosts */
	double imbalance;         /* std-dev of active hosts' loads */
	unsigned imbalance_rounds; /* consecutive rounds above params */
	bool imbalance_triggered;  /* imbalance_rounds >= hold_rounds */
	unsigned inflight;        /* migrations in flight */
};
void bal_stats(const struct bal_cluster *c, struct bal_stats *out);

/* Lookups. bal_*_find returns BAL_NONE when absent. */
size_t bal_host_count(const struct bal_cluster *c);
const struct bal_host *bal_host_at(const struct bal_cluster *c, size_t i);
size_t bal_host_find(const struct bal_cluster *c, const char *name);
size_t bal_vm_count(const struct bal_cluster *c);
const struct bal_vm *bal_vm_at(const struct bal_cluster *c, size_t i);
size_t bal_vm_find(const struct bal_cluster *c, const char *name);

/* The caller started migrating VM vm to host `to` at now_s (a planned move,
 * or any other): it is in flight, counts against the caps, and its
 * backoff count grows (reset first when it had been quiet for
 * backoff_window_s). FERR_NOT_FOUND for bad indices, FERR_CONFLICT when
 * already in flight or `to` is its host. */
int bal_moved(struct bal_cluster *c, size_t vm, size_t to, uint64_t now_s,
	      struct ferr *err);

/* The migration of vm ended at now_s: ok puts it on its destination, a
 * failure leaves it on its source. Either way its cooldown becomes
 * now_s + min(cooldown_max_s, max(cooldown_base_s, duration) *
 * 2^(moves-1)). FERR_CONFLICT when it is not in flight. */
int bal_done(struct bal_cluster *c, size_t vm, bool ok, uint64_t now_s,
	     struct ferr *err);

/* Record in vm's history a migration that ended before this model knew of
 * it (one a previous leader started): as bal_moved at start_s then bal_done
 * at end_s, except that the VM stays on the host it is reported on. from
 * is the host it left (BAL_NONE: unknown, or ok false); ok: it completed.
 * FERR_NOT_FOUND for a bad index, FERR_CONFLICT when vm is in flight. */
int bal_vm_history(struct bal_cluster *c, size_t vm, size_t from,
		   uint64_t start_s, uint64_t end_s, bool ok,
		   struct ferr *err);

/* The cooldown a VM gets after its n-th migration (n >= 1) in the window
 * when that one took duration_s: the formula of bal_done. */
uint64_t bal_backoff_s(const struct bal_params *p, unsigned n,
		       uint64_t duration_s);

/* ---- plans ---- */

/* Why a host's VMs are candidates. */
enum bal_trigger {
	BAL_TRIG_IMBALANCE, /* the cluster's std-dev held above the limit */
	BAL_TRIG_HOT,       /* the host held above its high threshold */
	BAL_TRIG_DRAIN,     /* the host is draining */
};

/* One planned migration and its reasons. Members of an affinity group
 * come as consecutive moves with the same `unit` and numbers (those of the
 * whole group). */
struct bal_move {
	size_t vm, from, to;       /* indices, valid until bal_observe */
	char vm_name[FERRY_NAME_MAX + 1];
	char from_name[FERRY_NAME_MAX + 1];
	char to_name[FERRY_NAME_MAX + 1];
	char unit[FERRY_NAME_MAX + 1]; /* affinity group, "" for a lone VM */
	enum bal_trigger trigger;
	double cpu;                /* cores moved (the unit's) */
	uint64_t mem_mib;          /* memory moved (the unit's) */
	double from_before, from_after; /* source's predicted load */
	double to_before, to_after;     /* destination's predicted load */
	double improvement;        /* drop of max(source, destination) load;
				      for a drain, of the source's */
	double score;              /* improvement per GiB moved */
};

/* Why a candidate was not moved. */
enum bal_block {
	BAL_BLOCK_PINNED,
	BAL_BLOCK_COOLDOWN,
	BAL_BLOCK_AFFINITY,      /* its group cannot move as a unit */
	BAL_BLOCK_CAPS,          /* concurrency caps (cluster or source) */
	BAL_BLOCK_POLICY,        /* the policy refused the destinations */
	BAL_BLOCK_ANTI_AFFINITY, /* every destination hosts a group member */
	BAL_BLOCK_CAPACITY,      /* memory or high threshold everywhere */
	BAL_BLOCK_IMPROVEMENT,   /* no move clears min_improvement */
	BAL_BLOCK_DEST_CAPS,     /* destinations at their incoming cap */
	BAL_BLOCK_RETURN,        /* it left those hosts too recently */
	BAL_BLOCK_NO_HOST,       /* no other active host at all */
	BAL_BLOCK__COUNT
};

/* A VM of a draining host not moved this round, or (vm == BAL_NONE) a hot
 * host that got no move at all; why in code and a sentence with numbers. */
struct bal_blocked {
	size_t vm;                    /* index or BAL_NONE */
	size_t host;
	char vm_name[FERRY_NAME_MAX + 1]; /* "" for a host entry */
	char host_name[FERRY_NAME_MAX + 1];
	enum bal_block code;
	uint64_t until_s;             /* cooldown end, for BAL_BLOCK_COOLDOWN */
	char reason[BAL_REASON_MAX];
};

struct bal_plan {
	struct bal_move *moves;
	size_t nmoves;
	struct bal_blocked *blocked;  /* at most BAL_BLOCKED_MAX */
	size_t nblocked;
	size_t blocked_total;         /* including those not kept */
	struct bal_stats before;      /* bal_stats at planning time */
	double mean_after;            /* active hosts, moves applied */
	double imbalance_after;
	size_t hot_after;             /* hot hosts still above high-headroom */
	size_t candidates;            /* units examined */
	size_t evaluations;           /* destinations examined */
};

/* Names for output ("hot", "cooldown"). */
const char *bal_trigger_name(enum bal_trigger t);
const char *bal_block_name(enum bal_block b);

/* Plan the round's migrations (docs/balancer.md, "Algorithm"): candidates
 * are the VMs of draining hosts, of hosts hot for hold_rounds and, when
 * the imbalance held for hold_rounds, of hosts above mean + imbalance;
 * greedily, the (VM or affinity group, destination) with the best
 * improvement per GiB among each candidate's k least-loaded feasible
 * destinations, predictions updated after each, within the caps. Does not
 * change c: the caller applies what it starts with bal_moved. *plan is
 * overwritten (free it with bal_plan_free, also after an error). Only
 * FERR_INTERNAL (out of memory) fails. */
int bal_plan(const struct bal_cluster *c, struct bal_plan *plan,
	     struct ferr *err);

/* Free the arrays of a plan and zero it (a zeroed plan is fine). */
void bal_plan_free(struct bal_plan *plan);

/* The plan as JSON ({"stats", "moves", "blocked", ...}, docs/balancer.md);
 * NULL when out of memory. */
json_t *bal_plan_json(const struct bal_plan *plan);

/* The plan as text for people: one line per move with its numbers, one
 * per blocked entry. */
void bal_plan_print(FILE *f, const struct bal_plan *plan);

/* ---- traces (trace.c) ---- */

#define BAL_TRACE_LINE_MAX 256          /* bytes of a line, LF excluded */
#define BAL_TRACE_VMS_MAX 100000
#define BAL_TRACE_INTERVALS_MAX 1000000
#define BAL_TRACE_CELLS_MAX 20000000ULL /* VMs x intervals */
#define BAL_TRACE_FRACTION_DIGITS 9     /* digits after the point */

/* A load trace: for each interval and VM, its CPU demand (cores), memory
 * (MiB) and dirty rate (MiB/s). Arrays are [interval * nvms + vm]. */
struct bal_trace {
	size_t nvms, nintervals;
	char (*names)[FERRY_NAME_MAX + 1];
	float *cpu;
	uint32_t *mem_mib;
	float *dirty;       /* NULL when the trace has no dirty_mibps */
};

/* Read a CSV trace (docs/balancer.md, "Trace format") from f. The header
 * is `interval,vm,cpu,mem_mib` or `interval,vm,cpu,mem_mib,dirty_mibps`;
 * then one row per VM per interval, intervals from 0 in order, every VM of
 * interval 0 once in each. Errors are FERR_INVALID "ORIGIN:LINE: why"
 * (FERR_TOO_LARGE past the limits). *t is zeroed first and freed on error.
 */
int bal_trace_read(FILE *f, const char *origin, struct bal_trace *t,
		   struct ferr *err);

/* bal_trace_read of the file at path (FERR_IO when it cannot be opened). */
int bal_trace_load(const char *path, struct bal_trace *t, struct ferr *err);

/* Write t as CSV (with dirty_mibps when t has it). FERR_IO on a write
 * error. */
int bal_trace_write(FILE *f, const struct bal_trace *t, struct ferr *err);

/* Free the arrays of t and zero it. */
void bal_trace_free(struct bal_trace *t);

enum bal_trace_kind { BAL_TRACE_DIURNAL, BAL_TRACE_BURSTY, BAL_TRACE_STEADY };

/* "diurnal", "bursty", "steady" -> kind; -1 for anything else. */
int bal_trace_kind_parse(const char *s, enum bal_trace_kind *kind);

/* A synthetic trace, the same for the same arguments (docs/balancer.md,
 * "Synthetic traces"); intervals are 5 minutes, 288 a day. */
int bal_trace_generate(enum bal_trace_kind kind, size_t nvms,
		       size_t nintervals, uint64_t seed, struct bal_trace *t,
		       struct ferr *err);

/* ---- the simulator (sim.c) ---- */

#define BAL_SIM_HOSTS_MAX 100000
#define BAL_SIM_DEPARTURES 8 /* departures remembered per VM */

enum bal_sim_policy {
	BAL_SIM_BALANCER, /* ours: bal_observe + bal_plan */
	BAL_SIM_NAIVE,    /* baseline 1: one move per round, least loaded */
	BAL_SIM_STATIC,   /* baseline 2: ours without hold and cooldown */
	BAL_SIM_NONE,     /* no balancing, for reference */
	BAL_SIM__COUNT
};

enum bal_sim_placement { BAL_PLACE_ROUND_ROBIN, BAL_PLACE_FIRST_FIT };

/* The simulated cluster and migration cost model (docs/balancer.md,
 * "Simulator"). */
struct bal_sim_config {
	size_t hosts;
	double cores;              /* per host */
	uint64_t mem_mib;          /* per host */
	uint64_t interval_s;       /* length of a trace interval */
	enum bal_sim_placement placement;
	double bandwidth_mibps;    /* migration bandwidth */
	double dirty_per_core_mibps; /* dirty rate when the trace has none */
	double downtime_s;         /* stop-and-copy when the rest fits */
	unsigned max_rounds;       /* pre-copy rounds before stop-and-copy */
	double setup_s;            /* fixed cost of a migration */
	double mig_cpu;            /* extra cores on each host while it runs */
	double pdm_share;          /* demand lost by a migrating VM */
	unsigned osc_window;       /* intervals for "moved back" */
	struct bal_params params;  /* ours; the static baseline uses them with
				      hold_rounds 1 and no cooldown */
};

/* Fill cfg with the defaults of docs/balancer.md. */
void bal_sim_default(struct bal_sim_config *cfg);

/* The metrics of one simulated policy. */
struct bal_sim_metrics {
	enum bal_sim_policy policy;
	uint64_t migrations;
	uint64_t oscillations;   /* moves back to a host left within window */
	double slatah;           /* mean over hosts of overloaded/active time */
	double overload_host_h;  /* host-hours at >= 100% CPU */
	double pdm;              /* migration degradation / total demand */
	double slav;             /* slatah * pdm */
	double imbalance_mean;   /* std-dev of host loads, over intervals */
	double imbalance_p95;
	double hot_share;        /* host-intervals above params.high */
	double moved_gib;
	double mig_mean_s;       /* mean migration duration */
	uint64_t unplaced;       /* VMs the initial placement overcommitted */
};

const char *bal_sim_policy_name(enum bal_sim_policy p);

/* Duration in seconds of a pre-copy migration of mem_mib dirtying
 * dirty_mibps under cfg's model (docs/balancer.md, "Migration cost"). */
double bal_sim_migration_s(const struct bal_sim_config *cfg, double mem_mib,
			   double dirty_mibps);

/* Simulate trace t on cfg's cluster under one policy; deterministic.
 * FERR_INVALID for a bad configuration or a trace that does not fit (a VM
 * larger than a host). */
int bal_sim_run(const struct bal_sim_config *cfg, const struct bal_trace *t,
		enum bal_sim_policy policy, struct bal_sim_metrics *m,
		struct ferr *err);

/* Build the benchmark cluster into c (empty, with round begun): `hosts`
 * hosts of 32 cores and 256 GiB, `vms` VMs with deterministic
 * pseudo-random loads from seed; about one host in ten overloaded, one in
 * a thousand draining, a few affinity and anti-affinity groups. Then
 * bal_observe hold_rounds times so the triggers are armed. */
int bal_bench_build(struct bal_cluster *c, size_t hosts, size_t vms,
		    uint64_t seed, struct ferr *err);

/* ---- helpers shared by the component ---- */

/* Parse a whole unsigned decimal such as "12" or "0.25" (no sign, exponent
 * or spaces; at most BAL_TRACE_FRACTION_DIGITS digits after the point)
 * within [0, max] into *out. 0, or -1 leaving *out unchanged. */
int bal_parse_decimal(const char *s, double max, double *out);

/* ---- deterministic pseudo-random numbers (splitmix64) ---- */

struct bal_rng {
	uint64_t s;
};

static inline uint64_t bal_rng_next(struct bal_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double bal_rng_unit(struct bal_rng *r)
{
	return (double)(bal_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform in [lo, hi). */
static inline double bal_rng_range(struct bal_rng *r, double lo, double hi)
{
	return lo + (hi - lo) * bal_rng_unit(r);
}

#endif
