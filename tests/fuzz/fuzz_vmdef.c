/* libFuzzer target: VM definitions (vmdef_from_json; they come from the
 * API and from peers in a migration's prepare) with the migration
 * constraints a VM carries, their JSON round trip, and the qcow2 header
 * check of disk images. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "vm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_def def, again;
	struct ferr err;
	json_t *obj, *out;

	qcow2_header_check(data, size, &err);
	obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES,
			 NULL);
	if (!obj)
		return 0;
	if (vmdef_from_json(obj, &def, &err) == 0) {
		/* what ferryd writes back must parse to the same definition */
		out = vmdef_to_json(&def);
		if (!out || vmdef_from_json(out, &again, &err) != 0 ||
		    strcmp(def.uuid, again.uuid) != 0 ||
		    strcmp(def.disk, again.disk) != 0 ||
		    strcmp(def.backing, again.backing) != 0 ||
		    again.cons.present != def.cons.present ||
		    again.cons.ndest != def.cons.ndest ||
		    again.cons.nroles != def.cons.nroles)
			abort();
		json_decref(out);
		json_decref(vm_constraints_to_json(&def.cons, false));
	}
	json_decref(obj);
	return 0;
}
