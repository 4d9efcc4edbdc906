/* ctwire.c - the connection-tracking context's records (ct_wire.h).
 * Pure. */
#include "ct_wire.h"
#include "le.h"

#include <string.h>

void fw_ct_encode_header(uint8_t out[FW_CT_HDR_LEN], uint32_t count)
{
	memset(out, 0, FW_CT_HDR_LEN);
	le_put32(out + FW_CT_HDR_OFF_MAGIC, FW_CT_MAGIC);
	le_put16(out + FW_CT_HDR_OFF_VERSION, FW_CT_VERSION);
	le_put32(out + FW_CT_HDR_OFF_COUNT, count);
}

void fw_ct_encode(uint8_t out[FW_CT_REC_LEN], const struct fw_ct_flow *f)
{
	memset(out, 0, FW_CT_REC_LEN);
	out[FW_CT_REC_OFF_FAMILY] = f->family;
	out[FW_CT_REC_OFF_PROTO] = f->proto;
	out[FW_CT_REC_OFF_TCP_STATE] = f->tcp_state;
	le_put32(out + FW_CT_REC_OFF_STATUS, f->status);
	le_put32(out + FW_CT_REC_OFF_TIMEOUT, f->timeout);
	le_put16(out + FW_CT_REC_OFF_SPORT, f->sport);
	le_put16(out + FW_CT_REC_OFF_DPORT, f->dport);
	out[FW_CT_REC_OFF_ICMP_TYPE] = f->icmp_type;
	out[FW_CT_REC_OFF_ICMP_CODE] = f->icmp_code;
	memcpy(out + FW_CT_REC_OFF_WSCALE, f->wscale, 2);
	memcpy(out + FW_CT_REC_OFF_TCP_FLAGS, f->tcp_flags, 2);
	memcpy(out + FW_CT_REC_OFF_SRC, f->src, 16);
	memcpy(out + FW_CT_REC_OFF_DST, f->dst, 16);
}

int fw_ct_decode_header(const uint8_t in[FW_CT_HDR_LEN], uint32_t *count,
			struct ferr *err)
{
	if (le_get32(in + FW_CT_HDR_OFF_MAGIC) != FW_CT_MAGIC)
		return ferr_set(err, FERR_INVALID,
				"connection context: bad magic");
	if (le_get16(in + FW_CT_HDR_OFF_VERSION) != FW_CT_VERSION)
		return ferr_set(err, FERR_INVALID,
				"connection context: version %u is not %u",
				(unsigned)le_get16(in + FW_CT_HDR_OFF_VERSION),
				FW_CT_VERSION);
	if (le_get16(in + FW_CT_HDR_OFF_FLAGS) ||
	    le_get32(in + FW_CT_HDR_OFF_RESERVED))
		return ferr_set(err, FERR_INVALID,
				"connection context: reserved bits set");
	*count = le_get32(in + FW_CT_HDR_OFF_COUNT);
	if (*count > FERRY_FW_CT_FLOWS_MAX)
		return ferr_set(err, FERR_INVALID,
				"connection context: %u flows; at most %d",
				(unsigned)*count, FERRY_FW_CT_FLOWS_MAX);
	return 0;
}

/* Is the address a unicast one a flow can have (not unspecified,
 * multicast, or IPv4 broadcast / loopback)? */
static bool addr_ok(uint8_t family, const uint8_t a[16])
{
	static const uint8_t zero[16];

	if (family == 4) {
		if (memcmp(a + 4, zero, 12) != 0 || !memcmp(a, zero, 4))
			return false;
		return a[0] != 127 && (a[0] & 0xf0) != 0xe0 &&
		       !(a[0] == 255 && a[1] == 255 && a[2] == 255 &&
			 a[3] == 255);
	}
	/* not ::, ::1 or multicast */
	return memcmp(a, zero, 15) != 0 && a[0] != 0xff;
}

int fw_ct_decode(const uint8_t in[FW_CT_REC_LEN], struct fw_ct_flow *f,
		 struct ferr *err)
{
	bool tcp, icmp;

	memset(f, 0, sizeof(*f));
	f->family = in[FW_CT_REC_OFF_FAMILY];
	f->proto = in[FW_CT_REC_OFF_PROTO];
	f->tcp_state = in[FW_CT_REC_OFF_TCP_STATE];
	f->status = le_get32(in + FW_CT_REC_OFF_STATUS);
	f->timeout = le_get32(in + FW_CT_REC_OFF_TIMEOUT);
	f->sport = le_get16(in + FW_CT_REC_OFF_SPORT);
	f->dport = le_get16(in + FW_CT_REC_OFF_DPORT);
	f->icmp_type = in[FW_CT_REC_OFF_ICMP_TYPE];
	f->icmp_code = in[FW_CT_REC_OFF_ICMP_CODE];
	memcpy(f->wscale, in + FW_CT_REC_OFF_WSCALE, 2);
	memcpy(f->tcp_flags, in + FW_CT_REC_OFF_TCP_FLAGS, 2);
	memcpy(f->src, in + FW_CT_REC_OFF_SRC, 16);
	memcpy(f->dst, in + FW_CT_REC_OFF_DST, 16);
	if (f->family != 4 && f->family != 6)
		return ferr_set(err, FERR_INVALID,
				"connection context: family %u",
				(unsigned)f->family);
	tcp = f->proto == 6;
	icmp = (f->proto == 1 && f->family == 4) ||
	       (f->proto == 58 && f->family == 6);
	if (!tcp && f->proto != 17 && !icmp)
		return ferr_set(err, FERR_INVALID,
				"connection context: protocol %u over IPv%u",
				(unsigned)f->proto, (unsigned)f->family);
	if (in[FW_CT_REC_OFF_RESERVED0] || le_get16(in + FW_CT_REC_OFF_RESERVED1))
		return ferr_set(err, FERR_INVALID,
				"connection context: reserved bytes set");
	if ((f->status & ~FW_CT_STATUS_KNOWN) || f->timeout == 0 ||
	    f->timeout > FERRY_FW_CT_TIMEOUT_MAX)
		return ferr_set(err, FERR_INVALID,
				"connection context: status %#x or timeout "
				"%u s out of range",
				(unsigned)f->status, (unsigned)f->timeout);
	if (tcp ? (f->tcp_state < 1 || f->tcp_state > FW_CT_TCP_STATE_MAX ||
		   f->wscale[0] > 14 || f->wscale[1] > 14 ||
		   (f->tcp_flags[0] & ~FW_CT_TCP_FLAGS) ||
		   (f->tcp_flags[1] & ~FW_CT_TCP_FLAGS))
		: (f->tcp_state || f->wscale[0] || f->wscale[1] ||
		   f->tcp_flags[0] || f->tcp_flags[1]))
		return ferr_set(err, FERR_INVALID,
				"connection context: TCP fields do not go "
				"with protocol %u",
				(unsigned)f->proto);
	if (icmp ? f->dport != 0
		 : (f->icmp_type || f->icmp_code || !f->sport || !f->dport))
		return ferr_set(err, FERR_INVALID,
				"connection context: ports or ICMP fields do "
				"not go with protocol %u",
				(unsigned)f->proto);
	if (!addr_ok(f->family, f->src) || !addr_ok(f->family, f->dst))
		return ferr_set(err, FERR_INVALID,
				"connection context: an address is not a "
				"unicast IPv%u address",
				(unsigned)f->family);
	return 0;
}

int fw_ct_check(const uint8_t *buf, size_t len, uint32_t *count,
		struct ferr *err)
{
	struct fw_ct_flow f;

	if (len < FW_CT_HDR_LEN)
		return ferr_set(err, FERR_INVALID,
				"connection context: %zu bytes, no header",
				len);
	if (fw_ct_decode_header(buf, count, err) < 0)
		return -1;
	if (len != FW_CT_HDR_LEN + (size_t)*count * FW_CT_REC_LEN)
		return ferr_set(err, FERR_INVALID,
				"connection context: %zu bytes for %u flows",
				len, (unsigned)*count);
	for (uint32_t i = 0; i < *count; i++)
		if (fw_ct_decode(buf + FW_CT_HDR_LEN +
					 (size_t)i * FW_CT_REC_LEN,
				 &f, err) < 0)
			return ferr_wrap(err, "flow %u", (unsigned)i);
	return 0;
}
