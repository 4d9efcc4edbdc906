/*
 * memload - memory load generator and integrity checker for ferry's
 * test guest.
 *
 * Runs inside the guest (normally started by /init), reads its parameters
 * from the kernel command line, fills a region of guest RAM with a
 * verifiable pattern, rewrites ("dirties") pages at a configured rate and
 * continuously verifies every page against what it last wrote.  Output
 * goes to stdout (the serial console) one line at a time; the line
 * formats are a contract parsed by ferry's system tests (see
 * guest/README.md).
 *
 * Usage: memload [memload.KEY=VALUE ...] (params.c)
 *   Without arguments the parameters are read from /proc/cmdline.  With
 *   arguments, those are parsed instead (handy for running on a host).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "disk.h"
#include "params.h"
#include "pattern.h"

/* ---- named constants ---------------------------------------------------- */

#define PAGE_SIZE_BYTES PATTERN_PAGE_SIZE
#define PAGES_PER_MIB (1024u * 1024u / PAGE_SIZE_BYTES)
#define NS_PER_SEC UINT64_C(1000000000)
#define TICK_NS UINT64_C(10000000) /* duty-cycle period: 10 ms */
#define PERCENT 100u

#define SECRET_REGION_BYTES (64u * 1024u)

#define VERIFY_BATCH 16u /* pages verified between clock reads */
#define DIRTY_BATCH 16u /* max scheduled pages dirtied per step */
#define MAX_RATE_DIRTY_BATCH 48u /* rate=max: 3 dirty : 1 verify */
#define BACKLOG_TICKS 10u /* a late schedule catches up at most 100 ms */
#define CORRUPT_LINES_PER_SEC 10u

#define PAGEMAP_PATH "/proc/self/pagemap"
#define PAGEMAP_PRESENT (UINT64_C(1) << 63)
#define PAGEMAP_PFN_MASK ((UINT64_C(1) << 55) - 1)
#define LINE_MAX_LEN 512u

/* ---- types ----------------------------------------------------------------- */

/* Running state: the memory under test and counters. */
struct state {
	uint64_t *pages; /* npages * PATTERN_WORDS words */
	size_t npages;
	size_t region_bytes;
	uint32_t *gens; /* current generation of each page */
	size_t gens_bytes;
	char *secret_region; /* SECRET_REGION_BYTES or NULL */
	uint64_t rng; /* xorshift64* state for page choice */
	size_t verify_next; /* round-robin cursor */
	uint64_t verified;
	uint64_t dirtied;
	uint64_t errors;
	uint64_t passes;
	uint64_t corrupt_lines_left; /* remaining budget this second */
	struct disk disk; /* disk mode (disk.h); fd -1 when off */
};

/* ---- small helpers ----------------------------------------------------- */

/*
 * write_all - write len bytes of buf to fd, retrying short writes and EINTR.
 * Out: 0 on success, -1 with errno set on failure.
 */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * emit - print one complete line ("memload: " + formatted text + "\n") to
 * stdout with a single write(), so lines are never interleaved or left in
 * a buffer.  Out: 0 on success, -1 (err set) if stdout is unwritable.
 * Lines longer than LINE_MAX_LEN are truncated but still end in "\n".
 */
__attribute__((format(printf, 2, 3)))
static int emit(struct errmsg *err, const char *fmt, ...)
{
	char line[LINE_MAX_LEN];
	static const char prefix[] = "memload: ";
	size_t len = sizeof(prefix) - 1;
	va_list ap;
	int n;

	memcpy(line, prefix, len);
	va_start(ap, fmt);
	n = vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return set_error(err, "formatting output line failed");
	if ((size_t)n > sizeof(line) - len - 2)
		n = (int)(sizeof(line) - len - 2);
	len += (size_t)n;
	line[len++] = '\n';
	if (write_all(STDOUT_FILENO, line, len) != 0)
		return set_error(err, "writing to stdout: %s", strerror(errno));
	return 0;
}

/*
 * print_error - print "memload: error: <reason>" to stdout (the console
 * the test harness reads).  Best effort: nothing more can be done if
 * stdout itself is broken.
 */
static void print_error(const struct errmsg *err)
{
	char line[LINE_MAX_LEN];
	int n = snprintf(line, sizeof(line), "memload: error: %s\n", err->text);

	if (n > 0)
		(void)write_all(STDOUT_FILENO, line, strnlen(line, sizeof(line)));
}

/*
 * now_ns - CLOCK_MONOTONIC in nanoseconds.
 * Out: the time; 0 only if the clock is broken (never on Linux).
 */
static uint64_t now_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

/*
 * sleep_until_ns - sleep until CLOCK_MONOTONIC reaches deadline (or a
 * signal arrives; callers re-check the clock anyway).
 */
static void sleep_until_ns(uint64_t deadline)
{
	struct timespec ts = {
		.tv_sec = (time_t)(deadline / NS_PER_SEC),
		.tv_nsec = (long)(deadline % NS_PER_SEC),
	};

	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

/*
 * rng_next - xorshift64* step.  In: *s nonzero.  Out: next pseudo-random
 * value; *s advanced (stays nonzero).
 */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * UINT64_C(0x2545F4914F6CDD1D);
}

/*
 * rng_below - uniform-enough value in [0, n) by multiply-high (no modulo
 * bias worth mentioning for n < 2^32).  In: n > 0.
 */
static size_t rng_below(uint64_t *s, size_t n)
{
	__extension__ typedef unsigned __int128 u128;

	return (size_t)(((u128)rng_next(s) * n) >> 64);
}

/* ---- memory ---------------------------------------------------------------- */

/*
 * map_locked - anonymous private mapping of len bytes, populated, with
 * transparent huge pages disabled (so every 4 KiB page has a stable
 * guest-physical frame) and locked if possible.
 * Out: the mapping, or NULL with the reason in err.  *locked tells
 * whether mlock() succeeded (failure is not fatal).
 */
static void *map_locked(struct errmsg *err, size_t len, const char *what,
			bool *locked)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p == MAP_FAILED) {
		set_error(err, "mmap of %zu bytes for %s: %s", len, what,
			  strerror(errno));
		return NULL;
	}
	(void)madvise(p, len, MADV_NOHUGEPAGE);
	*locked = mlock(p, len) == 0;
	return p;
}

/*
 * page_ptr - address of page idx.  In: idx < st->npages.
 */
static uint64_t *page_ptr(const struct state *st, size_t idx)
{
	return st->pages + idx * PATTERN_WORDS;
}

/*
 * fill_page - write page idx's content for generation gen.
 */
static void fill_page(const struct config *cfg, const struct state *st,
		      size_t idx, uint32_t gen)
{
	uint64_t base = pattern_base(cfg->seed, idx, gen);

	if (cfg->content == CONTENT_TEXT)
		pattern_text_fill(page_ptr(st, idx), base, &cfg->text);
	else
		pattern_fill(page_ptr(st, idx), base);
}

/*
 * state_init - map and fill all pages (generation 0) and the secret
 * region.  In: cfg validated; st zeroed.  Out: 0, or -1 with the reason
 * in err (st may hold partial mappings; state_free() releases them).
 */
static int state_init(struct errmsg *err, const struct config *cfg,
		      struct state *st)
{
	bool locked_pages = false;
	bool locked_gens = false;
	bool locked_secret = true;
	uint64_t npages;

	if (__builtin_mul_overflow(cfg->mib, (uint64_t)PAGES_PER_MIB, &npages) ||
	    npages > SIZE_MAX / PAGE_SIZE_BYTES)
		return set_error(err, "%smib=%" PRIu64 " is too large",
				 KEY_PREFIX, cfg->mib);
	st->npages = (size_t)npages;
	st->region_bytes = st->npages * PAGE_SIZE_BYTES;
	st->gens_bytes = st->npages * sizeof(*st->gens);

	st->gens = map_locked(err, st->gens_bytes, "generations", &locked_gens);
	if (st->gens == NULL)
		return -1;
	st->pages = map_locked(err, st->region_bytes, "pages", &locked_pages);
	if (st->pages == NULL)
		return -1;
	for (size_t i = 0; i < st->npages; i++) {
		st->gens[i] = 0;
		fill_page(cfg, st, i, 0);
	}
	if (cfg->secret[0] != '\0') {
		st->secret_region = map_locked(err, SECRET_REGION_BYTES,
					       "secret", &locked_secret);
		if (st->secret_region == NULL)
			return -1;
	}
	if (!(locked_pages && locked_gens && locked_secret) &&
	    emit(err, "warning: mlock failed, memory may be swapped or moved") != 0)
		return -1;
	/* xorshift state must be nonzero; mix the seed so seed=0 works. */
	st->rng = pattern_mix64(cfg->seed ^ PATTERN_GEN_MUL) | 1u;
	st->corrupt_lines_left = CORRUPT_LINES_PER_SEC;
	return 0;
}

/*
 * state_free - unmap everything state_init() mapped (NULL-safe).
 */
static void state_free(struct state *st)
{
	if (st->pages != NULL)
		munmap(st->pages, st->region_bytes);
	if (st->gens != NULL)
		munmap(st->gens, st->gens_bytes);
	if (st->secret_region != NULL)
		munmap(st->secret_region, SECRET_REGION_BYTES);
	st->pages = NULL;
	st->gens = NULL;
	st->secret_region = NULL;
}

/*
 * place_secret - fill the secret region with back-to-back copies of the
 * secret as plain bytes (the rest stays zero) and report the count.
 * In: cfg->secret non-empty, st->secret_region mapped.
 * Out: 0, or -1 with the reason in err (stdout failure).
 */
static int place_secret(struct errmsg *err, const struct config *cfg,
			struct state *st)
{
	size_t len = strlen(cfg->secret);
	size_t copies = SECRET_REGION_BYTES / len;

	for (size_t i = 0; i < copies; i++)
		memcpy(st->secret_region + i * len, cfg->secret, len);
	return emit(err, "secret placed copies=%zu", copies);
}

/*
 * report_page0_gpa - print the guest-physical address of page 0, found
 * through /proc/self/pagemap (needs CAP_SYS_ADMIN for real PFNs).
 * Out: 0 (an unavailable address is reported as a warning line, not an
 * error), or -1 with the reason in err if stdout is unwritable.
 */
static int report_page0_gpa(struct errmsg *err, const struct state *st)
{
	int rc = -1;
	uint64_t entry = 0;
	/* pagemap has one entry per base page; x86 base pages are 4 KiB. */
	uint64_t vpn = (uint64_t)(uintptr_t)st->pages / PAGE_SIZE_BYTES;
	uint64_t pfn;
	ssize_t n;
	int fd = open(PAGEMAP_PATH, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		rc = emit(err, "warning: page0 gpa unavailable: open %s: %s",
			  PAGEMAP_PATH, strerror(errno));
		goto out;
	}
	n = pread(fd, &entry, sizeof(entry), (off_t)(vpn * sizeof(entry)));
	if (n != (ssize_t)sizeof(entry)) {
		rc = emit(err, "warning: page0 gpa unavailable: read %s: %s",
			  PAGEMAP_PATH, n < 0 ? strerror(errno) : "short read");
		goto out;
	}
	pfn = entry & PAGEMAP_PFN_MASK;
	if ((entry & PAGEMAP_PRESENT) == 0 || pfn == 0) {
		rc = emit(err,
			  "warning: page0 gpa unavailable: pagemap entry "
			  "0x%016" PRIx64 " (not present or no privilege)",
			  entry);
		goto out;
	}
	rc = emit(err, "page0 gpa=0x%" PRIx64, pfn * PAGE_SIZE_BYTES);
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

/* ---- the workload --------------------------------------------------------- */

/*
 * dirty_page - advance page idx to its next generation and rewrite it.
 */
static void dirty_page(const struct config *cfg, struct state *st, size_t idx)
{
	uint32_t gen = st->gens[idx] + 1u; /* wraps by design */

	st->gens[idx] = gen;
	fill_page(cfg, st, idx, gen);
	st->dirtied++;
}

/*
 * dirty_random - dirty n pseudo-randomly chosen pages.
 */
static void dirty_random(const struct config *cfg, struct state *st, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dirty_page(cfg, st, rng_below(&st->rng, st->npages));
}

/*
 * verify_batch - verify the next n pages round-robin.  A corrupt page is
 * counted, reported (within the per-second line budget) and rewritten
 * with its current generation so the run continues.
 * Out: 0, or -1 with the reason in err if stdout is unwritable.
 */
static int verify_batch(struct errmsg *err, const struct config *cfg,
			struct state *st, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t idx = st->verify_next;
		uint32_t gen = st->gens[idx];
		uint64_t base = pattern_base(cfg->seed, idx, gen);
		size_t bad = 0;
		uint64_t got = 0;

		bool ok = cfg->content == CONTENT_TEXT
				  ? pattern_text_check(page_ptr(st, idx), base,
						       &cfg->text, &bad, &got)
				  : pattern_check(page_ptr(st, idx), base,
						  &bad, &got);

		if (!ok) {
			uint64_t want = cfg->content == CONTENT_TEXT
						? pattern_text_word(base, bad,
								    &cfg->text)
						: pattern_word(base, bad);

			st->errors++;
			if (st->corrupt_lines_left > 0) {
				st->corrupt_lines_left--;
				if (emit(err,
					 "CORRUPTION page=%zu gen=%" PRIu32
					 " offset=%zu expected=%016" PRIx64
					 " got=%016" PRIx64,
					 idx, gen, bad * sizeof(uint64_t),
					 want, got) != 0)
					return -1;
			}
			fill_page(cfg, st, idx, gen);
		}
		st->verified++;
		st->verify_next = idx + 1;
		if (st->verify_next == st->npages) {
			st->verify_next = 0;
			st->passes++;
		}
	}
	return 0;
}

/*
 * dirty_target - how many pages should have been dirtied elapsed_ns after
 * start at rate pages/s.  Overflow-safe: rate <= MAX_RATE so
 * rate * (elapsed % 1s) < 2^57, and whole seconds * rate fits for any
 * realistic uptime (saturates otherwise).
 */
static uint64_t dirty_target(uint64_t rate, uint64_t elapsed_ns)
{
	uint64_t whole;
	uint64_t part = rate * (elapsed_ns % NS_PER_SEC) / NS_PER_SEC;

	if (__builtin_mul_overflow(elapsed_ns / NS_PER_SEC, rate, &whole) ||
	    __builtin_add_overflow(whole, part, &whole))
		return UINT64_MAX;
	return whole;
}

/*
 * heartbeat - print the heartbeat line for seq and reset the per-second
 * corruption line budget.  Out: 0, or -1 with the reason in err.
 */
static int heartbeat(struct errmsg *err, struct state *st, uint64_t seq)
{
	st->corrupt_lines_left = CORRUPT_LINES_PER_SEC;
	if (st->disk.fd >= 0) {
		uint64_t got = 0;
		int rc = disk_check(&st->disk, &got);

		if (rc != 0) {
			st->errors++;
			if (emit(err,
				 "DISK MISMATCH disk=%" PRIu64
				 " memory=%" PRIu64 "%s",
				 got, st->disk.written,
				 rc < 0 ? " (read failed)" : "") != 0)
				return -1;
		}
		if (disk_write(&st->disk, seq) != 0)
			return set_error(err, "writing %s: %s", "the disk",
					 strerror(errno));
	}
	return emit(err,
		    "hb seq=%" PRIu64 " verified=%" PRIu64 " dirtied=%" PRIu64
		    " errors=%" PRIu64 " passes=%" PRIu64,
		    seq, st->verified, st->dirtied, st->errors, st->passes);
}

/*
 * run - the main loop; never returns unless stdout fails.
 *
 * Time is cut into TICK_NS ticks; the first duty% of each tick is busy
 * (dirtying and verifying), the rest is slept away.  Dirtying follows a
 * schedule of rate pages/s measured from the start, checked between
 * verify batches so writes are spread evenly; a schedule that fell behind
 * (e.g. the VM was paused) catches up at most BACKLOG_TICKS ticks' worth.
 * rate=max dirties MAX_RATE_DIRTY_BATCH pages per VERIFY_BATCH verified.
 * A heartbeat is printed every second; missed seconds are skipped, not
 * replayed.
 * Out: -1 with the reason in err.
 */
static int run(struct errmsg *err, const struct config *cfg, struct state *st)
{
	const uint64_t busy_ns = TICK_NS * cfg->duty / PERCENT;
	const uint64_t backlog_cap =
		cfg->rate / (NS_PER_SEC / TICK_NS) * BACKLOG_TICKS + 1u;
	uint64_t start = now_ns();
	uint64_t next_hb = start + NS_PER_SEC;
	uint64_t tick_start = start;
	uint64_t seq = 0;
	uint64_t scheduled = 0; /* schedule slots consumed (done or dropped) */

	for (;;) {
		uint64_t now = now_ns();

		if (now >= next_hb) {
			if (heartbeat(err, st, ++seq) != 0)
				return -1;
			next_hb += NS_PER_SEC;
			if (next_hb <= now)
				next_hb = now + NS_PER_SEC;
		}
		if (now - tick_start >= TICK_NS)
			tick_start = (now - tick_start < 2 * TICK_NS) ?
					     tick_start + TICK_NS :
					     now;
		if (now - tick_start >= busy_ns) {
			uint64_t wake = tick_start + TICK_NS;

			sleep_until_ns(wake < next_hb ? wake : next_hb);
			continue;
		}

		if (cfg->rate_max) {
			dirty_random(cfg, st, MAX_RATE_DIRTY_BATCH);
		} else if (cfg->rate > 0) {
			uint64_t target = dirty_target(cfg->rate, now - start);
			uint64_t owed = target > scheduled ? target - scheduled : 0;

			if (owed > backlog_cap) {
				scheduled += owed - backlog_cap;
				owed = backlog_cap;
			}
			if (owed > DIRTY_BATCH)
				owed = DIRTY_BATCH;
			dirty_random(cfg, st, (size_t)owed);
			scheduled += owed;
		}
		if (verify_batch(err, cfg, st, VERIFY_BATCH) != 0)
			return -1;
	}
}

/*
 * main - parse parameters, set up memory, print the preamble lines, run.
 * Only returns on failure: prints "memload: error: <reason>" and exits
 * with EXIT_FAILURE (normally memload runs until the guest powers off).
 */
int main(int argc, char **argv)
{
	struct errmsg err = { .text = "unknown error" };
	struct config cfg;
	struct state st;
	char rate_text[24];

	memset(&st, 0, sizeof(st));
	if (load_config(&err, argc, argv, &cfg) != 0)
		goto out;
	if (state_init(&err, &cfg, &st) != 0)
		goto out;
	if (report_page0_gpa(&err, &st) != 0)
		goto out;
	if (cfg.secret[0] != '\0' && place_secret(&err, &cfg, &st) != 0)
		goto out;
	st.disk.fd = -1;
	if (cfg.disk[0] != '\0' && disk_open(&st.disk, cfg.disk) != 0) {
		set_error(&err, "disk mode: %s: %s", cfg.disk, strerror(errno));
		goto out;
	}
	if (cfg.rate_max)
		snprintf(rate_text, sizeof(rate_text), "max");
	else
		snprintf(rate_text, sizeof(rate_text), "%" PRIu64, cfg.rate);
	if (emit(&err,
		 "ready mib=%" PRIu64 " pages=%zu rate=%s seed=%" PRIu64,
		 cfg.mib, st.npages, rate_text, cfg.seed) != 0)
		goto out;
	(void)run(&err, &cfg, &st);
out:
	state_free(&st);
	print_error(&err);
	return EXIT_FAILURE;
}
