/* load.h - what this host reports to the load balancer: CPU and memory of
 * the host and of each VM (each VM's QEMU process, sampled every second),
 * and whether the host is draining (persisted, so nothing is placed here
 * until it is undrained).
 */
#ifndef FERRY_LOAD_H
#define FERRY_LOAD_H

#include <stdbool.h>

#include <event2/event.h>
#include <jansson.h>

#include "common.h"
#include "config.h"
#include "vm.h"

#define LOAD_SAMPLE_MS 1000   /* sampling period */
#define LOAD_EWMA_ALPHA 0.5   /* weight of the newest sample */
#define LOAD_TRACKED_MAX 1024 /* VM processes tracked */
#define LOAD_DIRTY_PERIOD_MS 10000 /* a dirty-rate measurement per VM */
#define LOAD_DIRTY_CALC_S 1        /* each one lasts this long */
#define LOAD_DIRTY_SAMPLES 4096    /* pages sampled per GiB of guest RAM */
#define LOAD_DIRTY_MIBPS_MAX 1048576 /* larger answers from QEMU: ignored */

struct load;

/* Start sampling every LOAD_SAMPLE_MS on base; read the draining flag
 * (<state_dir>/draining). Every LOAD_DIRTY_PERIOD_MS each running VM that
 * is not migrating also gets a dirty-rate measurement (QMP calc-dirty-rate,
 * page sampling: it hashes sampled pages and touches no dirty bitmap). */
int load_new(const struct ferryd_config *cfg, struct event_base *base,
	     struct vmm *vmm, struct load **out, struct ferr *err);

/* Stop sampling and free. */
void load_free(struct load *l);

/* GET /v1/load: {"host", "ts", "cpus", "cpu_util" (whole machine, 0..1),
 * "vm_cpu_cores" (sum over this host's VMs), "memory_total_mib",
 * "memory_committed_mib", "memory_free_mib", "draining", "vms": [{"name",
 * "uuid", "state", "cpu_cores" (null until a new process was measured
 * over a full interval), "memory_mib", "dirty_mibps" (the last
 * measurement; null until there is one), "labels", "migrating"}]}. cpus and memory_total_mib are
 * the configured capacity when set. */
json_t *load_report(struct load *l);

/* Is the host draining? */
bool load_draining(const struct load *l);

/* Set or clear the draining flag, durably. */
int load_set_draining(struct load *l, bool on, struct ferr *err);

#endif
