/*
 * pattern.h - pure page-content functions for memload.
 *
 * Every verified page holds PATTERN_WORDS 64-bit words derived only from
 * (seed, page index, generation):
 *
 *     base    = pattern_base(seed, index, gen)
 *     word[i] = base ^ (i * PATTERN_GOLDEN)
 *
 * This is deliberately cheap (one add and one xor per word) because the
 * guest usually runs under QEMU TCG emulation, where every instruction
 * costs tens of host instructions.  No state, no I/O: these functions can
 * be unit-tested on the host.
 */
#ifndef MEMLOAD_PATTERN_H
#define MEMLOAD_PATTERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Size of one verified page in bytes (x86 base page size). */
#define PATTERN_PAGE_SIZE 4096u
/* Number of 64-bit words in one page. */
#define PATTERN_WORDS (PATTERN_PAGE_SIZE / sizeof(uint64_t))
/* Per-word increment (2^64 / golden ratio), makes every word distinct. */
#define PATTERN_GOLDEN UINT64_C(0x9E3779B97F4A7C15)
/* Odd multiplier that separates the generation from the page index. */
#define PATTERN_GEN_MUL UINT64_C(0xC2B2AE3D27D4EB4F)
/* splitmix64 finalizer constants. */
#define PATTERN_MIX_C1 UINT64_C(0xBF58476D1CE4E5B9)
#define PATTERN_MIX_C2 UINT64_C(0x94D049BB133111EB)

/*
 * pattern_mix64 - splitmix64 finalizer: a bijective 64-bit mixer.
 * In: any x.  Out: well-scrambled value; distinct inputs give distinct
 * outputs.  Pure, all arithmetic is modulo 2^64 by design.
 */
static inline uint64_t pattern_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= PATTERN_MIX_C1;
	x ^= x >> 27;
	x *= PATTERN_MIX_C2;
	x ^= x >> 31;
	return x;
}

/*
 * pattern_base - per-(seed, page, generation) base word.
 * In: seed (user supplied), page index, generation.  Out: the value of
 * word 0 of that page; other words are derived by pattern_word().
 * Pure; wrapping arithmetic is intended.
 */
static inline uint64_t pattern_base(uint64_t seed, uint64_t index, uint64_t gen)
{
	uint64_t x = pattern_mix64(seed + index * PATTERN_GOLDEN);

	return pattern_mix64(x ^ (gen * PATTERN_GEN_MUL + PATTERN_GOLDEN));
}

/*
 * pattern_word - expected value of word i of a page whose base is base.
 * In: base from pattern_base(), i < PATTERN_WORDS.  Out: the word.
 */
static inline uint64_t pattern_word(uint64_t base, size_t i)
{
	return base ^ ((uint64_t)i * PATTERN_GOLDEN);
}

/*
 * pattern_fill - write the full pattern for base into page.
 * In: page points to PATTERN_WORDS writable, 8-byte aligned words.
 * Out: page[i] == pattern_word(base, i) for every i.
 */
static inline void pattern_fill(volatile uint64_t *page, uint64_t base)
{
	uint64_t step = 0;

	for (size_t i = 0; i < PATTERN_WORDS; i++) {
		page[i] = base ^ step;
		step += PATTERN_GOLDEN;
	}
}

/*
 * pattern_check - compare page against the pattern for base.
 * In: page points to PATTERN_WORDS readable words; bad_word and got must
 * be valid pointers.  Out: true if every word matches.  On a mismatch
 * returns false, *bad_word is the index of the first differing word and
 * *got its actual value (the expected value is pattern_word(base, idx)).
 * The fast path is a branch-free OR-accumulation; the slow search only
 * runs for a corrupt page.
 */
static inline bool pattern_check(const volatile uint64_t *page, uint64_t base,
				 size_t *bad_word, uint64_t *got)
{
	uint64_t diff = 0;
	uint64_t step = 0;

	for (size_t i = 0; i < PATTERN_WORDS; i++) {
		diff |= page[i] ^ (base ^ step);
		step += PATTERN_GOLDEN;
	}
	if (diff == 0)
		return true;
	for (size_t i = 0; i < PATTERN_WORDS; i++) {
		uint64_t v = page[i];

		if (v != pattern_word(base, i)) {
			*bad_word = i;
			*got = v;
			return false;
		}
	}
	/* The page changed back between the two reads: treat word 0 as bad. */
	*bad_word = 0;
	*got = page[0];
	return false;
}

/*
 * Text content (memload.content=text): pages that compress like real
 * guest memory, about 3:1 under `zstd -1` (measured on 64 MiB of pages:
 * 3.14:1), instead of the incompressible pattern above.
 *
 * A page is PATTERN_WORDS 8-byte words drawn from an xorshift64* stream
 * seeded by base (the same pattern_base() as above, so generations work
 * alike). Each step gives one word: in 6 of 8 steps (by the step's low
 * three bits) one of 256 8-byte pieces of the English text below, in the
 * other 2 two 4-byte pieces of it, which match less often. Branch-free
 * and pure: a word costs one xorshift step and three table look-ups.
 */
#define PATTERN_TEXT_TOKENS 256u
#define PATTERN_TEXT_SHORT_IN_8 2u /* words made of two 4-byte pieces */
#define PATTERN_TEXT_SHORT_OFF 3u  /* 4-byte piece i starts at 4 * i + 3 */
#define PATTERN_XS_MUL UINT64_C(0x2545F4914F6CDD1D)

static const char pattern_text_vocab[PATTERN_TEXT_TOKENS * 8 + 1] =
	"When the source host sends a page, the destination host writes it "
	"into guest memory and marks it as present. A page that the guest "
	"changes again must be sent once more, so a busy machine keeps the "
	"migration running for several rounds until what is left fits in "
	"the downtime. The kernel keeps its page cache, its slab caches "
	"and the stacks of its threads in the same memory as the programs, "
	"and most of that memory holds text, tables of small numbers, "
	"pointers that differ only in their low bits and long runs of "
	"bytes that repeat. Logs grow line by line with a date, a host "
	"name, a process and a message; configuration files repeat the "
	"same keys with different values; databases store rows that share "
	"most of their columns. Such memory compresses three or four times "
	"with a fast compressor, while encrypted files, media and random "
	"keys do not compress at all. An operator who moves a virtual "
	"machine over a slow link wants the transfer to use the link well, "
	"and a fast compressor on each end turns idle processor time into "
	"bandwidth. On a fast link the same compressor only costs time, "
	"because the processor becomes the limit before the wire does. The "
	"relay therefore measures both and decides for itself, one frame "
	"at a time, whether to compress the next frame or to send it as it "
	"is. Every frame carries its length before and after compression, "
	"and the receiver checks both against fixed limits before it "
	"expands anything, so a hostile peer cannot make it allocate or "
	"write more than one frame of memory at a time. The migration ends "
	"when the destination reports that it loaded the last section and "
	"the virtual machine runs again on its new host, with its memory, "
	"devices and clock as they were. Users then see a short pause. "
	"Most of them never notice that their machine moved to another "
	"rack. A mail server, a build farm and a small web shop share the "
	"same cluster; each night the balancer moves a few of their "
	"machines so that the busiest hosts cool down, and each move is "
	"written to the audit log with who asked for it and why it was "
	"allowed. ";

/* The vocabulary as words: long[i] = bytes [8i, 8i+8), short[i] = bytes
 * [4i+3, 4i+7), little-endian. */
struct pattern_text {
	uint64_t longw[PATTERN_TEXT_TOKENS];
	uint64_t shortw[PATTERN_TEXT_TOKENS];
};

/* Little-endian value of n bytes of the vocabulary at off. */
static inline uint64_t pattern_text_le(size_t off, size_t n)
{
	uint64_t w = 0;

	for (size_t j = 0; j < n; j++)
		w |= (uint64_t)(unsigned char)pattern_text_vocab[off + j]
		     << (8 * j);
	return w;
}

/* pattern_text_init - fill t's tables from the vocabulary. */
static inline void pattern_text_init(struct pattern_text *t)
{
	for (size_t i = 0; i < PATTERN_TEXT_TOKENS; i++) {
		t->longw[i] = pattern_text_le(8 * i, 8);
		t->shortw[i] = pattern_text_le(4 * i + PATTERN_TEXT_SHORT_OFF,
					       4);
	}
}

/*
 * pattern_text_next - the next word of the stream whose state is *x
 * (nonzero; advanced).
 */
static inline uint64_t pattern_text_next(uint64_t *x,
					 const struct pattern_text *t)
{
	uint64_t r, lw, sw, m;

	*x ^= *x >> 12;
	*x ^= *x << 25;
	*x ^= *x >> 27;
	r = *x * PATTERN_XS_MUL;
	lw = t->longw[r >> 56];
	sw = t->shortw[(r >> 8) & 255u] | t->shortw[(r >> 16) & 255u] << 32;
	m = (uint64_t)0 - (uint64_t)((r & 7u) < PATTERN_TEXT_SHORT_IN_8);
	return (lw & ~m) | (sw & m);
}

/* The stream's first state for base (never zero). */
static inline uint64_t pattern_text_seed(uint64_t base)
{
	return pattern_mix64(base) | 1u;
}

/*
 * pattern_text_fill - write the text page for base.
 * In: page as for pattern_fill(); t from pattern_text_init().
 */
static inline void pattern_text_fill(volatile uint64_t *page, uint64_t base,
				     const struct pattern_text *t)
{
	uint64_t x = pattern_text_seed(base);

	for (size_t i = 0; i < PATTERN_WORDS; i++)
		page[i] = pattern_text_next(&x, t);
}

/*
 * pattern_text_word - expected word i of the text page for base.
 */
static inline uint64_t pattern_text_word(uint64_t base, size_t i,
					 const struct pattern_text *t)
{
	uint64_t x = pattern_text_seed(base), w = 0;

	for (size_t k = 0; k <= i; k++)
		w = pattern_text_next(&x, t);
	return w;
}

/*
 * pattern_text_check - compare page against the text page for base; the
 * same contract as pattern_check() (*bad_word, *got on a mismatch).
 */
static inline bool pattern_text_check(const volatile uint64_t *page,
				      uint64_t base,
				      const struct pattern_text *t,
				      size_t *bad_word, uint64_t *got)
{
	uint64_t x = pattern_text_seed(base), diff = 0;

	for (size_t i = 0; i < PATTERN_WORDS; i++)
		diff |= page[i] ^ pattern_text_next(&x, t);
	if (diff == 0)
		return true;
	for (size_t i = 0; i < PATTERN_WORDS; i++) {
		uint64_t v = page[i];

		if (v != pattern_text_word(base, i, t)) {
			*bad_word = i;
			*got = v;
			return false;
		}
	}
	*bad_word = 0;
	*got = page[0];
	return false;
}

#endif /* MEMLOAD_PATTERN_H */
