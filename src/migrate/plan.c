/* plan.c - how a migration's bytes travel: QEMU's one main stream or
 * multifd (and how many channels), and whether the channels carry frames
 * so that the relays can compress. The rule and the measurements behind
 * it are in docs/performance.md, "Choosing the path". */
#include "migrate_int.h"

#include <arpa/inet.h>
#include <string.h>

/* multifd only with this many host CPUs beyond the VM's vCPUs: each
 * channel needs a QEMU thread and a relay thread of its own, and on fewer
 * cores extra channels measured slower than one stream */
#define PLAN_MULTIFD_MIN_SPARE 4
#define PLAN_MULTIFD_AUTO_MAX 4

const char *mig_compress_name(enum mig_compress c)
{
	switch (c) {
	case MIG_COMPRESS_ON:
		return "on";
	case MIG_COMPRESS_OFF:
		return "off";
	default:
		return "auto";
	}
}

void mig_plan_make(const struct mig_plan_in *in, struct mig_plan *out)
{
	unsigned spare = in->host_cpus > in->vcpus ? in->host_cpus - in->vcpus
						   : 0;

	memset(out, 0, sizeof(*out));
	if (in->postcopy) {
		out->why = "post-copy: QEMU runs it on one stream";
	} else if (in->channels == 1) {
		out->why = "one stream (--channels 1)";
	} else if (in->channels > 1) {
		out->multifd = (unsigned)in->channels;
		out->why = "multifd (--channels)";
	} else if (spare >= PLAN_MULTIFD_MIN_SPARE) {
		out->multifd = spare / 2 < PLAN_MULTIFD_AUTO_MAX
				       ? spare / 2
				       : PLAN_MULTIFD_AUTO_MAX;
		out->why = "multifd: spare cores for a thread pair per channel";
	} else {
		out->why = "one stream: too few spare cores for multifd";
	}
	switch (in->compress) {
	case MIG_COMPRESS_ON:
		out->z = RELAY_Z_ON;
		break;
	case MIG_COMPRESS_OFF:
		out->z = RELAY_Z_OFF;
		break;
	default:
		/* a destination on this host has no link to save */
		out->z = in->peer_local ? RELAY_Z_OFF : RELAY_Z_AUTO;
	}
}

bool mig_addr_is_loopback(const char *addr)
{
	struct in6_addr a6;
	struct in_addr a4;

	if (inet_pton(AF_INET, addr, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, addr, &a6) != 1)
		return false;
	if (IN6_IS_ADDR_V4MAPPED(&a6))
		return a6.s6_addr[12] == 127;
	return IN6_IS_ADDR_LOOPBACK(&a6);
}

json_t *mig_plan_json(const struct mig_plan *p, enum mig_compress c)
{
	return json_pack("{s:i, s:s, s:s, s:b}", "multifd", (int)p->multifd,
			 "why", p->why, "compress", mig_compress_name(c),
			 "frames", p->z != RELAY_Z_OFF);
}

bool mig_plan_fallback(struct mig_plan *p, enum mig_compress c,
		       const struct ferr *err)
{
	/* a destination older than frames refuses the unknown field; only
	 * an automatic choice gives way (an explicit "on" fails) */
	if (c != MIG_COMPRESS_AUTO || p->z == RELAY_Z_OFF ||
	    !strstr(err->msg, "unknown field \"compress\""))
		return false;
	p->z = RELAY_Z_OFF;
	return true;
}
