/* secctx.c - the VM's security context in a migration (docs/security.md,
 * "Security context"):
 *  - prepare (1.2) carries the rules on the VM's tap, its own or the
 *    cluster default; the destination checks them against the VM's own
 *    and its policy, and installs them on its tap before its QEMU starts
 *    (src/vm/fw.c);
 *  - when the source QEMU has completed (the VM is stopped), the source
 *    exports the VM's tracked flows and sends them on the context channel,
 *    a data-plane connection of the session (wire.h: TLS, HELLO bound to
 *    the session key); the destination imports them before it answers,
 *    and so before any finish can resume the VM. If that fails, the
 *    migration fails before the switchover and the source VM resumes. */
#define _GNU_SOURCE
#include "migrate_int.h"
#include "audit.h"
#include "ct_wire.h"
#include "fault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The namespace of def's bridge on this host ("" : ferryd's own). */
static const char *bridge_ns(const struct ferryd_config *cfg,
			     const struct vm_def *def)
{
	const struct bridge_map *b = config_bridge(cfg, def->bridge);

	return b ? b->netns : "";
}

/* ---- prepare ---- */

int mig_ctx_body(struct mig *g, json_t *body, struct ferr *err)
{
	if (!g->def.fw.present)
		return 0;
	if (json_object_set_new(body, "firewall",
				fw_policy_to_json(&g->def.fw)) < 0)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	return 0;
}

int mig_ctx_prepare(struct migrator *m, const json_t *fw, const char *peer,
		    struct vm_def *def, struct in_session *s,
		    struct ferr *err)
{
	struct fw_policy carried;

	if (fw) {
		char a[FW_DIGEST_HEX + 1], b[FW_DIGEST_HEX + 1];

		if (fw_policy_from_json(fw, "prepare.firewall", &carried,
					err) < 0)
			return -1;
		if (def->fw.present) {
			fw_policy_digest(&carried, a);
			fw_policy_digest(&def->fw, b);
			if (strcmp(a, b) != 0)
				return ferr_set(err, FERR_INVALID,
						"prepare.firewall is not the "
						"VM's own firewall");
		} else {
			def->fw = carried;
			def->fw.origin = FW_ORIGIN_DEFAULT;
		}
	}
	if (vmm_fw_check(m->vmm, def, err) < 0) {
		mig_audit(m, peer, "policy.decision", def->name, "deny",
			  json_pack("{s:s, s:s, s:s}", "check", "firewall",
				    "from", peer, "reason", err->msg));
		return -1;
	}
	s->ctx_on = def->net == NET_BRIDGE;
	snprintf(s->ctx_ns, sizeof(s->ctx_ns), "%s",
		 bridge_ns(m->cfg, def));
	return 0;
}

/* ---- the source ---- */

int mig_ctx_send(struct mig *g, struct ferr *err)
{
	const struct ferryd_config *cfg = g->m->cfg;
	struct mig_conn c = { .fd = -1 };
	uint8_t reply[MIG_CTX_REPLY_LEN];
	uint8_t *buf = NULL;
	size_t len = 0;
	unsigned count = 0, skipped = 0;
	uint32_t imported = 0, import_ms = 0;
	uint64_t t0 = now_ms(), t_export, deadline;
	int rc = -1;

	bool sent;

	pthread_mutex_lock(&g->lock);
	sent = json_object_get(g->rec, "context") != NULL;
	pthread_mutex_unlock(&g->lock);
	if (sent || !g->def.fw.present || g->def.net != NET_BRIDGE)
		return 0; /* once per migration, for a VM with rules */
	if (fw_ct_export(bridge_ns(cfg, &g->def), fw_tag(g->def.uuid), &buf,
			 &len, &count, &skipped, err) < 0)
		return ferr_wrap(err, "the VM's connection state");
	t_export = now_ms();
	deadline = t_export + MIG_CTX_TIMEOUT_MS;
	if (dataplane_dial_flags(g->m->client_ctx, cfg->migration_netns,
				 config_dataplane_addr(cfg), g->opts.to,
				 g->data_addr, g->data_port,
				 MIG_FLAG_CONTEXT |
					 (g->opts.insecure ? MIG_FLAG_PLAINTEXT
							   : 0),
				 RELAY_Z_OFF, g->sid, g->key, 0, (uint16_t)g->nchan, &c,
				 err) < 0 ||
	    conn_io_deadline(&c, false, buf, len, deadline,
			     "the connection state", err) < 0 ||
	    conn_io_deadline(&c, true, reply, sizeof(reply), deadline,
			     "the context reply", err) < 0 ||
	    mig_ctx_reply_parse(reply, &imported, &import_ms, err) < 0)
		goto out;
	if (imported != count) {
		ferr_set(err, FERR_UNAVAILABLE,
			 "%s imported %u of %u tracked flows", g->opts.to,
			 (unsigned)imported, count);
		goto out;
	}
	rc = 0;
out:
	conn_close(&c, rc == 0, &g->ctr);
	mig_rec_set(g, "context",
		    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "flows",
			      (json_int_t)count, "skipped",
			      (json_int_t)skipped, "bytes", (json_int_t)len,
			      "export_ms", (json_int_t)(t_export - t0),
			      "import_ms", (json_int_t)import_ms, "ms",
			      (json_int_t)(now_ms() - t0), "ok", rc == 0));
	free(buf);
	if (rc == 0)
		log_info("migration %s of vm %s: %u tracked flows carried in "
			 "%llu ms",
			 g->id, g->def.name, count,
			 (unsigned long long)(now_ms() - t0));
	return rc < 0 ? ferr_wrap(err, "the VM's connection state") : 0;
}

/* ---- the destination ---- */

int mig_ctx_receive(struct migrator *m, struct in_session *s,
		    struct mig_conn *c, const uint8_t exporter[MIG_EXPORTER_LEN],
		    struct ferr *err)
{
	uint8_t ack[MIG_ACK_LEN], reply[MIG_CTX_REPLY_LEN];
	uint8_t *buf = NULL;
	uint64_t deadline = now_ms() + MIG_CTX_TIMEOUT_MS, t0;
	uint32_t count = 0;
	unsigned imported = 0;
	size_t len;
	int rc = -1;

	if (!s->ctx_on) {
		mig_ack_build(ack, MIG_ACK_REFUSED, 0, NULL, NULL);
		conn_io_deadline(c, false, ack, sizeof(ack), deadline, "the ACK",
				 err);
		ferr_set(err, FERR_FORBIDDEN,
			 "vm %s is not bridged here: no connection state to "
			 "take",
			 s->vm);
		goto out;
	}
	mig_ack_build(ack, MIG_ACK_OK, 0, s->key, exporter);
	if (conn_io_deadline(c, false, ack, sizeof(ack), deadline, "the ACK",
			     err) < 0)
		return -1;
	buf = malloc(FW_CT_HDR_LEN);
	if (!buf ||
	    conn_io_deadline(c, true, buf, FW_CT_HDR_LEN, deadline,
			     "the connection state", err) < 0)
		goto out;
	if (fw_ct_decode_header(buf, &count, err) < 0)
		goto answer;
	len = FW_CT_HDR_LEN + (size_t)count * FW_CT_REC_LEN;
	{
		uint8_t *p = realloc(buf, len);

		if (!p) {
			ferr_set(err, FERR_INTERNAL, "out of memory");
			goto answer;
		}
		buf = p;
	}
	if (conn_io_deadline(c, true, buf + FW_CT_HDR_LEN,
			     len - FW_CT_HDR_LEN, deadline,
			     "the connection state", err) < 0)
		goto out;
	fault_point("dst.ctx_import");
	t0 = now_ms();
	if (fw_ct_import(s->ctx_ns, fw_tag(s->uuid), buf, len, &imported,
			 err) == 0)
		rc = 0;
	mig_ctx_reply_build(reply, rc == 0 ? MIG_ACK_OK : MIG_ACK_REFUSED,
			    imported, (uint32_t)(now_ms() - t0),
			    rc == 0 ? NULL : err->msg);
	goto send;
answer:
	mig_ctx_reply_build(reply, MIG_ACK_REFUSED, 0, 0, err->msg);
send:
	{
		struct ferr e2;

		if (conn_io_deadline(c, false, reply, sizeof(reply), deadline,
				     "the context reply", &e2) < 0 && rc == 0) {
			*err = e2;
			rc = -1;
		}
	}
out:
	mig_audit(m, s->source, "migration.context", s->vm,
		  rc == 0 ? "ok" : "error",
		  json_pack("{s:s, s:s, s:I, s:I, s:s*}", "id", s->migration,
			    "session", s->id, "flows", (json_int_t)count,
			    "imported", (json_int_t)imported, "error",
			    rc == 0 ? NULL : err->msg));
	free(buf);
	return rc;
}
