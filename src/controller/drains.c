/* drains.c - drains are the cluster's: one record per host under
 * CTL_KEY_DRAINS, written by any controller's API (the operator's wishes:
 * "starting", "ending") and by the leader (progress: "running", "done").
 * The leader keeps each host's own draining flag (POST /v1/host/drain,
 * which makes the host refuse incoming migrations) in step with the
 * records: it sets the flag of a drain that starts or runs, clears it when
 * a drain ends, and adopts a flag set on a host directly as a drain.
 *
 * Record: {"host", "state", "started_at", "by", "moved": [{"vm", "to"}],
 * "blocked": [{"vm", "reason"[, "code"]}], "remaining", "idle_rounds"}. */
#include "ctl_int.h"

#include <stdlib.h>
#include <string.h>

#define BATCH_MAX 48

struct flag {
	char host[FERRY_NAME_MAX + 1];
	bool on;
	uint64_t round;
	bool done, ok;
	char error[200];
};

/* Write the records of c->drains that differ from `before` (fenced, each
 * only if nobody changed it since the round read it); read them again. */
static void write_changed(struct controller *c, json_t *before)
{
	struct ctl_store_op ops[BATCH_MAX];
	char keys[BATCH_MAX][sizeof(CTL_KEY_DRAINS) + FERRY_NAME_MAX + 1];
	struct ferr err;
	const char *host;
	json_t *e;
	size_t n = 0;

	json_object_foreach(c->drains, host, e) {
		json_t *old = json_object_get(before, host);
		json_t *v = json_object_get(e, "v");

		if (old && json_equal(json_object_get(old, "v"), v))
			continue;
		snprintf(keys[n], sizeof(keys[0]), "%s%s", CTL_KEY_DRAINS, host);
		ops[n] = (struct ctl_store_op){
			keys[n], json_is_null(v) ? NULL : v,
			old ? json_integer_value(json_object_get(old, "m")) : 0
		};
		if (++n == BATCH_MAX) {
			if (ctl_store_write(c, ops, n, true, &err) < 0)
				log_warn("controller: drains: %s", err.msg);
			n = 0;
		}
	}
	if (n && ctl_store_write(c, ops, n, true, &err) < 0)
		log_warn("controller: drains not written (the next round "
			 "tries again): %s",
			 err.msg);
	json_decref(c->drains);
	c->drains = ctl_store_list(c, CTL_KEY_DRAINS);
}

static json_t *rec_of(struct controller *c, const char *host)
{
	return json_object_get(json_object_get(c->drains, host), "v");
}

static const char *state_of(const json_t *rec)
{
	const char *s = json_string_value(json_object_get(rec, "state"));

	return s ? s : "";
}

static void on_flag(struct controller *c, struct ctl_host *h, int status,
		    json_t *reply, const struct ferr *err, void *arg)
{
	struct flag *f = arg;
	const char *msg = json_string_value(
		json_object_get(json_object_get(reply, "error"), "message"));

	(void)h;
	f->done = true;
	f->ok = reply && status < 300;
	if (!reply)
		snprintf(f->error, sizeof(f->error), "%s", err->msg);
	else if (!f->ok)
		snprintf(f->error, sizeof(f->error), "%s",
			 msg ? msg : "refused");
	if (f->round != c->round)
		free(f); /* its round gave up waiting */
}

/* Set or clear host's flag; the result lands in *out (NULL: none). */
static struct flag *send_flag(struct controller *c, struct ctl_host *h,
			      bool on)
{
	struct flag *f = calloc(1, sizeof(*f));
	struct ferr err;

	if (!f)
		return NULL;
	snprintf(f->host, sizeof(f->host), "%s", h->name);
	f->on = on;
	f->round = c->round;
	if (ctl_send(c, h, "POST", on ? "/v1/host/drain" : "/v1/host/undrain",
		     NULL, on_flag, f, &err) < 0) {
		f->done = true;
		snprintf(f->error, sizeof(f->error), "%s", err.msg);
	}
	return f;
}

void ctl_drains_flags(struct controller *c)
{
	json_t *before = json_deep_copy(c->drains);
	struct flag **fl = calloc(c->nhosts ? c->nhosts : 1, sizeof(*fl));
	const char *host;
	size_t n = 0;
	json_t *e;

	json_decref(c->notes);
	c->notes = json_object();
	if (!before || !fl)
		goto out;
	/* a flag set on the host itself becomes the cluster's drain */
	for (size_t i = 0; i < c->nhosts; i++) {
		struct ctl_host *h = &c->hosts[i];

		if (h->up && h->draining && !rec_of(c, h->name) &&
		    json_object_size(c->drains) < CTL_DRAINS_MAX) {
			json_object_set_new(
				c->drains, h->name,
				json_pack("{s:{s:s, s:s, s:I, s:s, s:[], s:[], "
					  "s:i, s:i}}",
					  "v", "host", h->name, "state",
					  "running", "started_at",
					  (json_int_t)wall_ms(), "by", "host",
					  "moved", "blocked", "remaining", -1,
					  "idle_rounds", 0));
			log_info("controller: host %s is draining by its own "
				 "flag: now a drain of the cluster",
				 h->name);
		}
	}
	json_object_foreach(c->drains, host, e) {
		struct ctl_host *h = ctl_host_find(c, host);
		const char *st = state_of(json_object_get(e, "v"));

		if (!h)
			continue;
		if (!strcmp(st, "starting") || !strcmp(st, "ending"))
			fl[n++] = send_flag(c, h, st[0] == 's');
		else if (h->up && !h->draining)
			fl[n++] = send_flag(c, h, true); /* back in step */
	}
	ctl_wait(c, now_ms() + CTL_PEER_TIMEOUT_S * 1000ULL);
	for (size_t i = 0; i < n; i++) {
		struct flag *f = fl[i];
		json_t *rec = f ? rec_of(c, f->host) : NULL;
		const char *st = state_of(rec);

		if (!f || !f->done) {
			if (f)
				f->round = 0; /* freed when it answers */
			continue;
		}
		if (!strcmp(st, "starting")) {
			json_object_set_new(rec, "state",
					    json_string(f->ok ? "running"
							      : "done"));
			if (!f->ok)
				json_array_append_new(
					json_object_get(rec, "blocked"),
					json_pack("{s:s, s:s+}", "vm", "-",
						  "reason",
						  "cannot mark the host "
						  "draining: ",
						  f->error));
			ctl_audit(c, NULL, "balance.drain", f->host,
				  f->ok ? "ok" : "error",
				  f->ok ? NULL
					: json_pack("{s:s}", "error", f->error));
		} else if (!strcmp(st, "ending")) {
			if (f->ok)
				json_object_set_new(
					json_object_get(c->drains, f->host),
					"v", json_null());
			ctl_audit(c, NULL, "balance.undrain", f->host,
				  f->ok ? "ok" : "error",
				  f->ok ? NULL
					: json_pack("{s:s}", "error", f->error));
		} else if (f->ok) {
			log_info("controller: host %s draining again, as the "
				 "cluster's drain says",
				 f->host);
		}
		if (!f->ok)
			log_warn("controller: %s the draining flag of %s: %s",
				 f->on ? "cannot set" : "cannot clear",
				 f->host, f->error);
		free(f);
	}
	write_changed(c, before);
out:
	free(fl);
	json_decref(before);
}

void ctl_drain_note(struct controller *c, const char *host, bool moved,
		    const char *vm, const char *text)
{
	json_t *n = json_object_get(c->notes, host);

	if (!json_object_get(c->drains, host) || !c->notes)
		return;
	if (!n) {
		n = json_pack("{s:[], s:[]}", "moved", "blocked");
		json_object_set_new(c->notes, host, n);
	}
	json_array_append_new(
		json_object_get(n, moved ? "moved" : "blocked"),
		moved ? json_pack("{s:s, s:s}", "vm", vm, "to", text)
		      : json_pack("{s:s, s:s}", "vm", vm, "reason", text));
}

/* Does a move of plan or in flight leave host? */
static void host_moves(struct controller *c, const struct bal_plan *plan,
		       const char *host, bool *busy, bool *planned)
{
	*busy = *planned = false;
	for (size_t m = 0; m < c->nmoves; m++)
		*busy |= !strcmp(c->moves[m].from, host);
	for (size_t m = 0; plan && m < plan->nmoves; m++)
		*planned |= !strcmp(plan->moves[m].from_name, host);
}

void ctl_drains_progress(struct controller *c, const struct bal_plan *plan)
{
	json_t *before = json_deep_copy(c->drains);
	const char *host;
	json_t *e;

	if (!before)
		return;
	json_object_foreach(c->drains, host, e) {
		json_t *rec = json_object_get(e, "v");
		json_t *notes = json_object_get(c->notes, host);
		struct ctl_host *h = ctl_host_find(c, host);
		json_int_t idle;
		bool busy, planned;

		if (strcmp(state_of(rec), "running") != 0)
			continue;
		json_array_extend(json_object_get(rec, "moved"),
				  json_object_get(notes, "moved"));
		json_array_extend(json_object_get(rec, "blocked"),
				  json_object_get(notes, "blocked"));
		if (!h || !h->up)
			continue;
		json_object_set_new(rec, "remaining",
				    json_integer((json_int_t)h->nvms));
		host_moves(c, plan, host, &busy, &planned);
		idle = json_integer_value(json_object_get(rec, "idle_rounds"));
		if (h->nvms == 0 && !busy) {
			json_object_set_new(rec, "state", json_string("done"));
		} else if (busy || planned) {
			idle = 0;
		} else if (++idle >= CTL_DRAIN_IDLE_ROUNDS) {
			/* nothing movable: why each VM stays */
			for (size_t b = 0; plan && b < plan->nblocked; b++) {
				const struct bal_blocked *bl = &plan->blocked[b];

				if (bl->vm_name[0] && !strcmp(bl->host_name, host))
					json_array_append_new(
						json_object_get(rec, "blocked"),
						json_pack("{s:s, s:s, s:s}",
							  "vm", bl->vm_name,
							  "code",
							  bal_block_name(
								  bl->code),
							  "reason",
							  bl->reason));
			}
			json_object_set_new(rec, "state", json_string("done"));
		}
		json_object_set_new(rec, "idle_rounds", json_integer(idle));
	}
	write_changed(c, before);
	json_decref(before);
}
