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
 * Usage: memload [memload.KEY=VALUE ...]
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

#include "pattern.h"

/* ---- named constants ---------------------------------------------------- */

#define PAGE_SIZE_BYTES PATTERN_PAGE_SIZE
#define PAGES_PER_MIB (1024u * 1024u / PAGE_SIZE_BYTES)
#define NS_PER_SEC UINT64_C(1000000000)
#define TICK_NS UINT64_C(10000000) /* duty-cycle period: 10 ms */
#define PERCENT 100u

#define DEFAULT_MIB 16u
#define MAX_MIB 65536u /* 64 GiB: far above any test guest */
#define DEFAULT_RATE 0u
#define MAX_RATE 100000000u /* pages/s; beyond any real workload */
#define DEFAULT_SEED 1u
#define DEFAULT_DUTY 100u
#define MIN_DUTY 1u
#define MAX_DUTY 100u
#define SECRET_MAX_LEN 64u
#define SECRET_REGION_BYTES (64u * 1024u)

#define VERIFY_BATCH 16u /* pages verified between clock reads */
#define DIRTY_BATCH 16u /* max scheduled pages dirtied per step */
#define MAX_RATE_DIRTY_BATCH 48u /* rate=max: 3 dirty : 1 verify */
#define BACKLOG_TICKS 10u /* a late schedule catches up at most 100 ms */
#define CORRUPT_LINES_PER_SEC 10u

#define CMDLINE_PATH "/proc/cmdline"
#define CMDLINE_MAX 4096u
#define PAGEMAP_PATH "/proc/self/pagemap"
#define PAGEMAP_PRESENT (UINT64_C(1) << 63)
#define PAGEMAP_PFN_MASK ((UINT64_C(1) << 55) - 1)
#define KEY_PREFIX "memload."
#define LINE_MAX_LEN 512u
#define ERRMSG_MAX 256u

/* ---- types ----------------------------------------------------------------- */

/* Human-readable reason of the last failure, filled by set_error(). */
struct errmsg {
	char text[ERRMSG_MAX];
};

/* Page content (memload.content). */
enum content {
	CONTENT_PATTERN, /* incompressible words (pattern_fill) */
	CONTENT_TEXT,    /* text-like, about 3:1 under zstd -1 */
};

/* Parsed parameters. */
struct config {
	uint64_t mib;
	uint64_t rate; /* pages/s; ignored when rate_max */
	bool rate_max;
	uint64_t seed;
	uint64_t duty; /* percent of each tick that may be busy */
	enum content content;
	struct pattern_text text; /* CONTENT_TEXT's tables */
	char secret[SECRET_MAX_LEN + 1]; /* empty: no secret */
};

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
};

/* ---- small helpers ----------------------------------------------------- */

/*
 * set_error - record a formatted failure reason.
 * In: err valid, printf-style format.  Out: err->text holds the message
 * (truncated to ERRMSG_MAX - 1 bytes).  Returns -1 so callers can write
 * "rc = set_error(...)".
 */
__attribute__((format(printf, 2, 3)))
static int set_error(struct errmsg *err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err->text, sizeof(err->text), fmt, ap);
	va_end(ap);
	return -1;
}

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

/* ---- parameter parsing ----------------------------------------------------- */

/*
 * parse_u64 - strict unsigned integer: decimal digits, or 0x + hex digits.
 * No sign, no whitespace, no suffix, no overflow.
 * In: key (for messages), text, inclusive range [min, max].
 * Out: 0 and *out set, or -1 with a precise reason in err.
 */
static int parse_u64(struct errmsg *err, const char *key, const char *text,
		     uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned base = 10;
	const char *p = text;
	uint64_t v = 0;

	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	if (*p == '\0')
		return set_error(err, "%s%s='%s' is not a number", KEY_PREFIX,
				 key, text);
	for (; *p != '\0'; p++) {
		unsigned d;

		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a') + 10u;
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A') + 10u;
		else
			return set_error(err,
					 "%s%s='%s' is not a %s integer",
					 KEY_PREFIX, key, text,
					 base == 16 ? "hexadecimal" :
						      "non-negative decimal");
		if (__builtin_mul_overflow(v, (uint64_t)base, &v) ||
		    __builtin_add_overflow(v, (uint64_t)d, &v))
			return set_error(err, "%s%s='%s' overflows 64 bits",
					 KEY_PREFIX, key, text);
	}
	if (v < min || v > max)
		return set_error(err,
				 "%s%s=%" PRIu64 " out of range %" PRIu64
				 "..%" PRIu64,
				 KEY_PREFIX, key, v, min, max);
	*out = v;
	return 0;
}

/*
 * parse_secret - validate a secret marker: [A-Za-z0-9_-]{1,64}.
 * Out: 0 and cfg->secret set, or -1 with the reason in err.
 */
static int parse_secret(struct errmsg *err, const char *text,
			struct config *cfg)
{
	size_t len = strlen(text);

	if (len == 0 || len > SECRET_MAX_LEN)
		return set_error(err,
				 "%ssecret must be 1..%u characters, got %zu",
				 KEY_PREFIX, SECRET_MAX_LEN, len);
	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '-';

		if (!ok)
			return set_error(err,
					 "%ssecret contains invalid character "
					 "0x%02x at position %zu (allowed: "
					 "A-Z a-z 0-9 _ -)",
					 KEY_PREFIX, (unsigned)(unsigned char)c,
					 i);
	}
	memcpy(cfg->secret, text, len + 1);
	return 0;
}

/*
 * parse_param - apply one "memload.KEY=VALUE" token to cfg.  Tokens not
 * starting with "memload." are ignored (other kernel parameters).
 * Out: 0, or -1 with a precise reason in err (unknown key, missing value,
 * bad value).  A repeated key overrides the earlier one, as in the kernel.
 */
static int parse_param(struct errmsg *err, const char *tok, struct config *cfg)
{
	const size_t plen = sizeof(KEY_PREFIX) - 1;
	char key[32];
	const char *eq;
	const char *val;
	size_t klen;

	if (strncmp(tok, KEY_PREFIX, plen) != 0)
		return 0;
	eq = strchr(tok + plen, '=');
	if (eq == NULL)
		return set_error(err, "parameter '%s' has no '=VALUE'", tok);
	klen = (size_t)(eq - (tok + plen));
	if (klen == 0 || klen >= sizeof(key))
		return set_error(err, "unknown parameter '%.*s'",
				 (int)(eq - tok), tok);
	memcpy(key, tok + plen, klen);
	key[klen] = '\0';
	val = eq + 1;

	if (strcmp(key, "mib") == 0)
		return parse_u64(err, key, val, 1, MAX_MIB, &cfg->mib);
	if (strcmp(key, "rate") == 0) {
		if (strcmp(val, "max") == 0) {
			cfg->rate_max = true;
			cfg->rate = 0;
			return 0;
		}
		cfg->rate_max = false;
		return parse_u64(err, key, val, 0, MAX_RATE, &cfg->rate);
	}
	if (strcmp(key, "seed") == 0)
		return parse_u64(err, key, val, 0, UINT64_MAX, &cfg->seed);
	if (strcmp(key, "duty") == 0)
		return parse_u64(err, key, val, MIN_DUTY, MAX_DUTY, &cfg->duty);
	if (strcmp(key, "secret") == 0)
		return parse_secret(err, val, cfg);
	if (strcmp(key, "content") == 0) {
		if (strcmp(val, "pattern") == 0)
			cfg->content = CONTENT_PATTERN;
		else if (strcmp(val, "text") == 0)
			cfg->content = CONTENT_TEXT;
		else
			return set_error(err,
					 "%scontent='%s' must be pattern or "
					 "text",
					 KEY_PREFIX, val);
		return 0;
	}
	return set_error(err,
			 "unknown parameter '%s%s' (known: mib rate seed "
			 "secret duty content)",
			 KEY_PREFIX, key);
}

/*
 * parse_tokens - split text on whitespace and apply every token.
 * In: text is modified in place (NUL-terminated tokens).
 * Out: 0, or -1 with the first failure's reason in err.
 */
static int parse_tokens(struct errmsg *err, char *text, struct config *cfg)
{
	char *save = NULL;

	for (char *tok = strtok_r(text, " \t\n", &save); tok != NULL;
	     tok = strtok_r(NULL, " \t\n", &save)) {
		if (parse_param(err, tok, cfg) != 0)
			return -1;
	}
	return 0;
}

/*
 * read_cmdline - read the kernel command line into buf (NUL-terminated).
 * In: buf of size len > 1.  Out: 0, or -1 with the reason in err.
 */
static int read_cmdline(struct errmsg *err, char *buf, size_t len)
{
	int rc = -1;
	size_t used = 0;
	int fd = open(CMDLINE_PATH, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		set_error(err, "opening %s: %s", CMDLINE_PATH, strerror(errno));
		goto out;
	}
	while (used < len - 1) {
		ssize_t n = read(fd, buf + used, len - 1 - used);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			set_error(err, "reading %s: %s", CMDLINE_PATH,
				  strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		used += (size_t)n;
	}
	buf[used] = '\0';
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

/*
 * load_config - defaults, then /proc/cmdline (argc <= 1) or argv[1..].
 * Out: 0 with cfg filled, or -1 with the reason in err.
 */
static int load_config(struct errmsg *err, int argc, char **argv,
		       struct config *cfg)
{
	char cmdline[CMDLINE_MAX];

	memset(cfg, 0, sizeof(*cfg));
	cfg->mib = DEFAULT_MIB;
	cfg->rate = DEFAULT_RATE;
	cfg->seed = DEFAULT_SEED;
	cfg->duty = DEFAULT_DUTY;
	cfg->content = CONTENT_PATTERN;
	pattern_text_init(&cfg->text);

	if (argc > 1) {
		for (int i = 1; i < argc; i++) {
			if (strncmp(argv[i], KEY_PREFIX,
				    sizeof(KEY_PREFIX) - 1) != 0)
				return set_error(err,
						 "argument '%s' is not "
						 "memload.KEY=VALUE",
						 argv[i]);
			if (parse_param(err, argv[i], cfg) != 0)
				return -1;
		}
		return 0;
	}
	if (read_cmdline(err, cmdline, sizeof(cmdline)) != 0)
		return -1;
	return parse_tokens(err, cmdline, cfg);
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
