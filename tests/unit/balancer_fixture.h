/* balancer_fixture.h - helpers shared by the balancer's unit tests
 * (test_balancer.c, test_balancer_plan.c, test_balancer_trace.c): a
 * cluster of CORES-core, MEM-MiB hosts fed one report round at a time; a
 * failed step fails the running cmocka test. */
#ifndef FERRY_TEST_BALANCER_FIXTURE_H
#define FERRY_TEST_BALANCER_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* Hosts h1 and h2, neither draining. */
extern const struct hspec two_hosts[2];

/* One round at now: report the hosts and VMs, observe. */
void round_at(struct bal_cluster *c, uint64_t now, const struct hspec *h,
	      size_t nh, const struct vspec *v, size_t nv);
/* A new cluster with params p (caller frees). */
struct bal_cluster *cluster(const struct bal_params *p);
/* The cluster's plan into *plan (caller frees with bal_plan_free). */
void plan_of(const struct bal_cluster *c, struct bal_plan *plan);
/* Params that isolate one trigger: no imbalance trigger. */
void quiet_params(struct bal_params *p);
/* The plan's move of vm, or NULL. */
const struct bal_move *move_of(const struct bal_plan *p, const char *vm);
/* The plan's blocked entry of vm, or NULL. */
const struct bal_blocked *blocked_of(const struct bal_plan *p, const char *vm);

#endif
