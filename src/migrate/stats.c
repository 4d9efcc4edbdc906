/* stats.c - what this host's migrations did since ferryd started, for
 * /v1/metrics: every finished record (the ones the history keeps) is
 * counted here once, on the loop thread. */
#include "migrate_int.h"

#include <string.h>

static const double duration_bounds[] = MIG_STAT_DURATION_BOUNDS;
static const double downtime_bounds[] = MIG_STAT_DOWNTIME_BOUNDS;
_Static_assert(sizeof(duration_bounds) == MIG_STAT_BUCKETS * sizeof(double),
	       "MIG_STAT_DURATION_BOUNDS has MIG_STAT_BUCKETS bounds");
_Static_assert(sizeof(downtime_bounds) == MIG_STAT_BUCKETS * sizeof(double),
	       "MIG_STAT_DOWNTIME_BOUNDS has MIG_STAT_BUCKETS bounds");

/* A non-negative integer field of rec, or -1 when absent or another
 * type (records are ours, but written by several versions). */
static int64_t field_ms(const json_t *rec, const char *key)
{
	const json_t *v = json_object_get(rec, key);

	return json_is_integer(v) && json_integer_value(v) >= 0
		       ? (int64_t)json_integer_value(v)
		       : -1;
}

static void observe(struct mig_stat_hist *h, const double *bounds,
		    uint64_t ms)
{
	size_t i = 0;

	while (i < MIG_STAT_BUCKETS && (double)ms / 1000.0 > bounds[i])
		i++;
	h->counts[i]++;
	h->sum_ms += ms;
}

void mig_stats_note(struct migrator *m, const json_t *rec)
{
	struct mig_stats *s = &m->stats;
	const char *role = json_string_value(json_object_get(rec, "role"));
	const char *outcome =
		json_string_value(json_object_get(rec, "outcome"));
	enum mig_stat_role r = role && !strcmp(role, "destination")
				       ? MIG_STAT_DEST
				       : MIG_STAT_SOURCE;
	enum mig_stat_outcome o = MIG_STAT_FAILED;
	int64_t total = field_ms(rec, "total_ms");
	int64_t down = field_ms(rec, "downtime_ms");
	int64_t start = field_ms(rec, "started_at");
	int64_t end = field_ms(rec, "ended_at");
	int64_t v;

	if (outcome && !strcmp(outcome, "completed"))
		o = MIG_STAT_COMPLETED;
	else if (outcome && !strcmp(outcome, "cancelled"))
		o = MIG_STAT_CANCELLED;
	s->ended[r][o]++;
	if ((v = field_ms(rec, "wire_bytes")) > 0)
		s->wire_bytes[r] += (uint64_t)v;
	if (r == MIG_STAT_SOURCE && (v = field_ms(rec, "ram_bytes")) > 0)
		s->ram_bytes += (uint64_t)v;
	if (o != MIG_STAT_COMPLETED ||
	    json_is_true(json_object_get(rec, "recovered")))
		return;
	/* the source measures total_ms; the destination has its session's
	 * start and end */
	if (total < 0 && start >= 0 && end >= start)
		total = end - start;
	if (total >= 0)
		observe(&s->duration[r], duration_bounds, (uint64_t)total);
	if (r == MIG_STAT_SOURCE && down >= 0)
		observe(&s->downtime, downtime_bounds, (uint64_t)down);
}

void migrator_stats(struct migrator *m, struct mig_stats *out)
{
	*out = m->stats;
	migrator_counts(m, &out->active, &out->queued, &out->unresolved);
	out->incoming = session_count(&m->sessions);
}
