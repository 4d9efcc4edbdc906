/* peer.c - the primary's calls to the backup's API (blocking, with
 * deadlines: HA threads and worker jobs only). */
#define _GNU_SOURCE
#include "ha_int.h"
#include "httpc.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

static void peer_of(const struct ha_pv *pv, struct httpc_peer *p)
{
	p->name = pv->peer;
	p->address = pv->peer_addr;
	p->port = pv->peer_port;
	p->check_name = true;
	p->local = pv->h->cfg->listen_addr;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The backup's quote, bound to the challenge sent, its standby session id
 * and this TLS connection, checked as a migration's destination's is
 * (migrator_attest_verify) and audited; refused, the standby is
 * discarded. */
static int attest_backup(struct ha_pv *pv, const char *id,
			 json_t *attestation, struct ferr *err)
{
	json_t *report;
	int rc;

	json_decref(pv->att.answer);
	pv->att.answer = json_incref(attestation);
	rc = migrator_attest_verify(pv->h->deps.mig, &pv->att, pv->peer, id,
				    &report, err);
	ha_audit(pv->h, pv->requester, "ha.attest", pv->name,
		 rc < 0 ? "refused" : "verified",
		 json_pack("{s:s, s:s, s:s, s:s*}", "uuid", pv->uuid, "host",
			   pv->peer, "scope", pv->att.scope, "reason",
			   json_string_value(
				   json_object_get(report, "reason"))));
	json_decref(report);
	json_decref(pv->att.answer);
	pv->att.answer = NULL;
	OPENSSL_cleanse(pv->att.exporter, sizeof(pv->att.exporter));
	if (rc < 0) {
		log_warn("ha: vm %s: %s", pv->name, err->msg);
		ha_peer_discard(pv);
		return -1;
	}
	log_info("ha: vm %s: backup %s attested (%s)", pv->name, pv->peer,
		 pv->att.scope);
	return 0;
}

int ha_peer_prepare(struct ha_pv *pv, struct ferr *err)
{
	struct ha *h = pv->h;
	struct httpc_peer p;
	json_t *def, *body, *reply = NULL;
	const char *id, *key, *addr;
	json_int_t port;
	int rc = -1;

	def = pv->def_json ? json_incref(pv->def_json) : NULL;
	if (!def)
		return ferr_set(err, FERR_INTERNAL, "no VM definition");
	body = json_pack("{s:o, s:s, s:I, s:I}", "vm", def, "requester",
			 pv->requester, "ram_bytes", (json_int_t)pv->ram_size,
			 "interval_s", (json_int_t)(pv->interval_ms / 1000));
	if (body && pv->disk_size)
		json_object_set_new(body, "disk_bytes",
				    json_integer((json_int_t)pv->disk_size));
	if (migrator_attest_body(&pv->att, body, err) < 0) {
		json_decref(body);
		return -1;
	}
	peer_of(pv, &p);
	if (httpc_call_x(h->client_ctx, &p, HA_PEER_TIMEOUT_S, "POST",
			 "/v1/standby", body, &reply, pv->att.exporter,
			 err) < 0) {
		json_decref(body);
		return ferr_wrap(err, "backup %s", pv->peer);
	}
	json_decref(body);
	id = json_string_value(json_object_get(reply, "id"));
	key = json_string_value(json_object_get(reply, "key"));
	addr = json_string_value(json_object_get(reply, "data_address"));
	port = json_integer_value(json_object_get(reply, "data_port"));
	if (!id || strlen(id) != MIG_STREAM_ID_HEX_LEN || !key ||
	    strlen(key) != 2 * MIG_STREAM_KEY_LEN || !addr ||
	    strlen(addr) >= sizeof(pv->data_addr) || port < 1 ||
	    port > 65535) {
		ferr_set(err, FERR_UNAVAILABLE,
			 "backup %s: malformed standby reply", pv->peer);
		goto out;
	}
	for (size_t i = 0; i < MIG_STREAM_KEY_LEN; i++) {
		int hi = hexval(key[2 * i]), lo = hexval(key[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			ferr_set(err, FERR_UNAVAILABLE,
				 "backup %s: malformed key", pv->peer);
			goto out;
		}
		pv->key[i] = (uint8_t)(hi << 4 | lo);
	}
	if (pv->att.on && attest_backup(pv, id, json_object_get(reply,
								  "attestation"),
					err) < 0)
		goto out;
	snprintf(pv->sess, sizeof(pv->sess), "%s", id);
	snprintf(pv->data_addr, sizeof(pv->data_addr), "%s", addr);
	pv->data_port = (uint16_t)port;
	rc = 0;
out:
	if (key)
		OPENSSL_cleanse((char *)key, strlen(key));
	json_decref(reply);
	return rc;
}

int ha_peer_discard(struct ha_pv *pv)
{
	struct httpc_peer p;
	json_t *reply = NULL;
	char path[96];
	struct ferr err;

	peer_of(pv, &p);
	snprintf(path, sizeof(path), "/v1/standby/%s", pv->uuid);
	if (httpc_call(pv->h->client_ctx, &p, HA_PEER_TIMEOUT_S, "DELETE",
		       path, NULL, &reply, &err) < 0 &&
	    err.code != FERR_NOT_FOUND) {
		log_warn("ha: vm %s: discarding the standby on %s: %s",
			 pv->name, pv->peer, err.msg);
		json_decref(reply);
		return -1;
	}
	json_decref(reply);
	return 0;
}
