/* Unit tests of the migration data plane: HELLO/ACK encoding and binding,
 * options, and the relay (plaintext and TLS over socketpairs, as a stream
 * and with frames). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "migrate_int.h"
#include "tls.h"
#include "attest.h"
#include "policy.h"
#include "../../guest/memload/pattern.h"

static const uint8_t KEY[MIG_KEY_LEN] = { 1, 2, 3, 4, 5 };
static const uint8_t EXP[MIG_EXPORTER_LEN] = { 9, 8, 7 };

static void hello_of(uint8_t out[MIG_HELLO_LEN], uint16_t chan)
{
	struct mig_hello h = { .flags = 0, .channel = chan, .nchan = 3 };

	memset(h.session, 0xab, sizeof(h.session));
	mig_hello_build(out, &h, KEY, EXP);
}

static void test_hello_roundtrip(void **state)
{
	uint8_t msg[MIG_HELLO_LEN];
	struct mig_hello h;
	struct ferr err = { 0 };

	(void)state;
	hello_of(msg, 2);
	assert_memory_equal(msg, "FMIG", 4);
	assert_int_equal(mig_hello_parse(msg, &h, &err), 0);
	assert_int_equal(h.channel, 2);
	assert_int_equal(h.nchan, 3);
	assert_int_equal(h.session[0], 0xab);
	assert_true(mig_hello_mac_ok(msg, KEY, EXP));
}

/* Any changed byte must be refused, by the parser or by the MAC. */
static void test_hello_tamper(void **state)
{
	uint8_t key2[MIG_KEY_LEN] = { 1, 2, 3, 4, 6 };
	uint8_t exp2[MIG_EXPORTER_LEN] = { 9, 8, 6 };
	uint8_t msg[MIG_HELLO_LEN];
	struct mig_hello h;
	struct ferr err;

	(void)state;
	for (size_t i = 0; i < MIG_HELLO_LEN; i++) {
		hello_of(msg, 1);
		msg[i] ^= 0x40;
		if (mig_hello_parse(msg, &h, &err) == 0 &&
		    mig_hello_mac_ok(msg, KEY, EXP))
			fail_msg("flipping byte %zu was not detected", i);
	}
	hello_of(msg, 1);
	assert_false(mig_hello_mac_ok(msg, key2, EXP));  /* other session */
	assert_false(mig_hello_mac_ok(msg, KEY, exp2));  /* other connection */
	/* structural refusals name the problem */
	hello_of(msg, 1);
	msg[MIG_HELLO_OFF_VERSION] = 2;
	assert_int_equal(mig_hello_parse(msg, &h, &err), -1);
	assert_non_null(strstr(err.msg, "version"));
	hello_of(msg, 1);
	msg[MIG_HELLO_OFF_CHANNEL] = 3; /* channel 3 of 3 */
	assert_int_equal(mig_hello_parse(msg, &h, &err), -1);
	assert_non_null(strstr(err.msg, "bad channel"));
	hello_of(msg, 1);
	msg[MIG_HELLO_OFF_FLAGS] = 0x80;
	assert_int_equal(mig_hello_parse(msg, &h, &err), -1);
	assert_non_null(strstr(err.msg, "flags"));
}

static void test_ack(void **state)
{
	uint8_t ack[MIG_ACK_LEN];
	struct ferr err = { 0 };

	(void)state;
	mig_ack_build(ack, MIG_ACK_OK, 1, KEY, EXP);
	assert_int_equal(mig_ack_check(ack, 1, KEY, EXP, &err), 0);
	assert_int_equal(mig_ack_check(ack, 2, KEY, EXP, &err), -1);
	ack[MIG_ACK_OFF_MAC] ^= 1;
	assert_int_equal(mig_ack_check(ack, 1, KEY, EXP, &err), -1);
	assert_non_null(strstr(err.msg, "session key"));
	mig_ack_build(ack, MIG_ACK_REFUSED, 1, NULL, NULL);
	assert_int_equal(mig_ack_check(ack, 1, KEY, EXP, &err), -1);
	assert_non_null(strstr(err.msg, "refused"));
}

static void test_hex(void **state)
{
	uint8_t in[4] = { 0x00, 0x1f, 0xa0, 0xff }, out[4];
	char hex[9];

	(void)state;
	hex_encode(in, 4, hex);
	assert_string_equal(hex, "001fa0ff");
	assert_int_equal(hex_decode("001FA0ff", out, 4), 0);
	assert_memory_equal(in, out, 4);
	assert_int_equal(hex_decode("001fa0f", out, 4), -1);
	assert_int_equal(hex_decode("001fa0fg", out, 4), -1);
	assert_int_equal(hex_decode("001fa0ff00", out, 4), -1);
}

static int opts(const char *text, struct mig_opts *o, struct ferr *err)
{
	json_t *j = json_loads(text, 0, NULL);
	int rc;

	assert_non_null(j);
	rc = mig_opts_from_json(j, o, err);
	json_decref(j);
	return rc;
}

static void test_opts(void **state)
{
	static const struct {
		const char *text, *needle;
	} bad[] = {
		{ "{}", "migration.to" },
		{ "{\"to\": \"b\"}", "migration.address" },
		{ "{\"to\": \"b\", \"address\": \"host-b\"}", "migration.address" },
		{ "{\"to\": \"B!\", \"address\": \"127.0.0.3\"}", "migration.to" },
		{ "{\"to\": \"b\", \"address\": \"127.0.0.3\", \"mode\": \"fast\"}",
		  "migration.mode" },
		{ "{\"to\": \"b\", \"address\": \"127.0.0.3\", \"channels\": 16}",
		  "migration.channels" },
		{ "{\"to\": \"b\", \"address\": \"127.0.0.3\", \"max_downtime_ms\": "
		  "0}",
		  "max_downtime_ms" },
		{ "{\"to\": \"b\", \"address\": \"127.0.0.3\", \"insecure\": 1}",
		  "insecure" },
		{ "{\"to\": \"b\", \"address\": \"127.0.0.3\", \"x\": 1}",
		  "unknown field" },
		{ "{\"to\": \"b\", \"address\": \"127.0.0.3\", \"compress\": "
		  "\"lz4\"}",
		  "migration.compress" },
		{ "{\"to\": \"b\", \"address\": \"127.0.0.3\", \"compress\": 1}",
		  "compress" },
		{ "{\"to\": \"b\", \"address\": \"127.0.0.3\", \"fence\": 0}",
		  "migration.fence" },
		{ "{\"to\": \"b\", \"address\": \"127.0.0.3\", \"fence\": "
		  "\"7\"}",
		  "migration.fence" },
		{ "{\"to\": \"b\", \"address\": \"127.0.0.3\", \"fence\": -1}",
		  "migration.fence" },
	};
	struct mig_opts o;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(opts("{\"to\": \"host-b\", \"address\": \"127.0.0.3\", "
			      "\"port\": 9443, \"mode\": \"offline\", "
			      "\"bandwidth_mibps\": 8, \"channels\": 4, "
			      "\"insecure\": true}",
			      &o, &err),
			 0);
	assert_string_equal(o.to, "host-b");
	assert_int_equal(o.port, 9443);
	assert_int_equal(o.mode, MIG_OFFLINE);
	assert_int_equal(o.bandwidth_mibps, 8);
	assert_int_equal(o.channels, 4);
	assert_true(o.insecure);
	assert_int_equal(o.max_downtime_ms, 0); /* the VM's setting */
	assert_int_equal(o.compress, MIG_COMPRESS_AUTO);
	assert_int_equal(o.fence, 0);
	assert_int_equal(opts("{\"to\": \"b\", \"address\": \"127.0.0.3\", "
			      "\"compress\": \"off\", \"channels\": 1}",
			      &o, &err),
			 0);
	assert_int_equal(o.compress, MIG_COMPRESS_OFF);
	assert_int_equal(o.channels, 1);
	assert_int_equal(opts("{\"to\": \"b\", \"address\": \"127.0.0.3\", "
			      "\"fence\": 9223372036854775807}",
			      &o, &err),
			 0);
	assert_int_equal(o.fence, INT64_MAX);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (opts(bad[i].text, &o, &err) != -1)
			fail_msg("case %zu accepted", i);
		if (!strstr(err.msg, bad[i].needle))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg,
				 bad[i].needle);
	}
}

/* The fencing rule: lower tokens refused, higher ones kept across a
 * restart (a new load), a broken file refused at load. */
static void test_fence(void **state)
{
	char dir[] = "/tmp/ferry-fence-XXXXXX", path[64];
	struct fence f, g;
	struct ferr err = { 0 };
	FILE *fp;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(fence_load(&f, dir, &err), 0);
	assert_int_equal(f.highest, 0);
	assert_int_equal(fence_check(&f, 5, &err), 0);
	assert_int_equal(fence_check(&f, 5, &err), 0); /* the same leader */
	assert_int_equal(fence_check(&f, 4, &err), -1);
	assert_int_equal(err.code, FERR_CONFLICT);
	assert_non_null(strstr(err.msg, "older than 5"));
	assert_int_equal(fence_check(&f, 12, &err), 0);
	assert_int_equal(fence_load(&g, dir, &err), 0);
	assert_int_equal(g.highest, 12);
	assert_int_equal(fence_check(&g, 11, &err), -1);
	snprintf(path, sizeof(path), "%s/fence", dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs("12x\n", fp);
	fclose(fp);
	assert_int_equal(fence_load(&g, dir, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	unlink(path);
	rmdir(dir);
}

/* ---- the relay ---- */

struct relay_side {
	int local;
	struct mig_conn remote;
	atomic_bool *stop;
	struct relay_counters ctr;
	int rc;
	struct ferr err;
};

static void *relay_thread(void *arg)
{
	struct relay_side *s = arg;

	s->rc = relay_run(s->local, &s->remote, s->stop, &s->ctr, &s->err);
	return NULL;
}

/* The test stream: pseudo-random bytes, or (text) memload's text pages,
 * which compress about 3:1. */
static bool g_text;
static struct pattern_text g_vocab;

static uint8_t stream_byte(unsigned *x, size_t pos)
{
	if (g_text) {
		uint64_t x8 = pattern_text_seed(pos / 8);

		(void)x;
		return (uint8_t)(pattern_text_next(&x8, &g_vocab) >>
				 (8 * (pos % 8)));
	}
	*x = *x * 1103515245u + 12345u;
	return (uint8_t)(*x >> 16);
}

/* Write len bytes of the stream to fd, then half-close. */
struct writer {
	int fd;
	size_t len;
	unsigned seed;
};

static void *writer_thread(void *arg)
{
	struct writer *w = arg;
	uint8_t buf[65536];
	size_t sent = 0;
	unsigned x = w->seed;

	while (sent < w->len) {
		size_t n = w->len - sent < sizeof(buf) ? w->len - sent
						       : sizeof(buf);

		for (size_t i = 0; i < n; i++)
			buf[i] = stream_byte(&x, sent + i);
		if (write(w->fd, buf, n) != (ssize_t)n)
			break;
		sent += n;
	}
	shutdown(w->fd, SHUT_WR);
	return NULL;
}

/* Read everything from fd and check it against the writer's stream. */
static size_t read_check(int fd, size_t len, unsigned seed)
{
	uint8_t buf[65536];
	size_t got = 0;
	unsigned x = seed;
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != stream_byte(&x, got + (size_t)i))
				fail_msg("byte %zu differs", got + (size_t)i);
		}
		got += (size_t)n;
	}
	assert_int_equal(got, len);
	return got;
}

/* QEMU-a <-> relay A <-> network <-> relay B <-> QEMU-b, both directions
 * at once, then half-closes; over TLS when ctxs are given; A sends frames
 * (B decodes them) unless z is RELAY_Z_OFF. Returns the bytes A sent. */
static uint64_t run_pair(SSL_CTX *cctx, SSL_CTX *sctx, enum relay_z z)
{
	enum { UP = 3 * 1024 * 1024 + 17, DOWN = 1024 * 1024 + 5 };
	int qa[2], qb[2], net[2];
	atomic_bool stop = false;
	struct relay_side a = { .stop = &stop }, b = { .stop = &stop };
	struct writer wa, wb;
	pthread_t ta, tb, twa, twb;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, qa), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, qb), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, net), 0);
	a.local = qa[1];
	a.remote.fd = net[0];
	a.remote.z = z;
	b.local = qb[1];
	b.remote.fd = net[1];
	b.remote.z = z == RELAY_Z_OFF ? RELAY_Z_OFF : RELAY_Z_DECODE;
	if (cctx) {
		a.remote.ssl = SSL_new(cctx);
		b.remote.ssl = SSL_new(sctx);
		SSL_set_fd(a.remote.ssl, net[0]);
		SSL_set_fd(b.remote.ssl, net[1]);
		SSL_set_connect_state(a.remote.ssl);
		SSL_set_accept_state(b.remote.ssl);
	}
	pthread_create(&ta, NULL, relay_thread, &a);
	pthread_create(&tb, NULL, relay_thread, &b);
	wa = (struct writer){ .fd = qa[0], .len = UP, .seed = 1 };
	wb = (struct writer){ .fd = qb[0], .len = DOWN, .seed = 2 };
	pthread_create(&twa, NULL, writer_thread, &wa);
	pthread_create(&twb, NULL, writer_thread, &wb);
	read_check(qb[0], UP, 1);
	read_check(qa[0], DOWN, 2);
	pthread_join(twa, NULL);
	pthread_join(twb, NULL);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	if (a.rc || b.rc)
		fail_msg("relay failed: %s / %s", a.err.msg, b.err.msg);
	if (z == RELAY_Z_OFF)
		assert_int_equal(atomic_load(&a.ctr.to_remote), UP);
	/* what A sent is what B received; the return direction is a stream */
	assert_int_equal(atomic_load(&a.ctr.to_remote),
			 atomic_load(&b.ctr.from_remote));
	assert_int_equal(atomic_load(&b.ctr.to_remote), DOWN);
	if (cctx) {
		SSL_free(a.remote.ssl);
		SSL_free(b.remote.ssl);
	}
	for (int i = 0; i < 2; i++) {
		close(qa[i]);
		close(qb[i]);
		close(net[i]);
	}
	return atomic_load(&a.ctr.to_remote);
}

static void test_relay_plain(void **state)
{
	(void)state;
	run_pair(NULL, NULL, RELAY_Z_OFF);
}

static char g_pki[64];

/* The relay over TLS, with contexts from the test PKI. */
static uint64_t run_pair_tls(enum relay_z z)
{
	char ca[128], crt[128], key[128];
	struct ferr err = { 0 };
	SSL_CTX *c, *s;
	uint64_t sent;

	snprintf(ca, sizeof(ca), "%s/ca.crt", g_pki);
	snprintf(crt, sizeof(crt), "%s/hosts/h.crt", g_pki);
	snprintf(key, sizeof(key), "%s/hosts/h.key", g_pki);
	c = tls_client_ctx_new(ca, crt, key, &err);
	s = tls_server_ctx_new(ca, crt, key, &err);
	assert_non_null(c);
	assert_non_null(s);
	sent = run_pair(c, s, z);
	SSL_CTX_free(c);
	SSL_CTX_free(s);
	return sent;
}

static void test_relay_tls(void **state)
{
	(void)state;
	run_pair_tls(RELAY_Z_OFF);
}

/* Frames: compressible bytes shrink on the wire and arrive intact (plain
 * and TLS); incompressible ones go as raw frames, with 12 bytes of header
 * per frame at most. */
static void test_relay_frames(void **state)
{
	enum { UP = 3 * 1024 * 1024 + 17 };
	uint64_t sent;

	(void)state;
	g_text = true;
	sent = run_pair(NULL, NULL, RELAY_Z_ON);
	assert_true(sent * 2 < UP);
	sent = run_pair_tls(RELAY_Z_ON);
	assert_true(sent * 2 < UP);
	/* auto: correct whether or not it compresses */
	run_pair_tls(RELAY_Z_AUTO);
	g_text = false;
	sent = run_pair_tls(RELAY_Z_ON);
	assert_true(sent >= UP);
	assert_true(sent <= UP + (UP / 4096 + 1) * MIG_FRAME_HDR_LEN);
	g_text = false;
}

/* A relay whose peer resets mid-stream fails; stop ends it too. */
static void test_relay_errors(void **state)
{
	int q[2], net[2];
	atomic_bool stop = false;
	struct relay_side a = { .stop = &stop };
	pthread_t t;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, q), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, net), 0);
	a.local = q[1];
	a.remote.fd = net[0];
	pthread_create(&t, NULL, relay_thread, &a);
	atomic_store(&stop, true);
	pthread_join(t, NULL);
	assert_int_equal(a.rc, -1);
	assert_non_null(strstr(a.err.msg, "cancelled"));
	for (int i = 0; i < 2; i++) {
		close(q[i]);
		close(net[i]);
	}
}

static int setup_pki(void **state)
{
	const char *ips[] = { "127.0.0.1", NULL };
	struct ferr err = { 0 };

	(void)state;
	pattern_text_init(&g_vocab);
	snprintf(g_pki, sizeof(g_pki), "/tmp/ferry-unit-XXXXXX");
	if (!mkdtemp(g_pki))
		return -1;
	if (pki_init(g_pki, "unit", 1, &err) < 0 ||
	    pki_issue(g_pki, PKI_HOST, "h", ips, NULL, 1, &err) < 0) {
		print_error("pki: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int teardown_pki(void **state)
{
	struct ferr err;

	(void)state;
	return rmtree(g_pki, &err);
}

/* Finished records counted for /v1/metrics: outcomes per role, the
 * duration and downtime buckets (an observation on a bound falls in that
 * bucket), bytes; recovered records count only as ended. */
static void test_stats_note(void **state)
{
	struct migrator *m = calloc(1, sizeof(*m));
	struct mig_stats *s;
	json_t *recs[] = {
		json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "role", "source",
			  "outcome", "completed", "total_ms", 1000,
			  "downtime_ms", 10, "ram_bytes", 1000, "wire_bytes",
			  1100),
		json_pack("{s:s, s:s, s:I, s:I}", "role", "source", "outcome",
			  "completed", "total_ms", 1001, "downtime_ms", 11),
		json_pack("{s:s, s:s, s:I}", "role", "source", "outcome",
			  "cancelled", "wire_bytes", 5),
		json_pack("{s:s, s:s}", "role", "source", "outcome", "failed"),
		json_pack("{s:s, s:s, s:I, s:I, s:I}", "role", "destination",
			  "outcome", "completed", "started_at", 5000,
			  "ended_at", 9000, "wire_bytes", 1200),
		json_pack("{s:s, s:s, s:I, s:I, s:b}", "role", "destination",
			  "outcome", "completed", "started_at", 0, "ended_at",
			  99999999, "recovered", 1),
		json_pack("{s:s, s:s}", "role", "destination", "outcome",
			  "bogus"),
	};

	(void)state;
	assert_non_null(m);
	for (size_t i = 0; i < sizeof(recs) / sizeof(recs[0]); i++) {
		assert_non_null(recs[i]);
		mig_stats_note(m, recs[i]);
		json_decref(recs[i]);
	}
	s = &m->stats;
	assert_int_equal(s->ended[MIG_STAT_SOURCE][MIG_STAT_COMPLETED], 2);
	assert_int_equal(s->ended[MIG_STAT_SOURCE][MIG_STAT_CANCELLED], 1);
	assert_int_equal(s->ended[MIG_STAT_SOURCE][MIG_STAT_FAILED], 1);
	assert_int_equal(s->ended[MIG_STAT_DEST][MIG_STAT_COMPLETED], 2);
	assert_int_equal(s->ended[MIG_STAT_DEST][MIG_STAT_FAILED], 1);
	/* durations: 1000 ms in the 1 s bucket, 1001 ms in the 2 s one */
	assert_int_equal(s->duration[MIG_STAT_SOURCE].counts[0], 1);
	assert_int_equal(s->duration[MIG_STAT_SOURCE].counts[1], 1);
	assert_int_equal(s->duration[MIG_STAT_SOURCE].sum_ms, 2001);
	/* the destination's 4 s (5 s bucket); the recovered one not */
	assert_int_equal(s->duration[MIG_STAT_DEST].counts[2], 1);
	assert_int_equal(s->duration[MIG_STAT_DEST].sum_ms, 4000);
	assert_int_equal(s->downtime.counts[0], 1); /* 10 ms: le 0.01 */
	assert_int_equal(s->downtime.counts[1], 1); /* 11 ms: le 0.025 */
	assert_int_equal(s->downtime.sum_ms, 21);
	assert_int_equal(s->ram_bytes, 1000);
	assert_int_equal(s->wire_bytes[MIG_STAT_SOURCE], 1105);
	assert_int_equal(s->wire_bytes[MIG_STAT_DEST], 1200);
	free(m);
}

/* A VM definition with constraints, signed by key (NULL: a zero
 * signature). */
static void signed_def(struct vm_def *d, const char *cons, EVP_PKEY *key)
{
	char text[1024];
	uint8_t dg[ATTEST_DIGEST_LEN];
	struct ferr err = { 0 };
	json_t *o, *tbs;

	snprintf(text, sizeof(text),
		 "{\"name\": \"vm1\", \"uuid\": "
		 "\"5f0c3c1e-8d1a-4c47-9a55-0c6f1e0b7a21\", \"memory_mib\": 64, "
		 "\"kernel\": \"k\", \"constraints\": {%s%s\"signature\": "
		 "\"%0128d\"}}",
		 cons, cons[0] ? ", " : "", 0);
	o = json_loads(text, 0, NULL);
	assert_non_null(o);
	assert_int_equal(vmdef_from_json(o, d, &err), 0);
	json_decref(o);
	if (!key)
		return;
	tbs = vm_constraints_to_json(&d->cons, false);
	assert_int_equal(attest_constraints_digest(d->uuid, tbs, dg, &err), 0);
	assert_int_equal(attest_sign(key, dg, d->cons.signature, &err), 0);
	json_decref(tbs);
}

static void test_constraints(void **state)
{
	static const char pol[] =
		"{\"roles\": {\"admin\": [\"alice\"], \"operator\": [\"bob\"], "
		"\"host\": [\"host-a\", \"host-b\"]}, "
		"\"hosts\": {\"host-b\": {\"labels\": {\"site\": \"eu\", "
		"\"tier\": \"gold\"}}}, \"rules\": []}";
	char dir[] = "/tmp/ferry-cons-XXXXXX", path[256];
	struct ferryd_config cfg = { 0 };
	struct migrator m = { .cfg = &cfg };
	struct policy *p = NULL;
	struct vm_def d;
	struct ferr err = { 0 };
	EVP_PKEY *key;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(attest_authority_create(dir, &err), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, ATTEST_AUTHORITY_KEY);
	key = attest_key_load(path, true, &err);
	assert_non_null(key);
	assert_int_equal(policy_parse(pol, strlen(pol), "p", &p, &err), 0);
	m.deps.policy = &p;
	snprintf(cfg.host, sizeof(cfg.host), "host-b");

	/* the signature: the authority's, over these constraints and uuid */
	signed_def(&d, "\"destinations\": {\"site\": [\"eu\"]}", key);
	assert_int_equal(mig_constraints_verify(dir, &d, &err), 0);
	assert_int_equal(mig_constraints_verify("", &d, &err), -1);
	assert_int_equal(err.code, FERR_FORBIDDEN);
	snprintf(d.cons.dest[0].value, sizeof(d.cons.dest[0].value), "us");
	assert_int_equal(mig_constraints_verify(dir, &d, &err), -1);
	assert_non_null(strstr(err.msg, "not signed by the attestation"));
	signed_def(&d, "\"destinations\": {\"site\": [\"eu\"]}", key);
	d.uuid[0] = '6';  /* another VM's */
	assert_int_equal(mig_constraints_verify(dir, &d, &err), -1);
	signed_def(&d, "\"attest\": \"required\"", NULL);
	assert_int_equal(mig_constraints_verify(dir, &d, &err), -1);

	/* the checks against this host and the requester */
	signed_def(&d, "\"destinations\": {\"site\": [\"us\", \"eu\"], "
		       "\"tier\": [\"gold\"]}", NULL);
	assert_int_equal(mig_constraints_check(&m, &d, "alice", false, &err), 0);
	signed_def(&d, "\"destinations\": {\"site\": [\"us\"]}", NULL);
	assert_int_equal(mig_constraints_check(&m, &d, "alice", false, &err),
			 -1);
	assert_int_equal(err.code, FERR_FORBIDDEN);
	assert_non_null(strstr(err.msg, "its label site is eu, not one the VM "
					"allows"));
	signed_def(&d, "\"destinations\": {\"rack\": [\"r1\"]}", NULL);
	assert_int_equal(mig_constraints_check(&m, &d, "alice", false, &err),
			 -1);
	assert_non_null(strstr(err.msg, "rack is unset"));
	signed_def(&d, "\"attest\": \"required\"", NULL);
	assert_int_equal(mig_constraints_check(&m, &d, "alice", false, &err),
			 -1);
	assert_int_equal(mig_constraints_check(&m, &d, "alice", true, &err), 0);
	signed_def(&d, "\"roles\": [\"operator\"]", NULL);
	assert_int_equal(mig_constraints_check(&m, &d, "bob", false, &err), 0);
	assert_int_equal(mig_constraints_check(&m, &d, "alice", false, &err),
			 -1);
	assert_non_null(strstr(err.msg, "refuse requester alice"));
	/* another host's labels */
	snprintf(cfg.host, sizeof(cfg.host), "host-a");
	signed_def(&d, "\"destinations\": {\"site\": [\"eu\"]}", NULL);
	assert_int_equal(mig_constraints_check(&m, &d, "alice", false, &err),
			 -1);

	EVP_PKEY_free(key);
	policy_free(p);
	snprintf(path, sizeof(path), "rm -rf %s", dir);
	assert_int_equal(system(path), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_roundtrip),
		cmocka_unit_test(test_hello_tamper),
		cmocka_unit_test(test_ack),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_opts),
		cmocka_unit_test(test_fence),
		cmocka_unit_test(test_relay_plain),
		cmocka_unit_test(test_relay_tls),
		cmocka_unit_test(test_relay_frames),
		cmocka_unit_test(test_relay_errors),
		cmocka_unit_test(test_constraints),
		cmocka_unit_test(test_stats_note),
	};
	return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}
