/* standby.c - the backup's API side (loop thread): prepare a standby for
 * a peer's protected VM, and discard it. */
#define _GNU_SOURCE
#include "ha_int.h"
#include "policy.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

struct prep {
	struct ha *h;
	struct ha_pv *pv;
	ha_reply_fn fn;
	void *ctx;
	int rc;
	struct ferr err;
	uint8_t key[MIG_STREAM_KEY_LEN];
	json_t *attest;          /* the primary's {"challenge"}, or NULL */
	uint8_t exporter[32];    /* its TLS session's (have_exporter) */
	bool have_exporter;
	json_t *attestation;     /* our answer: {"quote", "quote_ms"} */
};

/* Worker: the quote the primary asked for, bound to its challenge, this
 * standby's stream session and the request's TLS session (as a
 * migration's destination answers in prepare). */
static int quote(struct prep *p)
{
	uint8_t nonce[32];
	int rc;

	rc = migrator_attest_request(p->h->deps.mig, p->attest,
				     "request body.attest", p->pv->sess,
				     p->have_exporter ? p->exporter : NULL,
				     nonce, &p->err);
	if (rc == 0)
		rc = migrator_attest_quote(p->h->deps.mig, nonce,
					   &p->attestation, &p->err);
	OPENSSL_cleanse(nonce, sizeof(nonce));
	return rc;
}

static void prep_free(struct prep *p)
{
	OPENSSL_cleanse(p->key, sizeof(p->key));
	json_decref(p->attest);
	json_decref(p->attestation);
	free(p);
}

/* Worker: map the standby's RAM, open the stream session. */
static void prep_work(void *arg)
{
	struct prep *p = arg;
	struct ha_pv *pv = p->pv;

	p->rc = ha_backup_setup(pv, &p->err);
	if (p->rc == 0)
		p->rc = migrator_stream_listen(p->h->deps.mig, pv->peer,
					       ha_backup_stream, pv, pv->sess,
					       p->key, pv->data_addr,
					       sizeof(pv->data_addr),
					       &pv->data_port, &p->err);
	if (p->rc == 0 && p->attest && (p->rc = quote(p)) < 0)
		migrator_stream_unlisten(p->h->deps.mig, pv->sess);
	if (p->rc == 0 &&
	    pthread_create(&pv->t_main, NULL, ha_backup_main, pv) != 0) {
		migrator_stream_unlisten(p->h->deps.mig, pv->sess);
		p->rc = ferr_set(&p->err, FERR_INTERNAL,
				 "cannot start the backup thread");
	}
	if (p->rc == 0)
		pv->t_main_on = true;
}

static void prep_fail(struct prep *p, const struct ferr *err)
{
	struct vm *vm = vmm_find_uuid(p->h->deps.vmm, p->pv->uuid);

	if (vm && vm->incoming)
		vmm_incoming_discard(p->h->deps.vmm, vm);
	ha_pv_free(p->pv);
	p->fn(p->ctx, -1, NULL, err);
	prep_free(p);
}

static void prep_done(void *arg)
{
	struct prep *p = arg;
	struct ha_pv *pv = p->pv;
	char hex[2 * MIG_STREAM_KEY_LEN + 1];

	if (p->rc == 0 && atomic_load(&p->h->stopping)) {
		struct ferr e2;

		atomic_store(&pv->stop, true);
		migrator_stream_unlisten(p->h->deps.mig, pv->sess);
		pthread_join(pv->t_main, NULL);
		p->rc = ferr_set(&e2, FERR_UNAVAILABLE, "ferryd is stopping");
		p->err = e2;
	}
	if (p->rc < 0) {
		prep_fail(p, &p->err);
		return;
	}
	pv->next = p->h->pvs;
	p->h->pvs = pv;
	for (size_t i = 0; i < MIG_STREAM_KEY_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", p->key[i]);
	OPENSSL_cleanse(p->key, sizeof(p->key));
	ha_audit(p->h, pv->peer, "ha.standby", pv->name, "ok",
		 json_pack("{s:s, s:s}", "uuid", pv->uuid, "requester",
			   pv->requester));
	log_info("ha: vm %s: standby for %s ready", pv->name, pv->peer);
	p->fn(p->ctx, 0,
	      json_pack("{s:s, s:s, s:s, s:i, s:O*}", "id", pv->sess, "key",
			hex, "data_address", pv->data_addr, "data_port",
			(int)pv->data_port, "attestation", p->attestation),
	      NULL);
	OPENSSL_cleanse(hex, sizeof(hex));
	prep_free(p);
}

/* The standby QEMU answers on QMP (or failed to start). */
static void on_standby_started(void *ctx, struct vm *vm, int rc,
			       const struct ferr *err)
{
	struct prep *p = ctx;
	struct ferr e2 = { 0 };

	if (rc < 0 || !vm) {
		if (!err)
			ferr_set(&e2, FERR_UNAVAILABLE,
				 "the standby QEMU went away");
		prep_fail(p, err ? err : &e2);
		return;
	}
	vm_hold(vm, "ha-standby", "standby", true);
	if (worker_submit(p->h->deps.pool, prep_work, prep_done, p, &e2) < 0)
		prep_fail(p, &e2);
}

int ha_standby_prepare(struct ha *h, const json_t *body, const char *peer,
		       const unsigned char *exporter, ha_reply_fn fn,
		       void *ctx, struct ferr *err)
{
	static const char *const fields[] = { "vm", "requester", "ram_bytes",
					      "disk_bytes", "interval_s",
					      "attest", NULL };
	static const char *const extra[] = { "-incoming", "defer", NULL };
	const char *requester = NULL;
	uint64_t ram = 0, disk = 0, interval = HA_INTERVAL_S_DEFAULT;
	struct vm_def def;
	struct policy_decision d;
	struct policy_vm pvm;
	struct prep *p;
	struct vm *vm;

	if (!h->etcd || !h->cfg->ram_dir[0])
		return ferr_set(err, FERR_UNAVAILABLE,
				"this host cannot be a backup: it needs etcd "
				"and ram_dir in ferryd.json");
	if (json_check_fields(body, fields, "request body", err) < 0 ||
	    json_get_string(body, "requester", "request body", FERRY_NAME_MAX,
			    &requester, err) < 0 ||
	    json_get_u64(body, "ram_bytes", "request body", HA_PAGE_SIZE,
			 HA_RAM_MAX, &ram, err) < 0 ||
	    json_get_u64(body, "disk_bytes", "request body", HA_SECTOR,
			 HA_DISK_MAX, &disk, err) < 0 ||
	    json_get_u64(body, "interval_s", "request body", 1,
			 HA_INTERVAL_S_MAX, &interval, err) < 0)
		return -1;
	if (!requester || !json_is_object(json_object_get(body, "vm")) ||
	    ram % HA_PAGE_SIZE)
		return ferr_set(err, FERR_INVALID,
				"request body: vm, requester and ram_bytes "
				"are required");
	if (vmdef_from_json(json_object_get(body, "vm"), &def, err) < 0)
		return ferr_wrap(err, "request body: vm");
	if (!!def.disk[0] != !!disk || disk % HA_SECTOR ||
	    (def.disk[0] && def.disk_format != DISK_RAW))
		return ferr_set(err, FERR_INVALID,
				"request body: a raw disk needs disk_bytes, "
				"and only then");
	pvm = (struct policy_vm){ def.name, def.labels, def.nlabels };
	policy_check_in(*h->deps.policy, requester, &pvm, peer, &d);
	if (!d.allow)
		return ferr_set(err, FERR_FORBIDDEN,
				"the policy does not let %s keep vm %s's "
				"backup here (%s: %s)",
				peer, def.name, d.rule, d.reason);
	if (vmm_check_unique(h->deps.vmm, &def, err) < 0)
		return -1;
	p = calloc(1, sizeof(*p));
	if (!p)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	p->h = h;
	p->fn = fn;
	p->ctx = ctx;
	/* a copy: the worker reads it, the loop frees the body */
	p->attest = json_deep_copy(json_object_get(body, "attest"));
	if (exporter) {
		memcpy(p->exporter, exporter, sizeof(p->exporter));
		p->have_exporter = true;
	}
	p->pv = ha_pv_new(h, HA_BACKUP, &def, err);
	if (!p->pv) {
		prep_free(p);
		return -1;
	}
	snprintf(p->pv->peer, sizeof(p->pv->peer), "%s", peer);
	snprintf(p->pv->requester, sizeof(p->pv->requester), "%s",
		 requester);
	p->pv->ram_size = (size_t)ram;
	p->pv->disk_size = disk;
	/* kept for a re-protection after a takeover here */
	p->pv->interval_ms = interval * 1000;
	/* the standby runs on its own copy of the disk, never the
	 * primary's file, so no later write of the primary leaks in */
	if (disk && ha_disk_standby(p->pv, h->cfg->shared_dir, h->cfg->host,
				    def.disk, sizeof(def.disk), err) < 0) {
		ha_pv_free(p->pv);
		prep_free(p);
		return -1;
	}
	if (vmm_check_files(h->deps.vmm, &def, err) < 0 ||
	    vmm_start_incoming(h->deps.vmm, &def, "ha-standby", extra,
			       on_standby_started, p, &vm, err) < 0) {
		ha_pv_free(p->pv);
		prep_free(p);
		return -1;
	}
	return 0;
}

int ha_standby_discard(struct ha *h, const char *uuid, const char *peer,
		       json_t **reply, struct ferr *err)
{
	struct ha_pv *pv;
	struct vm *vm;

	for (pv = h->pvs; pv; pv = pv->next)
		if (!strcmp(pv->uuid, uuid))
			break;
	if (!pv || pv->role != HA_BACKUP || strcmp(pv->peer, peer) != 0)
		return ferr_set(err, FERR_NOT_FOUND,
				"no standby of %s for %s here", uuid, peer);
	pthread_mutex_lock(&pv->apply_lock);
	bool taken = pv->taken;
	pthread_mutex_unlock(&pv->apply_lock);
	if (taken)
		return ferr_set(err, FERR_CONFLICT,
				"the standby of %s took the VM over", uuid);
	vm = vmm_find_uuid(h->deps.vmm, uuid);
	if (ha_retire_ext(h, pv, false, false, NULL, NULL, err) < 0)
		return -1;
	if (vm && vm->incoming)
		vmm_incoming_discard(h->deps.vmm, vm);
	ha_audit(h, peer, "ha.standby_discard", vm ? vm->def.name : uuid,
		 "ok", json_pack("{s:s}", "uuid", uuid));
	*reply = json_pack("{s:s}", "discarded", uuid);
	return 0;
}
