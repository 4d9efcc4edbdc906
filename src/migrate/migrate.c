/* migrate.c - the host's migrations: options, records and history, the
 * API entry points of both sides, and file identities for shared storage. */
#define _GNU_SOURCE
#include "migrate.h"
#include "audit.h"
#include "policy.h"
#include "tls.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#define FP_CHUNK (1024 * 1024)

const char *mig_mode_name(enum mig_mode m)
{
	switch (m) {
	case MIG_OFFLINE:
		return "offline";
	case MIG_POSTCOPY:
		return "postcopy";
	default:
		return "live";
	}
}

int mig_opts_from_json(const json_t *body, struct mig_opts *o,
		       struct ferr *err)
{
	static const char *const fields[] = {
		"to", "address", "port", "mode", "max_downtime_ms",
		"bandwidth_mibps", "channels", "max_time_s", "insecure", NULL
	};
	const char *s = NULL, *mode = NULL;
	unsigned char buf[16];
	uint64_t port = FERRY_API_PORT_DEFAULT;

	memset(o, 0, sizeof(*o));
	if (!body)
		return ferr_set(err, FERR_INVALID,
				"a migration request needs a body naming the "
				"destination");
	if (json_check_fields(body, fields, "migration", err) < 0 ||
	    json_get_string(body, "to", "migration", FERRY_NAME_MAX, &s, err) <
		    0)
		return -1;
	if (!s || !name_is_valid(s))
		return ferr_set(err, FERR_INVALID,
				"migration.to must name the destination host");
	snprintf(o->to, sizeof(o->to), "%s", s);
	s = NULL;
	if (json_get_string(body, "address", "migration", 63, &s, err) < 0)
		return -1;
	if (!s || (inet_pton(AF_INET, s, buf) != 1 &&
		   inet_pton(AF_INET6, s, buf) != 1))
		return ferr_set(err, FERR_INVALID,
				"migration.address must be the destination's "
				"numeric IP address");
	snprintf(o->address, sizeof(o->address), "%s", s);
	if (json_get_u64(body, "port", "migration", 1, 65535, &port, err) < 0 ||
	    json_get_string(body, "mode", "migration", 16, &mode, err) < 0 ||
	    json_get_u64(body, "max_downtime_ms", "migration",
			 FERRY_MIG_DOWNTIME_MS_MIN, FERRY_MIG_DOWNTIME_MS_MAX,
			 &o->max_downtime_ms, err) < 0 ||
	    json_get_u64(body, "bandwidth_mibps", "migration", 1, 1000000,
			 &o->bandwidth_mibps, err) < 0 ||
	    json_get_u64(body, "channels", "migration", 1, MIG_MULTIFD_MAX,
			 &o->channels, err) < 0 ||
	    json_get_u64(body, "max_time_s", "migration", FERRY_MIG_TIME_S_MIN,
			 FERRY_MIG_TIME_S_MAX, &o->max_time_s, err) < 0 ||
	    json_get_bool(body, "insecure", "migration", &o->insecure, err) < 0)
		return -1;
	o->port = (uint16_t)port;
	if (!mode || !strcmp(mode, "live"))
		o->mode = MIG_LIVE;
	else if (!strcmp(mode, "offline"))
		o->mode = MIG_OFFLINE;
	else if (!strcmp(mode, "postcopy"))
		o->mode = MIG_POSTCOPY;
	else
		return ferr_set(err, FERR_INVALID,
				"migration.mode must be \"live\", \"offline\" "
				"or \"postcopy\"");
	return 0;
}

/* ---- file identities ---- */

/* SHA-256 of len bytes of fd from off, fed into ctx. */
static int hash_range(int fd, EVP_MD_CTX *ctx, uint64_t off, uint64_t len)
{
	static __thread unsigned char buf[FP_CHUNK];

	while (len > 0) {
		size_t want = len > sizeof(buf) ? sizeof(buf) : (size_t)len;
		ssize_t n = pread(fd, buf, want, (off_t)off);

		if (n <= 0)
			return -1;
		if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
			return -1;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* Identity of one shared-storage file: size and sha256 (see migrate.h). */
static json_t *file_identity(const char *shared, const char *rel,
			     struct ferr *err)
{
	char path[FERRY_PATH_MAX], hex[2 * EVP_MAX_MD_SIZE + 1];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = NULL;
	struct stat st;
	json_t *out = NULL;
	uint64_t size;
	int fd;

	if (fmt_checked(path, sizeof(path), err, "path", "%s/%s", shared,
			rel) < 0)
		return NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ferr_set(err, FERR_CONFLICT,
			 "%s is not a file in shared storage", rel);
		goto out;
	}
	size = (uint64_t)st.st_size;
	ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto fail;
	if (size <= MIG_FINGERPRINT_FULL) {
		if (hash_range(fd, ctx, 0, size) < 0)
			goto fail;
	} else if (hash_range(fd, ctx, 0, FP_CHUNK) < 0 ||
		   hash_range(fd, ctx, size - FP_CHUNK, FP_CHUNK) < 0) {
		goto fail;
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
		goto fail;
	hex_encode(md, mdlen, hex);
	out = json_pack("{s:s, s:I, s:s}", "path", rel, "size",
			(json_int_t)size, "sha256", hex);
	goto out;
fail:
	ferr_set(err, FERR_IO, "cannot read %s", path);
out:
	EVP_MD_CTX_free(ctx);
	if (fd >= 0)
		close(fd);
	return out;
}

json_t *mig_files_identity(struct migrator *m, const struct vm_def *def,
			   struct ferr *err)
{
	const char *const names[] = { "kernel", "initrd", "disk" };
	const char *const rels[] = { def->kernel, def->initrd, def->disk };
	json_t *files = json_object();

	for (int i = 0; i < 3 && files; i++) {
		json_t *id;

		if (!rels[i][0])
			continue;
		id = file_identity(m->cfg->shared_dir, rels[i], err);
		if (!id) {
			json_decref(files);
			return NULL;
		}
		json_object_set_new(files, names[i], id);
	}
	return files;
}

void mig_audit(struct migrator *m, const char *actor, const char *action,
	       const char *target, const char *outcome, json_t *detail)
{
	struct ferr err;

	if (audit_log(m->deps.audit, actor, action, target, outcome, detail,
		      &err) < 0)
		log_error("audit: cannot record %s of %s: %s", action, target,
			  err.msg);
}

/* Audit a policy decision about a migration. */
static void audit_decision(struct migrator *m, const char *actor,
			   const char *vm, const char *check,
			   const char *host, const struct policy_decision *d)
{
	mig_audit(m, actor, "policy.decision", vm, d->allow ? "allow" : "deny",
		  json_pack("{s:s, s:s, s:s, s:s}", "check", check, "host",
			    host, "rule", d->rule, "reason", d->reason));
}

/* ---- history ---- */

/* Load the newest MIG_HISTORY_MAX records of the history file. */
static void history_load(struct migrator *m)
{
	char *text = NULL;
	size_t len = 0;
	struct ferr err;

	m->history = json_array();
	if (file_read_all(m->history_path, MIG_HISTORY_FILE_MAX, &text, &len,
			  &err) < 0) {
		if (err.code != FERR_NOT_FOUND)
			log_warn("migration history: %s", err.msg);
		return;
	}
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		json_t *rec = json_loads(line, JSON_REJECT_DUPLICATES, NULL);

		if (!json_is_object(rec)) {
			json_decref(rec);
			log_warn("migration history: skipping a bad line");
			continue;
		}
		json_array_append_new(m->history, rec);
		if (json_array_size(m->history) > MIG_HISTORY_MAX)
			json_array_remove(m->history, 0);
	}
	free(text);
}

void mig_history_add(struct migrator *m, json_t *rec)
{
	char *line = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
	int fd;

	json_array_append(m->history, rec);
	if (json_array_size(m->history) > MIG_HISTORY_MAX)
		json_array_remove(m->history, 0);
	if (!line)
		return;
	fd = open(m->history_path,
		  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, line, strlen(line)) < 0 ||
	    write(fd, "\n", 1) < 0 || fsync(fd) < 0)
		log_warn("cannot append to %s: %s", m->history_path,
			 strerror(errno));
	if (fd >= 0)
		close(fd);
	free(line);
}

/* ---- outgoing: start, progress, end ---- */

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
	pthread_mutex_destroy(&g->lock);
	OPENSSL_cleanse(g->key, sizeof(g->key));
	free(g);
}

/* Main loop: the driver of g has finished. */
static void on_mig_done(evutil_socket_t fd, short what, void *arg)
{
	struct mig *g = arg;
	struct migrator *m = g->m;
	struct vm *vm;
	json_t *rec;

	(void)fd;
	(void)what;
	pthread_join(g->driver, NULL);
	for (struct mig **pp = &m->active; *pp; pp = &(*pp)->next) {
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	}
	rec = mig_snapshot(g);
	vm = vmm_find(m->vmm, g->def.name);
	if (vm && !strcmp(vm->def.uuid, g->def.uuid)) {
		vm->mig_out = NULL;
		if (!strcmp(json_string_value(json_object_get(rec, "outcome"))
				    ?: "",
			    "completed"))
			vmm_migrated_away(m->vmm, vm);
	}
	log_info("migration %s of vm %s to %s: %s%s%s", g->id, g->def.name,
		 g->opts.to, json_string_value(json_object_get(rec, "outcome")),
		 json_object_get(rec, "error") ? ": " : "",
		 json_string_value(json_object_get(rec, "error")) ?: "");
	mig_history_add(m, rec);
	json_decref(rec);
	mig_free(g);
}

int migrator_start(struct migrator *m, struct vm *vm, const json_t *body,
		   const char *requester, json_t **reply, struct ferr *err)
{
	struct mig *g;
	uint8_t sid[MIG_SESSION_ID_LEN];

	if (vm->incoming || vm->mig_out)
		return ferr_set(err, FERR_CONFLICT, "vm %s is already migrating",
				vm->def.name);
	if (vm->state != VM_RUNNING && vm->state != VM_PAUSED)
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is %s; only a running or paused VM can "
				"migrate",
				vm->def.name, vm_state_name(vm->state));
	{
		unsigned active = 0;

		for (struct mig *o = m->active; o; o = o->next)
			active++;
		if (active >= m->cfg->max_outgoing) {
			ferr_set(err, FERR_RATE,
				 "host %s already runs %u outgoing "
				 "migration(s) (migration.max_outgoing); try "
				 "again when one ends",
				 m->cfg->host, active);
			mig_audit(m, requester, "migration.refused",
				  vm->def.name, "limit",
				  json_pack("{s:s}", "reason", err->msg));
			return -1;
		}
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	pthread_mutex_init(&g->lock, NULL);
	g->m = m;
	g->listen_fd = -1;
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
		audit_decision(m, requester, vm->def.name, "migrate_out",
			       g->opts.to, &d);
		if (!d.allow) {
			ferr_set(err, FERR_FORBIDDEN, "%s", d.reason);
			goto fail;
		}
	}
	g->def = vm->def;
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
	g->multifd = g->postcopy_cap ? 0
				     : (unsigned)(g->opts.channels
							  ? g->opts.channels
							  : MIG_CHANNELS_DEFAULT);
	g->nchan = 1 + g->multifd;
	if (RAND_bytes(sid, sizeof(sid)) != 1) {
		ferr_set(err, FERR_INTERNAL, "no randomness");
		goto fail;
	}
	memcpy(g->sid, sid, sizeof(sid));
	hex_encode(sid, sizeof(sid), g->id);
	snprintf(g->requester, sizeof(g->requester), "%s", requester);
	if (vm_paths_get(m->cfg, &vm->def, &g->paths, err) < 0 ||
	    fmt_checked(g->out_sock, sizeof(g->out_sock), err, "socket path",
			"%s/run/%.16s.out", m->cfg->state_dir, g->id) < 0)
		goto fail;
	g->rec = json_pack(
		"{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:I, "
		"s:I, s:I, s:s, s:[]}",
		"id", g->id, "role", "source", "vm", vm->def.name, "uuid",
		vm->def.uuid, "source", m->cfg->host, "destination",
		g->opts.to, "requester", requester, "mode",
		mig_mode_name(g->opts.mode), "insecure", g->opts.insecure,
		"channels", (json_int_t)g->multifd, "max_downtime_ms",
		(json_int_t)g->opts.max_downtime_ms, "bandwidth_mibps",
		(json_int_t)g->opts.bandwidth_mibps, "max_time_s",
		(json_int_t)g->opts.max_time_s, "started_at",
		(json_int_t)wall_ms(), "outcome", "running", "escalation");
	g->done_ev = event_new(m->base, -1, 0, on_mig_done, g);
	if (!g->rec || !g->done_ev) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto fail;
	}
	if (pthread_create(&g->driver, NULL, mig_driver, g) != 0) {
		ferr_set(err, FERR_INTERNAL, "cannot start the migration");
		goto fail;
	}
	if (g->opts.insecure)
		log_warn("migration %s of vm %s: --insecure: guest memory "
			 "crosses the network in plaintext",
			 g->id, vm->def.name);
	log_info("migration %s: vm %s to %s (%s), requested by %s", g->id,
		 vm->def.name, g->opts.to, mig_mode_name(g->opts.mode),
		 requester);
	vm->mig_out = g;
	g->next = m->active;
	m->active = g;
	*reply = mig_snapshot(g);
	return 0;
fail:
	mig_free(g);
	return -1;
}

/* Active migration by id, or NULL. */
static struct mig *find_active(struct migrator *m, const char *id)
{
	for (struct mig *g = m->active; g; g = g->next)
		if (!strcmp(g->id, id))
			return g;
	return NULL;
}

int migrator_get(struct migrator *m, const char *id, json_t **reply,
		 struct ferr *err)
{
	struct mig *g = find_active(m, id);
	size_t i;
	json_t *rec;

	if (g) {
		*reply = mig_snapshot(g);
		return 0;
	}
	json_array_foreach(m->history, i, rec) {
		if (!strcmp(json_string_value(json_object_get(rec, "id")) ?: "",
			    id)) {
			*reply = json_deep_copy(rec);
			return 0;
		}
	}
	return ferr_set(err, FERR_NOT_FOUND, "no migration %s on this host",
			id);
}

json_t *migrator_list(struct migrator *m)
{
	json_t *arr = json_array();

	for (struct mig *g = m->active; g; g = g->next)
		json_array_append_new(arr, mig_snapshot(g));
	for (size_t i = json_array_size(m->history); i > 0; i--)
		json_array_append_new(arr,
				      json_deep_copy(json_array_get(m->history,
								    i - 1)));
	return json_pack("{s:o}", "migrations", arr);
}

int migrator_cancel(struct migrator *m, const char *id, json_t **reply,
		    struct ferr *err)
{
	struct mig *g = find_active(m, id);

	if (!g)
		return ferr_set(err, FERR_NOT_FOUND,
				"no active migration %s on this host", id);
	atomic_store(&g->cancel, true);
	log_info("migration %s: cancel requested", id);
	*reply = mig_snapshot(g);
	return 0;
}

void migrator_annotate_vm(const struct vm *vm, json_t *obj)
{
	if (vm->mig_out)
		json_object_set_new(obj, "active_migration",
				    json_string(vm->mig_out->id));
	else if (vm->incoming)
		json_object_set_new(obj, "active_migration",
				    json_string(vm->incoming_id));
}

/* ---- the migrator ---- */

/* At start-up no migration is in progress: remove the channel sockets
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
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	if (fmt_checked(m->history_path, sizeof(m->history_path), err, "path",
			"%s/migrations.jsonl", cfg->state_dir) < 0)
		goto fail;
	history_load(m);
	sweep_channel_sockets(cfg);
	m->client_ctx = tls_client_ctx_new(cfg->ca_file, cfg->cert_file,
					   cfg->key_file, err);
	if (!m->client_ctx)
		goto fail;
	m->server_ctx = tls_server_ctx_new(cfg->ca_file, cfg->cert_file,
					   cfg->key_file, err);
	if (!m->server_ctx)
		goto fail;
	if (incoming_listen(m, err) < 0)
		goto fail;
	vmm_set_exit_hook(vmm, on_vm_exit, m);
	*out = m;
	return 0;
fail:
	migrator_free(m);
	return -1;
}

void migrator_free(struct migrator *m)
{
	if (!m)
		return;
	/* cancel outgoing migrations and wait for their drivers */
	for (struct mig *g = m->active; g; g = g->next)
		atomic_store(&g->cancel, true);
	while (m->active)
		on_mig_done(-1, 0, m->active); /* joins the driver */
	incoming_abort_all(m);
	incoming_stop(m);
	if (m->vmm)
		vmm_set_exit_hook(m->vmm, NULL, NULL);
	SSL_CTX_free(m->client_ctx);
	SSL_CTX_free(m->server_ctx);
	json_decref(m->history);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m);
}
