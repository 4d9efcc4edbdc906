/* Unit tests of ferryd's config parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

#define GOOD                                                                  \
	"{\"host\": \"host-a\", \"listen\": {\"address\": \"127.0.0.2\", "   \
	"\"port\": 9443}, \"tls\": {\"ca\": \"pki/ca.crt\", \"cert\": "      \
	"\"/abs/h.crt\", \"key\": \"h.key\"}, \"state_dir\": \"state\", "    \
	"\"shared_dir\": \"/srv/shared\", \"accel\": \"tcg\"}"

static int parse(const char *text, struct ferryd_config *cfg,
		 struct ferr *err)
{
	return config_parse(text, strlen(text), "/etc/ferry", "test.json", cfg,
			    err);
}

static void test_good(void **state)
{
	struct ferryd_config cfg;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(parse(GOOD, &cfg, &err), 0);
	assert_string_equal(cfg.host, "host-a");
	assert_string_equal(cfg.listen_addr, "127.0.0.2");
	assert_int_equal(cfg.listen_port, 9443);
	assert_string_equal(cfg.ca_file, "/etc/ferry/pki/ca.crt");
	assert_string_equal(cfg.cert_file, "/abs/h.crt");
	assert_string_equal(cfg.state_dir, "/etc/ferry/state");
	assert_string_equal(cfg.shared_dir, "/srv/shared");
	assert_int_equal(cfg.accel, ACCEL_TCG);
	assert_int_equal(cfg.memory_reserve_mib, 256);
}

static void test_defaults(void **state)
{
	const char *t =
		"{\"host\": \"h\", \"listen\": {\"address\": \"::1\"}, \"tls\": "
		"{\"ca\": \"a\", \"cert\": \"b\", \"key\": \"c\"}, "
		"\"state_dir\": \"/s\", \"shared_dir\": \"/d\"}";
	struct ferryd_config cfg;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(parse(t, &cfg, &err), 0);
	assert_int_equal(cfg.listen_port, FERRY_API_PORT_DEFAULT);
	assert_int_equal(cfg.accel, ACCEL_AUTO);
}

#define BASE                                                                  \
	"{\"host\": \"h\", \"listen\": {\"address\": \"127.0.0.2\"}, \"tls\": " \
	"{\"ca\": \"a\", \"cert\": \"b\", \"key\": \"c\"}, \"state_dir\": "   \
	"\"/s\", \"shared_dir\": \"/d\", "

/* Bridges and the data plane's namespace (docs/detection.md). */
static void test_network(void **state)
{
	struct ferryd_config cfg;
	struct ferr err = { 0 };
	static const struct {
		const char *text;
		const char *needle;
	} bad[] = {
		{ BASE "\"bridges\": {\"lan\": {}}}", "bridges.lan.device" },
		{ BASE "\"bridges\": {\"lan\": {\"device\": "
		       "\"a-very-long-bridge\"}}}",
		  "bridges.lan.device" },
		{ BASE "\"bridges\": {\"lan\": {\"device\": \"br0\", "
		       "\"netns\": \"../x\"}}}",
		  "bridges.lan.netns" },
		{ BASE "\"bridges\": {\"Lan\": {\"device\": \"br0\"}}}",
		  "bridges.Lan" },
		{ BASE "\"bridges\": [1]}", "bridges must be an object" },
		{ BASE "\"bridges\": {\"lan\": {\"device\": \"br0\", "
		       "\"stp\": 1}}}",
		  "unknown field \"stp\"" },
		{ BASE "\"migration\": {\"netns\": \"ns1\"}}",
		  "needs migration.advertise_address" },
		{ BASE "\"migration\": {\"netns\": \"a/b\", "
		       "\"advertise_address\": \"10.0.0.1\"}}",
		  "migration.netns" },
	};

	(void)state;
	assert_int_equal(
		parse(BASE "\"bridges\": {\"lan\": {\"device\": \"br0\", "
			   "\"netns\": \"ns-a\"}, \"dmz\": {\"device\": "
			   "\"br1\"}}, \"migration\": {\"netns\": \"ns-a\", "
			   "\"advertise_address\": \"10.231.0.1\"}}",
		      &cfg, &err),
		0);
	assert_int_equal(cfg.nbridges, 2);
	assert_non_null(config_bridge(&cfg, "lan"));
	assert_string_equal(config_bridge(&cfg, "lan")->device, "br0");
	assert_string_equal(config_bridge(&cfg, "lan")->netns, "ns-a");
	assert_string_equal(config_bridge(&cfg, "dmz")->netns, "");
	assert_null(config_bridge(&cfg, "wan"));
	assert_string_equal(cfg.migration_netns, "ns-a");
	/* the data plane binds the advertised address inside the netns */
	assert_string_equal(config_dataplane_addr(&cfg), "10.231.0.1");
	config_clear(&cfg);
	assert_int_equal(parse(GOOD, &cfg, &err), 0);
	assert_string_equal(config_dataplane_addr(&cfg), "127.0.0.2");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(bad[i].text, &cfg, &err), -1);
		assert_int_equal(err.code, FERR_INVALID);
		if (!strstr(err.msg, bad[i].needle))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg,
				 bad[i].needle);
	}
}

/* Each bad config must fail with a message naming the problem. */
static void test_bad(void **state)
{
	static const struct {
		const char *text;
		const char *needle;
	} cases[] = {
		{ "not json", "malformed JSON" },
		{ "[]", "must be a JSON object" },
		{ "{\"host\": \"h\", \"bogus\": 1}", "unknown field \"bogus\"" },
		{ "{\"listen\": {}}", "host is required" },
		{ "{\"host\": \"Bad Name\"}", "not a valid name" },
		{ "{\"host\": 5}", "must be a string" },
		{ "{\"host\": \"h\"}", "listen is required" },
		{ "{\"host\": \"h\", \"listen\": {\"address\": \"localhost\"}}",
		  "not a numeric IP" },
		{ "{\"host\": \"h\", \"listen\": {\"address\": \"127.0.0.1\", "
		  "\"port\": 70000}}",
		  "between 1 and 65535" },
		{ "{\"host\": \"h\", \"listen\": {\"address\": \"127.0.0.1\"}, "
		  "\"tls\": {\"ca\": \"a\"}}",
		  "tls.cert is required" },
		{ "{\"host\": \"h\", \"listen\": {\"address\": \"127.0.0.1\"}, "
		  "\"tls\": {\"ca\": \"a\", \"cert\": \"b\", \"key\": \"c\"}, "
		  "\"state_dir\": \"/s\", \"shared_dir\": \"/d\", \"accel\": "
		  "\"xen\"}",
		  "accel must be" },
		{ "{\"host\": \"h\", \"listen\": {\"address\": \"127.0.0.1\"}, "
		  "\"tls\": {\"ca\": \"a\", \"cert\": \"b\", \"key\": \"c\"}, "
		  "\"state_dir\": "
		  "\"/a/very/long/state/directory/that/will/not/fit/into/"
		  "sun_path/x\", \"shared_dir\": \"/d\"}",
		  "sun_path" },
		{ "{\"host\": \"h\", \"host\": \"h\"}", "malformed JSON" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ferryd_config cfg;
		struct ferr err = { 0 };

		assert_int_equal(parse(cases[i].text, &cfg, &err), -1);
		assert_int_equal(err.code, FERR_INVALID);
		if (!strstr(err.msg, cases[i].needle))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg,
				 cases[i].needle);
		assert_non_null(strstr(err.msg, "test.json"));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_network),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
