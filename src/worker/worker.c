/* worker.c - one thread per job, results handed back to the loop. */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

struct job {
	worker_fn work;
	worker_fn done;
	void *arg;
	struct worker_pool *p;
	struct job *next;
};

struct worker_pool {
	struct event *ev;      /* activated by a worker when a job ends */
	pthread_mutex_t lock;
	pthread_cond_t cond;   /* a job ended */
	struct job *finished;  /* jobs whose work is done (lock) */
	unsigned running;      /* threads still in work() (lock) */
	unsigned pending;      /* submitted, done() not yet run (loop) */
};

static void *job_main(void *arg)
{
	struct job *j = arg;
	struct worker_pool *p = j->p;

	j->work(j->arg);
	pthread_mutex_lock(&p->lock);
	j->next = p->finished;
	p->finished = j;
	p->running--;
	pthread_cond_broadcast(&p->cond);
	/* under the lock: worker_pool_free cannot free the event between
	 * the unlock and this call */
	event_active(p->ev, EV_READ, 0);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Run the done() of every finished job, oldest first. Loop thread. */
static void run_finished(struct worker_pool *p)
{
	struct job *list, *rev = NULL;

	pthread_mutex_lock(&p->lock);
	list = p->finished;
	p->finished = NULL;
	pthread_mutex_unlock(&p->lock);
	while (list) {
		struct job *n = list->next;

		list->next = rev;
		rev = list;
		list = n;
	}
	while (rev) {
		struct job *n = rev->next;

		p->pending--;
		if (rev->done)
			rev->done(rev->arg);
		free(rev);
		rev = n;
	}
}

static void on_finished(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	run_finished(arg);
}

int worker_pool_new(struct event_base *base, struct worker_pool **out,
		    struct ferr *err)
{
	struct worker_pool *p = calloc(1, sizeof(*p));

	if (!p)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	p->ev = event_new(base, -1, 0, on_finished, p);
	if (!p->ev) {
		free(p);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	*out = p;
	return 0;
}

int worker_submit(struct worker_pool *p, worker_fn work, worker_fn done,
		  void *arg, struct ferr *err)
{
	pthread_attr_t attr;
	pthread_t t;
	struct job *j;
	int rc;

	if (p->pending >= WORKER_JOBS_MAX)
		return ferr_set(err, FERR_RATE,
				"%d operations are already in progress on "
				"this host; try again shortly",
				WORKER_JOBS_MAX);
	j = calloc(1, sizeof(*j));
	if (!j)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	*j = (struct job){ .work = work, .done = done, .arg = arg, .p = p };
	pthread_mutex_lock(&p->lock);
	p->running++;
	pthread_mutex_unlock(&p->lock);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &attr, job_main, j);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		pthread_mutex_lock(&p->lock);
		p->running--;
		pthread_mutex_unlock(&p->lock);
		free(j);
		return ferr_set(err, FERR_INTERNAL,
				"cannot start a worker thread: %s",
				strerror(rc));
	}
	p->pending++;
	return 0;
}

unsigned worker_pending(const struct worker_pool *p)
{
	return p->pending;
}

unsigned worker_drain(struct worker_pool *p, unsigned timeout_ms)
{
	uint64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		struct timespec ts;
		uint64_t left;

		run_finished(p);
		if (!p->pending || now_ms() >= deadline)
			break;
		left = deadline - now_ms();
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(left / 1000);
		ts.tv_nsec += (long)(left % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&p->lock);
		while (!p->finished &&
		       pthread_cond_timedwait(&p->cond, &p->lock, &ts) !=
			       ETIMEDOUT)
			;
		pthread_mutex_unlock(&p->lock);
	}
	return p->pending;
}

void worker_pool_free(struct worker_pool *p)
{
	unsigned left;

	if (!p)
		return;
	left = worker_drain(p, WORKER_DRAIN_MS);
	if (left) {
		/* a thread still uses p: leak it rather than free it */
		log_error("worker: %u job(s) did not finish within %d ms; "
			  "leaving them",
			  left, WORKER_DRAIN_MS);
		return;
	}
	event_free(p->ev);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
