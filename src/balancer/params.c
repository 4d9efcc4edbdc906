/* params.c - the decision code's parameters: defaults, ranges, names,
 * JSON (docs/balancer.md, "Parameters"). */
#define _GNU_SOURCE
#include "bal_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Defaults (docs/balancer.md, "Parameters"). */
#define DEF_HIGH 0.80
#define DEF_HEADROOM 0.10
#define DEF_IMBALANCE 0.15
#define DEF_CRITICAL 0.90         /* projected: no hold */
#define DEF_HOLD_ROUNDS 3u
/* Least peak drop worth a migration. While it runs a migration loads its
 * source and destination too (the simulator's half a core is 0.03 of a
 * 16-core host), and a few percent of noise in each VM's demand moves a
 * host's load by as much: below this, moves chase noise (was 0.03;
 * docs/balancer.md, "Results"). */
#define DEF_MIN_IMPROVEMENT 0.08
#define DEF_COOLDOWN_BASE_S (5ULL * 60)
#define DEF_COOLDOWN_MAX_S (4ULL * 3600)
#define DEF_BACKOFF_WINDOW_S (3600ULL)
#define DEF_RETURN_BAN_S (3600ULL)
#define DEF_MAX_CLUSTER 16u
#define DEF_MAX_OUT_PER_HOST FERRY_MIG_OUTGOING_DEFAULT
#define DEF_MAX_IN_PER_HOST FERRY_MIG_INCOMING_DEFAULT
#define DEF_DEST_CANDIDATES 8u
#define DEF_DEST_SCAN_MAX 64u

#define IMBALANCE_MIN 0.001
#define DEST_CANDIDATES_MAX 4096u
#define DECIMAL_INT_MAX 1000000000000000ULL /* 1e15: exact in a double */

/* ---- parameters ---- */

enum ptype { P_DOUBLE, P_UINT, P_U64 };

static const struct pfield {
	const char *key;
	enum ptype type;
	size_t off;
	double min, max;
} pfields[] = {
	{ "high", P_DOUBLE, offsetof(struct bal_params, high), BAL_HIGH_MIN,
	  BAL_LOAD_THRESHOLD_MAX },
	{ "headroom", P_DOUBLE, offsetof(struct bal_params, headroom), 0,
	  BAL_LOAD_THRESHOLD_MAX },
	{ "critical", P_DOUBLE, offsetof(struct bal_params, critical),
	  BAL_HIGH_MIN, BAL_LOAD_THRESHOLD_MAX },
	{ "imbalance", P_DOUBLE, offsetof(struct bal_params, imbalance),
	  IMBALANCE_MIN, BAL_LOAD_THRESHOLD_MAX },
	{ "hold_rounds", P_UINT, offsetof(struct bal_params, hold_rounds), 1,
	  BAL_HOLD_MAX },
	{ "min_improvement", P_DOUBLE,
	  offsetof(struct bal_params, min_improvement), 0,
	  BAL_LOAD_THRESHOLD_MAX },
	{ "cooldown_base_s", P_U64,
	  offsetof(struct bal_params, cooldown_base_s), 0,
	  (double)BAL_TIME_MAX_S },
	{ "cooldown_max_s", P_U64, offsetof(struct bal_params, cooldown_max_s),
	  0, (double)BAL_TIME_MAX_S },
	{ "backoff_window_s", P_U64,
	  offsetof(struct bal_params, backoff_window_s), 0,
	  (double)BAL_TIME_MAX_S },
	{ "return_ban_s", P_U64, offsetof(struct bal_params, return_ban_s), 0,
	  (double)BAL_TIME_MAX_S },
	{ "max_cluster", P_UINT, offsetof(struct bal_params, max_cluster), 1,
	  BAL_CAP_MAX },
	{ "max_out_per_host", P_UINT,
	  offsetof(struct bal_params, max_out_per_host), 1, BAL_CAP_MAX },
	{ "max_in_per_host", P_UINT,
	  offsetof(struct bal_params, max_in_per_host), 1, BAL_CAP_MAX },
	{ "dest_candidates", P_UINT,
	  offsetof(struct bal_params, dest_candidates), 1,
	  DEST_CANDIDATES_MAX },
	{ "dest_scan_max", P_UINT, offsetof(struct bal_params, dest_scan_max),
	  1, BAL_HOSTS_MAX },
};
#define NPFIELDS (sizeof(pfields) / sizeof(pfields[0]))

void bal_params_default(struct bal_params *p)
{
	memset(p, 0, sizeof(*p));
	p->high = DEF_HIGH;
	p->headroom = DEF_HEADROOM;
	p->critical = DEF_CRITICAL;
	p->imbalance = DEF_IMBALANCE;
	p->hold_rounds = DEF_HOLD_ROUNDS;
	p->min_improvement = DEF_MIN_IMPROVEMENT;
	p->cooldown_base_s = DEF_COOLDOWN_BASE_S;
	p->cooldown_max_s = DEF_COOLDOWN_MAX_S;
	p->backoff_window_s = DEF_BACKOFF_WINDOW_S;
	p->return_ban_s = DEF_RETURN_BAN_S;
	p->max_cluster = DEF_MAX_CLUSTER;
	p->max_out_per_host = DEF_MAX_OUT_PER_HOST;
	p->max_in_per_host = DEF_MAX_IN_PER_HOST;
	p->dest_candidates = DEF_DEST_CANDIDATES;
	p->dest_scan_max = DEF_DEST_SCAN_MAX;
}

static double pfield_get(const struct bal_params *p, const struct pfield *f)
{
	const char *base = (const char *)p + f->off;

	switch (f->type) {
	case P_DOUBLE:
		return *(const double *)(const void *)base;
	case P_UINT:
		return (double)*(const unsigned *)(const void *)base;
	case P_U64:
		return (double)*(const uint64_t *)(const void *)base;
	}
	return 0;
}

int bal_params_check(const struct bal_params *p, struct ferr *err)
{
	for (size_t i = 0; i < NPFIELDS; i++) {
		double v = pfield_get(p, &pfields[i]);

		/* written so that NaN fails too */
		if (!(v >= pfields[i].min && v <= pfields[i].max))
			return ferr_set(err, FERR_INVALID,
					"balancer parameter %s must be between "
					"%g and %g",
					pfields[i].key, pfields[i].min,
					pfields[i].max);
	}
	if (p->headroom >= p->high)
		return ferr_set(err, FERR_INVALID,
				"balancer parameter headroom (%g) must be "
				"below high (%g)",
				p->headroom, p->high);
	if (p->critical < p->high)
		return ferr_set(err, FERR_INVALID,
				"balancer parameter critical (%g) must not be "
				"below high (%g)",
				p->critical, p->high);
	if (p->cooldown_base_s > p->cooldown_max_s)
		return ferr_set(err, FERR_INVALID,
				"balancer parameter cooldown_base_s must not "
				"exceed cooldown_max_s");
	if (p->dest_candidates > p->dest_scan_max)
		return ferr_set(err, FERR_INVALID,
				"balancer parameter dest_candidates must not "
				"exceed dest_scan_max");
	return 0;
}

static const struct pfield *pfield_find(const char *key)
{
	for (size_t i = 0; i < NPFIELDS; i++)
		if (!strcmp(pfields[i].key, key))
			return &pfields[i];
	return NULL;
}

static void pfield_put(struct bal_params *p, const struct pfield *f,
		       double d, uint64_t u)
{
	char *base = (char *)p + f->off;

	switch (f->type) {
	case P_DOUBLE:
		*(double *)(void *)base = d;
		break;
	case P_UINT:
		*(unsigned *)(void *)base = (unsigned)u;
		break;
	case P_U64:
		*(uint64_t *)(void *)base = u;
		break;
	}
}

int bal_parse_decimal(const char *s, double max, double *out)
{
	uint64_t ip = 0, frac = 0, scale = 1;
	unsigned nfrac = 0;
	const char *p = s;
	double v;

	if (!s || !(*p >= '0' && *p <= '9'))
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		ip = ip * 10 + (uint64_t)(*p - '0');
		if (ip > DECIMAL_INT_MAX)
			return -1;
	}
	if (*p == '.') {
		p++;
		if (!(*p >= '0' && *p <= '9'))
			return -1;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (++nfrac > BAL_TRACE_FRACTION_DIGITS)
				return -1;
			frac = frac * 10 + (uint64_t)(*p - '0');
			scale *= 10;
		}
	}
	if (*p != '\0')
		return -1;
	v = (double)ip + (double)frac / (double)scale;
	if (!(v <= max))
		return -1;
	*out = v;
	return 0;
}

int bal_params_set(struct bal_params *p, const char *key, const char *value,
		   struct ferr *err)
{
	const struct pfield *f = pfield_find(key);
	double d = 0;
	uint64_t u = 0;

	if (!f)
		return ferr_set(err, FERR_INVALID,
				"unknown balancer parameter \"%.64s\"", key);
	if (f->type == P_DOUBLE) {
		if (bal_parse_decimal(value, f->max, &d) < 0 || d < f->min)
			return ferr_set(err, FERR_INVALID,
					"balancer parameter %s: \"%.32s\" is "
					"not a number between %g and %g",
					key, value, f->min, f->max);
	} else if (parse_u64(value, (uint64_t)f->min, (uint64_t)f->max, &u) <
		   0) {
		return ferr_set(err, FERR_INVALID,
				"balancer parameter %s: \"%.32s\" is not an "
				"integer between %.0f and %.0f",
				key, value, f->min, f->max);
	}
	pfield_put(p, f, d, u);
	return 0;
}

int bal_params_from_json(const json_t *obj, const char *what,
			 struct bal_params *p, struct ferr *err)
{
	const char *key;
	json_t *v;

	if (!json_is_object(obj))
		return ferr_set(err, FERR_INVALID, "%s must be an object",
				what);
	json_object_foreach((json_t *)obj, key, v) {
		const struct pfield *f = pfield_find(key);
		double d = 0;
		uint64_t u = 0;

		if (!f)
			return ferr_set(err, FERR_INVALID,
					"%s.%.64s: unknown field", what, key);
		if (f->type == P_DOUBLE) {
			if (!json_is_number(v))
				return ferr_set(err, FERR_INVALID,
						"%s.%s must be a number", what,
						key);
			d = json_number_value(v);
			if (!(d >= f->min && d <= f->max))
				return ferr_set(err, FERR_INVALID,
						"%s.%s must be between %g and "
						"%g",
						what, key, f->min, f->max);
		} else {
			json_int_t i;

			if (!json_is_integer(v))
				return ferr_set(err, FERR_INVALID,
						"%s.%s must be an integer",
						what, key);
			i = json_integer_value(v);
			if (i < 0 || (double)i < f->min || (double)i > f->max)
				return ferr_set(err, FERR_INVALID,
						"%s.%s must be between %.0f "
						"and %.0f",
						what, key, f->min, f->max);
			u = (uint64_t)i;
		}
		pfield_put(p, f, d, u);
	}
	if (bal_params_check(p, err) < 0)
		return ferr_wrap(err, "%s", what);
	return 0;
}

json_t *bal_params_json(const struct bal_params *p)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	for (size_t i = 0; i < NPFIELDS; i++) {
		double v = pfield_get(p, &pfields[i]);
		json_t *j = pfields[i].type == P_DOUBLE
				    ? json_real(v)
				    : json_integer((json_int_t)v);

		if (json_object_set_new(o, pfields[i].key, j) < 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}
