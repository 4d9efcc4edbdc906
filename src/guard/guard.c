/* guard.c - token buckets and connection counts in a bounded table. */
#include "guard.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD_SLOTS 1024          /* addresses and identities tracked */
#define GUARD_KEY_MAX 64

enum slot_kind { SLOT_FREE, SLOT_ADDR, SLOT_IDENTITY };

struct slot {
	enum slot_kind kind;
	char key[GUARD_KEY_MAX];
	unsigned conns;     /* open unauthenticated connections */
	double tokens;      /* token bucket */
	uint64_t refill_ms; /* last refill */
	uint64_t used_ms;   /* last use, for recycling */
};

struct guard {
	struct guard_limits l;
	pthread_mutex_t lock;
	unsigned total;     /* unauthenticated connections */
	struct slot slots[GUARD_SLOTS];
};

void guard_default_limits(struct guard_limits *l)
{
	l->conns_per_addr = FERRY_GUARD_CONNS_PER_ADDR;
	l->conns_total = FERRY_GUARD_CONNS_TOTAL;
	l->handshakes_per_s = FERRY_GUARD_HANDSHAKES_PER_S;
	l->handshake_burst = FERRY_GUARD_HANDSHAKE_BURST;
	l->requests_per_s = FERRY_GUARD_REQUESTS_PER_S;
	l->request_burst = FERRY_GUARD_REQUEST_BURST;
	l->deadline_s = FERRY_GUARD_DEADLINE_S;
}

void guard_source(const char *addr, char *out, size_t len)
{
	struct in6_addr a6;
	char text[INET6_ADDRSTRLEN];

	snprintf(out, len, "%s", addr);
	if (!strchr(addr, ':') || inet_pton(AF_INET6, addr, &a6) != 1)
		return;
	if (IN6_IS_ADDR_V4MAPPED(&a6)) {
		inet_ntop(AF_INET, &a6.s6_addr[12], text, sizeof(text));
		snprintf(out, len, "%s", text);
		return;
	}
	memset(&a6.s6_addr[8], 0, 8);
	inet_ntop(AF_INET6, &a6, text, sizeof(text));
	snprintf(out, len, "%s/64", text);
}

int guard_new(const struct guard_limits *l, struct guard **out,
	      struct ferr *err)
{
	struct guard *g = calloc(1, sizeof(*g));

	if (!g)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	g->l = *l;
	pthread_mutex_init(&g->lock, NULL);
	*out = g;
	return 0;
}

void guard_free(struct guard *g)
{
	if (!g)
		return;
	pthread_mutex_destroy(&g->lock);
	free(g);
}

/* The slot of (kind, key), created (recycling the idlest slot without open
 * connections) when absent; NULL when every slot holds connections. Lock
 * held. */
static struct slot *slot_get(struct guard *g, enum slot_kind kind,
			     const char *key, double burst, uint64_t now)
{
	struct slot *victim = NULL;

	for (unsigned i = 0; i < GUARD_SLOTS; i++) {
		struct slot *s = &g->slots[i];

		if (s->kind == kind && !strncmp(s->key, key, GUARD_KEY_MAX - 1))
			return s;
		if (s->conns != 0 || (victim && victim->kind == SLOT_FREE))
			continue;
		if (!victim || s->kind == SLOT_FREE ||
		    s->used_ms < victim->used_ms)
			victim = s;
	}
	if (!victim)
		return NULL;
	memset(victim, 0, sizeof(*victim));
	victim->kind = kind;
	snprintf(victim->key, sizeof(victim->key), "%s", key);
	victim->tokens = burst;
	victim->refill_ms = now;
	return victim;
}

/* Take one token from s (rate per second, burst), refilling first. */
static bool take_token(struct slot *s, double rate, double burst,
		       uint64_t now)
{
	if (now > s->refill_ms) {
		s->tokens += rate * (double)(now - s->refill_ms) / 1000.0;
		if (s->tokens > burst)
			s->tokens = burst;
		s->refill_ms = now;
	}
	s->used_ms = now;
	if (s->tokens < 1.0)
		return false;
	s->tokens -= 1.0;
	return true;
}

bool guard_conn_open(struct guard *g, const char *addr, char *why,
		     size_t len)
{
	uint64_t now = now_ms();
	char src[GUARD_KEY_MAX];
	struct slot *s;
	bool ok = false;

	guard_source(addr, src, sizeof(src));
	addr = src;
	pthread_mutex_lock(&g->lock);
	if (g->total >= g->l.conns_total) {
		snprintf(why, len,
			 "%u unauthenticated connections already (limit %u)",
			 g->total, g->l.conns_total);
		goto out;
	}
	s = slot_get(g, SLOT_ADDR, addr, g->l.handshake_burst, now);
	if (!s) {
		snprintf(why, len, "too many sources connecting at once");
		goto out;
	}
	if (s->conns >= g->l.conns_per_addr) {
		snprintf(why, len,
			 "%s has %u unauthenticated connections (limit %u)",
			 addr, s->conns, g->l.conns_per_addr);
		goto out;
	}
	if (!take_token(s, g->l.handshakes_per_s, g->l.handshake_burst, now)) {
		snprintf(why, len,
			 "%s opens connections faster than %u/s", addr,
			 g->l.handshakes_per_s);
		goto out;
	}
	s->conns++;
	g->total++;
	ok = true;
out:
	pthread_mutex_unlock(&g->lock);
	return ok;
}

void guard_conn_done(struct guard *g, const char *addr)
{
	char src[GUARD_KEY_MAX];

	guard_source(addr, src, sizeof(src));
	addr = src;
	pthread_mutex_lock(&g->lock);
	for (unsigned i = 0; i < GUARD_SLOTS; i++) {
		struct slot *s = &g->slots[i];

		if (s->kind == SLOT_ADDR &&
		    !strncmp(s->key, addr, GUARD_KEY_MAX - 1)) {
			if (s->conns > 0)
				s->conns--;
			break;
		}
	}
	if (g->total > 0)
		g->total--;
	pthread_mutex_unlock(&g->lock);
}

bool guard_request(struct guard *g, const char *identity, char *why,
		   size_t len)
{
	uint64_t now = now_ms();
	struct slot *s;
	bool ok;

	pthread_mutex_lock(&g->lock);
	s = slot_get(g, SLOT_IDENTITY, identity, g->l.request_burst, now);
	ok = s && take_token(s, g->l.requests_per_s, g->l.request_burst, now);
	if (!ok)
		snprintf(why, len, "%s sends more than %u requests/s",
			 identity, g->l.requests_per_s);
	pthread_mutex_unlock(&g->lock);
	return ok;
}

unsigned guard_unauthenticated(struct guard *g)
{
	unsigned n;

	pthread_mutex_lock(&g->lock);
	n = g->total;
	pthread_mutex_unlock(&g->lock);
	return n;
}
