/* net.c - a bridged VM's tap: the VM definition's bridge name mapped to
 * this host's bridge (ferryd.json "bridges"), the tap created there. */
#include "vm.h"
#include "netdev.h"

#include <stdio.h>

int vm_net_open(const struct ferryd_config *cfg, const struct vm_def *def,
		struct tap *tap, struct ferr *err)
{
	const struct bridge_map *b;
	char prefix[16];
	uint8_t mac[6];

	tap->fd = -1;
	tap->ifname[0] = '\0';
	if (def->net != NET_BRIDGE)
		return 0;
	b = config_bridge(cfg, def->bridge);
	if (!b)
		return ferr_set(err, FERR_CONFLICT,
				"host %s has no bridge \"%s\" (ferryd.json "
				"bridges)", cfg->host, def->bridge);
	if (mac_parse(def->mac, mac) < 0)
		return ferr_set(err, FERR_INVALID, "vm %s: bad MAC %s",
				def->name, def->mac);
	/* "fy" + the uuid's first 8 hex digits; the kernel adds a number */
	snprintf(prefix, sizeof(prefix), "fy%.8s", def->uuid);
	if (tap_create(b->netns, b->device, prefix, mac, tap, err) < 0)
		return ferr_wrap(err, "vm %s", def->name);
	return 0;
}
