/* libFuzzer target: a data-plane channel's HELLO (mig_hello_parse and its
 * MAC, what a destination reads from a source) and ACK (mig_ack_check,
 * what a source reads back). Input: a mode byte (bit 0: ACK, else HELLO;
 * bit 1: expect another channel than the ACK names), then the message.
 * The key and exporter are fixed, so the seeds carry valid MACs. */
#include <stdint.h>
#include <string.h>

#include "migrate_int.h"  /* the internal parsers under test */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[MIG_KEY_LEN] = { 1, 2, 3 };
	static const uint8_t exporter[MIG_EXPORTER_LEN] = { 4, 5, 6 };
	uint8_t msg[MIG_HELLO_LEN] = { 0 };
	struct mig_hello h;
	struct ferr err;
	uint16_t channel;

	if (size < 1)
		return 0;
	memcpy(msg, data + 1,
	       size - 1 < sizeof(msg) ? size - 1 : sizeof(msg));
	if (data[0] & 1) {
		channel = (uint16_t)(msg[MIG_ACK_OFF_CHANNEL] |
				     msg[MIG_ACK_OFF_CHANNEL + 1] << 8);
		if (data[0] & 2)
			channel++;
		mig_ack_check(msg, channel, key, exporter, &err);
	} else if (mig_hello_parse(msg, &h, &err) == 0) {
		mig_hello_mac_ok(msg, key, exporter);
	}
	return 0;
}
