/* libFuzzer target: the controller's checks of a host's load report
 * (ctl_report_parse), the JSON every host sends each round. */
#include <stdint.h>
#include <stdlib.h>

#include "ctl_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_report r;
	struct ferr err;
	json_t *j = json_loadb((const char *)data, size,
			       JSON_REJECT_DUPLICATES, NULL);

	if (!j)
		return 0;
	if (ctl_report_parse(j, "host", &r, &err) == 0)
		ctl_report_clear(&r);
	json_decref(j);
	return 0;
}
