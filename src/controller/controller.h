/* controller.h - the live load balancer: ferryd in controller mode.
 *
 * A thread polls every host of the cluster (GET /v1/load, over mutual TLS
 * as the controller's own identity), keeps a sliding window of each VM's
 * CPU samples, feeds the balancer's decision code (balancer.h: the same
 * code the simulator runs) once a round, and, depending on the mode:
 *   off       - observes only;
 *   recommend - plans and publishes the plan with its reasons;
 *   auto      - also starts the planned migrations on their source hosts.
 * Drains (ferry host drain HOST) mark the host draining on that host and
 * evacuate it in every mode; the drain's report says what moved and what
 * could not, and why. Every action goes to the audit log.
 *
 * The API calls below run on the main thread; they take the controller's
 * lock briefly and never wait for the network.
 */
#ifndef FERRY_CONTROLLER_H
#define FERRY_CONTROLLER_H

#include <jansson.h>

#include "common.h"
#include "config.h"

#define CTL_INTERVAL_S_DEFAULT 5
#define CTL_WINDOW_DEFAULT 3      /* samples averaged per VM */
#define CTL_WINDOW_MAX 60
#define CTL_HOSTS_MAX 256
#define CTL_DRAIN_IDLE_ROUNDS 3   /* rounds with nothing movable: done */
#define CTL_PEER_TIMEOUT_S 10

struct controller;
struct audit;

/* Parse cfg->balancer (docs/balancer.md, "Controller mode") and start the
 * controller thread. Errors name the field. */
int controller_new(const struct ferryd_config *cfg, struct audit *audit,
		   struct controller **out, struct ferr *err);

/* Stop the thread and free (NULL is fine). Migrations it started go on. */
void controller_free(struct controller *c);

/* GET /v1/balance: mode, round, hosts and their loads, in-flight moves. */
json_t *controller_status(struct controller *c);

/* GET /v1/balance/plan: the latest plan with its reasons. */
json_t *controller_plan(struct controller *c);

/* POST /v1/balance/mode {"mode": "off"|"recommend"|"auto"}. */
int controller_set_mode(struct controller *c, const json_t *body,
			json_t **reply, struct ferr *err);

/* POST /v1/balance/drain|undrain {"host"}: start or end a drain. */
int controller_drain(struct controller *c, const json_t *body, bool on,
		     json_t **reply, struct ferr *err);

/* GET /v1/balance/drains: every drain's report. */
json_t *controller_drains(struct controller *c);

#endif
