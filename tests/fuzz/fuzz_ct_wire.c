/* libFuzzer target: the connection-tracking context a migration's source
 * sends (ctwire.c, ct_wire.h): the input is the message as the destination
 * reads it. A message fw_ct_check accepts has the length its header says,
 * and every record re-encodes to the same bytes (so nothing the decoder
 * ignores can ride along); each record is also decoded on its own, as
 * the importer does. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ct_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ferr err;
	struct fw_ct_flow f;
	uint8_t again[FW_CT_REC_LEN], hdr[FW_CT_HDR_LEN];
	uint32_t count = 0, n;
	size_t off;

	if (fw_ct_check(data, size, &count, &err) == 0) {
		if (count > FERRY_FW_CT_FLOWS_MAX ||
		    size != FW_CT_HDR_LEN + (size_t)count * FW_CT_REC_LEN)
			abort();
		fw_ct_encode_header(hdr, count);
		if (memcmp(hdr, data, FW_CT_HDR_LEN) != 0)
			abort();
	} else if (err.code != FERR_INVALID || !err.msg[0]) {
		abort();
	}
	if (size >= FW_CT_HDR_LEN &&
	    fw_ct_decode_header(data, &n, &err) == 0 &&
	    n > FERRY_FW_CT_FLOWS_MAX)
		abort();
	/* every record slot, whatever the header says */
	for (off = FW_CT_HDR_LEN; off + FW_CT_REC_LEN <= size;
	     off += FW_CT_REC_LEN) {
		if (fw_ct_decode(data + off, &f, &err) != 0)
			continue;
		fw_ct_encode(again, &f);
		if (memcmp(again, data + off, FW_CT_REC_LEN) != 0)
			abort();
	}
	return 0;
}
