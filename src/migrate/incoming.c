/* incoming.c - the destination side of a migration: prepare, finish and
 * abort of sessions (main thread), and the data-plane listener with one
 * thread per channel. */
#define _GNU_SOURCE
#include "migrate.h"
#include "audit.h"
#include "guard.h"
#include "netdev.h"
#include "policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define FINISH_POLL_US (10 * 1000)
#define STOP_WAIT_MS 5000

static const char *in_state_name(enum in_state s)
{
	switch (s) {
	case IN_PREPARED:
		return "prepared";
	case IN_COMMITTED:
		return "committed";
	case IN_ABORTED:
		return "aborted";
	default:
		return "failed";
	}
}

/* ---- the session table (m->lock held) ---- */

static struct in_session *find_locked(struct migrator *m,
				      const uint8_t sid[MIG_SESSION_ID_LEN])
{
	for (struct in_session *s = m->sessions; s; s = s->next)
		if (!memcmp(s->sid, sid, MIG_SESSION_ID_LEN))
			return s;
	return NULL;
}

/* Drop one reference; an ended session with only the table's reference
 * left is removed and freed. */
static void unref_locked(struct migrator *m, struct in_session *s)
{
	s->refs--;
	if (s->refs > 1 || (s->refs == 1 && s->state == IN_PREPARED))
		return;
	if (s->refs == 1) {
		/* ended, only the table holds it */
		for (struct in_session **pp = &m->sessions; *pp;
		     pp = &(*pp)->next) {
			if (*pp == s) {
				*pp = s->next;
				break;
			}
		}
		s->refs = 0;
	}
	if (s->refs == 0) {
		OPENSSL_cleanse(s->key, sizeof(s->key));
		free(s);
	}
}

struct in_session *incoming_find(struct migrator *m, const char *id)
{
	uint8_t sid[MIG_SESSION_ID_LEN];
	struct in_session *s;

	if (hex_decode(id, sid, sizeof(sid)) < 0)
		return NULL;
	pthread_mutex_lock(&m->lock);
	s = find_locked(m, sid);
	pthread_mutex_unlock(&m->lock);
	return s;
}

/* Shut the session's live sockets so its channel threads wake up. */
static void stop_channels_locked(struct in_session *s)
{
	atomic_store(&s->stop, true);
	for (unsigned i = 0; i < 2 * MIG_CHANNELS_MAX; i++)
		if (s->fds[i] >= 0)
			shutdown(s->fds[i], SHUT_RDWR);
}

/* Main thread: end a session in state st (IN_COMMITTED keeps its channels
 * running). Frees it when no channel holds it. */
static void session_end(struct migrator *m, struct in_session *s,
			enum in_state st)
{
	if (s->timer) {
		event_free(s->timer);
		s->timer = NULL;
	}
	/* QEMU removes its listening socket only when it closes it cleanly,
	 * not when it exits on a failed load or is killed */
	unlink(s->in_sock);
	pthread_mutex_lock(&m->lock);
	s->state = st;
	if (st != IN_COMMITTED)
		stop_channels_locked(s);
	pthread_cond_broadcast(&m->cond);
	s->refs++; /* so unref_locked can apply the rule */
	unref_locked(m, s);
	pthread_mutex_unlock(&m->lock);
}

/* The incoming VM of session s, or NULL. */
static struct vm *session_vm(struct migrator *m, const struct in_session *s)
{
	struct vm *vm = vmm_find(m->vmm, s->vm);

	if (vm && vm->incoming && !strcmp(vm->incoming_id, s->id))
		return vm;
	return NULL;
}

/* Record a destination-side history entry. */
static void history_in(struct migrator *m, const struct in_session *s,
		       const char *outcome, const char *error)
{
	json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, "
				"s:I}",
				"id", s->id, "role", "destination", "vm",
				s->vm, "uuid", s->uuid, "source", s->source,
				"outcome", outcome, "started_at",
				(json_int_t)s->created_wall_ms, "ended_at",
				(json_int_t)wall_ms(), "wire_bytes",
				(json_int_t)atomic_load(&s->ctr.wire));

	if (rec && error)
		json_object_set_new(rec, "error", json_string(error));
	if (rec)
		mig_history_add(m, rec);
	json_decref(rec);
	mig_audit(m, s->source, "migration.end", s->vm, outcome,
		  json_pack("{s:s, s:s, s:s, s:s*}", "id", s->id, "role",
			    "destination", "from", s->source, "error",
			    error));
}

/* Main thread: abort s, discard its VM, record it. */
static void session_abort(struct migrator *m, struct in_session *s,
			  const char *why)
{
	struct vm *vm = session_vm(m, s);

	log_info("incoming migration %s of vm %s: aborted: %s", s->id, s->vm,
		 why);
	history_in(m, s, "failed", why);
	session_end(m, s, IN_ABORTED);
	if (vm)
		vmm_incoming_discard(m->vmm, vm);
}

static void on_session_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct in_session *s = arg;

	(void)fd;
	(void)what;
	event_free(s->timer);
	s->timer = NULL;
	session_abort(s->m, s, "the source never finished the migration");
}

void incoming_vm_exited(struct migrator *m, struct vm *vm)
{
	struct in_session *s = incoming_find(m, vm->incoming_id);

	if (!s || s->state != IN_PREPARED)
		return;
	log_warn("incoming migration %s of vm %s: QEMU exited", s->id, s->vm);
	history_in(m, s, "failed", "the destination QEMU exited");
	session_end(m, s, IN_FAILED);
	/* vmm discards the VM itself */
}

void incoming_abort_all(struct migrator *m)
{
	for (;;) {
		struct in_session *s = NULL;

		pthread_mutex_lock(&m->lock);
		for (struct in_session *t = m->sessions; t; t = t->next) {
			stop_channels_locked(t);
			if (t->state == IN_PREPARED && !s)
				s = t;
		}
		pthread_mutex_unlock(&m->lock);
		if (!s)
			return;
		session_abort(m, s, "ferryd is shutting down");
	}
}

/* Sessions still receiving (prepared, not yet finished). */
static unsigned incoming_count(struct migrator *m)
{
	unsigned n = 0;

	pthread_mutex_lock(&m->lock);
	for (struct in_session *s = m->sessions; s; s = s->next)
		n += s->state == IN_PREPARED;
	pthread_mutex_unlock(&m->lock);
	return n;
}

/* ---- prepare, finish, abort (main thread, from the API) ---- */

/* Compare the source's file identities with ours. */
static int check_files(struct migrator *m, const struct vm_def *def,
		       const json_t *theirs, struct ferr *err)
{
	json_t *ours = mig_files_identity(m, def, err);
	const char *key;
	json_t *mine;
	int rc = 0;

	if (!ours)
		return -1;
	if (!json_is_object(theirs) ||
	    json_object_size(theirs) != json_object_size(ours)) {
		json_decref(ours);
		return ferr_set(err, FERR_INVALID,
				"the source's file list does not match the "
				"VM definition");
	}
	json_object_foreach(ours, key, mine) {
		json_t *t = json_object_get(theirs, key);

		if (!t || !json_equal(t, mine)) {
			rc = ferr_set(err, FERR_CONFLICT,
				      "%s %s differs between the hosts' shared "
				      "storage (size or content): it must be "
				      "the same image",
				      key,
				      json_string_value(
					      json_object_get(mine, "path")));
			break;
		}
	}
	json_decref(ours);
	return rc;
}

/* QMP set-up of the destination QEMU: capabilities, then listen. */
static int dest_setup(struct vm *vm, const struct in_session *s,
		      unsigned multifd, struct ferr *err)
{
	json_t *caps = json_pack(
		"{s:[{s:s,s:b},{s:s,s:b},{s:s,s:b},{s:s,s:b}]}", "capabilities",
		"capability", "events", "state", 1, "capability",
		"return-path", "state", 1, "capability", "multifd", "state",
		multifd > 0, "capability", "postcopy-ram", "state",
		s->postcopy);
	char uri[FERRY_SOCK_PATH_MAX + 8];

	if (vm_qmp(vm, "migrate-set-capabilities", caps, NULL, err) < 0)
		return -1;
	if (multifd &&
	    vm_qmp(vm, "migrate-set-parameters",
		   json_pack("{s:i}", "multifd-channels", (int)multifd), NULL,
		   err) < 0)
		return -1;
	snprintf(uri, sizeof(uri), "unix:%s", s->in_sock);
	return vm_qmp(vm, "migrate-incoming", json_pack("{s:s}", "uri", uri),
		      NULL, err);
}

int migrator_prepare(struct migrator *m, const json_t *body,
		     const char *peer, json_t **reply, struct ferr *err)
{
	static const char *const fields[] = { "id", "vm", "source",
					      "requester", "multifd",
					      "postcopy", "insecure", "files",
					      NULL };
	static const char *const extra[] = { "-incoming", "defer", "-S", NULL };
	const char *id = NULL, *source = NULL, *requester = NULL;
	uint64_t multifd = 0;
	bool postcopy = false, insecure = false;
	struct in_session *s = NULL;
	struct vm_def def;
	struct vm *vm = NULL;
	char keyhex[2 * MIG_KEY_LEN + 1];
	struct timeval tv = { 0 };

	if (!body || json_check_fields(body, fields, "prepare", err) < 0 ||
	    json_get_string(body, "id", "prepare", MIG_ID_HEX_LEN, &id, err) <
		    0 ||
	    json_get_string(body, "source", "prepare", FERRY_NAME_MAX, &source,
			    err) < 0 ||
	    json_get_string(body, "requester", "prepare", FERRY_NAME_MAX,
			    &requester, err) < 0 ||
	    json_get_u64(body, "multifd", "prepare", 0, MIG_MULTIFD_MAX,
			 &multifd, err) < 0 ||
	    json_get_bool(body, "postcopy", "prepare", &postcopy, err) < 0 ||
	    json_get_bool(body, "insecure", "prepare", &insecure, err) < 0)
		return -1;
	if (!id || !source || !json_object_get(body, "vm"))
		return ferr_set(err, FERR_INVALID,
				"prepare needs id, source and vm");
	s = calloc(1, sizeof(*s));
	if (!s)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (hex_decode(id, s->sid, sizeof(s->sid)) < 0) {
		ferr_set(err, FERR_INVALID, "prepare.id must be %d hex digits",
			 MIG_ID_HEX_LEN);
		goto fail;
	}
	if (strcmp(source, peer) != 0) {
		ferr_set(err, FERR_FORBIDDEN,
			 "%s may not prepare a migration on behalf of %s",
			 peer, source);
		goto fail;
	}
	if (incoming_find(m, id)) {
		ferr_set(err, FERR_CONFLICT, "migration %s already exists", id);
		goto fail;
	}
	if (vmdef_from_json(json_object_get(body, "vm"), &def, err) < 0 ||
	    (postcopy && multifd)) {
		if (postcopy && multifd)
			ferr_set(err, FERR_INVALID,
				 "post-copy runs without multifd");
		goto fail;
	}
	{
		struct policy_vm pvm = { def.name, def.labels, def.nlabels };
		struct policy_decision d;

		policy_check_in(*m->deps.policy, requester ? requester : "-",
				&pvm, source, &d);
		mig_audit(m, peer, "policy.decision", def.name,
			  d.allow ? "allow" : "deny",
			  json_pack("{s:s, s:s, s:s, s:s, s:s}", "check",
				    "migrate_in", "from", source, "requester",
				    requester ? requester : "-", "rule", d.rule,
				    "reason", d.reason));
		if (!d.allow) {
			ferr_set(err, FERR_FORBIDDEN, "host %s refuses: %s",
				 m->cfg->host, d.reason);
			goto fail;
		}
	}
	if (incoming_count(m) >= m->cfg->max_incoming) {
		ferr_set(err, FERR_RATE,
			 "host %s already receives %u migration(s) "
			 "(migration.max_incoming); try again when one ends",
			 m->cfg->host, m->cfg->max_incoming);
		mig_audit(m, peer, "migration.refused", def.name, "limit",
			  json_pack("{s:s}", "reason", err->msg));
		goto fail;
	}
	if (vmm_check_unique(m->vmm, &def, err) < 0 ||
	    vmm_check_files(m->vmm, &def, err) < 0 ||
	    check_files(m, &def, json_object_get(body, "files"), err) < 0)
		goto fail;
	snprintf(s->id, sizeof(s->id), "%s", id);
	snprintf(s->source, sizeof(s->source), "%s", source);
	snprintf(s->vm, sizeof(s->vm), "%s", def.name);
	snprintf(s->uuid, sizeof(s->uuid), "%s", def.uuid);
	if (fmt_checked(s->in_sock, sizeof(s->in_sock), err, "socket path",
			"%s/run/%.16s.in", m->cfg->state_dir, id) < 0)
		goto fail;
	s->nchan = (uint16_t)(1 + multifd);
	s->insecure = insecure;
	s->postcopy = postcopy;
	s->state = IN_PREPARED;
	s->refs = 1;
	s->m = m;
	s->created_wall_ms = wall_ms();
	for (unsigned i = 0; i < 2 * MIG_CHANNELS_MAX; i++)
		s->fds[i] = -1;
	if (RAND_bytes(s->key, sizeof(s->key)) != 1) {
		ferr_set(err, FERR_INTERNAL, "no randomness");
		goto fail;
	}
	if (vmm_start_incoming(m->vmm, &def, id, extra, &vm, err) < 0)
		goto fail;
	if (dest_setup(vm, s, (unsigned)multifd, err) < 0) {
		vmm_incoming_discard(m->vmm, vm);
		goto fail;
	}
	s->timer = evtimer_new(m->base, on_session_timeout, s);
	tv.tv_sec = (time_t)(def.max_time_s + MIG_SESSION_GRACE_S);
	if (!s->timer || evtimer_add(s->timer, &tv) < 0) {
		vmm_incoming_discard(m->vmm, vm);
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto fail;
	}
	pthread_mutex_lock(&m->lock);
	s->next = m->sessions;
	m->sessions = s;
	pthread_mutex_unlock(&m->lock);
	hex_encode(s->key, sizeof(s->key), keyhex);
	*reply = json_pack("{s:s, s:s, s:s, s:i}", "id", s->id, "key", keyhex,
			   "data_address", m->cfg->advertise_addr, "data_port",
			   (int)m->cfg->advertise_port);
	OPENSSL_cleanse(keyhex, sizeof(keyhex));
	log_info("incoming migration %s: vm %s from %s (requested by %s), %u "
		 "channel(s)%s",
		 s->id, def.name, source, requester ? requester : "?",
		 (unsigned)s->nchan, insecure ? ", PLAINTEXT" : "");
	return 0;
fail:
	if (s) {
		if (s->in_sock[0])
			unlink(s->in_sock);
		if (s->timer)
			event_free(s->timer);
		OPENSSL_cleanse(s->key, sizeof(s->key));
		free(s);
	}
	return -1;
}

/* Look up a session for the peer that prepared it. */
static struct in_session *session_for(struct migrator *m, const char *id,
				      const char *peer, struct ferr *err)
{
	struct in_session *s = incoming_find(m, id);

	if (!s) {
		ferr_set(err, FERR_NOT_FOUND,
			 "no incoming migration %s on this host", id);
		return NULL;
	}
	if (strcmp(s->source, peer) != 0) {
		ferr_set(err, FERR_FORBIDDEN,
			 "migration %s belongs to %s, not %s", id, s->source,
			 peer);
		return NULL;
	}
	return s;
}

/* Wait until the destination QEMU has loaded the migration (or, in
 * post-copy, switched over). */
static int wait_loaded(struct vm *vm, bool postcopy, struct ferr *err)
{
	uint64_t deadline = now_ms() + MIG_FINISH_WAIT_MS;

	for (;;) {
		json_t *ret = NULL;
		const char *st;

		if (vm_qmp(vm, "query-migrate", NULL, &ret, err) < 0)
			return -1;
		st = json_string_value(json_object_get(ret, "status")) ?: "";
		if (!strcmp(st, "completed") ||
		    (postcopy && !strcmp(st, "postcopy-active"))) {
			json_decref(ret);
			return 0;
		}
		if (!strcmp(st, "failed") || !strcmp(st, "cancelled")) {
			ferr_set(err, FERR_UNAVAILABLE,
				 "the destination QEMU's migration %s", st);
			json_decref(ret);
			return -1;
		}
		json_decref(ret);
		if (vm->state == VM_SHUTOFF)
			return ferr_set(err, FERR_UNAVAILABLE,
					"the destination QEMU exited");
		if (now_ms() >= deadline)
			return ferr_set(err, FERR_TIMEOUT,
					"the destination QEMU has not loaded "
					"the VM after %d ms",
					MIG_FINISH_WAIT_MS);
		usleep(FINISH_POLL_US);
	}
}

int migrator_finish(struct migrator *m, const char *id, const json_t *body,
		    const char *peer, json_t **reply, struct ferr *err)
{
	static const char *const fields[] = { "resume", NULL };
	struct in_session *s = session_for(m, id, peer, err);
	struct vm *vm;
	bool resume = true;

	if (!s)
		return -1;
	if (body && (json_check_fields(body, fields, "finish", err) < 0 ||
		     json_get_bool(body, "resume", "finish", &resume, err) < 0))
		return -1;
	if (s->state == IN_COMMITTED) {
		vm = vmm_find(m->vmm, s->vm);
		*reply = vm ? vm_to_json(vm) : json_object();
		return 0;
	}
	if (s->state != IN_PREPARED)
		return ferr_set(err, FERR_CONFLICT, "migration %s is %s", id,
				in_state_name(s->state));
	vm = session_vm(m, s);
	if (!vm) {
		session_abort(m, s, "its VM is gone");
		return ferr_set(err, FERR_UNAVAILABLE,
				"the incoming VM of migration %s is gone", id);
	}
	if (wait_loaded(vm, s->postcopy, err) < 0 ||
	    vmm_incoming_commit(m->vmm, vm, resume, err) < 0) {
		struct ferr cp = *err;

		vm = session_vm(m, s);
		if (vm && vm->incoming)
			session_abort(m, s, cp.msg);
		*err = cp;
		return -1;
	}
	history_in(m, s, "completed", NULL);
	session_end(m, s, IN_COMMITTED);
	*reply = vm_to_json(vm);
	return 0;
}

int migrator_abort(struct migrator *m, const char *id, const char *peer,
		   json_t **reply, struct ferr *err)
{
	struct in_session *s = session_for(m, id, peer, err);

	if (!s)
		return -1;
	if (s->state == IN_COMMITTED)
		return ferr_set(err, FERR_CONFLICT,
				"migration %s is finished: the VM runs here",
				id);
	if (s->state == IN_PREPARED)
		session_abort(m, s, "aborted by the source");
	*reply = json_pack("{s:s, s:s}", "id", id, "state", "aborted");
	return 0;
}

int migrator_incoming_get(struct migrator *m, const char *id,
			  const char *peer, json_t **reply, struct ferr *err)
{
	struct in_session *s = session_for(m, id, peer, err);

	if (!s)
		return -1;
	*reply = json_pack("{s:s, s:s, s:s, s:s}", "id", s->id, "vm", s->vm,
			   "source", s->source, "state",
			   in_state_name(s->state));
	return 0;
}

/* ---- the data plane (listener and channel threads) ---- */

struct chan_in {
	struct migrator *m;
	int fd;
	char from[64];
	bool counted; /* an unauthenticated connection in the guard */
};

/* Add (fd >= 0) or remove a channel thread's socket in m->chan_fds. A
 * remove must come before the socket is closed. */
static void chan_fd_track(struct migrator *m, int fd, bool add)
{
	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < MIG_DATA_CONNS_MAX; i++) {
		if (add ? m->chan_fds[i] == 0 : m->chan_fds[i] == fd + 1) {
			m->chan_fds[i] = add ? fd + 1 : 0;
			break;
		}
	}
	pthread_mutex_unlock(&m->lock);
}

/* The channel authenticated (or ended): stop counting it as pending. */
static void chan_authenticated(struct chan_in *a)
{
	if (a->counted) {
		guard_conn_done(a->m->deps.guard, a->from);
		a->counted = false;
	}
}

/* Register / unregister a socket of s for abort (m->lock held). */
static void fd_track_locked(struct in_session *s, int fd, bool add)
{
	for (unsigned i = 0; i < 2 * MIG_CHANNELS_MAX; i++) {
		if (add ? s->fds[i] < 0 : s->fds[i] == fd) {
			s->fds[i] = add ? fd : -1;
			return;
		}
	}
}

/* Wait for the lower channels, then connect this one to QEMU, so QEMU sees
 * its connections in the source's order (main channel first). m->lock
 * held. Returns the QEMU socket or -1. */
static int connect_in_order_locked(struct migrator *m, struct in_session *s,
				   unsigned channel, struct ferr *err)
{
	struct timespec ts;
	int qfd;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += MIG_ORDER_TIMEOUT_MS / 1000;
	while (s->next_index != channel && s->state == IN_PREPARED &&
	       !atomic_load(&s->stop)) {
		if (pthread_cond_timedwait(&m->cond, &m->lock, &ts) ==
		    ETIMEDOUT)
			break;
	}
	if (s->next_index != channel || s->state != IN_PREPARED)
		return ferr_set(err, FERR_UNAVAILABLE,
				"channel %u: the channels before it never "
				"came",
				channel);
	qfd = unix_connect(s->in_sock, err);
	if (qfd < 0)
		return -1;
	s->next_index++;
	pthread_cond_broadcast(&m->cond);
	return qfd;
}

/* Validate a HELLO against its session and claim the channel. Takes a
 * reference on success. */
static struct in_session *claim(struct migrator *m, const uint8_t *hello,
				const struct mig_hello *h, SSL *ssl,
				const char *peer, uint8_t exporter[],
				struct ferr *err)
{
	struct in_session *s;

	pthread_mutex_lock(&m->lock);
	s = find_locked(m, h->session);
	if (!s || s->state != IN_PREPARED) {
		pthread_mutex_unlock(&m->lock);
		ferr_set(err, FERR_FORBIDDEN, "unknown or finished session");
		return NULL;
	}
	s->refs++;
	pthread_mutex_unlock(&m->lock);
	if (!!(h->flags & MIG_FLAG_PLAINTEXT) != s->insecure) {
		ferr_set(err, FERR_FORBIDDEN,
			 s->insecure ? "a TLS channel for a plaintext session"
				     : "a plaintext channel for a TLS session");
		goto fail;
	}
	if (!s->insecure && strcmp(peer, s->source) != 0) {
		ferr_set(err, FERR_FORBIDDEN,
			 "a channel from %s for a session of %s", peer,
			 s->source);
		goto fail;
	}
	if (mig_exporter(ssl, h->session, h->channel, exporter, err) < 0)
		goto fail;
	if (!mig_hello_mac_ok(hello, s->key, exporter)) {
		ferr_set(err, FERR_FORBIDDEN,
			 "the HELLO's MAC is wrong (no session key, or a "
			 "replay on another connection)");
		goto fail;
	}
	pthread_mutex_lock(&m->lock);
	if (h->nchan != s->nchan || (s->seen & (1u << h->channel))) {
		pthread_mutex_unlock(&m->lock);
		ferr_set(err, FERR_FORBIDDEN,
			 "channel %u of %u is unexpected or a duplicate",
			 (unsigned)h->channel, (unsigned)h->nchan);
		goto fail;
	}
	s->seen |= 1u << h->channel;
	pthread_mutex_unlock(&m->lock);
	return s;
fail:
	pthread_mutex_lock(&m->lock);
	unref_locked(m, s);
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

static void *chan_in_main(void *arg)
{
	struct chan_in *a = arg;
	struct migrator *m = a->m;
	struct mig_conn c = { .fd = -1 };
	struct in_session *s = NULL;
	struct mig_hello h;
	struct ferr err = { 0 };
	uint8_t hello[MIG_HELLO_LEN], ack[MIG_ACK_LEN];
	uint8_t exporter[MIG_EXPORTER_LEN] = { 0 };
	char peer[FERRY_NAME_MAX + 1] = "";
	bool ok = false;
	int qfd = -1;

	if (dataplane_accept(m->server_ctx, a->fd, &c, hello, peer,
			     sizeof(peer), &err) < 0) {
		chan_fd_track(m, a->fd, false);
		close(a->fd);
		log_warn("migration channel from %s refused: %s", a->from,
			 err.msg);
		audit_refused(m->deps.refusals, "migration.channel_refused",
			      a->from, err.msg);
		goto out;
	}
	if (mig_hello_parse(hello, &h, &err) < 0)
		goto refuse;
	s = claim(m, hello, &h, c.ssl, peer, exporter, &err);
	if (!s)
		goto refuse;
	chan_authenticated(a);
	pthread_mutex_lock(&m->lock);
	qfd = connect_in_order_locked(m, s, h.channel, &err);
	if (qfd >= 0) {
		fd_track_locked(s, qfd, true);
		fd_track_locked(s, c.fd, true);
	}
	pthread_mutex_unlock(&m->lock);
	if (qfd < 0)
		goto refuse;
	mig_ack_build(ack, MIG_ACK_OK, h.channel, s->key, exporter);
	socket_set_timeouts(c.fd, 0);
	if (conn_write_full(&c, ack, sizeof(ack), &err) == 0 &&
	    relay_run(qfd, &c, &s->stop, &s->ctr, &err) == 0)
		ok = true;
	else if (!atomic_load(&s->stop))
		log_warn("incoming migration %s: channel %u: %s", s->id,
			 (unsigned)h.channel, err.msg);
	pthread_mutex_lock(&m->lock);
	fd_track_locked(s, qfd, false);
	fd_track_locked(s, c.fd, false);
	pthread_mutex_unlock(&m->lock);
	goto out;
refuse:
	log_warn("migration channel from %s (%s) refused: %s", a->from,
		 peer[0] ? peer : "no identity", err.msg);
	audit_refused(m->deps.refusals, "migration.channel_refused",
		      peer[0] ? peer : a->from, err.msg);
	mig_ack_build(ack, MIG_ACK_REFUSED, 0, NULL, NULL);
	conn_write_full(&c, ack, sizeof(ack), &err);
out:
	if (qfd >= 0)
		close(qfd);
	if (c.fd >= 0)
		chan_fd_track(m, c.fd, false);
	conn_close(&c, ok, s ? &s->ctr : NULL);
	if (s) {
		pthread_mutex_lock(&m->lock);
		unref_locked(m, s);
		pthread_mutex_unlock(&m->lock);
	}
	OPENSSL_cleanse(exporter, sizeof(exporter));
	chan_authenticated(a);
	free(a);
	atomic_fetch_sub(&m->chan_threads, 1);
	return NULL;
}

/* Accept data-plane connections, one detached thread each. */
static void *listener_main(void *arg)
{
	struct migrator *m = arg;

	while (!atomic_load(&m->stop)) {
		struct pollfd pfd = { .fd = m->listen_fd, .events = POLLIN };
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char why[FERRY_ERR_MSG_MAX];
		struct chan_in *a;
		pthread_attr_t attr;
		pthread_t t;
		int fd;

		if (poll(&pfd, 1, MIG_POLL_MS) <= 0)
			continue;
		fd = accept4(m->listen_fd, (struct sockaddr *)&ss, &sl,
			     SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		a = calloc(1, sizeof(*a));
		if (!a) {
			close(fd);
			continue;
		}
		a->m = m;
		a->fd = fd;
		if (ss.ss_family == AF_INET)
			inet_ntop(AF_INET,
				  &((struct sockaddr_in *)&ss)->sin_addr,
				  a->from, sizeof(a->from));
		else
			inet_ntop(AF_INET6,
				  &((struct sockaddr_in6 *)&ss)->sin6_addr,
				  a->from, sizeof(a->from));
		if (atomic_load(&m->chan_threads) >= MIG_DATA_CONNS_MAX) {
			snprintf(why, sizeof(why),
				 "%d data-plane connections already",
				 MIG_DATA_CONNS_MAX);
		} else if (guard_conn_open(m->deps.guard, a->from, why,
					   sizeof(why))) {
			a->counted = true;
		}
		if (!a->counted) {
			audit_refused(m->deps.refusals, "conn.limited",
				      a->from, why);
			close(fd);
			free(a);
			continue;
		}
		atomic_fetch_add(&m->chan_threads, 1);
		chan_fd_track(m, fd, true);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, chan_in_main, a) != 0) {
			atomic_fetch_sub(&m->chan_threads, 1);
			chan_authenticated(a);
			chan_fd_track(m, fd, false);
			close(fd);
			free(a);
		}
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

int incoming_listen(struct migrator *m, struct ferr *err)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int one = 1;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, config_dataplane_addr(m->cfg),
		      &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port =
			htons(m->cfg->migration_port);
		sl = sizeof(struct sockaddr_in);
	} else {
		inet_pton(AF_INET6, config_dataplane_addr(m->cfg),
			  &((struct sockaddr_in6 *)&ss)->sin6_addr);
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port =
			htons(m->cfg->migration_port);
		sl = sizeof(struct sockaddr_in6);
	}
	m->listen_fd = netns_socket(m->cfg->migration_netns, ss.ss_family,
				    SOCK_STREAM | SOCK_CLOEXEC, 0, err);
	if (m->listen_fd < 0)
		return -1;
	setsockopt(m->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(m->listen_fd, (struct sockaddr *)&ss, sl) < 0 ||
	    listen(m->listen_fd, 64) < 0)
		return ferr_set(err, FERR_IO,
				"cannot listen on migration port %s:%u: %s",
				config_dataplane_addr(m->cfg),
				(unsigned)m->cfg->migration_port,
				strerror(errno));
	if (pthread_create(&m->listener, NULL, listener_main, m) != 0)
		return ferr_set(err, FERR_INTERNAL,
				"cannot start the migration listener");
	m->listener_started = true;
	log_info("migration: data plane on %s:%u (advertised as %s:%u)",
		 config_dataplane_addr(m->cfg), (unsigned)m->cfg->migration_port,
		 m->cfg->advertise_addr, (unsigned)m->cfg->advertise_port);
	return 0;
}

void incoming_stop(struct migrator *m)
{
	uint64_t deadline = now_ms() + STOP_WAIT_MS;

	atomic_store(&m->stop, true);
	if (m->listener_started) {
		pthread_join(m->listener, NULL);
		m->listener_started = false;
	}
	if (m->listen_fd >= 0) {
		close(m->listen_fd);
		m->listen_fd = -1;
	}
	/* channel threads hold pointers to m: wake those still in their
	 * handshake or relay (shut their sockets) and let them finish */
	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < MIG_DATA_CONNS_MAX; i++)
		if (m->chan_fds[i])
			shutdown(m->chan_fds[i] - 1, SHUT_RDWR);
	pthread_mutex_unlock(&m->lock);
	while (atomic_load(&m->chan_threads) > 0 && now_ms() < deadline)
		usleep(10 * 1000);
	if (atomic_load(&m->chan_threads) > 0)
		log_error("migration: %d channel threads did not end",
			  atomic_load(&m->chan_threads));
}
