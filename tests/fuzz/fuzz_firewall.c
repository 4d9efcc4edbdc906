/* libFuzzer target: firewall rules (rules.c; they come from the API, VM
 * definitions on disk, the cluster policy and a migration's prepare). A
 * firewall the parser accepts must have a canonical JSON that parses back
 * to the same rules with the same digest, and a canonical JSON that is its
 * own canonical form. The same input is also tried as the policy's
 * "firewall" object, and fw_effective run on what both give. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "firewall.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fw_policy p, q, out;
	struct fw_cluster c;
	struct ferr err;
	char d1[FW_DIGEST_HEX + 1], d2[FW_DIGEST_HEX + 1];
	json_t *obj, *j, *k;

	obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES,
			 NULL);
	if (!obj)
		return 0;
	memset(&p, 0, sizeof(p));
	if (fw_policy_from_json(obj, "vm.firewall", &p, &err) == 0) {
		if (!p.present || p.nrules > FERRY_FW_RULES_MAX)
			abort();
		j = fw_policy_to_json(&p);
		if (!j || fw_policy_from_json(j, "again", &q, &err) != 0 ||
		    memcmp(&p, &q, sizeof(p)) != 0)
			abort();
		k = fw_policy_to_json(&q);
		if (!k || !json_equal(j, k))
			abort();
		fw_policy_digest(&p, d1);
		fw_policy_digest(&q, d2);
		if (strlen(d1) != FW_DIGEST_HEX || strcmp(d1, d2) != 0)
			abort();
		json_decref(j);
		json_decref(k);
	} else if (err.code != FERR_INVALID || !err.msg[0]) {
		abort();
	}
	if (fw_cluster_from_json(obj, "policy.firewall", &c, &err) == 0) {
		if (c.def.present && c.deny_accept && c.def.def == FW_ACCEPT)
			abort();
		if (fw_effective(&c, &p, &out, &err) == 0) {
			if (c.required && !out.present)
				abort();
		} else if (err.code != FERR_FORBIDDEN) {
			abort();
		}
	} else if (err.code != FERR_INVALID || !err.msg[0]) {
		abort();
	}
	json_decref(obj);
	return 0;
}
