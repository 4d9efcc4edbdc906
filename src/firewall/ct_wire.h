/* ct_wire.h - the connection-tracking context a migration carries: the
 * tracked flows of one VM, exported by the source when the VM stops and
 * imported by the destination before it resumes the VM (docs/security.md,
 * "Security context"). The migration sends it on its context channel
 * (src/migrate/wire.h, MIG_FLAG_CONTEXT): a header, then `count` records.
 *
 * All fields little-endian and fixed-width, encoded and decoded byte by
 * byte. Only what a flow without NAT or helpers needs is carried: the
 * original tuple (the reply tuple is its inverse), protocol state, status
 * bits and the time left. The receiver tags every flow with the VM's own
 * tag (firewall.h, fw_tag), never with what the sender says.
 */
#ifndef FERRY_FW_CT_WIRE_H
#define FERRY_FW_CT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define FW_CT_MAGIC 0x58544346u /* "FCTX" read as little-endian bytes */
#define FW_CT_VERSION 1u

/* header, 16 bytes */
#define FW_CT_HDR_LEN 16
#define FW_CT_HDR_OFF_MAGIC 0     /* u32 */
#define FW_CT_HDR_OFF_VERSION 4   /* u16 */
#define FW_CT_HDR_OFF_FLAGS 6     /* u16, zero */
#define FW_CT_HDR_OFF_COUNT 8     /* u32: records that follow */
#define FW_CT_HDR_OFF_RESERVED 12 /* u32, zero */

/* one flow, 56 bytes */
#define FW_CT_REC_LEN 56
#define FW_CT_REC_OFF_FAMILY 0     /* u8: 4 or 6 */
#define FW_CT_REC_OFF_PROTO 1      /* u8: 6 tcp, 17 udp, 1 icmp, 58 icmpv6 */
#define FW_CT_REC_OFF_TCP_STATE 2  /* u8: tcp 1..9 (the kernel's), else 0 */
#define FW_CT_REC_OFF_RESERVED0 3  /* u8, zero */
#define FW_CT_REC_OFF_STATUS 4     /* u32: FW_CT_STATUS_* only */
#define FW_CT_REC_OFF_TIMEOUT 8    /* u32: s left, 1..FERRY_FW_CT_TIMEOUT_MAX */
#define FW_CT_REC_OFF_SPORT 12     /* u16: source port; icmp: id */
#define FW_CT_REC_OFF_DPORT 14     /* u16: destination port; icmp: 0 */
#define FW_CT_REC_OFF_ICMP_TYPE 16 /* u8, icmp only */
#define FW_CT_REC_OFF_ICMP_CODE 17 /* u8, icmp only */
#define FW_CT_REC_OFF_WSCALE 18    /* u8[2]: tcp window scale, orig/reply */
#define FW_CT_REC_OFF_TCP_FLAGS 20 /* u8[2]: FW_CT_TCP_FLAGS, orig/reply */
#define FW_CT_REC_OFF_RESERVED1 22 /* u16, zero */
#define FW_CT_REC_OFF_SRC 24       /* u8[16]: IPv4 in the first 4 */
#define FW_CT_REC_OFF_DST 40       /* u8[16] */

_Static_assert(FW_CT_HDR_OFF_RESERVED + 4 == FW_CT_HDR_LEN,
	       "the header's fields fill it");
_Static_assert(FW_CT_REC_OFF_DST + 16 == FW_CT_REC_LEN,
	       "a record's fields fill it");
_Static_assert(FW_CT_REC_OFF_TCP_FLAGS + 2 == FW_CT_REC_OFF_RESERVED1 &&
		       FW_CT_REC_OFF_RESERVED1 + 2 == FW_CT_REC_OFF_SRC &&
		       FW_CT_REC_OFF_SRC + 16 == FW_CT_REC_OFF_DST,
	       "records are packed");

#define FW_CT_STATUS_SEEN_REPLY 0x2u /* IPS_SEEN_REPLY */
#define FW_CT_STATUS_ASSURED 0x4u    /* IPS_ASSURED */
#define FW_CT_STATUS_KNOWN (FW_CT_STATUS_SEEN_REPLY | FW_CT_STATUS_ASSURED)
#define FW_CT_TCP_FLAGS 0x07u        /* window scale, SACK, close init */
#define FW_CT_TCP_STATE_MAX 9        /* TCP_CONNTRACK_SYN_SENT2 */

/* The largest message: header and FERRY_FW_CT_FLOWS_MAX records. */
#define FW_CT_MSG_MAX (FW_CT_HDR_LEN + \
		       (size_t)FERRY_FW_CT_FLOWS_MAX * FW_CT_REC_LEN)

struct fw_ct_flow {
	uint8_t family, proto, tcp_state;
	uint32_t status, timeout;
	uint16_t sport, dport;
	uint8_t icmp_type, icmp_code;
	uint8_t wscale[2], tcp_flags[2];
	uint8_t src[16], dst[16];
};

/* Encode the header for count records. */
void fw_ct_encode_header(uint8_t out[FW_CT_HDR_LEN], uint32_t count);

/* Encode one record. */
void fw_ct_encode(uint8_t out[FW_CT_REC_LEN], const struct fw_ct_flow *f);

/* Check a header: magic, version, zero fields, count at most
 * FERRY_FW_CT_FLOWS_MAX. FERR_INVALID naming what is wrong. */
int fw_ct_decode_header(const uint8_t in[FW_CT_HDR_LEN], uint32_t *count,
			struct ferr *err);

/* Decode and check one record: a known family and protocol, a state that
 * goes with it, only known status and flag bits, a timeout in range, no
 * unspecified, multicast or broadcast address, zero reserved bytes and
 * padding. FERR_INVALID naming the field. */
int fw_ct_decode(const uint8_t in[FW_CT_REC_LEN], struct fw_ct_flow *f,
		 struct ferr *err);

/* Check a whole message (header, length, every record). */
int fw_ct_check(const uint8_t *buf, size_t len, uint32_t *count,
		struct ferr *err);

#endif
