/* Unit tests of the destination's session table (src/migrate/session.c):
 * the state machine from every state, references, ending once. Run under
 * ASan, a reference bug shows as a use-after-free, a double free or a
 * leak. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "migrate_int.h"

static int setup(void **state)
{
	struct session_table *t = calloc(1, sizeof(*t));

	session_table_init(t);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct session_table *t = *state;

	assert_null(t->head);
	assert_int_equal(t->live, 0);
	session_table_destroy(t);
	free(t);
	return 0;
}

/* A new session is PREPARING, in the table, with a fresh 32-hex id. */
static void test_new_and_find(void **state)
{
	struct session_table *t = *state;
	struct ferr err;
	struct in_session *s = session_new(t, &err), *f;

	assert_non_null(s);
	assert_int_equal(s->state, IN_PREPARING);
	assert_int_equal(strlen(s->id), MIG_ID_HEX_LEN);
	assert_int_equal(session_count(t), 1);
	f = session_get(t, s->id);
	assert_ptr_equal(f, s);
	session_put(t, f);
	f = session_get_sid(t, s->sid);
	assert_ptr_equal(f, s);
	session_put(t, f);
	assert_null(session_get(t, "00000000000000000000000000000000"));
	assert_null(session_get(t, "not hex"));
	assert_null(session_get(t, NULL));
	assert_true(session_end(t, s, IN_ABORTED));
	assert_null(session_get(t, s->id)); /* gone from the table */
	session_put(t, s);                   /* the caller's: frees it */
}

/* Ids and keys are fresh for every session. */
static void test_unique(void **state)
{
	struct session_table *t = *state;
	struct ferr err;
	struct in_session *a = session_new(t, &err), *b = session_new(t, &err);

	assert_string_not_equal(a->id, b->id);
	assert_memory_not_equal(a->key, b->key, MIG_KEY_LEN);
	assert_int_equal(session_count(t), 2);
	session_end(t, a, IN_ABORTED);
	session_end(t, b, IN_FAILED);
	session_put(t, a);
	session_put(t, b);
}

/* The live states advance only from the state expected. */
static void test_advance(void **state)
{
	struct session_table *t = *state;
	struct ferr err;
	struct in_session *s = session_new(t, &err);

	assert_int_equal(session_advance(t, s, IN_PREPARED, IN_FINISHING,
					 &err),
			 -1);
	assert_int_equal(err.code, FERR_CONFLICT);
	assert_int_equal(s->state, IN_PREPARING);
	assert_int_equal(session_advance(t, s, IN_PREPARING, IN_PREPARED,
					 &err),
			 0);
	assert_int_equal(session_advance(t, s, IN_PREPARED, IN_FINISHING,
					 &err),
			 0);
	/* a repeated finish finds it finishing */
	assert_int_equal(session_advance(t, s, IN_PREPARED, IN_FINISHING,
					 &err),
			 -1);
	/* a failed load can give it back */
	assert_int_equal(session_advance(t, s, IN_FINISHING, IN_PREPARED,
					 &err),
			 0);
	assert_true(session_end(t, s, IN_ABORTED));
	session_put(t, s);
}

/* Ending happens once, from every live state; its channels stop unless
 * it is committed. */
static void test_end_from_every_state(void **state)
{
	struct session_table *t = *state;
	const enum in_state live[] = { IN_PREPARING, IN_PREPARED,
				       IN_FINISHING };
	const enum in_state final[] = { IN_COMMITTED, IN_ABORTED, IN_FAILED };

	for (size_t i = 0; i < 3; i++) {
		for (size_t j = 0; j < 3; j++) {
			struct ferr err;
			struct in_session *s = session_new(t, &err);
			int sv[2];

			assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv),
					 0);
			s->state = live[i];
			pthread_mutex_lock(&t->lock);
			session_fd_track_locked(s, sv[0], true);
			pthread_mutex_unlock(&t->lock);
			assert_true(session_end(t, s, final[j]));
			assert_int_equal(s->state, final[j]);
			assert_false(session_end(t, s, IN_ABORTED));
			assert_int_equal(s->state, final[j]);
			if (final[j] == IN_COMMITTED) {
				assert_false(atomic_load(&s->stop));
			} else {
				char c;

				/* the channel's socket was shut: reads end */
				assert_true(atomic_load(&s->stop));
				assert_int_equal(read(sv[0], &c, 1), 0);
			}
			pthread_mutex_lock(&t->lock);
			session_fd_track_locked(s, sv[0], false);
			pthread_mutex_unlock(&t->lock);
			close(sv[0]);
			close(sv[1]);
			session_put(t, s);
		}
	}
}

/* A channel thread's reference keeps an ended session alive; the last
 * reference frees it (ASan checks that nothing touches it after). */
static void test_holders(void **state)
{
	struct session_table *t = *state;
	struct ferr err;
	struct in_session *s = session_new(t, &err), *chan, *op;

	s->state = IN_PREPARED;
	chan = session_get_sid(t, s->sid); /* a channel claims it */
	op = session_get(t, s->id);        /* a finish in flight */
	session_ref(t, op);                /* ... with a second step */
	assert_int_equal(s->refs, 5);
	session_put(t, s); /* the creator is done */
	assert_true(session_end(t, op, IN_FAILED)); /* QEMU exited */
	session_put(t, op);
	assert_int_equal(chan->state, IN_FAILED);
	session_put(t, op);   /* the finish's last step */
	assert_int_equal(chan->refs, 1);
	session_put(t, chan); /* the channel ends: freed here */
	assert_int_equal(session_count(t), 0);
	assert_null(session_first(t));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_new_and_find, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unique, setup, teardown),
		cmocka_unit_test_setup_teardown(test_advance, setup, teardown),
		cmocka_unit_test_setup_teardown(test_end_from_every_state,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_holders, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
