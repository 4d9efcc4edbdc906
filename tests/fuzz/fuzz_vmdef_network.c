/* libFuzzer target: VM definitions (vmdef_from_json), with the network
 * object; an accepted definition must round-trip through vmdef_to_json. */
#include <stdint.h>
#include <string.h>

#include "vm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_def d, d2;
	struct ferr err;
	json_t *o = json_parse_object((const char *)data, size, "fuzz", &err);
	json_t *back;

	if (!o)
		return 0;
	if (vmdef_from_json(o, &d, &err) == 0) {
		back = vmdef_to_json(&d);
		if (!back || vmdef_from_json(back, &d2, &err) < 0 ||
		    d2.net != d.net || strcmp(d2.mac, d.mac) ||
		    strcmp(d2.bridge, d.bridge))
			__builtin_trap();
		json_decref(back);
	}
	json_decref(o);
	return 0;
}
