/* worker.h - blocking work off the event loop.
 *
 * ferryd's event loop must never block: waiting for QEMU or a peer,
 * hashing files and scanning the audit log run as jobs on worker threads.
 * A job is two functions: work(arg) runs on a thread of its own, then
 * done(arg) runs on the loop's thread. A job owns nothing of the loop's
 * state while it works: it touches only what its submitter handed it, and
 * applies its results in done().
 *
 * Threads: worker_submit and worker_pool_free are called on the loop's
 * thread; work() on a worker thread; done() on the loop's thread.
 */
#ifndef FERRY_WORKER_H
#define FERRY_WORKER_H

#include <event2/event.h>

#include "common.h"

/* Jobs at once (threads); one more is refused with FERR_RATE. */
#define WORKER_JOBS_MAX 64

struct worker_pool;

typedef void (*worker_fn)(void *arg);

/* Create a pool whose done() callbacks run on base. */
int worker_pool_new(struct event_base *base, struct worker_pool **out,
		    struct ferr *err);

/* Run work(arg) on a new thread, then done(arg) on the loop (done may be
 * NULL). Neither runs before worker_submit returns 0. -1 with FERR_RATE
 * when WORKER_JOBS_MAX jobs run already, FERR_INTERNAL when no thread can
 * be started; nothing runs then. */
int worker_submit(struct worker_pool *p, worker_fn work, worker_fn done,
		  void *arg, struct ferr *err);

/* Jobs submitted and not yet done (their done() not yet run). */
unsigned worker_pending(const struct worker_pool *p);

/* Wait up to timeout_ms for running jobs to finish, running each done()
 * here, on the caller's (the loop's) thread. Returns the jobs still
 * running (0 when all finished). */
unsigned worker_drain(struct worker_pool *p, unsigned timeout_ms);

/* Drain (see worker_drain, with WORKER_DRAIN_MS) and free the pool. Jobs
 * still running after that are leaked rather than freed under them, and
 * logged. NULL is fine. */
#define WORKER_DRAIN_MS 35000
void worker_pool_free(struct worker_pool *p);

#endif
