/* guard.h - flood and abuse protection: limits on unauthenticated
 * connections (per source address and in total), a handshake rate per
 * source address, and a request rate per identity. Thread-safe: the API
 * loop and the migration data plane share one guard. Memory is bounded: a
 * fixed table of addresses and identities, the idlest entry recycled.
 *
 * A source is an IPv4 address or an IPv6 /64 (one host usually holds a
 * whole /64, so counting single IPv6 addresses would not limit it);
 * IPv4-mapped IPv6 addresses count as their IPv4 address.
 */
#ifndef FERRY_GUARD_H
#define FERRY_GUARD_H

#include <stdbool.h>
#include <stddef.h>

#include "common.h"

struct guard_limits {
	unsigned conns_per_addr;   /* unauthenticated connections, per source */
	unsigned conns_total;      /* unauthenticated connections, in all */
	unsigned handshakes_per_s; /* new connections per source per second */
	unsigned handshake_burst;
	unsigned requests_per_s;   /* API requests per identity per second */
	unsigned request_burst;
	unsigned deadline_s;       /* accept -> handshake and request or HELLO;
				      enforced by the listeners */
};

/* The defaults (docs/policy.md, "Flood protection"). */
void guard_default_limits(struct guard_limits *l);

struct guard;

int guard_new(const struct guard_limits *l, struct guard **out,
	      struct ferr *err);
void guard_free(struct guard *g);

/* A new, not yet authenticated connection from addr (numeric IPv4 or IPv6),
 * counted from its accept(). Returns true and counts it against addr's
 * source (see above), or false with the reason in why. */
bool guard_conn_open(struct guard *g, const char *addr, char *why,
		     size_t len);

/* That connection authenticated or closed: stop counting it. */
void guard_conn_done(struct guard *g, const char *addr);

/* The source addr counts against: addr itself for IPv4, "P::/64" for an
 * IPv6 address, the IPv4 address of an IPv4-mapped one. addr as is when it
 * is not numeric. */
void guard_source(const char *addr, char *out, size_t len);

/* One API request by identity: true, or false (rate exceeded) with why. */
bool guard_request(struct guard *g, const char *identity, char *why,
		   size_t len);

/* Current counts, for tests and host info. */
unsigned guard_unauthenticated(struct guard *g);

#endif
