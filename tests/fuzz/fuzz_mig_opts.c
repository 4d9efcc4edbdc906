/* libFuzzer target: the options of a migration request
 * (mig_opts_from_json, POST /v1/vms/NAME/migrate). */
#include <stdint.h>
#include <stdlib.h>

#include "migrate_int.h"  /* the internal parsers under test */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mig_opts o;
	struct ferr err;
	json_t *obj = json_loadb((const char *)data, size,
				 JSON_REJECT_DUPLICATES, NULL);

	if (!obj)
		return 0;
	if (mig_opts_from_json(obj, &o, &err) == 0 && !o.to[0])
		abort(); /* a destination is required */
	json_decref(obj);
	return 0;
}
