/* converge.c - a pre-copy that does not converge is escalated, in the
 * documented order (docs/migration-protocol.md): a longer downtime limit,
 * then auto-converge throttling, then post-copy (when the VM allows it),
 * then offline; stalled iterations and the time bound both escalate. */
#include "migrate_int.h"

#include <stdio.h>

#define DOWNTIME_LIMIT_OFFLINE 2000000 /* QEMU's maximum, in ms */
#define STUCK_ITERATIONS 2      /* iterations without 10% progress */
#define THROTTLE_BY_FRACTION 0.30 /* of the time bound: throttle by then */
#define POSTCOPY_BY_FRACTION 0.50
#define OFFLINE_BY_FRACTION 0.65

enum step_kind { STEP_DOWNTIME, STEP_THROTTLE, STEP_POSTCOPY, STEP_OFFLINE };

/* A QMP command whose answer only says it worked (args stolen). */
static int qmp_simple(struct qmp *q, const char *cmd, json_t *args,
		      struct ferr *err)
{
	return qmp_command(q, cmd, args, NULL, err);
}

/* Next escalation step, in the documented order. */
static enum step_kind next_step(const struct mig *g, const struct converge *c)
{
	if (c->downtime < c->max_downtime)
		return STEP_DOWNTIME;
	if (!c->throttled)
		return STEP_THROTTLE;
	if (g->postcopy_cap && !c->postcopy)
		return STEP_POSTCOPY;
	return STEP_OFFLINE;
}

/* Take the next escalation step. *paused is set when the VM was paused. */
static int escalate(struct mig *g, struct qmp *q, struct converge *c,
		    const char *why, bool *paused, struct ferr *err)
{
	char detail[160];

	switch (next_step(g, c)) {
	case STEP_DOWNTIME:
		c->downtime = c->downtime * 2 > c->max_downtime
				      ? c->max_downtime
				      : c->downtime * 2;
		snprintf(detail, sizeof(detail), "%s: downtime limit %llu ms",
			 why, (unsigned long long)c->downtime);
		mig_rec_step(g, c->t0, "downtime", detail);
		mig_rec_set(g, "downtime_limit_ms", json_integer((json_int_t)c->downtime));
		return qmp_simple(q, "migrate-set-parameters",
				  json_pack("{s:I}", "downtime-limit",
					    (json_int_t)c->downtime),
				  err);
	case STEP_THROTTLE:
		c->throttled = true;
		snprintf(detail, sizeof(detail),
			 "%s: auto-converge throttling (30 %% +20 %% per "
			 "round, up to 99 %%)",
			 why);
		mig_rec_step(g, c->t0, "throttle", detail);
		return qmp_simple(q, "migrate-set-parameters",
				  json_pack("{s:i, s:i, s:i}",
					    "max-cpu-throttle", 99,
					    "cpu-throttle-initial", 30,
					    "cpu-throttle-increment", 20),
				  err);
	case STEP_POSTCOPY:
		c->postcopy = true;
		snprintf(detail, sizeof(detail), "%s: switching to post-copy",
			 why);
		mig_rec_step(g, c->t0, "postcopy", detail);
		return qmp_simple(q, "migrate-start-postcopy", NULL, err);
	default:
		if (c->offline)
			return 0;
		c->offline = true;
		snprintf(detail, sizeof(detail),
			 "%s: pausing the VM to finish offline", why);
		mig_rec_step(g, c->t0, "offline", detail);
		if (qmp_simple(q, "stop", NULL, err) < 0)
			return -1;
		*paused = true;
		return qmp_simple(q, "migrate-set-parameters",
				  json_pack("{s:I}", "downtime-limit",
					    (json_int_t)DOWNTIME_LIMIT_OFFLINE),
				  err);
	}
}

int mig_converge_check(struct mig *g, struct qmp *q, struct converge *c,
		       json_t *qm, bool *paused, struct ferr *err)
{
	json_t *ram = json_object_get(qm, "ram");
	unsigned iter = (unsigned)json_integer_value(
		json_object_get(ram, "dirty-sync-count"));
	uint64_t rem = (uint64_t)json_integer_value(
		json_object_get(ram, "remaining"));
	double frac = (double)(now_ms() - c->t0) /
		      (double)(c->deadline - c->t0);
	enum step_kind want;

	if (c->offline || c->postcopy)
		return 0;
	if (iter > c->iteration) {
		/* a new pass: did the previous one shrink what is left? */
		if (c->iteration >= 2 && rem * 10 >= c->iter_remaining * 9)
			c->stuck++;
		else if (rem * 10 < c->iter_remaining * 9)
			c->stuck = 0;
		c->iteration = iter;
		c->iter_remaining = rem;
	}
	if (c->stuck >= STUCK_ITERATIONS) {
		c->stuck = 0;
		return escalate(g, q, c, "not converging", paused, err);
	}
	/* the time bound forces the later steps */
	want = frac >= OFFLINE_BY_FRACTION    ? STEP_OFFLINE
	       : frac >= POSTCOPY_BY_FRACTION ? STEP_POSTCOPY
	       : frac >= THROTTLE_BY_FRACTION ? STEP_THROTTLE
					      : STEP_DOWNTIME;
	if (want == STEP_DOWNTIME)
		return 0;
	while (!c->offline && !c->postcopy && next_step(g, c) <= want) {
		if (escalate(g, q, c, "time bound", paused, err) < 0)
			return -1;
	}
	return 0;
}
