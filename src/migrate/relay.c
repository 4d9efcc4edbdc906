/* relay.c - carry one migration channel between a local QEMU socket and
 * the network connection to the peer ferryd, both directions, with
 * half-close, until both ends are done. */
#define _GNU_SOURCE
#include "migrate.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

/* Describe the last TLS failure of an SSL call that returned r. */
static int tls_fail(SSL *ssl, int r, const char *what, struct ferr *err)
{
	int e = SSL_get_error(ssl, r);
	unsigned long code = ERR_peek_last_error();
	char ebuf[256] = "";

	if (code)
		ERR_error_string_n(code, ebuf, sizeof(ebuf));
	ERR_clear_error();
	if (e == SSL_ERROR_SYSCALL)
		return ferr_set(err, FERR_UNAVAILABLE,
				"%s: connection %s", what,
				errno ? strerror(errno)
				      : "closed without TLS close_notify");
	if (e == SSL_ERROR_SSL)
		return ferr_set(err, FERR_UNAVAILABLE,
				"%s: TLS error (a record failed "
				"authentication or the peer broke the "
				"protocol): %s",
				what, ebuf);
	return ferr_set(err, FERR_UNAVAILABLE, "%s: TLS error %d %s", what, e,
			ebuf);
}

int conn_read_full(struct mig_conn *c, void *buf, size_t len,
		   struct ferr *err)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n;

		if (c->ssl) {
			int r = SSL_read(c->ssl, p, (int)len);

			if (r <= 0)
				return tls_fail(c->ssl, r, "read", err);
			n = r;
		} else {
			n = recv(c->fd, p, len, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0)
				return ferr_set(err, FERR_UNAVAILABLE,
						"read: connection closed");
			if (n < 0)
				return ferr_set(err, FERR_UNAVAILABLE,
						"read: %s", strerror(errno));
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int conn_write_full(struct mig_conn *c, const void *buf, size_t len,
		    struct ferr *err)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n;

		if (c->ssl) {
			int r = SSL_write(c->ssl, p, (int)len);

			if (r <= 0)
				return tls_fail(c->ssl, r, "write", err);
			n = r;
		} else {
			n = send(c->fd, p, len, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return ferr_set(err, FERR_UNAVAILABLE,
						"write: %s", strerror(errno));
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

void conn_close(struct mig_conn *c, bool clean, struct relay_counters *ctr)
{
	if (c->fd >= 0 && ctr) {
		struct tcp_info ti;
		socklen_t len = sizeof(ti);

		memset(&ti, 0, sizeof(ti));
		if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
		    len >= offsetof(struct tcp_info, tcpi_bytes_received) +
				   sizeof(ti.tcpi_bytes_received))
			atomic_fetch_add(&ctr->wire, ti.tcpi_bytes_acked +
							     ti.tcpi_bytes_received);
	}
	if (c->ssl) {
		if (clean)
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		if (!clean) {
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };

			setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg,
				   sizeof(lg));
		}
		close(c->fd);
		c->fd = -1;
	}
}

/* One direction's buffer: bytes [off, off+len) are waiting to be sent. */
struct rbuf {
	uint8_t *data;
	size_t off;
	size_t len;
};

/* The relay's state, so the steps can be small functions. */
struct relay {
	int lfd;
	struct mig_conn *r;
	struct relay_counters *ctr;
	struct rbuf up;   /* local -> remote */
	struct rbuf down; /* remote -> local */
	bool l_eof, r_eof, r_shut, l_shut;
	short r_events;   /* what the TLS layer waits for */
	bool progress;
};

/* local -> up buffer */
static int step_local_read(struct relay *s, struct ferr *err)
{
	ssize_t n;

	if (s->l_eof || s->up.len > 0)
		return 0;
	n = read(s->lfd, s->up.data, MIG_RELAY_BUF);
	if (n > 0) {
		s->up.off = 0;
		s->up.len = (size_t)n;
		s->progress = true;
	} else if (n == 0) {
		s->l_eof = true;
		s->progress = true;
	} else if (errno != EAGAIN && errno != EINTR) {
		return ferr_set(err, FERR_UNAVAILABLE,
				"QEMU's channel socket: %s", strerror(errno));
	}
	return 0;
}

/* up buffer -> remote */
static int step_remote_write(struct relay *s, struct ferr *err)
{
	ssize_t n;

	if (s->up.len == 0)
		return 0;
	if (s->r->ssl) {
		int r = SSL_write(s->r->ssl, s->up.data + s->up.off,
				  (int)s->up.len);

		if (r <= 0) {
			int e = SSL_get_error(s->r->ssl, r);

			if (e == SSL_ERROR_WANT_WRITE) {
				s->r_events |= POLLOUT;
				return 0;
			}
			if (e == SSL_ERROR_WANT_READ) {
				s->r_events |= POLLIN;
				return 0;
			}
			return tls_fail(s->r->ssl, r, "sending to the peer",
					err);
		}
		n = r;
	} else {
		n = send(s->r->fd, s->up.data + s->up.off, s->up.len,
			 MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				s->r_events |= POLLOUT;
				return 0;
			}
			return ferr_set(err, FERR_UNAVAILABLE,
					"sending to the peer: %s",
					strerror(errno));
		}
	}
	s->up.off += (size_t)n;
	s->up.len -= (size_t)n;
	atomic_fetch_add(&s->ctr->to_remote, (uint64_t)n);
	s->progress = true;
	return 0;
}

/* remote -> down buffer */
static int step_remote_read(struct relay *s, struct ferr *err)
{
	ssize_t n;

	if (s->r_eof || s->down.len > 0)
		return 0;
	if (s->r->ssl) {
		int r = SSL_read(s->r->ssl, s->down.data, MIG_RELAY_BUF);

		if (r <= 0) {
			int e = SSL_get_error(s->r->ssl, r);

			if (e == SSL_ERROR_ZERO_RETURN) {
				s->r_eof = true;
				s->progress = true;
				return 0;
			}
			if (e == SSL_ERROR_WANT_READ) {
				s->r_events |= POLLIN;
				return 0;
			}
			if (e == SSL_ERROR_WANT_WRITE) {
				s->r_events |= POLLOUT;
				return 0;
			}
			return tls_fail(s->r->ssl, r, "receiving from the peer",
					err);
		}
		n = r;
	} else {
		n = recv(s->r->fd, s->down.data, MIG_RELAY_BUF, 0);
		if (n == 0) {
			s->r_eof = true;
			s->progress = true;
			return 0;
		}
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				s->r_events |= POLLIN;
				return 0;
			}
			return ferr_set(err, FERR_UNAVAILABLE,
					"receiving from the peer: %s",
					strerror(errno));
		}
	}
	s->down.off = 0;
	s->down.len = (size_t)n;
	atomic_fetch_add(&s->ctr->from_remote, (uint64_t)n);
	s->progress = true;
	return 0;
}

/* down buffer -> local */
static int step_local_write(struct relay *s, struct ferr *err)
{
	ssize_t n;

	if (s->down.len == 0)
		return 0;
	n = send(s->lfd, s->down.data + s->down.off, s->down.len,
		 MSG_NOSIGNAL);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		return ferr_set(err, FERR_UNAVAILABLE,
				"QEMU's channel socket: %s", strerror(errno));
	}
	s->down.off += (size_t)n;
	s->down.len -= (size_t)n;
	s->progress = true;
	return 0;
}

/* Pass an end of stream on as a half-close. */
static void step_half_close(struct relay *s)
{
	if (s->l_eof && s->up.len == 0 && !s->r_shut) {
		if (s->r->ssl) {
			int r = SSL_shutdown(s->r->ssl);

			if (r < 0 && SSL_get_error(s->r->ssl, r) ==
					     SSL_ERROR_WANT_WRITE) {
				s->r_events |= POLLOUT;
				return;
			}
			ERR_clear_error();
		} else {
			shutdown(s->r->fd, SHUT_WR);
		}
		s->r_shut = true;
		s->progress = true;
	}
	if (s->r_eof && s->down.len == 0 && !s->l_shut) {
		shutdown(s->lfd, SHUT_WR);
		s->l_shut = true;
		s->progress = true;
	}
}

/* Block until something can move, or MIG_POLL_MS passes. */
static void wait_io(struct relay *s)
{
	struct pollfd pfd[2] = { { .fd = s->lfd }, { .fd = s->r->fd } };

	if (s->r->ssl && !s->r_eof && s->down.len == 0 &&
	    SSL_pending(s->r->ssl) > 0)
		return; /* decrypted bytes are already buffered */
	if (!s->l_eof && s->up.len == 0)
		pfd[0].events |= POLLIN;
	if (s->down.len > 0)
		pfd[0].events |= POLLOUT;
	pfd[1].events = s->r_events;
	if (!s->r->ssl) {
		if (!s->r_eof && s->down.len == 0)
			pfd[1].events |= POLLIN;
		if (s->up.len > 0)
			pfd[1].events |= POLLOUT;
	}
	poll(pfd, 2, MIG_POLL_MS);
}

int relay_run(int local_fd, struct mig_conn *remote, const atomic_bool *stop,
	      struct relay_counters *ctr, struct ferr *err)
{
	struct relay s = { .lfd = local_fd, .r = remote, .ctr = ctr };
	int rc = -1;

	s.up.data = malloc(MIG_RELAY_BUF);
	s.down.data = malloc(MIG_RELAY_BUF);
	if (!s.up.data || !s.down.data) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	if (fd_set_nonblock(local_fd) < 0 || fd_set_nonblock(remote->fd) < 0) {
		ferr_set(err, FERR_IO, "fcntl: %s", strerror(errno));
		goto out;
	}
	if (remote->ssl)
		SSL_set_mode(remote->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
						  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	for (;;) {
		if (atomic_load(stop)) {
			ferr_set(err, FERR_UNAVAILABLE, "cancelled");
			goto out;
		}
		s.progress = false;
		s.r_events = 0;
		if (step_local_read(&s, err) < 0 ||
		    step_remote_write(&s, err) < 0 ||
		    step_remote_read(&s, err) < 0 ||
		    step_local_write(&s, err) < 0)
			goto out;
		step_half_close(&s);
		if (s.l_eof && s.r_eof && s.r_shut && s.l_shut &&
		    s.up.len == 0 && s.down.len == 0)
			break;
		if (!s.progress)
			wait_io(&s);
	}
	rc = 0;
out:
	free(s.up.data);
	free(s.down.data);
	return rc;
}
