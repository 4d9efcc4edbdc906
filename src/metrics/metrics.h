/* metrics.h - the Prometheus text exposition format (version 0.0.4): a
 * writer that renders metric families into one text and refuses what the
 * format forbids. Pure: memory only, no I/O, no clock.
 *
 * A family is begun once (its # HELP and # TYPE lines come first), then
 * gets its samples; beginning the next family ends it. Errors are sticky:
 * the first one (a bad name, a label name or value the format cannot
 * carry, a family begun twice, a sample outside a family or of the wrong
 * kind, a negative counter, the text growing past METRICS_TEXT_MAX, no
 * memory) is kept, every later call does nothing, and metrics_finish
 * reports it. So a caller writes its families without checking each call.
 *
 * Not checked here (the caller's contract): each label set appears at most
 * once per family.
 */
#ifndef FERRY_METRICS_H
#define FERRY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* What an HTTP reply carrying the text says it is. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#define METRICS_TEXT_MAX (8u * 1024 * 1024) /* bytes of one exposition */
#define METRICS_FAMILIES_MAX 256            /* families in one exposition */
#define METRICS_NAME_MAX 128                /* bytes of a metric name */
#define METRICS_LABELS_MAX 8                /* labels of one sample */
#define METRICS_BUCKETS_MAX 64              /* finite buckets of a histogram */

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

/* A label of a sample: name [a-zA-Z_][a-zA-Z0-9_]* (not "__..." and, in a
 * histogram, not "le"); value any UTF-8 text (escaped on output). */
struct metric_label {
	const char *name;
	const char *value;
};

/* One histogram series: nb finite upper bounds, strictly ascending;
 * counts[i] observations fell in bucket i (above bounds[i-1], at most
 * bounds[i]); counts[nb] above the last bound. Per bucket, not cumulative:
 * the writer accumulates. */
struct metric_hist {
	const double *bounds;
	const uint64_t *counts; /* nb + 1 */
	size_t nb;
	double sum;             /* of every observation */
};

struct metrics;

/* A new, empty exposition, or NULL when out of memory. */
struct metrics *metrics_new(void);

/* Free it (NULL is fine). */
void metrics_free(struct metrics *m);

/* Begin family `name` ([a-zA-Z_:][a-zA-Z0-9_:]*, at most METRICS_NAME_MAX
 * bytes, new in this exposition) of type t with help text (any UTF-8;
 * backslashes and newlines are escaped). */
void metrics_family(struct metrics *m, const char *name, enum metric_type t,
		    const char *help);

/* A sample of the current counter or gauge family with n labels (may be
 * 0). A counter's value is finite and not negative. */
void metrics_sample(struct metrics *m, const struct metric_label *labels,
		    size_t n, double value);

/* A series of the current histogram family with n labels: its _bucket
 * lines (cumulative, ending with le="+Inf"), _sum and _count. */
void metrics_histogram(struct metrics *m, const struct metric_label *labels,
		       size_t n, const struct metric_hist *h);

/* The text (malloc'd, NUL-terminated, *len bytes without the NUL; the
 * caller frees it), or -1 with the first error. The exposition is spent
 * either way: free it next. */
int metrics_finish(struct metrics *m, char **text, size_t *len,
		   struct ferr *err);

#endif
