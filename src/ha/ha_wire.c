/* ha_wire.c - checkpoint record headers (ha_wire.h). Pure: unit-tested and
 * fuzzed. */
#include "ha_wire.h"
#include "le.h"

void ha_rec_encode(uint8_t out[HA_REC_LEN], const struct ha_rec *r)
{
	le_put32(out + HA_REC_OFF_MAGIC, HA_MAGIC);
	le_put16(out + HA_REC_OFF_VERSION, HA_VERSION);
	le_put16(out + HA_REC_OFF_TYPE, r->type);
	le_put64(out + HA_REC_OFF_SEQ, r->seq);
	le_put64(out + HA_REC_OFF_ARG, r->arg);
	le_put32(out + HA_REC_OFF_LEN, r->len);
	le_put32(out + HA_REC_OFF_RESERVED, 0);
}

int ha_rec_decode(const uint8_t in[HA_REC_LEN], struct ha_rec *r,
		  struct ferr *err)
{
	bool ok;

	if (le_get32(in + HA_REC_OFF_MAGIC) != HA_MAGIC)
		return ferr_set(err, FERR_INVALID, "checkpoint record: bad magic");
	if (le_get16(in + HA_REC_OFF_VERSION) != HA_VERSION)
		return ferr_set(err, FERR_INVALID,
				"checkpoint record: version %u, expected %u",
				(unsigned)le_get16(in + HA_REC_OFF_VERSION),
				HA_VERSION);
	if (le_get32(in + HA_REC_OFF_RESERVED) != 0)
		return ferr_set(err, FERR_INVALID,
				"checkpoint record: reserved bytes not zero");
	r->type = le_get16(in + HA_REC_OFF_TYPE);
	r->seq = le_get64(in + HA_REC_OFF_SEQ);
	r->arg = le_get64(in + HA_REC_OFF_ARG);
	r->len = le_get32(in + HA_REC_OFF_LEN);
	if ((r->seq == 0) != (r->type == HA_REC_HELLO))
		return ferr_set(err, FERR_INVALID,
				"checkpoint record: sequence number %llu for "
				"type %u",
				(unsigned long long)r->seq, (unsigned)r->type);
	switch (r->type) {
	case HA_REC_BEGIN:
		ok = r->len == 0 && r->arg > 0 && r->arg <= HA_RAM_MAX &&
		     r->arg % HA_PAGE_SIZE == 0;
		break;
	case HA_REC_ACK:
		ok = r->len == 0 && r->arg <= HA_ACK_REFUSED;
		break;
	case HA_REC_HELLO:
		ok = r->len == 0;
		break;
	case HA_REC_PAGES:
		ok = r->len > 0 && r->len % HA_PAGE_SIZE == 0 &&
		     r->len / HA_PAGE_SIZE <= HA_PAGES_PER_REC &&
		     r->arg < HA_RAM_MAX / HA_PAGE_SIZE;
		break;
	case HA_REC_DISK:
		ok = r->len > 0 && r->len <= HA_DISK_CHUNK &&
		     r->len % HA_SECTOR == 0 && r->arg % HA_SECTOR == 0 &&
		     r->arg < HA_DISK_MAX && r->len <= HA_DISK_MAX - r->arg;
		break;
	case HA_REC_DEVICE:
		ok = r->len > 0 && r->len <= HA_DEVSTATE_MAX;
		break;
	case HA_REC_COMMIT:
		ok = r->len == HA_DIGEST_LEN;
		break;
	default:
		return ferr_set(err, FERR_INVALID,
				"checkpoint record: unknown type %u",
				(unsigned)r->type);
	}
	if (!ok)
		return ferr_set(err, FERR_INVALID,
				"checkpoint record: type %u with length %u / "
				"argument %llu out of range",
				(unsigned)r->type, (unsigned)r->len,
				(unsigned long long)r->arg);
	return 0;
}

void ha_fence_encode(uint8_t out[HA_FENCE_MSG_LEN], uint16_t cmd,
		     uint64_t deadline_ms)
{
	le_put32(out + HA_FENCE_OFF_MAGIC, HA_FENCE_MAGIC);
	le_put16(out + HA_FENCE_OFF_VERSION, HA_FENCE_VERSION);
	le_put16(out + HA_FENCE_OFF_CMD, cmd);
	le_put64(out + HA_FENCE_OFF_DEADLINE, deadline_ms);
}

int ha_fence_decode(const uint8_t in[HA_FENCE_MSG_LEN], uint16_t *cmd,
		    uint64_t *deadline_ms, struct ferr *err)
{
	if (le_get32(in + HA_FENCE_OFF_MAGIC) != HA_FENCE_MAGIC ||
	    le_get16(in + HA_FENCE_OFF_VERSION) != HA_FENCE_VERSION)
		return ferr_set(err, FERR_INVALID,
				"fence message: bad magic or version");
	*cmd = le_get16(in + HA_FENCE_OFF_CMD);
	*deadline_ms = le_get64(in + HA_FENCE_OFF_DEADLINE);
	if (*cmd == HA_FENCE_ARM ||
	    (*cmd == HA_FENCE_DISARM && *deadline_ms == 0))
		return 0;
	return ferr_set(err, FERR_INVALID, "fence message: command %u",
			(unsigned)*cmd);
}
