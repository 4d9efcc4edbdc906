/* Unit tests of how a migration's bytes travel: the choice of path
 * (plan.c), the frames of compressed channels and their limits (frame.c),
 * the choice to compress, and memload's text pages (guest/memload). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zstd.h>

#include "migrate_int.h"
#include "../../guest/memload/pattern.h"

/* ---- plan ---- */

static void test_plan(void **state)
{
	struct mig_plan p;

	(void)state;
	/* two cores, one vCPU: one stream */
	mig_plan_make(&(struct mig_plan_in){ .host_cpus = 2, .vcpus = 1 }, &p);
	assert_int_equal(p.multifd, 0);
	assert_int_equal(p.z, RELAY_Z_AUTO);
	/* spare cores: multifd, a channel per two spare cores, at most 4 */
	mig_plan_make(&(struct mig_plan_in){ .host_cpus = 8, .vcpus = 2 }, &p);
	assert_int_equal(p.multifd, 3);
	mig_plan_make(&(struct mig_plan_in){ .host_cpus = 64, .vcpus = 2 },
		      &p);
	assert_int_equal(p.multifd, 4);
	/* post-copy: one stream whatever was asked */
	mig_plan_make(&(struct mig_plan_in){ .host_cpus = 64, .vcpus = 2,
					     .postcopy = true, .channels = 8 },
		      &p);
	assert_int_equal(p.multifd, 0);
	/* --channels: 1 is one stream, N is multifd N */
	mig_plan_make(&(struct mig_plan_in){ .host_cpus = 64, .channels = 1 },
		      &p);
	assert_int_equal(p.multifd, 0);
	mig_plan_make(&(struct mig_plan_in){ .host_cpus = 2, .vcpus = 1,
					     .channels = 3,
					     .compress = MIG_COMPRESS_OFF },
		      &p);
	assert_int_equal(p.multifd, 3);
	assert_int_equal(p.z, RELAY_Z_OFF);
	mig_plan_make(&(struct mig_plan_in){ .compress = MIG_COMPRESS_ON }, &p);
	assert_int_equal(p.z, RELAY_Z_ON);
	/* auto: no frames to a destination on this host (no link to save),
	 * but "on" is obeyed */
	mig_plan_make(&(struct mig_plan_in){ .peer_local = true }, &p);
	assert_int_equal(p.z, RELAY_Z_OFF);
	mig_plan_make(&(struct mig_plan_in){ .peer_local = true,
					     .compress = MIG_COMPRESS_ON },
		      &p);
	assert_int_equal(p.z, RELAY_Z_ON);
	assert_true(mig_addr_is_loopback("127.0.0.3"));
	assert_true(mig_addr_is_loopback("::1"));
	assert_true(mig_addr_is_loopback("::ffff:127.0.0.2"));
	assert_false(mig_addr_is_loopback("10.213.77.2"));
	assert_false(mig_addr_is_loopback("::ffff:10.0.0.1"));
	assert_false(mig_addr_is_loopback("fe80::1"));
	assert_false(mig_addr_is_loopback("not an address"));
}

/* An older destination refuses the field: only "auto" gives way. */
static void test_plan_fallback(void **state)
{
	struct ferr old = { FERR_UNAVAILABLE,
			    "b refused to prepare (400): prepare: unknown "
			    "field \"compress\"" };
	struct ferr other = { FERR_UNAVAILABLE, "b refused: policy" };
	struct mig_plan p = { .z = RELAY_Z_AUTO };

	(void)state;
	assert_false(mig_plan_fallback(&p, MIG_COMPRESS_AUTO, &other));
	assert_int_equal(p.z, RELAY_Z_AUTO);
	assert_true(mig_plan_fallback(&p, MIG_COMPRESS_AUTO, &old));
	assert_int_equal(p.z, RELAY_Z_OFF);
	assert_false(mig_plan_fallback(&p, MIG_COMPRESS_AUTO, &old));
	p.z = RELAY_Z_ON;
	assert_false(mig_plan_fallback(&p, MIG_COMPRESS_ON, &old));
	assert_int_equal(p.z, RELAY_Z_ON);
}

/* ---- frames ---- */

/* Feed frame bytes to a decoder as the relay does, in pieces of at most
 * step bytes. Returns the decoded length, or -1 (err). */
static ssize_t decode(struct frame_dec *d, const uint8_t *in, size_t len,
		      size_t step, uint8_t *out, struct ferr *err)
{
	size_t pos = 0, total = 0;

	while (pos < len) {
		size_t want, outlen = 0, n;
		uint8_t *p = frame_dec_space(d, out + total, &want);
		int r;

		n = want < step ? want : step;
		if (n > len - pos)
			n = len - pos;
		memcpy(p, in + pos, n);
		pos += n;
		r = frame_dec_advance(d, n, out + total, &outlen, err);
		if (r < 0)
			return -1;
		total += outlen;
	}
	return frame_dec_idle(d) ? (ssize_t)total : -2;
}

/* Pages of memload's text (or pattern) into buf, which need not be
 * aligned. */
static void fill_pages(uint8_t *buf, size_t len, bool text)
{
	uint64_t page[PATTERN_WORDS];
	struct pattern_text t;

	pattern_text_init(&t);
	for (size_t off = 0; off + PATTERN_PAGE_SIZE <= len;
	     off += PATTERN_PAGE_SIZE) {
		uint64_t base = pattern_base(1, off / PATTERN_PAGE_SIZE, 0);

		if (text)
			pattern_text_fill(page, base, &t);
		else
			pattern_fill(page, base);
		memcpy(buf + off, page, sizeof(page));
	}
}

static void fill_text(uint8_t *buf, size_t len)
{
	fill_pages(buf, len, true);
}

static void fill_random(uint8_t *buf, size_t len)
{
	fill_pages(buf, len, false);
}

/* Text compresses into a zstd frame, random bytes go raw; both decode to
 * the original, whatever the read sizes. */
static void test_frame_roundtrip(void **state)
{
	size_t n = MIG_FRAME_RAW_MAX;
	uint8_t *raw = malloc(MIG_FRAME_HDR_LEN + n);
	uint8_t *zf = malloc(MIG_FRAME_HDR_LEN + n);
	uint8_t *out = malloc(n);
	struct frame_enc e;
	struct frame_dec d;
	struct ferr err = { 0 };
	size_t flen;
	bool in_zf;

	(void)state;
	assert_int_equal(frame_enc_init(&e, RELAY_Z_ON, &err), 0);
	assert_int_equal(frame_dec_init(&d, &err), 0);
	fill_text(raw + MIG_FRAME_HDR_LEN, n);
	flen = frame_enc(&e, raw, n, zf, &in_zf);
	assert_true(in_zf);
	assert_int_equal(zf[MIG_FRAME_OFF_TYPE], MIG_FRAME_ZSTD);
	assert_true(flen * 2 < n);
	for (size_t step = 1; step <= n; step = step * 7 + 3) {
		memset(out, 0, n);
		assert_int_equal(decode(&d, zf, flen, step, out, &err),
				 (ssize_t)n);
		assert_memory_equal(out, raw + MIG_FRAME_HDR_LEN, n);
	}
	fill_random(raw + MIG_FRAME_HDR_LEN, n);
	flen = frame_enc(&e, raw, n, zf, &in_zf);
	assert_false(in_zf);
	assert_int_equal(flen, n + MIG_FRAME_HDR_LEN);
	assert_int_equal(raw[MIG_FRAME_OFF_TYPE], MIG_FRAME_RAW);
	assert_int_equal(decode(&d, raw, flen, 65536, out, &err), (ssize_t)n);
	assert_memory_equal(out, raw + MIG_FRAME_HDR_LEN, n);
	/* a tiny frame stays raw */
	raw[MIG_FRAME_HDR_LEN] = 'x';
	flen = frame_enc(&e, raw, 1, zf, &in_zf);
	assert_false(in_zf);
	assert_int_equal(decode(&d, raw, flen, 5, out, &err), 1);
	assert_int_equal(out[0], 'x');
	frame_enc_free(&e);
	frame_dec_free(&d);
	free(raw);
	free(zf);
	free(out);
}

/* One bad frame: the decoder refuses it with a message naming needle. */
static void expect_refused(const uint8_t *f, size_t len, const char *needle)
{
	uint8_t *out = malloc(MIG_FRAME_RAW_MAX);
	struct frame_dec d;
	struct ferr err = { 0 };

	assert_int_equal(frame_dec_init(&d, &err), 0);
	if (decode(&d, f, len, len, out, &err) != -1)
		fail_msg("accepted a frame that should fail with \"%s\"",
			 needle);
	if (!strstr(err.msg, needle))
		fail_msg("\"%s\" lacks \"%s\"", err.msg, needle);
	assert_int_equal(err.code, FERR_INVALID);
	frame_dec_free(&d);
	free(out);
}

static void test_frame_limits(void **state)
{
	enum { RAW = 64 * 1024 };
	uint8_t *src = malloc(RAW), *z = malloc(MIG_FRAME_HDR_LEN + 2 * RAW);
	uint8_t hdr[MIG_FRAME_HDR_LEN];
	size_t zl, zl2;

	(void)state;
	fill_text(src, RAW);
	zl = ZSTD_compress(z + MIG_FRAME_HDR_LEN, RAW, src, RAW, 1);
	assert_false(ZSTD_isError(zl));

	frame_header(hdr, 7, 1, 1);
	expect_refused(hdr, sizeof(hdr), "unknown type");
	frame_header(hdr, MIG_FRAME_RAW, 1, 1);
	hdr[MIG_FRAME_OFF_FLAGS] = 1;
	expect_refused(hdr, sizeof(hdr), "reserved");
	frame_header(hdr, MIG_FRAME_RAW, 1, 1);
	hdr[MIG_FRAME_OFF_RESERVED + 1] = 1;
	expect_refused(hdr, sizeof(hdr), "reserved");
	frame_header(hdr, MIG_FRAME_RAW, 0, 0);
	expect_refused(hdr, sizeof(hdr), "raw length 0");
	frame_header(hdr, MIG_FRAME_RAW, MIG_FRAME_RAW_MAX + 1,
		     MIG_FRAME_RAW_MAX + 1);
	expect_refused(hdr, sizeof(hdr), "outside");
	frame_header(hdr, MIG_FRAME_RAW, 10, 11);
	expect_refused(hdr, sizeof(hdr), "raw frame");
	/* a zstd frame must be shorter than what it stands for ... */
	frame_header(hdr, MIG_FRAME_ZSTD, 100, 100);
	expect_refused(hdr, sizeof(hdr), "cannot stand for");
	/* ... and expand at most MIG_FRAME_RATIO_MAX times */
	frame_header(hdr, MIG_FRAME_ZSTD, 10, 10 * MIG_FRAME_RATIO_MAX + 1);
	expect_refused(hdr, sizeof(hdr), "at most");
	/* the payload must be one zstd frame of exactly the raw length */
	frame_header(z, MIG_FRAME_ZSTD, (uint32_t)zl, RAW - 1);
	expect_refused(z, MIG_FRAME_HDR_LEN + zl, "not one frame");
	memcpy(z + MIG_FRAME_HDR_LEN + zl, z + MIG_FRAME_HDR_LEN, zl);
	frame_header(z, MIG_FRAME_ZSTD, (uint32_t)(2 * zl), RAW);
	expect_refused(z, MIG_FRAME_HDR_LEN + 2 * zl, "not one frame");
	/* corrupted: a block's bytes changed */
	zl2 = zl;
	frame_header(z, MIG_FRAME_ZSTD, (uint32_t)zl2, RAW);
	for (size_t i = MIG_FRAME_HDR_LEN + 12; i < MIG_FRAME_HDR_LEN + zl2;
	     i += 97)
		z[i] ^= 0x5a;
	expect_refused(z, MIG_FRAME_HDR_LEN + zl2, "frame");
	/* a window beyond MIG_FRAME_WINDOW_LOG (a frame made with a large
	 * window and no content size in its header is also refused) */
	{
		ZSTD_CCtx *c = ZSTD_createCCtx();
		size_t big;

		ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, 24);
		ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
		big = ZSTD_compress2(c, z + MIG_FRAME_HDR_LEN, RAW, src, RAW);
		assert_false(ZSTD_isError(big));
		frame_header(z, MIG_FRAME_ZSTD, (uint32_t)big, RAW);
		expect_refused(z, MIG_FRAME_HDR_LEN + big, "not one frame");
		ZSTD_freeCCtx(c);
	}
	free(src);
	free(z);
}

/* ---- the controller ---- */

static void test_zctl(void **state)
{
	struct zctl c = { 0 };
	/* the relay waited on a network that TCP says was the limit */
	struct zwin link = { .wall_us = 250000, .blocked_us = 200000,
			     .busy_us = 250000, .rwnd_us = 0,
			     .in_bytes = 30000000 };
	/* it waited, but on the receiver (its window) */
	struct zwin rwnd = link;
	/* the network took everything at once: CPU-bound */
	struct zwin cpu = { .wall_us = 250000, .blocked_us = 1000,
			    .busy_us = 250000, .in_bytes = 100000000 };
	struct zwin w;
	unsigned n = 0;

	(void)state;
	rwnd.rwnd_us = 200000;
	assert_true(zctl_link_bound(&link));
	assert_false(zctl_link_bound(&rwnd));
	assert_false(zctl_link_bound(&cpu));
	/* nothing while the CPU or the receiver is the limit */
	zctl_update(&c, &cpu);
	zctl_update(&c, &rwnd);
	assert_int_equal(c.level, 0);
	assert_false(zctl_next(&c));
	/* the share grows while the link is the limit, up to everything */
	w = link;
	w.zin = 30000000;
	w.zout = 10000000;
	zctl_update(&c, &w);
	assert_int_equal(c.level, 2);
	for (unsigned i = 0; i < ZCTL_LEVELS; i++)
		n += zctl_next(&c);
	assert_int_equal(n, 2); /* 2 frames in 8 */
	for (unsigned i = 0; i < 10; i++)
		zctl_update(&c, &w);
	assert_int_equal(c.level, ZCTL_LEVELS);
	assert_true(zctl_next(&c));
	/* compressing made the CPU the limit: the share shrinks */
	w = cpu;
	w.zin = 40000000;
	w.zout = 13000000;
	zctl_update(&c, &w);
	assert_int_equal(c.level, ZCTL_LEVELS - 1);
	/* incompressible: nothing, and held although the link is the limit */
	w = link;
	w.zin = 30000000;
	w.zout = 29000000;
	zctl_update(&c, &w);
	assert_int_equal(c.level, 0);
	assert_true(c.hold > 0);
	for (unsigned i = 0; c.hold > 0 && i < 100; i++)
		zctl_update(&c, &link);
	assert_int_equal(c.level, 0);
	zctl_update(&c, &link);
	assert_true(c.level > 0);
}

/* ---- memload's text pages ---- */

/* Text pages: verifiable (a changed word is found), different per
 * generation, and about 3:1 under zstd -1. */
static void test_text_pages(void **state)
{
	enum { PAGES = 4096 };
	struct pattern_text t;
	uint64_t *mem = malloc((size_t)PAGES * PATTERN_PAGE_SIZE);
	size_t cap = ZSTD_compressBound((size_t)PAGES * PATTERN_PAGE_SIZE);
	void *z = malloc(cap);
	size_t zl, bad = 0;
	uint64_t got = 0, base;
	double ratio;

	(void)state;
	pattern_text_init(&t);
	for (size_t i = 0; i < PAGES; i++)
		pattern_text_fill(mem + i * PATTERN_WORDS,
				  pattern_base(1, i, 0), &t);
	zl = ZSTD_compress(z, cap, mem, (size_t)PAGES * PATTERN_PAGE_SIZE, 1);
	assert_false(ZSTD_isError(zl));
	ratio = (double)PAGES * PATTERN_PAGE_SIZE / (double)zl;
	if (ratio < 2.5 || ratio > 4.0)
		fail_msg("text pages compress %.2f:1, not about 3:1", ratio);
	base = pattern_base(1, 7, 0);
	assert_true(pattern_text_check(mem + 7 * PATTERN_WORDS, base, &t, &bad,
				       &got));
	assert_false(pattern_text_check(mem + 7 * PATTERN_WORDS,
					pattern_base(1, 7, 1), &t, &bad,
					&got));
	mem[7 * PATTERN_WORDS + 100] ^= 1;
	assert_false(pattern_text_check(mem + 7 * PATTERN_WORDS, base, &t,
					&bad, &got));
	assert_int_equal(bad, 100);
	assert_int_equal(got ^ 1, pattern_text_word(base, 100, &t));
	free(mem);
	free(z);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plan),
		cmocka_unit_test(test_plan_fallback),
		cmocka_unit_test(test_frame_roundtrip),
		cmocka_unit_test(test_frame_limits),
		cmocka_unit_test(test_zctl),
		cmocka_unit_test(test_text_pages),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
