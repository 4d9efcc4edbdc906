/* model.c - the decision code's model of the cluster: hosts and VMs as
 * reported each round, hysteresis (bal_observe), and each VM's migration
 * history (cooldowns, backoff, return bans). */
#define _GNU_SOURCE
#include "bal_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HOST_MEM_MAX_MIB (1ULL << 30) /* 1 PiB */
#define VM_MEM_MIN_MIB 1ULL
#define BACKOFF_SHIFT_MAX 40u      /* 2^40 s exceeds any cap */
#define INDEX_MIN_SLOTS 16u

/* ---- name index: open addressing over entries keyed by name ---- */


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

size_t ni_find(const struct name_index *ni, const struct ni_keys *k,
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
int ni_build(struct name_index *ni, const struct ni_keys *k, size_t n)
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
int ni_add(struct name_index *ni, const struct ni_keys *k, size_t e,
		  size_t n)
{
	if (!ni->cap || ni->cap / 2 < n)
		return ni_build(ni, k, n);
	ni_put(ni, k, e);
	return 0;
}

void ni_free(struct name_index *ni)
{
	free(ni->slot);
	ni->slot = NULL;
	ni->cap = 0;
}

/* ---- the cluster ---- */


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
	    !finite_in(r->high, BAL_HIGH_MIN, BAL_LOAD_THRESHOLD_MAX))
		return ferr_set(err, FERR_INVALID,
				"host %s: high must be 0 (the default) or "
				"between %g and %g",
				r->name, BAL_HIGH_MIN, BAL_LOAD_THRESHOLD_MAX);
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
double bal_load_of(const struct bal_host *h, double cpu, uint64_t mem)
{
	double lc = cpu / h->cores;
	double lm = (double)mem / (double)h->mem_mib;

	return lc > lm ? lc : lm;
}

/* Committed CPU and memory per host (in-flight VMs on their destination)
 * and in-flight counts; any output array may be NULL. */
void bal_usage(const struct bal_cluster *c, double *cpu, uint64_t *mem,
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
bool bal_host_hot(const struct bal_params *p, const struct bal_host *h)
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

		ho->load = bal_load_of(ho, ho->cpu, ho->mem_used);
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
		if (bal_host_hot(&c->p, ho))
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
