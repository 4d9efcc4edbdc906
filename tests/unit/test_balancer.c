/* Unit tests of the balancer: hysteresis, cooldowns, the planner's rules
 * (improvement, prediction, policy, groups, pins, caps, drains), reports,
 * the trace parser and a deterministic simulation. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "balancer.h"

#define CORES 16.0
#define MEM (64ULL * 1024)
#define ROUND_S 300

struct hspec {
	const char *name;
	bool draining;
};

struct vspec {
	const char *name;
	const char *host;
	double cpu;
	uint64_t mem;
	bool pinned;
	const char *aff, *anti, *to;
};

/* One round: report the hosts and VMs, observe. */
static void round_at(struct bal_cluster *c, uint64_t now,
		     const struct hspec *h, size_t nh, const struct vspec *v,
		     size_t nv)
{
	struct ferr err = { 0 };

	bal_round_begin(c, now);
	for (size_t i = 0; i < nh; i++) {
		struct bal_host_report r = { .name = h[i].name,
					     .cores = CORES,
					     .mem_mib = MEM,
					     .draining = h[i].draining };

		if (bal_host_report(c, &r, NULL, &err) < 0)
			fail_msg("host report: %s", err.msg);
	}
	for (size_t i = 0; i < nv; i++) {
		struct bal_vm_report r = { .name = v[i].name,
					   .host = v[i].host,
					   .migrating_to = v[i].to,
					   .cpu = v[i].cpu,
					   .mem_mib = v[i].mem ? v[i].mem : 1024,
					   .pinned = v[i].pinned,
					   .affinity = v[i].aff,
					   .anti_affinity = v[i].anti };

		if (bal_vm_report(c, &r, NULL, &err) < 0)
			fail_msg("vm report: %s", err.msg);
	}
	bal_observe(c);
}

static struct bal_cluster *cluster(const struct bal_params *p)
{
	struct bal_cluster *c = NULL;
	struct ferr err = { 0 };

	if (bal_cluster_new(p, &c, &err) < 0)
		fail_msg("cluster: %s", err.msg);
	return c;
}

static void plan_of(const struct bal_cluster *c, struct bal_plan *plan)
{
	struct ferr err = { 0 };

	if (bal_plan(c, plan, &err) < 0)
		fail_msg("plan: %s", err.msg);
}

/* Params that isolate one trigger: no imbalance trigger. */
static void quiet_params(struct bal_params *p)
{
	bal_params_default(p);
	p->imbalance = BAL_LOAD_THRESHOLD_MAX;
}

static const struct bal_move *move_of(const struct bal_plan *p,
				      const char *vm)
{
	for (size_t i = 0; i < p->nmoves; i++)
		if (!strcmp(p->moves[i].vm_name, vm))
			return &p->moves[i];
	return NULL;
}

static const struct bal_blocked *blocked_of(const struct bal_plan *p,
					    const char *vm)
{
	for (size_t i = 0; i < p->nblocked; i++)
		if (!strcmp(p->blocked[i].vm_name, vm))
			return &p->blocked[i];
	return NULL;
}

/* ---- parameters ---- */

static void test_params(void **state)
{
	struct bal_params p;
	struct ferr err = { 0 };
	json_t *j;

	(void)state;
	bal_params_default(&p);
	assert_int_equal(bal_params_check(&p, &err), 0);
	assert_int_equal(bal_params_set(&p, "hold_rounds", "5", &err), 0);
	assert_int_equal(p.hold_rounds, 5);
	assert_int_equal(bal_params_set(&p, "high", "0.75", &err), 0);
	assert_true(p.high == 0.75);
	assert_int_equal(bal_params_set(&p, "nope", "1", &err), -1);
	assert_non_null(strstr(err.msg, "unknown"));
	assert_int_equal(bal_params_set(&p, "high", "-1", &err), -1);
	assert_int_equal(bal_params_set(&p, "high", "1e3", &err), -1);
	assert_int_equal(bal_params_set(&p, "hold_rounds", "0", &err), -1);
	p.headroom = p.high;
	assert_int_equal(bal_params_check(&p, &err), -1);
	assert_non_null(strstr(err.msg, "headroom"));
	bal_params_default(&p);
	p.critical = p.high - 0.1;
	assert_int_equal(bal_params_check(&p, &err), -1);
	bal_params_default(&p);
	j = json_pack("{s:f, s:i}", "high", 0.7, "max_cluster", 4);
	assert_int_equal(bal_params_from_json(j, "balancer", &p, &err), 0);
	assert_true(p.high == 0.7);
	assert_int_equal(p.max_cluster, 4);
	json_decref(j);
	j = json_pack("{s:s}", "hold_rounds", "3");
	assert_int_equal(bal_params_from_json(j, "balancer", &p, &err), -1);
	assert_non_null(strstr(err.msg, "balancer.hold_rounds"));
	json_decref(j);
	j = json_pack("{s:i}", "speed", 3);
	assert_int_equal(bal_params_from_json(j, "balancer", &p, &err), -1);
	assert_non_null(strstr(err.msg, "balancer.speed"));
	json_decref(j);
}

static void test_parse_decimal(void **state)
{
	double v = -1;

	(void)state;
	assert_int_equal(bal_parse_decimal("0", 10, &v), 0);
	assert_true(v == 0);
	assert_int_equal(bal_parse_decimal("2.5", 10, &v), 0);
	assert_true(v == 2.5);
	assert_int_equal(bal_parse_decimal("10", 10, &v), 0);
	assert_int_equal(bal_parse_decimal("10.0001", 10, &v), -1);
	assert_int_equal(bal_parse_decimal("", 10, &v), -1);
	assert_int_equal(bal_parse_decimal("-1", 10, &v), -1);
	assert_int_equal(bal_parse_decimal("+1", 10, &v), -1);
	assert_int_equal(bal_parse_decimal("1.", 10, &v), -1);
	assert_int_equal(bal_parse_decimal(".5", 10, &v), -1);
	assert_int_equal(bal_parse_decimal("1e2", 1000, &v), -1);
	assert_int_equal(bal_parse_decimal("nan", 10, &v), -1);
	assert_int_equal(bal_parse_decimal("1 ", 10, &v), -1);
	assert_int_equal(bal_parse_decimal("0.1234567891", 10, &v), -1);
	assert_int_equal(bal_parse_decimal("99999999999999999999", 1e30, &v),
			 -1);
}

/* ---- hysteresis ---- */

static const struct hspec two_hosts[] = { { "h1", false }, { "h2", false } };

static void test_hysteresis(void **state)
{
	/* h1 at 0.85: above high (0.8), below critical (0.9), steady */
	const struct vspec vms[] = {
		{ "a", "h1", 4.0, 0, false, NULL, NULL, NULL },
		{ "b", "h1", 4.0, 0, false, NULL, NULL, NULL },
		{ "c", "h1", 5.6, 0, false, NULL, NULL, NULL },
		{ "d", "h2", 1.0, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;
	struct bal_stats st;

	(void)state;
	quiet_params(&p);
	c = cluster(&p);
	for (unsigned r = 1; r < p.hold_rounds; r++) {
		round_at(c, r * ROUND_S, two_hosts, 2, vms, 4);
		plan_of(c, &plan);
		assert_int_equal(plan.nmoves, 0);
		bal_stats(c, &st);
		assert_int_equal(st.hosts_over, 1);
		assert_int_equal(st.hosts_hot, 0);
		bal_plan_free(&plan);
	}
	round_at(c, p.hold_rounds * ROUND_S, two_hosts, 2, vms, 4);
	plan_of(c, &plan);
	assert_true(plan.nmoves >= 1);
	assert_string_equal(plan.moves[0].from_name, "h1");
	assert_string_equal(plan.moves[0].to_name, "h2");
	assert_int_equal(plan.moves[0].trigger, BAL_TRIG_HOT);
	bal_plan_free(&plan);
	bal_cluster_free(c);

	/* a dip below high restarts the count (no projection here) */
	p.critical = BAL_LOAD_THRESHOLD_MAX;
	c = cluster(&p);
	{
		struct vspec low[4];

		memcpy(low, vms, sizeof(low));
		low[2].cpu = 2.0;
		round_at(c, 1 * ROUND_S, two_hosts, 2, vms, 4);
		round_at(c, 2 * ROUND_S, two_hosts, 2, vms, 4);
		round_at(c, 3 * ROUND_S, two_hosts, 2, low, 4);
		round_at(c, 4 * ROUND_S, two_hosts, 2, vms, 4);
		round_at(c, 5 * ROUND_S, two_hosts, 2, vms, 4);
		plan_of(c, &plan);
		assert_int_equal(plan.nmoves, 0);
		bal_plan_free(&plan);
		round_at(c, 6 * ROUND_S, two_hosts, 2, vms, 4);
		plan_of(c, &plan);
		assert_true(plan.nmoves >= 1);
		bal_plan_free(&plan);
	}
	bal_cluster_free(c);
}

/* A host whose load jumps so that its projection reaches critical acts at
 * once; the same level reached slowly waits for the hold. */
static void test_projection(void **state)
{
	struct vspec vms[] = {
		{ "a", "h1", 2.0, 0, false, NULL, NULL, NULL },
		{ "b", "h1", 2.0, 0, false, NULL, NULL, NULL },
		{ "c", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "d", "h2", 1.0, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;

	(void)state;
	quiet_params(&p);
	c = cluster(&p);
	round_at(c, ROUND_S, two_hosts, 2, vms, 4);  /* h1 at 0.31 */
	vms[2].cpu = 9.6;                            /* h1 at 0.85 */
	round_at(c, 2 * ROUND_S, two_hosts, 2, vms, 4);
	plan_of(c, &plan);
	assert_true(plan.nmoves >= 1);
	assert_true(bal_host_at(c, 0)->projected >= p.critical);
	bal_plan_free(&plan);
	bal_cluster_free(c);
}

/* The imbalance trigger: no host hot, the spread held for hold rounds. */
static void test_imbalance(void **state)
{
	const struct hspec hosts[] = { { "h1", false }, { "h2", false },
				       { "h3", false } };
	const struct vspec vms[] = {
		{ "a", "h1", 6.0, 0, false, NULL, NULL, NULL },
		{ "b", "h1", 6.0, 0, false, NULL, NULL, NULL },
		{ "c", "h2", 6.0, 0, false, NULL, NULL, NULL },
		{ "d", "h2", 6.0, 0, false, NULL, NULL, NULL },
		{ "e", "h3", 1.6, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;
	struct bal_stats st;

	(void)state;
	bal_params_default(&p);
	c = cluster(&p);
	for (unsigned r = 1; r <= p.hold_rounds; r++) {
		round_at(c, r * ROUND_S, hosts, 3, vms, 5);
		bal_stats(c, &st);
		assert_int_equal(st.hosts_over, 0);
		assert_true(st.imbalance > p.imbalance);
		assert_int_equal(st.imbalance_rounds, r);
		plan_of(c, &plan);
		if (r < p.hold_rounds) {
			assert_int_equal(plan.nmoves, 0);
		} else {
			assert_true(plan.nmoves >= 1);
			assert_int_equal(plan.moves[0].trigger,
					 BAL_TRIG_IMBALANCE);
			assert_string_equal(plan.moves[0].to_name, "h3");
			assert_true(plan.imbalance_after < st.imbalance);
		}
		bal_plan_free(&plan);
	}
	bal_cluster_free(c);
}

/* ---- cooldown ---- */

static void test_cooldown(void **state)
{
	const struct hspec hosts[] = { { "h1", true }, { "h2", false },
				       { "h3", false } };
	const struct vspec vms[] = {
		{ "a", "h1", 1.0, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;
	const struct bal_blocked *b;
	struct ferr err = { 0 };
	size_t a;

	(void)state;
	quiet_params(&p);
	assert_int_equal(bal_backoff_s(&p, 1, 0), p.cooldown_base_s);
	assert_int_equal(bal_backoff_s(&p, 2, 0), 2 * p.cooldown_base_s);
	assert_int_equal(bal_backoff_s(&p, 3, 0), 4 * p.cooldown_base_s);
	assert_int_equal(bal_backoff_s(&p, 3, 1000), 4000);
	assert_int_equal(bal_backoff_s(&p, 100, 0), p.cooldown_max_s);
	assert_int_equal(bal_backoff_s(&p, UINT32_MAX, UINT64_MAX / 2),
			 p.cooldown_max_s);

	c = cluster(&p);
	round_at(c, 1000, hosts, 3, vms, 1);
	a = bal_vm_find(c, "a");
	assert_int_equal(bal_moved(c, a, bal_host_find(c, "h2"), 1000, &err),
			 0);
	assert_int_equal(bal_moved(c, a, bal_host_find(c, "h3"), 1000, &err),
			 -1);
	assert_int_equal(err.code, FERR_CONFLICT);
	assert_int_equal(bal_done(c, a, false, 1060, &err), 0); /* failed */
	assert_int_equal(bal_vm_at(c, a)->moves, 1);
	assert_int_equal(bal_vm_at(c, a)->cooldown_until_s,
			 1060 + p.cooldown_base_s);
	assert_int_equal(bal_done(c, a, true, 1070, &err), -1);

	/* still draining h1: in cooldown, the drain reports it blocked */
	round_at(c, 1200, hosts, 3, vms, 1);
	plan_of(c, &plan);
	assert_null(move_of(&plan, "a"));
	b = blocked_of(&plan, "a");
	assert_non_null(b);
	assert_int_equal(b->code, BAL_BLOCK_COOLDOWN);
	assert_int_equal(b->until_s, 1060 + p.cooldown_base_s);
	bal_plan_free(&plan);

	/* expired: planned; the second move's backoff doubles */
	round_at(c, 1060 + p.cooldown_base_s, hosts, 3, vms, 1);
	plan_of(c, &plan);
	assert_non_null(move_of(&plan, "a"));
	assert_int_equal(bal_moved(c, a, move_of(&plan, "a")->to, 1400, &err),
			 0);
	bal_plan_free(&plan);
	assert_int_equal(bal_done(c, a, true, 1410, &err), 0);
	assert_int_equal(bal_vm_at(c, a)->moves, 2);
	assert_int_equal(bal_vm_at(c, a)->cooldown_until_s,
			 1410 + 2 * p.cooldown_base_s);
	assert_int_not_equal(bal_vm_at(c, a)->host, bal_host_find(c, "h1"));

	/* quiet for the backoff window: the count starts over */
	assert_int_equal(bal_moved(c, a, bal_host_find(c, "h1"),
				   1410 + p.backoff_window_s, &err),
			 0);
	assert_int_equal(bal_vm_at(c, a)->moves, 1);
	bal_cluster_free(c);
}

/* A VM is not sent back to a host it left within return_ban_s. */
static void test_return_ban(void **state)
{
	const struct hspec hosts[] = { { "h1", true }, { "h2", false },
				       { "h3", false } };
	const struct vspec vms[] = {
		{ "a", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "b", "h3", 8.0, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;
	struct ferr err = { 0 };
	size_t a;

	(void)state;
	quiet_params(&p);
	p.cooldown_base_s = 0;
	c = cluster(&p);
	round_at(c, 1000, hosts, 3, vms, 2);
	a = bal_vm_find(c, "a");
	/* a went h2 -> h1 just now: draining h1 must not send it to h2, the
	 * least loaded host, but to h3 */
	assert_int_equal(bal_moved(c, a, bal_host_find(c, "h2"), 990, &err),
			 0);
	assert_int_equal(bal_done(c, a, true, 995, &err), 0);
	assert_int_equal(bal_moved(c, a, bal_host_find(c, "h1"), 996, &err),
			 0);
	assert_int_equal(bal_done(c, a, true, 999, &err), 0);
	round_at(c, 1100, hosts, 3, vms, 2);
	plan_of(c, &plan);
	assert_non_null(move_of(&plan, "a"));
	assert_string_equal(move_of(&plan, "a")->to_name, "h3");
	bal_plan_free(&plan);
	bal_cluster_free(c);
}

/* History from a previous leader: the cooldown and the return ban hold
 * for a VM this model never saw move. */
static void test_history(void **state)
{
	const struct hspec hosts[] = { { "h1", true }, { "h2", false },
				       { "h3", false } };
	const struct vspec vms[] = {
		{ "a", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "b", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "c", "h3", 8.0, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;
	const struct bal_blocked *bl;
	struct ferr err = { 0 };
	size_t a, b;

	(void)state;
	quiet_params(&p);
	c = cluster(&p);
	round_at(c, 1000, hosts, 3, vms, 3);
	a = bal_vm_find(c, "a");
	b = bal_vm_find(c, "b");
	/* a came h2 -> h1 (ended at 990): cooling down until 990 + base */
	assert_int_equal(bal_vm_history(c, a, bal_host_find(c, "h2"), 980, 990,
					true, &err),
			 0);
	assert_int_equal(bal_vm_at(c, a)->host, bal_host_find(c, "h1"));
	assert_int_equal(bal_vm_at(c, a)->to, BAL_NONE);
	assert_int_equal(bal_vm_at(c, a)->moves, 1);
	assert_int_equal(bal_vm_at(c, a)->cooldown_until_s,
			 990 + p.cooldown_base_s);
	assert_int_equal(bal_vm_at(c, a)->left_host[0], bal_host_find(c, "h2"));
	/* b's move failed: cooldown, no departure */
	assert_int_equal(bal_vm_history(c, b, BAL_NONE, 900, 960, false, &err),
			 0);
	assert_int_equal(bal_vm_at(c, b)->cooldown_until_s,
			 960 + p.cooldown_base_s);
	assert_int_equal(bal_vm_at(c, b)->left_host[0], BAL_NONE);
	assert_int_equal(bal_vm_history(c, 99, BAL_NONE, 1, 2, true, &err), -1);
	assert_int_equal(err.code, FERR_NOT_FOUND);
	plan_of(c, &plan);
	bl = blocked_of(&plan, "a");
	assert_non_null(bl);
	assert_int_equal(bl->code, BAL_BLOCK_COOLDOWN);
	assert_non_null(blocked_of(&plan, "b"));
	bal_plan_free(&plan);
	/* after the cooldown a drains to h3, not back to h2 (return ban) */
	round_at(c, 990 + p.cooldown_base_s, hosts, 3, vms, 3);
	plan_of(c, &plan);
	assert_non_null(move_of(&plan, "a"));
	assert_string_equal(move_of(&plan, "a")->to_name, "h3");
	assert_int_equal(bal_moved(c, a, move_of(&plan, "a")->to,
				   990 + p.cooldown_base_s, &err),
			 0);
	bal_plan_free(&plan);
	assert_int_equal(bal_vm_history(c, a, BAL_NONE, 1, 2, true, &err), -1);
	assert_int_equal(err.code, FERR_CONFLICT);
	bal_cluster_free(c);
}

/* ---- what to move ---- */

static void test_min_improvement(void **state)
{
	/* h1 at 0.85 in VMs of 0.0625 each: one move gains 0.0625 */
	const struct vspec vms[] = {
		{ "a", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "b", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "c", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "d", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "e", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "f", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "g", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "h", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "i", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "j", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "k", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "l", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "m", "h1", 1.6, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;

	(void)state;
	quiet_params(&p);
	p.hold_rounds = 1;
	p.min_improvement = 0.2;
	c = cluster(&p);
	round_at(c, ROUND_S, two_hosts, 2, vms, 13);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, 0);
	assert_int_equal(plan.nblocked, 1); /* the hot host, with why */
	assert_int_equal(plan.blocked[0].code, BAL_BLOCK_IMPROVEMENT);
	assert_string_equal(plan.blocked[0].host_name, "h1");
	bal_plan_free(&plan);

	p.min_improvement = 0.05;
	assert_int_equal(bal_cluster_set_params(c, &p, NULL), 0);
	plan_of(c, &plan);
	assert_true(plan.nmoves >= 1);
	for (size_t i = 0; i < plan.nmoves; i++)
		assert_true(plan.moves[i].improvement >= p.min_improvement);
	bal_plan_free(&plan);
	bal_cluster_free(c);
}

static void test_prediction(void **state)
{
	/* h1 hot with one big VM (6 cores = 0.375); h2 at 0.5 would end at
	 * 0.875 > high; h3 at 0.3 ends at 0.675 */
	const struct hspec hosts[] = { { "h1", false }, { "h2", false },
				       { "h3", false } };
	const struct vspec vms[] = {
		{ "big", "h1", 6.0, 1024, false, NULL, NULL, NULL },
		{ "x", "h1", 8.0, 8192, false, NULL, NULL, NULL },
		{ "y", "h2", 8.0, 1024, false, NULL, NULL, NULL },
		{ "z", "h3", 4.8, 1024, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;

	(void)state;
	quiet_params(&p);
	p.hold_rounds = 1;
	c = cluster(&p);
	round_at(c, ROUND_S, hosts, 3, vms, 4);
	plan_of(c, &plan);
	assert_non_null(move_of(&plan, "big"));
	assert_string_equal(move_of(&plan, "big")->to_name, "h3");
	for (size_t i = 0; i < plan.nmoves; i++) {
		assert_string_not_equal(plan.moves[i].to_name, "h2");
		assert_true(plan.moves[i].to_after < p.high);
		assert_true(plan.moves[i].to_after > plan.moves[i].to_before);
	}
	bal_plan_free(&plan);
	bal_cluster_free(c);

	/* without h3 nothing fits under high: no move at all */
	c = cluster(&p);
	round_at(c, ROUND_S, hosts, 2, vms, 3);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, 0);
	assert_int_equal(plan.nblocked, 1);
	assert_int_equal(plan.blocked[0].code, BAL_BLOCK_CAPACITY);
	bal_plan_free(&plan);
	bal_cluster_free(c);
}

/* Refuses any move to h2, or every move when arg says so. */
static bool deny_h2(void *arg, const struct bal_vm *vm,
		    const struct bal_host *from, const struct bal_host *to,
		    char *why, size_t len)
{
	bool all = arg != NULL;

	(void)vm;
	(void)from;
	if (!all && strcmp(to->name, "h2") != 0)
		return true;
	snprintf(why, len, "rule test-deny");
	return false;
}

static void test_policy(void **state)
{
	const struct hspec hosts[] = { { "h1", true }, { "h2", false },
				       { "h3", false } };
	const struct vspec vms[] = {
		{ "a", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "b", "h1", 1.0, 0, false, NULL, NULL, NULL },
		{ "c", "h3", 6.0, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;
	const struct bal_blocked *b;

	(void)state;
	quiet_params(&p);
	c = cluster(&p);
	bal_set_policy(c, deny_h2, NULL);
	round_at(c, ROUND_S, hosts, 3, vms, 3);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, 2);
	for (size_t i = 0; i < plan.nmoves; i++)
		assert_string_equal(plan.moves[i].to_name, "h3");
	bal_plan_free(&plan);

	bal_set_policy(c, deny_h2, (void *)1);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, 0);
	b = blocked_of(&plan, "a");
	assert_non_null(b);
	assert_int_equal(b->code, BAL_BLOCK_POLICY);
	assert_non_null(strstr(b->reason, "rule test-deny"));
	bal_plan_free(&plan);
	bal_cluster_free(c);
}

/* ---- groups and pins ---- */

static void test_affinity(void **state)
{
	const struct hspec hosts[] = { { "h1", true }, { "h2", false },
				       { "h3", false } };
	struct vspec vms[] = {
		{ "w1", "h1", 1.0, 2048, false, "web", NULL, NULL },
		{ "w2", "h1", 1.0, 2048, false, "web", NULL, NULL },
		{ "c", "h2", 2.0, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;

	(void)state;
	quiet_params(&p);
	c = cluster(&p);
	round_at(c, ROUND_S, hosts, 3, vms, 3);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, 2);
	assert_string_equal(plan.moves[0].unit, "web");
	assert_string_equal(plan.moves[1].unit, "web");
	assert_string_equal(plan.moves[0].to_name, plan.moves[1].to_name);
	assert_int_equal(plan.moves[0].mem_mib, 4096); /* the unit's */
	bal_plan_free(&plan);
	bal_cluster_free(c);

	/* one member pinned: the group does not move at all */
	vms[1].pinned = true;
	c = cluster(&p);
	round_at(c, ROUND_S, hosts, 3, vms, 3);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, 0);
	assert_int_equal(blocked_of(&plan, "w1")->code, BAL_BLOCK_PINNED);
	assert_int_equal(blocked_of(&plan, "w2")->code, BAL_BLOCK_PINNED);
	bal_plan_free(&plan);
	bal_cluster_free(c);

	/* members split over two hosts: not moved, said why */
	vms[1].pinned = false;
	vms[1].host = "h3";
	c = cluster(&p);
	round_at(c, ROUND_S, hosts, 3, vms, 3);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, 0);
	assert_int_equal(blocked_of(&plan, "w1")->code, BAL_BLOCK_AFFINITY);
	bal_plan_free(&plan);
	bal_cluster_free(c);

	/* a group needing more slots than the caps allow */
	vms[1].host = "h1";
	p.max_out_per_host = 1;
	c = cluster(&p);
	round_at(c, ROUND_S, hosts, 3, vms, 3);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, 0);
	assert_int_equal(blocked_of(&plan, "w1")->code, BAL_BLOCK_CAPS);
	bal_plan_free(&plan);
	bal_cluster_free(c);
}

static void test_anti_affinity_and_pins(void **state)
{
	const struct hspec hosts[] = { { "h1", true }, { "h2", false },
				       { "h3", false } };
	const struct vspec vms[] = {
		{ "d1", "h1", 1.0, 0, false, NULL, "db", NULL },
		{ "p", "h1", 1.0, 0, true, NULL, NULL, NULL },
		{ "d2", "h2", 1.0, 0, false, NULL, "db", NULL },
		{ "x", "h3", 6.0, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;

	(void)state;
	quiet_params(&p);
	c = cluster(&p);
	round_at(c, ROUND_S, hosts, 3, vms, 4);
	plan_of(c, &plan);
	/* h2 is the least loaded but holds d2 */
	assert_non_null(move_of(&plan, "d1"));
	assert_string_equal(move_of(&plan, "d1")->to_name, "h3");
	assert_null(move_of(&plan, "p"));
	assert_int_equal(blocked_of(&plan, "p")->code, BAL_BLOCK_PINNED);
	bal_plan_free(&plan);
	bal_cluster_free(c);

	/* only h2 left: d1 cannot go anywhere */
	c = cluster(&p);
	round_at(c, ROUND_S, hosts, 2, vms, 3);
	plan_of(c, &plan);
	assert_null(move_of(&plan, "d1"));
	assert_int_equal(blocked_of(&plan, "d1")->code,
			 BAL_BLOCK_ANTI_AFFINITY);
	bal_plan_free(&plan);
	bal_cluster_free(c);
}

/* ---- caps ---- */

static void test_caps(void **state)
{
	const struct hspec hosts[] = { { "h1", true },  { "h2", true },
				       { "h3", false }, { "h4", false },
				       { "h5", false }, { "h6", false } };
	const struct vspec vms[] = {
		{ "a1", "h1", 0.5, 0, false, NULL, NULL, NULL },
		{ "a2", "h1", 0.5, 0, false, NULL, NULL, NULL },
		{ "a3", "h1", 0.5, 0, false, NULL, NULL, NULL },
		{ "a4", "h1", 0.5, 0, false, NULL, NULL, NULL },
		{ "b1", "h2", 0.5, 0, false, NULL, NULL, NULL },
		{ "b2", "h2", 0.5, 0, false, NULL, NULL, NULL },
		{ "b3", "h2", 0.5, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;
	struct ferr err = { 0 };
	unsigned from_h1 = 0;

	(void)state;
	quiet_params(&p);
	p.max_out_per_host = 2;
	p.max_cluster = 3;
	c = cluster(&p);
	round_at(c, ROUND_S, hosts, 6, vms, 7);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, 3); /* the cluster cap */
	for (size_t i = 0; i < plan.nmoves; i++)
		from_h1 += !strcmp(plan.moves[i].from_name, "h1");
	assert_true(from_h1 <= 2);
	assert_int_equal(plan.blocked_total, 4);
	for (size_t i = 0; i < plan.nblocked; i++)
		assert_int_equal(plan.blocked[i].code, BAL_BLOCK_CAPS);
	bal_plan_free(&plan);

	/* an in-flight migration takes a cluster slot and one of h1's */
	assert_int_equal(bal_moved(c, bal_vm_find(c, "a1"),
				   bal_host_find(c, "h3"), ROUND_S, &err),
			 0);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, 2);
	from_h1 = 0;
	for (size_t i = 0; i < plan.nmoves; i++)
		from_h1 += !strcmp(plan.moves[i].from_name, "h1");
	assert_true(from_h1 <= 1);
	bal_plan_free(&plan);
	bal_cluster_free(c);

	/* destination cap: one destination taking one at a time, busy */
	p.max_cluster = 16;
	p.max_in_per_host = 1;
	c = cluster(&p);
	round_at(c, ROUND_S, hosts, 3, vms, 7);
	assert_int_equal(bal_moved(c, bal_vm_find(c, "a1"),
				   bal_host_find(c, "h3"), ROUND_S, &err),
			 0);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, 0);
	assert_int_equal(blocked_of(&plan, "a2")->code, BAL_BLOCK_DEST_CAPS);
	bal_plan_free(&plan);
	bal_cluster_free(c);
}

/* ---- draining ---- */

static void test_drain(void **state)
{
	const struct hspec hosts[] = { { "h1", true }, { "h2", false },
				       { "h3", false } };
	const struct vspec vms[] = {
		{ "a", "h1", 2.0, 4096, false, NULL, NULL, NULL },
		{ "b", "h1", 1.0, 4096, false, NULL, NULL, NULL },
		{ "c", "h1", 3.0, 4096, false, NULL, NULL, NULL },
		{ "huge", "h1", 14.0, 4096, false, NULL, NULL, NULL },
		{ "fat", "h1", 0.5, 60000, false, NULL, NULL, NULL },
		{ "x", "h2", 1.0, 8192, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;
	struct bal_stats st;
	json_t *j;

	(void)state;
	quiet_params(&p);
	p.max_out_per_host = 8;
	c = cluster(&p);
	round_at(c, ROUND_S, hosts, 3, vms, 6);
	bal_stats(c, &st);
	assert_int_equal(st.hosts_draining, 1);
	assert_int_equal(st.hosts_active, 2);
	plan_of(c, &plan);
	assert_non_null(move_of(&plan, "a"));
	assert_non_null(move_of(&plan, "b"));
	assert_non_null(move_of(&plan, "c"));
	for (size_t i = 0; i < plan.nmoves; i++) {
		assert_int_equal(plan.moves[i].trigger, BAL_TRIG_DRAIN);
		assert_string_not_equal(plan.moves[i].to_name, "h1");
		assert_true(plan.moves[i].to_after < p.high);
	}
	/* 14 cores fit nowhere under high, 60000 MiB fit nowhere at all */
	assert_null(move_of(&plan, "huge"));
	assert_int_equal(blocked_of(&plan, "huge")->code, BAL_BLOCK_CAPACITY);
	assert_non_null(strstr(blocked_of(&plan, "huge")->reason,
			       "capacity"));
	assert_null(move_of(&plan, "fat"));
	assert_int_equal(blocked_of(&plan, "fat")->code, BAL_BLOCK_CAPACITY);
	j = bal_plan_json(&plan);
	assert_non_null(j);
	assert_int_equal(json_array_size(json_object_get(j, "moves")), 3);
	assert_int_equal(json_array_size(json_object_get(j, "blocked")), 2);
	json_decref(j);
	bal_plan_free(&plan);
	bal_cluster_free(c);
}

/* ---- reports ---- */

static void test_reports(void **state)
{
	const struct hspec hosts[] = { { "h1", false }, { "h2", false } };
	struct vspec vms[] = {
		{ "a", "h1", 1.0, 0, false, NULL, NULL, "h2" },
		{ "b", "h1", 1.0, 0, false, NULL, NULL, NULL },
	};
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_stats st;
	struct ferr err = { 0 };
	struct bal_host_report hr = { .name = "h1", .cores = 4,
				      .mem_mib = 1024 };
	struct bal_vm_report vr = { .name = "b", .host = "h1", .cpu = 1,
				    .mem_mib = 512 };
	size_t a;

	(void)state;
	quiet_params(&p);
	c = cluster(&p);
	round_at(c, 100, hosts, 2, vms, 2);
	bal_stats(c, &st);
	assert_int_equal(st.inflight, 1);
	a = bal_vm_find(c, "a");
	assert_int_equal(bal_vm_at(c, a)->to, bal_host_find(c, "h2"));
	assert_int_equal(bal_host_at(c, 1)->in, 1);
	assert_int_equal(bal_host_at(c, 0)->out, 1);
	/* committed on the destination */
	assert_true(bal_host_at(c, 1)->cpu == 1.0);

	/* arrived: done, cooldown running */
	vms[0].host = "h2";
	vms[0].to = NULL;
	round_at(c, 400, hosts, 2, vms, 2);
	a = bal_vm_find(c, "a");
	assert_int_equal(bal_vm_at(c, a)->host, bal_host_find(c, "h2"));
	assert_int_equal(bal_vm_at(c, a)->to, BAL_NONE);
	assert_int_equal(bal_vm_at(c, a)->moves, 1);
	assert_true(bal_vm_at(c, a)->cooldown_until_s > 400);

	/* b is gone from h1's report: forgotten */
	round_at(c, 700, hosts, 2, vms, 1);
	assert_int_equal(bal_vm_count(c), 1);
	assert_int_equal(bal_vm_find(c, "b"), BAL_NONE);

	/* errors */
	bal_round_begin(c, 1000);
	assert_int_equal(bal_host_report(c, &hr, NULL, &err), 0);
	assert_int_equal(bal_host_report(c, &hr, NULL, &err), -1);
	assert_int_equal(err.code, FERR_CONFLICT);
	hr.name = "Bad Name";
	assert_int_equal(bal_host_report(c, &hr, NULL, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	hr.name = "h3";
	hr.cores = 0;
	assert_int_equal(bal_host_report(c, &hr, NULL, &err), -1);
	assert_int_equal(bal_vm_report(c, &vr, NULL, &err), 0);
	assert_int_equal(bal_vm_report(c, &vr, NULL, &err), -1);
	assert_int_equal(err.code, FERR_CONFLICT);
	vr.name = "c";
	vr.host = "h2"; /* not reported this round */
	assert_int_equal(bal_vm_report(c, &vr, NULL, &err), -1);
	assert_int_equal(err.code, FERR_NOT_FOUND);
	vr.host = "h1";
	vr.cpu = -1;
	assert_int_equal(bal_vm_report(c, &vr, NULL, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	vr.cpu = 1;
	vr.migrating_to = "h1";
	assert_int_equal(bal_vm_report(c, &vr, NULL, &err), -1);
	bal_cluster_free(c);
}

/* ---- traces ---- */

/* Parse text as a trace; the error message (or "" on success). */
static const char *parse(const char *text, struct ferr *err)
{
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	struct bal_trace t;
	int rc;

	assert_non_null(f);
	memset(err, 0, sizeof(*err));
	rc = bal_trace_read(f, "t.csv", &t, err);
	fclose(f);
	if (rc == 0)
		bal_trace_free(&t);
	return rc == 0 ? "" : err->msg;
}

static void expect_error(const char *text, const char *where,
			 const char *what)
{
	struct ferr err;
	const char *msg = parse(text, &err);

	if (!strstr(msg, where) || !strstr(msg, what))
		fail_msg("wanted \"%s\" and \"%s\", got \"%s\"", where, what,
			 msg);
	assert_int_equal(err.code, FERR_INVALID);
}

static void test_trace_errors(void **state)
{
	struct ferr err;

	(void)state;
	assert_string_equal(parse("interval,vm,cpu,mem_mib\n"
				  "0,a,1.5,1024\n0,b,0,2048\n"
				  "1,a,2,1024\n1,b,0.25,2048\n",
				  &err),
			    "");
	assert_string_equal(parse("interval,vm,cpu,mem_mib,dirty_mibps\r\n"
				  "0,a,1,1024,3.5\r\n1,a,1,1024,0",
				  &err),
			    "");
	expect_error("", "t.csv", "empty");
	expect_error("time,vm,cpu,mem\n0,a,1,1024\n", "t.csv:1:", "header");
	expect_error("interval,vm,cpu,mem_mib\n", "t.csv:1:", "no data");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n0,b,x,1024\n",
		     "t.csv:3:", "cpu");
	expect_error("interval,vm,cpu,mem_mib\n0,a,-1,1024\n", "t.csv:2:",
		     "cpu");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n0,a,1,1024\n",
		     "t.csv:3:", "twice");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n0,b,1,1024\n"
		     "1,a,1,1024\n2,a,1,1024\n",
		     "t.csv:5:", "interval 1 has 1 of 2 VMs (missing: b)");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n2,a,1,1024\n",
		     "t.csv:3:", "skips");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n1,a,1,1024\n"
		     "0,a,1,1024\n",
		     "t.csv:4:", "order");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n1,z,1,1024\n",
		     "t.csv:3:", "not in interval 0");
	expect_error("interval,vm,cpu,mem_mib\n0,A!,1,1024\n", "t.csv:2:",
		     "vm");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024,5\n", "t.csv:2:",
		     "fields");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1\n", "t.csv:2:",
		     "fields");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,0\n", "t.csv:2:",
		     "mem_mib");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n\n", "t.csv:3:",
		     "fields");
}

static void test_trace_limits(void **state)
{
	char longline[BAL_TRACE_LINE_MAX + 64];
	char text[2 * BAL_TRACE_LINE_MAX + 128];
	static const char nul[] = "interval,vm,cpu,mem_mib\n0,a,1\0,1024\n";
	FILE *f;
	struct bal_trace t;
	struct ferr err = { 0 };

	(void)state;
	memset(longline, '1', sizeof(longline) - 1);
	longline[sizeof(longline) - 1] = '\0';
	snprintf(text, sizeof(text), "interval,vm,cpu,mem_mib\n0,a,%s,1024\n",
		 longline);
	expect_error(text, "t.csv:2:", "longer than");
	f = fmemopen((void *)nul, sizeof(nul) - 1, "r");
	assert_non_null(f);
	assert_int_equal(bal_trace_read(f, "t.csv", &t, &err), -1);
	fclose(f);
	assert_non_null(strstr(err.msg, "t.csv:2: NUL"));
	assert_int_equal(bal_trace_load("/nonexistent/x.csv", &t, &err), -1);
	assert_int_equal(err.code, FERR_IO);
}

static void test_trace_roundtrip(void **state)
{
	struct bal_trace a, b;
	struct ferr err = { 0 };
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	(void)state;
	assert_int_equal(bal_trace_generate(BAL_TRACE_BURSTY, 7, 20, 3, &a,
					    &err),
			 0);
	f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(bal_trace_write(f, &a, &err), 0);
	fclose(f);
	f = fmemopen(buf, len, "r");
	assert_int_equal(bal_trace_read(f, "mem", &b, &err), 0);
	fclose(f);
	assert_int_equal(b.nvms, 7);
	assert_int_equal(b.nintervals, 20);
	assert_non_null(b.dirty);
	for (size_t i = 0; i < 7 * 20; i++) {
		assert_true(a.cpu[i] == b.cpu[i]);
		assert_int_equal(a.mem_mib[i], b.mem_mib[i]);
		assert_true(a.dirty[i] == b.dirty[i]);
	}
	bal_trace_free(&a);
	bal_trace_free(&b);
	free(buf);
}

/* ---- simulation ---- */

static void test_migration_model(void **state)
{
	struct bal_sim_config cfg;
	double t0, t1;

	(void)state;
	bal_sim_default(&cfg);
	/* no dirtying: setup + one copy + nothing left */
	t0 = bal_sim_migration_s(&cfg, 1250, 0);
	assert_true(t0 > cfg.setup_s + 1250 / cfg.bandwidth_mibps - 1e-9 &&
		    t0 < cfg.setup_s + 1250 / cfg.bandwidth_mibps + 1e-9);
	/* dirtying at half the bandwidth: a geometric series, < 2x */
	t1 = bal_sim_migration_s(&cfg, 1250, cfg.bandwidth_mibps / 2);
	assert_true(t1 > t0 && t1 < cfg.setup_s + 2 * (t0 - cfg.setup_s));
	/* faster than the link: bounded by the rounds */
	assert_true(bal_sim_migration_s(&cfg, 1250, 10 * cfg.bandwidth_mibps) <=
		    cfg.setup_s + (cfg.max_rounds + 1) * 1250 /
					  cfg.bandwidth_mibps + 1e-9);
}

static void test_sim_oscillations(void **state)
{
	struct bal_sim_config cfg;
	struct bal_sim_metrics m[BAL_SIM__COUNT], again;
	struct bal_trace t;
	struct ferr err = { 0 };

	(void)state;
	bal_sim_default(&cfg);
	cfg.hosts = 12;
	assert_int_equal(bal_trace_generate(BAL_TRACE_BURSTY, 60, 144, 7, &t,
					    &err),
			 0);
	for (unsigned p = 0; p < BAL_SIM__COUNT; p++)
		if (bal_sim_run(&cfg, &t, (enum bal_sim_policy)p, &m[p],
				&err) < 0)
			fail_msg("sim: %s", err.msg);
	assert_true(m[BAL_SIM_NAIVE].oscillations > 0);
	assert_true(m[BAL_SIM_STATIC].oscillations > 0);
	assert_true(m[BAL_SIM_BALANCER].oscillations <
		    m[BAL_SIM_NAIVE].oscillations);
	assert_true(m[BAL_SIM_BALANCER].oscillations <
		    m[BAL_SIM_STATIC].oscillations);
	assert_true(m[BAL_SIM_BALANCER].slatah <= m[BAL_SIM_NAIVE].slatah);
	assert_true(m[BAL_SIM_BALANCER].slatah <= m[BAL_SIM_STATIC].slatah);
	assert_true(m[BAL_SIM_BALANCER].slatah < m[BAL_SIM_NONE].slatah);
	assert_int_equal(m[BAL_SIM_NONE].migrations, 0);
	/* deterministic */
	assert_int_equal(bal_sim_run(&cfg, &t, BAL_SIM_BALANCER, &again, &err),
			 0);
	assert_int_equal(again.migrations, m[BAL_SIM_BALANCER].migrations);
	assert_true(again.slatah == m[BAL_SIM_BALANCER].slatah);
	/* a VM larger than a host is refused */
	cfg.mem_mib = 512;
	assert_int_equal(bal_sim_run(&cfg, &t, BAL_SIM_BALANCER, &again, &err),
			 -1);
	assert_int_equal(err.code, FERR_INVALID);
	bal_trace_free(&t);
}

static void test_bench_small(void **state)
{
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;
	struct bal_stats st;
	struct ferr err = { 0 };

	(void)state;
	bal_params_default(&p);
	c = cluster(&p);
	assert_int_equal(bal_bench_build(c, 2000, 20000, 1, &err), 0);
	bal_stats(c, &st);
	assert_true(st.hosts_hot > 100);
	assert_int_equal(st.hosts_draining, 2);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, p.max_cluster);
	for (size_t i = 0; i < plan.nmoves; i++)
		assert_true(plan.moves[i].to_after < p.high);
	bal_plan_free(&plan);
	bal_cluster_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_parse_decimal),
		cmocka_unit_test(test_hysteresis),
		cmocka_unit_test(test_projection),
		cmocka_unit_test(test_imbalance),
		cmocka_unit_test(test_cooldown),
		cmocka_unit_test(test_return_ban),
		cmocka_unit_test(test_history),
		cmocka_unit_test(test_min_improvement),
		cmocka_unit_test(test_prediction),
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_affinity),
		cmocka_unit_test(test_anti_affinity_and_pins),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_drain),
		cmocka_unit_test(test_reports),
		cmocka_unit_test(test_trace_errors),
		cmocka_unit_test(test_trace_limits),
		cmocka_unit_test(test_trace_roundtrip),
		cmocka_unit_test(test_migration_model),
		cmocka_unit_test(test_sim_oscillations),
		cmocka_unit_test(test_bench_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
