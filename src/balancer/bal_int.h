/* bal_int.h - what the balancer's files share (not for other components):
 * the name index, the cluster model's layout, and the planner's working
 * state. params.c: parameters; model.c: the cluster model (reports,
 * hysteresis, migrations' history); evaluate.c: candidates and their
 * destinations; plan.c: the greedy planner and its heap; planout.c: plans
 * as JSON and text; sim.c, trace.c: the simulator and traces. */
#ifndef FERRY_BAL_INT_H
#define FERRY_BAL_INT_H

#include "balancer.h"

#define BAL_MIB_PER_GIB 1024.0
#define BAL_HIGH_MIN 0.01          /* a smaller hot threshold is a typo */
/* MiB/s dirtied per core of demand where a trace has no dirty rate: the
 * simulator's default and the trace generator's mean */
#define BAL_DIRTY_PER_CORE_MIBPS 16.0

/* ---- name index: open addressing over entries keyed by name ---- */

struct name_index {
	size_t *slot; /* entry index + 1; 0 is empty */
	size_t cap;   /* power of two, or 0 */
};

/* Where entry i's name is: base + map[i] * stride (map NULL: i). */
struct ni_keys {
	const char *base;
	size_t stride;
	const size_t *map;
};

/* Entry e whose name is key, or BAL_NONE. */
size_t ni_find(const struct name_index *ni, const struct ni_keys *k,
	       const char *key);
/* Index entries 0..n-1 (replacing what ni held). 0 or -1 (no memory). */
int ni_build(struct name_index *ni, const struct ni_keys *k, size_t n);
/* Add entry e (n entries in all after it). 0 or -1 (no memory). */
int ni_add(struct name_index *ni, const struct ni_keys *k, size_t e,
	   size_t n);
void ni_free(struct name_index *ni);

/* ---- the cluster model (model.c) ---- */

struct bal_cluster {
	struct bal_params p;
	bal_allowed_fn allowed;
	void *allowed_arg;
	uint64_t now_s;
	struct bal_host *hosts;
	size_t nhosts, cap_hosts;
	struct name_index hidx;
	struct bal_vm *vms;
	size_t nvms, cap_vms;
	struct name_index vidx;
	struct bal_stats st;
};

/* ---- the planner's working state (evaluate.c, plan.c) ---- */

/* Groups of one kind (affinity or anti-affinity) for one plan: VMs' group
 * ids and the members of each group (CSR). */
struct groups {
	size_t n;
	size_t *of;     /* per VM: group id or BAL_NONE */
	size_t *rep;    /* per group: its first VM (names the group) */
	size_t *start;  /* per group + 1: offsets into mem */
	size_t *mem;    /* members, by VM index */
	struct name_index idx;
};

/* A candidate in the heap, with its latest evaluation. */
struct cand {
	size_t unit;          /* a member of the unit (its first seen) */
	enum bal_trigger cls;
	double key;           /* score when evaluated */
	uint64_t version;     /* state version it was evaluated at */
	size_t dest;
	double gain, src_after, dst_after;
};

/* Result of evaluating a unit against the destinations. */
struct eval {
	size_t dest;
	double gain, score, src_after, dst_after;
	size_t examined;
	unsigned tally[BAL_BLOCK__COUNT];
	char policy_why[BAL_REASON_MAX];
};

struct pl {
	const struct bal_cluster *c;
	const struct bal_params *p;
	struct bal_plan *plan;
	size_t moves_cap;
	double *cpu, *load;
	uint64_t *mem;
	unsigned *out, *in;
	size_t *order, *pos, norder; /* active hosts by load, ascending */
	size_t *vhost;               /* predicted host of each VM */
	bool *busy;                  /* in flight or planned */
	enum bal_trigger *trig;      /* per host; valid where is_src */
	bool *is_src;
	unsigned *moved_from;        /* planned moves per source host */
	unsigned (*tally)[BAL_BLOCK__COUNT]; /* per source host */
	struct groups aff, anti;
	unsigned inflight;
	double sum, sum2;            /* over active hosts */
	size_t nactive;
	uint64_t version;
	struct cand *heap;
	size_t nheap;
};

/* model.c */
void bal_usage(const struct bal_cluster *c, double *cpu, uint64_t *mem,
	       unsigned *out, unsigned *in);
double bal_load_of(const struct bal_host *h, double cpu, uint64_t mem);
bool bal_host_hot(const struct bal_params *p, const struct bal_host *h);

/* evaluate.c: the state the greedy loop and the evaluation share */
bool pl_evaluate(struct pl *pl, const size_t *mem, size_t n,
		 enum bal_trigger cls, struct eval *e);
double pl_mean(const struct pl *pl);
const size_t *pl_unit_members(const struct pl *pl, const size_t *v,
			      size_t *n);
int pl_groups_build(struct groups *g, const struct bal_cluster *c,
		    size_t field);
int pl_order_cmp(const void *x, const void *y, void *ctx);
void pl_order_fix(struct pl *pl, size_t h);
double pl_sd(const struct pl *pl);
bool pl_active(const struct bal_host *h);
void pl_groups_free(struct groups *g);

#endif
