/* moves.c - the migrations the leader starts, follows and ends, and their
 * records in the cluster state (CTL_KEY_MOVES + VM), which let the next
 * leader carry on without starting any of them twice and keep the VMs'
 * cooldowns across a fail-over.
 *
 * A move's record is written (fenced) before its migrate request goes out
 * ("starting"), updated with the migration's id once the source accepted
 * it ("running"), and ended ("completed" or "failed", with the time); ended
 * records stay as long as they can matter to the cooldowns and return bans,
 * then go. A new leader follows the running ones, settles the starting ones
 * from the hosts' reports (still migrating on the source: in flight; on the
 * destination: done; back on the source: never started) and seeds the
 * model's history with the ended ones. */
#include "ctl_int.h"

#include <stdlib.h>
#include <string.h>

#define BATCH_MAX 48 /* writes per transaction */
#define PRUNE_EVERY 12 /* rounds */

struct batch {
	struct ctl_store_op ops[BATCH_MAX];
	char keys[BATCH_MAX][sizeof(CTL_KEY_MOVES) + FERRY_NAME_MAX + 1];
	json_t *vals[BATCH_MAX];
	size_t n;
	bool failed;
};

static bool batch_flush(struct controller *c, struct batch *b)
{
	struct ferr err;

	if (b->n && !b->failed &&
	    ctl_store_write(c, b->ops, b->n, true, &err) < 0) {
		log_warn("controller: move records not written: %s", err.msg);
		b->failed = true;
	}
	for (size_t i = 0; i < b->n; i++)
		json_decref(b->vals[i]);
	b->n = 0;
	return !b->failed;
}

/* Write (value, stolen) or delete (NULL) vm's record. */
static void batch_add(struct controller *c, struct batch *b, const char *vm,
		      json_t *value)
{
	if (b->n == BATCH_MAX)
		batch_flush(c, b);
	snprintf(b->keys[b->n], sizeof(b->keys[0]), "%s%s", CTL_KEY_MOVES, vm);
	b->vals[b->n] = value;
	b->ops[b->n] = (struct ctl_store_op){ b->keys[b->n], value, -1 };
	b->n++;
}

static json_t *record(const struct ctl_move *m, const char *outcome,
		      uint64_t ended_ms)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:s, s:I, s:s}",
			 "vm", m->vm, "from", m->from, "to", m->to, "id",
			 m->id, "token", (json_int_t)m->token, "started_ms",
			 (json_int_t)m->started_ms, "drain", m->drain,
			 "outcome", outcome, "ended_ms", (json_int_t)ended_ms,
			 "error", m->error);
}

/* ---- the in-flight list, sorted by VM ---- */

static int cmp_move(const void *a, const void *b)
{
	return strcmp(((const struct ctl_move *)a)->vm,
		      ((const struct ctl_move *)b)->vm);
}

struct ctl_move *ctl_move_find(struct controller *c, const char *vm)
{
	struct ctl_move key;

	if (!c->nmoves)
		return NULL;
	snprintf(key.vm, sizeof(key.vm), "%s", vm);
	return bsearch(&key, c->moves, c->nmoves, sizeof(key), cmp_move);
}

static struct ctl_move *move_add(struct controller *c,
				 const struct ctl_move *m)
{
	size_t i = 0;

	if (ctl_move_find(c, m->vm))
		return NULL;
	if (c->nmoves == c->capmoves) {
		size_t cap = c->capmoves ? c->capmoves * 2 : 16;
		struct ctl_move *nm = realloc(c->moves, cap * sizeof(*nm));

		if (!nm)
			return NULL;
		c->moves = nm;
		c->capmoves = cap;
	}
	while (i < c->nmoves && strcmp(c->moves[i].vm, m->vm) < 0)
		i++;
	memmove(&c->moves[i + 1], &c->moves[i],
		(c->nmoves - i) * sizeof(*m));
	c->moves[i] = *m;
	c->nmoves++;
	return &c->moves[i];
}

static void move_del(struct controller *c, struct ctl_move *m)
{
	size_t i = (size_t)(m - c->moves);

	memmove(&c->moves[i], &c->moves[i + 1],
		(c->nmoves - i - 1) * sizeof(*m));
	c->nmoves--;
}

/* ---- a new leader picks up the records ---- */

void ctl_moves_load(struct controller *c)
{
	json_t *list = ctl_store_list(c, CTL_KEY_MOVES), *e;
	const char *vm;

	json_decref(c->history);
	c->history = json_array();
	json_object_foreach(list, vm, e) {
		const json_t *r = json_object_get(e, "v");
		const char *from = json_string_value(json_object_get(r, "from"));
		const char *to = json_string_value(json_object_get(r, "to"));
		const char *id = json_string_value(json_object_get(r, "id"));
		const char *out = json_string_value(json_object_get(r, "outcome"));
		struct ctl_move m = { 0 };

		if (!name_is_valid(vm) || !from || !name_is_valid(from) ||
		    !to || !name_is_valid(to) || !id || strlen(id) > FERRY_NAME_MAX ||
		    !out) {
			log_warn("controller: move record of %s ignored", vm);
			continue;
		}
		if (!strcmp(out, "completed") || !strcmp(out, "failed")) {
			json_array_append(c->history, (json_t *)r);
			continue;
		}
		snprintf(m.vm, sizeof(m.vm), "%s", vm);
		snprintf(m.from, sizeof(m.from), "%s", from);
		snprintf(m.to, sizeof(m.to), "%s", to);
		snprintf(m.id, sizeof(m.id), "%s", id);
		m.started_ms = (uint64_t)json_integer_value(
			json_object_get(r, "started_ms"));
		m.token = json_integer_value(json_object_get(r, "token"));
		m.drain = json_is_true(json_object_get(r, "drain"));
		if (move_add(c, &m))
			log_info("controller: following the move of %s from %s "
				 "to %s (%s)",
				 vm, from, to, id[0] ? id : "start unconfirmed");
	}
	json_decref(list);
}

/* ---- ending a move ---- */

static void move_end(struct controller *c, struct batch *b,
		     struct ctl_move *m, const char *outcome)
{
	bool ok = !strcmp(outcome, "completed");

	ctl_audit(c, NULL, "balance.move_done", m->vm, outcome,
		  json_pack("{s:s, s:s, s:s, s:s}", "from", m->from, "to",
			    m->to, "id", m->id, "error", m->error));
	ctl_drain_note(c, m->from, ok, m->vm,
		       ok ? m->to : m->error[0] ? m->error : outcome);
	batch_add(c, b, m->vm, record(m, outcome, wall_ms()));
	log_info("controller: move of %s from %s to %s %s%s%s", m->vm,
		 m->from, m->to, outcome, m->error[0] ? ": " : "", m->error);
	move_del(c, m);
}

void ctl_moves_settle(struct controller *c, uint64_t now_s)
{
	struct batch b = { 0 };
	struct ferr err;
	size_t i;
	json_t *r;

	/* ended before this leadership: their cooldowns still hold */
	json_array_foreach(c->history, i, r) {
		size_t vm = bal_vm_find(c->bal, json_string_value(
							json_object_get(r, "vm")));
		size_t from = bal_host_find(
			c->bal, json_string_value(json_object_get(r, "from")));
		uint64_t s = (uint64_t)json_integer_value(
				     json_object_get(r, "started_ms")) /
			     1000,
			 e = (uint64_t)json_integer_value(
				     json_object_get(r, "ended_ms")) /
			     1000;

		if (vm != BAL_NONE)
			bal_vm_history(c->bal, vm, from, s, e,
				       !strcmp(json_string_value(json_object_get(
						       r, "outcome")),
					       "completed"),
				       &err);
	}
	json_decref(c->history);
	c->history = NULL;
	/* starts nobody confirmed: the reports tell */
	for (i = 0; i < c->nmoves;) {
		struct ctl_move *m = &c->moves[i];
		size_t vm = m->id[0] ? BAL_NONE : bal_vm_find(c->bal, m->vm);
		const struct bal_vm *v = vm != BAL_NONE ? bal_vm_at(c->bal, vm)
							: NULL;
		const char *where =
			v ? bal_host_at(c->bal, v->host)->name : NULL;

		if (!v || v->to != BAL_NONE || m->outcome[0]) {
			i++;
		} else if (!strcmp(where, m->to)) {
			if (!m->seen) /* the model never saw it in flight */
				bal_vm_history(c->bal, vm,
					       bal_host_find(c->bal, m->from),
					       m->started_ms / 1000, now_s,
					       true, &err);
			move_end(c, &b, m, "completed");
		} else if (m->seen) {
			snprintf(m->error, sizeof(m->error),
				 "back on %s after its migration", where);
			move_end(c, &b, m, "failed");
		} else {
			/* never started: no history, nothing to undo */
			log_info("controller: the move of %s was never started",
				 m->vm);
			batch_add(c, &b, m->vm, NULL);
			move_del(c, m);
		}
	}
	batch_flush(c, &b);
}

/* ---- following moves with an id ---- */

static void on_record(struct controller *c, struct ctl_host *h, int status,
		      json_t *reply, const struct ferr *err, void *arg)
{
	struct ctl_move *m = ctl_move_find(c, arg);
	const char *out = json_string_value(json_object_get(reply, "outcome"));
	const char *why = json_string_value(json_object_get(reply, "error"));

	(void)h;
	(void)err;
	free(arg);
	if (!m)
		return;
	m->asking = false;
	if (reply && status == 404) {
		snprintf(m->outcome, sizeof(m->outcome), "failed");
		snprintf(m->error, sizeof(m->error),
			 "the source does not know migration %s", m->id);
	} else if (reply && status < 300 && out && strcmp(out, "running") &&
		   strlen(out) < sizeof(m->outcome)) {
		snprintf(m->outcome, sizeof(m->outcome), "%s", out);
		snprintf(m->error, sizeof(m->error), "%s", why ? why : "");
	}
}

void ctl_moves_follow(struct controller *c, uint64_t now_s)
{
	struct batch b = { 0 };
	struct ferr err;

	for (size_t i = 0; i < c->nmoves; i++) {
		struct ctl_move *m = &c->moves[i];
		struct ctl_host *h = ctl_host_find(c, m->from);
		char path[128];
		char *vm;

		if (!m->id[0] || m->outcome[0] || m->asking || !h || !h->up)
			continue;
		vm = strdup(m->vm);
		snprintf(path, sizeof(path), "/v1/migrations/%s", m->id);
		if (!vm ||
		    ctl_send(c, h, "GET", path, NULL, on_record, vm, &err) < 0) {
			free(vm);
			continue;
		}
		m->asking = true;
	}
	ctl_wait(c, now_ms() + CTL_PEER_TIMEOUT_S * 1000ULL);
	for (size_t i = 0; i < c->nmoves;) {
		struct ctl_move *m = &c->moves[i];
		size_t vm;

		if (!m->outcome[0]) {
			i++;
			continue;
		}
		vm = bal_vm_find(c->bal, m->vm);
		if (vm != BAL_NONE && bal_vm_at(c->bal, vm)->to != BAL_NONE)
			bal_done(c->bal, vm, !strcmp(m->outcome, "completed"),
				 now_s, &err);
		move_end(c, &b, m, m->outcome);
	}
	batch_flush(c, &b);
}

/* ---- starting moves ---- */

struct start {
	struct controller *c;
	const struct bal_move *mv;
	bool done, abandoned;
	int status;
	char id[FERRY_NAME_MAX + 1];
	char error[200];
};

static void on_started(struct controller *c, struct ctl_host *h, int status,
		       json_t *reply, const struct ferr *err, void *arg)
{
	struct start *s = arg;
	const char *id = json_string_value(json_object_get(reply, "id"));
	const char *msg = json_string_value(
		json_object_get(json_object_get(reply, "error"), "message"));

	(void)c;
	(void)h;
	if (s->abandoned) {
		free(s);
		return;
	}
	s->done = true;
	s->status = status;
	if (reply && status < 300 && id && strlen(id) <= FERRY_NAME_MAX)
		snprintf(s->id, sizeof(s->id), "%s", id);
	else if (!reply)
		snprintf(s->error, sizeof(s->error), "%s", err->msg);
	else
		snprintf(s->error, sizeof(s->error), "%s",
			 msg ? msg : "refused without a reason");
}

void ctl_moves_start(struct controller *c, const struct bal_plan *plan,
		     uint64_t now_s)
{
	struct start **st = calloc(plan->nmoves ? plan->nmoves : 1,
				   sizeof(*st));
	struct batch b = { 0 };
	size_t n = 0;
	int64_t token;
	struct ferr err;

	for (size_t i = 0; st && i < plan->nmoves; i++) {
		const struct bal_move *mv = &plan->moves[i];

		if ((c->mode == CTL_MODE_AUTO || mv->trigger == BAL_TRIG_DRAIN) &&
		    !ctl_move_find(c, mv->vm_name) &&
		    (st[n] = calloc(1, sizeof(**st))) != NULL) {
			st[n]->c = c;
			st[n]->mv = mv;
			n++;
		}
	}
	if (!n)
		goto out;
	/* self-fencing: a leader whose lease may have lapsed starts nothing */
	if (!ctl_lead_valid(c, &token) || token != c->token) {
		log_warn("controller: %zu move(s) not started: leadership not "
			 "confirmed",
			 n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct ctl_move m = { .token = c->token,
				      .started_ms = wall_ms(),
				      .drain = st[i]->mv->trigger ==
					       BAL_TRIG_DRAIN };

		snprintf(m.vm, sizeof(m.vm), "%s", st[i]->mv->vm_name);
		snprintf(m.from, sizeof(m.from), "%s", st[i]->mv->from_name);
		snprintf(m.to, sizeof(m.to), "%s", st[i]->mv->to_name);
		batch_add(c, &b, m.vm, record(&m, "starting", 0));
	}
	if (!batch_flush(c, &b))
		goto out; /* not recorded: not started */
	for (size_t i = 0; i < n; i++) {
		const struct bal_move *mv = st[i]->mv;
		struct ctl_host *from = ctl_host_find(c, mv->from_name);
		struct ctl_host *to = ctl_host_find(c, mv->to_name);
		char path[128];
		json_t *body;

		snprintf(path, sizeof(path), "/v1/vms/%s/migrate", mv->vm_name);
		body = to ? json_pack("{s:s, s:s, s:i}", "to", to->name,
				      "address", to->address, "port",
				      (int)to->port)
			  : NULL;
		if (body && c->token)
			json_object_set_new(body, "fence",
					    json_integer(c->token));
		st[i]->done = true;
		if (!from || !body) {
			snprintf(st[i]->error, sizeof(st[i]->error),
				 "unknown host");
		} else if (ctl_send(c, from, "POST", path, body, on_started,
				    st[i], &err) < 0) {
			snprintf(st[i]->error, sizeof(st[i]->error), "%s",
				 err.msg);
		} else {
			st[i]->done = false;
		}
		json_decref(body);
	}
	ctl_wait(c, now_ms() + (CTL_PEER_TIMEOUT_S + 1) * 1000ULL);
	for (size_t i = 0; i < n; i++) {
		const struct bal_move *mv = st[i]->mv;
		struct ctl_move m = { .token = c->token,
				      .started_ms = wall_ms(),
				      .drain = mv->trigger == BAL_TRIG_DRAIN };
		struct ctl_move *added;

		snprintf(m.vm, sizeof(m.vm), "%s", mv->vm_name);
		snprintf(m.from, sizeof(m.from), "%s", mv->from_name);
		snprintf(m.to, sizeof(m.to), "%s", mv->to_name);
		if (!st[i]->done) {
			/* no answer in time: it may yet start; the reports
			 * settle it (ctl_moves_settle) */
			st[i]->abandoned = true;
			st[i] = NULL;
			move_add(c, &m);
			log_warn("controller: no answer to moving %s: its "
				 "start is unconfirmed",
				 m.vm);
			continue;
		}
		if (!st[i]->id[0]) {
			ctl_audit(c, NULL, "balance.move", m.vm, "error",
				  json_pack("{s:s, s:s, s:s, s:s}", "from",
					    m.from, "to", m.to, "trigger",
					    bal_trigger_name(mv->trigger),
					    "error", st[i]->error));
			log_warn("controller: moving %s to %s: %s", m.vm, m.to,
				 st[i]->error);
			ctl_drain_note(c, m.from, false, m.vm, st[i]->error);
			batch_add(c, &b, m.vm, NULL);
			continue;
		}
		snprintf(m.id, sizeof(m.id), "%s", st[i]->id);
		added = move_add(c, &m);
		if (added)
			added->seen = true;
		bal_moved(c->bal, mv->vm, mv->to, now_s, &err);
		batch_add(c, &b, m.vm, record(&m, "running", 0));
		ctl_audit(c, NULL, "balance.move", m.vm, "started",
			  json_pack("{s:s, s:s, s:s, s:s, s:I, s:f, s:f, s:f, "
				    "s:f, s:f}",
				    "id", m.id, "from", m.from, "to", m.to,
				    "trigger", bal_trigger_name(mv->trigger),
				    "token", (json_int_t)c->token,
				    "from_before", mv->from_before,
				    "from_after", mv->from_after, "to_before",
				    mv->to_before, "to_after", mv->to_after,
				    "improvement", mv->improvement));
		log_info("controller: moving %s from %s to %s (%s, load %.2f "
			 "-> %.2f)",
			 m.vm, m.from, m.to, bal_trigger_name(mv->trigger),
			 mv->from_before, mv->from_after);
		pthread_mutex_lock(&c->lock);
		c->moves_total++;
		pthread_mutex_unlock(&c->lock);
	}
	batch_flush(c, &b);
out:
	for (size_t i = 0; st && i < n; i++)
		free(st[i]);
	free(st);
}

/* Drop ended records that can no longer matter, and records of starts
 * that are neither in flight nor ended. */
void ctl_moves_prune(struct controller *c, uint64_t now_s)
{
	const struct bal_params *p = &c->params;
	uint64_t keep_s = p->cooldown_max_s;
	json_t *list, *e;
	struct batch b = { 0 };
	const char *vm;
	size_t ended = 0;

	if (c->round % PRUNE_EVERY)
		return;
	if (p->return_ban_s > keep_s)
		keep_s = p->return_ban_s;
	if (p->backoff_window_s > keep_s)
		keep_s = p->backoff_window_s;
	list = ctl_store_list(c, CTL_KEY_MOVES);
	json_object_foreach(list, vm, e) {
		const json_t *r = json_object_get(e, "v");
		uint64_t end = (uint64_t)json_integer_value(
				       json_object_get(r, "ended_ms")) /
			       1000;

		if (end && (end + keep_s < now_s ||
			    ++ended > CTL_MOVES_KEPT))
			batch_add(c, &b, vm, NULL);
		else if (!end && !ctl_move_find(c, vm))
			batch_add(c, &b, vm, NULL);
	}
	batch_flush(c, &b);
	json_decref(list);
}
