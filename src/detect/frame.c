/* frame.c - Ethernet frames that announce a VM: RARP self-announcements,
 * gratuitous ARPs and ARP replies (detect.h). */
#include "detect.h"

#include <string.h>

#define ETH_HDR_LEN 14
#define VLAN_TAG_LEN 4
#define ETHERTYPE_ARP 0x0806
#define ETHERTYPE_RARP 0x8035
#define ETHERTYPE_VLAN 0x8100
#define ARP_LEN 28            /* Ethernet/IPv4 ARP body */
#define ARP_HTYPE_ETHER 1
#define ARP_PTYPE_IPV4 0x0800
#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY 2
#define ARP_OP_RREQUEST 3     /* RARP "request reverse" */

static unsigned be16(const uint8_t *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

enum frame_kind frame_parse(const uint8_t *buf, size_t len,
			    struct frame_info *out)
{
	size_t off = ETH_HDR_LEN;
	unsigned type, op;
	const uint8_t *a;
	uint32_t spa, tpa;

	memset(out, 0, sizeof(*out));
	if (len < ETH_HDR_LEN)
		return FRAME_OTHER;
	type = be16(buf + 12);
	if (type == ETHERTYPE_VLAN) {
		if (len < ETH_HDR_LEN + VLAN_TAG_LEN)
			return FRAME_OTHER;
		type = be16(buf + 16);
		off += VLAN_TAG_LEN;
	}
	if ((type != ETHERTYPE_ARP && type != ETHERTYPE_RARP) ||
	    len - off < ARP_LEN)
		return FRAME_OTHER;
	a = buf + off;
	if (be16(a) != ARP_HTYPE_ETHER || be16(a + 2) != ARP_PTYPE_IPV4 ||
	    a[4] != 6 || a[5] != 4)
		return FRAME_OTHER;
	op = be16(a + 6);
	memcpy(&spa, a + 14, 4);
	memcpy(&tpa, a + 24, 4);
	if (type == ETHERTYPE_RARP && op == ARP_OP_RREQUEST)
		out->kind = FRAME_RARP;
	else if (type == ETHERTYPE_ARP &&
		 (op == ARP_OP_REQUEST || op == ARP_OP_REPLY) && spa &&
		 spa == tpa)
		out->kind = FRAME_GARP;
	else if (type == ETHERTYPE_ARP && op == ARP_OP_REPLY && spa)
		out->kind = FRAME_ARP_REPLY;
	else
		return FRAME_OTHER; /* *out stays zeroed */
	memcpy(out->mac, a + 8, 6);
	if (out->kind != FRAME_RARP)
		out->ip = spa;
	return out->kind;
}
