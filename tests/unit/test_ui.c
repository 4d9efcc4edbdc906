/* Unit tests of the dashboard's admission (Host, Origin, token) and of its
 * API routes (src/ui/gate.c, src/ui/route.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "ui.h"

#define TOK "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_host_and_origin(void **state)
{
	(void)state;
	assert_true(ui_host_ok("127.0.0.1:8470", "127.0.0.1", 8470));
	assert_true(ui_host_ok("localhost:8470", "127.0.0.1", 8470));
	assert_false(ui_host_ok(NULL, "127.0.0.1", 8470));
	assert_false(ui_host_ok("127.0.0.1", "127.0.0.1", 8470));
	assert_false(ui_host_ok("127.0.0.1:8471", "127.0.0.1", 8470));
	assert_false(ui_host_ok("evil.example:8470", "127.0.0.1", 8470));
	assert_false(ui_host_ok("127.0.0.1:8470x", "127.0.0.1", 8470));
	assert_true(ui_origin_ok(NULL, false, "127.0.0.1", 8470));
	assert_false(ui_origin_ok(NULL, true, "127.0.0.1", 8470));
	assert_true(ui_origin_ok("http://127.0.0.1:8470", true, "127.0.0.1",
				 8470));
	assert_true(ui_origin_ok("http://localhost:8470", true, "127.0.0.1",
				 8470));
	assert_false(ui_origin_ok("null", false, "127.0.0.1", 8470));
	assert_false(ui_origin_ok("https://127.0.0.1:8470", true, "127.0.0.1",
				  8470));
	assert_false(ui_origin_ok("http://127.0.0.1:8470/", true, "127.0.0.1",
				  8470));
	assert_false(ui_origin_ok("http://evil.example", true, "127.0.0.1",
				  8470));
}

static void test_token(void **state)
{
	(void)state;
	assert_true(ui_token_ok(TOK, "ferry_ui_1", NULL, "Bearer " TOK));
	assert_true(ui_token_ok(TOK, "ferry_ui_1", "ferry_ui_1=" TOK, NULL));
	assert_true(ui_token_ok(TOK, "ferry_ui_1", "a=b; ferry_ui_1=" TOK "; c=d",
				NULL));
	assert_false(ui_token_ok(TOK, "ferry_ui_1", NULL, NULL));
	assert_false(ui_token_ok(TOK, "ferry_ui_1", "", "Bearer "));
	/* another instance's cookie, a prefix, a longer value */
	assert_false(ui_token_ok(TOK, "ferry_ui_1", "ferry_ui_2=" TOK, NULL));
	assert_false(ui_token_ok(TOK, "ferry_ui_1", "xferry_ui_1=" TOK, NULL));
	assert_false(ui_token_ok(TOK, "ferry_ui_1", "ferry_ui_1=" TOK "0",
				 NULL));
	assert_false(ui_token_ok(TOK, "ferry_ui_1",
				 "ferry_ui_1=0123456789abcdef", NULL));
	assert_false(ui_token_ok(TOK, "ferry_ui_1", NULL, "Basic " TOK));
	assert_false(ui_token_ok(TOK, "ferry_ui_1", NULL,
				 "Bearer " TOK "\r\n"));
	assert_true(ui_query_token_ok(TOK, "token=" TOK));
	assert_false(ui_query_token_ok(TOK, NULL));
	assert_false(ui_query_token_ok(TOK, "token="));
	assert_false(ui_query_token_ok(TOK, "x=1&token=" TOK));
	assert_false(ui_query_token_ok(TOK, "token=" TOK "&x=1"));
}

static void test_routes(void **state)
{
	struct ui_route r;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(ui_route_parse("GET", "/api/state", NULL, &r, &err), 0);
	assert_int_equal(r.kind, UI_R_STATE);
	assert_int_equal(ui_route_parse("POST", "/api/hosts/host-a/vms/web1/"
					"stop", NULL, &r, &err), 0);
	assert_int_equal(r.kind, UI_R_VM_ACTION);
	assert_true(r.post);
	assert_string_equal(r.host, "host-a");
	assert_string_equal(r.vm, "web1");
	assert_string_equal(r.verb, "stop");
	assert_int_equal(ui_route_parse("GET", "/api/hosts/h/vms/v/console",
					"offset=10", &r, &err), 0);
	assert_string_equal(r.query, "?offset=10");
	assert_int_equal(ui_route_parse("GET", "/api/hosts/h/audit",
					"vm=web1&action=vm.*&limit=5", &r,
					&err), 0);
	assert_string_equal(r.query, "?vm=web1&action=vm.*&limit=5");
	assert_int_equal(ui_route_parse("POST", "/api/hosts/h/migrations/"
					"1b4e28ba-2fa1-11d2-883f-0016d3cca427/"
					"cancel", NULL, &r, &err), 0);
	assert_int_equal(r.kind, UI_R_CANCEL);
	assert_int_equal(ui_route_parse("POST", "/api/balance/mode", NULL, &r,
					&err), 0);
	assert_int_equal(r.kind, UI_R_BAL_MODE);
	assert_int_equal(ui_route_parse("POST", "/api/hosts/h/drain", NULL, &r,
					&err), 0);
	assert_string_equal(r.verb, "drain");
	assert_int_equal(ui_route_parse("GET", "/api/hosts/h/audit/verify", NULL,
					&r, &err), 0);
	assert_int_equal(r.kind, UI_R_VERIFY);

	/* refusals: method, names, paths, parameters */
	assert_int_equal(ui_route_parse("GET", "/api/hosts/h/vms/v/start", NULL,
					&r, &err), -1);
	assert_int_equal(err.code, FERR_METHOD);
	assert_int_equal(ui_route_parse("POST", "/api/state", NULL, &r, &err),
			 -1);
	assert_int_equal(ui_route_parse("POST", "/api/hosts/H/drain", NULL, &r,
					&err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	assert_int_equal(ui_route_parse("POST", "/api/hosts/h/vms/..%2f/start",
					NULL, &r, &err), -1);
	assert_int_equal(ui_route_parse("POST", "/api/hosts/h/vms/v/delete",
					NULL, &r, &err), -1);
	assert_int_equal(err.code, FERR_NOT_FOUND);
	assert_int_equal(ui_route_parse("GET", "/api/hosts//vms", NULL, &r,
					&err), -1);
	assert_int_equal(ui_route_parse("GET", "/v1/vms", NULL, &r, &err), -1);
	assert_int_equal(ui_route_parse("GET", "/api/hosts/h/audit",
					"limit=0", &r, &err), -1);
	assert_int_equal(ui_route_parse("GET", "/api/hosts/h/audit",
					"vm=web1&vm=web2", &r, &err), -1);
	assert_int_equal(ui_route_parse("GET", "/api/hosts/h/audit", "vm=a%20b",
					&r, &err), -1);
	assert_int_equal(ui_route_parse("GET", "/api/hosts/h/audit", "x=1", &r,
					&err), -1);
	assert_int_equal(ui_route_parse("GET", "/api/hosts/h/audit", "vm", &r,
					&err), -1);
	assert_int_equal(ui_route_parse("GET", "/api/hosts/h/vms/v/console",
					"limit=5", &r, &err), -1);
	assert_int_equal(ui_route_parse("GET", "/api/state", "offset=1", &r,
					&err), -1);
	assert_int_equal(ui_route_parse("GET", "/api/hosts/h/audit",
					"action=vm.*x", &r, &err), -1);
}

/* ferry-detect's alarms shown by the dashboard (detection.md's state). */
static void test_detector_alarms(void **state)
{
	const char *ok =
		"{\"version\": 1, \"updated_ms\": 100000, \"alarms\": ["
		"{\"kind\": \"unexplained_migration\", \"vm\": \"v1\", "
		"\"host\": \"\", \"message\": \"no record\"}, "
		"{\"kind\": \"audit_tampered\", \"vm\": \"\", \"host\": "
		"\"host-b\", \"message\": \"line 1\"}]}";
	static const char *const bad[] = {
		"{\"version\": 2, \"alarms\": []}", "not json",
		"{\"version\": 1, \"alarms\": {}}"
	};
	json_t *out = json_array();
	json_t *a;

	(void)state;
	ui_detector_alarms(ok, strlen(ok), 110000, out);
	assert_int_equal(json_array_size(out), 2);
	a = json_array_get(out, 0);
	assert_string_equal(json_string_value(json_object_get(a, "severity")),
			    "critical");
	assert_string_equal(json_string_value(json_object_get(a, "vm")), "v1");
	assert_non_null(strstr(json_string_value(json_object_get(a, "title")),
			       "no audit record"));
	a = json_array_get(out, 1);
	assert_string_equal(json_string_value(json_object_get(a, "host")),
			    "host-b");
	json_array_clear(out);
	/* a detector that stopped updating is a warning */
	ui_detector_alarms(ok, strlen(ok), 100000 + UI_DETECTOR_STALE_MS + 1,
			   out);
	assert_int_equal(json_array_size(out), 3);
	assert_string_equal(
		json_string_value(json_object_get(json_array_get(out, 0),
						  "severity")),
		"warning");
	json_array_clear(out);
	/* hostile or foreign files: one warning, nothing else */
	for (size_t i = 0; i < 3; i++)
		ui_detector_alarms(bad[i], strlen(bad[i]), 0, out);
	assert_int_equal(json_array_size(out), 3);
	json_decref(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_host_and_origin),
		cmocka_unit_test(test_token),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_detector_alarms),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
