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

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

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

static struct sim {
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
} S = { .log_fd = -1 };

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t rng_next(void)
{
	uint64_t z = (S.rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double rng_unit(void)
{
	return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0);
}

static void die(const char *what)
{
	unsigned long e = ERR_get_error();

	fprintf(stderr, "ferry-simhost: %s%s%s\n", what, e ? ": " : "",
		e ? ERR_error_string(e, NULL) : "");
	exit(1);
}

static void log_line(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
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

static void host_add_vm(struct shost *h, unsigned v)
{
	if (h->nvms == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 16;
		h->vms = realloc(h->vms, h->cap * sizeof(*h->vms));
		if (!h->vms)
			die("out of memory");
	}
	h->vms[h->nvms++] = v;
}

static void host_del_vm(struct shost *h, unsigned v)
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

static int host_index(const char *name)
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

/* ---- replies ---- */

static void reply(struct evhttp_request *req, int status,
		  struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req),
			  "Content-Type", "application/json");
	evhttp_send_reply(req, status, status < 300 ? "OK" : "Error", body);
}

static void reply_error(struct evhttp_request *req, int status,
			const char *code, const char *msg)
{
	struct evbuffer *b = evbuffer_new();
	json_t *o = json_pack("{s:{s:s, s:s}}", "error", "code", code,
			      "message", msg);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	if (b && s)
		evbuffer_add(b, s, strlen(s));
	reply(req, status, b);
	free(s);
	json_decref(o);
	if (b)
		evbuffer_free(b);
}

static void load(struct evhttp_request *req, struct shost *h)
{
	struct evbuffer *b = evbuffer_new();
	double sum = 0;
	unsigned long committed = 0;
	bool first = true;
	static const char *const tiers[] = { "web", "db", "batch" };

	if (!b)
		die("out of memory");
	for (size_t i = 0; i < h->nvms; i++)
		committed += S.vms[h->vms[i]].mem_mib;
	evbuffer_add_printf(b, "{\"host\":\"%s\",\"ts\":%" PRIu64
			       ",\"cpus\":%d,\"memory_total_mib\":%u,"
			       "\"memory_committed_mib\":%lu,"
			       "\"memory_free_mib\":%lu,\"draining\":%s,"
			       "\"vms\":[",
			    h->name, now_ms(), HOST_CORES, HOST_MEM_MIB,
			    committed, HOST_MEM_MIB - committed,
			    h->draining ? "true" : "false");
	for (size_t i = 0; i < h->nvms; i++) {
		struct svm *v = &S.vms[h->vms[i]];
		double cpu = v->cpu * (0.9 + 0.2 * rng_unit());

		sum += cpu;
		evbuffer_add_printf(
			b,
			"%s{\"name\":\"%s\",\"uuid\":\"%s\",\"state\":"
			"\"running\",\"cpu_cores\":%.4f,\"memory_mib\":%u,"
			"\"dirty_mibps\":%.2f,\"labels\":{\"tier\":\"%s\"},"
			"\"migrating\":%s}",
			first ? "" : ",", v->name, v->uuid, cpu, v->mem_mib,
			v->dirty * (0.8 + 0.4 * rng_unit()), tiers[v->tier],
			v->mig >= 0 ? "true" : "false");
		first = false;
	}
	/* the incoming copies, as ferryd lists them */
	for (size_t i = 0; i < S.nmigs; i++) {
		struct smig *m = &S.migs[i];

		if (m->done || &S.hosts[m->to] != h)
			continue;
		evbuffer_add_printf(b,
				    "%s{\"name\":\"%s\",\"uuid\":\"%s\","
				    "\"state\":\"incoming\",\"cpu_cores\":null,"
				    "\"memory_mib\":%u,\"dirty_mibps\":null,"
				    "\"labels\":{},\"migrating\":true}",
				    first ? "" : ",", S.vms[m->vm].name, S.vms[m->vm].uuid,
				    S.vms[m->vm].mem_mib);
		first = false;
	}
	evbuffer_add_printf(b, "],\"vm_cpu_cores\":%.4f,\"cpu_util\":%.4f}",
			    sum, sum / HOST_CORES > 1 ? 1.0 : sum / HOST_CORES);
	reply(req, 200, b);
	evbuffer_free(b);
}

static json_t *read_body(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	char buf[BODY_MAX + 1];

	if (len == 0 || len > BODY_MAX)
		return NULL;
	evbuffer_copyout(in, buf, len);
	buf[len] = '\0';
	return json_loadb(buf, len, 0, NULL);
}

static void mig_json(struct evhttp_request *req, const struct smig *m)
{
	struct evbuffer *b = evbuffer_new();

	if (!b)
		die("out of memory");
	evbuffer_add_printf(b,
			    "{\"id\":\"%s\",\"role\":\"source\",\"vm\":\"%s\","
			    "\"source\":\"%s\",\"destination\":\"%s\","
			    "\"started_at\":%" PRIu64 ",\"outcome\":\"%s\"%s}",
			    m->id, S.vms[m->vm].name, S.hosts[m->from].name,
			    S.hosts[m->to].name, m->start_ms,
			    !m->done ? "running"
				     : m->ok ? "completed" : "failed",
			    m->done && !m->ok
				    ? ",\"error\":\"simulated failure\""
				    : "");
	reply(req, m->done ? 200 : 202, b);
	evbuffer_free(b);
}

static void refuse_mig(struct evhttp_request *req, const struct shost *h,
		       const char *vm, const char *to, int64_t fence,
		       int status, const char *code, const char *why)
{
	log_line("{\"ms\":%" PRIu64 ",\"op\":\"migrate\",\"host\":\"%s\","
		 "\"vm\":\"%s\",\"to\":\"%s\",\"fence\":%" PRId64
		 ",\"result\":\"refused\",\"reason\":\"%s\"}",
		 now_ms(), h->name, vm, to ? to : "", fence, why);
	reply_error(req, status, code, why);
}

/* The fencing rule of ferryd (src/migrate/fence.c): a token below the
 * highest seen is refused; a higher one becomes the highest. */
static bool fence_ok(struct shost *h, int64_t fence)
{
	if (fence && fence < h->fence)
		return false;
	if (fence > h->fence)
		h->fence = fence;
	return true;
}

static void migrate(struct evhttp_request *req, struct shost *h,
		    const char *vmname)
{
	json_t *body = read_body(req);
	const char *to = json_string_value(json_object_get(body, "to"));
	json_t *jf = json_object_get(body, "fence");
	int64_t fence = json_is_integer(jf) ? json_integer_value(jf) : 0;
	int vi = -1, ti = to ? host_index(to) : -1;
	struct smig *m;
	char msg[160];

	for (size_t i = 0; i < h->nvms; i++)
		if (!strcmp(S.vms[h->vms[i]].name, vmname))
			vi = (int)h->vms[i];
	if (!body || ti < 0 || &S.hosts[ti] == h) {
		refuse_mig(req, h, vmname, to, fence, 400, "invalid_request",
			   "migration.to must name another host");
	} else if (vi < 0) {
		refuse_mig(req, h, vmname, to, fence, 404, "not_found",
			   "no such VM on this host");
	} else if (!fence_ok(h, fence)) {
		snprintf(msg, sizeof(msg),
			 "fencing token %" PRId64 " is older than %" PRId64
			 ": a newer controller leads",
			 fence, h->fence);
		refuse_mig(req, h, vmname, to, fence, 409, "conflict", msg);
	} else if (S.vms[vi].mig >= 0) {
		refuse_mig(req, h, vmname, to, fence, 409, "conflict",
			   "the VM is already migrating");
	} else if (S.hosts[ti].draining) {
		refuse_mig(req, h, vmname, to, fence, 409, "conflict",
			   "the destination is draining");
	} else {
		if (S.nmigs == S.capmigs) {
			S.capmigs = S.capmigs ? S.capmigs * 2 : 64;
			S.migs = realloc(S.migs, S.capmigs * sizeof(*S.migs));
			if (!S.migs)
				die("out of memory");
		}
		m = &S.migs[S.nmigs];
		memset(m, 0, sizeof(*m));
		snprintf(m->id, sizeof(m->id), "%016" PRIx64 "%016" PRIx64,
			 rng_next(), (uint64_t)S.nmigs);
		m->vm = (unsigned)vi;
		m->from = (int)(h - S.hosts);
		m->to = ti;
		m->start_ms = now_ms();
		m->end_ms = m->start_ms + S.mig_ms;
		m->fence = fence;
		S.vms[vi].mig = (int)S.nmigs++;
		log_line("{\"ms\":%" PRIu64 ",\"op\":\"migrate\",\"host\":"
			 "\"%s\",\"vm\":\"%s\",\"to\":\"%s\",\"fence\":%" PRId64
			 ",\"result\":\"accepted\",\"id\":\"%s\"}",
			 m->start_ms, h->name, vmname, to, fence, m->id);
		mig_json(req, m);
	}
	json_decref(body);
}

static void fence_route(struct evhttp_request *req, struct shost *h)
{
	json_t *body = read_body(req);
	json_t *jf = json_object_get(body, "fence");
	int64_t fence = json_is_integer(jf) ? json_integer_value(jf) : 0;
	bool ok = fence > 0 && fence_ok(h, fence);
	struct evbuffer *b = evbuffer_new();

	log_line("{\"ms\":%" PRIu64 ",\"op\":\"fence\",\"host\":\"%s\","
		 "\"fence\":%" PRId64 ",\"result\":\"%s\"}",
		 now_ms(), h->name, fence, ok ? "accepted" : "refused");
	if (!ok) {
		reply_error(req, fence > 0 ? 409 : 400,
			    fence > 0 ? "conflict" : "invalid_request",
			    "fencing token older than the highest seen: a "
			    "newer controller leads");
	} else {
		evbuffer_add_printf(b, "{\"fence\":%" PRId64 "}", h->fence);
		reply(req, 200, b);
	}
	if (b)
		evbuffer_free(b);
	json_decref(body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	SSL *ssl = bufferevent_openssl_get_ssl(
		evhttp_connection_get_bufferevent(conn));
	struct shost *h = ssl ? SSL_get_app_data(ssl) : NULL;
	const char *path = evhttp_request_get_uri(req);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	char vm[NAME_LEN + 1];

	(void)arg;
	if (!h) {
		reply_error(req, 421, "misdirected", "no host named by SNI");
		return;
	}
	h->requests++;
	if (cmd == EVHTTP_REQ_GET && !strcmp(path, "/v1/load")) {
		load(req, h);
	} else if (cmd == EVHTTP_REQ_GET &&
		   !strncmp(path, "/v1/migrations/", 15)) {
		for (size_t i = 0; i < S.nmigs; i++)
			if (!strcmp(S.migs[i].id, path + 15) &&
			    &S.hosts[S.migs[i].from] == h) {
				mig_json(req, &S.migs[i]);
				return;
			}
		reply_error(req, 404, "not_found", "no such migration");
	} else if (cmd == EVHTTP_REQ_POST &&
		   (!strcmp(path, "/v1/host/drain") ||
		    !strcmp(path, "/v1/host/undrain"))) {
		struct evbuffer *b = evbuffer_new();

		h->draining = path[9] == 'd';
		log_line("{\"ms\":%" PRIu64 ",\"op\":\"%s\",\"host\":\"%s\"}",
			 now_ms(), path + 9, h->name);
		evbuffer_add_printf(b, "{\"host\":\"%s\",\"draining\":%s}",
				    h->name, h->draining ? "true" : "false");
		reply(req, 200, b);
		evbuffer_free(b);
	} else if (cmd == EVHTTP_REQ_POST && !strcmp(path, "/v1/host/fence")) {
		fence_route(req, h);
	} else if (cmd == EVHTTP_REQ_POST &&
		   sscanf(path, "/v1/vms/%32[a-z0-9._-]/migrate", vm) == 1 &&
		   strlen(path) == strlen("/v1/vms//migrate") + strlen(vm)) {
		migrate(req, h, vm);
	} else {
		reply_error(req, 404, "not_found", "no such route");
	}
}

/* ---- TLS ---- */

/* The host named by SNI shows its own certificate. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	int i = name ? host_index(name) : -1;

	(void)arg;
	if (i < 0 || SSL_use_certificate(ssl, S.hosts[i].cert) != 1 ||
	    SSL_use_PrivateKey(ssl, S.key) != 1) {
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	SSL_set_app_data(ssl, &S.hosts[i]);
	S.handshakes++;
	return SSL_TLSEXT_ERR_OK;
}

static struct bufferevent *on_bev(struct event_base *base, void *arg)
{
	SSL *ssl = SSL_new(S.ctx);

	(void)arg;
	if (!ssl)
		return NULL;
	SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	return bufferevent_openssl_socket_new(base, -1, ssl,
					      BUFFEREVENT_SSL_ACCEPTING,
					      BEV_OPT_CLOSE_ON_FREE);
}

static X509 *load_pem_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *c = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;

	if (f)
		fclose(f);
	return c;
}

static EVP_PKEY *load_pem_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;

	if (f)
		fclose(f);
	return k;
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!ext || !X509_add_ext(cert, ext, -1))
		die("cannot add a certificate extension");
	X509_EXTENSION_free(ext);
}

/* Certificates for every host, from the CA in pki_dir. */
static void issue_certs(const char *pki_dir, const char *address)
{
	char path[4096], san[256];
	X509 *ca;
	EVP_PKEY *cakey;

	snprintf(path, sizeof(path), "%s/ca.crt", pki_dir);
	ca = load_pem_cert(path);
	snprintf(path, sizeof(path), "%s/ca.key", pki_dir);
	cakey = load_pem_key(path);
	if (!ca || !cakey)
		die("cannot read the CA (ca.crt, ca.key)");
	S.key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!S.key)
		die("cannot make a key");
	for (size_t i = 0; i < S.nhosts; i++) {
		X509 *c = X509_new();
		X509_NAME *n;

		if (!c || !X509_set_version(c, 2) ||
		    !ASN1_INTEGER_set_uint64(X509_get_serialNumber(c),
					     rng_next() >> 1) ||
		    !X509_gmtime_adj(X509_getm_notBefore(c), -300) ||
		    !X509_gmtime_adj(X509_getm_notAfter(c), 86400L * 30) ||
		    !X509_set_pubkey(c, S.key) ||
		    !X509_set_issuer_name(c, X509_get_subject_name(ca)))
			die("cannot make a certificate");
		n = X509_get_subject_name(c);
		if (!X509_NAME_add_entry_by_txt(
			    n, "CN", MBSTRING_ASC,
			    (const unsigned char *)S.hosts[i].name, -1, -1, 0))
			die("cannot name a certificate");
		snprintf(san, sizeof(san), "IP:%s,DNS:%s", address,
			 S.hosts[i].name);
		add_ext(c, ca, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(c, ca, NID_key_usage, "critical,digitalSignature");
		add_ext(c, ca, NID_ext_key_usage, "serverAuth,clientAuth");
		add_ext(c, ca, NID_subject_alt_name, san);
		if (!X509_sign(c, cakey, EVP_sha256()))
			die("cannot sign a certificate");
		S.hosts[i].cert = c;
	}
	X509_free(ca);
	EVP_PKEY_free(cakey);
}

static void make_ctx(const char *pki_dir)
{
	char path[4096];

	S.ctx = SSL_CTX_new(TLS_server_method());
	snprintf(path, sizeof(path), "%s/ca.crt", pki_dir);
	if (!S.ctx || !SSL_CTX_set_min_proto_version(S.ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(S.ctx, "TLS_AES_256_GCM_SHA384") ||
	    SSL_CTX_load_verify_locations(S.ctx, path, NULL) != 1)
		die("cannot make the TLS context");
	SSL_CTX_set_options(S.ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(S.ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_verify(S.ctx,
			   SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
			   NULL);
	SSL_CTX_set_tlsext_servername_callback(S.ctx, on_servername);
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
