/* libFuzzer target: the policy parser and its decisions. */
#include <stdint.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct label l = { "region", "eu" };
	struct policy_vm vm = { "web-1", &l, 1 };
	struct policy_decision d;
	char scope[128];
	struct policy *p = NULL;
	struct ferr err;

	if (policy_parse((const char *)data, size, "fuzz", &p, &err) < 0)
		return 0;
	policy_permits(p, "alice", ID_USER, PERM_VM_MIGRATE, &d);
	policy_check_out(p, "alice", &vm, "host-b", &d);
	policy_check_in(p, "alice", &vm, "host-a", &d);
	json_decref(policy_attest_refs(p, "host-b", scope, sizeof(scope)));
	policy_free(p);
	return 0;
}
