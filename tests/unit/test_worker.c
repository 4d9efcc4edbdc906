/* Unit tests of the worker pool (src/worker): work on another thread,
 * done on the loop, in order of completion; the bound; draining. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/thread.h>

#include "worker.h"

struct job {
	pthread_t loop;
	pthread_t ran_on;
	bool done;
	bool done_on_loop;
	atomic_bool *gate; /* work waits for it when not NULL */
};

static void work(void *arg)
{
	struct job *j = arg;

	j->ran_on = pthread_self();
	while (j->gate && !atomic_load(j->gate))
		usleep(1000);
}

static void done(void *arg)
{
	struct job *j = arg;

	j->done = true;
	j->done_on_loop = pthread_equal(pthread_self(), j->loop);
}

static void test_work_and_done(void **state)
{
	struct event_base *base;
	struct worker_pool *p;
	struct job j = { .loop = pthread_self() };
	struct ferr err;

	(void)state;
	evthread_use_pthreads();
	base = event_base_new();
	assert_int_equal(worker_pool_new(base, &p, &err), 0);
	assert_int_equal(worker_submit(p, work, done, &j, &err), 0);
	assert_false(j.done); /* never before submit returns */
	while (!j.done)
		event_base_loop(base, EVLOOP_ONCE);
	assert_true(j.done_on_loop);
	assert_false(pthread_equal(j.ran_on, j.loop));
	assert_int_equal(worker_pending(p), 0);
	worker_pool_free(p);
	event_base_free(base);
}

/* Over WORKER_JOBS_MAX at once is refused; draining runs every done. */
static void test_bound_and_drain(void **state)
{
	struct event_base *base;
	struct worker_pool *p;
	struct job *jobs = calloc(WORKER_JOBS_MAX, sizeof(*jobs));
	struct job extra = { 0 };
	atomic_bool gate = false;
	struct ferr err;

	(void)state;
	base = event_base_new();
	assert_int_equal(worker_pool_new(base, &p, &err), 0);
	for (int i = 0; i < WORKER_JOBS_MAX; i++) {
		jobs[i] = (struct job){ .loop = pthread_self(), .gate = &gate };
		assert_int_equal(worker_submit(p, work, done, &jobs[i], &err),
				 0);
	}
	assert_int_equal(worker_submit(p, work, done, &extra, &err), -1);
	assert_int_equal(err.code, FERR_RATE);
	/* gated: a short drain cannot finish them */
	assert_int_equal(worker_drain(p, 50), WORKER_JOBS_MAX);
	atomic_store(&gate, true);
	assert_int_equal(worker_drain(p, 10000), 0);
	for (int i = 0; i < WORKER_JOBS_MAX; i++)
		assert_true(jobs[i].done && jobs[i].done_on_loop);
	worker_pool_free(p);
	event_base_free(base);
	free(jobs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_work_and_done),
		cmocka_unit_test(test_bound_and_drain),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
