/* libFuzzer target: the VM definition parser, with the migration
 * constraints a VM carries (src/vm/constraints.c), and their JSON forms. */
#include <stdint.h>

#include "vm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_def def, again;
	struct ferr err;
	json_t *o = json_loadb((const char *)data, size,
			       JSON_REJECT_DUPLICATES, NULL);
	json_t *j;

	if (!o)
		return 0;
	if (vmdef_from_json(o, &def, &err) == 0) {
		/* what a host sends on must parse back to the same */
		j = vmdef_to_json(&def);
		if (!j || vmdef_from_json(j, &again, &err) < 0 ||
		    again.cons.present != def.cons.present ||
		    again.cons.ndest != def.cons.ndest ||
		    again.cons.nroles != def.cons.nroles)
			__builtin_trap();
		json_decref(j);
		json_decref(vm_constraints_to_json(&def.cons, false));
	}
	json_decref(o);
	return 0;
}
