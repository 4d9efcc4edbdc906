/* metrics.c - the Prometheus text exposition writer (metrics.h). */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct metrics {
	char *buf;
	size_t len, cap;
	struct ferr err;        /* the first error; FERR_OK while none */
	char family[METRICS_NAME_MAX + 1]; /* the current one, "" before */
	enum metric_type type;
	char *names[METRICS_FAMILIES_MAX]; /* every family begun */
	size_t nfamilies;
};

static bool failed(const struct metrics *m)
{
	return m->err.code != FERR_OK;
}

/* Keep the first error only. */
#define FAIL(m, code, ...)                                        \
	do {                                                      \
		if (!failed(m))                                   \
			ferr_set(&(m)->err, (code), __VA_ARGS__); \
	} while (0)

struct metrics *metrics_new(void)
{
	return calloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nfamilies; i++)
		free(m->names[i]);
	free(m->buf);
	free(m);
}

/* Append len bytes, growing the buffer up to METRICS_TEXT_MAX. */
static void put(struct metrics *m, const char *s, size_t len)
{
	size_t need;

	if (failed(m))
		return;
	if (!add_size(m->len, len, &need) || !add_size(need, 1, &need) ||
	    need > METRICS_TEXT_MAX) {
		FAIL(m, FERR_TOO_LARGE, "metrics: the text would pass %u bytes",
		     METRICS_TEXT_MAX);
		return;
	}
	if (need > m->cap) {
		size_t cap = m->cap ? m->cap : 4096;
		char *nb;

		while (cap < need)
			cap *= 2;
		if (cap > METRICS_TEXT_MAX)
			cap = METRICS_TEXT_MAX;
		nb = realloc(m->buf, cap);
		if (!nb) {
			FAIL(m, FERR_INTERNAL, "metrics: out of memory");
			return;
		}
		m->buf = nb;
		m->cap = cap;
	}
	memcpy(m->buf + m->len, s, len);
	m->len += len;
	m->buf[m->len] = '\0';
}

static void puts_(struct metrics *m, const char *s)
{
	put(m, s, strlen(s));
}

/* Append s with backslash, newline and (in label values) double quote
 * escaped, as the format requires. */
static void put_escaped(struct metrics *m, const char *s, bool quote)
{
	const char *run = s;

	for (; *s; s++) {
		const char *esc = *s == '\\'		? "\\\\"
				  : *s == '\n'		? "\\n"
				  : quote && *s == '"' ? "\\\""
							: NULL;

		if (!esc)
			continue;
		put(m, run, (size_t)(s - run));
		puts_(m, esc);
		run = s + 1;
	}
	put(m, run, (size_t)(s - run));
}

/* Is s well-formed UTF-8 (no overlong forms, surrogates or code points
 * past U+10FFFF)? */
static bool utf8_ok(const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	while (*s) {
		unsigned c = *s++, n, cp, min;

		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, cp = c & 0x1f, min = 0x80;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, cp = c & 0x0f, min = 0x800;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, cp = c & 0x07, min = 0x10000;
		else
			return false;
		for (unsigned i = 0; i < n; i++, s++) {
			if ((*s & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (*s & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
	}
	return true;
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metric names (colon), without the colon
 * for label names. */
static bool name_ok(const char *s, bool colon)
{
	size_t n = strlen(s);

	if (n == 0 || n > METRICS_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     c == '_' || (colon && c == ':');

		if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
			return false;
	}
	return true;
}

/* A value as the format writes it: integers exactly, other numbers in the
 * shortest form that reads back the same, +Inf, -Inf, NaN. */
static void format_value(double v, char s[40])
{
	if (isnan(v))
		snprintf(s, 40, "NaN");
	else if (isinf(v))
		snprintf(s, 40, "%sInf", v > 0 ? "+" : "-");
	else if (v == floor(v) && fabs(v) < 9007199254740992.0)
		snprintf(s, 40, "%.0f", v);
	else
		for (int p = 15; p <= 17; p++) {
			snprintf(s, 40, "%.*g", p, v);
			if (strtod(s, NULL) == v)
				break;
		}
}

static void put_value(struct metrics *m, double v)
{
	char s[40];

	format_value(v, s);
	puts_(m, s);
}

void metrics_family(struct metrics *m, const char *name, enum metric_type t,
		    const char *help)
{
	static const char *const types[] = { "counter", "gauge", "histogram" };
	char *copy;

	if (failed(m))
		return;
	if (!name_ok(name, true)) {
		FAIL(m, FERR_INVALID, "metrics: \"%.64s\" is not a metric name",
		     name);
		return;
	}
	if (!utf8_ok(help)) {
		FAIL(m, FERR_INVALID, "metrics: %s: help is not UTF-8", name);
		return;
	}
	for (size_t i = 0; i < m->nfamilies; i++) {
		if (!strcmp(m->names[i], name)) {
			FAIL(m, FERR_INVALID, "metrics: family %s begun twice",
			     name);
			return;
		}
	}
	if (m->nfamilies == METRICS_FAMILIES_MAX) {
		FAIL(m, FERR_TOO_LARGE, "metrics: more than %d families",
		     METRICS_FAMILIES_MAX);
		return;
	}
	copy = strdup(name);
	if (!copy) {
		FAIL(m, FERR_INTERNAL, "metrics: out of memory");
		return;
	}
	m->names[m->nfamilies++] = copy;
	snprintf(m->family, sizeof(m->family), "%s", name);
	m->type = t;
	puts_(m, "# HELP ");
	puts_(m, name);
	puts_(m, " ");
	put_escaped(m, help, false);
	puts_(m, "\n# TYPE ");
	puts_(m, name);
	puts_(m, " ");
	puts_(m, types[t]);
	puts_(m, "\n");
}

/* Check n labels: valid, distinct names (not "le" in a histogram), UTF-8
 * values. */
static bool labels_ok(struct metrics *m, const struct metric_label *l,
		      size_t n)
{
	if (n > METRICS_LABELS_MAX) {
		FAIL(m, FERR_INVALID, "metrics: %s: more than %d labels",
		     m->family, METRICS_LABELS_MAX);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		if (!name_ok(l[i].name, false) ||
		    !strncmp(l[i].name, "__", 2) ||
		    (m->type == METRIC_HISTOGRAM && !strcmp(l[i].name, "le"))) {
			FAIL(m, FERR_INVALID,
			     "metrics: %s: \"%.64s\" is not a label name",
			     m->family, l[i].name);
			return false;
		}
		if (!utf8_ok(l[i].value)) {
			FAIL(m, FERR_INVALID,
			     "metrics: %s: label %s is not UTF-8", m->family,
			     l[i].name);
			return false;
		}
		for (size_t k = 0; k < i; k++) {
			if (!strcmp(l[i].name, l[k].name)) {
				FAIL(m, FERR_INVALID,
				     "metrics: %s: label %s given twice",
				     m->family, l[i].name);
				return false;
			}
		}
	}
	return true;
}

/* NAME{labels[,le="..."]} VALUE\n */
static void put_sample(struct metrics *m, const char *suffix,
		       const struct metric_label *l, size_t n, const char *le,
		       double v)
{
	puts_(m, m->family);
	puts_(m, suffix);
	if (n || le) {
		puts_(m, "{");
		for (size_t i = 0; i < n; i++) {
			puts_(m, i ? "," : "");
			puts_(m, l[i].name);
			puts_(m, "=\"");
			put_escaped(m, l[i].value, true);
			puts_(m, "\"");
		}
		if (le) {
			puts_(m, n ? ",le=\"" : "le=\"");
			puts_(m, le);
			puts_(m, "\"");
		}
		puts_(m, "}");
	}
	puts_(m, " ");
	put_value(m, v);
	puts_(m, "\n");
}

void metrics_sample(struct metrics *m, const struct metric_label *labels,
		    size_t n, double value)
{
	if (failed(m))
		return;
	if (!m->family[0] || m->type == METRIC_HISTOGRAM) {
		FAIL(m, FERR_INVALID,
		     "metrics: a plain sample needs a counter or gauge family "
		     "(current: \"%s\")",
		     m->family);
		return;
	}
	if (m->type == METRIC_COUNTER && !(value >= 0 && isfinite(value))) {
		FAIL(m, FERR_INVALID,
		     "metrics: %s: a counter must be finite and not negative",
		     m->family);
		return;
	}
	if (labels_ok(m, labels, n))
		put_sample(m, "", labels, n, NULL, value);
}

void metrics_histogram(struct metrics *m, const struct metric_label *labels,
		       size_t n, const struct metric_hist *h)
{
	uint64_t cum = 0;
	char le[40];

	if (failed(m))
		return;
	if (!m->family[0] || m->type != METRIC_HISTOGRAM) {
		FAIL(m, FERR_INVALID,
		     "metrics: a histogram series needs a histogram family "
		     "(current: \"%s\")",
		     m->family);
		return;
	}
	if (h->nb > METRICS_BUCKETS_MAX || !isfinite(h->sum)) {
		FAIL(m, FERR_INVALID,
		     "metrics: %s: more than %d buckets or a sum that is not "
		     "finite",
		     m->family, METRICS_BUCKETS_MAX);
		return;
	}
	for (size_t i = 0; i < h->nb; i++) {
		if (!isfinite(h->bounds[i]) ||
		    (i > 0 && !(h->bounds[i] > h->bounds[i - 1]))) {
			FAIL(m, FERR_INVALID,
			     "metrics: %s: bucket bounds must be finite and "
			     "strictly ascending",
			     m->family);
			return;
		}
	}
	if (!labels_ok(m, labels, n))
		return;
	for (size_t i = 0; i <= h->nb; i++) {
		if (!add_u64(cum, h->counts[i], &cum)) {
			FAIL(m, FERR_INVALID, "metrics: %s: count overflow",
			     m->family);
			return;
		}
		if (i < h->nb)
			format_value(h->bounds[i], le);
		else
			snprintf(le, sizeof(le), "+Inf");
		put_sample(m, "_bucket", labels, n, le, (double)cum);
	}
	put_sample(m, "_sum", labels, n, NULL, h->sum);
	put_sample(m, "_count", labels, n, NULL, (double)cum);
}

int metrics_finish(struct metrics *m, char **text, size_t *len,
		   struct ferr *err)
{
	if (!failed(m) && !m->buf)
		puts_(m, ""); /* an empty exposition is an empty text */
	if (failed(m)) {
		*err = m->err;
		return -1;
	}
	*text = m->buf;
	*len = m->len;
	m->buf = NULL;
	m->len = m->cap = 0;
	FAIL(m, FERR_INVALID, "metrics: finished already");
	return 0;
}
