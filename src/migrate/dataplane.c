/* dataplane.c - TCP, TLS and unix-socket set-up of migration channels. */
#define _GNU_SOURCE
#include "migrate_int.h"
#include "netdev.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>

void socket_set_timeouts(int fd, unsigned ms)
{
	struct timeval tv = { .tv_sec = ms / 1000,
			      .tv_usec = (ms % 1000) * 1000 };
	int one = 1;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- the handshake deadline ----
 *
 * SO_RCVTIMEO bounds each recv, not a TLS handshake made of many: a peer
 * that trickles a byte now and then would hold the thread for ever. The
 * handshake and the HELLO/ACK therefore run on a non-blocking socket, each
 * wait bounded by what is left until one absolute deadline. */

/* Wait for fd to be ready for events until deadline (monotonic ms). */
static int wait_until(int fd, short events, uint64_t deadline,
		      const char *what, struct ferr *err)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	uint64_t now = now_ms();
	int n;

	if (now >= deadline)
		return ferr_set(err, FERR_TIMEOUT,
				"%s not done by the handshake deadline", what);
	n = poll(&pfd, 1, (int)(deadline - now));
	if (n < 0 && errno != EINTR)
		return ferr_set(err, FERR_IO, "poll: %s", strerror(errno));
	return 0; /* ready, or time to check the clock again */
}

/* After an OpenSSL call on c returned ret: wait for what it wants (0), or
 * -1 when it failed for good (err not set: the caller says why). */
static int ssl_wait(struct mig_conn *c, int ret, uint64_t deadline,
		    const char *what, struct ferr *err, bool *timeout)
{
	int e = SSL_get_error(c->ssl, ret);

	if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
		return -1;
	if (wait_until(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT,
		       deadline, what, err) < 0) {
		*timeout = true;
		return -1;
	}
	return 0;
}

/* Read or write exactly len bytes on c (non-blocking) by the deadline. */
static int io_full(struct mig_conn *c, bool rd, void *buf, size_t len,
		   uint64_t deadline, const char *what, struct ferr *err)
{
	size_t done = 0;
	bool timeout = false;

	while (done < len) {
		uint8_t *p = (uint8_t *)buf + done;
		ssize_t n;

		ERR_clear_error();
		if (c->ssl) {
			int r = rd ? SSL_read(c->ssl, p, (int)(len - done))
				   : SSL_write(c->ssl, p, (int)(len - done));

			if (r > 0) {
				done += (size_t)r;
				continue;
			}
			if (ssl_wait(c, r, deadline, what, err, &timeout) == 0)
				continue;
			if (!timeout)
				ferr_set(err, FERR_UNAVAILABLE,
					 "%s: the connection failed", what);
			return -1;
		}
		n = rd ? recv(c->fd, p, len - done, 0)
		       : send(c->fd, p, len - done, MSG_NOSIGNAL);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK &&
			       errno != EINTR))
			return ferr_set(err, FERR_UNAVAILABLE,
					"%s: the connection %s", what,
					n == 0 ? "closed" : "failed");
		if (wait_until(c->fd, rd ? POLLIN : POLLOUT, deadline, what,
			       err) < 0)
			return -1;
	}
	return 0;
}

/* Run the TLS handshake of c (accept or connect) by the deadline. */
static int handshake(struct mig_conn *c, bool server, uint64_t deadline,
		     struct ferr *err)
{
	bool timeout = false;
	char ebuf[256];

	for (;;) {
		int r;

		ERR_clear_error();
		r = server ? SSL_accept(c->ssl) : SSL_connect(c->ssl);
		if (r == 1)
			return 0;
		if (ssl_wait(c, r, deadline, "the TLS handshake", err,
			     &timeout) < 0)
			break;
	}
	if (!timeout)
		ferr_set(err, server ? FERR_UNAUTH : FERR_UNAVAILABLE,
			 "TLS handshake failed: %s",
			 tls_handshake_error(c->ssl, ebuf, sizeof(ebuf)));
	return -1;
}

/* Make fd blocking again (for the relay). */
static void set_blocking(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
}

/* Fill a sockaddr_un for path. */
static int unix_addr(const char *path, struct sockaddr_un *sa,
		     struct ferr *err)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return ferr_set(err, FERR_INVALID, "socket path too long: %s",
				path);
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

int unix_connect(const char *path, struct ferr *err)
{
	struct sockaddr_un sa;
	int fd;

	if (unix_addr(path, &sa, err) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ferr_set(err, FERR_IO, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ferr_set(err, FERR_UNAVAILABLE, "cannot connect to %s: %s",
			 path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int unix_listen(const char *path, struct ferr *err)
{
	struct sockaddr_un sa;
	int fd;

	if (unix_addr(path, &sa, err) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ferr_set(err, FERR_IO, "socket: %s", strerror(errno));
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, MIG_SOCK_MODE) < 0 ||
	    listen(fd, MIG_CHANNELS_MAX) < 0) {
		ferr_set(err, FERR_IO, "cannot listen on %s: %s", path,
			 strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

/* Bind fd to the numeric address local (port 0), so peers see this host's
 * own address. */
static int bind_local(int fd, int family, const char *local,
		      struct ferr *err)
{
	struct sockaddr_storage ls;
	socklen_t ll;

	memset(&ls, 0, sizeof(ls));
	if (family == AF_INET &&
	    inet_pton(AF_INET, local, &((struct sockaddr_in *)&ls)->sin_addr) ==
		    1) {
		ls.ss_family = AF_INET;
		ll = sizeof(struct sockaddr_in);
	} else if (family == AF_INET6 &&
		   inet_pton(AF_INET6, local,
			     &((struct sockaddr_in6 *)&ls)->sin6_addr) == 1) {
		ls.ss_family = AF_INET6;
		ll = sizeof(struct sockaddr_in6);
	} else {
		return 0; /* another family: let the kernel choose */
	}
	if (bind(fd, (struct sockaddr *)&ls, ll) < 0)
		return ferr_set(err, FERR_IO, "cannot bind to %s: %s", local,
				strerror(errno));
	return 0;
}

/* TCP connect from local (may be NULL) to addr:port within
 * MIG_HANDSHAKE_TIMEOUT_MS. */
static int tcp_connect(const char *netns, const char *local,
		       const char *addr, uint16_t port, struct ferr *err)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	struct pollfd pfd;
	int fd, soerr = 0;
	socklen_t el = sizeof(soerr);

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, addr,
		      &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons(port);
		sl = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, addr,
			     &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
		sl = sizeof(struct sockaddr_in6);
	} else {
		return ferr_set(err, FERR_INVALID, "bad address %s", addr);
	}
	/* in the data plane's network namespace, if it has one */
	fd = netns_socket(netns, ss.ss_family,
			  SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, err);
	if (fd < 0)
		return -1;
	if (local && bind_local(fd, ss.ss_family, local, err) < 0)
		goto fail;
	if (connect(fd, (struct sockaddr *)&ss, sl) < 0 &&
	    errno != EINPROGRESS) {
		ferr_set(err, FERR_UNAVAILABLE, "cannot connect to %s:%u: %s",
			 addr, (unsigned)port, strerror(errno));
		goto fail;
	}
	pfd.fd = fd;
	pfd.events = POLLOUT;
	if (poll(&pfd, 1, MIG_HANDSHAKE_TIMEOUT_MS) <= 0) {
		ferr_set(err, FERR_TIMEOUT, "cannot connect to %s:%u: timeout",
			 addr, (unsigned)port);
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) < 0 || soerr) {
		ferr_set(err, FERR_UNAVAILABLE, "cannot connect to %s:%u: %s",
			 addr, (unsigned)port, strerror(soerr ? soerr : errno));
		goto fail;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	socket_set_timeouts(fd, MIG_HANDSHAKE_TIMEOUT_MS);
	return fd;
fail:
	close(fd);
	return -1;
}

int conn_io_deadline(struct mig_conn *c, bool rd, void *buf, size_t len,
		     uint64_t deadline, const char *what, struct ferr *err)
{
	int rc;

	fd_set_nonblock(c->fd);
	rc = io_full(c, rd, buf, len, deadline, what, err);
	set_blocking(c->fd);
	return rc;
}

int dataplane_dial(SSL_CTX *ctx, const char *netns, const char *local_addr,
		   const char *peer_name, const char *addr, uint16_t port,
		   bool plaintext, enum relay_z z,
		   const uint8_t sid[MIG_SESSION_ID_LEN],
		   const uint8_t key[MIG_KEY_LEN], uint16_t channel,
		   uint16_t nchan, struct mig_conn *out, struct ferr *err)
{
	uint16_t flags = (plaintext ? MIG_FLAG_PLAINTEXT : 0) |
			 (z != RELAY_Z_OFF ? MIG_FLAG_FRAMES : 0);

	return dataplane_dial_flags(ctx, netns, local_addr, peer_name, addr,
				    port, flags, z, sid, key, channel, nchan,
				    out, err);
}

int dataplane_dial_flags(SSL_CTX *ctx, const char *netns,
			 const char *local_addr, const char *peer_name,
			 const char *addr, uint16_t port, uint16_t flags,
			 enum relay_z z, const uint8_t sid[MIG_SESSION_ID_LEN],
			 const uint8_t key[MIG_KEY_LEN], uint16_t channel,
			 uint16_t nchan, struct mig_conn *out,
			 struct ferr *err)
{
	bool plaintext = flags & MIG_FLAG_PLAINTEXT;
	struct mig_conn c = { .fd = -1, .z = z };
	struct mig_hello h = { .flags = flags,
			       .channel = channel,
			       .nchan = nchan };
	uint8_t hello[MIG_HELLO_LEN], ack[MIG_ACK_LEN];
	uint8_t exporter[MIG_EXPORTER_LEN];
	uint64_t deadline = now_ms() + MIG_HANDSHAKE_TIMEOUT_MS;

	memcpy(h.session, sid, MIG_SESSION_ID_LEN);
	c.fd = tcp_connect(netns, local_addr, addr, port, err);
	if (c.fd < 0)
		return -1;
	fd_set_nonblock(c.fd);
	if (!plaintext) {
		c.ssl = SSL_new(ctx);
		if (!c.ssl || tls_client_expect(c.ssl, NULL, peer_name, err) < 0 ||
		    SSL_set_fd(c.ssl, c.fd) != 1) {
			ferr_set(err, FERR_INTERNAL, "cannot set up TLS");
			goto fail;
		}
		relay_tls_prepare(c.ssl);
		if (handshake(&c, false, deadline, err) < 0) {
			ferr_wrap(err, "%s (%s:%u)", peer_name, addr,
				  (unsigned)port);
			goto fail;
		}
	}
	if (mig_exporter(c.ssl, key, sid, channel, exporter, err) < 0)
		goto fail;
	mig_hello_build(hello, &h, key, exporter);
	if (io_full(&c, false, hello, sizeof(hello), deadline, "the HELLO",
		    err) < 0 ||
	    io_full(&c, true, ack, sizeof(ack), deadline, "the ACK", err) <
		    0 ||
	    mig_ack_check(ack, channel, key, exporter, err) < 0)
		goto fail;
	set_blocking(c.fd);
	socket_set_timeouts(c.fd, 0);
	*out = c;
	return 0;
fail:
	conn_close(&c, false, NULL);
	return -1;
}

int dataplane_accept(SSL_CTX *ctx, int fd, unsigned deadline_ms,
		     struct mig_conn *out, uint8_t hello[MIG_HELLO_LEN],
		     char *peer, size_t peer_len, struct ferr *err)
{
	struct mig_conn c = { .fd = fd };
	uint64_t deadline = now_ms() + deadline_ms;
	uint8_t first;
	ssize_t n;

	socket_set_timeouts(fd, MIG_HANDSHAKE_TIMEOUT_MS);
	fd_set_nonblock(fd);
	/* A plaintext (--insecure) channel starts with the HELLO's magic; a
	 * TLS one with a handshake record (0x16). */
	while ((n = recv(fd, &first, 1, MSG_PEEK)) != 1) {
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK &&
			       errno != EINTR))
			return ferr_set(err, FERR_UNAVAILABLE,
					"the peer closed before its HELLO");
		if (wait_until(fd, POLLIN, deadline, "the TLS handshake and "
			       "the HELLO", err) < 0)
			return -1;
	}
	if (first == 0x16) {
		c.ssl = SSL_new(ctx);
		if (!c.ssl || SSL_set_fd(c.ssl, fd) != 1) {
			SSL_free(c.ssl);
			return ferr_set(err, FERR_INTERNAL,
					"cannot set up TLS");
		}
		relay_tls_prepare(c.ssl);
		if (handshake(&c, true, deadline, err) < 0)
			goto fail;
		if (tls_peer_identity(c.ssl, peer, peer_len) < 0) {
			ferr_set(err, FERR_UNAUTH,
				 "the peer has no valid identity");
			goto fail;
		}
		/* only hosts carry migrations: a user certificate named
		 * like a host is not one */
		if (!tls_peer_is_host(c.ssl)) {
			ferr_set(err, FERR_FORBIDDEN,
				 "%s presented a user certificate: the data "
				 "plane takes host certificates only",
				 peer);
			goto fail;
		}
	} else {
		snprintf(peer, peer_len, "%s", "");
	}
	if (io_full(&c, true, hello, MIG_HELLO_LEN, deadline, "the HELLO",
		    err) < 0)
		goto fail;
	set_blocking(fd);
	*out = c;
	return 0;
fail:
	SSL_free(c.ssl);
	return -1;
}
