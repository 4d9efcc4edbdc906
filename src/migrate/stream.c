/* stream.c - stream sessions: the data plane (TLS, HELLO/ACK session
 * binding) for connections that carry another component's bytes, such as
 * checkpoint HA's checkpoints (migrate.h). */
#define _GNU_SOURCE
#include "migrate_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

_Static_assert(MIG_STREAM_KEY_LEN == MIG_KEY_LEN, "stream key length");
_Static_assert(MIG_STREAM_ID_HEX_LEN == MIG_ID_HEX_LEN, "stream id length");

struct mig_stream {
	struct mig_conn c;
	bool dialed; /* ours to free (mig_stream_close) */
};

int migrator_stream_listen(struct migrator *m, const char *source,
			   mig_stream_fn fn, void *ctx,
			   char id[MIG_STREAM_ID_HEX_LEN + 1],
			   uint8_t key[MIG_STREAM_KEY_LEN], char *data_addr,
			   size_t addr_len, uint16_t *port, struct ferr *err)
{
	struct in_session *s;

	if (!fn || strlen(source) > FERRY_NAME_MAX)
		return ferr_set(err, FERR_INVALID, "bad stream session");
	s = session_new(&m->sessions, err);
	if (!s)
		return -1;
	snprintf(s->source, sizeof(s->source), "%s", source);
	s->m = m;
	s->nchan = 1;
	s->stream_fn = fn;
	s->stream_ctx = ctx;
	memcpy(key, s->key, MIG_KEY_LEN);
	snprintf(id, MIG_STREAM_ID_HEX_LEN + 1, "%s", s->id);
	snprintf(data_addr, addr_len, "%s", m->cfg->advertise_addr);
	*port = m->cfg->advertise_port;
	/* live from now on: channels may claim it */
	session_advance(&m->sessions, s, IN_PREPARING, IN_PREPARED, err);
	session_put(&m->sessions, s);
	return 0;
}

void migrator_stream_unlisten(struct migrator *m, const char *id)
{
	struct in_session *s = session_get(&m->sessions, id);

	if (!s)
		return;
	if (s->stream_fn)
		session_end(&m->sessions, s, IN_ABORTED);
	session_put(&m->sessions, s);
}

void stream_serve(struct migrator *m, struct in_session *s,
		  struct mig_conn *c, const uint8_t exporter[MIG_EXPORTER_LEN])
{
	struct mig_stream st = { .c = *c };
	uint8_t ack[MIG_ACK_LEN];
	struct ferr err = { 0 };

	pthread_mutex_lock(&m->sessions.lock);
	session_fd_track_locked(s, c->fd, true);
	pthread_mutex_unlock(&m->sessions.lock);
	mig_ack_build(ack, MIG_ACK_OK, 0, s->key, exporter);
	socket_set_timeouts(c->fd, 0);
	if (atomic_load(&s->stop) ||
	    conn_write_full(c, ack, sizeof(ack), &err) < 0)
		log_warn("stream session %s: %s", s->id,
			 err.msg[0] ? err.msg : "ended");
	else
		s->stream_fn(s->stream_ctx, &st);
	pthread_mutex_lock(&m->sessions.lock);
	session_fd_track_locked(s, c->fd, false);
	pthread_mutex_unlock(&m->sessions.lock);
}

int migrator_stream_dial(struct migrator *m, const char *peer,
			 const char *addr, uint16_t port, const char *id,
			 const uint8_t key[MIG_STREAM_KEY_LEN],
			 struct mig_stream **out, struct ferr *err)
{
	uint8_t sid[MIG_SESSION_ID_LEN];
	struct mig_stream *st;

	if (!id || strlen(id) != MIG_ID_HEX_LEN ||
	    hex_decode(id, sid, sizeof(sid)) < 0)
		return ferr_set(err, FERR_INVALID, "bad stream session id");
	st = calloc(1, sizeof(*st));
	if (!st)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (dataplane_dial(m->client_ctx, m->cfg->migration_netns,
			   m->cfg->listen_addr, peer, addr, port, false,
			   RELAY_Z_OFF, sid, key, 0, 1, &st->c, err) < 0) {
		free(st);
		return -1;
	}
	st->dialed = true;
	*out = st;
	return 0;
}

int mig_stream_read(struct mig_stream *st, void *buf, size_t len,
		    struct ferr *err)
{
	return conn_read_full(&st->c, buf, len, err);
}

int mig_stream_write(struct mig_stream *st, const void *buf, size_t len,
		     struct ferr *err)
{
	return conn_write_full(&st->c, buf, len, err);
}

void mig_stream_set_timeout(struct mig_stream *st, unsigned ms)
{
	socket_set_timeouts(st->c.fd, ms);
}

void mig_stream_close(struct mig_stream *st, bool clean)
{
	if (!st || !st->dialed)
		return;
	conn_close(&st->c, clean, NULL);
	free(st);
}
