/* common.h - shared helpers of ferry: errors, logging, checked arithmetic,
 * files and strict JSON field checks.
 *
 * Every library function in ferry reports failure through a `struct ferr`
 * that the caller owns; nothing here exits the process.
 */
#ifndef FERRY_COMMON_H
#define FERRY_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "ferry_limits.h"

#define FERRY_VERSION "0.1.0"

/* A label key=value (both valid ferry names), on VMs and hosts. */
struct label {
	char key[FERRY_NAME_MAX + 1];
	char value[FERRY_NAME_MAX + 1];
};

/* Error classes. Each maps to one API error code string and HTTP status. */
enum ferr_code {
	FERR_OK = 0,
	FERR_INVALID,     /* malformed or semantically invalid input: 400 */
	FERR_UNAUTH,      /* no or bad credentials: 401 */
	FERR_FORBIDDEN,   /* authenticated but not allowed: 403 */
	FERR_NOT_FOUND,   /* no such object or route: 404 */
	FERR_METHOD,      /* method not allowed on this route: 405 */
	FERR_CONFLICT,    /* object exists or is in the wrong state: 409 */
	FERR_TOO_LARGE,   /* request body over the limit: 413 */
	FERR_RATE,        /* rate limited: 429 */
	FERR_INTERNAL,    /* a bug or an unexpected local failure: 500 */
	FERR_UNAVAILABLE, /* a dependency (QEMU, peer) failed: 503 */
	FERR_TIMEOUT,     /* a dependency did not answer in time: 504 */
	FERR_IO,          /* file or socket failure: 500 */
	FERR__COUNT
};

struct ferr {
	enum ferr_code code;
	char msg[FERRY_ERR_MSG_MAX];
};

/* Set *err (when not NULL) to code and a printf-formatted message.
 * Always returns -1 so callers can write `return ferr_set(...)`. */
int ferr_set(struct ferr *err, enum ferr_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prefix the message already in *err with a printf-formatted context,
 * keeping its code. Returns -1. */
int ferr_wrap(struct ferr *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#ifdef __clang_analyzer__
/* Tell the static analyzer what the contracts above say: both return -1
 * (it analyses one file at a time and would otherwise take `return
 * ferr_set(...)` for a success that leaves outputs unset). */
#define ferr_set(...) ({ (void)ferr_set(__VA_ARGS__); -1; })
#define ferr_wrap(...) ({ (void)ferr_wrap(__VA_ARGS__); -1; })
#endif

/* Clear *err to FERR_OK with an empty message. */
void ferr_clear(struct ferr *err);

/* Stable machine-readable name of a code, e.g. "not_found". */
const char *ferr_code_name(enum ferr_code code);

/* HTTP status that an API error of this code is answered with. */
int ferr_http_status(enum ferr_code code);

/* Logging to stderr with a timestamp and level; never fails. */
enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
void log_set_level(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* Checked arithmetic: return false on overflow, leaving *out unspecified. */
static inline bool add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
	return !__builtin_add_overflow(a, b, out);
}
static inline bool mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
	return !__builtin_mul_overflow(a, b, out);
}
static inline bool add_size(size_t a, size_t b, size_t *out)
{
	return !__builtin_add_overflow(a, b, out);
}

/* Parse a whole decimal string into *out, within [min, max].
 * Rejects signs, spaces, empty strings and trailing garbage. 0 or -1. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* snprintf that fails (returns -1 with FERR_INVALID naming `what`) instead of
 * truncating silently. */
int fmt_checked(char *buf, size_t len, struct ferr *err, const char *what,
		const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Monotonic clock in milliseconds. */
uint64_t now_ms(void);

/* Wall clock in milliseconds since the epoch. */
uint64_t wall_ms(void);

/* Write len bytes atomically to path: a temporary file in the same folder,
 * fsync, rename over path, fsync of the folder. The file gets `mode`. On
 * failure path is unchanged and the temporary file is removed. */
int file_write_atomic(const char *path, const void *data, size_t len,
		      unsigned mode, struct ferr *err);

/* Read a whole regular file of at most max bytes into a NUL-terminated
 * malloc'd buffer (*out, length *len). A larger file is FERR_TOO_LARGE. */
int file_read_all(const char *path, size_t max, char **out, size_t *len,
		  struct ferr *err);

/* Create dir and its parents with mode (like mkdir -p). */
int mkdir_p(const char *dir, unsigned mode, struct ferr *err);

/* Remove a folder and everything below it (no symlink following). */
int rmtree(const char *dir, struct ferr *err);

/* Write all len bytes to fd, retrying on EINTR and short writes. 0, or -1
 * with errno. */
int fd_write_all(int fd, const void *data, size_t len);

/* Read from fd into buf until end of file or cap bytes, retrying on EINTR
 * and short reads; *got gets the count. 0, or -1 with errno. */
int fd_read_upto(int fd, void *buf, size_t cap, size_t *got);

/* Make fd non-blocking / close-on-exec. 0 or -1 with errno. */
int fd_set_nonblock(int fd);

/* Overwrite a secret with zeros in a way the compiler keeps. */
void secret_wipe(void *p, size_t len);

/* Make jansson wipe every block it frees (call once, before any JSON is
 * made): its strings and buffers hold session keys on their way. */
void json_wipe_on_free(void);

/* Strict JSON object checks. `allowed` is a NULL-terminated list of field
 * names; any other key in obj is FERR_INVALID naming the field. */
int json_check_fields(const json_t *obj, const char *const *allowed,
		      const char *what, struct ferr *err);

/* Typed getters for an optional field: absent leaves *out unchanged and
 * returns 0; present with the wrong type or out of range is FERR_INVALID
 * naming `what.key`. */
int json_get_string(const json_t *obj, const char *key, const char *what,
		    size_t max_len, const char **out, struct ferr *err);
int json_get_u64(const json_t *obj, const char *key, const char *what,
		 uint64_t min, uint64_t max, uint64_t *out, struct ferr *err);
int json_get_bool(const json_t *obj, const char *key, const char *what,
		  bool *out, struct ferr *err);

/* FERR_INVALID ("WHAT: JSON nested deeper than N levels") when v nests
 * deeper than FERRY_JSON_DEPTH_MAX (an object or array is one level). */
int json_check_depth(const json_t *v, const char *what, struct ferr *err);

/* Parse text (len bytes, need not be NUL-terminated) as a JSON object
 * nested at most FERRY_JSON_DEPTH_MAX levels deep (json_check_depth). */
json_t *json_parse_object(const char *text, size_t len, const char *what,
			  struct ferr *err);

/* Is s a valid ferry object name: [a-z0-9][a-z0-9._-]{0,62}? */
bool name_is_valid(const char *s);

/* Is s a lowercase 8-4-4-4-12 hex UUID (as VM definitions carry)? */
bool uuid_is_valid(const char *s);

#endif
