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

#endif /* MEMLOAD_PATTERN_H */
