/* handlers_ha.c - the API's checkpoint-HA routes (docs/ha.md): enable,
 * disable, status and planned failover of a protected VM, and the peer
 * side (a standby prepared / discarded for another host's VM). */
#include "api.h"
#include "ha.h"
#include "migrate.h"

#include <stdio.h>
#include <stdlib.h>

/* A deferred HA answer. */
struct ha_later {
	struct api_call *call;
	int ok;
};

static void on_ha_reply(void *arg, int rc, json_t *reply,
			const struct ferr *err)
{
	struct ha_later *l = arg;

	if (rc < 0)
		api_call_reply(l->call, ferr_http_status(err->code),
			       api_error_json(err));
	else
		api_call_reply(l->call, l->ok, reply);
	free(l);
}

int api_handle_ha(struct api_ctx *ctx, struct api_call *call,
		  const char *identity, const struct api_request *req,
		  struct vm *vm, json_t **reply)
{
	struct ferr err = { 0 };
	struct ha_later *l;
	int rc;

	if (!vm && (req->route == ROUTE_HA_STATUS ||
		    req->route == ROUTE_HA_ENABLE ||
		    req->route == ROUTE_HA_DISABLE ||
		    req->route == ROUTE_HA_FAILOVER))
		return -2; /* api_handle finds the VM first */
	switch (req->route) {
	case ROUTE_HA_LIST:
		*reply = ha_status(ctx->ha, NULL, &err);
		return 200;
	case ROUTE_HA_STATUS:
		*reply = ha_status(ctx->ha, vm->def.name, &err);
		if (!*reply)
			goto fail;
		return 200;
	case ROUTE_STANDBY_DISCARD:
		if (ha_standby_discard(ctx->ha, req->vm, identity, reply,
				       &err) < 0)
			goto fail;
		return 200;
	case ROUTE_HA_ENABLE:
	case ROUTE_HA_DISABLE:
	case ROUTE_HA_FAILOVER:
	case ROUTE_STANDBY_PREPARE:
	case ROUTE_HA_ADOPT:
		break;
	default:
		return -2;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		ferr_set(&err, FERR_INTERNAL, "out of memory");
		goto fail;
	}
	l->call = call;
	l->ok = req->route == ROUTE_STANDBY_PREPARE ? 201 : 200;
	switch (req->route) {
	case ROUTE_HA_ENABLE:
		rc = ha_enable(ctx->ha, vm, req->body, identity, on_ha_reply, l,
			       &err);
		break;
	case ROUTE_HA_DISABLE:
		rc = ha_disable(ctx->ha, vm, identity, req->force, on_ha_reply,
				l, &err);
		break;
	case ROUTE_HA_FAILOVER:
		rc = ha_failover(ctx->ha, vm, identity, on_ha_reply, l, &err);
		break;
	case ROUTE_HA_ADOPT:
		rc = ha_adopt(ctx->ha, req->body, identity, on_ha_reply, l,
			      &err);
		break;
	default:
		rc = ha_standby_prepare(ctx->ha, req->body, identity,
					req->have_exporter ? req->tls_exporter
							   : NULL,
					on_ha_reply, l, &err);
		break;
	}
	if (rc < 0) {
		free(l);
		goto fail;
	}
	return API_DEFERRED;
fail:
	*reply = api_error_json(&err);
	return ferr_http_status(err.code);
}

/* A protected VM's migration: its protection ends first (ha_migrate),
 * then the migration starts. */
struct ha_mig {
	struct api_ctx *ctx;
	struct api_call *call;
	char vm[FERRY_NAME_MAX + 1];
	char identity[FERRY_NAME_MAX + 1];
	json_t *body;
};

static void on_ha_released(void *arg, int rc, json_t *reply,
			   const struct ferr *err)
{
	struct ha_mig *m = arg;
	struct vm *vm = vmm_find(m->ctx->vmm, m->vm);
	json_t *out = NULL;
	struct ferr e2 = { 0 };

	if (rc < 0) {
		api_call_reply(m->call, ferr_http_status(err->code),
			       api_error_json(err));
	} else if (!vm) {
		ferr_set(&e2, FERR_NOT_FOUND, "vm %s went away", m->vm);
		api_call_reply(m->call, 404, api_error_json(&e2));
	} else if (migrator_start(m->ctx->mig, vm, m->body, m->identity, &out,
				  &e2) < 0) {
		/* HA protects it again with the same backup (ha_migrate) */
		api_call_reply(m->call, ferr_http_status(e2.code),
			       api_error_json(&e2));
	} else {
		json_object_set(out, "ha", reply);
		api_call_reply(m->call, 202, out);
	}
	json_decref(reply);
	json_decref(m->body);
	free(m);
}

int api_ha_migrate(struct api_ctx *ctx, struct api_call *call,
		   const char *identity, const struct api_request *req,
		   struct vm *vm, json_t **reply)
{
	struct ferr err = { 0 };
	struct ha_mig *m = calloc(1, sizeof(*m));

	if (!m) {
		ferr_set(&err, FERR_INTERNAL, "out of memory");
		goto fail;
	}
	*m = (struct ha_mig){ .ctx = ctx, .call = call,
			      .body = json_incref(req->body) };
	snprintf(m->vm, sizeof(m->vm), "%s", vm->def.name);
	snprintf(m->identity, sizeof(m->identity), "%s", identity);
	if (ha_migrate(ctx->ha, vm, req->body, identity, on_ha_released, m,
		       &err) < 0) {
		json_decref(m->body);
		free(m);
		goto fail;
	}
	return API_DEFERRED;
fail:
	*reply = api_error_json(&err);
	return ferr_http_status(err.code);
}
