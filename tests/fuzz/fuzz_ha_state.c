/* libFuzzer target: the HA record of a protected VM (src/ha/record.c), as
 * a restarted ferryd reads it from <state_dir>/ha/<uuid>.json. A record
 * that parses must format to a text that parses to the same record. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ha_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ha_record r, back;
	struct ferr err;
	char *text = NULL;
	size_t len = 0;

	if (ha_record_parse((const char *)data, size, &r, &err) < 0)
		return 0;
	if (ha_record_format(&r, &text, &len, &err) < 0 ||
	    ha_record_parse(text, len, &back, &err) < 0 ||
	    memcmp(&r, &back, sizeof(r)) != 0)
		abort();
	free(text);
	return 0;
}
