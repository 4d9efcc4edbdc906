/* relay_bench.c - the data plane's relay alone, for profiling: a fake
 * source QEMU writes N MiB into a unix socket, ferry's relay carries them
 * over a TCP loopback connection (TLS, or plaintext with --plain) to a
 * second relay, which writes them into a unix socket that a fake
 * destination QEMU reads and checks. Prints wall time and the CPU time of
 * each relay thread, per MiB, so that changes to relay.c can be compared
 * without QEMU and with less noise than a migration.
 *
 *   build/relay_bench [--mib N] [--plain] [--content random|text]
 *                     [--zstd auto|on] [--writes KIB] [--reads KIB]
 *                     [--netns NS_A,NS_B --addr IP_B]
 *
 * With --netns the TCP connection runs from network namespace NS_A to
 * IP_B in NS_B (e.g. the shaped link of `migrate_bench.py --link`, set up
 * by hand), instead of over loopback.
 *
 * Run it under `perf record -g` or `strace -c -f` to see where the time
 * goes (docs/performance.md, "The relay").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "migrate_int.h"
#include "tls.h"
#include "../guest/memload/pattern.h"

struct side {
	int local;
	struct mig_conn conn;
	atomic_bool *stop;
	struct relay_counters ctr;
	double cpu_s;
	int rc;
	struct ferr err;
};

static size_t g_bytes, g_wchunk = 128 * 1024, g_rchunk = 32 * 1024;
static int g_text;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *relay_main(void *arg)
{
	struct side *s = arg;

	s->rc = relay_run(s->local, &s->conn, s->stop, &s->ctr, &s->err);
	s->cpu_s = thread_cpu_s();
	return NULL;
}

/* Page i of the stream (the content stays the same per page index). */
static void make_page(uint64_t *page, size_t i, const struct pattern_text *t)
{
	if (g_text)
		pattern_text_fill(page, pattern_base(1, i, 0), t);
	else
		pattern_fill(page, pattern_base(1, i, 0));
}

static double g_writer_cpu, g_reader_cpu;

/* The fake source QEMU: pages in chunks of g_wchunk. */
static void *writer_main(void *arg)
{
	int fd = *(int *)arg;
	size_t npages = g_wchunk / PATTERN_PAGE_SIZE;
	uint64_t *buf = malloc(g_wchunk);
	struct pattern_text t;
	size_t sent = 0, page = 0;

	pattern_text_init(&t);
	/* pre-generate a window of pages so the writer costs little */
	while (sent < g_bytes) {
		size_t n = g_bytes - sent < g_wchunk ? g_bytes - sent : g_wchunk;
		size_t off = 0;

		for (size_t k = 0; k < npages; k++)
			make_page(buf + k * PATTERN_WORDS, page + k, &t);
		page += npages;
		while (off < n) {
			ssize_t w = write(fd, (uint8_t *)buf + off, n - off);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				perror("writer");
				goto out;
			}
			off += (size_t)w;
		}
		sent += n;
	}
out:
	shutdown(fd, SHUT_WR);
	free(buf);
	g_writer_cpu = thread_cpu_s();
	return NULL;
}

/* The fake destination QEMU: reads g_rchunk at a time, checks each page. */
static size_t g_read_bytes;
static int g_read_bad;

static void *reader_main(void *arg)
{
	int fd = *(int *)arg;
	uint8_t *buf = malloc(g_rchunk + PATTERN_PAGE_SIZE);
	uint64_t want[PATTERN_WORDS];
	struct pattern_text t;
	size_t have = 0, page = 0;
	ssize_t n;

	pattern_text_init(&t);
	while ((n = read(fd, buf + have, g_rchunk)) > 0) {
		size_t off = 0;

		have += (size_t)n;
		g_read_bytes += (size_t)n;
		while (have - off >= PATTERN_PAGE_SIZE) {
			make_page(want, page++, &t);
			if (memcmp(buf + off, want, PATTERN_PAGE_SIZE))
				g_read_bad++;
			off += PATTERN_PAGE_SIZE;
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
	free(buf);
	g_reader_cpu = thread_cpu_s();
	return NULL;
}

/* Enter network namespace name (this thread; NULL: stay). */
static int enter_ns(const char *name)
{
	char path[256];
	int fd, rc;

	if (!name)
		return 0;
	snprintf(path, sizeof(path), "/var/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	rc = setns(fd, CLONE_NEWNET);
	close(fd);
	return rc;
}

/* A TCP connection: *c connected to *s, over loopback, or from namespace
 * ns_a to addr in namespace ns_b. */
static int tcp_pair(int *c, int *s, const char *ns_a, const char *ns_b,
		    const char *addr)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int l;

	if (enter_ns(ns_b) < 0)
		return -1;
	l = socket(AF_INET, SOCK_STREAM, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (addr && inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		return -1;
	if (l < 0 || bind(l, (struct sockaddr *)&sa, sl) < 0 ||
	    listen(l, 1) < 0 || getsockname(l, (struct sockaddr *)&sa, &sl) < 0)
		return -1;
	if (enter_ns(ns_a) < 0)
		return -1;
	*c = socket(AF_INET, SOCK_STREAM, 0);
	if (*c < 0 || connect(*c, (struct sockaddr *)&sa, sl) < 0)
		return -1;
	*s = accept(l, NULL, NULL);
	close(l);
	return *s < 0 ? -1 : 0;
}

struct hs {
	SSL *ssl;
	int rc;
};

static void *accept_main(void *arg)
{
	struct hs *h = arg;

	h->rc = SSL_accept(h->ssl) == 1 ? 0 : -1;
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "plain", no_argument, NULL, 'p' },
		{ "content", required_argument, NULL, 'c' },
		{ "zstd", required_argument, NULL, 'z' },
		{ "writes", required_argument, NULL, 'w' },
		{ "reads", required_argument, NULL, 'r' },
		{ "netns", required_argument, NULL, 'n' },
		{ "addr", required_argument, NULL, 'a' },
		{ NULL, 0, NULL, 0 },
	};
	const char *ips[] = { "127.0.0.1", NULL };
	char pki[] = "/tmp/relay-bench-XXXXXX", ca[96], crt[96], key[96];
	atomic_bool stop = false;
	struct side a = { .stop = &stop }, b = { .stop = &stop };
	struct ferr err = { 0 };
	int qa[2], qb[2], ta, tb, opt, plain = 0;
	unsigned mib = 512;
	enum relay_z zmode = RELAY_Z_OFF;
	char *ns_a = NULL, *ns_b = NULL;
	const char *addr = NULL;
	pthread_t t[4];
	double t0, t1;

	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (opt) {
		case 'm':
			mib = (unsigned)atoi(optarg);
			break;
		case 'p':
			plain = 1;
			break;
		case 'c':
			g_text = !strcmp(optarg, "text");
			break;
		case 'z':
			zmode = !strcmp(optarg, "on") ? RELAY_Z_ON : RELAY_Z_AUTO;
			break;
		case 'w':
			g_wchunk = (size_t)atoi(optarg) * 1024;
			break;
		case 'r':
			g_rchunk = (size_t)atoi(optarg) * 1024;
			break;
		case 'n':
			ns_a = optarg; /* argv is writable */
			ns_b = strchr(ns_a, ',');
			if (!ns_b)
				return 2;
			*ns_b++ = '\0';
			break;
		case 'a':
			addr = optarg;
			break;
		default:
			fprintf(stderr, "usage: see the comment at the top\n");
			return 2;
		}
	}
	g_bytes = (size_t)mib << 20;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, qa) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, qb) < 0 ||
	    tcp_pair(&ta, &tb, ns_a, ns_b, addr) < 0) {
		perror("sockets");
		return 1;
	}
	a.local = qa[1];
	a.conn = (struct mig_conn){ .fd = ta, .z = zmode };
	b.local = qb[1];
	b.conn = (struct mig_conn){ .fd = tb,
				    .z = zmode ? RELAY_Z_DECODE : RELAY_Z_OFF };
	if (!plain) {
		SSL_CTX *cc, *sc;
		struct hs h;
		pthread_t th;

		if (!mkdtemp(pki))
			return 1;
		snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
		snprintf(crt, sizeof(crt), "%s/hosts/h.crt", pki);
		snprintf(key, sizeof(key), "%s/hosts/h.key", pki);
		if (pki_init(pki, "bench", 1, &err) < 0 ||
		    pki_issue(pki, PKI_HOST, "h", ips, NULL, 1, &err) < 0 ||
		    !(cc = tls_client_ctx_new(ca, crt, key, &err)) ||
		    !(sc = tls_server_ctx_new(ca, crt, key, &err))) {
			fprintf(stderr, "pki: %s\n", err.msg);
			return 1;
		}
		a.conn.ssl = SSL_new(cc);
		b.conn.ssl = SSL_new(sc);
		SSL_set_fd(a.conn.ssl, ta);
		SSL_set_fd(b.conn.ssl, tb);
		relay_tls_prepare(a.conn.ssl);
		relay_tls_prepare(b.conn.ssl);
		h.ssl = b.conn.ssl;
		pthread_create(&th, NULL, accept_main, &h);
		if (SSL_connect(a.conn.ssl) != 1) {
			fprintf(stderr, "handshake failed\n");
			return 1;
		}
		pthread_join(th, NULL);
		if (h.rc < 0)
			return 1;
		rmtree(pki, &err);
	}
	t0 = now_s();
	pthread_create(&t[0], NULL, relay_main, &a);
	pthread_create(&t[1], NULL, relay_main, &b);
	pthread_create(&t[2], NULL, writer_main, &qa[0]);
	pthread_create(&t[3], NULL, reader_main, &qb[0]);
	pthread_join(t[2], NULL);
	pthread_join(t[3], NULL);
	/* the fake QEMUs are done: close their ends so the relays end */
	close(qa[0]);
	close(qb[0]);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	t1 = now_s();
	if (a.rc || b.rc || g_read_bytes != g_bytes || g_read_bad) {
		fprintf(stderr, "FAILED: rc %d/%d (%s / %s), %zu of %zu bytes, "
				"%d bad pages\n",
			a.rc, b.rc, a.err.msg, b.err.msg, g_read_bytes, g_bytes,
			g_read_bad);
		return 1;
	}
	conn_close(&a.conn, true, &a.ctr);
	conn_close(&b.conn, true, &b.ctr);
	printf("{\"mib\": %u, \"tls\": %s, \"content\": \"%s\", \"zstd\": %d, "
	       "\"wall_s\": %.3f, \"gbit_s\": %.2f, "
	       "\"src_relay_cpu_ms_per_mib\": %.3f, "
	       "\"dst_relay_cpu_ms_per_mib\": %.3f, "
	       "\"writer_cpu_s\": %.3f, \"reader_cpu_s\": %.3f, "
	       "\"wire_mib\": %.1f}\n",
	       mib, plain ? "false" : "true", g_text ? "text" : "random",
	       (int)zmode, t1 - t0, (double)g_bytes * 8 / (t1 - t0) / 1e9,
	       a.cpu_s * 1000 / mib, b.cpu_s * 1000 / mib, g_writer_cpu,
	       g_reader_cpu,
	       (double)atomic_load(&a.ctr.wire) / (1 << 20));
	return 0;
}
