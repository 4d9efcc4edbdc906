/* plan.c - the greedy planner: its heap of candidates, the caps, the
 * predictions it updates after each move, what it could not move and why
 * (docs/balancer.md, "Algorithm"). */
#define _GNU_SOURCE
#include "bal_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
	bool act = pl_active(ho);

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
	pl->load[h] = bal_load_of(ho, pl->cpu[h], pl->mem[h]);
	if (act) {
		pl->sum += pl->load[h];
		pl->sum2 += pl->load[h] * pl->load[h];
		pl_order_fix(pl, h);
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

	if (!pl_evaluate(pl, mem, n, x->cls, &e)) {
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
		} else if (bal_host_hot(pl->p, ho)) {
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
		mem = pl_unit_members(pl, &v, &n);
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
		const size_t *mem = pl_unit_members(pl, &x.unit, &n);
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
	pl_groups_free(&pl->aff);
	pl_groups_free(&pl->anti);
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
	if (pl_groups_build(&pl->aff, c, offsetof(struct bal_vm, affinity)) < 0 ||
	    pl_groups_build(&pl->anti, c,
			    offsetof(struct bal_vm, anti_affinity)) < 0)
		return -1;
	bal_usage(c, pl->cpu, pl->mem, pl->out, pl->in);
	for (size_t h = 0; h < c->nhosts; h++) {
		pl->load[h] = bal_load_of(&c->hosts[h], pl->cpu[h], pl->mem[h]);
		if (!pl_active(&c->hosts[h]))
			continue;
		pl->order[pl->norder++] = h;
		pl->sum += pl->load[h];
		pl->sum2 += pl->load[h] * pl->load[h];
		pl->nactive++;
	}
	qsort_r(pl->order, pl->norder, sizeof(*pl->order), pl_order_cmp,
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
