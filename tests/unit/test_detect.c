/* Unit tests of ferry-detect's pure parts: the migration signatures of an
 * RTT series (signal.c) and the announcement frames (frame.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "detect.h"

#define IV 50 /* probe interval, ms */

struct seen {
	unsigned detected, closed;
	struct det_event last, first;
};

static void cb(const struct det_event *ev, enum det_report what, void *arg)
{
	struct seen *s = arg;

	if (what == DET_REPORT_DETECTED) {
		if (!s->detected)
			s->first = *ev;
		s->detected++;
	} else {
		s->closed++;
	}
	s->last = *ev;
}

/* A reproducible noisy RTT around base ms, with rare spikes (TCG). */
static double noisy(double base, unsigned *rng)
{
	double r;

	*rng = *rng * 1103515245u + 12345u;
	r = (double)((*rng >> 8) % 1000) / 1000.0;
	if (r > 0.985)
		return base * 15; /* a scheduling spike */
	return base * (0.7 + 0.6 * r);
}

/* Probe from t0 for ms milliseconds: rtt_fn gives the RTT at send time t
 * (< 0: lost, i.e. the VM does not answer). Answers come back before the
 * next probe; losses are reported TIMEOUT_MS after their send, as
 * ferry-detect does; ticks every 10 ms in between, so stalls are seen
 * online. */
#define TIMEOUT_MS 1000
#define LOST_MAX 1024

static uint64_t run(struct det *d, uint64_t t0, uint64_t ms,
		    double (*rtt_fn)(uint64_t t, unsigned *rng), unsigned *rng)
{
	uint64_t lost[LOST_MAX], t;
	size_t nlost = 0, done = 0;

	for (t = t0; t < t0 + ms; t += IV) {
		double r = rtt_fn(t, rng);

		det_sent(d, t);
		for (uint64_t u = t; u < t + IV; u += 10) {
			while (done < nlost && lost[done] + TIMEOUT_MS <= u)
				det_sample(d, lost[done++], -1, u);
			det_tick(d, u);
		}
		if (r >= 0)
			det_sample(d, t, r, t + (uint64_t)r);
		else if (nlost < LOST_MAX)
			lost[nlost++] = t;
	}
	return t;
}

static double base_rtt(uint64_t t, unsigned *rng)
{
	(void)t;
	return noisy(0.8, rng);
}

/* Migration: pre-copy (RTT x 10) from 10 s for 3 s, stop for 250 ms. */
static double migration(uint64_t t, unsigned *rng)
{
	if (t >= 10000 && t < 13000)
		return noisy(8.0, rng);
	if (t >= 13000 && t < 13250)
		return -1;
	return noisy(0.8, rng);
}

/* High guest load: the switchover loses one probe, no stall. */
static double short_stop(uint64_t t, unsigned *rng)
{
	if (t >= 10000 && t < 13000)
		return noisy(8.0, rng);
	if (t == 13000)
		return -1;
	return noisy(0.8, rng);
}

/* QEMU's set-up stop, a pre-copy, and a switchover too short to see. */
static double setup_then_precopy(uint64_t t, unsigned *rng)
{
	if (t >= 10000 && t < 10400)
		return -1;
	if (t >= 10400 && t < 13000)
		return noisy(8.0, rng);
	return noisy(0.8, rng);
}

static double pause_resume(uint64_t t, unsigned *rng)
{
	return t >= 10000 && t < 12000 ? -1 : noisy(0.8, rng);
}

static double load_burst(uint64_t t, unsigned *rng)
{
	return t >= 10000 && t < 15000 ? noisy(6.0, rng) : noisy(0.8, rng);
}

static void test_quiet_series(void **state)
{
	struct det d;
	struct seen s = { 0 };
	unsigned rng = 1;

	(void)state;
	det_init(&d, NULL, cb, &s);
	run(&d, 1000, 60000, base_rtt, &rng);
	assert_int_equal(s.detected, 0);
	assert_true(det_baseline_ms(&d) > 0.5 && det_baseline_ms(&d) < 1.2);
}

static void test_migration_icmp_only(void **state)
{
	struct det d;
	struct seen s = { 0 };
	unsigned rng = 2;

	(void)state;
	det_init(&d, NULL, cb, &s);
	run(&d, 0, 20000, migration, &rng);
	assert_int_equal(s.detected, 1);
	assert_true(s.first.signals & DET_SIG_RISE);
	assert_true(s.first.signals & DET_SIG_STALL);
	assert_true(s.first.signals & DET_SIG_PATTERN);
	/* the start within the first probes of the pre-copy; the switchover
	 * at the stop, known within a second */
	assert_true(s.first.start_ms >= 10000 && s.first.start_ms <= 10400);
	assert_true(s.last.switchover_ms >= 13000 &&
		    s.last.switchover_ms <= 13050);
	assert_true(s.last.switchover_known_ms - 13000 < 1000);
	assert_int_equal(s.closed, 1);
	assert_true(s.last.end_ms >= 13000);
}

static void test_loss_during_rise(void **state)
{
	struct det d;
	struct seen s = { 0 };
	unsigned rng = 7;

	(void)state;
	det_init(&d, NULL, cb, &s);
	run(&d, 0, 20000, short_stop, &rng);
	assert_int_equal(s.detected, 1);
	assert_true(s.first.signals & DET_SIG_PATTERN);
	assert_false(s.first.signals & DET_SIG_STALL);
	assert_int_equal(s.last.switchover_ms, 13000);
}

/* Listening for announcements, ICMP alone never reports a migration; the
 * announcement does, with the stop before it as the switchover. */
static void test_require_announce(void **state)
{
	struct det_params p;
	struct det d;
	struct seen s = { 0 };
	unsigned rng = 8;

	(void)state;
	det_params_default(&p);
	p.require_announce = true;
	det_init(&d, &p, cb, &s);
	run(&d, 0, 13400, migration, &rng);
	assert_int_equal(s.detected, 0);
	det_announce(&d, DET_SIG_RARP, 13450);
	assert_int_equal(s.detected, 1);
	assert_int_equal(s.first.switchover_ms, 13000);
	assert_true(s.first.opened_ms >= 10000 && s.first.opened_ms < 11000);
}

static void test_pause_is_not_a_migration(void **state)
{
	struct det d;
	struct seen s = { 0 };
	unsigned rng = 3;

	(void)state;
	det_init(&d, NULL, cb, &s);
	run(&d, 0, 20000, pause_resume, &rng);
	assert_int_equal(s.detected, 0);
	assert_int_equal(s.closed, 1); /* an anomaly, reported as closed */
	assert_true(s.last.signals & DET_SIG_STALL);
	assert_false(s.last.signals & DET_SIG_PATTERN);
	assert_true(s.last.confidence < 0.5);
}

static void test_rise_alone_is_not_a_migration(void **state)
{
	struct det d;
	struct seen s = { 0 };
	unsigned rng = 4;

	(void)state;
	det_init(&d, NULL, cb, &s);
	run(&d, 0, 25000, load_burst, &rng);
	assert_int_equal(s.detected, 0);
	assert_int_equal(s.closed, 1);
	assert_int_equal(s.last.signals, DET_SIG_RISE);
}

static void test_announce(void **state)
{
	struct det d;
	struct seen s = { 0 };
	unsigned rng = 5;
	uint64_t t;

	(void)state;
	det_init(&d, NULL, cb, &s);
	t = run(&d, 0, 10000, base_rtt, &rng);
	det_announce(&d, DET_SIG_RARP, t + 5);
	assert_int_equal(s.detected, 1);
	assert_int_equal(s.first.switchover_ms, t + 5);
	assert_true(s.first.confidence >= 0.6);
	run(&d, t + 10, 5000, base_rtt, &rng);
	assert_int_equal(s.closed, 1);
}

/* Under high guest load the set-up peak may vanish: a rise then an
 * announce is still a migration, with the stall before it as switchover. */
static void test_switchover_from_stall_before_announce(void **state)
{
	struct det d;
	struct seen s = { 0 };
	unsigned rng = 6;

	(void)state;
	det_init(&d, NULL, cb, &s);
	run(&d, 0, 13300, migration, &rng);
	det_announce(&d, DET_SIG_RARP, 13320);
	assert_int_equal(s.last.switchover_ms, 13000);
}

/* ... but QEMU's set-up stop long before it is not the switchover. */
static void test_setup_stall_is_not_the_switchover(void **state)
{
	struct det d;
	struct seen s = { 0 };
	unsigned rng = 9;

	(void)state;
	det_init(&d, NULL, cb, &s);
	run(&d, 0, 13000, setup_then_precopy, &rng);
	det_announce(&d, DET_SIG_RARP, 13050);
	assert_int_equal(s.last.switchover_ms, 13050);
	assert_true(s.last.start_ms >= 10000 && s.last.start_ms <= 10100);
}

static void test_confidence(void **state)
{
	char buf[64];

	(void)state;
	assert_true(det_confidence(DET_SIG_RARP) >= 0.5);
	assert_true(det_confidence(DET_SIG_RISE | DET_SIG_STALL) < 0.5);
	assert_true(det_confidence(DET_SIG_RISE | DET_SIG_STALL |
				   DET_SIG_PATTERN) >= 0.5);
	assert_true(det_confidence(0x3f) <= 1.0);
	det_signals_str(DET_SIG_RISE | DET_SIG_RARP, buf, sizeof(buf));
	assert_string_equal(buf, "rise,rarp");
	det_signals_str(0x3f, buf, 8); /* cut, never overflows */
	assert_true(strlen(buf) < 8);
}

static const uint8_t MAC[6] = { 0x52, 0x54, 0x00, 0xaa, 0x00, 0x01 };

/* Build an Ethernet ARP/RARP frame. */
static size_t frame(uint8_t *b, unsigned ethertype, unsigned op,
		    const uint8_t sip[4], const uint8_t tip[4])
{
	memset(b, 0xff, 6);
	memcpy(b + 6, MAC, 6);
	b[12] = (uint8_t)(ethertype >> 8);
	b[13] = (uint8_t)ethertype;
	b[14] = 0; b[15] = 1; b[16] = 8; b[17] = 0; b[18] = 6; b[19] = 4;
	b[20] = 0; b[21] = (uint8_t)op;
	memcpy(b + 22, MAC, 6);
	memcpy(b + 28, sip, 4);
	memcpy(b + 32, MAC, 6);
	memcpy(b + 38, tip, 4);
	return 42;
}

static void test_frames(void **state)
{
	static const uint8_t zero[4] = { 0 }, ip[4] = { 10, 231, 0, 100 },
			     other[4] = { 10, 231, 0, 250 };
	uint8_t b[64];
	struct frame_info fi;
	size_t n;

	(void)state;
	n = frame(b, 0x8035, 3, zero, zero); /* QEMU's self-announce */
	assert_int_equal(frame_parse(b, n, &fi), FRAME_RARP);
	assert_memory_equal(fi.mac, MAC, 6);
	n = frame(b, 0x0806, 1, ip, ip);      /* gratuitous ARP */
	assert_int_equal(frame_parse(b, n, &fi), FRAME_GARP);
	assert_memory_equal(&fi.ip, ip, 4);
	n = frame(b, 0x0806, 2, ip, other);   /* an ordinary reply */
	assert_int_equal(frame_parse(b, n, &fi), FRAME_ARP_REPLY);
	n = frame(b, 0x0806, 1, ip, other);   /* an ordinary request */
	assert_int_equal(frame_parse(b, n, &fi), FRAME_OTHER);
	n = frame(b, 0x8035, 4, zero, zero);  /* a RARP reply */
	assert_int_equal(frame_parse(b, n, &fi), FRAME_OTHER);
	/* short, truncated, wrong hardware type */
	for (size_t k = 0; k < n; k++)
		assert_int_equal(frame_parse(b, k, &fi), FRAME_OTHER);
	n = frame(b, 0x0806, 1, ip, ip);
	b[15] = 6;
	assert_int_equal(frame_parse(b, n, &fi), FRAME_OTHER);
	/* VLAN-tagged */
	n = frame(b + 4, 0x0806, 1, ip, ip);
	memmove(b, b + 4, 12);
	b[12] = 0x81; b[13] = 0x00; b[14] = 0; b[15] = 5;
	b[16] = 0x08; b[17] = 0x06;
	assert_int_equal(frame_parse(b, n + 4, &fi), FRAME_GARP);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quiet_series),
		cmocka_unit_test(test_migration_icmp_only),
		cmocka_unit_test(test_loss_during_rise),
		cmocka_unit_test(test_require_announce),
		cmocka_unit_test(test_pause_is_not_a_migration),
		cmocka_unit_test(test_rise_alone_is_not_a_migration),
		cmocka_unit_test(test_announce),
		cmocka_unit_test(test_switchover_from_stall_before_announce),
		cmocka_unit_test(test_setup_stall_is_not_the_switchover),
		cmocka_unit_test(test_confidence),
		cmocka_unit_test(test_frames),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
