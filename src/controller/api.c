/* api.c - the controller's routes (docs/api.md): any controller answers
 * them, the leader and the standbys alike. Reads come from the round's
 * view and the cluster state's mirror and never wait; writes go to the
 * cluster state (etcd) and block, so ferryd runs them on a worker. */
#include "ctl_int.h"

#include <stdlib.h>
#include <string.h>

static json_t *host_json(const struct ctl_host_view *v)
{
	json_t *o = json_pack("{s:s, s:b, s:f, s:f, s:I, s:I, s:I, s:b, s:I, "
			      "s:I}",
			      "name", v->name, "reachable", v->up, "load",
			      v->load, "cpu_cores", v->cpu, "cpus",
			      (json_int_t)v->cores, "memory_committed_mib",
			      (json_int_t)v->mem_committed_mib,
			      "memory_total_mib", (json_int_t)v->mem_mib,
			      "draining", v->draining, "vms",
			      (json_int_t)v->nvms, "hot_rounds",
			      (json_int_t)v->hot_rounds);

	if (o && v->error[0])
		json_object_set_new(o, "error", json_string(v->error));
	return o;
}

/* The cluster's mode (or the configured one while it has none). */
static const char *mode_now(struct controller *c)
{
	json_t *m = ctl_store_get(c, CTL_KEY_MODE, NULL);
	int i = m ? ctl_mode_parse(json_string_value(
			    json_object_get(m, "mode")))
		  : -1;

	json_decref(m);
	return ctl_mode_names[i >= 0 ? i : (int)c->mode_default];
}

json_t *controller_status(struct controller *c, bool with_hosts)
{
	json_t *lead = ctl_lead_json(c), *hosts = json_array();
	json_t *moves = ctl_store_list(c, CTL_KEY_MOVES), *inflight =
							       json_array();
	json_t *params = ctl_store_get(c, CTL_KEY_PARAMS, NULL), *s, *e;
	const char *vm;

	json_object_foreach(moves, vm, e) {
		json_t *r = json_object_get(e, "v");
		const char *out = json_string_value(
			json_object_get(r, "outcome"));

		if (out && (!strcmp(out, "starting") || !strcmp(out, "running")))
			json_array_append_new(
				inflight,
				json_pack("{s:s, s:O?, s:O?, s:O?, s:O?, s:s}",
					  "vm", vm, "from",
					  json_object_get(r, "from"), "to",
					  json_object_get(r, "to"), "id",
					  json_object_get(r, "id"),
					  "started_at",
					  json_object_get(r, "started_ms"),
					  "state", out));
	}
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; with_hosts && i < c->nview; i++)
		json_array_append_new(hosts, host_json(&c->view[i]));
	s = c->status ? json_deep_copy(c->status)
		      : json_pack("{s:I}", "round", (json_int_t)0);
	json_object_set_new(s, "moves_total",
			    json_integer((json_int_t)c->moves_total));
	pthread_mutex_unlock(&c->lock);
	json_object_update(s, lead);
	json_object_set_new(s, "controller", json_string(c->cfg->host));
	json_object_set_new(s, "mode", json_string(mode_now(c)));
	json_object_set_new(s, "interval_s", json_integer(c->interval_s));
	json_object_set_new(s, "hosts_configured",
			    json_integer((json_int_t)c->nhosts));
	json_object_set_new(s, "params",
			    params ? json_incref(json_object_get(params,
								 "params"))
				   : bal_params_json(&c->params_default));
	if (with_hosts)
		json_object_set_new(s, "hosts", hosts);
	else
		json_decref(hosts);
	json_object_set_new(s, "inflight", inflight);
	json_decref(lead);
	json_decref(moves);
	json_decref(params);
	return s;
}

json_t *controller_plan(struct controller *c)
{
	json_t *p = ctl_store_get(c, CTL_KEY_PLAN, NULL);
	const char *mode = mode_now(c);

	if (!p)
		return json_pack("{s:s, s:[], s:[], s:s}", "mode", mode,
				 "moves", "blocked", "note",
				 !strcmp(mode, "off")
					 ? "the balancer is off"
					 : "no round has completed yet");
	if (!json_object_get(p, "note") &&
	    json_array_size(json_object_get(p, "moves")) == 0)
		json_object_set_new(p, "note",
				    json_string("the cluster needs no move"));
	return p;
}

json_t *controller_drains(struct controller *c)
{
	json_t *list = ctl_store_list(c, CTL_KEY_DRAINS), *arr = json_array();
	const char *host;
	json_t *e;

	json_object_foreach(list, host, e)
		json_array_append(arr, json_object_get(e, "v"));
	json_decref(list);
	return json_pack("{s:o}", "drains", arr);
}

int controller_set_mode(struct controller *c, const json_t *body,
			const char *identity, json_t **reply,
			struct ferr *err)
{
	static const char *const fields[] = { "mode", NULL };
	const char *s = NULL;
	json_t *v;
	int rc;

	if (json_check_fields(body, fields, "balance", err) < 0 ||
	    json_get_string(body, "mode", "balance", 16, &s, err) < 0)
		return -1;
	if (!s || ctl_mode_parse(s) < 0)
		return ferr_set(err, FERR_INVALID,
				"balance.mode must be off, recommend or auto");
	v = json_pack("{s:s, s:s, s:I}", "mode", s, "by", identity, "at",
		      (json_int_t)wall_ms());
	rc = ctl_store_write(c, &(struct ctl_store_op){ CTL_KEY_MODE, v, -1 },
			     1, false, err);
	json_decref(v);
	if (rc < 0)
		return -1;
	log_info("controller: mode %s (by %s)", s, identity);
	ctl_wake(c);
	*reply = json_pack("{s:s}", "mode", s);
	return 0;
}

int controller_set_params(struct controller *c, const json_t *body,
			  const char *identity, json_t **reply,
			  struct ferr *err)
{
	static const char *const fields[] = { "params", NULL };
	json_t *cur = ctl_store_get(c, CTL_KEY_PARAMS, NULL), *v;
	struct bal_params p = c->params_default;
	int rc = -1;

	if (json_check_fields(body, fields, "balance", err) < 0)
		goto out;
	if (!json_is_object(json_object_get(body, "params"))) {
		ferr_set(err, FERR_INVALID,
			 "balance.params must be an object of parameters");
		goto out;
	}
	/* the cluster's parameters, then the change */
	if ((cur && bal_params_from_json(json_object_get(cur, "params"),
					 "cluster/params", &p, err) < 0) ||
	    bal_params_from_json(json_object_get(body, "params"), "params", &p,
				 err) < 0)
		goto out;
	v = json_pack("{s:o, s:s, s:I}", "params", bal_params_json(&p), "by",
		      identity, "at", (json_int_t)wall_ms());
	rc = ctl_store_write(c,
			     &(struct ctl_store_op){ CTL_KEY_PARAMS, v, -1 },
			     1, false, err);
	if (rc == 0) {
		*reply = json_pack("{s:O}", "params",
				   json_object_get(v, "params"));
		log_info("controller: parameters changed by %s", identity);
		ctl_wake(c);
	}
	json_decref(v);
out:
	json_decref(cur);
	return rc;
}

int controller_drain(struct controller *c, const json_t *body, bool on,
		     const char *identity, json_t **reply, struct ferr *err)
{
	static const char *const fields[] = { "host", NULL };
	char key[sizeof(CTL_KEY_DRAINS) + FERRY_NAME_MAX + 1];
	const char *host = NULL;
	json_t *cur, *v;
	int64_t mod = 0;
	int rc;

	if (json_check_fields(body, fields, "drain", err) < 0 ||
	    json_get_string(body, "host", "drain", FERRY_NAME_MAX, &host,
			    err) < 0)
		return -1;
	if (!host || !ctl_host_find(c, host))
		return ferr_set(err, FERR_NOT_FOUND,
				"%s is not a host of this balancer's cluster",
				host ? host : "(none)");
	snprintf(key, sizeof(key), "%s%s", CTL_KEY_DRAINS, host);
	cur = ctl_store_get(c, key, &mod);
	if (on && !cur) {
		json_t *all = ctl_store_list(c, CTL_KEY_DRAINS);
		size_t n = json_object_size(all);

		json_decref(all);
		if (n >= CTL_DRAINS_MAX)
			return ferr_set(err, FERR_RATE,
					"too many drains at once");
	}
	/* a new drain, another pass of one (what moved stays), or its end */
	v = json_pack("{s:s, s:s, s:I, s:s, s:O*, s:[], s:i, s:i}", "host",
		      host, "state", on ? "starting" : "ending", "started_at",
		      (json_int_t)wall_ms(), "by", identity, "moved",
		      json_object_get(cur, "moved"), "blocked", "remaining",
		      -1, "idle_rounds", 0);
	if (!json_object_get(v, "moved"))
		json_object_set_new(v, "moved", json_array());
	rc = ctl_store_write(c, &(struct ctl_store_op){ key, v, mod }, 1,
			     false, err);
	json_decref(v);
	json_decref(cur);
	if (rc < 0)
		return -1;
	ctl_wake(c);
	*reply = json_pack("{s:s, s:s}", "host", host, "state",
			   on ? "draining" : "undraining");
	return 0;
}
