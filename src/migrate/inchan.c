/* inchan.c - the destination's data plane: the listener thread on the
 * migration port and one thread per channel, which authenticates the
 * connection (TLS, HELLO bound to a live session), connects it to the
 * session's QEMU in the source's channel order, and relays. */
#define _GNU_SOURCE
#include "migrate_int.h"
#include "audit.h"
#include "guard.h"
#include "netdev.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

struct chan_in {
	struct migrator *m;
	int fd;
	char from[64];
	bool counted; /* an unauthenticated connection in the guard */
};

/* Add (fd >= 0) or remove a channel thread's socket in m->chan_fds. A
 * remove must come before the socket is closed. */
static void chan_fd_track(struct migrator *m, int fd, bool add)
{
	pthread_mutex_lock(&m->sessions.lock);
	for (unsigned i = 0; i < MIG_DATA_CONNS_MAX; i++) {
		if (add ? m->chan_fds[i] == 0 : m->chan_fds[i] == fd + 1) {
			m->chan_fds[i] = add ? fd + 1 : 0;
			break;
		}
	}
	pthread_mutex_unlock(&m->sessions.lock);
}

/* The channel authenticated (or ended): stop counting it as pending. */
static void chan_authenticated(struct chan_in *a)
{
	if (a->counted) {
		guard_conn_done(a->m->deps.guard, a->from);
		a->counted = false;
	}
}

/* Wait for the lower channels, then connect this one to QEMU, so QEMU sees
 * its connections in the source's order (main channel first). The table's
 * lock held. Returns the QEMU socket or -1. */
static int connect_in_order_locked(struct migrator *m, struct in_session *s,
				   unsigned channel, struct ferr *err)
{
	struct timespec ts;
	int qfd;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += MIG_ORDER_TIMEOUT_MS / 1000;
	while (s->next_index != channel && s->state == IN_PREPARED &&
	       !atomic_load(&s->stop)) {
		if (pthread_cond_timedwait(&m->sessions.cond,
					   &m->sessions.lock,
					   &ts) == ETIMEDOUT)
			break;
	}
	if (s->next_index != channel || s->state != IN_PREPARED)
		return ferr_set(err, FERR_UNAVAILABLE,
				"channel %u: the channels before it never "
				"came",
				channel);
	qfd = unix_connect(s->in_sock, err);
	if (qfd < 0)
		return -1;
	s->next_index++;
	pthread_cond_broadcast(&m->sessions.cond);
	return qfd;
}

/* Validate a HELLO against its session and claim the channel. Returns
 * the session with a reference taken, or NULL. */
static struct in_session *claim(struct migrator *m, const uint8_t *hello,
				const struct mig_hello *h, SSL *ssl,
				const char *peer, uint8_t exporter[],
				struct ferr *err)
{
	struct in_session *s = session_get_sid(&m->sessions, h->session);

	if (!s || s->state != IN_PREPARED) {
		ferr_set(err, FERR_FORBIDDEN, "unknown or finished session");
		goto fail;
	}
	if (!!(h->flags & MIG_FLAG_PLAINTEXT) != s->insecure) {
		ferr_set(err, FERR_FORBIDDEN,
			 s->insecure ? "a TLS channel for a plaintext session"
				     : "a plaintext channel for a TLS session");
		goto fail;
	}
	if (!!(h->flags & MIG_FLAG_FRAMES) != s->frames) {
		ferr_set(err, FERR_FORBIDDEN,
			 s->frames ? "a channel without frames for a session "
				     "prepared with compression"
				   : "a channel with frames for a session "
				     "prepared without compression");
		goto fail;
	}
	if (!s->insecure && strcmp(peer, s->source) != 0) {
		ferr_set(err, FERR_FORBIDDEN,
			 "a channel from %s for a session of %s", peer,
			 s->source);
		goto fail;
	}
	if (mig_exporter(ssl, s->key, h->session, h->channel, exporter,
			 err) < 0)
		goto fail;
	if (!mig_hello_mac_ok(hello, s->key, exporter)) {
		ferr_set(err, FERR_FORBIDDEN,
			 "the HELLO's MAC is wrong (no session key, or a "
			 "replay on another connection)");
		goto fail;
	}
	if (s->stream_fn) {
		/* one channel, reconnected at will */
		if (h->channel == 0 && h->nchan == 1)
			return s;
		ferr_set(err, FERR_FORBIDDEN,
			 "a stream session has one channel");
		goto fail;
	}
	pthread_mutex_lock(&m->sessions.lock);
	if (h->nchan != s->nchan ||
	    ((h->flags & MIG_FLAG_CONTEXT) ? s->ctx_claimed
					   : (s->seen & (1u << h->channel)))) {
		pthread_mutex_unlock(&m->sessions.lock);
		ferr_set(err, FERR_FORBIDDEN,
			 "%s %u of %u is unexpected or a duplicate",
			 (h->flags & MIG_FLAG_CONTEXT) ? "context channel"
						       : "channel",
			 (unsigned)h->channel, (unsigned)h->nchan);
		goto fail;
	}
	if (h->flags & MIG_FLAG_CONTEXT)
		s->ctx_claimed = true;
	else
		s->seen |= 1u << h->channel;
	pthread_mutex_unlock(&m->sessions.lock);
	return s;
fail:
	session_put(&m->sessions, s);
	return NULL;
}

static void *chan_in_main(void *arg)
{
	struct chan_in *a = arg;
	struct migrator *m = a->m;
	struct mig_conn c = { .fd = -1 };
	struct in_session *s = NULL;
	struct mig_hello h;
	struct ferr err = { 0 };
	uint8_t hello[MIG_HELLO_LEN], ack[MIG_ACK_LEN];
	uint8_t exporter[MIG_EXPORTER_LEN] = { 0 };
	char peer[FERRY_NAME_MAX + 1] = "";
	bool ok = false;
	int qfd = -1;

	if (dataplane_accept(m->server_ctx, a->fd,
			     1000u * m->cfg->limits.deadline_s, &c, hello,
			     peer, sizeof(peer), &err) < 0) {
		chan_fd_track(m, a->fd, false);
		close(a->fd);
		log_warn("migration channel from %s refused: %s", a->from,
			 err.msg);
		audit_refused(m->deps.refusals,
			      err.code == FERR_TIMEOUT
				      ? "conn.timeout"
				      : "migration.channel_refused",
			      a->from, err.msg);
		goto out;
	}
	if (mig_hello_parse(hello, &h, &err) < 0)
		goto refuse;
	s = claim(m, hello, &h, c.ssl, peer, exporter, &err);
	if (!s)
		goto refuse;
	chan_authenticated(a);
	if (s->stream_fn) {
		stream_serve(m, s, &c, exporter);
		goto out;
	}
	if (h.flags & MIG_FLAG_CONTEXT) {
		/* the VM's tracked flows, not a QEMU channel (secctx.c) */
		ok = mig_ctx_receive(m, s, &c, exporter, &err) == 0;
		if (!ok)
			log_warn("incoming migration %s: context channel: %s",
				 s->id, err.msg);
		goto out;
	}
	pthread_mutex_lock(&m->sessions.lock);
	qfd = connect_in_order_locked(m, s, h.channel, &err);
	if (qfd >= 0) {
		session_fd_track_locked(s, qfd, true);
		session_fd_track_locked(s, c.fd, true);
	}
	pthread_mutex_unlock(&m->sessions.lock);
	if (qfd < 0)
		goto refuse;
	mig_ack_build(ack, MIG_ACK_OK, h.channel, s->key, exporter);
	socket_set_timeouts(c.fd, 0);
	c.z = s->frames ? RELAY_Z_DECODE : RELAY_Z_OFF;
	if (conn_write_full(&c, ack, sizeof(ack), &err) == 0 &&
	    relay_run(qfd, &c, &s->stop, &s->ctr, &err) == 0)
		ok = true;
	else if (!atomic_load(&s->stop))
		log_warn("incoming migration %s: channel %u: %s", s->id,
			 (unsigned)h.channel, err.msg);
	pthread_mutex_lock(&m->sessions.lock);
	session_fd_track_locked(s, qfd, false);
	session_fd_track_locked(s, c.fd, false);
	pthread_mutex_unlock(&m->sessions.lock);
	goto out;
refuse:
	log_warn("migration channel from %s (%s) refused: %s", a->from,
		 peer[0] ? peer : "no identity", err.msg);
	audit_refused(m->deps.refusals, "migration.channel_refused",
		      peer[0] ? peer : a->from, err.msg);
	mig_ack_build(ack, MIG_ACK_REFUSED, 0, NULL, NULL);
	conn_write_full(&c, ack, sizeof(ack), &err);
out:
	if (qfd >= 0)
		close(qfd);
	if (c.fd >= 0)
		chan_fd_track(m, c.fd, false);
	conn_close(&c, ok, s ? &s->ctr : NULL);
	session_put(&m->sessions, s);
	OPENSSL_cleanse(exporter, sizeof(exporter));
	chan_authenticated(a);
	free(a);
	atomic_fetch_sub(&m->chan_threads, 1);
	return NULL;
}

/* Accept data-plane connections, one detached thread each. */
static void *listener_main(void *arg)
{
	struct migrator *m = arg;

	while (!atomic_load(&m->stop)) {
		struct pollfd pfd = { .fd = m->listen_fd, .events = POLLIN };
		struct sockaddr_storage ss = { 0 };
		socklen_t sl = sizeof(ss);
		char why[FERRY_ERR_MSG_MAX];
		struct chan_in *a;
		pthread_attr_t attr;
		pthread_t t;
		int fd;

		if (poll(&pfd, 1, MIG_POLL_MS) <= 0)
			continue;
		fd = accept4(m->listen_fd, (struct sockaddr *)&ss, &sl,
			     SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		a = calloc(1, sizeof(*a));
		if (!a) {
			close(fd);
			continue;
		}
		a->m = m;
		a->fd = fd;
		atomic_fetch_add(&m->conns_accepted, 1);
		if (ss.ss_family == AF_INET)
			inet_ntop(AF_INET,
				  &((struct sockaddr_in *)&ss)->sin_addr,
				  a->from, sizeof(a->from));
		else
			inet_ntop(AF_INET6,
				  &((struct sockaddr_in6 *)&ss)->sin6_addr,
				  a->from, sizeof(a->from));
		if (atomic_load(&m->chan_threads) >= MIG_DATA_CONNS_MAX) {
			snprintf(why, sizeof(why),
				 "%d data-plane connections already",
				 MIG_DATA_CONNS_MAX);
		} else if (guard_conn_open(m->deps.guard, a->from, why,
					   sizeof(why))) {
			a->counted = true;
		}
		if (!a->counted) {
			audit_refused(m->deps.refusals, "conn.limited",
				      a->from, why);
			close(fd);
			free(a);
			continue;
		}
		atomic_fetch_add(&m->chan_threads, 1);
		chan_fd_track(m, fd, true);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, chan_in_main, a) != 0) {
			atomic_fetch_sub(&m->chan_threads, 1);
			chan_authenticated(a);
			chan_fd_track(m, fd, false);
			close(fd);
			free(a);
		}
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

int inchan_listen(struct migrator *m, struct ferr *err)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int one = 1;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, config_dataplane_addr(m->cfg),
		      &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port =
			htons(m->cfg->migration_port);
		sl = sizeof(struct sockaddr_in);
	} else {
		inet_pton(AF_INET6, config_dataplane_addr(m->cfg),
			  &((struct sockaddr_in6 *)&ss)->sin6_addr);
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port =
			htons(m->cfg->migration_port);
		sl = sizeof(struct sockaddr_in6);
	}
	/* in the data plane's network namespace, if it has one */
	m->listen_fd = netns_socket(m->cfg->migration_netns, ss.ss_family,
				    SOCK_STREAM | SOCK_CLOEXEC, 0, err);
	if (m->listen_fd < 0)
		return -1;
	setsockopt(m->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(m->listen_fd, (struct sockaddr *)&ss, sl) < 0 ||
	    listen(m->listen_fd, 64) < 0)
		return ferr_set(err, FERR_IO,
				"cannot listen on migration port %s:%u: %s",
				config_dataplane_addr(m->cfg),
				(unsigned)m->cfg->migration_port,
				strerror(errno));
	if (pthread_create(&m->listener, NULL, listener_main, m) != 0)
		return ferr_set(err, FERR_INTERNAL,
				"cannot start the migration listener");
	m->listener_started = true;
	log_info("migration: data plane on %s:%u (advertised as %s:%u)",
		 config_dataplane_addr(m->cfg), (unsigned)m->cfg->migration_port,
		 m->cfg->advertise_addr, (unsigned)m->cfg->advertise_port);
	return 0;
}

void inchan_stop(struct migrator *m)
{
	uint64_t deadline = now_ms() + MIG_STOP_WAIT_MS;

	atomic_store(&m->stop, true);
	if (m->listener_started) {
		pthread_join(m->listener, NULL);
		m->listener_started = false;
	}
	if (m->listen_fd >= 0) {
		close(m->listen_fd);
		m->listen_fd = -1;
	}
	/* channel threads hold pointers to m: wake those still in their
	 * handshake or relay (shut their sockets) and let them finish */
	pthread_mutex_lock(&m->sessions.lock);
	for (unsigned i = 0; i < MIG_DATA_CONNS_MAX; i++)
		if (m->chan_fds[i])
			shutdown(m->chan_fds[i] - 1, SHUT_RDWR);
	pthread_mutex_unlock(&m->sessions.lock);
	while (atomic_load(&m->chan_threads) > 0 && now_ms() < deadline)
		usleep(10 * 1000);
	if (atomic_load(&m->chan_threads) > 0)
		log_error("migration: %d channel threads did not end",
			  atomic_load(&m->chan_threads));
}
