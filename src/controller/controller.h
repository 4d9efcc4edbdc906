/* controller.h - the live load balancer: ferryd in controller mode.
 *
 * Several ferryds may run in controller mode; with an etcd section in
 * their config they elect one leader (an etcd lease and a compare-and-swap
 * on <prefix>/controller/leader) and keep the cluster's balancing state in
 * etcd: the mode, the parameters, the drains, the current plan and the
 * migrations in flight (docs/balancer.md, "High availability"). Without
 * etcd a controller is alone and keeps that state itself.
 *
 * The leader polls every host's load (GET /v1/load over mutual TLS, all
 * hosts at once, on kept connections), keeps a window of each VM's CPU
 * samples, feeds the balancer's decision code (balancer.h, the code the
 * simulator runs) once a round and, depending on the mode:
 *   off       - observes only;
 *   recommend - plans and publishes the plan with its reasons;
 *   auto      - also starts the planned migrations on their source hosts,
 *               each carrying the leadership's fencing token.
 * Drains (ferry host drain HOST) evacuate a host in every mode; the leader
 * keeps the host's own draining flag in step with the cluster's drain.
 * Every action goes to the audit log.
 *
 * Any controller, leader or standby, answers the routes below. The reads
 * take a lock briefly and never wait for the network: call them on the
 * loop. The writes (set_mode, set_params, drain) write to etcd and block
 * until it answered (within the etcd client's deadline): call them on a
 * worker thread, never on ferryd's loop.
 */
#ifndef FERRY_CONTROLLER_H
#define FERRY_CONTROLLER_H

#include <stdbool.h>

#include <jansson.h>

#include "common.h"
#include "config.h"

#define CTL_INTERVAL_S_DEFAULT 5
#define CTL_WINDOW_DEFAULT 3      /* samples averaged per VM */
#define CTL_WINDOW_MAX 60
#define CTL_HOSTS_MAX 100000
#define CTL_DRAIN_IDLE_ROUNDS 3   /* rounds with nothing movable: done */
#define CTL_PEER_TIMEOUT_S 10     /* a migrate or drain request */
#define CTL_POLL_TIMEOUT_S_DEFAULT 4 /* a load request; a dead host costs
					the round this much */

struct controller;
struct audit;

/* Parse cfg->balancer (docs/balancer.md, "Controller mode"), connect to
 * etcd when cfg has it, and start the controller's threads. Errors name
 * the field. */
int controller_new(const struct ferryd_config *cfg, struct audit *audit,
		   struct controller **out, struct ferr *err);

/* Stop the threads (a leader gives up its lease, so that a standby takes
 * over at once) and free (NULL is fine). Migrations it started go on. */
void controller_free(struct controller *c);

/* GET /v1/balance: this controller's role and the leader, mode,
 * parameters, round figures, moves in flight and (with hosts) every host
 * and its load (the leader's). */
json_t *controller_status(struct controller *c, bool hosts);

/* GET /v1/balance/plan: the latest plan with its reasons. */
json_t *controller_plan(struct controller *c);

/* GET /v1/balance/drains: every drain's record. */
json_t *controller_drains(struct controller *c);

/* POST /v1/balance/mode {"mode": "off"|"recommend"|"auto"}, asked by
 * identity. Blocks (worker thread). */
int controller_set_mode(struct controller *c, const json_t *body,
			const char *identity, json_t **reply,
			struct ferr *err);

/* POST /v1/balance/params {"params": {KEY: VALUE, ...}}: change some of
 * the cluster's parameters (balancer.md, "Parameters"). Blocks. */
int controller_set_params(struct controller *c, const json_t *body,
			  const char *identity, json_t **reply,
			  struct ferr *err);

/* POST /v1/balance/drain|undrain {"host"}: start or end a drain. Blocks. */
int controller_drain(struct controller *c, const json_t *body, bool on,
		     const char *identity, json_t **reply, struct ferr *err);

#endif
