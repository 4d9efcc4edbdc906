/* guard.h - flood and abuse protection: limits on unauthenticated
 * connections (per source address and in total), a handshake rate per
 * source address, and a request rate per identity. Thread-safe: the API
 * loop and the migration data plane share one guard. Memory is bounded: a
 * fixed table of addresses and identities, the idlest entry recycled.
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
};

/* The defaults (docs/policy.md, "Flood protection"). */
void guard_default_limits(struct guard_limits *l);

struct guard;

int guard_new(const struct guard_limits *l, struct guard **out,
	      struct ferr *err);
void guard_free(struct guard *g);

/* A new, not yet authenticated connection from addr. Returns true and
 * counts it, or false with the reason in why. */
bool guard_conn_open(struct guard *g, const char *addr, char *why,
		     size_t len);

/* That connection authenticated or closed: stop counting it. */
void guard_conn_done(struct guard *g, const char *addr);

/* One API request by identity: true, or false (rate exceeded) with why. */
bool guard_request(struct guard *g, const char *identity, char *why,
		   size_t len);

/* Current counts, for tests and host info. */
unsigned guard_unauthenticated(struct guard *g);

#endif
