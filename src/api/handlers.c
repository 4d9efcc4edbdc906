/* handlers.c - API operations on the host's VMs. */
#include "api.h"
#include "attest.h"
#include "audit.h"
#include "controller.h"
#include "ha.h"
#include "load.h"
#include "migrate.h"
#include "tls.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>

/* Copy console bytes into a JSON-safe string: printable ASCII, tab, CR
 * and LF pass; anything else becomes '.'. */
static json_t *console_string(const char *data, size_t len)
{
	char *s = malloc(len + 1);
	json_t *j;

	if (!s)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i];

		s[i] = (c == '\n' || c == '\r' || c == '\t' ||
			(c >= 0x20 && c < 0x7f))
			       ? (char)c
			       : '.';
	}
	j = json_stringn(s, len);
	free(s);
	return j;
}

/* Set *reply to the error for err and return its HTTP status. */
static int fail(const struct ferr *err, json_t **reply)
{
	*reply = api_error_json(err);
	return ferr_http_status(err->code);
}

/* A VM object for replies, with its migration if one is active. */
static json_t *vm_json(struct api_ctx *ctx, const struct vm *vm)
{
	json_t *o = vm_to_json(vm);

	if (o)
		migrator_annotate_vm(ctx->mig, vm, o);
	if (o && ctx->ha)
		ha_annotate_vm(ctx->ha, vm, o);
	return o;
}

/* GET /v1/vms */
static json_t *vm_list(struct api_ctx *ctx)
{
	json_t *arr = json_array();

	for (struct vm *vm = vmm_first(ctx->vmm); vm; vm = vm->next)
		json_array_append_new(arr, vm_json(ctx, vm));
	return json_pack("{s:o}", "vms", arr);
}

/* ---- deferred answers ---- */

/* A deferred call and what its answer needs. */
struct later {
	struct api_ctx *ctx;
	struct api_call *call;
	int ok;                  /* the status of success */
	/* an audit job */
	struct api_request req;  /* a copy of the filters */
	char path[FERRY_PATH_MAX];
	json_t *reply;
	int rc;
	struct ferr err;
};

static struct later *later_new(struct api_ctx *ctx, struct api_call *call,
			       int ok)
{
	struct later *l = calloc(1, sizeof(*l));

	if (l) {
		l->ctx = ctx;
		l->call = call;
		l->ok = ok;
	}
	return l;
}

/* A VM operation ended: answer with the VM or the error. */
static void on_vm_done(void *arg, struct vm *vm, int rc,
		       const struct ferr *err)
{
	struct later *l = arg;

	if (rc < 0)
		api_call_reply(l->call, ferr_http_status(err->code),
			       api_error_json(err));
	else if (!vm)
		api_call_reply(l->call, 200, json_object());
	else
		api_call_reply(l->call, l->ok, vm_json(l->ctx, vm));
	free(l);
}

/* A firewall show ended: answer with what it found. */
static void on_fw_shown(void *arg, struct vm *vm, int rc,
			const struct ferr *err)
{
	struct later *l = arg;

	(void)vm;
	if (rc < 0)
		api_call_reply(l->call, ferr_http_status(err->code),
			       api_error_json(err));
	else
		api_call_reply(l->call, 200, l->reply);
	free(l);
}

/* POST /v1/vms/NAME/firewall: {"firewall": RULES | null}. */
static int fw_body(const json_t *body, struct fw_policy *own,
		   struct ferr *err)
{
	static const char *const fields[] = { "firewall", NULL };
	const json_t *f = json_object_get(body, "firewall");

	memset(own, 0, sizeof(*own));
	if (json_check_fields(body, fields, "request body", err) < 0)
		return -1;
	if (!f)
		return ferr_set(err, FERR_INVALID,
				"request body needs \"firewall\": the rules, "
				"or null for none of its own");
	return json_is_null(f) ? 0
			       : fw_policy_from_json(f, "firewall", own, err);
}

/* A migration step ended: answer with its reply or the error. */
static void on_mig_reply(void *arg, int rc, json_t *reply,
			 const struct ferr *err)
{
	struct later *l = arg;

	if (rc < 0)
		api_call_reply(l->call, ferr_http_status(err->code),
			       api_error_json(err));
	else
		api_call_reply(l->call, l->ok, reply);
	free(l);
}

int api_crl_reload(struct api_ctx *ctx, const char *identity,
		   struct ferr *err)
{
	struct ferr aerr;
	size_t n = 0;
	int rc = tls_crl_load(ctx->crl_path, ctx->ca_path, &n, err);

	if (rc == 0)
		ctx->crl_revoked = n;
	if (audit_log(ctx->audit, identity, "crl.reload", ctx->crl_path,
		      rc == 0 ? "ok" : "error",
		      rc == 0 ? json_pack("{s:I}", "revoked", (json_int_t)n)
			      : json_pack("{s:s}", "error", err->msg),
		      &aerr) < 0)
		log_error("audit: %s", aerr.msg);
	if (rc == 0)
		log_info("tls: revocation list %s loaded (%zu revoked)",
			 ctx->crl_path, n);
	else
		log_warn("tls: revocation list refused, the old one stays: %s",
			 err->msg);
	return rc;
}

int api_policy_reload(struct api_ctx *ctx, const char *identity,
		      struct ferr *err)
{
	struct ferr aerr, cerr;
	int rc;

	if (!ctx->policy_path) {
		rc = ferr_set(err, FERR_CONFLICT,
			      "no policy file is configured (ferryd.json: "
			      "policy)");
		goto crl;
	}
	rc = policy_reload(ctx->policy, ctx->policy_path, err);
	/* the new policy is measured and becomes the accepted one; a policy
	 * that cannot be measured stays in force (refusing it now would
	 * leave the old one running unmeasured) but attestation reports it */
	if (rc == 0 && ctx->attest && ctx->attest->policy_accepted &&
	    ctx->attest->policy_accepted(ctx->attest->ctx, ctx->policy_path,
					 &aerr) < 0)
		log_error("attest: the reloaded policy is not measured: %s",
			  aerr.msg);
	if (audit_log(ctx->audit, identity, "policy.reload", ctx->policy_path,
		      rc == 0 ? "ok" : "error",
		      rc == 0 ? json_pack("{s:I}", "rules",
					  (json_int_t)policy_rule_count(
						  *ctx->policy))
			      : json_pack("{s:s}", "error", err->msg),
		      &aerr) < 0)
		log_error("audit: %s", aerr.msg);
	if (rc == 0) {
		/* VMs on the cluster's default firewall get the new one */
		vmm_fw_configure(ctx->vmm, policy_firewall(*ctx->policy));
		log_info("policy: reloaded %s (%zu rules)", ctx->policy_path,
			 policy_rule_count(*ctx->policy));
	}
	else
		log_warn("policy: reload refused, the old policy stays: %s",
			 err->msg);
crl:
	if (ctx->crl_path && api_crl_reload(ctx, identity, &cerr) < 0 &&
	    rc == 0) {
		*err = cerr;
		rc = -1;
	}
	return rc;
}

/* Worker: GET /v1/audit, filtered records (the log may be large; its
 * rotated files are read too). */
static void audit_work(void *arg)
{
	struct later *l = arg;
	const struct api_request *req = &l->req;
	struct audit_filter f = {
		.since_ms = req->since,
		.until_ms = req->until,
		.target = req->q_vm[0] ? req->q_vm : NULL,
		.actor = req->q_actor[0] ? req->q_actor : NULL,
		.action = req->q_action[0] ? req->q_action : NULL,
		.limit = (unsigned)req->limit,
	};
	json_t *recs = audit_query(l->path, &f, &l->err);

	l->rc = recs ? 0 : -1;
	if (recs)
		l->reply = json_pack("{s:o}", "records", recs);
}

/* Loop: add the head (the newest record) and answer. */
static void audit_done(void *arg)
{
	struct later *l = arg;
	char hash[AUDIT_HASH_HEX_LEN + 1];
	uint64_t seq = 0;

	if (l->rc < 0) {
		api_call_reply(l->call, ferr_http_status(l->err.code),
			       api_error_json(&l->err));
	} else {
		audit_head(l->ctx->audit, &seq, hash);
		json_object_set_new(l->reply, "head",
				    json_pack("{s:I, s:s}", "seq",
					      (json_int_t)seq, "hash", hash));
		api_call_reply(l->call, 200, l->reply);
	}
	free(l);
}

/* GET /v1/audit on a worker; /v1/audit/key at once. (GET /v1/audit/log
 * is streamed by the transport: stream.c.) */
static int audit_reply(struct api_ctx *ctx, struct api_call *call,
		       const struct api_request *req, json_t **reply,
		       struct ferr *err)
{
	const char *log = audit_path(ctx->audit);
	size_t dirlen = strlen(log) - strlen(AUDIT_LOG_NAME);
	struct later *l;

	if (req->route == ROUTE_AUDIT_KEY) {
		char path[FERRY_PATH_MAX];
		char *text = NULL;
		size_t len = 0;

		if (fmt_checked(path, sizeof(path), err, "path", "%.*s%s",
				(int)dirlen, log, AUDIT_PUB_NAME) < 0 ||
		    file_read_all(path, AUDIT_KEY_FILE_MAX, &text, &len, err) <
			    0)
			return -1;
		*reply = json_pack("{s:s}", "public_key", text);
		free(text);
		return *reply ? 200
			      : ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	l = later_new(ctx, call, 200);
	if (!l)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	l->req = *req;
	l->req.body = NULL;
	snprintf(l->path, sizeof(l->path), "%s", log);
	if (worker_submit(ctx->pool, audit_work, audit_done, l, err) < 0) {
		free(l);
		return -1;
	}
	return API_DEFERRED;
}

/* A change of the balancer's state: it waits for etcd, on a worker. */
struct bal_job {
	struct api_call *call;
	struct controller *ctl;
	enum api_route route;
	json_t *body;
	char identity[FERRY_NAME_MAX + 1];
	json_t *reply;
	int rc;
	struct ferr err;
};

static void balance_work(void *arg)
{
	struct bal_job *j = arg;

	if (j->route == ROUTE_BAL_MODE)
		j->rc = controller_set_mode(j->ctl, j->body, j->identity,
					    &j->reply, &j->err);
	else if (j->route == ROUTE_BAL_PARAMS)
		j->rc = controller_set_params(j->ctl, j->body, j->identity,
					      &j->reply, &j->err);
	else
		j->rc = controller_drain(j->ctl, j->body,
					 j->route == ROUTE_BAL_DRAIN,
					 j->identity, &j->reply, &j->err);
}

static void balance_done(void *arg)
{
	struct bal_job *j = arg;

	if (j->rc < 0)
		api_call_reply(j->call, ferr_http_status(j->err.code),
			       api_error_json(&j->err));
	else
		api_call_reply(j->call, 200, j->reply);
	json_decref(j->body);
	free(j);
}

static int defer_balance(struct api_ctx *ctx, struct api_call *call,
			 const struct api_request *req, const char *identity,
			 struct ferr *err)
{
	struct bal_job *j = calloc(1, sizeof(*j));

	if (!j)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	j->call = call;
	j->ctl = ctx->ctl;
	j->route = req->route;
	j->body = json_deep_copy(req->body);
	snprintf(j->identity, sizeof(j->identity), "%s", identity);
	if (!j->body || worker_submit(ctx->pool, balance_work, balance_done,
				      j, err) < 0) {
		if (!j->body)
			ferr_set(err, FERR_INTERNAL, "out of memory");
		json_decref(j->body);
		free(j);
		return -1;
	}
	return API_DEFERRED;
}

/* Worker: a /v1/attest route (the TPM is slow, and its commands are
 * serialized by the attest component). */
static void attest_work(void *arg)
{
	struct later *l = arg;

	l->rc = api_attest(l->ctx, &l->req, &l->reply, &l->err);
}

static void attest_done(void *arg)
{
	struct later *l = arg;

	if (l->rc < 0)
		api_call_reply(l->call, ferr_http_status(l->err.code),
			       api_error_json(&l->err));
	else
		api_call_reply(l->call, 200, l->reply);
	json_decref(l->req.body);
	free(l);
}

static int attest_reply(struct api_ctx *ctx, struct api_call *call,
			const struct api_request *req, struct ferr *err)
{
	struct later *l = later_new(ctx, call, 200);

	if (!l)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	l->req = *req;
	json_incref(l->req.body);
	if (worker_submit(ctx->pool, attest_work, attest_done, l, err) < 0) {
		json_decref(l->req.body);
		free(l);
		return -1;
	}
	return API_DEFERRED;
}

/* Start a migration step that answers later; l is freed by the answer. */
static int defer_mig(struct api_ctx *ctx, struct api_call *call, int ok,
		     int (*start)(struct api_ctx *ctx,
				  const struct api_request *req,
				  const char *identity, struct later *l,
				  struct ferr *err),
		     const struct api_request *req, const char *identity,
		     struct ferr *err)
{
	struct later *l = later_new(ctx, call, ok);

	if (!l)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (start(ctx, req, identity, l, err) < 0) {
		free(l);
		return -1;
	}
	return API_DEFERRED;
}

static int start_prepare(struct api_ctx *ctx, const struct api_request *req,
			 const char *identity, struct later *l,
			 struct ferr *err)
{
	return migrator_prepare(ctx->mig, req->body, identity,
				req->have_exporter ? req->tls_exporter : NULL,
				on_mig_reply, l, err);
}

static int start_recover(struct api_ctx *ctx, const struct api_request *req,
			 const char *identity, struct later *l,
			 struct ferr *err)
{
	return migrator_recover(ctx->mig, req->vm, identity, on_mig_reply, l,
				err);
}

static int start_finish(struct api_ctx *ctx, const struct api_request *req,
			const char *identity, struct later *l,
			struct ferr *err)
{
	return migrator_finish(ctx->mig, req->vm, req->body, identity,
			       on_mig_reply, l, err);
}

/* Routes that do not name a VM: host, list, define, migrations, the peer
 * side of migrations, audit, policy, balancer. Returns the status,
 * API_DEFERRED, or -2 when the route names a VM. */
static int handle_other(struct api_ctx *ctx, struct api_call *call,
			const char *identity, const struct api_request *req,
			json_t **reply)
{
	struct ferr err = { 0 };
	struct vm *vm = NULL;
	int rc = 0, ok = 200;

	switch (req->route) {
	case ROUTE_HOST_INFO:
		*reply = vmm_host_info(ctx->vmm);
		json_object_set_new(*reply, "draining",
				    json_boolean(load_draining(ctx->load)));
		{
			unsigned a, q, u;

			migrator_counts(ctx->mig, &a, &q, &u);
			json_object_set_new(
				*reply, "migrations",
				json_pack("{s:i, s:i, s:i, s:I}", "active", a,
					  "queued", q, "unresolved", u,
					  "data_conns_accepted",
					  (json_int_t)migrator_conns_accepted(
						  ctx->mig)));
		}
		return 200;
	case ROUTE_LOAD:
		*reply = load_report(ctx->load);
		return 200;
	case ROUTE_BAL_STATUS:
	case ROUTE_BAL_PLAN:
	case ROUTE_BAL_DRAINS:
	case ROUTE_BAL_MODE:
	case ROUTE_BAL_DRAIN:
	case ROUTE_BAL_UNDRAIN:
	case ROUTE_BAL_PARAMS:
		if (!ctx->ctl) {
			ferr_set(&err, FERR_NOT_FOUND,
				 "this ferryd is not a balancer controller "
				 "(ferryd.json: balancer)");
			rc = -1;
		} else if (req->route == ROUTE_BAL_STATUS) {
			*reply = controller_status(ctx->ctl, !req->no_hosts);
		} else if (req->route == ROUTE_BAL_PLAN) {
			*reply = controller_plan(ctx->ctl);
		} else if (req->route == ROUTE_BAL_DRAINS) {
			*reply = controller_drains(ctx->ctl);
		} else {
			if (defer_balance(ctx, call, req, identity, &err) < 0)
				return fail(&err, reply);
			return API_DEFERRED;
		}
		break;
	case ROUTE_HOST_FENCE:
		rc = migrator_fence(ctx->mig, req->body, identity, reply,
				    &err);
		break;
	case ROUTE_HOST_DRAIN:
	case ROUTE_HOST_UNDRAIN:
		rc = load_set_draining(ctx->load,
				       req->route == ROUTE_HOST_DRAIN, &err);
		if (rc == 0)
			*reply = json_pack("{s:b}", "draining",
					   load_draining(ctx->load));
		break;
	case ROUTE_VM_LIST:
		*reply = vm_list(ctx);
		return 200;
	case ROUTE_VM_DEFINE:
		if (vmm_define(ctx->vmm, req->body, &vm, &err) < 0)
			return fail(&err, reply);
		log_info("api: %s defined vm %s", identity, vm->def.name);
		*reply = vm_json(ctx, vm);
		return 201;
	case ROUTE_MIG_LIST:
		*reply = migrator_list(ctx->mig);
		return 200;
	case ROUTE_MIG_INFO:
		rc = migrator_get(ctx->mig, req->vm, reply, &err);
		break;
	case ROUTE_MIG_CANCEL:
		rc = migrator_cancel(ctx->mig, req->vm, reply, &err);
		ok = 202;
		break;
	case ROUTE_IN_PREPARE:
		if (load_draining(ctx->load)) {
			ferr_set(&err, FERR_CONFLICT,
				 "this host is draining: it takes no VMs in");
			rc = -1;
			break;
		}
		if (defer_mig(ctx, call, 201, start_prepare, req, identity,
			      &err) < 0)
			return fail(&err, reply);
		return API_DEFERRED;
	case ROUTE_IN_INFO:
		rc = migrator_incoming_get(ctx->mig, req->vm, identity, reply,
					   &err);
		break;
	case ROUTE_IN_FINISH:
		if (defer_mig(ctx, call, 200, start_finish, req, identity,
			      &err) < 0)
			return fail(&err, reply);
		return API_DEFERRED;
	case ROUTE_IN_ABORT:
		rc = migrator_abort(ctx->mig, req->vm, req->body, identity,
				    reply, &err);
		break;
	case ROUTE_IN_RECOVER:
		if (defer_mig(ctx, call, 200, start_recover, req, identity,
			      &err) < 0)
			return fail(&err, reply);
		return API_DEFERRED;
	case ROUTE_IN_LOST:
		rc = migrator_source_lost(ctx->mig, req->vm, identity, reply,
					  &err);
		break;
	case ROUTE_AUDIT_QUERY:
	case ROUTE_AUDIT_LOG:
	case ROUTE_AUDIT_KEY:
		rc = audit_reply(ctx, call, req, reply, &err);
		return rc < 0 ? fail(&err, reply) : rc;
	case ROUTE_ATTEST_IDENTITY:
	case ROUTE_ATTEST_QUOTE:
	case ROUTE_ATTEST_ACTIVATE:
	case ROUTE_ATTEST_APPROVE:
		rc = attest_reply(ctx, call, req, &err);
		return rc < 0 ? fail(&err, reply) : rc;
	case ROUTE_METRICS:
		rc = api_metrics(ctx, call, &err);
		return rc < 0 ? fail(&err, reply) : rc;
	case ROUTE_POLICY_RELOAD:
		rc = api_policy_reload(ctx, identity, &err);
		if (rc == 0)
			*reply = json_pack("{s:s, s:I}", "policy",
					   ctx->policy_path, "rules",
					   (json_int_t)policy_rule_count(
						   *ctx->policy));
		if (rc == 0 && ctx->crl_path)
			json_object_set_new(*reply, "crl_revoked",
					    json_integer((json_int_t)
								 ctx->crl_revoked));
		break;
	default:
		return api_handle_ha(ctx, call, identity, req, NULL, reply);
	}
	return rc < 0 ? fail(&err, reply) : ok;
}

/* GET /v1/vms/NAME/console */
static int console(struct vmm *vmm, struct vm *vm,
		   const struct api_request *req, json_t **reply,
		   struct ferr *err)
{
	char *data = NULL;
	size_t len = 0;
	uint64_t size = 0;

	if (vmm_console_read(vmm, vm, req->offset, (size_t)req->limit, &data,
			     &len, &size, err) < 0)
		return -1;
	*reply = json_pack("{s:I, s:I, s:I, s:o}", "offset",
			   (json_int_t)req->offset, "next",
			   (json_int_t)(req->offset + len), "size",
			   (json_int_t)size, "data", console_string(data, len));
	free(data);
	return 0;
}

/* May the route change a VM in its state? A VM held by a migration
 * changes only through it, except that one left unresolved may be resumed
 * or stopped by force (vm.h, struct vm_hold). */
static int check_held(const struct vm *vm, const struct api_request *req,
		      struct ferr *err)
{
	if (req->route == ROUTE_VM_INFO || req->route == ROUTE_VM_CONSOLE ||
	    req->route == ROUTE_HA_STATUS || req->route == ROUTE_VM_FW_SHOW)
		return 0;
	if (vm->hold.resume_guard &&
	    (req->route == ROUTE_VM_RESUME || req->route == ROUTE_VM_STOP))
		return 0; /* vmm_resume / vmm_stop want force */
	if (vm->incoming || vm->hold.owner[0])
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is migrating; wait for the migration "
				"to end or cancel it",
				req->vm);
	return 0;
}

int api_handle(struct api_ctx *ctx, struct api_call *call,
	       const char *identity, const struct api_request *req,
	       json_t **reply)
{
	struct vmm *vmm = ctx->vmm;
	struct ferr err = { 0 };
	struct later *l = NULL;
	struct vm *vm = NULL;
	int rc = 0, status;

	*reply = NULL;
	status = handle_other(ctx, call, identity, req, reply);
	if (status != -2)
		return status;
	vm = vmm_find(vmm, req->vm);
	if (!vm) {
		ferr_set(&err, FERR_NOT_FOUND, "no VM named %s on this host",
			 req->vm);
		return fail(&err, reply);
	}
	if (check_held(vm, req, &err) < 0)
		return fail(&err, reply);
	status = api_handle_ha(ctx, call, identity, req, vm, reply);
	if (status != -2)
		return status;
	switch (req->route) {
	case ROUTE_VM_INFO:
		*reply = vm_json(ctx, vm);
		return 200;
	case ROUTE_VM_CONSOLE:
		if (console(vmm, vm, req, reply, &err) < 0)
			return fail(&err, reply);
		return 200;
	case ROUTE_VM_DELETE:
		if (vmm_delete(vmm, vm, &err) < 0)
			return fail(&err, reply);
		log_info("api: %s deleted vm %s", identity, req->vm);
		*reply = json_pack("{s:s}", "deleted", req->vm);
		return 200;
	case ROUTE_VM_MIGRATE:
		if (ctx->ha && ha_knows(ctx->ha, vm))
			return api_ha_migrate(ctx, call, identity, req, vm,
					      reply);
		if (migrator_start(ctx->mig, vm, req->body, identity, reply,
				   &err) < 0)
			return fail(&err, reply);
		return 202;
	default:
		break;
	}
	/* the rest waits for QEMU: answered when it is done */
	l = later_new(ctx, call, req->route == ROUTE_VM_STOP ? 202 : 200);
	if (!l) {
		ferr_set(&err, FERR_INTERNAL, "out of memory");
		return fail(&err, reply);
	}
	switch (req->route) {
	case ROUTE_VM_START:
		rc = vmm_start(vmm, vm, on_vm_done, l, &err);
		break;
	case ROUTE_VM_STOP:
		rc = vmm_stop(vmm, vm, req->force, req->timeout_s, on_vm_done,
			      l, &err);
		break;
	case ROUTE_VM_PAUSE:
		rc = vmm_pause(vmm, vm, on_vm_done, l, &err);
		break;
	case ROUTE_VM_RESUME:
		rc = vmm_resume(vmm, vm, req->force, on_vm_done, l, &err);
		break;
	case ROUTE_VM_FW_SHOW:
		rc = vmm_fw_show(vmm, vm, &l->reply, on_fw_shown, l, &err);
		break;
	case ROUTE_VM_FW_SET: {
		struct fw_policy own;

		rc = fw_body(req->body, &own, &err) < 0
			     ? -1
			     : vmm_fw_set(vmm, vm, &own, on_vm_done, l, &err);
		break;
	}
	default:
		rc = ferr_set(&err, FERR_INTERNAL, "unhandled route");
		break;
	}
	if (rc < 0) {
		free(l);
		return fail(&err, reply);
	}
	log_info("api: %s: vm %s: %s requested", identity, req->vm,
		 api_route_action(req->route));
	return API_DEFERRED;
}
