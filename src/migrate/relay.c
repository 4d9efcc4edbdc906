/* relay.c - carry one migration channel between a local QEMU socket and
 * the network connection to the peer ferryd, both directions, with
 * half-close, until both ends are done.
 *
 * The lean path (docs/performance.md, "The relay", has the figures):
 * - reads and writes of up to MIG_RELAY_BUF bytes, on sockets with large
 *   buffers, so a MiB costs a few syscalls and wake-ups;
 * - TLS records, as OpenSSL writes them, go into one send buffer (a
 *   write BIO of ours) and leave in one send() per MIG_RELAY_BUF, not one
 *   per 16 KiB record; received records are read by OpenSSL from the
 *   socket in large reads (read-ahead into a MIG_RELAY_BUF buffer) and
 *   decrypted there: no memory BIOs, one copy per byte fewer at each end
 *   than through them (OpenSSL's own copy out of its record buffer stays);
 * - with kernel TLS (when OpenSSL could turn it on for this socket), the
 *   plaintext goes to the socket as it is and the kernel encrypts it;
 * - frames (MIG_FLAG_FRAMES) are built in place: a raw frame's header is
 *   written in front of the bytes read from QEMU.
 */
#define _GNU_SOURCE
#include "migrate_int.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#define RELAY_SOCKBUF MIG_RELAY_BUF     /* unix socket buffers to QEMU */
#define RELAY_LOOK_EVERY 16             /* busy rounds between polls */
#define TLS_RECORD 16384                /* plaintext per TLS record */
#define TLS_RECORD_OVERHEAD 22          /* header 5, type 1, tag 16 */
/* TLS records waiting to be sent: two reads' worth */
#define RELAY_NET_CAP (2 * (MIG_RELAY_BUF / TLS_RECORD + 1) * \
		       (TLS_RECORD + TLS_RECORD_OVERHEAD))

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

/* One buffer: bytes [off, off+len) of data[cap] wait to be passed on. */
struct rbuf {
	uint8_t *data;
	size_t off;
	size_t len;
	size_t cap;
};

/* The relay's state, so the steps can be small functions. */
struct relay {
	int lfd;
	int rfd;
	SSL *ssl;           /* NULL: plaintext */
	bool ktls_tx;       /* the kernel encrypts what we send */
	struct relay_counters *ctr;
	struct rbuf up;     /* from QEMU, at MIG_FRAME_HDR_LEN (frames) */
	struct rbuf zf;     /* a compressed frame to send */
	struct rbuf net;    /* TLS records to send (our write BIO) */
	struct rbuf down;   /* to QEMU */
	struct frame_enc *enc; /* frames to the peer */
	struct frame_dec *dec; /* frames from the peer */
	bool l_eof;         /* QEMU ended its stream */
	bool r_eof;         /* the peer ended its stream (close_notify/FIN) */
	bool r_shut;        /* our end of stream sent to the peer */
	bool l_shut;        /* end of stream passed to QEMU */
	bool progress;
	/* may read / write without blocking: set by poll, cleared when a
	 * call would block, so no syscall is spent only to hear EAGAIN */
	bool l_rd, l_wr, r_rd, r_wr;
	uint64_t win_start, blocked_us; /* the controller's window */
	struct tcp_info ti; /* at the window's start */
};

/* ---- our write BIO: TLS records into s->net ---- */

static int wbio_write(BIO *b, const char *data, int len)
{
	struct rbuf *net = BIO_get_data(b);
	size_t room;

	BIO_clear_retry_flags(b);
	if (!net || len < 0)
		return -1;
	if (net->off > 0 && net->off + net->len + (size_t)len > net->cap) {
		memmove(net->data, net->data + net->off, net->len);
		net->off = 0;
	}
	room = net->cap - net->off - net->len;
	if (room == 0) {
		BIO_set_retry_write(b);
		return -1;
	}
	if ((size_t)len > room)
		len = (int)room;
	memcpy(net->data + net->off + net->len, data, (size_t)len);
	net->len += (size_t)len;
	return len;
}

static long wbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct rbuf *net = BIO_get_data(b);

	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;
	case BIO_CTRL_WPENDING:
		return net ? (long)net->len : 0;
	default:
		return 0;
	}
}

static BIO_METHOD *g_wbio_method;
static pthread_once_t g_wbio_once = PTHREAD_ONCE_INIT;

static void wbio_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
				     "ferry relay records");

	if (m && BIO_meth_set_write(m, wbio_write) == 1 &&
	    BIO_meth_set_ctrl(m, wbio_ctrl) == 1)
		g_wbio_method = m;
	else
		BIO_meth_free(m);
}

/* ---- sending: QEMU -> peer ---- */

/* The bytes that go to the peer next: a compressed frame, or up. */
static struct rbuf *to_send(struct relay *s)
{
	return s->zf.len ? &s->zf : &s->up;
}

/* Room to take more from QEMU? */
static bool want_local(const struct relay *s)
{
	return !s->l_eof && !s->up.len && !s->zf.len &&
	       s->net.len <= s->net.cap / 2;
}

/* QEMU -> up (framed when frames go to the peer). */
static int step_local_read(struct relay *s, struct ferr *err)
{
	size_t hdr = s->enc ? MIG_FRAME_HDR_LEN : 0;
	ssize_t n;

	if (!s->l_rd || !want_local(s))
		return 0;
	n = read(s->lfd, s->up.data + hdr, MIG_RELAY_BUF);
	if (n > 0) {
		s->progress = true;
		if (s->enc) {
			bool in_zf;
			size_t f = frame_enc(s->enc, s->up.data, (size_t)n,
					     s->zf.data, &in_zf);

			if (in_zf) {
				s->zf.off = 0;
				s->zf.len = f;
				return 0;
			}
			s->up.off = 0;
			s->up.len = f;
			return 0;
		}
		s->up.off = 0;
		s->up.len = (size_t)n;
	} else if (n == 0) {
		s->l_eof = true;
		s->progress = true;
	} else if (errno == EAGAIN) {
		s->l_rd = false;
	} else if (errno != EINTR) {
		return ferr_set(err, FERR_UNAVAILABLE,
				"QEMU's channel socket: %s", strerror(errno));
	}
	return 0;
}

/* Send b's bytes on the network socket as far as it takes them. */
static int send_some(struct relay *s, struct rbuf *b, struct ferr *err)
{
	ssize_t n;

	if (!s->r_wr)
		return 0;
	n = send(s->rfd, b->data + b->off, b->len, MSG_NOSIGNAL);
	if (n < 0) {
		if (errno == EAGAIN)
			s->r_wr = false;
		else if (errno != EINTR)
			return ferr_set(err, FERR_UNAVAILABLE,
					"sending to the peer: %s",
					strerror(errno));
		return 0;
	}
	b->off += (size_t)n;
	b->len -= (size_t)n;
	if (b->len)
		s->r_wr = false; /* the socket's buffer is full */
	s->progress = true;
	return 0;
}

/* Encrypt what fits in net (whole records), then send net. */
static int step_send(struct relay *s, struct ferr *err)
{
	struct rbuf *b = to_send(s);

	if (!s->ssl || s->ktls_tx) {
		size_t before = b->len;

		if (before == 0)
			return 0;
		if (send_some(s, b, err) < 0)
			return -1;
		atomic_fetch_add(&s->ctr->to_remote, before - b->len);
		return 0;
	}
	while (b->len > 0) {
		size_t room = s->net.cap - s->net.len;
		size_t records = room / (TLS_RECORD + TLS_RECORD_OVERHEAD);
		size_t chunk = b->len, done = 0;

		if (records == 0)
			break;
		if (chunk > records * TLS_RECORD)
			chunk = records * TLS_RECORD;
		if (SSL_write_ex(s->ssl, b->data + b->off, chunk, &done) != 1) {
			int e = SSL_get_error(s->ssl, 0);

			/* net is full: send first; or a handshake waits
			 * for the peer */
			if (e == SSL_ERROR_WANT_WRITE ||
			    e == SSL_ERROR_WANT_READ)
				break;
			return tls_fail(s->ssl, 0, "sending to the peer", err);
		}
		b->off += done;
		b->len -= done;
		atomic_fetch_add(&s->ctr->to_remote, (uint64_t)done);
		s->progress = true;
	}
	if (s->net.len > 0)
		return send_some(s, &s->net, err);
	return 0;
}

/* ---- receiving: peer -> QEMU ---- */

/* Up to want bytes from the peer into p: their number, 0 when none are
 * there yet (or the stream ended: s->r_eof), -1 on an error. */
static ssize_t net_read(struct relay *s, uint8_t *p, size_t want,
			struct ferr *err)
{
	ssize_t n;

	/* with TLS, records read ahead are decrypted before the socket is
	 * read again: WANT_READ comes only with a partial record */
	if (!s->r_rd)
		return 0;
	if (s->ssl) {
		size_t got = 0;

		if (SSL_read_ex(s->ssl, p, want, &got) == 1)
			return (ssize_t)got;
		switch (SSL_get_error(s->ssl, 0)) {
		case SSL_ERROR_ZERO_RETURN:
			s->r_eof = true;
			s->progress = true;
			return 0;
		case SSL_ERROR_WANT_READ:
			s->r_rd = false;
			return 0;
		case SSL_ERROR_WANT_WRITE: /* a reply to a post-handshake
					    * message waits for room in net */
			s->r_wr = false;
			return 0;
		default:
			return tls_fail(s->ssl, 0, "receiving from the peer",
					err);
		}
	}
	n = recv(s->rfd, p, want, 0);
	if (n == 0) {
		s->r_eof = true;
		s->progress = true;
	} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		if (errno == EAGAIN)
			s->r_rd = false;
		n = 0;
	} else if (n < 0) {
		return ferr_set(err, FERR_UNAVAILABLE,
				"receiving from the peer: %s", strerror(errno));
	}
	return n;
}

/* network -> down: as a stream, filling down (TLS gives a record per
 * read); or frame by frame, a frame when down is empty. */
static int step_receive(struct relay *s, struct ferr *err)
{
	if (s->down.len == 0)
		s->down.off = 0;
	while (!s->r_eof && s->r_rd) {
		uint8_t *p = s->down.data + s->down.len;
		size_t want = s->down.cap - s->down.len, outlen = 0;
		ssize_t n;

		if (s->dec) {
			if (s->down.len)
				break;
			p = frame_dec_space(s->dec, s->down.data, &want);
		}
		if (want == 0 || s->down.off)
			break;
		n = net_read(s, p, want, err);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		atomic_fetch_add(&s->ctr->from_remote, (uint64_t)n);
		s->progress = true;
		if (!s->dec) {
			s->down.len += (size_t)n;
			if (!s->ssl)
				break; /* one recv takes what is there */
			continue;
		}
		if (frame_dec_advance(s->dec, (size_t)n, s->down.data,
				      &outlen, err) < 0)
			return -1;
		s->down.len = outlen;
	}
	if (s->r_eof && s->dec && !frame_dec_idle(s->dec))
		return ferr_set(err, FERR_UNAVAILABLE,
				"the peer's stream ended inside a frame");
	return 0;
}

/* down -> QEMU */
static int step_local_write(struct relay *s, struct ferr *err)
{
	ssize_t n;

	if (s->down.len == 0 || !s->l_wr)
		return 0;
	n = send(s->lfd, s->down.data + s->down.off, s->down.len,
		 MSG_NOSIGNAL);
	if (n < 0) {
		if (errno == EAGAIN)
			s->l_wr = false;
		else if (errno != EINTR)
			return ferr_set(err, FERR_UNAVAILABLE,
					"QEMU's channel socket: %s",
					strerror(errno));
		return 0;
	}
	s->down.off += (size_t)n;
	s->down.len -= (size_t)n;
	if (s->down.len)
		s->l_wr = false;
	s->progress = true;
	return 0;
}

/* Pass an end of stream on as a half-close. */
static void step_half_close(struct relay *s)
{
	if (s->l_eof && !s->up.len && !s->zf.len && !s->r_shut) {
		if (!s->ssl) {
			shutdown(s->rfd, SHUT_WR);
		} else if (SSL_shutdown(s->ssl) < 0) {
			/* no room for the close_notify yet (net, or the
			 * socket with kernel TLS): try again */
			ERR_clear_error();
			s->r_wr = false;
			return;
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
	       !s->up.len && !s->zf.len && !s->down.len && !s->net.len;
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Poll for what the relay waits on: block up to MIG_POLL_MS when nothing
 * moved, else only look (timeout 0). Time spent blocked on the network
 * taking bytes counts for the controller. */
static void wait_io(struct relay *s, bool block)
{
	struct pollfd pfd[2] = { { .fd = s->lfd }, { .fd = s->rfd } };
	bool out = !s->r_wr && (s->net.len || to_send(s)->len ||
				(s->l_eof && !s->r_shut));
	uint64_t t0 = 0;

	if (!s->l_rd && want_local(s))
		pfd[0].events |= POLLIN;
	if (!s->l_wr && s->down.len)
		pfd[0].events |= POLLOUT;
	if (out)
		pfd[1].events |= POLLOUT;
	if (!s->r_rd && !s->r_eof)
		pfd[1].events |= POLLIN;
	/* a hang-up is reported whatever the events: ignore a socket we do
	 * not wait on, or a closed QEMU would spin the loop */
	for (unsigned i = 0; i < 2; i++)
		if (!pfd[i].events)
			pfd[i].fd = -1;
	if (block && out)
		t0 = mono_us();
	if (poll(pfd, 2, block ? MIG_POLL_MS : 0) > 0) {
		/* an error or hang-up is found by the next read or write */
		short bad = POLLERR | POLLHUP | POLLNVAL;

		s->l_rd |= !!(pfd[0].revents & (POLLIN | bad));
		s->l_wr |= !!(pfd[0].revents & (POLLOUT | bad));
		s->r_rd |= !!(pfd[1].revents & (POLLIN | bad));
		s->r_wr |= !!(pfd[1].revents & (POLLOUT | bad));
	}
	if (t0)
		s->blocked_us += mono_us() - t0;
}

/* The controller's window: every ZCTL_WINDOW_MS, what the network did. */
static void window_tick(struct relay *s)
{
	uint64_t now = mono_us();
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	struct zwin w = { 0 };

	if (now - s->win_start < ZCTL_WINDOW_MS * 1000ULL)
		return;
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(s->rfd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
	    len >= offsetof(struct tcp_info, tcpi_rwnd_limited) +
			   sizeof(ti.tcpi_rwnd_limited)) {
		w.busy_us = ti.tcpi_busy_time - s->ti.tcpi_busy_time;
		w.rwnd_us = ti.tcpi_rwnd_limited - s->ti.tcpi_rwnd_limited;
		s->ti = ti;
	}
	w.wall_us = now - s->win_start;
	w.blocked_us = s->blocked_us;
	frame_enc_window(s->enc, &w);
	s->win_start = now;
	s->blocked_us = 0;
}

/* Size what waits in the kernel: every byte queued between the two QEMUs
 * when the source stops the VM must cross before the destination can
 * run it, so deep queues lengthen the downtime (and make QEMU's estimate
 * of it, from how fast its socket takes bytes, too optimistic). The unix
 * socket to QEMU holds one relay buffer (root may exceed wmem_max); TCP
 * keeps its autotuned window for the bytes in flight but queues at most
 * one relay buffer not yet sent. */
static void set_buffers(int lfd, int rfd)
{
	int sz = RELAY_SOCKBUF, lowat = MIG_RELAY_BUF;

	if (setsockopt(lfd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0)
		setsockopt(lfd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	if (setsockopt(lfd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) < 0)
		setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	setsockopt(rfd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat));
}

void relay_tls_prepare(SSL *ssl)
{
	/* read-ahead fills a buffer of this size in one read (it is
	 * allocated with the first record, so before the handshake) */
	SSL_set_default_read_buffer_len(ssl, MIG_RELAY_BUF);
	/* kernel TLS where the kernel has it (OpenSSL falls back to its
	 * own record layer when the tls ULP is missing) */
	SSL_set_options(ssl, SSL_OP_ENABLE_KTLS);
}

/* Allocate the relay's buffers and codecs, and take over the TLS
 * connection's writes (unless the kernel encrypts them). */
static int relay_setup(struct relay *s, enum relay_z z, struct ferr *err)
{
	s->up.cap = MIG_FRAME_HDR_LEN + MIG_RELAY_BUF;
	s->down.cap = MIG_RELAY_BUF;
	s->up.data = malloc(s->up.cap);
	s->down.data = malloc(s->down.cap);
	if (!s->up.data || !s->down.data)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (z == RELAY_Z_AUTO || z == RELAY_Z_ON) {
		s->zf.cap = MIG_FRAME_HDR_LEN + MIG_FRAME_RAW_MAX;
		s->zf.data = malloc(s->zf.cap);
		s->enc = malloc(sizeof(*s->enc));
		if (!s->zf.data || !s->enc)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
		if (frame_enc_init(s->enc, z, err) < 0) {
			free(s->enc);
			s->enc = NULL;
			return -1;
		}
		s->win_start = mono_us();
	} else if (z == RELAY_Z_DECODE) {
		s->dec = malloc(sizeof(*s->dec));
		if (!s->dec)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
		if (frame_dec_init(s->dec, err) < 0) {
			free(s->dec);
			s->dec = NULL;
			return -1;
		}
	}
	if (!s->ssl)
		return 0;
	/* from now on OpenSSL reads ahead in large reads (not with kernel
	 * TLS, which reads record by record) */
	if (!BIO_get_ktls_recv(SSL_get_rbio(s->ssl)))
		SSL_set_read_ahead(s->ssl, 1);
	s->ktls_tx = BIO_get_ktls_send(SSL_get_wbio(s->ssl));
	if (s->ktls_tx)
		return 0;
	s->net.cap = RELAY_NET_CAP;
	s->net.data = malloc(s->net.cap);
	pthread_once(&g_wbio_once, wbio_method_init);
	if (!s->net.data || !g_wbio_method)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	{
		BIO *w = BIO_new(g_wbio_method);

		if (!w)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
		BIO_set_data(w, &s->net);
		BIO_set_init(w, 1);
		SSL_set0_wbio(s->ssl, w);
	}
	SSL_set_mode(s->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
				     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return 0;
}

static void relay_cleanup(struct relay *s)
{
	if (s->enc && s->enc->raw_total)
		log_info("relay: %llu MiB framed, %llu MiB of them compressed "
			 "to %llu MiB; the share compressed changed %u times",
			 (unsigned long long)(s->enc->raw_total >> 20),
			 (unsigned long long)(s->enc->z_raw >> 20),
			 (unsigned long long)(s->enc->z_out >> 20),
			 s->enc->switches);
	/* our write BIO stays with the SSL until it is freed: it must not
	 * point at the freed buffer */
	if (s->ssl && !s->ktls_tx && s->net.data)
		BIO_set_data(SSL_get_wbio(s->ssl), NULL);
	if (s->enc)
		frame_enc_free(s->enc);
	if (s->dec)
		frame_dec_free(s->dec);
	free(s->enc);
	free(s->dec);
	/* guest memory passed through these */
	if (s->up.data)
		OPENSSL_cleanse(s->up.data, s->up.cap);
	if (s->zf.data)
		OPENSSL_cleanse(s->zf.data, s->zf.cap);
	if (s->down.data)
		OPENSSL_cleanse(s->down.data, s->down.cap);
	free(s->up.data);
	free(s->zf.data);
	free(s->net.data);
	free(s->down.data);
}

int relay_run(int local_fd, struct mig_conn *remote, const atomic_bool *stop,
	      struct relay_counters *ctr, struct ferr *err)
{
	struct relay s = { .lfd = local_fd,
			   .rfd = remote->fd,
			   .ssl = remote->ssl,
			   .ctr = ctr,
			   .l_rd = true, .l_wr = true,
			   .r_rd = true, .r_wr = true };
	unsigned busy = 0;
	int rc = -1;

	if (fd_set_nonblock(local_fd) < 0 || fd_set_nonblock(remote->fd) < 0) {
		ferr_set(err, FERR_IO, "fcntl: %s", strerror(errno));
		goto out;
	}
	set_buffers(local_fd, remote->fd);
	if (relay_setup(&s, remote->z, err) < 0)
		goto out;
	for (;;) {
		if (atomic_load(stop)) {
			ferr_set(err, FERR_UNAVAILABLE, "cancelled");
			goto out;
		}
		s.progress = false;
		if (step_local_read(&s, err) < 0 || step_send(&s, err) < 0 ||
		    step_receive(&s, err) < 0 || step_local_write(&s, err) < 0)
			goto out;
		step_half_close(&s);
		if (s.net.len && s.r_wr)
			s.progress = true; /* records (an alert, a handshake
					    * message) to push out */
		if (relay_done(&s))
			break;
		if (s.enc && s.enc->mode == RELAY_Z_AUTO)
			window_tick(&s);
		/* while bytes move, look at the other fds now and then, so
		 * that one busy direction does not starve the other */
		if (!s.progress || ++busy % RELAY_LOOK_EVERY == 0)
			wait_io(&s, !s.progress);
	}
	rc = 0;
out:
	relay_cleanup(&s);
	return rc;
}
