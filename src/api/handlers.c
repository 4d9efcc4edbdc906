/* handlers.c - API operations on the host's VMs. */
#include "api.h"

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

/* GET /v1/vms */
static json_t *vm_list(struct vmm *vmm)
{
	json_t *arr = json_array();

	for (struct vm *vm = vmm_first(vmm); vm; vm = vm->next)
		json_array_append_new(arr, vm_to_json(vm));
	return json_pack("{s:o}", "vms", arr);
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

int api_handle(struct vmm *vmm, const char *identity,
	       const struct api_request *req, json_t **reply)
{
	struct ferr err = { 0 };
	struct vm *vm = NULL;
	int status = 200;

	*reply = NULL;
	if (req->route == ROUTE_HOST_INFO) {
		*reply = vmm_host_info(vmm);
		return 200;
	}
	if (req->route == ROUTE_VM_LIST) {
		*reply = vm_list(vmm);
		return 200;
	}
	if (req->route == ROUTE_VM_DEFINE) {
		if (vmm_define(vmm, req->body, &vm, &err) < 0)
			return fail(&err, reply);
		log_info("api: %s defined vm %s", identity, vm->def.name);
		*reply = vm_to_json(vm);
		return 201;
	}
	vm = vmm_find(vmm, req->vm);
	if (!vm) {
		ferr_set(&err, FERR_NOT_FOUND, "no VM named %s on this host",
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
	default:
		ferr_set(&err, FERR_INTERNAL, "unhandled route");
		return fail(&err, reply);
	}
	if (req->route != ROUTE_VM_INFO)
		log_info("api: %s: vm %s is now %s", identity, req->vm,
			 vm_state_name(vm->state));
	*reply = vm_to_json(vm);
	return status;
}
