/* Unit tests of the balancer's planner: what to move (improvement,
 * prediction, policy), groups and pins, caps, drains and reports. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "balancer_fixture.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_min_improvement),
		cmocka_unit_test(test_prediction),
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_affinity),
		cmocka_unit_test(test_anti_affinity_and_pins),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_drain),
		cmocka_unit_test(test_reports),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
