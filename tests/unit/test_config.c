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
		cmocka_unit_test(test_crl_and_deadline),
		cmocka_unit_test(test_bad),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
