/* etcd_check - scenarios of the etcd client against a real cluster, driven
 * by tests/system/test_etcd.py (which starts the cluster with etcdlib).
 *
 *   etcd_check FERRYD_JSON SCENARIO [ARG]
 *
 * The client comes from the "etcd" section of FERRYD_JSON. A scenario
 * checks every outcome itself: it prints "name=value" lines (figures the
 * test asserts on or reports) and exits 0, or prints "FAIL: ..." to stderr
 * and exits 1. When it needs a fault it prints "FAULT <what>" and waits
 * for a line on stdin saying the fault was made.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "etcd.h"

static struct etcd_config cfg;

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "FAIL (line %d, %s): ", __LINE__,      \
				#cond);                                        \
			fprintf(stderr, __VA_ARGS__);                          \
			fprintf(stderr, "\n");                                 \
			exit(1);                                               \
		}                                                              \
	} while (0)
#define OK(call) CHECK((call) == 0, "%s", err.msg)

static struct etcd *client(void)
{
	struct ferr err = { 0 };
	struct etcd *e = etcd_open(&cfg, &err);

	CHECK(e, "%s", err.msg);
	return e;
}

/* Ask the test for a fault and wait until it is made. */
static void fault(const char *what)
{
	char line[64];

	printf("FAULT %s\n", what);
	fflush(stdout);
	CHECK(fgets(line, sizeof(line), stdin), "no answer to FAULT %s", what);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static void put_str(struct etcd *e, const char *k, const char *v,
		    int64_t lease)
{
	struct ferr err = { 0 };

	OK(etcd_put(e, k, v, strlen(v), lease, 0, NULL, &err));
}

static bool exists(struct etcd *e, const char *k)
{
	struct ferr err = { 0 };
	struct etcd_kv kv = { 0 };
	bool found;

	OK(etcd_get(e, k, 0, &kv, &found, NULL, &err));
	etcd_kv_clear(&kv);
	return found;
}

static int scenario_kv(struct etcd *e)
{
	static unsigned char big[512 * 1024];
	const unsigned char bin[] = { 0, 1, 0xff, '\n', '"', 0 };
	struct etcd_kv kv = { 0 };
	struct etcd_kvs r = { 0 };
	struct ferr err = { 0 };
	int64_t rev1, rev2, n;
	bool found;

	OK(etcd_put(e, "kv/a", "1", 1, 0, 0, &rev1, &err));
	OK(etcd_get(e, "kv/a", 0, &kv, &found, NULL, &err));
	CHECK(found && kv.value_len == 1 && kv.value[0] == '1' &&
		      kv.create_revision == rev1 && kv.mod_revision == rev1 &&
		      kv.version == 1 && kv.lease == 0 &&
		      !strcmp(kv.key, "kv/a"),
	      "get after put: %s v%" PRId64, kv.key, kv.version);
	etcd_kv_clear(&kv);
	OK(etcd_put(e, "kv/a", "22", 2, 0, 0, &rev2, &err));
	OK(etcd_get(e, "kv/a", 0, &kv, &found, NULL, &err));
	CHECK(found && kv.version == 2 && kv.create_revision == rev1 &&
		      kv.mod_revision == rev2 && rev2 > rev1 &&
		      !memcmp(kv.value, "22", 3),
	      "second put");
	etcd_kv_clear(&kv);
	OK(etcd_get(e, "kv/missing", 0, &kv, &found, NULL, &err));
	CHECK(!found, "a missing key was found");
	OK(etcd_put(e, "kv/bin", bin, sizeof(bin), 0, 0, NULL, &err));
	OK(etcd_get(e, "kv/bin", 0, &kv, &found, NULL, &err));
	CHECK(found && kv.value_len == sizeof(bin) &&
		      !memcmp(kv.value, bin, sizeof(bin)),
	      "binary value");
	etcd_kv_clear(&kv);
	OK(etcd_put(e, "kv/empty", "", 0, 0, 0, NULL, &err));
	OK(etcd_get(e, "kv/empty", 0, &kv, &found, NULL, &err));
	CHECK(found && kv.value_len == 0 && kv.value[0] == 0, "empty value");
	etcd_kv_clear(&kv);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 7 + i / 251);
	OK(etcd_put(e, "kv/big", big, sizeof(big), 0, 0, NULL, &err));
	OK(etcd_get(e, "kv/big", 0, &kv, &found, NULL, &err));
	CHECK(found && kv.value_len == sizeof(big) &&
		      !memcmp(kv.value, big, sizeof(big)),
	      "512 KiB value");
	etcd_kv_clear(&kv);

	put_str(e, "dir/2", "b", 0);
	put_str(e, "dir/1", "a", 0);
	put_str(e, "dir/3", "c", 0);
	put_str(e, "dirx", "x", 0);
	OK(etcd_range_prefix(e, "dir/", 0, 0, &r, &err));
	CHECK(r.n == 3 && r.count == 3 && !r.more &&
		      !strcmp(r.kv[0].key, "dir/1") &&
		      !strcmp(r.kv[2].key, "dir/3") && r.kv[1].value[0] == 'b',
	      "range dir/: %zu kvs", r.n);
	etcd_kvs_clear(&r);
	OK(etcd_range_prefix(e, "dir/", 2, 0, &r, &err));
	CHECK(r.n == 2 && r.count == 3 && r.more, "range with limit");
	etcd_kvs_clear(&r);
	OK(etcd_range_prefix(e, "", 0, 0, &r, &err));
	CHECK(r.n == 8, "range of the whole prefix: %zu kvs", r.n);
	etcd_kvs_clear(&r);
	OK(etcd_delete(e, "dir/", true, 0, &n, NULL, &err));
	CHECK(n == 3 && !exists(e, "dir/2") && exists(e, "dirx"),
	      "delete prefix: %" PRId64, n);
	OK(etcd_delete(e, "kv/a", false, 0, &n, NULL, &err));
	CHECK(n == 1 && !exists(e, "kv/a"), "delete");
	OK(etcd_delete(e, "kv/a", false, 0, &n, NULL, &err));
	CHECK(n == 0, "delete of a missing key");
	/* refused before anything is sent */
	CHECK(etcd_put(e, "/abs", "v", 1, 0, 0, NULL, &err) < 0 &&
		      err.code == FERR_INVALID,
	      "absolute key accepted");
	CHECK(etcd_put(e, "a b", "v", 1, 0, 0, NULL, &err) < 0 &&
		      err.code == FERR_INVALID,
	      "key with a space accepted");
	CHECK(etcd_put(e, "k", big, ETCD_VALUE_MAX + 1, 0, 0, NULL, &err) < 0 &&
		      err.code == FERR_INVALID,
	      "oversized value accepted");
	printf("kv=ok\n");
	return 0;
}

struct contender {
	struct etcd *e;
	int64_t lease;
	const char *key;
	pthread_barrier_t *start;
	struct etcd_claim claim;
	struct ferr err;
	int rc;
};

static void *contend(void *arg)
{
	struct contender *c = arg;

	pthread_barrier_wait(c->start);
	c->rc = etcd_acquire(c->e, c->key, "me", 2, c->lease, 0, &c->claim,
			     &c->err);
	return NULL;
}

/* Two contenders with their own clients and leases race for each key:
 * exactly one wins, both see the same fencing token; release works only
 * for the holder; fenced writes need the current token. */
static int scenario_cas(void)
{
	struct etcd *e[2] = { client(), client() };
	struct ferr err = { 0 };
	int64_t lease[2], prev_token = 0;
	int wins[2] = { 0, 0 };
	char key[64];
	bool released;

	for (int i = 0; i < 2; i++)
		OK(etcd_lease_grant(e[i], 30, 0, &lease[i], NULL, &err));
	for (int round = 0; round < 20; round++) {
		pthread_barrier_t b;
		struct contender c[2];
		pthread_t t[2];
		int w;

		snprintf(key, sizeof(key), "ha/vm/%02d/owner", round);
		pthread_barrier_init(&b, NULL, 2);
		for (int i = 0; i < 2; i++) {
			c[i] = (struct contender){ .e = e[i], .lease = lease[i],
						   .key = key, .start = &b };
			pthread_create(&t[i], NULL, contend, &c[i]);
		}
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&b);
		CHECK(c[0].rc == 0 && c[1].rc == 0, "acquire: %s / %s",
		      c[0].err.msg, c[1].err.msg);
		CHECK(c[0].claim.won != c[1].claim.won,
		      "round %d: %d and %d won", round, c[0].claim.won,
		      c[1].claim.won);
		CHECK(c[0].claim.revision == c[1].claim.revision &&
			      c[0].claim.revision > prev_token,
		      "tokens %" PRId64 " %" PRId64, c[0].claim.revision,
		      c[1].claim.revision);
		w = c[1].claim.won;
		wins[w]++;
		CHECK(c[!w].claim.holder.lease == lease[w],
		      "the loser sees the winner's lease");
		/* the loser cannot release, the winner can, then the loser
		 * acquires with a larger token */
		OK(etcd_release(e[!w], key, lease[!w], 0, &released, &err));
		CHECK(!released, "the loser released the key");
		OK(etcd_release(e[w], key, lease[w], 0, &released, &err));
		CHECK(released && !exists(e[w], key), "winner's release");
		etcd_kv_clear(&c[w].claim.holder);
		etcd_kv_clear(&c[!w].claim.holder);
		OK(etcd_acquire(e[!w], key, "me", 2, lease[!w], 0, &c[!w].claim,
				&err));
		CHECK(c[!w].claim.won &&
			      c[!w].claim.revision > c[w].claim.revision,
		      "re-acquire after release");
		prev_token = c[!w].claim.revision;
		/* acquiring again what one holds is a win (a retried call) */
		etcd_kv_clear(&c[!w].claim.holder);
		OK(etcd_acquire(e[!w], key, "me", 2, lease[!w], 0, &c[!w].claim,
				&err));
		CHECK(c[!w].claim.won && c[!w].claim.revision == prev_token,
		      "idempotent acquire");
		etcd_kv_clear(&c[!w].claim.holder);
	}
	/* a fenced write: only with the current leader token */
	{
		struct etcd_claim lead;
		struct etcd_txn_result res = { 0 };

		OK(etcd_acquire(e[0], "controller/leader", "c0", 2, lease[0], 0,
				&lead, &err));
		CHECK(lead.won, "leader");
		for (int stale = 1; stale >= 0; stale--) {
			struct etcd_cmp cmp = { .key = "controller/leader",
						.target = ETCD_CMP_CREATE,
						.result = ETCD_EQUAL,
						.number = lead.revision - stale };
			struct etcd_op op = { .type = ETCD_OP_PUT,
					      .key = "cluster/plan",
					      .value = "p", .value_len = 1 };
			struct etcd_txn txn = { &cmp, 1, &op, 1, NULL, 0 };

			OK(etcd_txn(e[0], &txn, 0, &res, &err));
			CHECK(res.succeeded == !stale && exists(e[0], "cluster/plan") == !stale,
			      "fenced write with %s token", stale ? "a stale" : "the");
			etcd_txn_result_clear(&res);
		}
		etcd_kv_clear(&lead.holder);
	}
	printf("cas_rounds=20 wins0=%d wins1=%d\n", wins[0], wins[1]);
	for (int i = 0; i < 2; i++) {
		OK(etcd_lease_revoke(e[i], lease[i], 0, &err));
		etcd_close(e[i]);
	}
	return 0;
}

static int scenario_lease(struct etcd *e)
{
	struct ferr err = { 0 };
	int64_t id, granted, ttl, left;
	uint64_t t0, gone;

	OK(etcd_lease_grant(e, 2, 0, &id, &granted, &err));
	CHECK(granted >= 2, "granted %" PRId64, granted);
	printf("lease_id=%" PRId64 " above_2_53=%d\n", id,
	       id > (INT64_C(1) << 53));
	put_str(e, "lease/k", "v", id);
	/* kept alive for longer than its TTL, the key stays */
	t0 = now_ms();
	while (now_ms() - t0 < 3500) {
		OK(etcd_lease_keepalive(e, id, 0, &ttl, &err));
		CHECK(ttl == granted, "keepalive TTL %" PRId64, ttl);
		sleep_ms(500);
	}
	CHECK(exists(e, "lease/k"), "the key of a kept lease vanished");
	OK(etcd_lease_ttl(e, id, 0, &left, &ttl, &err));
	CHECK(left >= 0 && left <= granted && ttl == granted,
	      "ttl %" PRId64 "/%" PRId64, left, ttl);
	/* without keepalives the key goes with the lease */
	t0 = now_ms();
	while (exists(e, "lease/k") && (sleep_ms(50), true))
		CHECK(now_ms() - t0 < (uint64_t)granted * 1000 + 5000,
		      "the key outlived its lease");
	gone = now_ms() - t0;
	CHECK(etcd_lease_keepalive(e, id, 0, &ttl, &err) < 0 &&
		      err.code == FERR_NOT_FOUND,
	      "keepalive of an expired lease: %s", err.msg);
	CHECK(etcd_lease_ttl(e, id, 0, &left, NULL, &err) < 0 &&
		      err.code == FERR_NOT_FOUND,
	      "ttl of an expired lease: %s", err.msg);
	printf("lease_expired_after_ms=%" PRIu64 "\n", gone);
	return 0;
}

static int scenario_revoke(struct etcd *e)
{
	struct ferr err = { 0 };
	int64_t id;

	OK(etcd_lease_grant(e, 60, 0, &id, NULL, &err));
	put_str(e, "rv/1", "a", id);
	put_str(e, "rv/2", "b", id);
	CHECK(exists(e, "rv/1") && exists(e, "rv/2"), "keys with the lease");
	OK(etcd_lease_revoke(e, id, 0, &err));
	CHECK(!exists(e, "rv/1") && !exists(e, "rv/2"),
	      "keys outlived the revoke");
	OK(etcd_lease_revoke(e, id, 0, &err)); /* already gone: success */
	CHECK(etcd_put(e, "rv/3", "c", 1, id, 0, NULL, &err) < 0 &&
		      err.code == FERR_NOT_FOUND,
	      "put with a revoked lease: %s", err.msg);
	printf("revoke=ok\n");
	return 0;
}

#define WATCH_OPS 60

struct seen {
	pthread_mutex_t mu;
	int64_t rev[WATCH_OPS];
	int type[WATCH_OPS];
	char key[WATCH_OPS][16];
	size_t n;
	bool bad;           /* out of order or more than expected */
	bool ended;
	struct ferr why;
};

static int on_events(void *arg, const struct etcd_event *ev, size_t n)
{
	struct seen *s = arg;

	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < n; i++) {
		if (s->n == WATCH_OPS ||
		    (s->n && ev[i].kv.mod_revision <= s->rev[s->n - 1])) {
			s->bad = true;
			continue;
		}
		s->rev[s->n] = ev[i].kv.mod_revision;
		s->type[s->n] = ev[i].type;
		snprintf(s->key[s->n], sizeof(s->key[0]), "%s", ev[i].kv.key);
		s->n++;
	}
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static void on_ended(void *arg, const struct ferr *why)
{
	struct seen *s = arg;

	pthread_mutex_lock(&s->mu);
	s->ended = true;
	s->why = *why;
	pthread_mutex_unlock(&s->mu);
}

/* Wait a little, then the count of events seen; *ended if the watch
 * ended. */
static size_t seen_count(struct seen *s, bool *ended)
{
	size_t n;

	sleep_ms(10);
	pthread_mutex_lock(&s->mu);
	n = s->n;
	*ended = s->ended;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* A watch from a compacted revision ends with FERR_CONFLICT. */
static void watch_compacted(struct etcd *e, int64_t compacted)
{
	const struct etcd_watch_ops ops = { on_events, on_ended };
	struct seen s = { .mu = PTHREAD_MUTEX_INITIALIZER };
	struct ferr err = { 0 };
	struct etcd_watch *w;
	uint64_t t0 = now_ms();
	bool ended = false;

	w = etcd_watch_start(e, "w/", true, compacted - 1, &ops, &s, &err);
	CHECK(w, "%s", err.msg);
	while (seen_count(&s, &ended) == 0 && !ended)
		CHECK(now_ms() - t0 < 10000, "no end of a compacted watch");
	CHECK(s.why.code == FERR_CONFLICT && s.n == 0, "compacted watch: %s",
	      s.why.msg);
	etcd_watch_stop(w);
}

/* A watch sees every change of w/ exactly once and in order while the
 * member it uses is killed (fault "kill 0") or frozen ("stop 0"). */
static int scenario_watch(struct etcd *e, const char *how)
{
	const struct etcd_watch_ops ops = { on_events, on_ended };
	struct seen s = { .mu = PTHREAD_MUTEX_INITIALIZER };
	struct etcd *wr = client();
	struct ferr err = { 0 };
	int64_t want[WATCH_OPS], rev, d;
	char f[32], key[16];
	struct etcd_watch *w;
	bool ended = false;
	uint64_t t0;

	OK(etcd_put(wr, "w/start", "", 0, 0, 0, &rev, &err));
	printf("compact_at=%" PRId64 "\n", rev);
	fault("compact");
	watch_compacted(e, rev);
	w = etcd_watch_start(e, "w/", true, rev + 1, &ops, &s, &err);
	CHECK(w, "%s", err.msg);
	for (int i = 0; i < WATCH_OPS; i++) {
		if (i == WATCH_OPS / 3) {
			snprintf(f, sizeof(f), "%s 0", how);
			fault(f);
		}
		snprintf(key, sizeof(key), "w/%d", i % 5 == 4 ? i - 1 : i);
		if (i % 5 == 4)
			OK(etcd_delete(wr, key, false, 0, &d, &want[i], &err));
		else
			OK(etcd_put(wr, key, "v", 1, 0, 0, &want[i], &err));
	}
	t0 = now_ms();
	while (seen_count(&s, &ended) < WATCH_OPS && !ended)
		CHECK(now_ms() - t0 < 30000, "watch saw %zu of %d events",
		      s.n, WATCH_OPS);
	CHECK(!ended, "the watch ended: %s", s.why.msg);
	printf("watch_connects=%u\n", etcd_watch_connects(w));
	t0 = now_ms();
	etcd_watch_stop(w);
	printf("watch_stop_ms=%" PRIu64 "\n", now_ms() - t0);
	CHECK(!s.bad, "events out of order or repeated");
	for (int i = 0; i < WATCH_OPS; i++) {
		snprintf(key, sizeof(key), "w/%d", i % 5 == 4 ? i - 1 : i);
		CHECK(s.rev[i] == want[i] && !strcmp(s.key[i], key) &&
			      s.type[i] == (i % 5 == 4 ? ETCD_EVENT_DELETE
						       : ETCD_EVENT_PUT),
		      "event %d: %s@%" PRId64 " instead of %s@%" PRId64, i,
		      s.key[i], s.rev[i], key, want[i]);
	}
	printf("watch_events=%zu\n", s.n);
	etcd_close(wr);
	return 0;
}

/* Kill the member in use: how long the next call takes. */
static int scenario_failover(struct etcd *e)
{
	struct ferr err = { 0 };
	uint64_t t0;

	put_str(e, "fo/k", "before", 0); /* connected to endpoint 0 */
	fault("kill 0");
	t0 = now_ms();
	put_str(e, "fo/k", "after", 0);
	printf("failover_ms=%" PRIu64 "\n", now_ms() - t0);
	for (int i = 0; i < 5; i++)
		put_str(e, "fo/k", "later", 0);
	(void)err;
	return 0;
}

/* Deadlines hold with frozen members. */
static int scenario_stop(struct etcd *e)
{
	struct ferr err = { 0 };
	uint64_t t0, took;
	int64_t id, ttl;

	OK(etcd_lease_grant(e, 30, 0, &id, NULL, &err));
	put_str(e, "st/k", "before", 0);
	fault("stop 0");
	t0 = now_ms();
	put_str(e, "st/k", "after", 0);
	took = now_ms() - t0;
	printf("stopped_member_failover_ms=%" PRIu64 "\n", took);
	CHECK(took < cfg.member_timeout_ms + 2000, "took %" PRIu64, took);
	fault("stop all");
	for (unsigned budget = 700; budget <= 1500; budget += 800) {
		t0 = now_ms();
		CHECK(etcd_put(e, "st/k", "x", 1, 0, t0 + budget, NULL, &err) <
				      0 &&
			      err.code == FERR_TIMEOUT,
		      "put with every member stopped: %s", err.msg);
		took = now_ms() - t0;
		printf("deadline_%u_put_ms=%" PRIu64 "\n", budget, took);
		CHECK(took >= budget && took < budget + 500,
		      "deadline %u held %" PRIu64 " ms", budget, took);
		t0 = now_ms();
		CHECK(etcd_lease_keepalive(e, id, t0 + budget, &ttl, &err) < 0 &&
			      err.code == FERR_TIMEOUT,
		      "keepalive with every member stopped: %s", err.msg);
		took = now_ms() - t0;
		printf("deadline_%u_keepalive_ms=%" PRIu64 "\n", budget, took);
		CHECK(took >= budget && took < budget + 500,
		      "deadline %u held %" PRIu64 " ms", budget, took);
	}
	fault("cont all");
	put_str(e, "st/k", "again", 0);
	printf("stop=ok\n");
	return 0;
}

/* A server with a certificate from another CA is refused. */
static int scenario_rogue(struct etcd *e)
{
	struct ferr err = { 0 };
	uint64_t t0 = now_ms();

	CHECK(etcd_put(e, "rogue/k", "v", 1, 0, t0 + 1500, NULL, &err) < 0 &&
		      err.code == FERR_UNAVAILABLE &&
		      strstr(err.msg, "certificate"),
	      "a put to a foreign server: %s", err.msg);
	printf("rogue_error=%s\n", err.msg);
	return 0;
}

/* After the client's cluster is gone, a member of another cluster (same
 * CA) is refused. */
static int scenario_pin(struct etcd *e)
{
	struct ferr err = { 0 };

	put_str(e, "pin/k", "v", 0);
	fault("kill 0");
	CHECK(etcd_put(e, "pin/k", "w", 1, 0, now_ms() + 1500, NULL, &err) <
			      0 &&
		      err.code == FERR_UNAVAILABLE &&
		      strstr(err.msg, "member of cluster"),
	      "a put to another cluster: %s", err.msg);
	printf("pin_error=%s\n", err.msg);
	return 0;
}

static void report(const char *what, int64_t *us, int n)
{
	qsort(us, (size_t)n, sizeof(*us), cmp_i64);
	printf("%s_median_ms=%.2f %s_p90_ms=%.2f %s_n=%d\n", what,
	       us[n / 2] / 1000.0, what, us[n * 9 / 10] / 1000.0, what, n);
}

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * INT64_C(1000000) + ts.tv_nsec / 1000;
}

/* Latency of a CAS acquire (a txn) and of a keepalive round. */
static int scenario_bench(struct etcd *e, int n)
{
	int64_t *us = calloc((size_t)n, sizeof(*us)), id, ttl, t;
	struct ferr err = { 0 };
	struct etcd_claim c;
	char key[32];

	CHECK(us && n > 0, "bench count");
	OK(etcd_lease_grant(e, 60, 0, &id, NULL, &err));
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "bench/%d", i);
		t = now_us();
		OK(etcd_acquire(e, key, "b", 1, id, 0, &c, &err));
		us[i] = now_us() - t;
		CHECK(c.won, "bench acquire");
		etcd_kv_clear(&c.holder);
	}
	report("cas", us, n);
	for (int i = 0; i < n; i++) {
		t = now_us();
		OK(etcd_lease_keepalive(e, id, 0, &ttl, &err));
		us[i] = now_us() - t;
	}
	report("keepalive", us, n);
	OK(etcd_lease_revoke(e, id, 0, &err));
	free(us);
	return 0;
}

int main(int argc, char **argv)
{
	struct ferryd_config fc;
	struct ferr err = { 0 };
	struct etcd *e;
	const char *s;
	int rc;

	if (argc < 3) {
		fprintf(stderr, "usage: etcd_check FERRYD_JSON SCENARIO [ARG]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	OK(config_load(argv[1], &fc, &err));
	CHECK(fc.etcd.n_endpoints > 0, "no etcd section in %s", argv[1]);
	cfg = fc.etcd;
	config_clear(&fc);
	e = client();
	s = argv[2];
	if (!strcmp(s, "kv"))
		rc = scenario_kv(e);
	else if (!strcmp(s, "cas"))
		rc = scenario_cas();
	else if (!strcmp(s, "lease"))
		rc = scenario_lease(e);
	else if (!strcmp(s, "revoke"))
		rc = scenario_revoke(e);
	else if (!strcmp(s, "watch") && argc == 4)
		rc = scenario_watch(e, argv[3]);
	else if (!strcmp(s, "failover"))
		rc = scenario_failover(e);
	else if (!strcmp(s, "stop"))
		rc = scenario_stop(e);
	else if (!strcmp(s, "rogue"))
		rc = scenario_rogue(e);
	else if (!strcmp(s, "pin"))
		rc = scenario_pin(e);
	else if (!strcmp(s, "bench") && argc == 4)
		rc = scenario_bench(e, atoi(argv[3]));
	else {
		fprintf(stderr, "etcd_check: unknown scenario %s\n", s);
		rc = 2;
	}
	etcd_close(e);
	return rc;
}
