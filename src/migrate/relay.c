/* relay.c - carry one migration channel between a local QEMU socket and
 * the network connection to the peer ferryd, both directions, with
 * half-close, until both ends are done.
 *
 * Over TLS the relay drives OpenSSL through memory BIOs and does the
 * socket I/O itself: up to MIG_RELAY_BUF bytes per read or send, instead of
 * one or two syscalls per 16 KiB TLS record (measured: this halves the
 * relay's CPU time per byte).
 */
#define _GNU_SOURCE
#include "migrate_int.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#define RELAY_SOCKBUF (4 * 1024 * 1024) /* unix socket buffers to QEMU */

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
				"authentication, or the stream was cut or "
				"altered): %s",
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

/* One buffer: bytes [off, off+len) wait to be passed on. */
struct rbuf {
	uint8_t *data;
	size_t off;
	size_t len;
};

/* The relay's state, so the steps can be small functions. */
struct relay {
	int lfd;
	int rfd;
	SSL *ssl;          /* NULL: plaintext */
	BIO *rmem, *wmem;  /* TLS: ciphertext in / out (owned by ssl) */
	struct relay_counters *ctr;
	struct rbuf up;    /* plaintext from QEMU, to send */
	struct rbuf net;   /* TLS: ciphertext to send */
	struct rbuf down;  /* plaintext from the peer, to QEMU */
	uint8_t *tmp;      /* TLS: ciphertext just received */
	bool l_eof;        /* QEMU ended its stream */
	bool r_eof;        /* the peer ended its stream (close_notify/FIN) */
	bool sock_eof;     /* TLS: TCP end of stream seen */
	bool r_shut;       /* our end of stream sent to the peer */
	bool l_shut;       /* end of stream passed to QEMU */
	bool progress;
	short r_events;
};

/* QEMU -> up */
static int step_local_read(struct relay *s, struct ferr *err)
{
	ssize_t n;

	if (s->l_eof || s->up.len > 0 || s->net.len > 0 ||
	    (s->ssl && BIO_ctrl_pending(s->wmem) >= (size_t)MIG_RELAY_BUF))
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

/* Send buf's bytes on the network socket as far as it takes them. */
static int send_some(struct relay *s, struct rbuf *b, struct ferr *err)
{
	ssize_t n = send(s->rfd, b->data + b->off, b->len, MSG_NOSIGNAL);

	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR) {
			s->r_events |= POLLOUT;
			return 0;
		}
		return ferr_set(err, FERR_UNAVAILABLE,
				"sending to the peer: %s", strerror(errno));
	}
	b->off += (size_t)n;
	b->len -= (size_t)n;
	s->progress = true;
	return 0;
}

/* up -> network: encrypt into the memory BIO, then send ciphertext. */
static int step_send(struct relay *s, struct ferr *err)
{
	if (!s->ssl) {
		size_t before = s->up.len;

		if (before == 0 || send_some(s, &s->up, err) < 0)
			return before == 0 ? 0 : -1;
		atomic_fetch_add(&s->ctr->to_remote, before - s->up.len);
		return 0;
	}
	while (s->up.len > 0) {
		int r = SSL_write(s->ssl, s->up.data + s->up.off,
				  (int)s->up.len);

		if (r <= 0) {
			if (SSL_get_error(s->ssl, r) == SSL_ERROR_WANT_READ)
				break; /* handshake: wait for the peer */
			return tls_fail(s->ssl, r, "sending to the peer", err);
		}
		s->up.off += (size_t)r;
		s->up.len -= (size_t)r;
		atomic_fetch_add(&s->ctr->to_remote, (uint64_t)r);
		s->progress = true;
	}
	if (s->net.len == 0 && BIO_ctrl_pending(s->wmem) > 0) {
		int n = BIO_read(s->wmem, s->net.data, MIG_RELAY_BUF);

		if (n > 0) {
			s->net.off = 0;
			s->net.len = (size_t)n;
		}
	}
	if (s->net.len > 0)
		return send_some(s, &s->net, err);
	return 0;
}

/* network -> down: receive ciphertext, decrypt as much as fits. */
static int step_receive(struct relay *s, struct ferr *err)
{
	ssize_t n;

	if (!s->ssl) {
		if (s->r_eof || s->down.len > 0)
			return 0;
		n = recv(s->rfd, s->down.data, MIG_RELAY_BUF, 0);
		if (n == 0) {
			s->r_eof = true;
			s->progress = true;
		} else if (n > 0) {
			s->down.off = 0;
			s->down.len = (size_t)n;
			atomic_fetch_add(&s->ctr->from_remote, (uint64_t)n);
			s->progress = true;
		} else if (errno == EAGAIN || errno == EINTR) {
			s->r_events |= POLLIN;
		} else {
			return ferr_set(err, FERR_UNAVAILABLE,
					"receiving from the peer: %s",
					strerror(errno));
		}
		return 0;
	}
	/* ciphertext in, while OpenSSL's input is not backed up */
	if (!s->sock_eof &&
	    BIO_ctrl_pending(s->rmem) < (size_t)MIG_RELAY_BUF) {
		n = recv(s->rfd, s->tmp, MIG_RELAY_BUF, 0);
		if (n > 0) {
			if (BIO_write(s->rmem, s->tmp, (int)n) != (int)n)
				return ferr_set(err, FERR_INTERNAL,
						"out of memory");
			s->progress = true;
		} else if (n == 0) {
			/* OpenSSL decides whether this end is clean */
			s->sock_eof = true;
			BIO_set_mem_eof_return(s->rmem, 0);
			s->progress = true;
		} else if (errno == EAGAIN || errno == EINTR) {
			s->r_events |= POLLIN;
		} else {
			return ferr_set(err, FERR_UNAVAILABLE,
					"receiving from the peer: %s",
					strerror(errno));
		}
	}
	if (s->down.len > 0 && s->down.off > 0 &&
	    s->down.off + s->down.len > MIG_RELAY_BUF / 2) {
		memmove(s->down.data, s->down.data + s->down.off, s->down.len);
		s->down.off = 0;
	}
	while (!s->r_eof && s->down.off + s->down.len < MIG_RELAY_BUF) {
		int r = SSL_read(s->ssl, s->down.data + s->down.off +
						 s->down.len,
				 (int)(MIG_RELAY_BUF - s->down.off -
				       s->down.len));

		if (r > 0) {
			s->down.len += (size_t)r;
			atomic_fetch_add(&s->ctr->from_remote, (uint64_t)r);
			s->progress = true;
			continue;
		}
		switch (SSL_get_error(s->ssl, r)) {
		case SSL_ERROR_ZERO_RETURN:
			s->r_eof = true;
			s->progress = true;
			break;
		case SSL_ERROR_WANT_READ:
			break;
		default:
			return tls_fail(s->ssl, r, "receiving from the peer",
					err);
		}
		break;
	}
	return 0;
}

/* down -> QEMU */
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
	if (s->down.len == 0)
		s->down.off = 0;
	s->progress = true;
	return 0;
}

/* Pass an end of stream on as a half-close. */
static void step_half_close(struct relay *s)
{
	if (s->l_eof && s->up.len == 0 && !s->r_shut) {
		if (s->ssl) {
			SSL_shutdown(s->ssl); /* close_notify into wmem */
			ERR_clear_error();
		} else {
			shutdown(s->rfd, SHUT_WR);
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

/* Everything passed on and both ends closed? */
static bool relay_done(const struct relay *s)
{
	return s->l_eof && s->r_eof && s->r_shut && s->l_shut &&
	       s->up.len == 0 && s->down.len == 0 && s->net.len == 0 &&
	       (!s->ssl || BIO_ctrl_pending(s->wmem) == 0);
}

/* Block until something can move, or MIG_POLL_MS passes. */
static void wait_io(struct relay *s)
{
	struct pollfd pfd[2] = { { .fd = s->lfd }, { .fd = s->rfd } };

	if (!s->l_eof && s->up.len == 0 && s->net.len == 0)
		pfd[0].events |= POLLIN;
	if (s->down.len > 0)
		pfd[0].events |= POLLOUT;
	pfd[1].events = s->r_events;
	if (!s->ssl && !s->r_eof && s->down.len == 0)
		pfd[1].events |= POLLIN;
	poll(pfd, 2, MIG_POLL_MS);
}

/* Give a unix socket to QEMU large buffers (root may exceed wmem_max). */
static void grow_buffers(int fd)
{
	int sz = RELAY_SOCKBUF;

	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
}

int relay_run(int local_fd, struct mig_conn *remote, const atomic_bool *stop,
	      struct relay_counters *ctr, struct ferr *err)
{
	struct relay s = { .lfd = local_fd,
			   .rfd = remote->fd,
			   .ssl = remote->ssl,
			   .ctr = ctr };
	int rc = -1;

	s.up.data = malloc(MIG_RELAY_BUF);
	s.down.data = malloc(MIG_RELAY_BUF);
	s.net.data = s.ssl ? malloc(MIG_RELAY_BUF) : NULL;
	s.tmp = s.ssl ? malloc(MIG_RELAY_BUF) : NULL;
	if (!s.up.data || !s.down.data || (s.ssl && (!s.net.data || !s.tmp))) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	if (fd_set_nonblock(local_fd) < 0 || fd_set_nonblock(remote->fd) < 0) {
		ferr_set(err, FERR_IO, "fcntl: %s", strerror(errno));
		goto out;
	}
	grow_buffers(local_fd);
	if (s.ssl) {
		/* from here on we move the ciphertext ourselves */
		s.rmem = BIO_new(BIO_s_mem());
		s.wmem = BIO_new(BIO_s_mem());
		if (!s.rmem || !s.wmem) {
			BIO_free(s.rmem);
			BIO_free(s.wmem);
			ferr_set(err, FERR_INTERNAL, "out of memory");
			goto out;
		}
		SSL_set_bio(s.ssl, s.rmem, s.wmem);
		SSL_set_mode(s.ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
					    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	}
	for (;;) {
		if (atomic_load(stop)) {
			ferr_set(err, FERR_UNAVAILABLE, "cancelled");
			goto out;
		}
		s.progress = false;
		s.r_events = 0;
		if (step_local_read(&s, err) < 0 || step_send(&s, err) < 0 ||
		    step_receive(&s, err) < 0 || step_local_write(&s, err) < 0)
			goto out;
		step_half_close(&s);
		if (s.ssl && s.net.len == 0 && BIO_ctrl_pending(s.wmem) > 0)
			s.progress = true; /* ciphertext to push out */
		if (relay_done(&s))
			break;
		if (!s.progress)
			wait_io(&s);
	}
	rc = 0;
out:
	free(s.up.data);
	free(s.down.data);
	free(s.net.data);
	free(s.tmp);
	return rc;
}
