/* refusals.c - coalesced audit records for refusals under a flood: every
 * refusal is counted, and each flush writes one record per action with the
 * total, the counts per source (the busiest AUDIT_REFUSAL_SOURCES) and the
 * first reason, so a flood costs a few records a second, not one fsync per
 * bogus connection. */
#include "audit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct refusal_source {
	char name[AUDIT_ACTOR_MAX];
	uint64_t count;
};

struct refusal_action {
	char action[AUDIT_ACTION_MAX];
	char why[FERRY_ERR_MSG_MAX];     /* the first reason seen */
	uint64_t total;
	uint64_t others;                 /* sources beyond the table */
	uint64_t first_ms;
	unsigned nsources;
	struct refusal_source sources[AUDIT_REFUSAL_SOURCES];
};

struct audit_refusals {
	struct audit *a;
	pthread_mutex_t lock;
	unsigned nactions;
	struct refusal_action actions[AUDIT_REFUSAL_ACTIONS];
	/* since the start, never reset; the last one is "other" */
	unsigned ntotals;
	struct audit_refusal_total totals[AUDIT_REFUSAL_ACTIONS + 1];
};

int audit_refusals_new(struct audit *a, struct audit_refusals **out,
		       struct ferr *err)
{
	struct audit_refusals *r = calloc(1, sizeof(*r));

	if (!r)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	r->a = a;
	pthread_mutex_init(&r->lock, NULL);
	*out = r;
	return 0;
}

/* The total of action: a named slot while there is room, else the last
 * one, "other" (lock held). */
static struct audit_refusal_total *total_of(struct audit_refusals *r,
					    const char *action)
{
	struct audit_refusal_total *t;

	for (unsigned i = 0; i < r->ntotals; i++)
		if (!strcmp(r->totals[i].action, action))
			return &r->totals[i];
	if (r->ntotals < AUDIT_REFUSAL_ACTIONS)
		t = &r->totals[r->ntotals++];
	else
		t = &r->totals[AUDIT_REFUSAL_ACTIONS];
	snprintf(t->action, sizeof(t->action), "%s",
		 t == &r->totals[AUDIT_REFUSAL_ACTIONS] ? AUDIT_REFUSAL_OTHER
							 : action);
	return t;
}

void audit_refused(struct audit_refusals *r, const char *action,
		   const char *source, const char *why)
{
	struct refusal_action *act = NULL;

	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	total_of(r, action)->count++;
	for (unsigned i = 0; i < r->nactions && !act; i++)
		if (!strcmp(r->actions[i].action, action))
			act = &r->actions[i];
	if (!act && r->nactions < AUDIT_REFUSAL_ACTIONS) {
		act = &r->actions[r->nactions++];
		snprintf(act->action, sizeof(act->action), "%s", action);
	}
	if (!act)
		act = &r->actions[AUDIT_REFUSAL_ACTIONS - 1]; /* no room */
	if (act->total++ == 0) {
		snprintf(act->why, sizeof(act->why), "%s", why);
		act->first_ms = wall_ms();
	}
	for (unsigned i = 0; i < act->nsources; i++) {
		if (!strcmp(act->sources[i].name, source)) {
			act->sources[i].count++;
			goto out;
		}
	}
	if (act->nsources < AUDIT_REFUSAL_SOURCES) {
		struct refusal_source *s = &act->sources[act->nsources++];

		snprintf(s->name, sizeof(s->name), "%s", source);
		s->count = 1;
	} else {
		act->others++;
	}
out:
	pthread_mutex_unlock(&r->lock);
}

int audit_refusals_flush(struct audit_refusals *r, struct ferr *err)
{
	struct refusal_action copy[AUDIT_REFUSAL_ACTIONS];
	unsigned n;
	int rc = 0;

	if (!r)
		return 0;
	pthread_mutex_lock(&r->lock);
	n = r->nactions;
	memcpy(copy, r->actions, sizeof(copy[0]) * n);
	r->nactions = 0;
	memset(r->actions, 0, sizeof(r->actions));
	pthread_mutex_unlock(&r->lock);
	/* write outside the lock: refusals keep being counted meanwhile */
	for (unsigned i = 0; i < n; i++) {
		struct refusal_action *act = &copy[i];
		json_t *sources = json_object();
		json_t *detail;

		for (unsigned k = 0; k < act->nsources; k++)
			json_object_set_new(sources, act->sources[k].name,
					    json_integer((json_int_t)act->sources[k]
								 .count));
		detail = json_pack("{s:I, s:o, s:I, s:s, s:I}", "count",
				   (json_int_t)act->total, "sources", sources,
				   "other_sources", (json_int_t)act->others,
				   "first_reason", act->why, "since",
				   (json_int_t)act->first_ms);
		if (audit_log(r->a, "-", act->action,
			      act->nsources == 1 ? act->sources[0].name : "-",
			      "refused", detail, err) < 0)
			rc = -1;
	}
	return rc;
}

size_t audit_refusals_totals(struct audit_refusals *r,
			     struct audit_refusal_total *out)
{
	size_t n;

	pthread_mutex_lock(&r->lock);
	n = r->ntotals;
	memcpy(out, r->totals, n * sizeof(out[0]));
	if (r->totals[AUDIT_REFUSAL_ACTIONS].count)
		out[n++] = r->totals[AUDIT_REFUSAL_ACTIONS];
	pthread_mutex_unlock(&r->lock);
	return n;
}

void audit_refusals_free(struct audit_refusals *r)
{
	struct ferr err;

	if (!r)
		return;
	audit_refusals_flush(r, &err);
	pthread_mutex_destroy(&r->lock);
	free(r);
}
