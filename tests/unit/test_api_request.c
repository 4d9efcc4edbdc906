/* Unit tests of API routing and request validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api.h"

static int parse(const char *method, const char *uri, const char *body,
		 struct api_request *req, struct ferr *err)
{
	return api_parse_request(method, uri, body, body ? strlen(body) : 0,
				 req, err);
}

static void test_routes(void **state)
{
	static const struct {
		const char *method, *uri;
		enum api_route route;
		const char *vm;
	} cases[] = {
		{ "GET", "/v1/host", ROUTE_HOST_INFO, "" },
		{ "GET", "/v1/vms", ROUTE_VM_LIST, "" },
		{ "GET", "/v1/vms/vm1", ROUTE_VM_INFO, "vm1" },
		{ "DELETE", "/v1/vms/vm1", ROUTE_VM_DELETE, "vm1" },
		{ "POST", "/v1/vms/a-b/start", ROUTE_VM_START, "a-b" },
		{ "POST", "/v1/vms/x/stop", ROUTE_VM_STOP, "x" },
		{ "POST", "/v1/vms/x/pause", ROUTE_VM_PAUSE, "x" },
		{ "POST", "/v1/vms/x/resume", ROUTE_VM_RESUME, "x" },
		{ "GET", "/v1/vms/x/console?offset=10&limit=20",
		  ROUTE_VM_CONSOLE, "x" },
		{ "GET", "/v1/migrations", ROUTE_MIG_LIST, "" },
		{ "GET", "/v1/migrations/0123abcd", ROUTE_MIG_INFO,
		  "0123abcd" },
		{ "POST", "/v1/migrations/0123abcd/cancel", ROUTE_MIG_CANCEL,
		  "0123abcd" },
		{ "GET", "/v1/incoming/0123abcd", ROUTE_IN_INFO, "0123abcd" },
		{ "POST", "/v1/incoming/0123abcd/finish", ROUTE_IN_FINISH,
		  "0123abcd" },
		{ "POST", "/v1/incoming/0123abcd/abort", ROUTE_IN_ABORT,
		  "0123abcd" },
		{ "GET", "/v1/balance?hosts=0", ROUTE_BAL_STATUS, "" },
		{ "GET", "/v1/balance?hosts=1", ROUTE_BAL_STATUS, "" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct api_request req;
		struct ferr err = { 0 };

		if (parse(cases[i].method, cases[i].uri, NULL, &req, &err) < 0)
			fail_msg("%s %s: %s", cases[i].method, cases[i].uri,
				 err.msg);
		assert_int_equal(req.route, cases[i].route);
		assert_string_equal(req.vm, cases[i].vm);
		api_request_clear(&req);
	}
}

static void test_refusals(void **state)
{
	static const struct {
		const char *method, *uri, *body;
		enum ferr_code code;
	} cases[] = {
		{ "GET", "/", NULL, FERR_NOT_FOUND },
		{ "GET", "/v2/host", NULL, FERR_NOT_FOUND },
		{ "GET", "/v1/nothing", NULL, FERR_NOT_FOUND },
		{ "GET", "/v1/vms/x/reboot", NULL, FERR_NOT_FOUND },
		{ "GET", "/v1/vms/x/start/y", NULL, FERR_NOT_FOUND },
		{ "GET", "/v1/vms/", NULL, FERR_NOT_FOUND },
		{ "PUT", "/v1/vms", NULL, FERR_METHOD },
		{ "GET", "/v1/vms/x/start", NULL, FERR_METHOD },
		{ "DELETE", "/v1/host", NULL, FERR_METHOD },
		{ "GET", "/v1/vms/BAD", NULL, FERR_INVALID },
		{ "GET", "/v1/vms/%2e%2e", NULL, FERR_INVALID },
		{ "GET", "/v1/host?x=1", NULL, FERR_INVALID },
		{ "GET", "/v1/vms/x/console?offset=-1", NULL, FERR_INVALID },
		{ "GET", "/v1/vms/x/console?limit=99999999", NULL, FERR_INVALID },
		{ "GET", "/v1/vms/x/console?bogus=1", NULL, FERR_INVALID },
		{ "POST", "/v1/vms", NULL, FERR_INVALID },
		{ "POST", "/v1/vms", "{not json", FERR_INVALID },
		{ "POST", "/v1/vms", "[1,2]", FERR_INVALID },
		{ "POST", "/v1/vms/x/stop", "{\"force\": \"yes\"}",
		  FERR_INVALID },
		{ "POST", "/v1/vms/x/stop", "{\"timeout_s\": 0}", FERR_INVALID },
		{ "POST", "/v1/vms/x/stop", "{\"now\": true}", FERR_INVALID },
		{ "POST", "/v1/vms/x/start", "{\"x\": 1}", FERR_INVALID },
		{ "GET", "/v1/host", "{}", FERR_INVALID },
		{ "POST", "/v1/vms/x/migrate", NULL, FERR_INVALID },
		{ "POST", "/v1/vms/x/migrate", "[]", FERR_INVALID },
		{ "GET", "/v1/vms/x/migrate", NULL, FERR_METHOD },
		{ "POST", "/v1/incoming", NULL, FERR_INVALID },
		{ "POST", "/v1/migrations/a/cancel", "{\"now\": 1}",
		  FERR_INVALID },
		{ "DELETE", "/v1/migrations/a", NULL, FERR_METHOD },
		{ "GET", "/v1/incoming/A_B", NULL, FERR_INVALID },
		{ "GET", "/v1/balance?hosts=no", NULL, FERR_INVALID },
		{ "GET", "/v1/balance?limit=1", NULL, FERR_INVALID },
		{ "GET", "/v1/balance/plan?hosts=0", NULL, FERR_INVALID },
		{ "POST", "/v1/host/fence", NULL, FERR_INVALID },
		{ "GET", "/v1/host/fence", NULL, FERR_METHOD },
		{ "POST", "/v1/balance/params", "[]", FERR_INVALID },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct api_request req;
		struct ferr err = { 0 };

		if (parse(cases[i].method, cases[i].uri, cases[i].body, &req,
			  &err) != -1)
			fail_msg("case %zu (%s %s) accepted", i,
				 cases[i].method, cases[i].uri);
		if (err.code != cases[i].code)
			fail_msg("case %zu (%s %s): code %d, want %d: %s", i,
				 cases[i].method, cases[i].uri, err.code,
				 cases[i].code, err.msg);
		assert_null(req.body);
	}
}

/* The controller's and the fencing routes: bodies, permissions, audit. */
static void test_balance_routes(void **state)
{
	struct api_request req;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(parse("GET", "/v1/balance?hosts=0", NULL, &req, &err),
			 0);
	assert_true(req.no_hosts);
	assert_int_equal(parse("GET", "/v1/balance", NULL, &req, &err), 0);
	assert_false(req.no_hosts);
	assert_int_equal(parse("POST", "/v1/host/fence", "{\"fence\": 3}", &req,
			       &err),
			 0);
	assert_int_equal(req.route, ROUTE_HOST_FENCE);
	assert_non_null(req.body);
	api_request_clear(&req);
	assert_int_equal(parse("POST", "/v1/balance/params",
			       "{\"params\": {\"high\": 0.7}}", &req, &err),
			 0);
	assert_int_equal(req.route, ROUTE_BAL_PARAMS);
	api_request_clear(&req);
	assert_int_equal(api_route_perm(ROUTE_HOST_FENCE), PERM_VM_MIGRATE);
	assert_int_equal(api_route_perm(ROUTE_BAL_PARAMS), PERM_BALANCE_WRITE);
	assert_string_equal(api_route_action(ROUTE_HOST_FENCE), "host.fence");
	assert_string_equal(api_route_action(ROUTE_BAL_PARAMS),
			    "balance.params");
}

static void test_bodies(void **state)
{
	struct api_request req;
	struct ferr err = { 0 };
	char *big;

	(void)state;
	assert_int_equal(parse("POST", "/v1/vms/x/stop",
			       "{\"force\": true, \"timeout_s\": 5}", &req,
			       &err),
			 0);
	assert_true(req.force);
	assert_int_equal(req.timeout_s, 5);
	api_request_clear(&req);
	assert_int_equal(parse("POST", "/v1/vms/x/stop", NULL, &req, &err), 0);
	assert_false(req.force);
	assert_int_equal(req.timeout_s, FERRY_STOP_TIMEOUT_S_DEFAULT);
	assert_int_equal(parse("POST", "/v1/vms", "{\"name\": \"a\"}", &req,
			       &err),
			 0);
	assert_non_null(req.body);
	api_request_clear(&req);
	assert_int_equal(parse("POST", "/v1/vms/x/migrate",
			       "{\"to\": \"b\"}", &req, &err),
			 0);
	assert_non_null(req.body); /* validated by the migrator */
	api_request_clear(&req);
	assert_int_equal(parse("POST", "/v1/incoming/ab/finish", NULL, &req,
			       &err),
			 0);
	assert_null(req.body);
	assert_int_equal(parse("GET", "/v1/vms/x/console", NULL, &req, &err),
			 0);
	assert_int_equal(req.offset, 0);
	assert_int_equal(req.limit, FERRY_API_CONSOLE_MAX);
	big = malloc(FERRY_API_MAX_BODY + 2);
	memset(big, ' ', FERRY_API_MAX_BODY + 1);
	big[FERRY_API_MAX_BODY + 1] = '\0';
	assert_int_equal(parse("POST", "/v1/vms", big, &req, &err), -1);
	assert_int_equal(err.code, FERR_TOO_LARGE);
	free(big);
}

static void test_attest_routes(void **state)
{
	struct api_request req;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(parse("GET", "/v1/attest/identity", NULL, &req, &err),
			 0);
	assert_int_equal(req.route, ROUTE_ATTEST_IDENTITY);
	assert_int_equal(api_route_perm(req.route), PERM_ATTEST_READ);
	assert_null(api_route_action(req.route)); /* a read */
	assert_int_equal(parse("POST", "/v1/attest/quote",
			       "{\"challenge\": \"00\"}", &req, &err),
			 0);
	assert_int_equal(req.route, ROUTE_ATTEST_QUOTE);
	assert_int_equal(api_route_perm(req.route), PERM_ATTEST_READ);
	assert_false(req.have_exporter); /* the transport sets it */
	api_request_clear(&req);
	assert_int_equal(parse("POST", "/v1/attest/activate", "{}", &req,
			       &err),
			 0);
	assert_int_equal(api_route_perm(req.route), PERM_ATTEST_ADMIN);
	assert_string_equal(api_route_action(req.route), "attest.activate");
	api_request_clear(&req);
	assert_int_equal(parse("POST", "/v1/attest/approvals", "{}", &req,
			       &err),
			 0);
	assert_int_equal(api_route_perm(req.route), PERM_ATTEST_ADMIN);
	assert_string_equal(api_route_action(req.route), "attest.approve");
	api_request_clear(&req);
	assert_int_equal(parse("GET", "/v1/attest/quote", NULL, &req, &err),
			 -1);
	assert_int_equal(err.code, FERR_METHOD);
	assert_int_equal(parse("POST", "/v1/attest/quote", NULL, &req, &err),
			 -1);
	assert_int_equal(err.code, FERR_INVALID);
	assert_int_equal(parse("GET", "/v1/attest/other", NULL, &req, &err),
			 -1);
	assert_int_equal(err.code, FERR_NOT_FOUND);
}

static void test_metrics_route(void **state)
{
	struct api_request req;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(parse("GET", "/v1/metrics", NULL, &req, &err), 0);
	assert_int_equal(req.route, ROUTE_METRICS);
	assert_int_equal(api_route_perm(req.route), PERM_METRICS);
	assert_null(api_route_action(req.route)); /* a read */
	assert_int_equal(parse("POST", "/v1/metrics", NULL, &req, &err), -1);
	assert_int_equal(err.code, FERR_METHOD);
	assert_int_equal(parse("GET", "/v1/metrics?x=1", NULL, &req, &err),
			 -1);
	assert_int_equal(err.code, FERR_INVALID);
	assert_int_equal(parse("GET", "/v1/metrics", "{}", &req, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	assert_int_equal(parse("GET", "/metrics", NULL, &req, &err), -1);
	assert_int_equal(err.code, FERR_NOT_FOUND);
}

static void test_error_json(void **state)
{
	struct ferr err = { 0 };
	json_t *j;

	(void)state;
	ferr_set(&err, FERR_NOT_FOUND, "no VM named %s", "x");
	j = api_error_json(&err);
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(j, "error"),
						  "code")),
		"not_found");
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(j, "error"),
						  "message")),
		"no VM named x");
	json_decref(j);
}

/* Scan text in pieces of step bytes; true once it flags the request. */
static bool scan(const char *text, size_t step)
{
	struct api_hdr_scan s;
	size_t len = strlen(text);
	bool flagged = false;

	memset(&s, 0, sizeof(s));
	for (size_t i = 0; i < len; i += step)
		flagged |= api_hdr_scan(&s, text + i,
					len - i < step ? len - i : step);
	return flagged;
}

/* The Content-Length evhttp saturates is flagged, whatever the pieces the
 * bytes come in; everything evhttp answers itself is not. */
static void test_header_scan(void **state)
{
	static const char *const flagged[] = {
		"POST /v1/vms HTTP/1.1\r\nHost: x\r\n"
		"Content-Length: 18446744073709551617\r\n\r\n",
		"GET /v1/host HTTP/1.1\r\ncontent-LENGTH:   "
		"99999999999999999999999 \r\n\r\n",
		"POST /v1/vms HTTP/1.1\nContent-Length:\t9223372036854775808\n\n",
		"POST /v1/vms HTTP/1.1\r\nContent-Length: 9223372036854775808"
		"\r\nContent-Length: 1\r\n\r\n",
	};
	static const char *const clean[] = {
		/* fits: evhttp reads it (or answers 413 for too large) */
		"POST /v1/vms HTTP/1.1\r\nContent-Length: 9223372036854775807"
		"\r\n\r\n",
		"POST /v1/vms HTTP/1.1\r\nContent-Length: 12\r\n\r\n",
		/* not a number, negative, continued, not the first: evhttp
		 * answers 400 itself or uses the first */
		"POST /v1/vms HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
		"POST /v1/vms HTTP/1.1\r\nContent-Length: "
		"-99999999999999999999\r\n\r\n",
		"POST /v1/vms HTTP/1.1\r\nContent-Length: "
		"99999999999999999999\r\n 7\r\n\r\n",
		"POST /v1/vms HTTP/1.1\r\nContent-Length: 2\r\n"
		"Content-Length: 99999999999999999999\r\n\r\n",
		/* chunked wins */
		"POST /v1/vms HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n"
		"Content-Length: 99999999999999999999\r\n\r\n",
		/* the header block has not ended */
		"POST /v1/vms HTTP/1.1\r\nContent-Length: "
		"99999999999999999999\r\n",
		/* the name must be exact (evhttp does not trim it) */
		"POST /v1/vms HTTP/1.1\r\nContent-Length : "
		"99999999999999999999\r\n\r\n",
		/* the request line is not a header */
		"Content-Length: 99999999999999999999\r\n\r\n",
	};
	char *longline;

	(void)state;
	for (size_t i = 0; i < sizeof(flagged) / sizeof(flagged[0]); i++)
		for (size_t step = 1; step <= 64; step *= 4)
			assert_true(scan(flagged[i], step));
	for (size_t i = 0; i < sizeof(clean) / sizeof(clean[0]); i++)
		for (size_t step = 1; step <= 64; step *= 4)
			assert_false(scan(clean[i], step));
	/* headers past half the limit: evhttp may answer first */
	longline = malloc(FERRY_API_MAX_HEADERS + 256);
	strcpy(longline, "POST / HTTP/1.1\r\nX: ");
	memset(longline + strlen(longline), 'a', FERRY_API_MAX_HEADERS);
	strcpy(longline + strlen("POST / HTTP/1.1\r\nX: ") +
		       FERRY_API_MAX_HEADERS,
	       "\r\nContent-Length: 99999999999999999999\r\n\r\n");
	assert_false(scan(longline, 1000));
	free(longline);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_balance_routes),
		cmocka_unit_test(test_bodies),
		cmocka_unit_test(test_error_json),
		cmocka_unit_test(test_header_scan),
		cmocka_unit_test(test_attest_routes),
		cmocka_unit_test(test_metrics_route),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
