/* migrate.c - the host's migrations: the migrator's lifecycle, outgoing
 * requests (started, or queued behind migration.max_outgoing), their
 * records, the audit. */
#define _GNU_SOURCE
#include "migrate_int.h"
#include "audit.h"
#include "policy.h"
#include "tls.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

void mig_audit(struct migrator *m, const char *actor, const char *action,
	       const char *target, const char *outcome, json_t *detail)
{
	struct ferr err;

	if (audit_log(m->deps.audit, actor, action, target, outcome, detail,
		      &err) < 0)
		log_error("audit: cannot record %s of %s: %s", action, target,
			  err.msg);
}

/* ---- records ---- */

/* A snapshot of g's record. */
static json_t *mig_snapshot(struct mig *g)
{
	json_t *copy;

	pthread_mutex_lock(&g->lock);
	copy = json_deep_copy(g->rec);
	pthread_mutex_unlock(&g->lock);
	return copy;
}

static void mig_free(struct mig *g)
{
	if (!g)
		return;
	if (g->done_ev)
		event_free(g->done_ev);
	json_decref(g->rec);
	migrator_attest_clear(&g->att);
	pthread_mutex_destroy(&g->lock);
	OPENSSL_cleanse(g->key, sizeof(g->key));
	free(g);
}

/* Unlink g from list. */
static void mig_unlink(struct mig **list, struct mig *g)
{
	for (struct mig **pp = list; *pp; pp = &(*pp)->next) {
		if (*pp == g) {
			*pp = g->next;
			return;
		}
	}
}

/* The queue's positions (1 = next) into the queued records. */
static void queue_renumber(struct migrator *m)
{
	unsigned pos = 1;

	for (struct mig *g = m->queued; g; g = g->next)
		mig_rec_set(g, "queue_position", json_integer(pos++));
}

/* Start g's driver (loop). On failure g ends at once as failed. */
static void mig_launch(struct migrator *m, struct mig *g)
{
	struct vm *vm = vmm_find(m->vmm, g->def.name);

	g->state = MIG_RUNNING;
	g->next = m->active;
	m->active = g;
	pthread_mutex_lock(&g->lock);
	json_object_del(g->rec, "queue_position");
	if (!g->resume_only)
		json_object_set_new(g->rec, "phase", json_string("prepare"));
	pthread_mutex_unlock(&g->lock);
	if (!vm || strcmp(vm->def.uuid, g->def.uuid) != 0 ||
	    (vm->state != VM_RUNNING && vm->state != VM_PAUSED) ||
	    vm_paths_get(m->cfg, &vm->def, &g->paths, &(struct ferr){ 0 }) <
		    0 ||
	    pthread_create(&g->driver, NULL, mig_driver, g) != 0) {
		pthread_mutex_lock(&g->lock);
		json_object_set_new(g->rec, "outcome", json_string("failed"));
		json_object_set_new(g->rec, "phase", json_string("done"));
		json_object_set_new(g->rec, "error",
				    json_string("the VM was not running or "
						"paused when its turn came"));
		pthread_mutex_unlock(&g->lock);
		g->state = MIG_ENDED;
		event_active(g->done_ev, EV_TIMEOUT, 0);
		return;
	}
	log_info("migration %s: vm %s to %s (%s), requested by %s", g->id,
		 g->def.name, g->opts.to, mig_mode_name(g->opts.mode),
		 g->requester);
}

/* Start queued migrations while slots are free. */
static void queue_run(struct migrator *m)
{
	unsigned active = 0;

	for (struct mig *g = m->active; g; g = g->next)
		active++;
	while (m->queued && active < m->cfg->max_outgoing && !m->stopping) {
		struct mig *g = m->queued;

		m->queued = g->next;
		mig_launch(m, g);
		active++;
	}
	queue_renumber(m);
}

/* Loop: the driver of g has finished (or g never started). */
static void on_mig_done(evutil_socket_t fd, short what, void *arg)
{
	struct mig *g = arg;
	struct migrator *m = g->m;
	const char *outcome;
	struct vm *vm;
	struct ferr err;
	json_t *rec;

	(void)fd;
	(void)what;
	if (g->state == MIG_RUNNING)
		pthread_join(g->driver, NULL);
	mig_unlink(&m->active, g);
	mig_unlink(&m->queued, g);
	rec = mig_snapshot(g);
	outcome = json_string_value(json_object_get(rec, "outcome")) ?: "";
	vm = vmm_find(m->vmm, g->def.name);
	if (vm && strcmp(vm->def.uuid, g->def.uuid) != 0)
		vm = NULL;
	log_info("migration %s of vm %s to %s: %s%s%s", g->id, g->def.name,
		 g->opts.to, outcome,
		 json_object_get(rec, "error") ? ": " : "",
		 json_string_value(json_object_get(rec, "error")) ?: "");
	if (g->unresolved) {
		/* the journal stays; the resolver takes it from here */
		json_t *jrec = journal_read(m->journal_dir, JOURNAL_SOURCE,
					    g->id, &err);

		if (vm)
			vm_release(vm, g->id);
		if (jrec)
			recover_unresolved(m, jrec);
		else
			log_error("migration %s: unresolved, but its journal "
				  "record is unreadable (%s): vm %s stays "
				  "paused for the operator",
				  g->id, err.msg, g->def.name);
	} else if (g->interrupted) {
		if (vm)
			vm_release(vm, g->id);
		log_info("migration %s: interrupted in post-copy; the next "
			 "start resumes it from its journal",
			 g->id);
	} else {
		if (vm) {
			vm_release(vm, g->id);
			/* split by a failed post-copy: the VM belongs to
			 * the destination since the switch */
			if (!strcmp(outcome, "completed") || g->split)
				vmm_migrated_away(m->vmm, vm);
		}
		history_add(&m->history, rec);
		mig_stats_note(m, rec);
		if (g->abort_pending) {
			/* the journal keeps it until the destination
			 * confirms the abort */
			json_t *jrec = mig_journal_rec(g, "aborting");

			if (jrec && journal_write(m->journal_dir,
						  JOURNAL_SOURCE, g->id, jrec,
						  &err) == 0)
				recover_abort(m, jrec, true);
			else
				recover_abort(m, jrec, false);
			json_decref(jrec);
		} else if (journal_remove(m->journal_dir, JOURNAL_SOURCE,
					  g->id, &err) < 0) {
			log_error("migration %s: %s", g->id, err.msg);
		}
	}
	json_decref(rec);
	mig_free(g);
	queue_run(m);
}

int migrator_start(struct migrator *m, struct vm *vm, const json_t *body,
		   const char *requester, json_t **reply, struct ferr *err)
{
	struct mig *g;
	unsigned active = 0, queued = 0;
	uint8_t rnd[MIG_SESSION_ID_LEN];
	bool rule_attest = false;

	if (m->stopping)
		return ferr_set(err, FERR_UNAVAILABLE,
				"ferryd is shutting down");
	if (vm->incoming || vm->hold.owner[0])
		return ferr_set(err, FERR_CONFLICT, "vm %s is already migrating",
				vm->def.name);
	if (vm->state != VM_RUNNING && vm->state != VM_PAUSED)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is %s; only a running or paused VM can "
				"migrate",
				vm->def.name, vm_state_name(vm->state));
	for (struct mig *o = m->active; o; o = o->next)
		active++;
	for (struct mig *o = m->queued; o; o = o->next)
		queued++;
	if (queued >= MIG_QUEUE_MAX) {
		ferr_set(err, FERR_RATE,
			 "host %s has %u migrations queued already; try again "
			 "later",
			 m->cfg->host, queued);
		mig_audit(m, requester, "migration.refused", vm->def.name,
			  "limit", json_pack("{s:s}", "reason", err->msg));
		return -1;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	pthread_mutex_init(&g->lock, NULL);
	g->m = m;
	g->listen_fd = -1;
	g->ready.fd = -1;
	if (mig_opts_from_json(body, &g->opts, err) < 0)
		goto fail;
	if (!strcmp(g->opts.to, m->cfg->host)) {
		ferr_set(err, FERR_INVALID, "vm %s is already on host %s",
			 vm->def.name, m->cfg->host);
		goto fail;
	}
	{
		struct policy_vm pvm = { vm->def.name, vm->def.labels,
					 vm->def.nlabels };
		struct policy_decision d;

		policy_check_out(*m->deps.policy, requester, &pvm, g->opts.to,
				 &d);
		mig_audit(m, requester, "policy.decision", vm->def.name,
			  d.allow ? "allow" : "deny",
			  json_pack("{s:s, s:s, s:s, s:s}", "check",
				    "migrate_out", "host", g->opts.to, "rule",
				    d.rule, "reason", d.reason));
		if (!d.allow) {
			ferr_set(err, FERR_FORBIDDEN, "%s", d.reason);
			goto fail;
		}
		rule_attest = d.attest;
		/* plaintext: only when this host's config and the rule that
		 * allows the move both say so (the destination checks its
		 * own the same way) */
		if (g->opts.insecure &&
		    (!m->cfg->allow_plaintext || !d.plaintext)) {
			ferr_set(err, FERR_FORBIDDEN,
				 "plaintext migration is not allowed here: %s",
				 !m->cfg->allow_plaintext
					 ? "ferryd.json's migration."
					   "allow_plaintext is off"
					 : "the rule that allows this move "
					   "does not say \"plaintext\": "
					   "\"allow\"");
			mig_audit(m, requester, "migration.refused",
				  vm->def.name, "plaintext",
				  json_pack("{s:s}", "reason", err->msg));
			goto fail;
		}
		if (g->opts.insecure)
			mig_audit(m, requester, "migration.plaintext",
				  vm->def.name, "allow",
				  json_pack("{s:s, s:s}", "to", g->opts.to,
					    "rule", d.rule));
	}
	/* a controller's request: refused when a newer leader exists */
	if (g->opts.fence && fence_check(&m->fence, g->opts.fence, err) < 0) {
		mig_audit(m, requester, "migration.refused", vm->def.name,
			  "fenced", json_pack("{s:s}", "reason", err->msg));
		goto fail;
	}
	g->def = vm->def;
	if (vm->fw.present) /* the rules on its tap go with it (secctx.c) */
		g->def.fw = vm->fw;
	if (mig_attest_plan(m, g, rule_attest, err) < 0)
		goto fail;
	if (!g->opts.max_downtime_ms ||
	    g->opts.max_downtime_ms > vm->def.max_downtime_ms)
		g->opts.max_downtime_ms = vm->def.max_downtime_ms;
	if (!g->opts.max_time_s)
		g->opts.max_time_s = vm->def.max_time_s;
	if (g->opts.mode == MIG_POSTCOPY && !vm->def.allow_postcopy) {
		ferr_set(err, FERR_INVALID,
			 "vm %s does not allow post-copy (its "
			 "migration.allow_postcopy is false)",
			 vm->def.name);
		goto fail;
	}
	/* QEMU carries post-copy on the main channel only */
	g->postcopy_cap = vm->def.allow_postcopy;
	mig_plan_make(&(struct mig_plan_in){
			      .host_cpus = (unsigned)sysconf(
				      _SC_NPROCESSORS_ONLN),
			      .vcpus = vm->def.vcpus,
			      .postcopy = g->postcopy_cap,
			      .channels = g->opts.channels,
			      .compress = g->opts.compress,
			      .peer_local = mig_addr_is_loopback(
				      g->opts.address) },
		      &g->plan);
	g->multifd = g->plan.multifd;
	g->nchan = 1 + g->multifd;
	snprintf(g->peer.name, sizeof(g->peer.name), "%s", g->opts.to);
	snprintf(g->peer.address, sizeof(g->peer.address), "%s",
		 g->opts.address);
	g->peer.port = g->opts.port;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		ferr_set(err, FERR_INTERNAL, "no randomness");
		goto fail;
	}
	hex_encode(rnd, sizeof(rnd), g->id);
	snprintf(g->requester, sizeof(g->requester), "%s", requester);
	g->rec = json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:I, "
		"s:I, s:I, s:s, s:s, s:[]}",
		"id", g->id, "role", "source", "vm", vm->def.name, "uuid",
		vm->def.uuid, "source", m->cfg->host, "destination",
		g->opts.to, "requester", requester, "mode",
		mig_mode_name(g->opts.mode), "insecure", g->opts.insecure,
		"channels", (json_int_t)g->multifd, "max_downtime_ms",
		(json_int_t)g->opts.max_downtime_ms, "bandwidth_mibps",
		(json_int_t)g->opts.bandwidth_mibps, "max_time_s",
		(json_int_t)g->opts.max_time_s, "started_at",
		(json_int_t)wall_ms(), "outcome", "running", "phase",
		"queued", "escalation");
	g->done_ev = event_new(m->base, -1, 0, on_mig_done, g);
	if (g->rec) {
		json_object_set_new(g->rec, "attest", json_boolean(g->att.on));
		json_object_set_new(g->rec, "path",
				    mig_plan_json(&g->plan, g->opts.compress));
	}
	if (!g->rec || !g->done_ev) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto fail;
	}
	if (g->opts.insecure)
		log_warn("migration %s of vm %s: --insecure: guest memory "
			 "crosses the network in plaintext",
			 g->id, vm->def.name);
	vm_hold(vm, g->id, "", false);
	g->state = MIG_QUEUED;
	if (active < m->cfg->max_outgoing && !m->queued) {
		mig_launch(m, g);
	} else {
		struct mig **pp = &m->queued;

		while (*pp)
			pp = &(*pp)->next;
		*pp = g;
		queue_renumber(m);
		log_info("migration %s: vm %s to %s queued (%u running)",
			 g->id, vm->def.name, g->opts.to, active);
	}
	*reply = mig_snapshot(g);
	return 0;
fail:
	mig_free(g);
	return -1;
}

int mig_resume_postcopy(struct migrator *m, struct vm *vm,
			const json_t *jrec, struct ferr *err)
{
	const json_t *peer = json_object_get(jrec, "peer");
	const char *id = json_string_value(json_object_get(jrec, "id"));
	const char *session =
		json_string_value(json_object_get(jrec, "session"));
	json_int_t port = json_integer_value(json_object_get(peer, "port"));
	struct mig *g = calloc(1, sizeof(*g));

	if (!g)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	pthread_mutex_init(&g->lock, NULL);
	g->m = m;
	g->listen_fd = -1;
	g->ready.fd = -1;
	g->resume_only = true;
	g->def = vm->def;
	g->opts.mode = MIG_POSTCOPY;
	g->opts.max_time_s = vm->def.max_time_s;
	g->opts.max_downtime_ms = vm->def.max_downtime_ms;
	g->postcopy_cap = true;
	g->nchan = 1;
	if (!id || strlen(id) != MIG_ID_HEX_LEN || !session ||
	    strlen(session) != MIG_ID_HEX_LEN || port < 1 || port > 65535 ||
	    !name_is_valid(json_string_value(json_object_get(peer, "name"))
			   ?: "") ||
	    strlen(json_string_value(json_object_get(peer, "address")) ?: "") >=
		    sizeof(g->peer.address)) {
		mig_free(g);
		return ferr_set(err, FERR_INVALID,
				"the journal record names no usable migration");
	}
	snprintf(g->id, sizeof(g->id), "%s", id);
	snprintf(g->session, sizeof(g->session), "%s", session);
	snprintf(g->peer.name, sizeof(g->peer.name), "%s",
		 json_string_value(json_object_get(peer, "name")));
	snprintf(g->peer.address, sizeof(g->peer.address), "%s",
		 json_string_value(json_object_get(peer, "address")));
	g->peer.port = (uint16_t)port;
	snprintf(g->opts.to, sizeof(g->opts.to), "%s", g->peer.name);
	snprintf(g->opts.address, sizeof(g->opts.address), "%s",
		 g->peer.address);
	g->opts.port = g->peer.port;
	snprintf(g->requester, sizeof(g->requester), "%s",
		 json_string_value(json_object_get(jrec, "requester")) ?: "-");
	g->was_running = json_is_true(json_object_get(jrec, "was_running"));
	g->rec = json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:O*, s:s, "
		"s:s, s:b, s:[]}",
		"id", g->id, "role", "source", "vm", vm->def.name, "uuid",
		vm->def.uuid, "source", m->cfg->host, "destination",
		g->opts.to, "requester", g->requester, "mode", "postcopy",
		"session", g->session, "started_at",
		json_object_get(jrec, "started_at"), "outcome", "running",
		"phase", "postcopy", "resumed_after_restart", 1, "escalation");
	g->done_ev = event_new(m->base, -1, 0, on_mig_done, g);
	if (!g->rec || !g->done_ev) {
		mig_free(g);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	vm_hold(vm, g->id, "", false);
	mig_launch(m, g);
	return 0;
}

/* Active or queued migration by id, or NULL. */
static struct mig *find_mig(struct migrator *m, const char *id)
{
	for (struct mig *g = m->active; g; g = g->next)
		if (!strcmp(g->id, id))
			return g;
	for (struct mig *g = m->queued; g; g = g->next)
		if (!strcmp(g->id, id))
			return g;
	return NULL;
}

int migrator_get(struct migrator *m, const char *id, json_t **reply,
		 struct ferr *err)
{
	struct mig *g = find_mig(m, id);

	if (g) {
		*reply = mig_snapshot(g);
		return 0;
	}
	for (struct unresolved *u = m->unresolved; u; u = u->next) {
		if (!strcmp(u->id, id)) {
			*reply = json_pack("{s:s, s:s, s:s, s:s, s:I}", "id",
					   u->id, "vm", u->vm, "outcome",
					   "unresolved", "phase", "unresolved",
					   "attempts",
					   (json_int_t)u->attempts);
			return 0;
		}
	}
	*reply = history_find(&m->history, id);
	if (*reply)
		return 0;
	return ferr_set(err, FERR_NOT_FOUND, "no migration %s on this host",
			id);
}

json_t *migrator_list(struct migrator *m)
{
	json_t *arr = json_array();
	json_t *hist = m->history.recs;

	for (struct mig *g = m->active; g; g = g->next)
		json_array_append_new(arr, mig_snapshot(g));
	for (struct mig *g = m->queued; g; g = g->next)
		json_array_append_new(arr, mig_snapshot(g));
	for (struct unresolved *u = m->unresolved; u; u = u->next)
		json_array_append_new(
			arr, json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", u->id,
				       "role", "source", "vm", u->vm, "outcome",
				       "unresolved", "phase", "unresolved"));
	for (size_t i = json_array_size(hist); i > 0; i--)
		json_array_append_new(arr,
				      json_deep_copy(json_array_get(hist,
								    i - 1)));
	return json_pack("{s:o}", "migrations", arr);
}

int migrator_cancel(struct migrator *m, const char *id, json_t **reply,
		    struct ferr *err)
{
	struct mig *g = find_mig(m, id);

	if (!g)
		return ferr_set(err, FERR_NOT_FOUND,
				"no active or queued migration %s on this "
				"host",
				id);
	atomic_store(&g->cancel, true);
	log_info("migration %s: cancel requested", id);
	if (g->state == MIG_QUEUED) {
		mig_unlink(&m->queued, g);
		pthread_mutex_lock(&g->lock);
		json_object_set_new(g->rec, "outcome",
				    json_string("cancelled"));
		json_object_set_new(g->rec, "phase", json_string("done"));
		json_object_set_new(g->rec, "ended_at",
				    json_integer((json_int_t)wall_ms()));
		json_object_del(g->rec, "queue_position");
		pthread_mutex_unlock(&g->lock);
		g->state = MIG_ENDED;
		*reply = mig_snapshot(g);
		mig_audit(m, g->requester, "migration.end", g->def.name,
			  "cancelled",
			  json_pack("{s:s, s:s, s:s}", "id", g->id, "role",
				    "source", "to", g->opts.to));
		event_active(g->done_ev, EV_TIMEOUT, 0);
		queue_renumber(m);
		return 0;
	}
	*reply = mig_snapshot(g);
	return 0;
}

void migrator_annotate_vm(struct migrator *m, const struct vm *vm,
			  json_t *obj)
{
	(void)m;
	if (vm->hold.owner[0])
		json_object_set_new(obj, "active_migration",
				    json_string(vm->hold.owner));
}

void migrator_counts(struct migrator *m, unsigned *active, unsigned *queued,
		     unsigned *unresolved)
{
	*active = *queued = *unresolved = 0;
	for (struct mig *g = m->active; g; g = g->next)
		(*active)++;
	for (struct mig *g = m->queued; g; g = g->next)
		(*queued)++;
	for (struct unresolved *u = m->unresolved; u; u = u->next)
		(*unresolved)++;
}

/* ---- the migrator ---- */

/* At start-up no channel is in use: remove the channel sockets
 * (state/run/ID.in, ID.out) that a ferryd or QEMU killed mid-migration left
 * behind. */
static void sweep_channel_sockets(const struct ferryd_config *cfg)
{
	char dir[FERRY_PATH_MAX], path[FERRY_PATH_MAX];
	struct dirent *de;
	struct ferr err;
	DIR *d;

	if (fmt_checked(dir, sizeof(dir), &err, "path", "%s/run",
			cfg->state_dir) < 0 ||
	    !(d = opendir(dir)))
		return;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		struct stat st;

		if (len < 4 || (strcmp(de->d_name + len - 3, ".in") != 0 &&
				strcmp(de->d_name + len - 4, ".out") != 0))
			continue;
		if (fmt_checked(path, sizeof(path), &err, "path", "%s/%s", dir,
				de->d_name) < 0 ||
		    lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
			continue;
		if (unlink(path) == 0)
			log_info("migration: removed a stale channel socket %s",
				 path);
	}
	closedir(d);
}

/* vmm exit hook: a VM's QEMU exited. */
static void on_vm_exit(struct vm *vm, void *arg)
{
	if (vm->incoming)
		incoming_vm_exited(arg, vm);
}

int migrator_new(const struct ferryd_config *cfg, struct event_base *base,
		 struct vmm *vmm, const struct migrator_deps *deps,
		 struct migrator **out, struct ferr *err)
{
	struct migrator *m = calloc(1, sizeof(*m));

	if (!m)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	m->cfg = cfg;
	m->base = base;
	m->vmm = vmm;
	m->deps = *deps;
	m->listen_fd = -1;
	session_table_init(&m->sessions);
	if (history_open(&m->history, cfg->state_dir, err) < 0 ||
	    fence_load(&m->fence, cfg->state_dir, err) < 0 ||
	    journal_init(cfg->state_dir, m->journal_dir,
			 sizeof(m->journal_dir), err) < 0)
		goto fail;
	sweep_channel_sockets(cfg);
	m->client_ctx = tls_client_ctx_new(cfg->ca_file, cfg->cert_file,
					   cfg->key_file, err);
	if (!m->client_ctx)
		goto fail;
	m->server_ctx = tls_server_ctx_new(cfg->ca_file, cfg->cert_file,
					   cfg->key_file, err);
	if (!m->server_ctx)
		goto fail;
	vmm_set_exit_hook(vmm, on_vm_exit, m);
	recover_all(m);
	if (inchan_listen(m, err) < 0)
		goto fail;
	*out = m;
	return 0;
fail:
	migrator_stop(m);
	migrator_free(m);
	return -1;
}

void migrator_stop(struct migrator *m)
{
	if (!m || m->stopping)
		return;
	m->stopping = true;
	atomic_store(&m->stop, true);
	/* queued ones end at once; running drivers see the cancel and end
	 * within their deadlines (an unresolved one keeps its journal) */
	while (m->queued) {
		struct ferr err;
		json_t *reply = NULL;

		migrator_cancel(m, m->queued->id, &reply, &err);
		json_decref(reply);
	}
	for (struct mig *g = m->active; g; g = g->next)
		atomic_store(&g->cancel, true);
	while (m->active) {
		struct mig *g = m->active;

		/* joins the driver here: its deadlines bound the wait */
		if (g->state == MIG_RUNNING)
			pthread_join(g->driver, NULL);
		g->state = MIG_ENDED;
		event_del(g->done_ev);
		on_mig_done(-1, 0, g);
	}
	recover_stop(m);
	incoming_abort_all(m);
	inchan_stop(m);
}

void migrator_free(struct migrator *m)
{
	if (!m)
		return;
	if (atomic_load(&m->chan_threads) > 0) {
		/* a channel thread still uses m: leak it rather than free
		 * it under the thread */
		log_error("migration: %d channel thread(s) still running; "
			  "not freeing the migrator",
			  atomic_load(&m->chan_threads));
		return;
	}
	if (m->vmm)
		vmm_set_exit_hook(m->vmm, NULL, NULL);
	SSL_CTX_free(m->client_ctx);
	SSL_CTX_free(m->server_ctx);
	history_close(&m->history);
	session_table_destroy(&m->sessions);
	free(m);
}

uint64_t migrator_conns_accepted(struct migrator *m)
{
	return atomic_load(&m->conns_accepted);
}
