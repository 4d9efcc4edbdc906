/* Unit tests of the balancer's parameters and triggers: hysteresis,
 * projection, imbalance, cooldowns, the return ban and history. The
 * planner's rules: test_balancer_plan.c; traces and the simulation:
 * test_balancer_trace.c. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "balancer_fixture.h"

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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
