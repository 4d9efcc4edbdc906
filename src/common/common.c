/* common.c - errors, logging, parsing and clock helpers. */
#define _GNU_SOURCE
#include "common.h"

#include <malloc.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

static enum log_level g_log_level = LOG_INFO;

int ferr_set(struct ferr *err, enum ferr_code code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return -1;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return -1;
}

int ferr_wrap(struct ferr *err, const char *fmt, ...)
{
	char both[2 * FERRY_ERR_MSG_MAX + 2];
	size_t n;
	va_list ap;

	if (!err)
		return -1;
	va_start(ap, fmt);
	vsnprintf(both, FERRY_ERR_MSG_MAX, fmt, ap);
	va_end(ap);
	n = strlen(both);
	both[n++] = ':';
	both[n++] = ' ';
	memcpy(both + n, err->msg, strnlen(err->msg, FERRY_ERR_MSG_MAX - 1));
	both[n + strnlen(err->msg, FERRY_ERR_MSG_MAX - 1)] = '\0';
	memcpy(err->msg, both, FERRY_ERR_MSG_MAX - 1);
	err->msg[FERRY_ERR_MSG_MAX - 1] = '\0';
	if (err->code == FERR_OK)
		err->code = FERR_INTERNAL;
	return -1;
}

void ferr_clear(struct ferr *err)
{
	if (!err)
		return;
	err->code = FERR_OK;
	err->msg[0] = '\0';
}

static const struct {
	const char *name;
	int status;
} ferr_table[FERR__COUNT] = {
	[FERR_OK] = { "ok", 200 },
	[FERR_INVALID] = { "invalid_request", 400 },
	[FERR_UNAUTH] = { "unauthenticated", 401 },
	[FERR_FORBIDDEN] = { "forbidden", 403 },
	[FERR_NOT_FOUND] = { "not_found", 404 },
	[FERR_METHOD] = { "method_not_allowed", 405 },
	[FERR_CONFLICT] = { "conflict", 409 },
	[FERR_TOO_LARGE] = { "too_large", 413 },
	[FERR_RATE] = { "rate_limited", 429 },
	[FERR_INTERNAL] = { "internal", 500 },
	[FERR_UNAVAILABLE] = { "unavailable", 503 },
	[FERR_TIMEOUT] = { "timeout", 504 },
	[FERR_IO] = { "io_error", 500 },
};

const char *ferr_code_name(enum ferr_code code)
{
	if ((unsigned)code >= FERR__COUNT)
		return "internal";
	return ferr_table[code].name;
}

int ferr_http_status(enum ferr_code code)
{
	if ((unsigned)code >= FERR__COUNT)
		return 500;
	return ferr_table[code].status;
}

void log_set_level(enum log_level level)
{
	g_log_level = level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	char ts[32];
	struct timespec now;
	struct tm tm;
	va_list ap;

	if (level < g_log_level)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	flockfile(stderr);
	fprintf(stderr, "%s.%03ldZ %s: ", ts, now.tv_nsec / 1000000L,
		names[level]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s)
		return -1;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		if (!mul_u64(v, 10, &v) || !add_u64(v, (uint64_t)(*p - '0'), &v))
			return -1;
	}
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int fmt_checked(char *buf, size_t len, struct ferr *err, const char *what,
		const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len)
		return ferr_set(err, FERR_INVALID, "%s is too long", what);
	return 0;
}

uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void secret_wipe(void *p, size_t len)
{
	if (p && len)
		OPENSSL_cleanse(p, len);
}

/* jansson's free: wipe what JSON held (replies carry session keys, and
 * jansson's own buffers copy them), then free. */
static void json_wiping_free(void *p)
{
	if (p) {
		OPENSSL_cleanse(p, malloc_usable_size(p));
		free(p);
	}
}

void json_wipe_on_free(void)
{
	json_set_alloc_funcs(malloc, json_wiping_free);
}

bool name_is_valid(const char *s)
{
	size_t n;

	if (!s)
		return false;
	n = strlen(s);
	if (n == 0 || n > FERRY_NAME_MAX)
		return false;
	if (!(islower((unsigned char)s[0]) || isdigit((unsigned char)s[0])))
		return false;
	for (size_t i = 1; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(islower(c) || isdigit(c) || c == '-' || c == '_' ||
		      c == '.'))
			return false;
	}
	return true;
}

bool uuid_is_valid(const char *s)
{
	if (!s || strlen(s) != FERRY_UUID_STR_LEN)
		return false;
	for (int i = 0; i < FERRY_UUID_STR_LEN; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? s[i] != '-'
			 : !(isdigit((unsigned char)s[i]) ||
			     (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return true;
}
