/* Unit tests of the etcd client's pure half (src/etcd/codec.h): base64,
 * int64-as-string, lease ids above 2^53, request bodies and the strict
 * checks of the gateway's answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"

#define PFX "/ferry"
#define HDR "\"header\":{\"cluster_id\":\"18356651462332683079\"," \
	    "\"member_id\":\"15605283837629904139\",\"revision\":\"42\"," \
	    "\"raft_term\":\"2\"}"
/* base64 of "/ferry/a", "/ferry/b", "/ferry/" + "0" (range end of "") */
#define K_A "L2ZlcnJ5L2E="
#define K_B "L2ZlcnJ5L2I="

static json_t *parse(const char *text)
{
	json_t *j = json_loads(text, 0, NULL);

	assert_non_null(j);
	return j;
}

static void test_base64(void **state)
{
	const unsigned char bin[] = { 0, 0xff, 'a', '\n', 0 };
	unsigned char *out = NULL;
	struct ferr err;
	size_t n;
	char *b;

	(void)state;
	for (size_t len = 0; len <= sizeof(bin); len++) {
		b = etcd_b64_encode(bin, len);
		assert_non_null(b);
		assert_int_equal(etcd_b64_decode(b, strlen(b), 16, "t", &out,
						 &n, &err),
				 0);
		assert_int_equal(n, len);
		assert_memory_equal(out, bin, len);
		assert_int_equal(out[n], 0);
		free(out);
		free(b);
	}
	assert_int_equal(etcd_b64_decode("YmFy", 4, 3, "t", &out, &n, &err), 0);
	assert_string_equal((char *)out, "bar");
	free(out);
	/* wrong length, alphabet, padding, or over the limit */
	static const char *const bad[] = { "YmF", "Ym=y", "Y===", "YmF*",
					   "YmFy\n", " YmF", "=mFy", "Zm9vYmFy" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(etcd_b64_decode(bad[i], strlen(bad[i]), 4,
						 "t", &out, &n, &err),
				 -1);
		assert_int_equal(err.code, FERR_IO);
	}
}

static void test_int64(void **state)
{
	int64_t v;
	uint64_t u;
	struct ferr err;
	json_t *o;

	(void)state;
	assert_int_equal(etcd_int64_parse("0", 0, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(etcd_int64_parse("9223372036854775807", 0, &v), 0);
	assert_true(v == INT64_MAX);
	assert_int_equal(etcd_int64_parse("-1", -1, &v), 0);
	assert_int_equal(v, -1);
	static const char *const bad[] = { "", "-", "01", "+1", " 1", "1 ",
					   "9223372036854775808", "1e3", "0x10",
					   "-2" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(etcd_int64_parse(bad[i], -1, &v), -1);

	/* lease ids above 2^53 survive exactly; numbers and reals are
	 * refused (they would pass through a double somewhere) */
	o = parse("{\"ID\":\"9007199254740993\",\"n\":7,\"r\":1.5,"
		  "\"big\":\"18446744073709551615\"}");
	assert_int_equal(etcd_json_int64(o, "ID", "t", 1, &v, &err), 0);
	assert_true(v == INT64_C(9007199254740993));
	assert_int_equal(etcd_json_int64(o, "n", "t", 0, &v, &err), -1);
	assert_int_equal(err.code, FERR_IO);
	assert_int_equal(etcd_json_int64(o, "r", "t", 0, &v, &err), -1);
	assert_int_equal(etcd_json_int64(o, "big", "t", 0, &v, &err), -1);
	assert_int_equal(etcd_json_uint64(o, "big", "t", &u, &err), 0);
	assert_true(u == UINT64_MAX);
	/* absent is the default 0, unless a value >= 1 is required */
	assert_int_equal(etcd_json_int64(o, "absent", "t", 0, &v, &err), 0);
	assert_int_equal(v, 0);
	assert_int_equal(etcd_json_int64(o, "absent", "t", 1, &v, &err), -1);
	json_decref(o);
	o = etcd_json_int64_new(INT64_C(4678010936534666680));
	assert_string_equal(json_string_value(o), "4678010936534666680");
	json_decref(o);
}

static void test_keys(void **state)
{
	struct ferr err;

	(void)state;
	assert_int_equal(etcd_key_check("ha/vm/x/owner", false, &err), 0);
	assert_int_equal(etcd_key_check("", true, &err), 0);
	assert_int_equal(etcd_key_check("", false, &err), -1);
	assert_int_equal(etcd_key_check("/abs", false, &err), -1);
	assert_int_equal(etcd_key_check("a b", false, &err), -1);
	assert_int_equal(etcd_key_check("a\x01", false, &err), -1);
	assert_int_equal(etcd_key_check("\xc3\xa9", false, &err), -1);
	assert_int_equal(etcd_prefix_check("/ferry", &err), 0);
	assert_int_equal(etcd_prefix_check("/ferry/prod-1", &err), 0);
	static const char *const bad[] = { "", "/", "ferry", "/ferry/",
					   "//ferry", "/a//b", "/a b" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(etcd_prefix_check(bad[i], &err), -1);
}

static void test_requests(void **state)
{
	const struct etcd_cmp cmp = { .key = "a", .target = ETCD_CMP_CREATE,
				      .result = ETCD_EQUAL, .number = 0 };
	const struct etcd_op ops[] = {
		{ .type = ETCD_OP_PUT, .key = "a", .value = "bar",
		  .value_len = 3, .lease = INT64_C(9007199254740993) },
		{ .type = ETCD_OP_GET, .key = "", .prefix = true },
		{ .type = ETCD_OP_DELETE, .key = "b" },
	};
	const struct etcd_txn txn = { &cmp, 1, ops, 2, ops + 2, 1 };
	struct ferr err;
	json_t *j;
	char *s;

	(void)state;
	j = etcd_req_put(PFX, "a", "bar", 3, INT64_C(9007199254740993), &err);
	s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(s, "{\"key\":\"" K_A "\",\"lease\":"
			       "\"9007199254740993\",\"value\":\"YmFy\"}");
	free(s);
	json_decref(j);
	/* a prefix range ends after the last key under it: "/ferry/d" ..
	 * "/ferry/e"; "" is every key under "/ferry/" */
	j = etcd_req_range(PFX, "d", true, 5, &err);
	s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(s, "{\"key\":\"L2ZlcnJ5L2Q=\",\"limit\":\"5\","
			       "\"range_end\":\"L2ZlcnJ5L2U=\"}");
	free(s);
	json_decref(j);
	j = etcd_req_txn(PFX, &txn, &err);
	s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(
		s, "{\"compare\":[{\"create_revision\":\"0\",\"key\":\"" K_A
		   "\",\"result\":\"EQUAL\",\"target\":\"CREATE\"}],"
		   "\"failure\":[{\"request_delete_range\":{\"key\":\"" K_B
		   "\"}}],\"success\":[{\"request_put\":{\"key\":\"" K_A
		   "\",\"lease\":\"9007199254740993\",\"value\":\"YmFy\"}},"
		   "{\"request_range\":{\"key\":\"L2ZlcnJ5Lw==\","
		   "\"range_end\":\"L2ZlcnJ5MA==\"}}]}");
	free(s);
	json_decref(j);
	j = etcd_req_lease(INT64_C(4678010936534666680), 0, &err);
	s = json_dumps(j, JSON_COMPACT);
	assert_string_equal(s, "{\"ID\":\"4678010936534666680\"}");
	free(s);
	json_decref(j);
	j = etcd_req_watch(PFX, "a", false, 7, &err);
	s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(s, "{\"create_request\":{\"key\":\"" K_A
			       "\",\"start_revision\":\"7\"}}");
	free(s);
	json_decref(j);
	/* bad arguments never reach the wire */
	assert_null(etcd_req_put(PFX, "a", "x", ETCD_VALUE_MAX + 1, 0, &err));
	assert_int_equal(err.code, FERR_INVALID);
	assert_null(etcd_req_put(PFX, "a", "x", 1, -1, &err));
	assert_null(etcd_req_lease(1, ETCD_LEASE_TTL_S_MAX + 1, &err));
	assert_null(etcd_req_watch(PFX, "a", false, -1, &err));
	const struct etcd_op put_prefix = { .type = ETCD_OP_PUT, .key = "a",
					    .prefix = true };
	const struct etcd_txn bad = { NULL, 0, &put_prefix, 1, NULL, 0 };
	assert_null(etcd_req_txn(PFX, &bad, &err));
	const struct etcd_txn many = { &cmp, ETCD_TXN_OPS_MAX + 1, NULL, 0,
				       NULL, 0 };
	assert_null(etcd_req_txn(PFX, &many, &err));
}

static void test_range(void **state)
{
	struct etcd_kvs r = { 0 };
	struct ferr err;
	json_t *j;

	(void)state;
	/* the gateway omits defaults: no value, no lease, no "more" */
	j = parse("{" HDR ",\"kvs\":[{\"key\":\"" K_A "\",\"create_revision\":"
		  "\"3\",\"mod_revision\":\"40\",\"version\":\"5\"},"
		  "{\"key\":\"" K_B "\",\"create_revision\":\"41\","
		  "\"mod_revision\":\"41\",\"version\":\"1\",\"value\":\"YmFy\","
		  "\"lease\":\"9007199254740993\"}],\"count\":\"2\"}");
	assert_int_equal(etcd_parse_range(j, PFX, &r, &err), 0);
	json_decref(j);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.revision, 42);
	assert_false(r.more);
	assert_string_equal(r.kv[0].key, "a");
	assert_int_equal(r.kv[0].value_len, 0);
	assert_int_equal(r.kv[0].lease, 0);
	assert_int_equal(r.kv[0].version, 5);
	assert_string_equal((char *)r.kv[1].value, "bar");
	assert_true(r.kv[1].lease == INT64_C(9007199254740993));
	etcd_kvs_clear(&r);
	/* an empty range is just the header */
	j = parse("{" HDR "}");
	assert_int_equal(etcd_parse_range(j, PFX, &r, &err), 0);
	assert_int_equal(r.n, 0);
	json_decref(j);

	static const char *const bad[] = {
		"{}",                                          /* no header */
		"{\"header\":{\"revision\":\"4\"}}",           /* no ids */
		"{" HDR ",\"kvs\":{}}",                        /* not a list */
		"{" HDR ",\"kvs\":[{\"key\":\"" K_A "\",\"create_revision\":\"1\","
		"\"mod_revision\":\"1\",\"version\":\"1\"}]}", /* count 0 */
		"{" HDR ",\"count\":\"1\",\"kvs\":[{\"key\":\"YQ==\","
		"\"create_revision\":\"1\",\"mod_revision\":\"1\","
		"\"version\":\"1\"}]}",                        /* not under /ferry */
		"{" HDR ",\"count\":\"1\",\"kvs\":[{\"key\":\"" K_A "\","
		"\"create_revision\":\"1\",\"mod_revision\":\"1\"}]}", /* version 0 */
		"{" HDR ",\"count\":\"1\",\"kvs\":[{\"key\":\"" K_A "\","
		"\"create_revision\":\"5\",\"mod_revision\":\"4\","
		"\"version\":\"1\"}]}",                        /* created after mod */
		"{" HDR ",\"count\":\"1\",\"kvs\":[{\"key\":\"" K_A "\","
		"\"create_revision\":\"1\",\"mod_revision\":\"43\","
		"\"version\":\"1\"}]}",                        /* newer than store */
		"{" HDR ",\"count\":\"2\",\"kvs\":[{\"key\":\"" K_B "\","
		"\"create_revision\":\"1\",\"mod_revision\":\"1\",\"version\":\"1\"},"
		"{\"key\":\"" K_A "\",\"create_revision\":\"1\",\"mod_revision\":"
		"\"1\",\"version\":\"1\"}]}",                  /* out of order */
		"{" HDR ",\"count\":1}",                       /* a number */
		"{" HDR ",\"more\":\"true\"}",                 /* not a bool */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = parse(bad[i]);
		assert_int_equal(etcd_parse_range(j, PFX, &r, &err), -1);
		assert_int_equal(err.code, FERR_IO);
		assert_int_equal(r.n, 0);
		json_decref(j);
	}
}

static void test_txn(void **state)
{
	const struct etcd_cmp cmp = { .key = "a", .target = ETCD_CMP_CREATE };
	const struct etcd_op put = { .type = ETCD_OP_PUT, .key = "a" };
	const struct etcd_op get = { .type = ETCD_OP_GET, .key = "a" };
	const struct etcd_op succ[] = { put, get };
	const struct etcd_txn txn = { &cmp, 1, succ, 2, &get, 1 };
	struct etcd_txn_result r = { 0 };
	struct ferr err;
	json_t *j;

	(void)state;
	j = parse("{" HDR ",\"succeeded\":true,\"responses\":["
		  "{\"response_put\":{\"header\":{\"revision\":\"42\"}}},"
		  "{\"response_range\":{\"header\":{},\"kvs\":[{\"key\":\"" K_A
		  "\",\"create_revision\":\"42\",\"mod_revision\":\"42\","
		  "\"version\":\"1\",\"lease\":\"7\"}],\"count\":\"1\"}}]}");
	assert_int_equal(etcd_parse_txn(j, PFX, &txn, &r, &err), 0);
	json_decref(j);
	assert_true(r.succeeded);
	assert_int_equal(r.n_ops, 2);
	assert_int_equal(r.ops[1].kvs.n, 1);
	assert_int_equal(r.ops[1].kvs.kv[0].lease, 7);
	etcd_txn_result_clear(&r);
	/* "succeeded": false is omitted: the failure branch ran */
	j = parse("{" HDR ",\"responses\":[{\"response_range\":{}}]}");
	assert_int_equal(etcd_parse_txn(j, PFX, &txn, &r, &err), 0);
	assert_false(r.succeeded);
	assert_int_equal(r.ops[0].kvs.n, 0);
	etcd_txn_result_clear(&r);
	json_decref(j);
	static const char *const bad[] = {
		"{" HDR ",\"succeeded\":true,\"responses\":[{\"response_put\":{}}]}",
		"{" HDR ",\"responses\":[{\"response_put\":{}}]}",
		"{" HDR ",\"responses\":[{\"response_range\":[]}]}",
		"{" HDR "}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = parse(bad[i]);
		assert_int_equal(etcd_parse_txn(j, PFX, &txn, &r, &err), -1);
		assert_int_equal(err.code, FERR_IO);
		json_decref(j);
	}
}

static void test_lease(void **state)
{
	int64_t id, ttl, granted;
	struct ferr err;
	json_t *j;

	(void)state;
	j = parse("{" HDR ",\"ID\":\"3822327007090977291\",\"TTL\":\"4\","
		  "\"grantedTTL\":\"5\"}");
	assert_int_equal(etcd_parse_lease(j, 0, &id, &ttl, &granted, &err), 0);
	assert_true(id == INT64_C(3822327007090977291));
	assert_int_equal(ttl, 4);
	assert_int_equal(granted, 5);
	/* the id must be the one asked about */
	assert_int_equal(etcd_parse_lease(j, INT64_C(3822327007090977290), &id,
					  &ttl, NULL, &err),
			 -1);
	json_decref(j);
	/* an expired lease: TTL -1 from timetolive, or no TTL at all from a
	 * keepalive (the default is omitted) */
	j = parse("{" HDR ",\"ID\":\"3\",\"TTL\":\"-1\"}");
	assert_int_equal(etcd_parse_lease(j, 3, &id, &ttl, NULL, &err), 0);
	assert_int_equal(ttl, -1);
	json_decref(j);
	j = parse("{" HDR ",\"ID\":\"3\"}");
	assert_int_equal(etcd_parse_lease(j, 3, &id, &ttl, NULL, &err), 0);
	assert_int_equal(ttl, 0);
	json_decref(j);
	j = parse("{" HDR ",\"ID\":3822327007090977291}");
	assert_int_equal(etcd_parse_lease(j, 0, &id, &ttl, NULL, &err), -1);
	json_decref(j);
}

static void test_errors(void **state)
{
	const char *nf = "{\"error\":\"etcdserver: requested lease not found\","
			 "\"message\":\"etcdserver: requested lease not "
			 "found\",\"code\":5}";
	const char *nl = "{\"error\":\"x\",\"message\":\"etcdserver: no "
			 "leader\",\"code\":14}";
	const char *ctl = "{\"message\":\"a\\u0001\\nb\",\"code\":3}";
	struct ferr err;
	json_t *j, *res = NULL;
	bool retry;

	(void)state;
	assert_int_equal(etcd_parse_error(404, nf, strlen(nf), &retry, &err),
			 -1);
	assert_int_equal(err.code, FERR_NOT_FOUND);
	assert_false(retry);
	assert_non_null(strstr(err.msg, "lease not found"));
	assert_int_equal(etcd_parse_error(503, nl, strlen(nl), &retry, &err),
			 -1);
	assert_int_equal(err.code, FERR_UNAVAILABLE);
	assert_true(retry);
	assert_int_equal(etcd_parse_error(400, ctl, strlen(ctl), &retry, &err),
			 -1);
	assert_int_equal(err.code, FERR_INVALID);
	assert_non_null(strstr(err.msg, "a??b")); /* control bytes cleaned */
	/* not the gateway's error object; the body need not end in NUL */
	assert_int_equal(etcd_parse_error(502, "Bad GatewayXXXX", 11, &retry,
					  &err),
			 -1);
	assert_true(retry);
	assert_non_null(strstr(err.msg, "Bad Gateway"));
	assert_null(strstr(err.msg, "XXXX"));
	assert_int_equal(etcd_parse_error(404, "Not Found", 9, &retry, &err),
			 -1);
	assert_false(retry);
	/* streams: {"result": ...} or {"error": {...}} */
	j = parse("{\"result\":{" HDR "}}");
	assert_int_equal(etcd_stream_result(j, &res, &retry, &err), 0);
	assert_non_null(json_object_get(res, "header"));
	json_decref(j);
	j = parse("{\"error\":{\"grpc_code\":14,\"http_code\":503,"
		  "\"message\":\"etcdserver: no leader\"}}");
	assert_int_equal(etcd_stream_result(j, &res, &retry, &err), -1);
	assert_true(retry);
	json_decref(j);
	j = parse("{\"other\":1}");
	assert_int_equal(etcd_stream_result(j, &res, &retry, &err), -1);
	assert_int_equal(err.code, FERR_IO);
	json_decref(j);
}

static void test_watch_msg(void **state)
{
	const char *events =
		"{\"result\":{" HDR ",\"events\":[{\"kv\":{\"key\":\"" K_A
		"\",\"create_revision\":\"2\",\"mod_revision\":\"3\","
		"\"version\":\"2\",\"value\":\"YmFy\"}},{\"type\":\"DELETE\","
		"\"kv\":{\"key\":\"" K_B "\",\"mod_revision\":\"6\"}}]}}";
	const char *compacted =
		"{\"result\":{\"header\":{\"cluster_id\":\"1\",\"member_id\":"
		"\"2\",\"raft_term\":\"2\"},\"canceled\":true,"
		"\"compact_revision\":\"4\"}}";
	const char *unordered =
		"{\"result\":{" HDR ",\"events\":[{\"kv\":{\"key\":\"" K_A
		"\",\"create_revision\":\"2\",\"mod_revision\":\"9\","
		"\"version\":\"2\"}},{\"type\":\"DELETE\",\"kv\":{\"key\":\"" K_B
		"\",\"mod_revision\":\"6\"}}]}}";
	const char *badtype =
		"{\"result\":{" HDR ",\"events\":[{\"type\":\"MERGE\",\"kv\":"
		"{\"key\":\"" K_B "\",\"mod_revision\":\"6\"}}]}}";
	struct etcd_watch_msg m = { 0 };
	struct ferr err;
	bool retry;

	(void)state;
	assert_int_equal(etcd_parse_watch_msg(events, strlen(events), PFX, &m,
					      &retry, &err),
			 0);
	assert_int_equal(m.n, 2);
	assert_int_equal(m.ev[0].type, ETCD_EVENT_PUT); /* PUT is omitted */
	assert_string_equal((char *)m.ev[0].kv.value, "bar");
	assert_int_equal(m.ev[1].type, ETCD_EVENT_DELETE);
	assert_string_equal(m.ev[1].kv.key, "b");
	assert_int_equal(m.ev[1].kv.mod_revision, 6);
	etcd_watch_msg_clear(&m);
	assert_int_equal(etcd_parse_watch_msg(compacted, strlen(compacted), PFX,
					      &m, &retry, &err),
			 0);
	assert_true(m.canceled);
	assert_int_equal(m.compact_revision, 4);
	etcd_watch_msg_clear(&m);
	assert_int_equal(etcd_parse_watch_msg(unordered, strlen(unordered), PFX,
					      &m, &retry, &err),
			 -1);
	assert_int_equal(err.code, FERR_IO);
	assert_int_equal(etcd_parse_watch_msg(badtype, strlen(badtype), PFX,
					      &m, &retry, &err),
			 -1);
	assert_int_equal(etcd_parse_watch_msg("{\"result\"", 9, PFX, &m,
					      &retry, &err),
			 -1);
	assert_int_equal(err.code, FERR_IO);
	assert_int_equal(m.n, 0);
}

static void test_config(void **state)
{
	struct etcd_config c;
	struct ferr err;

	(void)state;
	etcd_config_defaults(&c);
	snprintf(c.endpoints[0], ETCD_URL_MAX, "https://127.0.0.1:2379");
	snprintf(c.endpoints[1], ETCD_URL_MAX, "https://[::1]:2379");
	c.n_endpoints = 2;
	snprintf(c.ca_file, sizeof(c.ca_file), "ca");
	snprintf(c.cert_file, sizeof(c.cert_file), "c");
	snprintf(c.key_file, sizeof(c.key_file), "k");
	assert_int_equal(etcd_config_check(&c, &err), 0);
	static const char *const bad[] = {
		"http://127.0.0.1:2379", "https://127.0.0.1", "https://host:2379",
		"https://127.0.0.1:0", "https://127.0.0.1:65536",
		"https://127.0.0.1:2379/", "https://[::1:2379", "https://::1:2379",
		"https://127.0.0.1:02379", "https://127.0.0.1:2379 ",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(etcd_endpoint_check(bad[i], &err), -1);
	snprintf(c.endpoints[1], ETCD_URL_MAX, "https://127.0.0.1:2379");
	assert_int_equal(etcd_config_check(&c, &err), -1); /* repeated */
	c.n_endpoints = 1;
	c.member_timeout_ms = c.timeout_ms + 1;
	assert_int_equal(etcd_config_check(&c, &err), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64),   cmocka_unit_test(test_int64),
		cmocka_unit_test(test_keys),     cmocka_unit_test(test_requests),
		cmocka_unit_test(test_range),    cmocka_unit_test(test_txn),
		cmocka_unit_test(test_lease),    cmocka_unit_test(test_errors),
		cmocka_unit_test(test_watch_msg), cmocka_unit_test(test_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
