/*
 * params.h - memload's parameters: memload.KEY=VALUE tokens from the
 * kernel command line (or argv), parsed strictly (params.c).
 */
#ifndef MEMLOAD_PARAMS_H
#define MEMLOAD_PARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "pattern.h"

#define DEFAULT_MIB 16u
#define MAX_MIB 65536u /* 64 GiB: far above any test guest */
#define DEFAULT_RATE 0u
#define MAX_RATE 100000000u /* pages/s; beyond any real workload */
#define DEFAULT_SEED 1u
#define DEFAULT_DUTY 100u
#define MIN_DUTY 1u
#define MAX_DUTY 100u
#define SECRET_MAX_LEN 64u
#define PARAM_DISK_MAX 64u /* memload.disk: a /dev/ path */
#define KEY_PREFIX "memload."
#define ERRMSG_MAX 256u

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
	char disk[PARAM_DISK_MAX]; /* empty: no disk mode (disk.h) */
};

/*
 * set_error - record a formatted failure reason.
 * In: err valid, printf-style format.  Out: err->text holds the message
 * (truncated to ERRMSG_MAX - 1 bytes).  Returns -1 so callers can write
 * "rc = set_error(...)".
 */
__attribute__((format(printf, 2, 3)))
int set_error(struct errmsg *err, const char *fmt, ...);

/*
 * load_config - defaults, then /proc/cmdline (argc <= 1) or argv[1..].
 * Unknown keys, missing or bad values are refused with a precise reason.
 * Out: 0 with cfg filled, or -1 with the reason in err.
 */
int load_config(struct errmsg *err, int argc, char **argv,
		struct config *cfg);

#endif
