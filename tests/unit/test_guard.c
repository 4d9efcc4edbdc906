/* Unit tests of the flood guard: per-address and total connection caps,
 * handshake and request rates, bounded memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "guard.h"

static struct guard *make(unsigned per_addr, unsigned total, unsigned rate,
			  unsigned burst)
{
	struct guard_limits l = { .conns_per_addr = per_addr,
				  .conns_total = total,
				  .handshakes_per_s = rate,
				  .handshake_burst = burst,
				  .requests_per_s = rate,
				  .request_burst = burst };
	struct guard *g = NULL;
	struct ferr err = { 0 };

	assert_int_equal(guard_new(&l, &g, &err), 0);
	return g;
}

static void test_conn_caps(void **state)
{
	struct guard *g = make(2, 3, 1000, 1000);
	char why[128];

	(void)state;
	assert_true(guard_conn_open(g, "10.0.0.1", why, sizeof(why)));
	assert_true(guard_conn_open(g, "10.0.0.1", why, sizeof(why)));
	assert_false(guard_conn_open(g, "10.0.0.1", why, sizeof(why)));
	assert_non_null(strstr(why, "10.0.0.1 has 2"));
	assert_true(guard_conn_open(g, "10.0.0.2", why, sizeof(why)));
	assert_false(guard_conn_open(g, "10.0.0.3", why, sizeof(why)));
	assert_non_null(strstr(why, "limit 3"));
	assert_int_equal(guard_unauthenticated(g), 3);
	guard_conn_done(g, "10.0.0.1");
	assert_int_equal(guard_unauthenticated(g), 2);
	assert_true(guard_conn_open(g, "10.0.0.3", why, sizeof(why)));
	guard_free(g);
}

static void test_rates(void **state)
{
	struct guard *g = make(1000, 1000, 10, 5);
	char why[128];
	unsigned ok = 0;

	(void)state;
	for (int i = 0; i < 20; i++) {
		if (guard_conn_open(g, "10.0.0.9", why, sizeof(why))) {
			ok++;
			guard_conn_done(g, "10.0.0.9");
		}
	}
	assert_int_equal(ok, 5); /* the burst, then refused */
	assert_non_null(strstr(why, "faster than 10/s"));
	usleep(250 * 1000); /* refills about 2.5 tokens */
	assert_true(guard_conn_open(g, "10.0.0.9", why, sizeof(why)));
	/* another address has its own bucket */
	assert_true(guard_conn_open(g, "10.0.0.10", why, sizeof(why)));
	ok = 0;
	for (int i = 0; i < 20; i++)
		ok += guard_request(g, "alice", why, sizeof(why));
	assert_int_equal(ok, 5);
	assert_non_null(strstr(why, "alice"));
	assert_true(guard_request(g, "bob", why, sizeof(why)));
	guard_free(g);
}

/* Thousands of distinct sources do not grow memory: slots are recycled. */
static void test_bounded(void **state)
{
	struct guard *g = make(4, 100000, 1000, 1000);
	char why[128], addr[32];

	(void)state;
	for (int i = 0; i < 5000; i++) {
		snprintf(addr, sizeof(addr), "10.1.%d.%d", i / 256, i % 256);
		assert_true(guard_conn_open(g, addr, why, sizeof(why)));
		guard_conn_done(g, addr);
	}
	assert_int_equal(guard_unauthenticated(g), 0);
	guard_free(g);
}

/* IPv6 sources count per /64 (one host holds a whole /64); an
 * IPv4-mapped address counts as its IPv4 address. */
static void test_ipv6_per_64(void **state)
{
	struct guard *g = make(2, 100, 1000, 1000);
	char why[128], src[64];

	(void)state;
	guard_source("2001:db8:1:2::1", src, sizeof(src));
	assert_string_equal(src, "2001:db8:1:2::/64");
	guard_source("2001:db8:1:2:ffff:ffff:ffff:ffff", src, sizeof(src));
	assert_string_equal(src, "2001:db8:1:2::/64");
	guard_source("::ffff:10.0.0.7", src, sizeof(src));
	assert_string_equal(src, "10.0.0.7");
	guard_source("10.0.0.7", src, sizeof(src));
	assert_string_equal(src, "10.0.0.7");
	/* two addresses of one /64 fill its cap; a third is refused */
	assert_true(guard_conn_open(g, "2001:db8:1:2::1", why, sizeof(why)));
	assert_true(guard_conn_open(g, "2001:db8:1:2::2", why, sizeof(why)));
	assert_false(guard_conn_open(g, "2001:db8:1:2:abcd::3", why,
				     sizeof(why)));
	assert_non_null(strstr(why, "2001:db8:1:2::/64 has 2"));
	/* the next /64 has its own */
	assert_true(guard_conn_open(g, "2001:db8:1:3::1", why, sizeof(why)));
	/* done with any address of the /64 frees one of its places */
	guard_conn_done(g, "2001:db8:1:2::99");
	assert_true(guard_conn_open(g, "2001:db8:1:2::5", why, sizeof(why)));
	/* IPv4-mapped and plain IPv4 share one count */
	assert_true(guard_conn_open(g, "::ffff:10.0.0.7", why, sizeof(why)));
	assert_true(guard_conn_open(g, "10.0.0.7", why, sizeof(why)));
	assert_false(guard_conn_open(g, "::ffff:10.0.0.7", why, sizeof(why)));
	assert_int_equal(guard_unauthenticated(g), 5);
	guard_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conn_caps),
		cmocka_unit_test(test_rates),
		cmocka_unit_test(test_bounded),
		cmocka_unit_test(test_ipv6_per_64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
