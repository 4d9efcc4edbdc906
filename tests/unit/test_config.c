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
	assert_int_equal(cfg.limits.deadline_s, FERRY_GUARD_DEADLINE_S);
	assert_string_equal(cfg.crl_file, "");
}

/* The revocation list and the connection deadline. */
static void test_crl_and_deadline(void **state)
{
	const char *t =
		"{\"host\": \"h\", \"listen\": {\"address\": \"::1\"}, \"tls\": "
		"{\"ca\": \"a\", \"cert\": \"b\", \"key\": \"c\", \"crl\": "
		"\"pki/crl.pem\"}, \"state_dir\": \"/s\", \"shared_dir\": "
		"\"/d\", \"limits\": {\"deadline_s\": 3}}";
	struct ferryd_config cfg;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(parse(t, &cfg, &err), 0);
	assert_string_equal(cfg.crl_file, "/etc/ferry/pki/crl.pem");
	assert_int_equal(cfg.limits.deadline_s, 3);
}

/* Members whose key begins with '#' are comments at any depth; other
 * unknown members are still refused. */
static void test_comments(void **state)
{
	const char *t =
		"{\"#\": \"top\", \"host\": \"h\", \"#host\": \"why\","
		" \"listen\": {\"#address\": [1, {\"x\": 2}],"
		" \"address\": \"::1\"}, \"tls\": {\"ca\": \"a\", \"cert\": \"b\","
		" \"key\": \"c\"}, \"state_dir\": \"/s\", \"shared_dir\": \"/d\","
		" \"limits\": {\"#\": \"flood\", \"conns_total\": 9}}";
	struct ferryd_config cfg;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(parse(t, &cfg, &err), 0);
	assert_string_equal(cfg.host, "h");
	assert_int_equal(cfg.limits.conns_total, 9);
	config_clear(&cfg);
	assert_int_equal(parse("{\"host\": \"h\", \"x#\": 1}", &cfg, &err), -1);
	assert_non_null(strstr(err.msg, "x#"));
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

/* GOOD with an "attestation" member */
#define WITH_ATTEST(a) \
	"{\"host\": \"h\", \"listen\": {\"address\": \"127.0.0.1\"}, " \
	"\"tls\": {\"ca\": \"a\", \"cert\": \"b\", \"key\": \"c\"}, "  \
	"\"state_dir\": \"/s\", \"shared_dir\": \"/d\", "                 \
	"\"attestation\": " a "}"

static void test_attestation(void **state)
{
	struct ferryd_config cfg;
	struct ferr err = { 0 };

	(void)state;
	/* off by default */
	assert_int_equal(parse(GOOD, &cfg, &err), 0);
	assert_int_equal(cfg.attest.mode, ATTEST_MODE_OFF);
	assert_false(cfg.attest.seal);
	/* the short form: a mode; required seals by default */
	assert_int_equal(parse(WITH_ATTEST("\"optional\""), &cfg, &err), 0);
	assert_int_equal(cfg.attest.mode, ATTEST_MODE_OPTIONAL);
	assert_false(cfg.attest.seal);
	assert_string_equal(cfg.attest.tcti, "device:/dev/tpmrm0");
	assert_int_equal(cfg.attest.pcr, 15);
	assert_int_equal(cfg.attest.policy_pcr, 13);
	assert_int_equal(parse(WITH_ATTEST("{\"mode\": \"required\", "
					   "\"tcti\": \"swtpm:port=2321\", "
					   "\"pcr\": 12, \"policy_pcr\": 11, "
					   "\"registrar\": \"pki/attest\"}"),
			       &cfg, &err),
			 0);
	assert_int_equal(cfg.attest.mode, ATTEST_MODE_REQUIRED);
	assert_true(cfg.attest.seal);
	assert_string_equal(cfg.attest.tcti, "swtpm:port=2321");
	assert_int_equal(cfg.attest.pcr, 12);
	assert_int_equal(cfg.attest.policy_pcr, 11);
	assert_string_equal(cfg.attest.registrar, "/etc/ferry/pki/attest");
	assert_int_equal(parse(WITH_ATTEST("{\"mode\": \"required\", "
					   "\"seal\": false}"),
			       &cfg, &err),
			 0);
	assert_false(cfg.attest.seal);
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
		{ "{\"host\": \"h\", \"listen\": {\"address\": \"127.0.0.1\"}, "
		  "\"tls\": {\"ca\": \"a\", \"cert\": \"b\", \"key\": \"c\"}, "
		  "\"state_dir\": \"/s\", \"shared_dir\": \"/d\", \"limits\": "
		  "{\"deadline_s\": 301}}",
		  "limits.deadline_s must be between 1 and 300" },
		{ "{\"h\": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}",
		  "JSON nested deeper than 16 levels" },
		{ WITH_ATTEST("\"sometimes\""), "attestation.mode must be" },
		{ WITH_ATTEST("{\"mode\": \"optional\", \"pcr\": 16}"),
		  "attestation.pcr" },
		{ WITH_ATTEST("{\"mode\": \"optional\", \"pcr\": 13}"),
		  "pcr and policy_pcr must differ" },
		{ WITH_ATTEST("{\"mode\": \"required\"}"),
		  "attestation.seal needs attestation.registrar" },
		{ WITH_ATTEST("{\"mode\": \"optional\", \"tcti\": \"a b\"}"),
		  "attestation.tcti" },
		{ WITH_ATTEST("{\"mode\": \"optional\", \"extra\": 1}"),
		  "unknown field \"extra\"" },
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

/* The etcd section: ca/cert/key default to the host's tls files, every
 * other field has a default, and bad values are refused naming them. */
#define BASE_NO_END                                                            \
	"{\"host\": \"h\", \"listen\": {\"address\": \"127.0.0.1\"}, "          \
	"\"tls\": {\"ca\": \"pki/ca.crt\", \"cert\": \"h.crt\", \"key\": "      \
	"\"h.key\"}, \"state_dir\": \"/s\", \"shared_dir\": \"/d\", "           \
	"\"etcd\": "

static void test_etcd(void **state)
{
	static const struct {
		const char *etcd;
		const char *needle;
	} bad[] = {
		{ "{}", "etcd.endpoints must be a list" },
		{ "{\"endpoints\": []}", "etcd.endpoints must be a list" },
		{ "{\"endpoints\": [1]}", "etcd.endpoints[0] must be a string" },
		{ "{\"endpoints\": [\"http://127.0.0.1:2379\"]}", "https://" },
		{ "{\"endpoints\": [\"https://etcd:2379\"]}", "numeric" },
		{ "{\"endpoints\": [\"https://127.0.0.1:2379\"], \"prefix\": "
		  "\"ferry\"}",
		  "etcd.prefix" },
		{ "{\"endpoints\": [\"https://127.0.0.1:2379\"], "
		  "\"lease_ttl_s\": 1}",
		  "etcd.lease_ttl_s" },
		{ "{\"endpoints\": [\"https://127.0.0.1:2379\"], "
		  "\"timeout_ms\": 500, \"member_timeout_ms\": 600}",
		  "member_timeout_ms" },
		{ "{\"endpoints\": [\"https://127.0.0.1:2379\"], \"ttl\": 5}",
		  "unknown field \"ttl\"" },
	};
	char text[1024];
	struct ferryd_config cfg;
	struct ferr err = { 0 };

	(void)state;
	snprintf(text, sizeof(text), "%s%s}", BASE_NO_END,
		 "{\"endpoints\": [\"https://127.0.0.1:2379\", "
		 "\"https://[::1]:2380\"], \"key\": \"/etc/etcd/c.key\", "
		 "\"prefix\": \"/ferry/prod\", \"lease_ttl_s\": 5}");
	assert_int_equal(parse(text, &cfg, &err), 0);
	assert_int_equal(cfg.etcd.n_endpoints, 2);
	assert_string_equal(cfg.etcd.endpoints[1], "https://[::1]:2380");
	assert_string_equal(cfg.etcd.ca_file, "/etc/ferry/pki/ca.crt");
	assert_string_equal(cfg.etcd.cert_file, "/etc/ferry/h.crt");
	assert_string_equal(cfg.etcd.key_file, "/etc/etcd/c.key");
	assert_string_equal(cfg.etcd.prefix, "/ferry/prod");
	assert_int_equal(cfg.etcd.lease_ttl_s, 5);
	assert_int_equal(cfg.etcd.timeout_ms, ETCD_TIMEOUT_MS_DEFAULT);
	config_clear(&cfg);
	assert_int_equal(parse(GOOD, &cfg, &err), 0);
	assert_int_equal(cfg.etcd.n_endpoints, 0); /* no section: no etcd */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "%s%s}", BASE_NO_END, bad[i].etcd);
		assert_int_equal(parse(text, &cfg, &err), -1);
		assert_int_equal(err.code, FERR_INVALID);
		if (!strstr(err.msg, bad[i].needle))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg,
				 bad[i].needle);
	}
}

/* ram_dir: optional, resolved against the config's folder, no ','. */
static void test_ram_dir(void **state)
{
	struct ferryd_config cfg;
	struct ferr err = { 0 };
	char text[1024];

	(void)state;
	assert_int_equal(parse(GOOD, &cfg, &err), 0);
	assert_string_equal(cfg.ram_dir, "");
	config_clear(&cfg);
	snprintf(text, sizeof(text), "%.*s, \"ram_dir\": \"ram\"}",
		 (int)strlen(GOOD) - 1, GOOD);
	assert_int_equal(parse(text, &cfg, &err), 0);
	assert_string_equal(cfg.ram_dir, "/etc/ferry/ram");
	config_clear(&cfg);
	snprintf(text, sizeof(text), "%.*s, \"ram_dir\": \"/dev/shm/a,b\"}",
		 (int)strlen(GOOD) - 1, GOOD);
	assert_int_equal(parse(text, &cfg, &err), -1);
	assert_non_null(strstr(err.msg, "ram_dir"));
	snprintf(text, sizeof(text), "%.*s, \"ram_dir\": 5}",
		 (int)strlen(GOOD) - 1, GOOD);
	assert_int_equal(parse(text, &cfg, &err), -1);
	assert_non_null(strstr(err.msg, "ram_dir"));
}

/* ha_peers: hosts with a numeric API address; port defaults. */
static void test_ha_peers(void **state)
{
	static const char *const bad[] = {
		"{}",
		"[{\"host\": \"b\"}]",
		"[{\"host\": \"b\", \"address\": \"name.example\"}]",
		"[{\"host\": \"B C\", \"address\": \"10.0.0.2\"}]",
		"[{\"host\": \"b\", \"address\": \"10.0.0.2\", \"x\": 1}]",
		"[{\"host\": \"b\", \"address\": \"10.0.0.2\", \"port\": 0}]",
	};
	struct ferryd_config cfg;
	struct ferr err = { 0 };
	char text[1024];

	(void)state;
	assert_int_equal(parse(GOOD, &cfg, &err), 0);
	assert_int_equal(cfg.n_ha_peers, 0);
	config_clear(&cfg);
	snprintf(text, sizeof(text),
		 "%.*s, \"ha_peers\": [{\"host\": \"b\", \"address\": "
		 "\"10.0.0.2\"}, {\"host\": \"c\", \"address\": \"::1\", "
		 "\"port\": 9000}]}",
		 (int)strlen(GOOD) - 1, GOOD);
	assert_int_equal(parse(text, &cfg, &err), 0);
	assert_int_equal(cfg.n_ha_peers, 2);
	assert_string_equal(cfg.ha_peers[0].host, "b");
	assert_string_equal(cfg.ha_peers[0].address, "10.0.0.2");
	assert_int_equal(cfg.ha_peers[0].port, FERRY_API_PORT_DEFAULT);
	assert_string_equal(cfg.ha_peers[1].address, "::1");
	assert_int_equal(cfg.ha_peers[1].port, 9000);
	config_clear(&cfg);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "%.*s, \"ha_peers\": %s}",
			 (int)strlen(GOOD) - 1, GOOD, bad[i]);
		assert_int_equal(parse(text, &cfg, &err), -1);
		if (!strstr(err.msg, "ha_peers"))
			fail_msg("case %zu: \"%s\"", i, err.msg);
	}
}

/* qemu_user and audit_rotate_kib (security.md). */
static void test_qemu_user_and_rotation(void **state)
{
#define BASE_CFG                                                               \
	"{\"host\": \"h\", \"listen\": {\"address\": \"::1\"}, \"tls\": "        \
	"{\"ca\": \"a\", \"cert\": \"b\", \"key\": \"c\"}, \"state_dir\": "     \
	"\"/s\", \"shared_dir\": \"/d\""
	static const struct {
		const char *text;
		const char *needle;
	} bad[] = {
		{ BASE_CFG ", \"qemu_user\": \"root\"}", "unprivileged user" },
		{ BASE_CFG ", \"qemu_user\": \"\"}", "unprivileged user" },
		{ BASE_CFG ", \"qemu_user\": \"a b\"}", "not a user name" },
		{ BASE_CFG ", \"qemu_user\": \"9q\"}", "not a user name" },
		{ BASE_CFG ", \"audit_rotate_kib\": 8}", "at least 32" },
	};
	struct ferryd_config cfg;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(parse(BASE_CFG "}", &cfg, &err), 0);
	assert_string_equal(cfg.qemu_user, "");
	assert_int_equal(cfg.audit_rotate_kib, FERRY_AUDIT_ROTATE_KIB_DEFAULT);
	assert_int_equal(parse(BASE_CFG ", \"qemu_user\": \"ferry-qemu\", "
				       "\"audit_rotate_kib\": 0}",
			       &cfg, &err),
			 0);
	assert_string_equal(cfg.qemu_user, "ferry-qemu");
	assert_int_equal(cfg.audit_rotate_kib, 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(bad[i].text, &cfg, &err), -1);
		if (!strstr(err.msg, bad[i].needle))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg,
				 bad[i].needle);
	}
#undef BASE_CFG
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_crl_and_deadline),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_network),
		cmocka_unit_test(test_etcd),
		cmocka_unit_test(test_attestation),
		cmocka_unit_test(test_qemu_user_and_rotation),
		cmocka_unit_test(test_comments),
		cmocka_unit_test(test_ram_dir),
		cmocka_unit_test(test_ha_peers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
