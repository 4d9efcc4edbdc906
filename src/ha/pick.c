/* pick.c - the order in which a VM's new backup is chosen (ha_int.h):
 * pure, so the unit tests check it alone. */
#include "ha_int.h"

#include <string.h>

static bool listed(const struct ha_peer_cfg *out, size_t n, const char *host)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(out[i].host, host))
			return true;
	return false;
}

static size_t add(struct ha_peer_cfg *out, size_t n, size_t max,
		  const struct ha_peer_cfg *c, const char *self)
{
	if (n >= max || !c->host[0] || !strcmp(c->host, self) ||
	    listed(out, n, c->host))
		return n;
	out[n] = *c;
	return n + 1;
}

size_t ha_cand_order(const struct ha_peer_cfg *peers, size_t n,
		     const struct ha_peer_cfg *prefer, const char *self,
		     const char *last, struct ha_peer_cfg *out, size_t max)
{
	size_t k = 0;

	if (prefer)
		k = add(out, k, max, prefer, self);
	for (size_t i = 0; i < n; i++)
		if (!last || strcmp(peers[i].host, last) != 0)
			k = add(out, k, max, &peers[i], self);
	for (size_t i = 0; last && i < n; i++)
		if (!strcmp(peers[i].host, last))
			k = add(out, k, max, &peers[i], self);
	return k;
}
