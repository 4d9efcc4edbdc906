/* tap.c - VM taps on a bridge, and MAC addresses. */
#define _GNU_SOURCE
#include "netdev.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <net/if_arp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define TUN_DEV "/dev/net/tun"
#define TAP_PREFIX_MAX 12 /* + "%d" leaves room for 1000 taps */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int mac_parse(const char *s, uint8_t mac[6])
{
	uint8_t m[6];
	bool zero = true;

	if (strlen(s) != NETDEV_MAC_STR_LEN)
		return -1;
	for (int i = 0; i < 6; i++) {
		int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);

		if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
			return -1;
		m[i] = (uint8_t)(hi << 4 | lo);
		zero = zero && !m[i];
	}
	if (zero || (m[0] & 1))
		return -1;
	memcpy(mac, m, 6);
	return 0;
}

void mac_format(const uint8_t mac[6], char out[NETDEV_MAC_STR_LEN + 1])
{
	snprintf(out, NETDEV_MAC_STR_LEN + 1, "%02x:%02x:%02x:%02x:%02x:%02x",
		 mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

struct tap_job {
	const char *bridge;
	const char *prefix;
	const uint8_t *vm_mac;
	struct tap *out;
};

/* In the namespace: open the tap, set its MAC, join the bridge, up. */
static int tap_job_run(void *p, struct ferr *err)
{
	struct tap_job *j = p;
	struct ifreq ifr;
	int fd, s = -1, ifindex;

	fd = open(TUN_DEV, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return ferr_set(err, FERR_UNAVAILABLE, "%s: %s", TUN_DEV,
				strerror(errno));
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s%%d", j->prefix);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		ferr_set(err, FERR_UNAVAILABLE, "cannot create a tap: %s",
			 strerror(errno));
		goto fail;
	}
	snprintf(j->out->ifname, sizeof(j->out->ifname), "%s", ifr.ifr_name);
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		ferr_set(err, FERR_IO, "socket: %s", strerror(errno));
		goto fail;
	}
	ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
	memcpy(ifr.ifr_hwaddr.sa_data, j->vm_mac, 6);
	ifr.ifr_hwaddr.sa_data[0] = (char)0xfe;
	if (ioctl(s, SIOCSIFHWADDR, &ifr) < 0 ||
	    ioctl(s, SIOCGIFINDEX, &ifr) < 0) {
		ferr_set(err, FERR_IO, "tap %s: %s", j->out->ifname,
			 strerror(errno));
		goto fail;
	}
	ifindex = ifr.ifr_ifindex;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", j->bridge);
	ifr.ifr_ifindex = ifindex;
	if (ioctl(s, SIOCBRADDIF, &ifr) < 0) {
		ferr_set(err, FERR_UNAVAILABLE,
			 "cannot add tap %s to bridge %s: %s", j->out->ifname,
			 j->bridge, strerror(errno));
		goto fail;
	}
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", j->out->ifname);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0 ||
	    (ifr.ifr_flags |= IFF_UP, ioctl(s, SIOCSIFFLAGS, &ifr) < 0)) {
		ferr_set(err, FERR_IO, "cannot bring tap %s up: %s",
			 j->out->ifname, strerror(errno));
		goto fail;
	}
	close(s);
	j->out->fd = fd;
	return 0;
fail:
	if (s >= 0)
		close(s);
	close(fd); /* a non-persistent tap goes with its last fd */
	return -1;
}

int tap_create(const char *ns, const char *bridge, const char *name_prefix,
	       const uint8_t vm_mac[6], struct tap *out, struct ferr *err)
{
	struct tap_job j = { bridge, name_prefix, vm_mac, out };

	out->fd = -1;
	out->ifname[0] = '\0';
	if (!ifname_is_valid(bridge))
		return ferr_set(err, FERR_INVALID,
				"\"%.32s\" is not an interface name", bridge);
	if (!*name_prefix || strlen(name_prefix) > TAP_PREFIX_MAX ||
	    strchr(name_prefix, '%') || !ifname_is_valid(name_prefix))
		return ferr_set(err, FERR_INVALID,
				"bad tap name prefix \"%.32s\"", name_prefix);
	return netns_call(ns, tap_job_run, &j, err);
}
