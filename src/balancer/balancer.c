/* balancer.c - the decision code: cluster model, hysteresis, cooldowns and
 * the greedy planner (docs/balancer.md, "Algorithm"). */
#define _GNU_SOURCE
#include "balancer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Defaults (docs/balancer.md, "Parameters"). */
#define DEF_HIGH 0.80
#define DEF_HEADROOM 0.10
#define DEF_IMBALANCE 0.15
#define DEF_CRITICAL 0.90         /* projected: no hold */
#define DEF_HOLD_ROUNDS 3u
/* Least peak drop worth a migration. While it runs a migration loads its
 * source and destination too (the simulator's half a core is 0.03 of a
 * 16-core host), and a few percent of noise in each VM's demand moves a
 * host's load by as much: below this, moves chase noise (was 0.03;
 * docs/balancer.md, "Results"). */
#define DEF_MIN_IMPROVEMENT 0.08
#define DEF_COOLDOWN_BASE_S (5ULL * 60)
#define DEF_COOLDOWN_MAX_S (4ULL * 3600)
#define DEF_BACKOFF_WINDOW_S (3600ULL)
#define DEF_RETURN_BAN_S (3600ULL)
#define DEF_MAX_CLUSTER 16u
#define DEF_MAX_OUT_PER_HOST FERRY_MIG_OUTGOING_DEFAULT
#define DEF_MAX_IN_PER_HOST FERRY_MIG_INCOMING_DEFAULT
#define DEF_DEST_CANDIDATES 8u
#define DEF_DEST_SCAN_MAX 64u

#define HIGH_MIN 0.01              /* a smaller hot threshold is a typo */
#define IMBALANCE_MIN 0.001
#define DEST_CANDIDATES_MAX 4096u
#define HOST_MEM_MAX_MIB (1ULL << 30) /* 1 PiB */
#define VM_MEM_MIN_MIB 1ULL
#define MIB_PER_GIB 1024.0
#define BACKOFF_SHIFT_MAX 40u      /* 2^40 s exceeds any cap */
#define INDEX_MIN_SLOTS 16u
#define DECIMAL_INT_MAX 1000000000000000ULL /* 1e15: exact in a double */

/* ---- parameters ---- */

enum ptype { P_DOUBLE, P_UINT, P_U64 };

static const struct pfield {
	const char *key;
	enum ptype type;
	size_t off;
	double min, max;
} pfields[] = {
	{ "high", P_DOUBLE, offsetof(struct bal_params, high), HIGH_MIN,
	  BAL_LOAD_THRESHOLD_MAX },
	{ "headroom", P_DOUBLE, offsetof(struct bal_params, headroom), 0,
	  BAL_LOAD_THRESHOLD_MAX },
	{ "critical", P_DOUBLE, offsetof(struct bal_params, critical),
	  HIGH_MIN, BAL_LOAD_THRESHOLD_MAX },
	{ "imbalance", P_DOUBLE, offsetof(struct bal_params, imbalance),
	  IMBALANCE_MIN, BAL_LOAD_THRESHOLD_MAX },
	{ "hold_rounds", P_UINT, offsetof(struct bal_params, hold_rounds), 1,
	  BAL_HOLD_MAX },
	{ "min_improvement", P_DOUBLE,
	  offsetof(struct bal_params, min_improvement), 0,
	  BAL_LOAD_THRESHOLD_MAX },
	{ "cooldown_base_s", P_U64,
	  offsetof(struct bal_params, cooldown_base_s), 0,
	  (double)BAL_TIME_MAX_S },
	{ "cooldown_max_s", P_U64, offsetof(struct bal_params, cooldown_max_s),
	  0, (double)BAL_TIME_MAX_S },
	{ "backoff_window_s", P_U64,
	  offsetof(struct bal_params, backoff_window_s), 0,
	  (double)BAL_TIME_MAX_S },
	{ "return_ban_s", P_U64, offsetof(struct bal_params, return_ban_s), 0,
	  (double)BAL_TIME_MAX_S },
	{ "max_cluster", P_UINT, offsetof(struct bal_params, max_cluster), 1,
	  BAL_CAP_MAX },
	{ "max_out_per_host", P_UINT,
	  offsetof(struct bal_params, max_out_per_host), 1, BAL_CAP_MAX },
	{ "max_in_per_host", P_UINT,
	  offsetof(struct bal_params, max_in_per_host), 1, BAL_CAP_MAX },
	{ "dest_candidates", P_UINT,
	  offsetof(struct bal_params, dest_candidates), 1,
	  DEST_CANDIDATES_MAX },
	{ "dest_scan_max", P_UINT, offsetof(struct bal_params, dest_scan_max),
	  1, BAL_HOSTS_MAX },
};
#define NPFIELDS (sizeof(pfields) / sizeof(pfields[0]))

void bal_params_default(struct bal_params *p)
{
	memset(p, 0, sizeof(*p));
	p->high = DEF_HIGH;
	p->headroom = DEF_HEADROOM;
	p->critical = DEF_CRITICAL;
	p->imbalance = DEF_IMBALANCE;
	p->hold_rounds = DEF_HOLD_ROUNDS;
	p->min_improvement = DEF_MIN_IMPROVEMENT;
	p->cooldown_base_s = DEF_COOLDOWN_BASE_S;
	p->cooldown_max_s = DEF_COOLDOWN_MAX_S;
	p->backoff_window_s = DEF_BACKOFF_WINDOW_S;
	p->return_ban_s = DEF_RETURN_BAN_S;
	p->max_cluster = DEF_MAX_CLUSTER;
	p->max_out_per_host = DEF_MAX_OUT_PER_HOST;
	p->max_in_per_host = DEF_MAX_IN_PER_HOST;
	p->dest_candidates = DEF_DEST_CANDIDATES;
	p->dest_scan_max = DEF_DEST_SCAN_MAX;
}

static double pfield_get(const struct bal_params *p, const struct pfield *f)
{
	const char *base = (const char *)p + f->off;

	switch (f->type) {
	case P_DOUBLE:
		return *(const double *)(const void *)base;
	case P_UINT:
		return (double)*(const unsigned *)(const void *)base;
	case P_U64:
		return (double)*(const uint64_t *)(const void *)base;
	}
	return 0;
}

int bal_params_check(const struct bal_params *p, struct ferr *err)
{
	for (size_t i = 0; i < NPFIELDS; i++) {
		double v = pfield_get(p, &pfields[i]);

		/* written so that NaN fails too */
		if (!(v >= pfields[i].min && v <= pfields[i].max))
			return ferr_set(err, FERR_INVALID,
					"balancer parameter %s must be between "
					"%g and %g",
					pfields[i].key, pfields[i].min,
					pfields[i].max);
	}
	if (p->headroom >= p->high)
		return ferr_set(err, FERR_INVALID,
				"balancer parameter headroom (%g) must be "
				"below high (%g)",
				p->headroom, p->high);
	if (p->critical < p->high)
		return ferr_set(err, FERR_INVALID,
				"balancer parameter critical (%g) must not be "
				"below high (%g)",
				p->critical, p->high);
	if (p->cooldown_base_s > p->cooldown_max_s)
		return ferr_set(err, FERR_INVALID,
				"balancer parameter cooldown_base_s must not "
				"exceed cooldown_max_s");
	if (p->dest_candidates > p->dest_scan_max)
		return ferr_set(err, FERR_INVALID,
				"balancer parameter dest_candidates must not "
				"exceed dest_scan_max");
	return 0;
}

static const struct pfield *pfield_find(const char *key)
{
	for (size_t i = 0; i < NPFIELDS; i++)
		if (!strcmp(pfields[i].key, key))
			return &pfields[i];
	return NULL;
}

static void pfield_put(struct bal_params *p, const struct pfield *f,
		       double d, uint64_t u)
{
	char *base = (char *)p + f->off;

	switch (f->type) {
	case P_DOUBLE:
		*(double *)(void *)base = d;
		break;
	case P_UINT:
		*(unsigned *)(void *)base = (unsigned)u;
		break;
	case P_U64:
		*(uint64_t *)(void *)base = u;
		break;
	}
}

int bal_parse_decimal(const char *s, double max, double *out)
{
	uint64_t ip = 0, frac = 0, scale = 1;
	unsigned nfrac = 0;
	const char *p = s;
	double v;

	if (!s || !(*p >= '0' && *p <= '9'))
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		ip = ip * 10 + (uint64_t)(*p - '0');
		if (ip > DECIMAL_INT_MAX)
			return -1;
	}
	if (*p == '.') {
		p++;
		if (!(*p >= '0' && *p <= '9'))
			return -1;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (++nfrac > BAL_TRACE_FRACTION_DIGITS)
				return -1;
			frac = frac * 10 + (uint64_t)(*p - '0');
			scale *= 10;
		}
	}
	if (*p != '\0')
		return -1;
	v = (double)ip + (double)frac / (double)scale;
	if (!(v <= max))
		return -1;
	*out = v;
	return 0;
}

int bal_params_set(struct bal_params *p, const char *key, const char *value,
		   struct ferr *err)
{
	const struct pfield *f = pfield_find(key);
	double d = 0;
	uint64_t u = 0;

	if (!f)
		return ferr_set(err, FERR_INVALID,
				"unknown balancer parameter \"%.64s\"", key);
	if (f->type == P_DOUBLE) {
		if (bal_parse_decimal(value, f->max, &d) < 0 || d < f->min)
			return ferr_set(err, FERR_INVALID,
					"balancer parameter %s: \"%.32s\" is "
					"not a number between %g and %g",
					key, value, f->min, f->max);
	} else if (parse_u64(value, (uint64_t)f->min, (uint64_t)f->max, &u) <
		   0) {
		return ferr_set(err, FERR_INVALID,
				"balancer parameter %s: \"%.32s\" is not an "
				"integer between %.0f and %.0f",
				key, value, f->min, f->max);
	}
	pfield_put(p, f, d, u);
	return 0;
}

int bal_params_from_json(const json_t *obj, const char *what,
			 struct bal_params *p, struct ferr *err)
{
	const char *key;
	json_t *v;

	if (!json_is_object(obj))
		return ferr_set(err, FERR_INVALID, "%s must be an object",
				what);
	json_object_foreach((json_t *)obj, key, v) {
		const struct pfield *f = pfield_find(key);
		double d = 0;
		uint64_t u = 0;

		if (!f)
			return ferr_set(err, FERR_INVALID,
					"%s.%.64s: unknown field", what, key);
		if (f->type == P_DOUBLE) {
			if (!json_is_number(v))
				return ferr_set(err, FERR_INVALID,
						"%s.%s must be a number", what,
						key);
			d = json_number_value(v);
			if (!(d >= f->min && d <= f->max))
				return ferr_set(err, FERR_INVALID,
						"%s.%s must be between %g and "
						"%g",
						what, key, f->min, f->max);
		} else {
			json_int_t i;

			if (!json_is_integer(v))
				return ferr_set(err, FERR_INVALID,
						"%s.%s must be an integer",
						what, key);
			i = json_integer_value(v);
			if (i < 0 || (double)i < f->min || (double)i > f->max)
				return ferr_set(err, FERR_INVALID,
						"%s.%s must be between %.0f "
						"and %.0f",
						what, key, f->min, f->max);
			u = (uint64_t)i;
		}
		pfield_put(p, f, d, u);
	}
	if (bal_params_check(p, err) < 0)
		return ferr_wrap(err, "%s", what);
	return 0;
}

json_t *bal_params_json(const struct bal_params *p)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	for (size_t i = 0; i < NPFIELDS; i++) {
		double v = pfield_get(p, &pfields[i]);
		json_t *j = pfields[i].type == P_DOUBLE
				    ? json_real(v)
				    : json_integer((json_int_t)v);

		if (json_object_set_new(o, pfields[i].key, j) < 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

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

static const char *ni_key(const struct ni_keys *k, size_t i)
{
	return k->base + (k->map ? k->map[i] : i) * k->stride;
}

static uint64_t name_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static size_t ni_find(const struct name_index *ni, const struct ni_keys *k,
		      const char *name)
{
	size_t mask, i;

	if (!ni->cap)
		return BAL_NONE;
	mask = ni->cap - 1;
	for (i = (size_t)name_hash(name) & mask; ni->slot[i];
	     i = (i + 1) & mask)
		if (!strcmp(ni_key(k, ni->slot[i] - 1), name))
			return ni->slot[i] - 1;
	return BAL_NONE;
}

static void ni_put(struct name_index *ni, const struct ni_keys *k, size_t e)
{
	size_t mask = ni->cap - 1;
	size_t i = (size_t)name_hash(ni_key(k, e)) & mask;

	while (ni->slot[i])
		i = (i + 1) & mask;
	ni->slot[i] = e + 1;
}

/* Index entries 0..n-1, growing the table (load <= 1/2) when needed. */
static int ni_build(struct name_index *ni, const struct ni_keys *k, size_t n)
{
	size_t cap = ni->cap ? ni->cap : INDEX_MIN_SLOTS;

	while (cap / 2 < n) {
		if (cap > SIZE_MAX / 4)
			return -1;
		cap *= 2;
	}
	if (cap != ni->cap) {
		size_t *s = calloc(cap, sizeof(*s));

		if (!s)
			return -1;
		free(ni->slot);
		ni->slot = s;
		ni->cap = cap;
	} else {
		memset(ni->slot, 0, cap * sizeof(*ni->slot));
	}
	for (size_t e = 0; e < n; e++)
		ni_put(ni, k, e);
	return 0;
}

/* Entry e (the n-th, n counting it) was appended: index it. */
static int ni_add(struct name_index *ni, const struct ni_keys *k, size_t e,
		  size_t n)
{
	if (!ni->cap || ni->cap / 2 < n)
		return ni_build(ni, k, n);
	ni_put(ni, k, e);
	return 0;
}

static void ni_free(struct name_index *ni)
{
	free(ni->slot);
	ni->slot = NULL;
	ni->cap = 0;
}

/* ---- the cluster ---- */

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

static struct ni_keys host_keys(const struct bal_cluster *c)
{
	struct ni_keys k = { (const char *)c->hosts, sizeof(struct bal_host),
			     NULL };
	return k;
}

static struct ni_keys vm_keys(const struct bal_cluster *c)
{
	struct ni_keys k = { (const char *)c->vms, sizeof(struct bal_vm),
			     NULL };
	return k;
}

int bal_cluster_new(const struct bal_params *p, struct bal_cluster **out,
		    struct ferr *err)
{
	struct bal_cluster *c;

	if (bal_params_check(p, err) < 0)
		return -1;
	c = calloc(1, sizeof(*c));
	if (!c)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	c->p = *p;
	*out = c;
	return 0;
}

void bal_cluster_free(struct bal_cluster *c)
{
	if (!c)
		return;
	ni_free(&c->hidx);
	ni_free(&c->vidx);
	free(c->hosts);
	free(c->vms);
	free(c);
}

int bal_cluster_set_params(struct bal_cluster *c, const struct bal_params *p,
			   struct ferr *err)
{
	if (bal_params_check(p, err) < 0)
		return -1;
	c->p = *p;
	return 0;
}

const struct bal_params *bal_cluster_params(const struct bal_cluster *c)
{
	return &c->p;
}

void bal_set_policy(struct bal_cluster *c, bal_allowed_fn fn, void *arg)
{
	c->allowed = fn;
	c->allowed_arg = arg;
}

void bal_round_begin(struct bal_cluster *c, uint64_t now_s)
{
	c->now_s = now_s;
	for (size_t i = 0; i < c->nhosts; i++)
		c->hosts[i].up = false;
	for (size_t i = 0; i < c->nvms; i++)
		c->vms[i].seen = false;
}

/* Make room for one more element in *arr (n used of *cap, max allowed). */
static int grow(void **arr, size_t *cap, size_t n, size_t size, size_t max)
{
	size_t ncap;
	void *a;

	if (n < *cap)
		return 0;
	if (n >= max)
		return -1;
	ncap = *cap ? *cap * 2 : INDEX_MIN_SLOTS;
	if (ncap > max)
		ncap = max;
	a = realloc(*arr, ncap * size);
	if (!a)
		return -1;
	*arr = a;
	*cap = ncap;
	return 0;
}

static bool finite_in(double v, double lo, double hi)
{
	return v >= lo && v <= hi; /* false for NaN */
}

int bal_host_report(struct bal_cluster *c, const struct bal_host_report *r,
		    size_t *idx, struct ferr *err)
{
	struct ni_keys k;
	struct bal_host *h;
	size_t i;

	if (!r->name || !name_is_valid(r->name))
		return ferr_set(err, FERR_INVALID,
				"host report: not a valid host name");
	if (!finite_in(r->cores, 0, BAL_CORES_MAX) || r->cores <= 0)
		return ferr_set(err, FERR_INVALID,
				"host %s: cores must be above 0 and at most "
				"%g",
				r->name, BAL_CORES_MAX);
	if (r->mem_mib == 0 || r->mem_mib > HOST_MEM_MAX_MIB)
		return ferr_set(err, FERR_INVALID,
				"host %s: mem_mib must be between 1 and %llu",
				r->name, (unsigned long long)HOST_MEM_MAX_MIB);
	if (!finite_in(r->cpu_other, 0, BAL_CORES_MAX))
		return ferr_set(err, FERR_INVALID,
				"host %s: cpu_other must be between 0 and %g",
				r->name, BAL_CORES_MAX);
	if (r->high != 0 &&
	    !finite_in(r->high, HIGH_MIN, BAL_LOAD_THRESHOLD_MAX))
		return ferr_set(err, FERR_INVALID,
				"host %s: high must be 0 (the default) or "
				"between %g and %g",
				r->name, HIGH_MIN, BAL_LOAD_THRESHOLD_MAX);
	k = host_keys(c);
	i = ni_find(&c->hidx, &k, r->name);
	if (i == BAL_NONE) {
		if (grow((void **)&c->hosts, &c->cap_hosts, c->nhosts,
			 sizeof(*c->hosts), BAL_HOSTS_MAX) < 0)
			return ferr_set(err, c->nhosts >= BAL_HOSTS_MAX
						     ? FERR_TOO_LARGE
						     : FERR_INTERNAL,
					"host %s: cannot add past %zu hosts",
					r->name, c->nhosts);
		i = c->nhosts;
		h = &c->hosts[i];
		memset(h, 0, sizeof(*h));
		snprintf(h->name, sizeof(h->name), "%s", r->name);
		k = host_keys(c);
		if (ni_add(&c->hidx, &k, i, i + 1) < 0)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
		c->nhosts++;
	}
	h = &c->hosts[i];
	if (h->up)
		return ferr_set(err, FERR_CONFLICT,
				"host %s reported twice in one round",
				r->name);
	h->cores = r->cores;
	h->mem_mib = r->mem_mib;
	h->cpu_other = r->cpu_other;
	h->high = r->high != 0 ? r->high : c->p.high;
	h->draining = r->draining;
	h->user = r->user;
	h->up = true;
	if (idx)
		*idx = i;
	return 0;
}

uint64_t bal_backoff_s(const struct bal_params *p, unsigned n,
		       uint64_t duration_s)
{
	uint64_t base = duration_s > p->cooldown_base_s ? duration_s
							: p->cooldown_base_s;
	unsigned shift = n > 1 ? n - 1 : 0;

	if (base == 0)
		return 0;
	if (shift >= BACKOFF_SHIFT_MAX || base > (p->cooldown_max_s >> shift))
		return p->cooldown_max_s;
	return base << shift;
}

/* A migration of v to `to` starts at now. */
static void start_move(const struct bal_params *p, struct bal_vm *v,
		       size_t to, uint64_t now)
{
	if (v->moves > 0 && now >= v->last_done_s &&
	    now - v->last_done_s >= p->backoff_window_s)
		v->moves = 0;
	if (v->moves < UINT32_MAX)
		v->moves++;
	v->move_start_s = now;
	v->to = to;
}

/* v's migration ends at now: on its destination when ok. */
static void finish_move(const struct bal_params *p, struct bal_vm *v, bool ok,
			uint64_t now)
{
	uint64_t dur = now >= v->move_start_s ? now - v->move_start_s : 0;
	uint64_t until;

	if (ok && v->to != BAL_NONE) {
		memmove(&v->left_host[1], &v->left_host[0],
			(BAL_LEFT_MAX - 1) * sizeof(v->left_host[0]));
		memmove(&v->left_s[1], &v->left_s[0],
			(BAL_LEFT_MAX - 1) * sizeof(v->left_s[0]));
		v->left_host[0] = v->host;
		v->left_s[0] = now;
		v->host = v->to;
	}
	v->to = BAL_NONE;
	v->last_done_s = now;
	v->last_duration_s = dur;
	if (!add_u64(now, bal_backoff_s(p, v->moves, dur), &until))
		until = UINT64_MAX;
	v->cooldown_until_s = until;
}

static bool group_name_ok(const char *s)
{
	return !s || !*s || name_is_valid(s);
}

int bal_vm_report(struct bal_cluster *c, const struct bal_vm_report *r,
		  size_t *idx, struct ferr *err)
{
	struct ni_keys k;
	struct bal_vm *v;
	size_t i, h, to = BAL_NONE;

	if (!r->name || !name_is_valid(r->name))
		return ferr_set(err, FERR_INVALID,
				"vm report: not a valid VM name");
	k = host_keys(c);
	h = r->host ? ni_find(&c->hidx, &k, r->host) : BAL_NONE;
	if (h == BAL_NONE || !c->hosts[h].up)
		return ferr_set(err, FERR_NOT_FOUND,
				"vm %s: host not reported this round",
				r->name);
	if (r->migrating_to) {
		to = ni_find(&c->hidx, &k, r->migrating_to);
		if (to == BAL_NONE || to == h)
			return ferr_set(err, FERR_INVALID,
					"vm %s: migrating_to must name another "
					"known host",
					r->name);
	}
	if (!finite_in(r->cpu, 0, BAL_VM_CPU_MAX))
		return ferr_set(err, FERR_INVALID,
				"vm %s: cpu must be between 0 and %g", r->name,
				BAL_VM_CPU_MAX);
	if (r->mem_mib < VM_MEM_MIN_MIB || r->mem_mib > FERRY_VM_MEM_MAX_MIB)
		return ferr_set(err, FERR_INVALID,
				"vm %s: mem_mib must be between %llu and %llu",
				r->name, VM_MEM_MIN_MIB, FERRY_VM_MEM_MAX_MIB);
	if (!finite_in(r->dirty_mibps, 0, BAL_DIRTY_MAX_MIBPS))
		return ferr_set(err, FERR_INVALID,
				"vm %s: dirty_mibps must be between 0 and %g",
				r->name, BAL_DIRTY_MAX_MIBPS);
	if (!group_name_ok(r->affinity) || !group_name_ok(r->anti_affinity))
		return ferr_set(err, FERR_INVALID,
				"vm %s: group names must be valid names",
				r->name);
	k = vm_keys(c);
	i = ni_find(&c->vidx, &k, r->name);
	if (i == BAL_NONE) {
		if (grow((void **)&c->vms, &c->cap_vms, c->nvms,
			 sizeof(*c->vms), BAL_VMS_MAX) < 0)
			return ferr_set(err, c->nvms >= BAL_VMS_MAX
						     ? FERR_TOO_LARGE
						     : FERR_INTERNAL,
					"vm %s: cannot add past %zu VMs",
					r->name, c->nvms);
		i = c->nvms;
		v = &c->vms[i];
		memset(v, 0, sizeof(*v));
		snprintf(v->name, sizeof(v->name), "%s", r->name);
		v->host = h;
		v->to = BAL_NONE;
		for (unsigned j = 0; j < BAL_LEFT_MAX; j++)
			v->left_host[j] = BAL_NONE;
		k = vm_keys(c);
		if (ni_add(&c->vidx, &k, i, i + 1) < 0)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
		c->nvms++;
		if (to != BAL_NONE)
			start_move(&c->p, v, to, c->now_s);
	} else {
		v = &c->vms[i];
		if (v->seen)
			return ferr_set(err, FERR_CONFLICT,
					"vm %s reported twice in one round",
					r->name);
		if (v->to != BAL_NONE && to == v->to) {
			v->host = h; /* still in flight */
		} else {
			if (v->to != BAL_NONE) /* ended since last round */
				finish_move(&c->p, v, h == v->to, c->now_s);
			if (h != v->host) { /* moved by someone else */
				start_move(&c->p, v, h, c->now_s);
				finish_move(&c->p, v, true, c->now_s);
			}
			if (to != BAL_NONE)
				start_move(&c->p, v, to, c->now_s);
		}
	}
	v->cpu = r->cpu;
	v->mem_mib = r->mem_mib;
	v->dirty_mibps = r->dirty_mibps;
	v->pinned = r->pinned;
	snprintf(v->affinity, sizeof(v->affinity), "%s",
		 r->affinity ? r->affinity : "");
	snprintf(v->anti_affinity, sizeof(v->anti_affinity), "%s",
		 r->anti_affinity ? r->anti_affinity : "");
	v->user = r->user;
	v->seen = true;
	if (idx)
		*idx = i;
	return 0;
}

/* Normalized load of h holding cpu cores and mem MiB. */
static double load_of(const struct bal_host *h, double cpu, uint64_t mem)
{
	double lc = cpu / h->cores;
	double lm = (double)mem / (double)h->mem_mib;

	return lc > lm ? lc : lm;
}

/* Committed CPU and memory per host (in-flight VMs on their destination)
 * and in-flight counts; any output array may be NULL. */
static void usage(const struct bal_cluster *c, double *cpu, uint64_t *mem,
		  unsigned *out, unsigned *in)
{
	for (size_t h = 0; h < c->nhosts; h++) {
		if (cpu)
			cpu[h] = c->hosts[h].cpu_other;
		if (mem)
			mem[h] = 0;
		if (out)
			out[h] = 0;
		if (in)
			in[h] = 0;
	}
	for (size_t i = 0; i < c->nvms; i++) {
		const struct bal_vm *v = &c->vms[i];
		size_t h = v->to != BAL_NONE ? v->to : v->host;

		if (cpu)
			cpu[h] += v->cpu;
		if (mem)
			mem[h] += v->mem_mib;
		if (v->to != BAL_NONE) {
			if (out)
				out[v->host]++;
			if (in)
				in[v->to]++;
		}
	}
}

/* Is h hot: above its high threshold for hold_rounds, or above it and
 * projected to reach critical (shifted by the host's own high) before the
 * hold would end? As of the last bal_observe. */
static bool host_hot(const struct bal_params *p, const struct bal_host *h)
{
	if (!h->hot_rounds)
		return false;
	return h->hot_rounds >= p->hold_rounds ||
	       h->projected >= p->critical + (h->high - p->high);
}

/* h's load was just computed (prev: the last round's, when it had one):
 * project it to the end of the hold with its rise since the last round. */
static void project(const struct bal_params *p, struct bal_host *h,
		    double prev, bool had_prev)
{
	double rise = had_prev && h->load > prev ? h->load - prev : 0;
	unsigned left = h->hot_rounds < p->hold_rounds
				? p->hold_rounds - h->hot_rounds
				: 0;

	h->projected = h->load + rise * (double)left;
}

void bal_observe(struct bal_cluster *c)
{
	struct bal_stats *st = &c->st;
	size_t j = 0;
	double sum = 0, dev = 0;
	unsigned inflight = 0;

	/* forget VMs their (up) host no longer lists */
	for (size_t i = 0; i < c->nvms; i++) {
		if (!c->vms[i].seen && c->hosts[c->vms[i].host].up)
			continue;
		if (j != i)
			c->vms[j] = c->vms[i];
		j++;
	}
	if (j != c->nvms) {
		struct ni_keys k;

		c->nvms = j;
		k = vm_keys(c);
		ni_build(&c->vidx, &k, j); /* same size: cannot fail */
	}
	for (size_t h = 0; h < c->nhosts; h++) {
		struct bal_host *ho = &c->hosts[h];

		ho->cpu = ho->cpu_other;
		ho->mem_used = 0;
		ho->out = ho->in = 0;
	}
	for (size_t i = 0; i < c->nvms; i++) {
		const struct bal_vm *v = &c->vms[i];
		struct bal_host *ho =
			&c->hosts[v->to != BAL_NONE ? v->to : v->host];

		ho->cpu += v->cpu;
		ho->mem_used += v->mem_mib;
		if (v->to != BAL_NONE) {
			c->hosts[v->host].out++;
			c->hosts[v->to].in++;
			inflight++;
		}
	}
	st->round++;
	st->now_s = c->now_s;
	st->hosts_up = st->hosts_active = st->hosts_draining = 0;
	st->hosts_hot = st->hosts_over = 0;
	for (size_t h = 0; h < c->nhosts; h++) {
		struct bal_host *ho = &c->hosts[h];

		double prev = ho->load;
		bool had_prev = ho->observed;

		ho->load = load_of(ho, ho->cpu, ho->mem_used);
		ho->observed = ho->up;
		if (!ho->up || ho->draining) {
			ho->hot_rounds = 0;
			ho->projected = ho->load;
			st->hosts_up += ho->up;
			st->hosts_draining += ho->up && ho->draining;
			continue;
		}
		st->hosts_up++;
		st->hosts_active++;
		sum += ho->load;
		if (ho->load > ho->high) {
			if (ho->hot_rounds < UINT32_MAX)
				ho->hot_rounds++;
			st->hosts_over++;
		} else {
			ho->hot_rounds = 0;
		}
		project(&c->p, ho, prev, had_prev);
		if (host_hot(&c->p, ho))
			st->hosts_hot++;
	}
	st->mean_load = st->hosts_active ? sum / (double)st->hosts_active : 0;
	for (size_t h = 0; h < c->nhosts; h++) {
		const struct bal_host *ho = &c->hosts[h];

		if (ho->up && !ho->draining)
			dev += (ho->load - st->mean_load) *
			       (ho->load - st->mean_load);
	}
	st->imbalance =
		st->hosts_active ? sqrt(dev / (double)st->hosts_active) : 0;
	if (st->hosts_active >= 2 && st->imbalance > c->p.imbalance) {
		if (st->imbalance_rounds < UINT32_MAX)
			st->imbalance_rounds++;
	} else {
		st->imbalance_rounds = 0;
	}
	st->imbalance_triggered = st->imbalance_rounds >= c->p.hold_rounds;
	st->inflight = inflight;
}

void bal_stats(const struct bal_cluster *c, struct bal_stats *out)
{
	*out = c->st;
}

size_t bal_host_count(const struct bal_cluster *c)
{
	return c->nhosts;
}

const struct bal_host *bal_host_at(const struct bal_cluster *c, size_t i)
{
	return i < c->nhosts ? &c->hosts[i] : NULL;
}

size_t bal_host_find(const struct bal_cluster *c, const char *name)
{
	struct ni_keys k = host_keys(c);

	return name ? ni_find(&c->hidx, &k, name) : BAL_NONE;
}

size_t bal_vm_count(const struct bal_cluster *c)
{
	return c->nvms;
}

const struct bal_vm *bal_vm_at(const struct bal_cluster *c, size_t i)
{
	return i < c->nvms ? &c->vms[i] : NULL;
}

size_t bal_vm_find(const struct bal_cluster *c, const char *name)
{
	struct ni_keys k = vm_keys(c);

	return name ? ni_find(&c->vidx, &k, name) : BAL_NONE;
}

int bal_moved(struct bal_cluster *c, size_t vm, size_t to, uint64_t now_s,
	      struct ferr *err)
{
	struct bal_vm *v;

	if (vm >= c->nvms || to >= c->nhosts)
		return ferr_set(err, FERR_NOT_FOUND,
				"bal_moved: no such VM or host");
	v = &c->vms[vm];
	if (v->to != BAL_NONE)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is already migrating", v->name);
	if (to == v->host)
		return ferr_set(err, FERR_CONFLICT, "vm %s is already on %s",
				v->name, c->hosts[to].name);
	start_move(&c->p, v, to, now_s);
	return 0;
}

int bal_done(struct bal_cluster *c, size_t vm, bool ok, uint64_t now_s,
	     struct ferr *err)
{
	struct bal_vm *v;

	if (vm >= c->nvms)
		return ferr_set(err, FERR_NOT_FOUND, "bal_done: no such VM");
	v = &c->vms[vm];
	if (v->to == BAL_NONE)
		return ferr_set(err, FERR_CONFLICT, "vm %s is not migrating",
				v->name);
	finish_move(&c->p, v, ok, now_s);
	return 0;
}

int bal_vm_history(struct bal_cluster *c, size_t vm, size_t from,
		   uint64_t start_s, uint64_t end_s, bool ok,
		   struct ferr *err)
{
	struct bal_vm *v;
	size_t here;

	if (vm >= c->nvms || (from != BAL_NONE && from >= c->nhosts))
		return ferr_set(err, FERR_NOT_FOUND,
				"bal_vm_history: no such VM or host");
	v = &c->vms[vm];
	if (v->to != BAL_NONE)
		return ferr_set(err, FERR_CONFLICT, "vm %s is migrating",
				v->name);
	here = v->host;
	if (ok && from != BAL_NONE && from != here)
		v->host = from; /* where it was, for the return ban */
	start_move(&c->p, v, here, start_s);
	finish_move(&c->p, v, v->host != here, end_s);
	v->host = here;
	v->to = BAL_NONE;
	return 0;
}

/* ---- the planner ---- */

const char *bal_trigger_name(enum bal_trigger t)
{
	static const char *const n[] = { "imbalance", "hot", "drain" };

	return (unsigned)t < sizeof(n) / sizeof(n[0]) ? n[t] : "?";
}

const char *bal_block_name(enum bal_block b)
{
	static const char *const n[BAL_BLOCK__COUNT] = {
		[BAL_BLOCK_PINNED] = "pinned",
		[BAL_BLOCK_COOLDOWN] = "cooldown",
		[BAL_BLOCK_AFFINITY] = "affinity",
		[BAL_BLOCK_CAPS] = "caps",
		[BAL_BLOCK_POLICY] = "policy",
		[BAL_BLOCK_ANTI_AFFINITY] = "anti-affinity",
		[BAL_BLOCK_CAPACITY] = "capacity",
		[BAL_BLOCK_IMPROVEMENT] = "improvement",
		[BAL_BLOCK_DEST_CAPS] = "destination-caps",
		[BAL_BLOCK_RETURN] = "recently-left",
		[BAL_BLOCK_NO_HOST] = "no-host",
	};

	return (unsigned)b < BAL_BLOCK__COUNT ? n[b] : "?";
}

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

static double pl_mean(const struct pl *pl)
{
	return pl->nactive ? pl->sum / (double)pl->nactive : 0;
}

static double pl_sd(const struct pl *pl)
{
	double m = pl_mean(pl), var;

	if (!pl->nactive)
		return 0;
	var = pl->sum2 / (double)pl->nactive - m * m;
	return var > 0 ? sqrt(var) : 0;
}

static bool active(const struct bal_host *h)
{
	return h->up && !h->draining;
}

static bool order_less(const struct pl *pl, size_t a, size_t b)
{
	return pl->load[a] < pl->load[b] ||
	       (pl->load[a] == pl->load[b] && a < b);
}

static int cmp_order_ctx_sort(const void *x, const void *y, void *ctx)
{
	const struct pl *pl = ctx;
	size_t a = *(const size_t *)x, b = *(const size_t *)y;

	if (order_less(pl, a, b))
		return -1;
	return order_less(pl, b, a) ? 1 : 0;
}

/* Host h's load changed: move it to its place in order. */
static void order_fix(struct pl *pl, size_t h)
{
	size_t i = pl->pos[h];

	while (i > 0 && order_less(pl, h, pl->order[i - 1])) {
		pl->order[i] = pl->order[i - 1];
		pl->pos[pl->order[i]] = i;
		i--;
	}
	while (i + 1 < pl->norder && order_less(pl, pl->order[i + 1], h)) {
		pl->order[i] = pl->order[i + 1];
		pl->pos[pl->order[i]] = i;
		i++;
	}
	pl->order[i] = h;
	pl->pos[h] = i;
}

static void groups_free(struct groups *g)
{
	free(g->of);
	free(g->rep);
	free(g->start);
	free(g->mem);
	ni_free(&g->idx);
	memset(g, 0, sizeof(*g));
}

/* Build the groups named by the field at offset `field` of the VMs. */
static int groups_build(struct groups *g, const struct bal_cluster *c,
			size_t field)
{
	struct ni_keys k = { (const char *)c->vms + field,
			     sizeof(struct bal_vm), NULL };
	size_t *fill = NULL;
	int rc = -1;

	g->of = malloc((c->nvms + 1) * sizeof(*g->of));
	g->rep = malloc((c->nvms + 1) * sizeof(*g->rep));
	if (!g->of || !g->rep)
		goto out;
	for (size_t v = 0; v < c->nvms; v++) {
		const char *name = (const char *)&c->vms[v] + field;
		size_t id;

		g->of[v] = BAL_NONE;
		if (!*name)
			continue;
		k.map = g->rep;
		id = ni_find(&g->idx, &k, name);
		if (id == BAL_NONE) {
			id = g->n++;
			g->rep[id] = v;
			if (ni_add(&g->idx, &k, id, g->n) < 0)
				goto out;
		}
		g->of[v] = id;
	}
	g->start = calloc(g->n + 1, sizeof(*g->start));
	g->mem = malloc((c->nvms + 1) * sizeof(*g->mem));
	fill = calloc(g->n + 1, sizeof(*fill));
	if (!g->start || !g->mem || !fill)
		goto out;
	for (size_t v = 0; v < c->nvms; v++)
		if (g->of[v] != BAL_NONE)
			g->start[g->of[v] + 1]++;
	for (size_t i = 0; i < g->n; i++)
		g->start[i + 1] += g->start[i];
	for (size_t v = 0; v < c->nvms; v++)
		if (g->of[v] != BAL_NONE)
			g->mem[g->start[g->of[v]] + fill[g->of[v]]++] = v;
	rc = 0;
out:
	free(fill);
	return rc;
}

/* The members of v's unit: its affinity group, or v alone. */
static const size_t *unit_members(const struct pl *pl, const size_t *v,
				  size_t *n)
{
	size_t g = pl->aff.of[*v];

	if (g == BAL_NONE) {
		*n = 1;
		return v;
	}
	*n = pl->aff.start[g + 1] - pl->aff.start[g];
	return &pl->aff.mem[pl->aff.start[g]];
}

/* Would a member of the unit share host d with a member of its
 * anti-affinity group (in flight: on either end)? */
static bool anti_conflict(const struct pl *pl, const size_t *mem, size_t n,
			  size_t d)
{
	for (size_t i = 0; i < n; i++) {
		size_t g = pl->anti.of[mem[i]];

		if (g == BAL_NONE)
			continue;
		for (size_t j = pl->anti.start[g]; j < pl->anti.start[g + 1];
		     j++) {
			size_t x = pl->anti.mem[j];
			bool in_unit = false;

			for (size_t u = 0; u < n; u++)
				in_unit |= mem[u] == x;
			if (in_unit)
				continue;
			if (pl->vhost[x] == d ||
			    (pl->c->vms[x].to != BAL_NONE &&
			     pl->c->vms[x].host == d))
				return true;
		}
	}
	return false;
}

/* Did a member of the unit leave host d less than return_ban_s ago? */
static bool recently_left(const struct pl *pl, const size_t *mem, size_t n,
			  size_t d)
{
	const struct bal_cluster *c = pl->c;

	for (size_t i = 0; i < n; i++) {
		const struct bal_vm *v = &c->vms[mem[i]];

		for (unsigned j = 0; j < BAL_LEFT_MAX; j++)
			if (v->left_host[j] == d && c->now_s >= v->left_s[j] &&
			    c->now_s - v->left_s[j] < pl->p->return_ban_s)
				return true;
	}
	return false;
}

/* Does the policy let every member go from src to d? */
static bool policy_ok(const struct pl *pl, const size_t *mem, size_t n,
		      size_t src, size_t d, struct eval *e)
{
	const struct bal_cluster *c = pl->c;
	char why[BAL_REASON_MAX];

	if (!c->allowed)
		return true;
	for (size_t i = 0; i < n; i++) {
		why[0] = '\0';
		if (!c->allowed(c->allowed_arg, &c->vms[mem[i]],
				&c->hosts[src], &c->hosts[d], why,
				sizeof(why))) {
			if (!e->policy_why[0])
				snprintf(e->policy_why,
					 sizeof(e->policy_why), "%s to %s: %s",
					 c->vms[mem[i]].name, c->hosts[d].name,
					 why[0] ? why : "refused");
			return false;
		}
	}
	return true;
}

/* Find the best destination of the unit (members mem[0..n)) in the
 * current predictions: among the first dest_candidates feasible hosts in
 * load order (dest_scan_max examined; all for drains), the highest score.
 * False with e->tally filled when there is none. */
static bool evaluate(struct pl *pl, const size_t *mem, size_t n,
		     enum bal_trigger cls, struct eval *e)
{
	const struct bal_cluster *c = pl->c;
	const struct bal_params *p = pl->p;
	bool drain = cls == BAL_TRIG_DRAIN;
	size_t src = pl->vhost[mem[0]];
	const struct bal_host *hs = &c->hosts[src];
	double ucpu = 0, ls, ls2;
	uint64_t umem = 0;
	unsigned found = 0;

	memset(e, 0, sizeof(*e));
	e->dest = BAL_NONE;
	for (size_t i = 0; i < n; i++) {
		ucpu += c->vms[mem[i]].cpu;
		umem += c->vms[mem[i]].mem_mib;
	}
	ls = pl->load[src];
	ls2 = load_of(hs, pl->cpu[src] - ucpu,
		      pl->mem[src] >= umem ? pl->mem[src] - umem : 0);
	for (size_t i = 0; i < pl->norder && found < p->dest_candidates;
	     i++) {
		size_t d = pl->order[i];
		const struct bal_host *hd = &c->hosts[d];
		double ld2, gain, score;

		if (d == src)
			continue;
		if (!drain && e->examined >= p->dest_scan_max)
			break;
		e->examined++;
		pl->plan->evaluations++;
		if (!drain && ls - pl->load[d] < p->min_improvement) {
			/* later hosts are at least as loaded: no gain */
			e->tally[BAL_BLOCK_IMPROVEMENT]++;
			break;
		}
		if (pl->in[d] + n > p->max_in_per_host) {
			e->tally[BAL_BLOCK_DEST_CAPS]++;
			continue;
		}
		if (pl->mem[d] + umem > hd->mem_mib) {
			e->tally[BAL_BLOCK_CAPACITY]++;
			continue;
		}
		ld2 = load_of(hd, pl->cpu[d] + ucpu, pl->mem[d] + umem);
		if (ld2 >= hd->high) {
			e->tally[BAL_BLOCK_CAPACITY]++;
			continue;
		}
		gain = drain ? ls - ls2 : ls - (ls2 > ld2 ? ls2 : ld2);
		if (!drain && gain < p->min_improvement) {
			e->tally[BAL_BLOCK_IMPROVEMENT]++;
			continue;
		}
		if (anti_conflict(pl, mem, n, d)) {
			e->tally[BAL_BLOCK_ANTI_AFFINITY]++;
			continue;
		}
		if (recently_left(pl, mem, n, d)) {
			e->tally[BAL_BLOCK_RETURN]++;
			continue;
		}
		if (!policy_ok(pl, mem, n, src, d, e)) {
			e->tally[BAL_BLOCK_POLICY]++;
			continue;
		}
		found++;
		score = gain * MIB_PER_GIB / (double)(umem ? umem : 1);
		if (e->dest == BAL_NONE || score > e->score ||
		    (score == e->score && ld2 < e->dst_after)) {
			e->dest = d;
			e->gain = gain;
			e->score = score;
			e->src_after = ls2;
			e->dst_after = ld2;
		}
	}
	if (e->dest == BAL_NONE && e->examined == 0)
		e->tally[BAL_BLOCK_NO_HOST]++;
	return e->dest != BAL_NONE;
}

/* ---- heap of candidates: max by (cls, key), then lower unit ---- */

static bool cand_above(const struct cand *a, const struct cand *b)
{
	if (a->cls != b->cls)
		return a->cls > b->cls;
	if (a->key != b->key)
		return a->key > b->key;
	return a->unit < b->unit;
}

static void heap_push(struct pl *pl, const struct cand *x)
{
	size_t i = pl->nheap++;

	while (i > 0 && cand_above(x, &pl->heap[(i - 1) / 2])) {
		pl->heap[i] = pl->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	pl->heap[i] = *x;
}

static struct cand heap_pop(struct pl *pl)
{
	struct cand top = pl->heap[0], last = pl->heap[--pl->nheap];
	size_t i = 0;

	for (;;) {
		size_t l = 2 * i + 1, best = i;
		const struct cand *bv = &last;

		if (l < pl->nheap && cand_above(&pl->heap[l], bv)) {
			best = l;
			bv = &pl->heap[l];
		}
		if (l + 1 < pl->nheap && cand_above(&pl->heap[l + 1], bv))
			best = l + 1;
		if (best == i)
			break;
		pl->heap[i] = pl->heap[best];
		i = best;
	}
	if (pl->nheap)
		pl->heap[i] = last;
	return top;
}

/* ---- plan output ---- */

static int add_move(struct pl *pl, const struct bal_move *m)
{
	struct bal_plan *plan = pl->plan;

	if (plan->nmoves == pl->moves_cap) {
		size_t ncap = pl->moves_cap ? pl->moves_cap * 2 : 16;
		struct bal_move *a =
			realloc(plan->moves, ncap * sizeof(*plan->moves));

		if (!a)
			return -1;
		plan->moves = a;
		pl->moves_cap = ncap;
	}
	plan->moves[plan->nmoves++] = *m;
	return 0;
}

static void add_blocked(struct pl *pl, size_t vm, size_t host,
			enum bal_block code, uint64_t until,
			const char *reason)
{
	struct bal_plan *plan = pl->plan;
	struct bal_blocked *b;

	plan->blocked_total++;
	if (plan->nblocked >= BAL_BLOCKED_MAX)
		return;
	b = &plan->blocked[plan->nblocked++];
	memset(b, 0, sizeof(*b));
	b->vm = vm;
	b->host = host;
	if (vm != BAL_NONE)
		snprintf(b->vm_name, sizeof(b->vm_name), "%s",
			 pl->c->vms[vm].name);
	snprintf(b->host_name, sizeof(b->host_name), "%s",
		 pl->c->hosts[host].name);
	b->code = code;
	b->until_s = until;
	snprintf(b->reason, sizeof(b->reason), "%s", reason);
}

/* The most frequent refusal in a tally (first code on ties). */
static enum bal_block tally_top(const unsigned *t)
{
	enum bal_block best = BAL_BLOCK_NO_HOST;
	unsigned n = 0;

	for (unsigned i = 0; i < BAL_BLOCK__COUNT; i++)
		if (t[i] > n) {
			n = t[i];
			best = (enum bal_block)i;
		}
	return best;
}

/* "no destination among N examined: 3 capacity, 2 policy (...)" */
static void tally_text(char *buf, size_t len, const unsigned *t,
		       size_t examined, const char *policy_why)
{
	size_t off;

	off = (size_t)snprintf(buf, len, "no destination among %zu examined:",
			       examined);
	for (unsigned i = 0; i < BAL_BLOCK__COUNT && off < len; i++) {
		if (!t[i])
			continue;
		off += (size_t)snprintf(buf + off, len - off, " %u %s", t[i],
					bal_block_name((enum bal_block)i));
		if (i == BAL_BLOCK_POLICY && policy_why && *policy_why &&
		    off < len)
			off += (size_t)snprintf(buf + off, len - off, " (%s)",
						policy_why);
	}
}

/* A unit of a candidate host that cannot move: a blocked entry per member
 * on a draining host, a tally for a hot/imbalanced host. */
static void unit_blocked(struct pl *pl, const size_t *mem, size_t n,
			 size_t src, enum bal_trigger cls,
			 enum bal_block code, uint64_t until,
			 const char *reason)
{
	if (cls != BAL_TRIG_DRAIN) {
		pl->tally[src][code]++;
		return;
	}
	for (size_t i = 0; i < n; i++)
		add_blocked(pl, mem[i], src, code, until, reason);
}

/* The most migrations one unit can start at once under the caps. */
static unsigned slots_max(const struct bal_params *p)
{
	unsigned m = p->max_cluster;

	if (p->max_out_per_host < m)
		m = p->max_out_per_host;
	if (p->max_in_per_host < m)
		m = p->max_in_per_host;
	return m;
}

/* Can the unit move at all this round (pins, groups, cooldown)? Reports
 * it blocked when not. */
static bool unit_eligible(struct pl *pl, const size_t *mem, size_t n,
			  size_t src, enum bal_trigger cls)
{
	const struct bal_cluster *c = pl->c;
	char why[BAL_REASON_MAX];
	uint64_t until = 0;

	for (size_t i = 0; i < n; i++) {
		const struct bal_vm *v = &c->vms[mem[i]];

		if (v->pinned) {
			snprintf(why, sizeof(why), "%s is pinned", v->name);
			unit_blocked(pl, mem, n, src, cls, BAL_BLOCK_PINNED, 0,
				     why);
			return false;
		}
		if (n > 1 && (v->to != BAL_NONE || v->host != src)) {
			snprintf(why, sizeof(why),
				 "affinity group %s: member %s is %s", v->affinity,
				 v->name,
				 v->to != BAL_NONE ? "migrating"
						   : "on another host");
			unit_blocked(pl, mem, n, src, cls, BAL_BLOCK_AFFINITY,
				     0, why);
			return false;
		}
		if (v->cooldown_until_s > c->now_s && v->cooldown_until_s > until)
			until = v->cooldown_until_s;
	}
	if (until) {
		snprintf(why, sizeof(why),
			 "cooldown for %llu s more (%u moves in the backoff "
			 "window)",
			 (unsigned long long)(until - c->now_s),
			 c->vms[mem[0]].moves);
		unit_blocked(pl, mem, n, src, cls, BAL_BLOCK_COOLDOWN, until,
			     why);
		return false;
	}
	if (n > slots_max(pl->p)) {
		snprintf(why, sizeof(why),
			 "affinity group %s needs %zu migration slots at once; "
			 "the caps allow %u",
			 c->vms[mem[0]].affinity, n, slots_max(pl->p));
		unit_blocked(pl, mem, n, src, cls, BAL_BLOCK_CAPS, 0, why);
		return false;
	}
	return true;
}

/* Does the unit's reason to move still hold under the predictions? */
static bool still_triggered(const struct pl *pl, size_t src,
			    enum bal_trigger cls)
{
	const struct bal_host *h = &pl->c->hosts[src];

	switch (cls) {
	case BAL_TRIG_DRAIN:
		return true;
	case BAL_TRIG_HOT:
		return pl->load[src] > h->high - pl->p->headroom;
	case BAL_TRIG_IMBALANCE:
		return pl_sd(pl) > pl->p->imbalance &&
		       pl->load[src] > pl_mean(pl) + pl->p->imbalance;
	}
	return false;
}

/* Host h now holds cpu and mem more (dcpu/dmem signed by `add`): update
 * its prediction, the active-host sums and its place in the order. */
static void host_change(struct pl *pl, size_t h, double ucpu, uint64_t umem,
			bool add)
{
	const struct bal_host *ho = &pl->c->hosts[h];
	bool act = active(ho);

	if (act) {
		pl->sum -= pl->load[h];
		pl->sum2 -= pl->load[h] * pl->load[h];
	}
	if (add) {
		pl->cpu[h] += ucpu;
		pl->mem[h] += umem;
	} else {
		pl->cpu[h] = pl->cpu[h] > ucpu ? pl->cpu[h] - ucpu : 0;
		pl->mem[h] = pl->mem[h] > umem ? pl->mem[h] - umem : 0;
	}
	pl->load[h] = load_of(ho, pl->cpu[h], pl->mem[h]);
	if (act) {
		pl->sum += pl->load[h];
		pl->sum2 += pl->load[h] * pl->load[h];
		order_fix(pl, h);
	}
}

/* Plan the move of the unit (members mem[0..n)) as evaluated in x and
 * update the predictions. */
static int apply(struct pl *pl, const size_t *mem, size_t n,
		 const struct cand *x)
{
	const struct bal_cluster *c = pl->c;
	size_t src = pl->vhost[mem[0]], d = x->dest;
	const struct bal_vm *first = &c->vms[mem[0]];
	struct bal_move m;
	double ucpu = 0;
	uint64_t umem = 0;

	for (size_t i = 0; i < n; i++) {
		ucpu += c->vms[mem[i]].cpu;
		umem += c->vms[mem[i]].mem_mib;
	}
	memset(&m, 0, sizeof(m));
	m.from = src;
	m.to = d;
	snprintf(m.from_name, sizeof(m.from_name), "%s", c->hosts[src].name);
	snprintf(m.to_name, sizeof(m.to_name), "%s", c->hosts[d].name);
	snprintf(m.unit, sizeof(m.unit), "%s", first->affinity);
	m.trigger = x->cls;
	m.cpu = ucpu;
	m.mem_mib = umem;
	m.from_before = pl->load[src];
	m.from_after = x->src_after;
	m.to_before = pl->load[d];
	m.to_after = x->dst_after;
	m.improvement = x->gain;
	m.score = x->key;
	for (size_t i = 0; i < n; i++) {
		m.vm = mem[i];
		snprintf(m.vm_name, sizeof(m.vm_name), "%s",
			 c->vms[mem[i]].name);
		if (add_move(pl, &m) < 0)
			return -1;
		pl->vhost[mem[i]] = d;
		pl->busy[mem[i]] = true;
	}
	host_change(pl, src, ucpu, umem, false);
	host_change(pl, d, ucpu, umem, true);
	pl->out[src] += (unsigned)n;
	pl->in[d] += (unsigned)n;
	pl->inflight += (unsigned)n;
	pl->moved_from[src]++;
	pl->version++;
	return 0;
}

/* The unit found no destination: block (drain) or tally (hot). */
static void no_dest(struct pl *pl, const size_t *mem, size_t n, size_t src,
		    enum bal_trigger cls, const struct eval *e)
{
	char why[BAL_REASON_MAX];

	if (cls != BAL_TRIG_DRAIN) {
		for (unsigned i = 0; i < BAL_BLOCK__COUNT; i++)
			pl->tally[src][i] += e->tally[i];
		return;
	}
	tally_text(why, sizeof(why), e->tally, e->examined, e->policy_why);
	unit_blocked(pl, mem, n, src, cls, tally_top(e->tally), 0, why);
}

/* Evaluate a unit into x; false (reported) when it has no destination. */
static bool cand_eval(struct pl *pl, const size_t *mem, size_t n,
		      struct cand *x)
{
	struct eval e;

	if (!evaluate(pl, mem, n, x->cls, &e)) {
		no_dest(pl, mem, n, pl->vhost[mem[0]], x->cls, &e);
		return false;
	}
	x->key = e.score;
	x->version = pl->version;
	x->dest = e.dest;
	x->gain = e.gain;
	x->src_after = e.src_after;
	x->dst_after = e.dst_after;
	return true;
}

/* Why each host's VMs are candidates, if they are. */
static void find_sources(struct pl *pl)
{
	const struct bal_cluster *c = pl->c;
	double mean = pl_mean(pl);

	for (size_t h = 0; h < c->nhosts; h++) {
		const struct bal_host *ho = &c->hosts[h];

		pl->is_src[h] = false;
		if (!ho->up)
			continue;
		if (ho->draining) {
			pl->trig[h] = BAL_TRIG_DRAIN;
		} else if (host_hot(pl->p, ho)) {
			pl->trig[h] = BAL_TRIG_HOT;
		} else if (c->st.imbalance_triggered &&
			   pl->load[h] > mean + pl->p->imbalance) {
			pl->trig[h] = BAL_TRIG_IMBALANCE;
		} else {
			continue;
		}
		pl->is_src[h] = true;
	}
}

/* Evaluate every eligible unit on a source host into the heap. */
static int build_candidates(struct pl *pl)
{
	const struct bal_cluster *c = pl->c;
	bool *visited = calloc(pl->aff.n + 1, sizeof(*visited));

	if (!visited)
		return -1;
	for (size_t v = 0; v < c->nvms; v++) {
		size_t src = c->vms[v].host, n, g = pl->aff.of[v];
		const size_t *mem;
		struct cand x;

		if (pl->busy[v] || !pl->is_src[src])
			continue;
		if (g != BAL_NONE) {
			if (visited[g])
				continue;
			visited[g] = true;
		}
		mem = unit_members(pl, &v, &n);
		pl->plan->candidates++;
		memset(&x, 0, sizeof(x));
		x.unit = v;
		x.cls = pl->trig[src];
		if (!unit_eligible(pl, mem, n, src, x.cls))
			continue;
		if (cand_eval(pl, mem, n, &x))
			heap_push(pl, &x);
	}
	free(visited);
	return 0;
}

/* Greedy: take the best candidate, re-evaluating stale ones first. */
static int run_greedy(struct pl *pl)
{
	const struct bal_params *p = pl->p;
	char why[BAL_REASON_MAX];

	while (pl->nheap) {
		struct cand x = heap_pop(pl);
		size_t n;
		const size_t *mem = unit_members(pl, &x.unit, &n);
		size_t src = pl->vhost[mem[0]];

		if (!still_triggered(pl, src, x.cls))
			continue;
		if (pl->inflight + n > p->max_cluster) {
			snprintf(why, sizeof(why),
				 "cluster cap: %u migrations in flight or "
				 "planned (max_cluster %u)",
				 pl->inflight, p->max_cluster);
			unit_blocked(pl, mem, n, src, x.cls, BAL_BLOCK_CAPS, 0,
				     why);
			continue;
		}
		if (pl->out[src] + n > p->max_out_per_host) {
			snprintf(why, sizeof(why),
				 "source cap: %u migrations out of %s in "
				 "flight or planned (max_out_per_host %u)",
				 pl->out[src], pl->c->hosts[src].name,
				 p->max_out_per_host);
			unit_blocked(pl, mem, n, src, x.cls, BAL_BLOCK_CAPS, 0,
				     why);
			continue;
		}
		if (x.version != pl->version) {
			if (cand_eval(pl, mem, n, &x))
				heap_push(pl, &x);
			continue;
		}
		if (apply(pl, mem, n, &x) < 0)
			return -1;
	}
	return 0;
}

/* One entry per hot host that got no move at all, with the tallies. */
static void report_hot(struct pl *pl)
{
	const struct bal_cluster *c = pl->c;
	char why[BAL_REASON_MAX];

	for (size_t h = 0; h < c->nhosts; h++) {
		const struct bal_host *ho = &c->hosts[h];
		const unsigned *t = pl->tally[h];
		size_t off;
		bool any = false;

		if (!pl->is_src[h] || pl->trig[h] != BAL_TRIG_HOT)
			continue;
		if (pl->load[h] > ho->high - pl->p->headroom)
			pl->plan->hot_after++;
		if (pl->moved_from[h])
			continue;
		for (unsigned i = 0; i < BAL_BLOCK__COUNT; i++)
			any |= t[i] != 0;
		if (!any)
			continue;
		off = (size_t)snprintf(why, sizeof(why),
				       "hot for %u rounds at load %.3f (high "
				       "%.3f); no move:",
				       ho->hot_rounds, pl->load[h], ho->high);
		for (unsigned i = 0; i < BAL_BLOCK__COUNT && off < sizeof(why);
		     i++)
			if (t[i])
				off += (size_t)snprintf(
					why + off, sizeof(why) - off, " %u %s",
					t[i], bal_block_name((enum bal_block)i));
		add_blocked(pl, BAL_NONE, h, tally_top(t), 0, why);
	}
}

static void pl_free(struct pl *pl)
{
	free(pl->cpu);
	free(pl->load);
	free(pl->mem);
	free(pl->out);
	free(pl->in);
	free(pl->order);
	free(pl->pos);
	free(pl->vhost);
	free(pl->busy);
	free(pl->trig);
	free(pl->is_src);
	free(pl->moved_from);
	free(pl->tally);
	free(pl->heap);
	groups_free(&pl->aff);
	groups_free(&pl->anti);
}

/* Allocate the scratch arrays and fill the predictions from c. */
static int pl_init(struct pl *pl)
{
	const struct bal_cluster *c = pl->c;
	size_t nh = c->nhosts + 1, nv = c->nvms + 1;

	pl->cpu = calloc(nh, sizeof(*pl->cpu));
	pl->load = calloc(nh, sizeof(*pl->load));
	pl->mem = calloc(nh, sizeof(*pl->mem));
	pl->out = calloc(nh, sizeof(*pl->out));
	pl->in = calloc(nh, sizeof(*pl->in));
	pl->order = calloc(nh, sizeof(*pl->order));
	pl->pos = calloc(nh, sizeof(*pl->pos));
	pl->trig = calloc(nh, sizeof(*pl->trig));
	pl->is_src = calloc(nh, sizeof(*pl->is_src));
	pl->moved_from = calloc(nh, sizeof(*pl->moved_from));
	pl->tally = calloc(nh, sizeof(*pl->tally));
	pl->vhost = calloc(nv, sizeof(*pl->vhost));
	pl->busy = calloc(nv, sizeof(*pl->busy));
	pl->heap = calloc(nv, sizeof(*pl->heap));
	pl->plan->blocked = calloc(BAL_BLOCKED_MAX, sizeof(struct bal_blocked));
	if (!pl->cpu || !pl->load || !pl->mem || !pl->out || !pl->in ||
	    !pl->order || !pl->pos || !pl->trig || !pl->is_src ||
	    !pl->moved_from || !pl->tally || !pl->vhost || !pl->busy ||
	    !pl->heap || !pl->plan->blocked)
		return -1;
	if (groups_build(&pl->aff, c, offsetof(struct bal_vm, affinity)) < 0 ||
	    groups_build(&pl->anti, c,
			 offsetof(struct bal_vm, anti_affinity)) < 0)
		return -1;
	usage(c, pl->cpu, pl->mem, pl->out, pl->in);
	for (size_t h = 0; h < c->nhosts; h++) {
		pl->load[h] = load_of(&c->hosts[h], pl->cpu[h], pl->mem[h]);
		if (!active(&c->hosts[h]))
			continue;
		pl->order[pl->norder++] = h;
		pl->sum += pl->load[h];
		pl->sum2 += pl->load[h] * pl->load[h];
		pl->nactive++;
	}
	qsort_r(pl->order, pl->norder, sizeof(*pl->order), cmp_order_ctx_sort,
		pl);
	for (size_t i = 0; i < pl->norder; i++)
		pl->pos[pl->order[i]] = i;
	for (size_t v = 0; v < c->nvms; v++) {
		const struct bal_vm *vm = &c->vms[v];

		pl->vhost[v] = vm->to != BAL_NONE ? vm->to : vm->host;
		pl->busy[v] = vm->to != BAL_NONE;
		pl->inflight += vm->to != BAL_NONE;
	}
	return 0;
}

int bal_plan(const struct bal_cluster *c, struct bal_plan *plan,
	     struct ferr *err)
{
	struct pl pl;
	int rc = -1;

	memset(plan, 0, sizeof(*plan));
	memset(&pl, 0, sizeof(pl));
	pl.c = c;
	pl.p = &c->p;
	pl.plan = plan;
	plan->before = c->st;
	if (pl_init(&pl) < 0)
		goto out;
	find_sources(&pl);
	if (build_candidates(&pl) < 0 || run_greedy(&pl) < 0)
		goto out;
	report_hot(&pl);
	plan->mean_after = pl_mean(&pl);
	plan->imbalance_after = pl_sd(&pl);
	rc = 0;
out:
	pl_free(&pl);
	if (rc < 0)
		ferr_set(err, FERR_INTERNAL, "balancer plan: out of memory");
	return rc;
}

void bal_plan_free(struct bal_plan *plan)
{
	free(plan->moves);
	free(plan->blocked);
	memset(plan, 0, sizeof(*plan));
}

/* ---- output ---- */

static json_t *stats_json(const struct bal_stats *s)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:I,"
			 " s:b, s:I}",
			 "round", (json_int_t)s->round, "now_s",
			 (json_int_t)s->now_s, "hosts_up",
			 (json_int_t)s->hosts_up, "hosts_active",
			 (json_int_t)s->hosts_active, "hosts_draining",
			 (json_int_t)s->hosts_draining, "hosts_hot",
			 (json_int_t)s->hosts_hot, "hosts_over",
			 (json_int_t)s->hosts_over, "mean_load", s->mean_load,
			 "imbalance", s->imbalance, "imbalance_rounds",
			 (json_int_t)s->imbalance_rounds,
			 "imbalance_triggered", s->imbalance_triggered,
			 "inflight", (json_int_t)s->inflight);
}

static json_t *move_json(const struct bal_move *m)
{
	return json_pack("{s:s, s:s, s:s, s:s?, s:s, s:f, s:I, s:f, s:f, s:f,"
			 " s:f, s:f, s:f}",
			 "vm", m->vm_name, "from", m->from_name, "to",
			 m->to_name, "unit", m->unit[0] ? m->unit : NULL,
			 "trigger", bal_trigger_name(m->trigger), "cpu",
			 m->cpu, "mem_mib", (json_int_t)m->mem_mib,
			 "from_load_before", m->from_before,
			 "from_load_after", m->from_after, "to_load_before",
			 m->to_before, "to_load_after", m->to_after,
			 "improvement", m->improvement, "score_per_gib",
			 m->score);
}

static json_t *blocked_json(const struct bal_blocked *b)
{
	json_t *o = json_pack("{s:s?, s:s, s:s, s:s}", "vm",
			      b->vm_name[0] ? b->vm_name : NULL, "host",
			      b->host_name, "code", bal_block_name(b->code),
			      "reason", b->reason);

	if (o && b->code == BAL_BLOCK_COOLDOWN &&
	    json_object_set_new(o, "until_s", json_integer((json_int_t)
								   b->until_s)) <
		    0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *bal_plan_json(const struct bal_plan *plan)
{
	json_t *o, *moves, *blocked;

	o = json_pack("{s:o, s:f, s:f, s:I, s:I, s:I, s:I, s:[], s:[]}",
		      "stats", stats_json(&plan->before), "mean_after",
		      plan->mean_after, "imbalance_after",
		      plan->imbalance_after, "hot_after",
		      (json_int_t)plan->hot_after, "candidates",
		      (json_int_t)plan->candidates, "evaluations",
		      (json_int_t)plan->evaluations, "blocked_total",
		      (json_int_t)plan->blocked_total, "moves", "blocked");
	if (!o)
		return NULL;
	moves = json_object_get(o, "moves");
	blocked = json_object_get(o, "blocked");
	for (size_t i = 0; i < plan->nmoves; i++)
		if (json_array_append_new(moves, move_json(&plan->moves[i])) <
		    0)
			goto fail;
	for (size_t i = 0; i < plan->nblocked; i++)
		if (json_array_append_new(blocked,
					  blocked_json(&plan->blocked[i])) < 0)
			goto fail;
	return o;
fail:
	json_decref(o);
	return NULL;
}

void bal_plan_print(FILE *f, const struct bal_plan *plan)
{
	const struct bal_stats *s = &plan->before;

	fprintf(f,
		"round %llu: %zu hosts up (%zu active, %zu draining), mean "
		"load %.3f, imbalance %.3f (%u rounds%s), %zu hot, %u in "
		"flight\n",
		(unsigned long long)s->round, s->hosts_up, s->hosts_active,
		s->hosts_draining, s->mean_load, s->imbalance,
		s->imbalance_rounds,
		s->imbalance_triggered ? ", triggered" : "", s->hosts_hot,
		s->inflight);
	for (size_t i = 0; i < plan->nmoves; i++) {
		const struct bal_move *m = &plan->moves[i];

		fprintf(f,
			"move %s %s -> %s [%s%s%s]: cpu %.2f, %llu MiB; %s "
			"%.3f -> %.3f, %s %.3f -> %.3f; improvement %.3f, "
			"score %.4f/GiB\n",
			m->vm_name, m->from_name, m->to_name,
			bal_trigger_name(m->trigger),
			m->unit[0] ? ", group " : "", m->unit, m->cpu,
			(unsigned long long)m->mem_mib, m->from_name,
			m->from_before, m->from_after, m->to_name,
			m->to_before, m->to_after, m->improvement, m->score);
	}
	for (size_t i = 0; i < plan->nblocked; i++) {
		const struct bal_blocked *b = &plan->blocked[i];

		fprintf(f, "blocked %s%s%s [%s]: %s\n",
			b->vm_name[0] ? b->vm_name : "host ",
			b->vm_name[0] ? " on " : "", b->host_name,
			bal_block_name(b->code), b->reason);
	}
	if (plan->blocked_total > plan->nblocked)
		fprintf(f, "(%zu more blocked entries not kept)\n",
			plan->blocked_total - plan->nblocked);
	fprintf(f,
		"after: mean load %.3f, imbalance %.3f, %zu hot hosts still "
		"above high-headroom\n",
		plan->mean_after, plan->imbalance_after, plan->hot_after);
}
