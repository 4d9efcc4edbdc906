/* libFuzzer target: ferry-detect's Ethernet frame parser (RARP, ARP). */
#include <stdint.h>
#include <string.h>

#include "detect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frame_info fi;
	enum frame_kind k = frame_parse(data, size, &fi);

	/* a frame that announces something carries a unicast MAC or an IP */
	if (k == FRAME_OTHER && (fi.ip || fi.mac[0]))
		__builtin_trap();
	return 0;
}
