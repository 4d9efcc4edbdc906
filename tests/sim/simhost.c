/* simhost.c - ferry-simhost: thousands of simulated ferryd hosts in one
 * process, for the controller's scale and fail-over tests (a test tool, not
 * a second ferryd).
 *
 * Every simulated host answers, over mutual TLS 1.3, the endpoints the
 * controller uses: GET /v1/load (synthetic loads that vary each request),
 * POST /v1/vms/NAME/migrate (with the fencing rule of ferryd: a "fence"
 * below the highest this host has seen is refused), GET /v1/migrations/ID,
 * POST /v1/host/drain|undrain and POST /v1/host/fence. A migration lasts
 * --mig-ms, then the VM is on its destination. All hosts share one
 * listening socket: a host is told apart by the name the client sends as
 * SNI (ferry's clients always send the host's name), and each host shows
 * its own certificate (CN and DNS SAN = its name, IP SAN = the address),
 * issued in memory from the cluster CA at start. One socket because one
 * process cannot hold 10,000 listening sockets plus 10,000 connections
 * under this machine's 20,000-descriptor limit.
 *
 * Dead hosts: --stalled N hosts (stall-NNN) on a socket that listens and
 * never accepts (a request costs the client its timeout); --down N hosts
 * (down-NNN) on a port where nothing listens (refused at once).
 *
 * Output: --hosts-file FILE gets {"NAME": {"address", "port"}} for every
 * host (the controller's balancer.hosts_file); --log FILE gets one JSON
 * line per migrate, fence, drain request and migration end. --idle-s: an
 * idle connection is closed after this long (default 120; ferryd: 10).
 * The process prints "ready" once it listens and runs until SIGTERM or
 * SIGINT, then "served N requests, M handshakes".
 *
 * This file: the model, sockets and main; the routes are in simhost_api.c,
 * the certificates and TLS context in simhost_tls.c (shared: simhost.h).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "simhost.h"

struct sim S = { .log_fd = -1 };

uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t rng_next(void)
{
	uint64_t z = (S.rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

double rng_unit(void)
{
	return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0);
}

void die(const char *what)
{
	unsigned long e = ERR_get_error();

	fprintf(stderr, "ferry-simhost: %s%s%s\n", what, e ? ": " : "",
		e ? ERR_error_string(e, NULL) : "");
	exit(1);
}

void log_line(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	if (S.log_fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf) - 1)
		return;
	buf[n++] = '\n';
	if (write(S.log_fd, buf, (size_t)n) != n)
		perror("ferry-simhost: log");
}

/* ---- the model ---- */

void host_add_vm(struct shost *h, unsigned v)
{
	if (h->nvms == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 16;
		h->vms = realloc(h->vms, h->cap * sizeof(*h->vms));
		if (!h->vms)
			die("out of memory");
	}
	h->vms[h->nvms++] = v;
}

void host_del_vm(struct shost *h, unsigned v)
{
	for (size_t i = 0; i < h->nvms; i++)
		if (h->vms[i] == v) {
			memmove(&h->vms[i], &h->vms[i + 1],
				(h->nvms - i - 1) * sizeof(h->vms[0]));
			h->nvms--;
			return;
		}
}

static void build(size_t nhosts, unsigned per_host)
{
	static const unsigned vcpus[] = { 1, 2, 4, 8 };
	static const unsigned mems[] = { 2048, 4096, 8192, 16384 };

	S.nhosts = nhosts;
	S.hosts = calloc(nhosts, sizeof(*S.hosts));
	S.nvms = nhosts * per_host;
	S.vms = calloc(S.nvms ? S.nvms : 1, sizeof(*S.vms));
	if (!S.hosts || !S.vms)
		die("out of memory");
	for (size_t h = 0; h < nhosts; h++) {
		bool hot = h % HOT_EVERY == HOT_EVERY - 1;

		snprintf(S.hosts[h].name, NAME_LEN, "sim-%05zu", h);
		for (unsigned k = 0; k < per_host; k++) {
			unsigned i = (unsigned)(h * per_host + k);
			struct svm *v = &S.vms[i];
			unsigned c = vcpus[rng_next() % 4];
			uint64_t r = rng_next();

			snprintf(v->name, NAME_LEN, "vm-%05zu-%02u", h, k);
			snprintf(v->uuid, sizeof(v->uuid),
				 "%08x-%04x-4%03x-8%03x-%012" PRIx64,
				 (unsigned)(r >> 32), (unsigned)(r >> 16) & 0xffff,
				 (unsigned)r & 0xfff, i & 0xfff,
				 (uint64_t)((uint64_t)i * 2654435761u & 0xffffffffffffu));
			v->mem_mib = mems[rng_next() % 4];
			v->cpu = c * (hot ? 0.7 + 0.3 * rng_unit()
					  : 0.2 + 0.4 * rng_unit());
			v->dirty = 1 + 40 * rng_unit();
			v->tier = (unsigned)(rng_next() % 3);
			v->host = (int)h;
			v->mig = -1;
			host_add_vm(&S.hosts[h], i);
		}
	}
}

int host_index(const char *name)
{
	char *end;
	unsigned long i;

	if (strncmp(name, "sim-", 4) != 0)
		return -1;
	errno = 0;
	i = strtoul(name + 4, &end, 10);
	if (errno || *end || end == name + 4 || i >= S.nhosts ||
	    strcmp(S.hosts[i].name, name) != 0)
		return -1;
	return (int)i;
}

/* End migrations whose time has come. */
static void tick(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = now_ms();

	(void)fd;
	(void)what;
	(void)arg;
	for (size_t i = 0; i < S.nmigs; i++) {
		struct smig *m = &S.migs[i];
		struct svm *v = &S.vms[m->vm];

		if (m->done || now < m->end_ms)
			continue;
		m->done = true;
		m->ok = rng_next() % 100 >= S.fail_pct;
		v->mig = -1;
		if (m->ok) {
			host_del_vm(&S.hosts[m->from], m->vm);
			host_add_vm(&S.hosts[m->to], m->vm);
			v->host = m->to;
		}
		log_line("{\"ms\":%" PRIu64 ",\"op\":\"done\",\"id\":\"%s\","
			 "\"vm\":\"%s\",\"from\":\"%s\",\"to\":\"%s\","
			 "\"outcome\":\"%s\"}",
			 now, m->id, v->name, S.hosts[m->from].name,
			 S.hosts[m->to].name, m->ok ? "completed" : "failed");
	}
}

/* ---- sockets ---- */

static int listen_on(const char *address, unsigned port, bool accept_them)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
			0);
	int one = 1;

	if (fd < 0 || inet_pton(AF_INET, address, &sa.sin_addr) != 1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, accept_them ? BACKLOG : 16) < 0) {
		fprintf(stderr, "ferry-simhost: cannot listen on %s:%u: %s\n",
			address, port, strerror(errno));
		exit(1);
	}
	return fd;
}

static void write_hosts_file(const char *path, const char *address,
			     unsigned port, unsigned stalled,
			     unsigned stalled_port, unsigned down,
			     unsigned down_port)
{
	FILE *f = fopen(path, "w");

	if (!f)
		die("cannot write the hosts file");
	fputs("{", f);
	for (size_t i = 0; i < S.nhosts; i++)
		fprintf(f, "%s\n\"%s\":{\"address\":\"%s\",\"port\":%u}",
			i ? "," : "", S.hosts[i].name, address, port);
	for (unsigned i = 0; i < stalled; i++)
		fprintf(f, ",\n\"stall-%03u\":{\"address\":\"%s\",\"port\":%u}",
			i, address, stalled_port);
	for (unsigned i = 0; i < down; i++)
		fprintf(f, ",\n\"down-%03u\":{\"address\":\"%s\",\"port\":%u}",
			i, address, down_port);
	fputs("\n}\n", f);
	if (fclose(f) != 0)
		die("cannot write the hosts file");
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: ferry-simhost --pki DIR --port P [--hosts N] [--vms N]\n"
		"         [--address A] [--stalled N --stalled-port P]\n"
		"         [--down N --down-port P] [--mig-ms MS] [--fail-pct N]\n"
		"         [--seed N] [--idle-s S] [--hosts-file FILE] "
		"[--log FILE]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pki", required_argument, NULL, 'k' },
		{ "port", required_argument, NULL, 'p' },
		{ "hosts", required_argument, NULL, 'n' },
		{ "vms", required_argument, NULL, 'v' },
		{ "address", required_argument, NULL, 'a' },
		{ "stalled", required_argument, NULL, 's' },
		{ "stalled-port", required_argument, NULL, 'S' },
		{ "down", required_argument, NULL, 'd' },
		{ "down-port", required_argument, NULL, 'D' },
		{ "mig-ms", required_argument, NULL, 'm' },
		{ "fail-pct", required_argument, NULL, 'f' },
		{ "seed", required_argument, NULL, 'r' },
		{ "hosts-file", required_argument, NULL, 'H' },
		{ "log", required_argument, NULL, 'l' },
		{ "idle-s", required_argument, NULL, 'i' },
		{ NULL, 0, NULL, 0 }
	};
	const char *pki = NULL, *address = "127.0.0.1", *hosts_file = NULL;
	unsigned long port = 0, nhosts = 50, vms = 10, stalled = 0,
		      stalled_port = 0, down = 0, down_port = 0,
		      idle_s = IDLE_TIMEOUT_S;
	struct evhttp *http;
	struct evconnlistener *lst;
	struct event *sig[2], *tk;
	struct timeval tv = { 0, TICK_MS * 1000 };
	int c, stall_fd = -1;

	S.mig_ms = 3000;
	S.rng = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end = NULL;
		unsigned long v = optarg ? strtoul(optarg, &end, 10) : 0;
		bool num = optarg && *optarg && end && !*end;

		switch (c) {
		case 'k': pki = optarg; break;
		case 'a': address = optarg; break;
		case 'H': hosts_file = optarg; break;
		case 'l':
			S.log_fd = open(optarg, O_WRONLY | O_CREAT | O_APPEND |
							O_CLOEXEC, 0644);
			if (S.log_fd < 0)
				die("cannot open the log");
			break;
		default:
			if (!num)
				usage();
			switch (c) {
			case 'p': port = v; break;
			case 'n': nhosts = v; break;
			case 'v': vms = v; break;
			case 's': stalled = v; break;
			case 'S': stalled_port = v; break;
			case 'd': down = v; break;
			case 'D': down_port = v; break;
			case 'm': S.mig_ms = (unsigned)v; break;
			case 'f': S.fail_pct = (unsigned)v; break;
			case 'r': S.rng = v; break;
			case 'i': idle_s = v; break;
			default: usage();
			}
		}
	}
	if (!pki || !port || port > 65535 || nhosts > 99999 || vms > 1000 ||
	    !idle_s || idle_s > 3600 ||
	    (stalled && !stalled_port) || (down && !down_port) ||
	    stalled > 999 || down > 999 || S.fail_pct > 100)
		usage();
	signal(SIGPIPE, SIG_IGN);
	build(nhosts, (unsigned)vms);
	issue_certs(pki, address);
	make_ctx(pki);
	S.base = event_base_new();
	http = S.base ? evhttp_new(S.base) : NULL;
	if (!http)
		die("cannot make the HTTP server");
	evhttp_set_bevcb(http, on_bev, NULL);
	evhttp_set_gencb(http, on_request, NULL);
	evhttp_set_timeout(http, (int)idle_s);
	evhttp_set_max_body_size(http, BODY_MAX);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	lst = evconnlistener_new(S.base, NULL, NULL,
				 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
				 -1, listen_on(address, (unsigned)port, true));
	if (!lst || !evhttp_bind_listener(http, lst))
		die("cannot serve");
	if (stalled)
		stall_fd = listen_on(address, (unsigned)stalled_port, false);
	if (hosts_file)
		write_hosts_file(hosts_file, address, (unsigned)port,
				 (unsigned)stalled, (unsigned)stalled_port,
				 (unsigned)down, (unsigned)down_port);
	sig[0] = evsignal_new(S.base, SIGTERM, on_signal, S.base);
	sig[1] = evsignal_new(S.base, SIGINT, on_signal, S.base);
	tk = event_new(S.base, -1, EV_PERSIST, tick, NULL);
	if (!sig[0] || !sig[1] || !tk || event_add(sig[0], NULL) < 0 ||
	    event_add(sig[1], NULL) < 0 || event_add(tk, &tv) < 0)
		die("cannot set up events");
	printf("ready %lu hosts on %s:%lu\n", nhosts, address, port);
	fflush(stdout);
	event_base_dispatch(S.base);
	{
		unsigned long req = 0;

		for (size_t i = 0; i < S.nhosts; i++)
			req += S.hosts[i].requests;
		printf("served %lu requests, %lu handshakes\n", req,
		       S.handshakes);
	}
	if (stall_fd >= 0)
		close(stall_fd);
	event_free(sig[0]);
	event_free(sig[1]);
	event_free(tk);
	evhttp_free(http);
	event_base_free(S.base);
	for (size_t i = 0; i < S.nhosts; i++) {
		X509_free(S.hosts[i].cert);
		free(S.hosts[i].vms);
	}
	free(S.hosts);
	free(S.vms);
	free(S.migs);
	EVP_PKEY_free(S.key);
	SSL_CTX_free(S.ctx);
	if (S.log_fd >= 0)
		close(S.log_fd);
	return 0;
}
