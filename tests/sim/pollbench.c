/* pollbench.c - ferry-pollbench: how the controller's poll scales with the
 * way it talks to hosts. Polls GET /v1/load on every host of a hosts file
 * (ferry-simhost's), all at once on one libevent loop, for a few rounds,
 * either with a new TLS connection per request (httpc_start) or with kept
 * connections (httpc_conn), and prints each round's wall time and the
 * process's CPU time and RSS. The measurement behind the controller's
 * choice of kept connections (docs/balancer.md, "Scale").
 *
 *   ferry-pollbench --ca CA --cert CRT --key KEY --hosts-file F
 *       [--rounds N] [--new-connections] [--timeout-s S] [--inflight N]
 *       [--any-name]
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common.h"
#include "httpc.h"
#include "tls.h"

struct host {
	char name[FERRY_NAME_MAX + 1];
	char address[64];
	unsigned port;
	struct httpc_conn *conn;
	bool ok;
};

static size_t pending, answered, bytes_vms, failures;
static size_t next_host, nhosts_all, inflight_max = 1000000;
static struct host *all_hosts;
static struct event_base *the_base;
static SSL_CTX *the_ctx;
static unsigned the_timeout_s;
static bool fresh;
static bool any_name; /* check the address only (simhost.py's shared
			 certificate names no host) */

static void start_next(void);

static void on_done(int status, json_t *reply, const struct ferr *err,
		    void *arg)
{
	struct host *h = arg;

	pending--;
	if (err && failures++ < 3)
		fprintf(stderr, "%s: %s\n", h->name, err->msg);
	h->ok = reply && status == 200;
	if (h->ok) {
		answered++;
		bytes_vms += json_array_size(json_object_get(reply, "vms"));
	}
	json_decref(reply);
	start_next();
}

/* Start requests until inflight_max run or every host was asked. */
static void start_next(void)
{
	struct ferr err;

	while (pending < inflight_max && next_host < nhosts_all) {
		struct host *h = &all_hosts[next_host++];
		struct httpc_peer p = { .name = h->name,
					.address = h->address,
					.port = (uint16_t)h->port,
					.check_name = !any_name };
		int rc;

		if (!fresh && !h->conn)
			h->conn = httpc_conn_new(the_base, the_ctx, &p,
						 the_timeout_s, &err);
		rc = fresh ? httpc_start(the_base, the_ctx, &p, the_timeout_s,
					 "GET", "/v1/load", NULL, on_done, h,
					 &err)
			   : httpc_conn_start(h->conn, "GET", "/v1/load",
					      NULL, on_done, h, &err);
		if (rc == 0)
			pending++;
	}
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ca", required_argument, NULL, 'c' },
		{ "cert", required_argument, NULL, 'e' },
		{ "key", required_argument, NULL, 'k' },
		{ "hosts-file", required_argument, NULL, 'H' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "timeout-s", required_argument, NULL, 't' },
		{ "new-connections", no_argument, NULL, 'n' },
		{ "inflight", required_argument, NULL, 'i' },
		{ "any-name", no_argument, NULL, 'a' },
		{ NULL, 0, NULL, 0 }
	};
	const char *ca = NULL, *cert = NULL, *key = NULL, *file = NULL;
	unsigned rounds = 3, timeout_s = 5;
	struct ferr err = { 0 };
	struct host *hosts;
	size_t n = 0;
	json_t *root, *v;
	const char *name;
	struct event_base *base;
	SSL_CTX *ctx;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c': ca = optarg; break;
		case 'e': cert = optarg; break;
		case 'k': key = optarg; break;
		case 'H': file = optarg; break;
		case 'r': rounds = (unsigned)atoi(optarg); break;
		case 't': timeout_s = (unsigned)atoi(optarg); break;
		case 'n': fresh = true; break;
		case 'i': inflight_max = (size_t)atoi(optarg); break;
		case 'a': any_name = true; break;
		default: return 2;
		}
	}
	if (!ca || !cert || !key || !file || !rounds || !timeout_s) {
		fprintf(stderr, "usage: ferry-pollbench --ca CA --cert CRT "
				"--key KEY --hosts-file F [--rounds N] "
				"[--timeout-s S] [--new-connections]\n");
		return 2;
	}
	root = json_load_file(file, 0, NULL);
	hosts = calloc(json_object_size(root) + 1, sizeof(*hosts));
	ctx = tls_client_ctx_new(ca, cert, key, &err);
	base = event_base_new();
	if (!root || !hosts || !ctx || !base) {
		fprintf(stderr, "ferry-pollbench: set-up failed: %s\n", err.msg);
		return 1;
	}
	json_object_foreach(root, name, v) {
		struct host *h = &hosts[n++];

		snprintf(h->name, sizeof(h->name), "%s", name);
		snprintf(h->address, sizeof(h->address), "%s",
			 json_string_value(json_object_get(v, "address")));
		h->port = (unsigned)json_integer_value(json_object_get(v, "port"));
	}
	all_hosts = hosts;
	nhosts_all = n;
	the_base = base;
	the_ctx = ctx;
	the_timeout_s = timeout_s;
	printf("hosts %zu, %s\n", n,
	       fresh ? "a new connection per request" : "kept connections");
	for (unsigned r = 0; r < rounds; r++) {
		uint64_t t0 = now_ms();
		double c0 = cpu_s();

		answered = bytes_vms = failures = 0;
		next_host = 0;
		start_next();
		while (pending)
			event_base_loop(base, EVLOOP_ONCE);
		{
			struct httpc_conn_stats st, sum = { 0 };

			for (size_t i = 0; i < n && !fresh; i++) {
				httpc_conn_stats(hosts[i].conn, &st);
				sum.connects += st.connects;
				sum.retries += st.retries;
			}
			printf("round %u: %.3f s wall, %.3f s CPU, %zu answered, "
			       "%zu VMs, RSS %ld KiB, connects %lu, "
			       "retries %lu\n",
			       r, (now_ms() - t0) / 1000.0, cpu_s() - c0,
			       answered, bytes_vms, rss_kib(), sum.connects,
			       sum.retries);
		}
		fflush(stdout);
	}
	malloc_trim(0);
	printf("kept: RSS %ld KiB, heap in use %zu KiB\n", rss_kib(),
	       mallinfo2().uordblks / 1024);
	for (size_t i = 0; i < n; i++)
		httpc_conn_free(hosts[i].conn);
	event_base_loop(base, EVLOOP_NONBLOCK);
	malloc_trim(0);
	printf("closed: RSS %ld KiB, heap in use %zu KiB\n", rss_kib(),
	       mallinfo2().uordblks / 1024);
	event_base_free(base);
	SSL_CTX_free(ctx);
	free(hosts);
	json_decref(root);
	return 0;
}
