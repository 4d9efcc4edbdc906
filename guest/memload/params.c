/*
 * params.c - memload's parameters (params.h): memload.KEY=VALUE tokens
 * from the kernel command line or argv, each checked strictly; the line
 * formats and keys are documented in guest/README.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "params.h"

#define CMDLINE_PATH "/proc/cmdline"
#define CMDLINE_MAX 4096u

int set_error(struct errmsg *err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err->text, sizeof(err->text), fmt, ap);
	va_end(ap);
	return -1;
}

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
	if (strcmp(key, "disk") == 0) {
		if (strncmp(val, "/dev/", 5) != 0 ||
		    strlen(val) >= sizeof(cfg->disk))
			return set_error(err, "memload.disk must be a /dev/ "
					      "path");
		snprintf(cfg->disk, sizeof(cfg->disk), "%s", val);
		return 0;
	}
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
			 "secret duty disk content)",
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

int load_config(struct errmsg *err, int argc, char **argv,
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
