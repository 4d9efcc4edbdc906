/* evaluate.c - the planner's candidates and their destinations: groups,
 * the feasibility checks of a move, its score (docs/balancer.md,
 * "Candidates and selection"). */
#define _GNU_SOURCE
#include "bal_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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


double pl_mean(const struct pl *pl)
{
	return pl->nactive ? pl->sum / (double)pl->nactive : 0;
}

double pl_sd(const struct pl *pl)
{
	double m = pl_mean(pl), var;

	if (!pl->nactive)
		return 0;
	var = pl->sum2 / (double)pl->nactive - m * m;
	return var > 0 ? sqrt(var) : 0;
}

bool pl_active(const struct bal_host *h)
{
	return h->up && !h->draining;
}

static bool pl_order_less(const struct pl *pl, size_t a, size_t b)
{
	return pl->load[a] < pl->load[b] ||
	       (pl->load[a] == pl->load[b] && a < b);
}

int pl_order_cmp(const void *x, const void *y, void *ctx)
{
	const struct pl *pl = ctx;
	size_t a = *(const size_t *)x, b = *(const size_t *)y;

	if (pl_order_less(pl, a, b))
		return -1;
	return pl_order_less(pl, b, a) ? 1 : 0;
}

/* Host h's load changed: move it to its place in order. */
void pl_order_fix(struct pl *pl, size_t h)
{
	size_t i = pl->pos[h];

	while (i > 0 && pl_order_less(pl, h, pl->order[i - 1])) {
		pl->order[i] = pl->order[i - 1];
		pl->pos[pl->order[i]] = i;
		i--;
	}
	while (i + 1 < pl->norder && pl_order_less(pl, pl->order[i + 1], h)) {
		pl->order[i] = pl->order[i + 1];
		pl->pos[pl->order[i]] = i;
		i++;
	}
	pl->order[i] = h;
	pl->pos[h] = i;
}

void pl_groups_free(struct groups *g)
{
	free(g->of);
	free(g->rep);
	free(g->start);
	free(g->mem);
	ni_free(&g->idx);
	memset(g, 0, sizeof(*g));
}

/* Build the groups named by the field at offset `field` of the VMs. */
int pl_groups_build(struct groups *g, const struct bal_cluster *c,
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
const size_t *pl_unit_members(const struct pl *pl, const size_t *v,
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
bool pl_evaluate(struct pl *pl, const size_t *mem, size_t n,
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
	ls2 = bal_load_of(hs, pl->cpu[src] - ucpu,
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
		ld2 = bal_load_of(hd, pl->cpu[d] + ucpu, pl->mem[d] + umem);
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
		score = gain * BAL_MIB_PER_GIB / (double)(umem ? umem : 1);
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
