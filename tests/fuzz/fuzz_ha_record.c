/* libFuzzer target: checkpoint record headers (src/ha/ha_wire.h) as the
 * backup and the primary read them from a peer. The input is a sequence
 * of 32-byte headers; every header that decodes must encode back to the
 * same bytes. The same input, read as 16-byte fence agent messages (what
 * an agent reads from its socket), must hold to the same rule. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ha_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (size_t off = 0; off + HA_REC_LEN <= size; off += HA_REC_LEN) {
		struct ha_rec r;
		struct ferr err;
		uint8_t again[HA_REC_LEN];

		if (ha_rec_decode(data + off, &r, &err) < 0)
			continue;
		ha_rec_encode(again, &r);
		if (memcmp(again, data + off, HA_REC_LEN) != 0)
			abort();
	}
	for (size_t off = 0; off + HA_FENCE_MSG_LEN <= size;
	     off += HA_FENCE_MSG_LEN) {
		uint8_t again[HA_FENCE_MSG_LEN];
		struct ferr err;
		uint64_t d;
		uint16_t cmd;

		if (ha_fence_decode(data + off, &cmd, &d, &err) < 0)
			continue;
		ha_fence_encode(again, cmd, d);
		if (memcmp(again, data + off, HA_FENCE_MSG_LEN) != 0)
			abort();
	}
	return 0;
}
