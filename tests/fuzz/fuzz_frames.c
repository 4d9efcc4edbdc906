/* libFuzzer target: the decoder of a compressed channel's frames
 * (frame.c, wire.h "Frames"). Input layout: the first byte sets how many
 * bytes each read hands the decoder (1..256, as a relay's reads would cut
 * the stream), the rest is the stream from the peer. Every frame must be
 * refused or expand to at most MIG_FRAME_RAW_MAX bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migrate_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct frame_dec d;
	static uint8_t *out;
	static int ready;
	struct ferr err;
	size_t step, pos = 1;

	if (!ready) {
		out = malloc(MIG_FRAME_RAW_MAX);
		if (!out || frame_dec_init(&d, &err) < 0)
			abort();
		ready = 1;
	}
	if (size < 1)
		return 0;
	step = (size_t)data[0] + 1;
	d.hlen = 0; /* a fresh stream for each input */
	while (pos < size) {
		size_t want, outlen = 0, n;
		uint8_t *p = frame_dec_space(&d, out, &want);

		n = want < step ? want : step;
		if (n > size - pos)
			n = size - pos;
		memcpy(p, data + pos, n);
		pos += n;
		if (frame_dec_advance(&d, n, out, &outlen, &err) < 0)
			break;
		if (outlen > MIG_FRAME_RAW_MAX)
			abort();
	}
	return 0;
}
