/* planout.c - plans as JSON (the controller's API and the cluster state)
 * and as text for people. */
#include "bal_int.h"

#include <stdlib.h>

/* ---- output ---- */

static json_t *stats_json(const struct bal_stats *s)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:I,"
			 " s:b, s:I}",
			 "round", (json_int_t)s->round, "now_s",
			 (json_int_t)s->now_s, "hosts_up",
			 (json_int_t)s->hosts_up, "hosts_active",
			 (json_int_t)s->hosts_active, "hosts_draining",
			 (json_int_t)s->hosts_draining, "hosts_hot",
			 (json_int_t)s->hosts_hot, "hosts_over",
			 (json_int_t)s->hosts_over, "mean_load", s->mean_load,
			 "imbalance", s->imbalance, "imbalance_rounds",
			 (json_int_t)s->imbalance_rounds,
			 "imbalance_triggered", s->imbalance_triggered,
			 "inflight", (json_int_t)s->inflight);
}

static json_t *move_json(const struct bal_move *m)
{
	return json_pack("{s:s, s:s, s:s, s:s?, s:s, s:f, s:I, s:f, s:f, s:f,"
			 " s:f, s:f, s:f}",
			 "vm", m->vm_name, "from", m->from_name, "to",
			 m->to_name, "unit", m->unit[0] ? m->unit : NULL,
			 "trigger", bal_trigger_name(m->trigger), "cpu",
			 m->cpu, "mem_mib", (json_int_t)m->mem_mib,
			 "from_load_before", m->from_before,
			 "from_load_after", m->from_after, "to_load_before",
			 m->to_before, "to_load_after", m->to_after,
			 "improvement", m->improvement, "score_per_gib",
			 m->score);
}

static json_t *blocked_json(const struct bal_blocked *b)
{
	json_t *o = json_pack("{s:s?, s:s, s:s, s:s}", "vm",
			      b->vm_name[0] ? b->vm_name : NULL, "host",
			      b->host_name, "code", bal_block_name(b->code),
			      "reason", b->reason);

	if (o && b->code == BAL_BLOCK_COOLDOWN &&
	    json_object_set_new(o, "until_s", json_integer((json_int_t)
								   b->until_s)) <
		    0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *bal_plan_json(const struct bal_plan *plan)
{
	json_t *o, *moves, *blocked;

	o = json_pack("{s:o, s:f, s:f, s:I, s:I, s:I, s:I, s:[], s:[]}",
		      "stats", stats_json(&plan->before), "mean_after",
		      plan->mean_after, "imbalance_after",
		      plan->imbalance_after, "hot_after",
		      (json_int_t)plan->hot_after, "candidates",
		      (json_int_t)plan->candidates, "evaluations",
		      (json_int_t)plan->evaluations, "blocked_total",
		      (json_int_t)plan->blocked_total, "moves", "blocked");
	if (!o)
		return NULL;
	moves = json_object_get(o, "moves");
	blocked = json_object_get(o, "blocked");
	for (size_t i = 0; i < plan->nmoves; i++)
		if (json_array_append_new(moves, move_json(&plan->moves[i])) <
		    0)
			goto fail;
	for (size_t i = 0; i < plan->nblocked; i++)
		if (json_array_append_new(blocked,
					  blocked_json(&plan->blocked[i])) < 0)
			goto fail;
	return o;
fail:
	json_decref(o);
	return NULL;
}

void bal_plan_print(FILE *f, const struct bal_plan *plan)
{
	const struct bal_stats *s = &plan->before;

	fprintf(f,
		"round %llu: %zu hosts up (%zu active, %zu draining), mean "
		"load %.3f, imbalance %.3f (%u rounds%s), %zu hot, %u in "
		"flight\n",
		(unsigned long long)s->round, s->hosts_up, s->hosts_active,
		s->hosts_draining, s->mean_load, s->imbalance,
		s->imbalance_rounds,
		s->imbalance_triggered ? ", triggered" : "", s->hosts_hot,
		s->inflight);
	for (size_t i = 0; i < plan->nmoves; i++) {
		const struct bal_move *m = &plan->moves[i];

		fprintf(f,
			"move %s %s -> %s [%s%s%s]: cpu %.2f, %llu MiB; %s "
			"%.3f -> %.3f, %s %.3f -> %.3f; improvement %.3f, "
			"score %.4f/GiB\n",
			m->vm_name, m->from_name, m->to_name,
			bal_trigger_name(m->trigger),
			m->unit[0] ? ", group " : "", m->unit, m->cpu,
			(unsigned long long)m->mem_mib, m->from_name,
			m->from_before, m->from_after, m->to_name,
			m->to_before, m->to_after, m->improvement, m->score);
	}
	for (size_t i = 0; i < plan->nblocked; i++) {
		const struct bal_blocked *b = &plan->blocked[i];

		fprintf(f, "blocked %s%s%s [%s]: %s\n",
			b->vm_name[0] ? b->vm_name : "host ",
			b->vm_name[0] ? " on " : "", b->host_name,
			bal_block_name(b->code), b->reason);
	}
	if (plan->blocked_total > plan->nblocked)
		fprintf(f, "(%zu more blocked entries not kept)\n",
			plan->blocked_total - plan->nblocked);
	fprintf(f,
		"after: mean load %.3f, imbalance %.3f, %zu hot hosts still "
		"above high-headroom\n",
		plan->mean_after, plan->imbalance_after, plan->hot_after);
}
