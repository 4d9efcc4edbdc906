/* session.c - the destination's sessions: a table, reference counts and
 * the state machine of migrate_int.h. Every function takes the table's
 * lock itself except those named _locked. */
#include "migrate_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

const char *in_state_name(enum in_state s)
{
	switch (s) {
	case IN_PREPARING:
		return "preparing";
	case IN_PREPARED:
		return "prepared";
	case IN_FINISHING:
		return "finishing";
	case IN_COMMITTED:
		return "committed";
	case IN_ABORTED:
		return "aborted";
	default:
		return "failed";
	}
}

static bool is_live(enum in_state s)
{
	return s == IN_PREPARING || s == IN_PREPARED || s == IN_FINISHING;
}

void session_table_init(struct session_table *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
}

void session_table_destroy(struct session_table *t)
{
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
}

struct in_session *session_new(struct session_table *t, struct ferr *err)
{
	struct in_session *s = calloc(1, sizeof(*s));

	if (!s) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	if (RAND_bytes(s->sid, sizeof(s->sid)) != 1 ||
	    RAND_bytes(s->key, sizeof(s->key)) != 1) {
		free(s);
		ferr_set(err, FERR_INTERNAL, "no randomness");
		return NULL;
	}
	hex_encode(s->sid, sizeof(s->sid), s->id);
	for (unsigned i = 0; i < 2 * MIG_CHANNELS_MAX; i++)
		s->fds[i] = -1;
	s->state = IN_PREPARING;
	s->created_wall_ms = wall_ms();
	s->refs = 2; /* the caller's and the table's */
	pthread_mutex_lock(&t->lock);
	s->in_table = true;
	s->next = t->head;
	t->head = s;
	t->live++;
	pthread_mutex_unlock(&t->lock);
	return s;
}

static void ref_locked(struct in_session *s)
{
	s->refs++;
}

static void put_locked(struct session_table *t, struct in_session *s)
{
	(void)t;
	if (--s->refs > 0)
		return;
	OPENSSL_cleanse(s->key, sizeof(s->key));
	free(s);
}

struct in_session *session_get(struct session_table *t, const char *id)
{
	uint8_t sid[MIG_SESSION_ID_LEN];

	if (!id || strlen(id) != MIG_ID_HEX_LEN ||
	    hex_decode(id, sid, sizeof(sid)) < 0)
		return NULL;
	return session_get_sid(t, sid);
}

struct in_session *session_get_sid(struct session_table *t,
				   const uint8_t sid[MIG_SESSION_ID_LEN])
{
	struct in_session *s;

	pthread_mutex_lock(&t->lock);
	for (s = t->head; s; s = s->next)
		if (!CRYPTO_memcmp(s->sid, sid, MIG_SESSION_ID_LEN))
			break;
	if (s)
		ref_locked(s);
	pthread_mutex_unlock(&t->lock);
	return s;
}

void session_ref(struct session_table *t, struct in_session *s)
{
	pthread_mutex_lock(&t->lock);
	ref_locked(s);
	pthread_mutex_unlock(&t->lock);
}

void session_put(struct session_table *t, struct in_session *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&t->lock);
	put_locked(t, s);
	pthread_mutex_unlock(&t->lock);
}

int session_advance(struct session_table *t, struct in_session *s,
		    enum in_state from, enum in_state to, struct ferr *err)
{
	int rc = 0;

	pthread_mutex_lock(&t->lock);
	if (s->state != from)
		rc = ferr_set(err, FERR_CONFLICT, "migration %s is %s, not %s",
			      s->id, in_state_name(s->state),
			      in_state_name(from));
	else
		s->state = to;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

bool session_end(struct session_table *t, struct in_session *s,
		 enum in_state final)
{
	pthread_mutex_lock(&t->lock);
	if (!is_live(s->state)) {
		pthread_mutex_unlock(&t->lock);
		return false;
	}
	s->state = final;
	if (final != IN_COMMITTED) {
		atomic_store(&s->stop, true);
		for (unsigned i = 0; i < 2 * MIG_CHANNELS_MAX; i++)
			if (s->fds[i] >= 0)
				shutdown(s->fds[i], SHUT_RDWR);
	}
	for (struct in_session **pp = &t->head; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	s->in_table = false;
	t->live--;
	pthread_cond_broadcast(&t->cond);
	put_locked(t, s); /* the table's reference */
	pthread_mutex_unlock(&t->lock);
	return true;
}

unsigned session_count(struct session_table *t)
{
	unsigned n;

	pthread_mutex_lock(&t->lock);
	n = 0;
	for (struct in_session *s = t->head; s; s = s->next)
		n += !s->stream_fn;
	pthread_mutex_unlock(&t->lock);
	return n;
}

struct in_session *session_first(struct session_table *t)
{
	struct in_session *s;

	pthread_mutex_lock(&t->lock);
	s = t->head;
	if (s)
		ref_locked(s);
	pthread_mutex_unlock(&t->lock);
	return s;
}

void session_fd_track_locked(struct in_session *s, int fd, bool add)
{
	for (unsigned i = 0; i < 2 * MIG_CHANNELS_MAX; i++) {
		if (add ? s->fds[i] < 0 : s->fds[i] == fd) {
			s->fds[i] = add ? fd : -1;
			return;
		}
	}
}
