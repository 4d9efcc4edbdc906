/* net.c - a bridged VM's tap: the VM definition's bridge name mapped to
 * this host's bridge (ferryd.json "bridges"), the tap created there; the
 * tap of a running QEMU found again after a restart. */
#include "vm.h"
#include "netdev.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

int vm_net_find_tap(pid_t pid, char out[16])
{
	char path[64], link[64];
	struct dirent *de;
	DIR *d;
	int rc = -1;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while (rc < 0 && (de = readdir(d))) {
		char fdinfo[64], *text = NULL, *iff;
		size_t len = 0;
		ssize_t n;
		struct ferr err;

		snprintf(path, sizeof(path), "/proc/%d/fd/%.16s", (int)pid,
			 de->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (strcmp(link, "/dev/net/tun") != 0)
			continue;
		/* a tun descriptor's fdinfo names its interface: "iff:\tNAME" */
		snprintf(fdinfo, sizeof(fdinfo), "/proc/%d/fdinfo/%.16s",
			 (int)pid, de->d_name);
		if (file_read_all(fdinfo, 4096, &text, &len, &err) < 0)
			continue;
		iff = strstr(text, "iff:");
		if (iff && sscanf(iff + 4, "%15s", out) == 1 &&
		    ifname_is_valid(out))
			rc = 0;
		free(text);
	}
	closedir(d);
	return rc;
}
