/* test_ha.c - checkpoint HA: the record format (src/ha/ha_wire.h) and the
 * API's HA routes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api.h"
#include "ha_int.h"
#include "ha_wire.h"

static void roundtrip(uint16_t type, uint64_t seq, uint64_t arg,
		      uint32_t len)
{
	struct ha_rec r = { type, seq, arg, len }, out;
	uint8_t b[HA_REC_LEN];
	struct ferr err = { 0 };

	ha_rec_encode(b, &r);
	assert_int_equal(ha_rec_decode(b, &out, &err), 0);
	assert_int_equal(out.type, type);
	assert_true(out.seq == seq);
	assert_true(out.arg == arg);
	assert_int_equal(out.len, len);
}

static void test_roundtrip(void **state)
{
	(void)state;
	roundtrip(HA_REC_BEGIN, 1, 256ULL << 20, 0);
	roundtrip(HA_REC_PAGES, 7, 12345, HA_PAGES_PER_REC * HA_PAGE_SIZE);
	roundtrip(HA_REC_PAGES, UINT64_MAX, 0, HA_PAGE_SIZE);
	roundtrip(HA_REC_DEVICE, 2, 0, HA_DEVSTATE_MAX);
	roundtrip(HA_REC_COMMIT, 2, 99, HA_DIGEST_LEN);
	roundtrip(HA_REC_ACK, 2, HA_ACK_REFUSED, 0);
	roundtrip(HA_REC_HELLO, 0, 0, 0);
	roundtrip(HA_REC_HELLO, 0, 41, 0);
	roundtrip(HA_REC_DISK, 3, 512, HA_DISK_CHUNK);
	roundtrip(HA_REC_DISK, 3, HA_DISK_MAX - HA_SECTOR, HA_SECTOR);
}

static void test_layout(void **state)
{
	struct ha_rec r = { HA_REC_PAGES, 0x0102030405060708ULL, 9,
			    HA_PAGE_SIZE };
	uint8_t b[HA_REC_LEN];

	(void)state;
	ha_rec_encode(b, &r);
	assert_memory_equal(b + HA_REC_OFF_MAGIC, "FHAC", 4);
	assert_int_equal(b[HA_REC_OFF_VERSION], HA_VERSION);
	assert_int_equal(b[HA_REC_OFF_TYPE], HA_REC_PAGES);
	assert_int_equal(b[HA_REC_OFF_SEQ], 0x08); /* little-endian */
	assert_int_equal(b[HA_REC_OFF_SEQ + 7], 0x01);
	assert_int_equal(b[HA_REC_OFF_LEN + 1], HA_PAGE_SIZE >> 8);
}

/* The fence agent's control messages: a round trip, the layout, and each
 * refusal (bad magic, version, command, a DISARM with a deadline). */
static void test_fence_msg(void **state)
{
	uint8_t b[HA_FENCE_MSG_LEN];
	struct ferr err = { 0 };
	uint64_t d = 0;
	uint16_t cmd = 0;

	(void)state;
	ha_fence_encode(b, HA_FENCE_ARM, 0x0102030405060708ULL);
	assert_memory_equal(b + HA_FENCE_OFF_MAGIC, "FHFA", 4);
	assert_int_equal(b[HA_FENCE_OFF_DEADLINE], 0x08);
	assert_int_equal(ha_fence_decode(b, &cmd, &d, &err), 0);
	assert_int_equal(cmd, HA_FENCE_ARM);
	assert_true(d == 0x0102030405060708ULL);
	ha_fence_encode(b, HA_FENCE_DISARM, 0);
	assert_int_equal(ha_fence_decode(b, &cmd, &d, &err), 0);
	assert_int_equal(cmd, HA_FENCE_DISARM);
	ha_fence_encode(b, HA_FENCE_DISARM, 5);
	assert_int_equal(ha_fence_decode(b, &cmd, &d, &err), -1);
	ha_fence_encode(b, 3, 5);
	assert_int_equal(ha_fence_decode(b, &cmd, &d, &err), -1);
	assert_non_null(strstr(err.msg, "command 3"));
	ha_fence_encode(b, HA_FENCE_ARM, 5);
	b[HA_FENCE_OFF_VERSION] ^= 1;
	assert_int_equal(ha_fence_decode(b, &cmd, &d, &err), -1);
	ha_fence_encode(b, HA_FENCE_ARM, 5);
	b[HA_FENCE_OFF_MAGIC] ^= 1;
	assert_int_equal(ha_fence_decode(b, &cmd, &d, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
}

/* Encode r, change byte `at` to v (when at >= 0), and expect a refusal. */
static void refused(struct ha_rec r, int at, uint8_t v, const char *needle)
{
	uint8_t b[HA_REC_LEN];
	struct ha_rec out;
	struct ferr err = { 0 };

	ha_rec_encode(b, &r);
	if (at >= 0)
		b[at] = v;
	assert_int_equal(ha_rec_decode(b, &out, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	assert_non_null(strstr(err.msg, needle));
}

static void test_refusals(void **state)
{
	struct ha_rec ok = { HA_REC_PAGES, 3, 0, HA_PAGE_SIZE };

	(void)state;
	refused(ok, HA_REC_OFF_MAGIC, 'X', "magic");
	refused(ok, HA_REC_OFF_VERSION, 2, "version");
	refused(ok, HA_REC_OFF_RESERVED + 3, 1, "reserved");
	refused(ok, HA_REC_OFF_TYPE, 99, "unknown type");
	refused((struct ha_rec){ HA_REC_PAGES, 0, 0, HA_PAGE_SIZE }, -1,
		0, "sequence");
	refused((struct ha_rec){ HA_REC_HELLO, 1, 0, 0 }, -1, 0, "sequence");
	refused((struct ha_rec){ HA_REC_PAGES, 1, 0, 100 }, -1, 0, "range");
	refused((struct ha_rec){ HA_REC_PAGES, 1, 0, 0 }, -1, 0, "range");
	refused((struct ha_rec){ HA_REC_PAGES, 1, 0,
				 (HA_PAGES_PER_REC + 1) * HA_PAGE_SIZE },
		-1, 0, "range");
	refused((struct ha_rec){ HA_REC_PAGES, 1, HA_RAM_MAX / HA_PAGE_SIZE,
				 HA_PAGE_SIZE },
		-1, 0, "range");
	refused((struct ha_rec){ HA_REC_DEVICE, 1, 0, HA_DEVSTATE_MAX + 1 },
		-1, 0, "range");
	refused((struct ha_rec){ HA_REC_DEVICE, 1, 0, 0 }, -1, 0, "range");
	refused((struct ha_rec){ HA_REC_COMMIT, 1, 0, 31 }, -1, 0, "range");
	refused((struct ha_rec){ HA_REC_BEGIN, 1, 4095, 0 }, -1, 0, "range");
	refused((struct ha_rec){ HA_REC_BEGIN, 1, 0, 0 }, -1, 0, "range");
	refused((struct ha_rec){ HA_REC_BEGIN, 1, HA_RAM_MAX + HA_PAGE_SIZE,
				 0 },
		-1, 0, "range");
	refused((struct ha_rec){ HA_REC_ACK, 1, 2, 0 }, -1, 0, "range");
	refused((struct ha_rec){ HA_REC_DISK, 1, 100, HA_SECTOR }, -1, 0,
		"range");
	refused((struct ha_rec){ HA_REC_DISK, 1, 0, 100 }, -1, 0, "range");
	refused((struct ha_rec){ HA_REC_DISK, 1, 0, 0 }, -1, 0, "range");
	refused((struct ha_rec){ HA_REC_DISK, 1, 0, HA_DISK_CHUNK + HA_SECTOR },
		-1, 0, "range");
	refused((struct ha_rec){ HA_REC_DISK, 1, HA_DISK_MAX - HA_SECTOR,
				 2 * HA_SECTOR },
		-1, 0, "range");
	refused((struct ha_rec){ HA_REC_ACK, 1, 0, 4 }, -1, 0, "range");
}

static void route(const char *method, const char *uri, const char *body,
		  enum api_route want, enum perm perm, const char *action)
{
	struct api_request req;
	struct ferr err = { 0 };

	assert_int_equal(api_parse_request(method, uri, body,
					   body ? strlen(body) : 0, &req,
					   &err),
			 0);
	assert_int_equal(req.route, want);
	assert_int_equal(api_route_perm(want), perm);
	if (action)
		assert_string_equal(api_route_action(want), action);
	else
		assert_null(api_route_action(want));
	api_request_clear(&req);
}

static void test_routes(void **state)
{
	struct api_request req;
	struct ferr err = { 0 };

	(void)state;
	route("POST", "/v1/vms/vm1/ha", "{\"backup\": \"b\"}", ROUTE_HA_ENABLE,
	      PERM_VM_MIGRATE, "ha.enable");
	route("DELETE", "/v1/vms/vm1/ha", NULL, ROUTE_HA_DISABLE,
	      PERM_VM_MIGRATE, "ha.disable");
	route("GET", "/v1/vms/vm1/ha", NULL, ROUTE_HA_STATUS, PERM_VM_READ,
	      NULL);
	route("POST", "/v1/vms/vm1/failover", NULL, ROUTE_HA_FAILOVER,
	      PERM_VM_MIGRATE, "ha.failover_request");
	route("GET", "/v1/ha", NULL, ROUTE_HA_LIST, PERM_VM_READ, NULL);
	route("POST", "/v1/standby", "{}", ROUTE_STANDBY_PREPARE,
	      PERM_MIG_PEER, "ha.standby_prepare");
	route("DELETE", "/v1/standby/0123abcd-0000-4000-8000-00000000beef",
	      NULL, ROUTE_STANDBY_DISCARD, PERM_MIG_PEER,
	      "ha.standby_discard_request");
	route("POST", "/v1/ha/adopt", "{}", ROUTE_HA_ADOPT, PERM_MIG_PEER,
	      "ha.adopt_request");
	/* enable needs a body; failover takes none but {} */
	assert_int_equal(api_parse_request("POST", "/v1/vms/vm1/ha", NULL, 0,
					   &req, &err),
			 -1);
	assert_int_equal(err.code, FERR_INVALID);
	assert_int_equal(api_parse_request("POST", "/v1/vms/vm1/failover",
					   "{\"x\": 1}", 8, &req, &err),
			 -1);
	assert_int_equal(api_parse_request("PUT", "/v1/vms/vm1/ha", NULL, 0,
					   &req, &err),
			 -1);
	assert_int_equal(err.code, FERR_METHOD);
}

static struct ha_peer_cfg peer(const char *host)
{
	struct ha_peer_cfg p = { .port = 7443 };

	snprintf(p.host, sizeof(p.host), "%s", host);
	snprintf(p.address, sizeof(p.address), "127.0.0.9");
	return p;
}

/* The order in which a new backup is tried: the one it had first (not
 * this host), ha_peers in order, the host the VM left last, each once. */
static void test_cand_order(void **state)
{
	struct ha_peer_cfg peers[] = { peer("a"), peer("b"), peer("c"),
				       peer("b") };
	struct ha_peer_cfg out[8], pre = peer("c"), self = peer("b");
	size_t n;

	(void)state;
	/* after a failover on b from a: c first, a last, never b */
	n = ha_cand_order(peers, 4, NULL, "b", "a", out, 8);
	assert_int_equal(n, 2);
	assert_string_equal(out[0].host, "c");
	assert_string_equal(out[1].host, "a");
	/* a migration to d with backup c: c first, then the others */
	n = ha_cand_order(peers, 4, &pre, "d", NULL, out, 8);
	assert_int_equal(n, 3);
	assert_string_equal(out[0].host, "c");
	assert_string_equal(out[1].host, "a");
	assert_string_equal(out[2].host, "b");
	/* migrated to its backup: that host is never its own backup */
	n = ha_cand_order(peers, 4, &self, "b", NULL, out, 8);
	assert_int_equal(n, 2);
	assert_string_equal(out[0].host, "a");
	assert_string_equal(out[1].host, "c");
	/* the host left, when it is the only one; none; the bound */
	n = ha_cand_order(peers, 1, NULL, "b", "a", out, 8);
	assert_int_equal(n, 1);
	assert_string_equal(out[0].host, "a");
	assert_int_equal(ha_cand_order(peers, 0, NULL, "b", "a", out, 8), 0);
	assert_int_equal(ha_cand_order(peers, 4, &pre, "d", NULL, out, 2), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_fence_msg),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_cand_order),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
