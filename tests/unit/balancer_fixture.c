/* balancer_fixture.c - helpers shared by the balancer's unit tests
 * (test_balancer.c, test_balancer_plan.c, test_balancer_trace.c);
 * contracts in balancer_fixture.h. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "balancer_fixture.h"

const struct hspec two_hosts[2] = { { "h1", false }, { "h2", false } };

/* One round: report the hosts and VMs, observe. */
void round_at(struct bal_cluster *c, uint64_t now,
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

struct bal_cluster *cluster(const struct bal_params *p)
{
	struct bal_cluster *c = NULL;
	struct ferr err = { 0 };

	if (bal_cluster_new(p, &c, &err) < 0)
		fail_msg("cluster: %s", err.msg);
	return c;
}

void plan_of(const struct bal_cluster *c, struct bal_plan *plan)
{
	struct ferr err = { 0 };

	if (bal_plan(c, plan, &err) < 0)
		fail_msg("plan: %s", err.msg);
}

/* Params that isolate one trigger: no imbalance trigger. */
void quiet_params(struct bal_params *p)
{
	bal_params_default(p);
	p->imbalance = BAL_LOAD_THRESHOLD_MAX;
}

const struct bal_move *move_of(const struct bal_plan *p,
				      const char *vm)
{
	for (size_t i = 0; i < p->nmoves; i++)
		if (!strcmp(p->moves[i].vm_name, vm))
			return &p->moves[i];
	return NULL;
}

const struct bal_blocked *blocked_of(const struct bal_plan *p,
					    const char *vm)
{
	for (size_t i = 0; i < p->nblocked; i++)
		if (!strcmp(p->blocked[i].vm_name, vm))
			return &p->blocked[i];
	return NULL;
}
