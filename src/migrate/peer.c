/* peer.c - the source's calls to the destination's API: prepare, finish,
 * abort and the query of a session's outcome (the confirm protocol,
 * docs/migration-protocol.md). Blocking with deadlines: threads only. */
#define _GNU_SOURCE
#include "migrate_int.h"
#include "httpc.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define SETTLE_RETRY_MS 1000

const char *peer_outcome_name(enum peer_outcome o)
{
	switch (o) {
	case PEER_COMMITTED:
		return "committed";
	case PEER_NOT_COMMITTED:
		return "not_committed";
	case PEER_PENDING:
		return "pending";
	default:
		return "unknown";
	}
}

static void httpc_of(const struct migrator *m, const struct peer_target *t,
		     struct httpc_peer *p)
{
	p->name = t->name;
	p->address = t->address;
	p->port = t->port;
	p->check_name = true;
	p->local = m->cfg->listen_addr;
}

/* Wipe a hex key in a reply before it is freed. */
static void wipe_key(json_t *reply)
{
	const char *s = json_string_value(json_object_get(reply, "key"));

	if (s)
		OPENSSL_cleanse((char *)s, strlen(s));
}

/* The session in a prepare or recover reply (what) from peer into out:
 * its id, key and data-plane address. FERR_UNAVAILABLE if malformed. */
static int session_reply(const json_t *reply, const char *peer,
			 const char *what, struct peer_session *out,
			 struct ferr *err)
{
	const char *id = json_string_value(json_object_get(reply, "id"));
	const char *key = json_string_value(json_object_get(reply, "key"));
	const char *addr =
		json_string_value(json_object_get(reply, "data_address"));
	json_int_t port = json_integer_value(json_object_get(reply,
							      "data_port"));

	if (!id || strlen(id) != MIG_ID_HEX_LEN ||
	    hex_decode(id, (uint8_t[MIG_SESSION_ID_LEN]){ 0 },
		       MIG_SESSION_ID_LEN) < 0 ||
	    !key || strlen(key) != 2 * MIG_KEY_LEN ||
	    hex_decode(key, out->key, MIG_KEY_LEN) < 0 || !addr ||
	    strlen(addr) >= sizeof(out->data_addr) || port < 1 ||
	    port > 65535)
		return ferr_set(err, FERR_UNAVAILABLE,
				"%s's %s reply is malformed", peer, what);
	snprintf(out->id, sizeof(out->id), "%s", id);
	snprintf(out->data_addr, sizeof(out->data_addr), "%s", addr);
	out->data_port = (uint16_t)port;
	return 0;
}

int peer_prepare(struct migrator *m, const struct peer_target *t,
		 const json_t *body, struct peer_session *out,
		 struct ferr *err)
{
	struct httpc_peer p;
	json_t *reply = NULL;
	int status = 0, rc = -1;

	httpc_of(m, t, &p);
	out->attestation = NULL;
	if (httpc_request_x(m->client_ctx, &p, m->cfg->peer_timeout_s, "POST",
			    "/v1/incoming", body, &status, &reply,
			    out->exporter, err) < 0)
		return -1;
	if (status < 200 || status >= 300) {
		const char *msg = json_string_value(json_object_get(
			json_object_get(reply, "error"), "message"));

		ferr_set(err, status == 429 ? FERR_RATE : FERR_UNAVAILABLE,
			 "%s refused to prepare (%d): %s", t->name, status,
			 msg ? msg : "no reason given");
		goto out;
	}
	if (session_reply(reply, t->name, "prepare", out, err) < 0)
		goto out;
	out->attestation = json_incref(json_object_get(reply, "attestation"));
	rc = 0;
out:
	wipe_key(reply);
	json_decref(reply);
	return rc;
}

enum peer_outcome peer_finish(struct migrator *m, const struct peer_target *t,
			      const char *session, bool resume,
			      struct ferr *err)
{
	struct httpc_peer p;
	char path[128];
	json_t *body = json_pack("{s:b}", "resume", resume), *reply = NULL;
	int status = 0, rc;

	httpc_of(m, t, &p);
	snprintf(path, sizeof(path), "/v1/incoming/%s/finish", session);
	rc = httpc_request(m->client_ctx, &p, m->cfg->peer_timeout_s, "POST", path,
			   body, &status, &reply, err);
	json_decref(body);
	if (rc < 0)
		return PEER_UNKNOWN;
	if (status >= 200 && status < 300 &&
	    json_is_true(json_object_get(reply, "committed"))) {
		json_decref(reply);
		return PEER_COMMITTED;
	}
	ferr_set(err, FERR_UNAVAILABLE, "%s did not finish (%d): %s", t->name,
		 status,
		 json_string_value(json_object_get(
			 json_object_get(reply, "error"), "message")) ?: "?");
	json_decref(reply);
	return PEER_UNKNOWN;
}

enum peer_outcome peer_query(struct migrator *m, const struct peer_target *t,
			     const char *session, struct ferr *err)
{
	struct httpc_peer p;
	char path[128];
	json_t *reply = NULL;
	const char *o;
	enum peer_outcome out = PEER_UNKNOWN;
	int status = 0;

	httpc_of(m, t, &p);
	snprintf(path, sizeof(path), "/v1/incoming/%s", session);
	if (httpc_request(m->client_ctx, &p, m->cfg->peer_timeout_s, "GET", path,
			  NULL, &status, &reply, err) < 0)
		return PEER_UNKNOWN;
	o = json_string_value(json_object_get(reply, "outcome"));
	/* only a 200 with an outcome is an answer; anything else (401, 403,
	 * 429, 5xx, a malformed body) says nothing about the session */
	if (status == 200 && o) {
		if (!strcmp(o, "committed"))
			out = PEER_COMMITTED;
		else if (!strcmp(o, "not_committed"))
			out = PEER_NOT_COMMITTED;
		else if (!strcmp(o, "pending"))
			out = PEER_PENDING;
	}
	if (out == PEER_UNKNOWN)
		ferr_set(err, FERR_UNAVAILABLE,
			 "%s gave no usable answer about migration %s (%d%s%s)",
			 t->name, session, status,
			 json_object_get(reply, "error") ? ": " : "",
			 json_string_value(json_object_get(
				 json_object_get(reply, "error"), "message"))
				 ?: "");
	json_decref(reply);
	return out;
}

int peer_recover(struct migrator *m, const struct peer_target *t,
		 const char *session, struct peer_session *out,
		 struct ferr *err)
{
	struct httpc_peer p;
	char path[128];
	json_t *reply = NULL;
	int rc = -1;

	httpc_of(m, t, &p);
	snprintf(path, sizeof(path), "/v1/incoming/%s/recover", session);
	if (httpc_call(m->client_ctx, &p, m->cfg->peer_timeout_s, "POST",
		       path, NULL, &reply, err) < 0)
		return -1;
	if (session_reply(reply, t->name, "recover", out, err) < 0)
		goto out;
	rc = 0;
out:
	wipe_key(reply);
	json_decref(reply);
	return rc;
}

int peer_abort(struct migrator *m, const struct peer_target *t,
	       const char *session, const char *reason, struct ferr *err)
{
	struct httpc_peer p;
	char path[128];
	json_t *reply = NULL;
	json_t *body = reason ? json_pack("{s:s}", "reason", reason) : NULL;
	int rc;

	httpc_of(m, t, &p);
	snprintf(path, sizeof(path), "/v1/incoming/%s/abort", session);
	rc = httpc_call(m->client_ctx, &p, m->cfg->peer_timeout_s, "POST", path,
			body, &reply, err);
	if (rc < 0 && body && err->code == FERR_INVALID) {
		/* a host before prepare 1.1 takes no reason */
		json_decref(reply);
		reply = NULL;
		rc = httpc_call(m->client_ctx, &p, m->cfg->peer_timeout_s,
				"POST", path, NULL, &reply, err);
	}
	json_decref(body);
	json_decref(reply);
	return rc;
}

int peer_lost(struct migrator *m, const struct peer_target *t,
	      const char *session, struct ferr *err)
{
	struct httpc_peer p;
	char path[128];
	json_t *reply = NULL;
	int rc;

	httpc_of(m, t, &p);
	snprintf(path, sizeof(path), "/v1/incoming/%s/lost", session);
	rc = httpc_call(m->client_ctx, &p, m->cfg->peer_timeout_s, "POST", path,
			NULL, &reply, err);
	json_decref(reply);
	if (rc < 0 && err->code == FERR_NOT_FOUND)
		rc = 0; /* nothing of it left there */
	return rc;
}

enum peer_outcome peer_settle(struct migrator *m, const struct peer_target *t,
			      const char *session, bool resume,
			      uint64_t deadline_ms, const atomic_bool *stop,
			      struct ferr *err)
{
	enum peer_outcome o = peer_finish(m, t, session, resume, err);

	while (o != PEER_COMMITTED && o != PEER_NOT_COMMITTED) {
		if (now_ms() >= deadline_ms || (stop && atomic_load(stop)))
			return PEER_UNKNOWN;
		if (o == PEER_UNKNOWN)
			usleep(SETTLE_RETRY_MS * 1000);
		o = peer_query(m, t, session, err);
		if (o == PEER_PENDING)
			o = peer_finish(m, t, session, resume, err);
	}
	return o;
}
