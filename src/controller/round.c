/* round.c - one round of the leader: poll every host into the decision
 * code's model, settle and follow migrations, keep drains and the hosts'
 * flags in step, plan, act, publish. */
#include "ctl_int.h"
#include "policy.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- VM windows ---- */

static double window_mean(const struct ctl_vm *v)
{
	double sum = 0;

	for (unsigned i = 0; i < v->n; i++)
		sum += v->samples[i];
	return v->n ? sum / v->n : 0.0;
}

static const char *label_of(const struct ctl_vm *v, const char *key)
{
	for (unsigned i = 0; i < v->nlabels; i++)
		if (!strcmp(v->labels[i].key, key))
			return v->labels[i].value;
	return NULL;
}

static void vm_free(struct ctl_vm *v)
{
	if (v)
		free(v->labels);
	free(v);
}

/* The window of VM name: the model's, or a new one appended to c->vms. */
static struct ctl_vm *vm_window(struct controller *c, const char *name,
				bool *is_new)
{
	size_t i = bal_vm_find(c->bal, name);
	struct ctl_vm *v;

	*is_new = false;
	if (i != BAL_NONE && bal_vm_at(c->bal, i)->user)
		return bal_vm_at(c->bal, i)->user;
	if (c->nvms == c->capvms) {
		size_t cap = c->capvms ? c->capvms * 2 : 1024;
		struct ctl_vm **nv = realloc(c->vms, cap * sizeof(*nv));

		if (!nv)
			return NULL;
		c->vms = nv;
		c->capvms = cap;
	}
	v = calloc(1, sizeof(*v) + c->window * sizeof(v->samples[0]));
	if (!v)
		return NULL;
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->cap = c->window;
	c->vms[c->nvms++] = v;
	*is_new = true;
	return v;
}

/* Keep the labels the host reported (most rounds: unchanged). */
static void vm_labels(struct ctl_vm *v, const struct ctl_vm_report *vr)
{
	struct label *l;
	unsigned same = 0;

	while (v->nlabels == vr->nlabels && same < vr->nlabels &&
	       !strcmp(v->labels[same].key, vr->labels[same].key) &&
	       !strcmp(v->labels[same].value, vr->labels[same].value))
		same++;
	if (v->nlabels == vr->nlabels && same == vr->nlabels)
		return;
	l = vr->nlabels ? malloc(vr->nlabels * sizeof(*l)) : NULL;
	if (vr->nlabels && !l)
		return;
	if (l)
		memcpy(l, vr->labels, vr->nlabels * sizeof(*l));
	free(v->labels);
	v->labels = l;
	v->nlabels = vr->nlabels;
}

/* Forget the windows of VMs the model forgot. */
static void prune_windows(struct controller *c)
{
	size_t n = bal_vm_count(c->bal), k = 0;

	for (size_t i = 0; i < c->nvms; i++)
		c->vms[i]->kept = false;
	for (size_t i = 0; i < n; i++) {
		struct ctl_vm *v = bal_vm_at(c->bal, i)->user;

		if (v)
			v->kept = true;
	}
	for (size_t i = 0; i < c->nvms; i++) {
		if (c->vms[i]->kept)
			c->vms[k++] = c->vms[i];
		else
			vm_free(c->vms[i]);
	}
	c->nvms = k;
}

/* ---- feeding the model (called while polling) ---- */

/* Is a drain of host in the cluster's state (not ending)? */
static bool drain_wanted(struct controller *c, const char *host)
{
	const char *st = json_string_value(json_object_get(
		json_object_get(json_object_get(c->drains, host), "v"),
		"state"));

	return st && strcmp(st, "ending") != 0;
}

void ctl_feed(struct controller *c, struct ctl_host *h,
	      const struct ctl_report *r)
{
	struct bal_host_report hr = { .name = h->name,
				      .cores = r->cores,
				      .mem_mib = r->mem_mib,
				      .draining = r->draining ||
						  drain_wanted(c, h->name),
				      .user = h };
	struct ferr err;

	if (bal_host_report(c->bal, &hr, NULL, &err) < 0) {
		snprintf(h->error, sizeof(h->error), "%s", err.msg);
		return;
	}
	h->up = true;
	h->draining = r->draining;
	h->cores = r->cores;
	h->mem_mib = r->mem_mib;
	h->mem_committed_mib = r->mem_committed_mib;
	h->nvms = 0;
	for (size_t i = 0; i < r->nvms; i++) {
		const struct ctl_vm_report *vr = &r->vms[i];
		struct bal_vm_report br = { 0 };
		struct ctl_move *m;
		struct ctl_vm *v;
		bool is_new;

		if (vr->state == CTL_VM_INCOMING)
			continue;
		h->nvms++;
		if (vr->state == CTL_VM_OTHER)
			continue; /* shut off: nothing to balance */
		v = vm_window(c, vr->name, &is_new);
		if (!v)
			continue;
		/* a new process (just migrated) has no figure yet: the
		 * window from its previous host goes on */
		if (vr->has_cpu && v->seen_round != c->round) {
			v->samples[v->pos] = (float)vr->cpu;
			v->pos = (v->pos + 1) % v->cap;
			if (v->n < v->cap)
				v->n++;
		}
		v->seen_round = c->round;
		vm_labels(v, vr);
		m = ctl_move_find(c, vr->name);
		br.name = vr->name;
		br.host = h->name;
		br.cpu = window_mean(v);
		br.mem_mib = vr->mem_mib;
		br.dirty_mibps = vr->dirty_mibps;
		br.pinned = label_of(v, "pin") != NULL;
		br.affinity = label_of(v, "affinity");
		br.anti_affinity = label_of(v, "anti-affinity");
		br.user = v;
		/* in flight while its source still lists it (a move whose
		 * start we cannot confirm: while the source says so) */
		if (m && !strcmp(m->from, h->name) && !m->outcome[0] &&
		    (m->id[0] || vr->migrating)) {
			br.migrating_to = m->to;
			m->seen = true;
		}
		if (bal_vm_report(c->bal, &br, NULL, &err) < 0) {
			log_warn("controller: vm %s on %s: %s", vr->name,
				 h->name, err.msg);
			if (is_new)
				vm_free(c->vms[--c->nvms]);
		}
	}
}

/* ---- the round ---- */

/* Load the cluster policy again when its file changed; a broken new file
 * leaves the old policy in force (as ferryd's own reload does). */
static void round_policy(struct controller *c)
{
	struct ferr err;
	struct stat st;

	if (!c->policy_path[0] || stat(c->policy_path, &st) < 0 ||
	    (st.st_mtim.tv_sec == c->policy_mtime.tv_sec &&
	     st.st_mtim.tv_nsec == c->policy_mtime.tv_nsec))
		return;
	c->policy_mtime = st.st_mtim;
	if (policy_reload(&c->policy, c->policy_path, &err) < 0) {
		log_warn("controller: policy not reloaded, the old one stays: "
			 "%s",
			 err.msg);
		ctl_audit(c, NULL, "balance.policy_reload", c->policy_path,
			  "error", json_pack("{s:s}", "error", err.msg));
		return;
	}
	log_info("controller: policy %s reloaded", c->policy_path);
	ctl_audit(c, NULL, "balance.policy_reload", c->policy_path, "ok",
		  NULL);
}

/* The mode and the parameters in force: the cluster's (with etcd its
 * first leader writes its configured ones when there are none). */
static void round_settings(struct controller *c)
{
	json_t *m = ctl_store_get(c, CTL_KEY_MODE, NULL);
	json_t *p = ctl_store_get(c, CTL_KEY_PARAMS, NULL);
	struct bal_params np = c->params_default;
	struct ferr err;
	int mode = m ? ctl_mode_parse(json_string_value(
			       json_object_get(m, "mode")))
		     : -1;

	/* with etcd, every controller follows the same settings from the
	 * first leader's configuration on; alone, the configuration holds
	 * until someone sets a mode or parameters */
	if (c->etcd && (!m || !p)) {
		json_t *dm = json_pack("{s:s, s:s, s:I}", "mode",
				       ctl_mode_names[c->mode_default], "by",
				       "config", "at", (json_int_t)wall_ms());
		json_t *dp = json_pack("{s:o, s:s, s:I}", "params",
				       bal_params_json(&c->params_default),
				       "by", "config", "at",
				       (json_int_t)wall_ms());
		struct ctl_store_op ops[2];
		size_t n = 0;

		if (!m)
			ops[n++] = (struct ctl_store_op){ CTL_KEY_MODE, dm, 0 };
		if (!p)
			ops[n++] = (struct ctl_store_op){ CTL_KEY_PARAMS, dp,
							  0 };
		if (ctl_store_write(c, ops, n, true, &err) < 0)
			log_warn("controller: cannot seed the cluster's "
				 "settings: %s",
				 err.msg);
		json_decref(dm);
		json_decref(dp);
	}
	c->mode = mode >= 0 ? (enum ctl_mode)mode : c->mode_default;
	if (p && bal_params_from_json(json_object_get(p, "params"),
				      "cluster/params", &np, &err) < 0) {
		log_warn("controller: the cluster's parameters are ignored: "
			 "%s",
			 err.msg);
		np = c->params_default;
	}
	if (memcmp(&np, &c->params, sizeof(np)) != 0 &&
	    bal_cluster_set_params(c->bal, &np, &err) == 0) {
		if (c->round)
			log_info("controller: parameters changed");
		c->params = np;
	}
	json_decref(m);
	json_decref(p);
}

/* Publish the plan when it changed (or once a minute). */
static void round_publish(struct controller *c, const struct bal_plan *plan)
{
	json_t *pj = bal_plan_json(plan);
	struct ferr err;
	char *text;
	bool same;

	if (!pj)
		return;
	json_object_set_new(pj, "mode", json_string(ctl_mode_names[c->mode]));
	json_object_set_new(pj, "round", json_integer((json_int_t)c->round));
	json_object_set_new(pj, "at", json_integer((json_int_t)wall_ms()));
	json_object_set_new(pj, "controller", json_string(c->cfg->host));
	/* a plan too large for the store keeps its moves and loses reasons */
	text = json_dumps(pj, JSON_COMPACT);
	if (text && strlen(text) > CTL_PLAN_JSON_MAX) {
		json_object_set_new(pj, "blocked", json_array());
		json_object_set_new(pj, "note",
				    json_string("blocked entries left out: "
						"the plan was too large"));
	}
	free(text);
	same = c->plan_stored &&
	       json_equal(json_object_get(pj, "moves"),
			  json_object_get(c->plan_stored, "moves")) &&
	       json_equal(json_object_get(pj, "blocked"),
			  json_object_get(c->plan_stored, "blocked")) &&
	       json_equal(json_object_get(pj, "mode"),
			  json_object_get(c->plan_stored, "mode")) &&
	       (uint64_t)json_integer_value(
		       json_object_get(c->plan_stored, "at")) +
			       60000 >
		       wall_ms();
	if (!same &&
	    ctl_store_write(c,
			    &(struct ctl_store_op){ CTL_KEY_PLAN, pj, -1 }, 1,
			    true, &err) < 0)
		log_warn("controller: plan not published: %s", err.msg);
	else if (!same) {
		json_decref(c->plan_stored);
		c->plan_stored = json_incref(pj);
	}
	if (plan->nmoves && c->mode == CTL_MODE_RECOMMEND && !same)
		ctl_audit(c, NULL, "balance.plan", "-", "recommended",
			  json_pack("{s:I}", "moves",
				    (json_int_t)plan->nmoves));
	json_decref(pj);
}

/* What the API shows of the hosts and the round (and how long its poll
 * and the whole round took). */
static void round_view(struct controller *c, uint64_t poll_ms,
		       uint64_t round_ms)
{
	struct ctl_host_view *view = calloc(c->nhosts ? c->nhosts : 1,
					    sizeof(*view));
	struct bal_stats st;
	json_t *status;

	bal_stats(c->bal, &st);
	for (size_t i = 0; view && i < c->nhosts; i++) {
		const struct ctl_host *h = &c->hosts[i];
		size_t idx = bal_host_find(c->bal, h->name);
		const struct bal_host *bh =
			idx != BAL_NONE ? bal_host_at(c->bal, idx) : NULL;

		view[i] = (struct ctl_host_view){
			.name = h->name,
			.up = h->up,
			.draining = h->draining,
			.load = bh ? bh->load : 0,
			.cpu = bh ? bh->cpu : 0,
			.cores = h->cores,
			.mem_mib = h->mem_mib,
			.mem_committed_mib = h->mem_committed_mib,
			.nvms = h->nvms,
			.hot_rounds = bh ? bh->hot_rounds : 0,
		};
		snprintf(view[i].error, sizeof(view[i].error), "%s",
			 h->up ? "" : h->error);
	}
	status = json_pack("{s:I, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I}",
			   "round", (json_int_t)c->round, "imbalance",
			   st.imbalance, "mean_load", st.mean_load,
			   "hosts_hot", (json_int_t)st.hosts_hot, "hosts_up",
			   (json_int_t)st.hosts_up, "vms",
			   (json_int_t)bal_vm_count(c->bal), "poll_ms",
			   (json_int_t)poll_ms, "round_ms",
			   (json_int_t)round_ms, "round_at",
			   (json_int_t)wall_ms());
	pthread_mutex_lock(&c->lock);
	if (view) {
		free(c->view);
		c->view = view;
		c->nview = c->nhosts;
	}
	json_decref(c->status);
	c->status = status;
	pthread_mutex_unlock(&c->lock);
}

void ctl_round(struct controller *c)
{
	uint64_t now_s = wall_ms() / 1000, t0 = now_ms(), t_poll;
	struct bal_plan plan = { 0 };
	struct bal_stats st;
	struct ferr err;

	c->round++;
	json_decref(c->drains);
	c->drains = ctl_store_list(c, CTL_KEY_DRAINS);
	round_settings(c);
	round_policy(c);
	ctl_drains_flags(c);
	bal_round_begin(c->bal, now_s);
	t_poll = now_ms();
	ctl_poll(c);
	t_poll = now_ms() - t_poll;
	bal_observe(c->bal);
	prune_windows(c);
	ctl_moves_settle(c, now_s);
	ctl_moves_follow(c, now_s);
	bal_stats(c->bal, &st);
	if (c->mode != CTL_MODE_OFF || st.hosts_draining || c->nmoves) {
		if (bal_plan(c->bal, &plan, &err) < 0) {
			log_error("controller: plan: %s", err.msg);
		} else {
			ctl_moves_start(c, &plan, now_s);
			ctl_drains_progress(c, &plan);
			round_publish(c, &plan);
		}
		bal_plan_free(&plan);
	} else {
		ctl_drains_progress(c, NULL);
	}
	ctl_moves_prune(c, now_s);
	if (c->interval_s > CTL_KEEP_INTERVAL_MAX_S)
		ctl_poll_close(c, false);
	round_view(c, t_poll, now_ms() - t0);
	/* a round parses a report per host and frees it: give the pages
	 * back rather than keep the round's high-water mark resident */
	malloc_trim(0);
	log_debug("controller: round %llu in %llu ms, %zu of %zu hosts up",
		  (unsigned long long)c->round,
		  (unsigned long long)(now_ms() - t0), st.hosts_up, c->nhosts);
}

/* Forget the model (a new leadership starts from the cluster's state). */
void ctl_round_reset(struct controller *c)
{
	struct bal_cluster *nb = NULL;
	struct ferr err;

	if (bal_cluster_new(&c->params_default, &nb, &err) < 0) {
		log_error("controller: %s", err.msg);
		return;
	}
	bal_set_policy(nb, ctl_policy_allows, c);
	bal_cluster_free(c->bal);
	c->bal = nb;
	c->params = c->params_default;
	for (size_t i = 0; i < c->nvms; i++)
		vm_free(c->vms[i]);
	c->nvms = 0;
	free(c->moves);
	c->moves = NULL;
	c->nmoves = c->capmoves = 0;
	json_decref(c->history);
	c->history = NULL;
	json_decref(c->plan_stored);
	c->plan_stored = NULL;
	for (size_t i = 0; i < c->nhosts; i++) {
		c->hosts[i].up = false;
		c->hosts[i].fenced = 0;
	}
}
