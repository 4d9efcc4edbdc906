/* handlers.c - API operations on the host's VMs. */
#include "api.h"
#include "audit.h"
#include "controller.h"
#include "load.h"
#include "migrate.h"
#include "tls.h"

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
static json_t *vm_json(const struct vm *vm)
{
	json_t *o = vm_to_json(vm);

	if (o)
		migrator_annotate_vm(vm, o);
	return o;
}

/* GET /v1/vms */
static json_t *vm_list(struct vmm *vmm)
{
	json_t *arr = json_array();

	for (struct vm *vm = vmm_first(vmm); vm; vm = vm->next)
		json_array_append_new(arr, vm_json(vm));
	return json_pack("{s:o}", "vms", arr);
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
	if (audit_log(ctx->audit, identity, "policy.reload", ctx->policy_path,
		      rc == 0 ? "ok" : "error",
		      rc == 0 ? json_pack("{s:I}", "rules",
					  (json_int_t)policy_rule_count(
						  *ctx->policy))
			      : json_pack("{s:s}", "error", err->msg),
		      &aerr) < 0)
		log_error("audit: %s", aerr.msg);
	if (rc == 0)
		log_info("policy: reloaded %s (%zu rules)", ctx->policy_path,
			 policy_rule_count(*ctx->policy));
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

/* GET /v1/audit: filtered records and the head. */
static int audit_query_reply(struct api_ctx *ctx,
			     const struct api_request *req, json_t **reply,
			     struct ferr *err)
{
	struct audit_filter f = {
		.since_ms = req->since,
		.until_ms = req->until,
		.target = req->q_vm[0] ? req->q_vm : NULL,
		.actor = req->q_actor[0] ? req->q_actor : NULL,
		.action = req->q_action[0] ? req->q_action : NULL,
		.limit = (unsigned)req->limit,
	};
	char hash[AUDIT_HASH_HEX_LEN + 1];
	uint64_t seq = 0;
	json_t *recs = audit_query(audit_path(ctx->audit), &f, err);

	if (!recs)
		return -1;
	audit_head(ctx->audit, &seq, hash);
	*reply = json_pack("{s:o, s:{s:I, s:s}}", "records", recs, "head",
			   "seq", (json_int_t)seq, "hash", hash);
	return 0;
}

/* GET /v1/audit/log and /v1/audit/key. */
static int audit_file_reply(struct api_ctx *ctx, bool key, json_t **reply,
			    struct ferr *err)
{
	char path[FERRY_PATH_MAX], hash[AUDIT_HASH_HEX_LEN + 1];
	const char *log = audit_path(ctx->audit);
	char *text = NULL;
	size_t len = 0;
	uint64_t seq = 0;
	size_t dirlen = strlen(log) - strlen(AUDIT_LOG_NAME);

	if (key) {
		if (fmt_checked(path, sizeof(path), err, "path", "%.*s%s",
				(int)dirlen, log, AUDIT_PUB_NAME) < 0 ||
		    file_read_all(path, AUDIT_KEY_FILE_MAX, &text, &len, err) <
			    0)
			return -1;
		*reply = json_pack("{s:s}", "public_key", text);
	} else {
		if (audit_snapshot(ctx->audit, &text, &len, err) < 0)
			return -1;
		audit_head(ctx->audit, &seq, hash);
		*reply = json_pack("{s:s%, s:{s:I, s:s}}", "log", text, len,
				   "head", "seq", (json_int_t)seq, "hash",
				   hash);
	}
	free(text);
	return *reply ? 0 : ferr_set(err, FERR_INTERNAL, "out of memory");
}

/* Routes that do not name a VM: host, list, define, migrations and the
 * peer side of migrations. Returns the status, or 0 when the route names
 * a VM. */
static int handle_other(struct api_ctx *ctx, const char *identity,
			const struct api_request *req, json_t **reply)
{
	struct ferr err = { 0 };
	struct vm *vm = NULL;
	int rc = 0, ok = 200;

	switch (req->route) {
	case ROUTE_HOST_INFO:
		*reply = vmm_host_info(ctx->vmm);
		json_object_set_new(*reply, "draining",
				    json_boolean(load_draining(ctx->load)));
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
		if (!ctx->ctl) {
			ferr_set(&err, FERR_NOT_FOUND,
				 "this ferryd is not a balancer controller "
				 "(ferryd.json: balancer)");
			rc = -1;
		} else if (req->route == ROUTE_BAL_STATUS) {
			*reply = controller_status(ctx->ctl);
		} else if (req->route == ROUTE_BAL_PLAN) {
			*reply = controller_plan(ctx->ctl);
		} else if (req->route == ROUTE_BAL_DRAINS) {
			*reply = controller_drains(ctx->ctl);
		} else if (req->route == ROUTE_BAL_MODE) {
			rc = controller_set_mode(ctx->ctl, req->body, reply,
						 &err);
		} else {
			rc = controller_drain(ctx->ctl, req->body,
					      req->route == ROUTE_BAL_DRAIN,
					      reply, &err);
		}
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
		*reply = vm_list(ctx->vmm);
		return 200;
	case ROUTE_VM_DEFINE:
		if (vmm_define(ctx->vmm, req->body, &vm, &err) < 0)
			return fail(&err, reply);
		log_info("api: %s defined vm %s", identity, vm->def.name);
		*reply = vm_json(vm);
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
		rc = migrator_prepare(ctx->mig, req->body, identity, reply,
				      &err);
		ok = 201;
		break;
	case ROUTE_IN_INFO:
		rc = migrator_incoming_get(ctx->mig, req->vm, identity, reply,
					   &err);
		break;
	case ROUTE_IN_FINISH:
		rc = migrator_finish(ctx->mig, req->vm, req->body, identity,
				     reply, &err);
		break;
	case ROUTE_IN_ABORT:
		rc = migrator_abort(ctx->mig, req->vm, identity, reply, &err);
		break;
	case ROUTE_AUDIT_QUERY:
		rc = audit_query_reply(ctx, req, reply, &err);
		break;
	case ROUTE_AUDIT_LOG:
	case ROUTE_AUDIT_KEY:
		rc = audit_file_reply(ctx, req->route == ROUTE_AUDIT_KEY, reply,
				      &err);
		break;
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
		return 0;
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

int api_handle(struct api_ctx *ctx, const char *identity,
	       const struct api_request *req, json_t **reply)
{
	struct vmm *vmm = ctx->vmm;
	struct ferr err = { 0 };
	struct vm *vm = NULL;
	int status;

	*reply = NULL;
	status = handle_other(ctx, identity, req, reply);
	if (status)
		return status;
	status = 200;
	vm = vmm_find(vmm, req->vm);
	if (!vm) {
		ferr_set(&err, FERR_NOT_FOUND, "no VM named %s on this host",
			 req->vm);
		return fail(&err, reply);
	}
	if ((vm->incoming || vm->mig_out) && req->route != ROUTE_VM_INFO &&
	    req->route != ROUTE_VM_CONSOLE) {
		ferr_set(&err, FERR_CONFLICT,
			 "vm %s is migrating; wait for the migration to end "
			 "or cancel it",
			 req->vm);
		return fail(&err, reply);
	}
	switch (req->route) {
	case ROUTE_VM_INFO:
		break;
	case ROUTE_VM_DELETE:
		if (vmm_delete(vmm, vm, &err) < 0)
			return fail(&err, reply);
		log_info("api: %s deleted vm %s", identity, req->vm);
		*reply = json_pack("{s:s}", "deleted", req->vm);
		return 200;
	case ROUTE_VM_START:
		if (vmm_start(vmm, vm, &err) < 0)
			return fail(&err, reply);
		break;
	case ROUTE_VM_STOP:
		if (vmm_stop(vmm, vm, req->force, req->timeout_s, &err) < 0)
			return fail(&err, reply);
		status = 202;
		break;
	case ROUTE_VM_PAUSE:
		if (vmm_pause(vmm, vm, &err) < 0)
			return fail(&err, reply);
		break;
	case ROUTE_VM_RESUME:
		if (vmm_resume(vmm, vm, &err) < 0)
			return fail(&err, reply);
		break;
	case ROUTE_VM_CONSOLE:
		if (console(vmm, vm, req, reply, &err) < 0)
			return fail(&err, reply);
		return 200;
	case ROUTE_VM_MIGRATE:
		if (migrator_start(ctx->mig, vm, req->body, identity, reply,
				   &err) < 0)
			return fail(&err, reply);
		return 202;
	default:
		ferr_set(&err, FERR_INTERNAL, "unhandled route");
		return fail(&err, reply);
	}
	if (req->route != ROUTE_VM_INFO)
		log_info("api: %s: vm %s is now %s", identity, req->vm,
			 vm_state_name(vm->state));
	*reply = vm_json(vm);
	return status;
}
