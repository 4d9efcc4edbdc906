/* netdev.h - network namespaces and VM taps.
 *
 * A host's VM LAN may live in a network namespace of its own (the tests
 * and the demo simulate hosts that way; a real host uses its own namespace,
 * i.e. none is named). Work inside a namespace runs in a short-lived
 * thread that entered it with setns(2), so the caller's threads never
 * change namespace; sockets and taps keep the namespace they were created
 * in. Namespaces are named as by `ip netns`: /run/netns/NAME.
 */
#ifndef FERRY_NETDEV_H
#define FERRY_NETDEV_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"

#define NETDEV_IFNAME_MAX 15 /* IFNAMSIZ minus the NUL */
#define NETDEV_NETNS_MAX 63  /* a namespace's name */
#define NETDEV_MAC_STR_LEN 17

/* Is s a usable namespace name ([A-Za-z0-9._-], 1..NETDEV_NETNS_MAX, not
 * "." or "..")? */
bool netns_name_is_valid(const char *s);

/* Is s an interface name the kernel accepts (1..15 bytes, no '/', ':',
 * whitespace, not "." or "..")? */
bool ifname_is_valid(const char *s);

/* Parse "aa:bb:cc:dd:ee:ff" (hex, either case) into mac[6]. A multicast
 * or all-zero address is refused. 0 or -1. */
int mac_parse(const char *s, uint8_t mac[6]);

/* Format mac as lowercase "aa:bb:cc:dd:ee:ff" into out (18 bytes). */
void mac_format(const uint8_t mac[6], char out[NETDEV_MAC_STR_LEN + 1]);

/* Run fn(arg, err) inside namespace ns (NULL or "": the caller's own, run
 * directly). Returns what fn returns; a namespace that cannot be entered is
 * FERR_UNAVAILABLE naming it. */
int netns_call(const char *ns, int (*fn)(void *arg, struct ferr *err),
	       void *arg, struct ferr *err);

/* socket(domain, type, proto) created inside namespace ns (see
 * netns_call). Returns the fd or -1. */
int netns_socket(const char *ns, int domain, int type, int proto,
		 struct ferr *err);

/* A VM's tap. */
struct tap {
	int fd;                               /* for QEMU's -netdev tap,fd= */
	char ifname[NETDEV_IFNAME_MAX + 1];   /* as the kernel named it */
};

/* Create a tap in namespace ns (may be NULL) named after name_prefix
 * (at most 12 bytes; the kernel appends a number), give it a MAC derived
 * from the VM's (first byte 0xfe, so the bridge never takes the tap's
 * address as its own), attach it to bridge and bring it up. The tap is not
 * persistent: it disappears when the last fd (QEMU's) closes. On error
 * nothing is left behind. */
int tap_create(const char *ns, const char *bridge, const char *name_prefix,
	       const uint8_t vm_mac[6], struct tap *out, struct ferr *err);

#endif
