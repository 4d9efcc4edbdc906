/* simhost.h - internal to ferry-simhost (tests/sim): the simulated hosts'
 * model shared by simhost.c (model, sockets, main), simhost_api.c (the HTTP
 * routes) and simhost_tls.c (certificates and the TLS context).
 */
#ifndef FERRY_SIMHOST_H
#define FERRY_SIMHOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>
#include <openssl/ssl.h>

#define HOST_CORES 32
#define HOST_MEM_MIB (256u * 1024)
#define BODY_MAX 65536
#define IDLE_TIMEOUT_S 120
#define BACKLOG 4096
#define TICK_MS 100
#define HOT_EVERY 10   /* one host in HOT_EVERY is overloaded */
#define NAME_LEN 32

struct svm {
	char name[NAME_LEN];
	char uuid[37];
	double cpu;      /* base demand, cores */
	double dirty;    /* MiB/s */
	unsigned mem_mib;
	unsigned tier;
	int host;
	int mig;         /* index in sim.migs while migrating, else -1 */
};

struct shost {
	char name[NAME_LEN];
	X509 *cert;
	bool draining;
	int64_t fence;
	unsigned *vms;   /* indices in sim.vms */
	size_t nvms, cap;
	unsigned long requests;
};

struct smig {
	char id[33];
	unsigned vm;
	int from, to;
	uint64_t start_ms, end_ms;
	int64_t fence;
	bool done;
	bool ok;
};

struct sim {
	struct event_base *base;
	SSL_CTX *ctx;
	EVP_PKEY *key;
	struct shost *hosts;
	size_t nhosts;
	struct svm *vms;
	size_t nvms;
	struct smig *migs;
	size_t nmigs, capmigs;
	uint64_t rng;
	int log_fd;
	unsigned mig_ms;
	unsigned fail_pct;
	unsigned long handshakes;
};

/* The one simulation state, owned by simhost.c. */
extern struct sim S;

/* Wall-clock time in milliseconds. */
uint64_t now_ms(void);
/* The next number of the seeded generator (S.rng); deterministic per seed. */
uint64_t rng_next(void);
/* A uniform double in [0, 1) from rng_next(). */
double rng_unit(void);
/* Print what (and the last OpenSSL error, if any) and exit(1): for set-up
 * and out-of-memory failures only. */
void die(const char *what) __attribute__((noreturn));
/* Append one line (printf format, newline added) to the --log file; no-op
 * without --log; a line longer than 1 KiB is dropped. */
void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Put VM index v on host h (grows h->vms; dies when out of memory). */
void host_add_vm(struct shost *h, unsigned v);
/* Take VM index v off host h; no-op when it is not there. */
void host_del_vm(struct shost *h, unsigned v);
/* The index in S.hosts of the host named name ("sim-NNNNN"), or -1. */
int host_index(const char *name);

/* simhost_api.c: the evhttp callback serving every route for the host the
 * connection's SNI named (SSL app data); 403 without a known host. */
void on_request(struct evhttp_request *req, void *arg);

/* simhost_tls.c: issue a certificate for every host in S.hosts (CN, DNS SAN
 * = its name, IP SAN = address) with one fresh key (S.key), signed by
 * pki_dir/ca.{crt,key}; dies on failure. */
void issue_certs(const char *pki_dir, const char *address);
/* Make S.ctx: TLS 1.3 server, client certificates required against
 * pki_dir/ca.crt, the certificate chosen by SNI; dies on failure. */
void make_ctx(const char *pki_dir);
/* evhttp's bufferevent callback: a new accepting TLS bufferevent on S.ctx. */
struct bufferevent *on_bev(struct event_base *base, void *arg);

#endif
