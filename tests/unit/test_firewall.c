/* Unit tests of the firewall component's pure parts: the rule parser
 * (firewall.h: fw_policy_from_json, fw_cluster_from_json, fw_effective,
 * canonical JSON, digest) and the connection-tracking wire format
 * (ct_wire.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ct_wire.h"
#include "firewall.h"

/* ---- rules ---- */

static json_t *load(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
			      &je);

	if (!j)
		fail_msg("bad test JSON: %s: %s", text, je.text);
	return j;
}

static void parse_ok(const char *text, struct fw_policy *p)
{
	json_t *j = load(text);
	struct ferr err = { 0 };

	if (fw_policy_from_json(j, "firewall", p, &err) < 0)
		fail_msg("refused %s: %s", text, err.msg);
	json_decref(j);
}

/* text is refused with FERR_INVALID and exactly msg. */
static void parse_bad(const char *text, const char *msg)
{
	json_t *j = load(text);
	struct ferr err = { 0 };
	struct fw_policy p;

	if (fw_policy_from_json(j, "firewall", &p, &err) == 0)
		fail_msg("accepted %s", text);
	json_decref(j);
	assert_int_equal(err.code, FERR_INVALID);
	if (strcmp(err.msg, msg) != 0)
		fail_msg("%s\n  got:  %s\n  want: %s", text, err.msg, msg);
}

static void test_parse_good(void **state)
{
	struct fw_policy p;

	(void)state;
	parse_ok("{\"default\": \"drop\", \"rules\": ["
		 " {\"dir\": \"in\", \"proto\": \"tcp\", \"port\": 22,"
		 "  \"from\": \"10.0.0.0/8\"},"
		 " {\"dir\": \"out\", \"action\": \"drop\", \"proto\": \"udp\","
		 "  \"port\": \"8000-8080\", \"to\": \"2001:db8::/32\"},"
		 " {\"dir\": \"in\", \"proto\": \"icmp\", \"from\": \"192.0.2.7\"},"
		 " {\"dir\": \"in\", \"proto\": \"icmpv6\"},"
		 " {\"dir\": \"out\"}]}",
		 &p);
	assert_true(p.present);
	assert_int_equal(p.origin, FW_ORIGIN_VM);
	assert_int_equal(p.def, FW_DROP);
	assert_int_equal(p.nrules, 5);
	assert_int_equal(p.rules[0].dir, FW_IN);
	assert_int_equal(p.rules[0].action, FW_ACCEPT);
	assert_int_equal(p.rules[0].proto, FW_PROTO_TCP);
	assert_int_equal(p.rules[0].port_lo, 22);
	assert_int_equal(p.rules[0].port_hi, 22);
	assert_int_equal(p.rules[0].peer.family, 4);
	assert_int_equal(p.rules[0].peer.prefix, 8);
	assert_int_equal(p.rules[0].peer.addr[0], 10);
	assert_int_equal(p.rules[1].dir, FW_OUT);
	assert_int_equal(p.rules[1].action, FW_DROP);
	assert_int_equal(p.rules[1].port_lo, 8000);
	assert_int_equal(p.rules[1].port_hi, 8080);
	assert_int_equal(p.rules[1].peer.family, 6);
	assert_int_equal(p.rules[1].peer.prefix, 32);
	assert_int_equal(p.rules[1].peer.addr[0], 0x20);
	assert_int_equal(p.rules[1].peer.addr[3], 0xb8);
	/* one address is its /32 */
	assert_int_equal(p.rules[2].peer.prefix, 32);
	assert_int_equal(p.rules[2].proto, FW_PROTO_ICMP);
	assert_int_equal(p.rules[3].peer.family, 0);
	assert_int_equal(p.rules[4].proto, FW_PROTO_ANY);
	assert_int_equal(p.rules[4].port_lo, 0);

	/* no rules at all; edges of the ranges */
	parse_ok("{\"default\": \"accept\"}", &p);
	assert_true(p.present);
	assert_int_equal(p.def, FW_ACCEPT);
	assert_int_equal(p.nrules, 0);
	parse_ok("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		 " \"proto\": \"udp\", \"port\": \"1-65535\", \"from\": \"0.0.0.0/0\"},"
		 " {\"dir\": \"in\", \"proto\": \"tcp\", \"port\": 65535,"
		 "  \"from\": \"::/0\"}]}",
		 &p);
	assert_int_equal(p.rules[0].port_lo, 1);
	assert_int_equal(p.rules[0].port_hi, 65535);
	assert_int_equal(p.rules[0].peer.family, 4);
	assert_int_equal(p.rules[0].peer.prefix, 0);
	assert_int_equal(p.rules[1].peer.family, 6);
	assert_int_equal(p.rules[1].peer.prefix, 0);
}

static void test_parse_bad(void **state)
{
	(void)state;
	parse_bad("[]", "firewall must be a JSON object");
	parse_bad("{}", "firewall.default is required (\"accept\" or \"drop\")");
	parse_bad("{\"default\": \"reject\"}",
		  "firewall.default must be one of \"accept\", \"drop\"");
	parse_bad("{\"default\": 1}", "firewall.default must be a string");
	parse_bad("{\"default\": \"drop\", \"extra\": 1}",
		  "firewall: unknown field \"extra\"");
	parse_bad("{\"default\": \"drop\", \"rules\": {}}",
		  "firewall.rules must be an array");
	parse_bad("{\"default\": \"drop\", \"rules\": [1]}",
		  "firewall.rules[0] must be a JSON object");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\"},"
		  " {\"proto\": \"tcp\"}]}",
		  "firewall.rules[1].dir is required (\"in\" or \"out\")");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"up\"}]}",
		  "firewall.rules[0].dir must be one of \"in\", \"out\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"action\": \"reject\"}]}",
		  "firewall.rules[0].action must be one of \"accept\", \"drop\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"sctp\"}]}",
		  "firewall.rules[0].proto must be one of \"any\", \"tcp\", "
		  "\"udp\", \"icmp\", \"icmpv6\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"port\": 22}]}",
		  "firewall.rules[0].port needs \"proto\": \"tcp\" or \"udp\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"icmp\", \"port\": 22}]}",
		  "firewall.rules[0].port needs \"proto\": \"tcp\" or \"udp\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"tcp\", \"port\": 0}]}",
		  "firewall.rules[0].port must be 1..65535");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"tcp\", \"port\": 65536}]}",
		  "firewall.rules[0].port must be 1..65535");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"tcp\", \"port\": \"22\"}]}",
		  "firewall.rules[0].port must be a port (1..65535) or a range "
		  "\"LOW-HIGH\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"tcp\", \"port\": \"0-10\"}]}",
		  "firewall.rules[0].port must be a port (1..65535) or a range "
		  "\"LOW-HIGH\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"tcp\", \"port\": \"1-+2\"}]}",
		  "firewall.rules[0].port must be a port (1..65535) or a range "
		  "\"LOW-HIGH\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"tcp\", \"port\": 22.5}]}",
		  "firewall.rules[0].port must be a port (1..65535) or a range "
		  "\"LOW-HIGH\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"tcp\", \"port\": \"80-90\\u0000junk\"}]}",
		  "firewall.rules[0].port must be a port (1..65535) or a range "
		  "\"LOW-HIGH\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"udp\", \"port\": \"90-80\"}]}",
		  "firewall.rules[0].port range 90-80 runs backwards");
	/* the example: a prefix with host bits */
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"tcp\", \"port\": 22, \"from\": \"10.0.0.1/8\"}]}",
		  "firewall.rules[0].from \"10.0.0.1/8\" has host bits set "
		  "beyond /8");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"out\","
		  " \"to\": \"2001:db8::1/64\"}]}",
		  "firewall.rules[0].to \"2001:db8::1/64\" has host bits set "
		  "beyond /64");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"to\": \"10.0.0.0/8\"}]}",
		  "firewall.rules[0]: a rule with \"dir\": \"in\" takes "
		  "\"from\", not \"to\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"out\","
		  " \"from\": \"10.0.0.0/8\"}]}",
		  "firewall.rules[0]: a rule with \"dir\": \"out\" takes "
		  "\"to\", not \"from\"");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"icmp\", \"from\": \"2001:db8::/32\"}]}",
		  "firewall.rules[0]: proto icmp does not go with the IPv6 "
		  "address 2001:db8::/32");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"proto\": \"icmpv6\", \"from\": \"10.0.0.0/8\"}]}",
		  "firewall.rules[0]: proto icmpv6 does not go with the IPv4 "
		  "address 10.0.0.0/8");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"from\": 10}]}",
		  "firewall.rules[0].from must be a string");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"from\": \"10.0.0.0/x\"}]}",
		  "firewall.rules[0].from \"10.0.0.0/x\" is not an IPv4 or IPv6 "
		  "address or prefix (ADDR or ADDR/BITS)");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"from\": \"10.0.0.0/33\"}]}",
		  "firewall.rules[0].from \"10.0.0.0/33\" is not an IPv4 or IPv6 "
		  "address or prefix (ADDR or ADDR/BITS)");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"from\": \"10.0.0.0/08\"}]}",
		  "firewall.rules[0].from \"10.0.0.0/08\" is not an IPv4 or IPv6 "
		  "address or prefix (ADDR or ADDR/BITS)");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"from\": \"10.0.0.0/\"}]}",
		  "firewall.rules[0].from \"10.0.0.0/\" is not an IPv4 or IPv6 "
		  "address or prefix (ADDR or ADDR/BITS)");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"from\": \"/8\"}]}",
		  "firewall.rules[0].from \"/8\" is not an IPv4 or IPv6 "
		  "address or prefix (ADDR or ADDR/BITS)");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"from\": \"fe80::1%eth0\"}]}",
		  "firewall.rules[0].from \"fe80::1%eth0\" is not an IPv4 or IPv6 "
		  "address or prefix (ADDR or ADDR/BITS)");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"from\": \"10.0.0.0\\u00008\"}]}",
		  "firewall.rules[0].from contains a NUL byte");
	parse_bad("{\"default\": \"drop\", \"rules\": [{\"dir\": \"in\","
		  " \"color\": \"red\"}]}",
		  "firewall.rules[0]: unknown field \"color\"");
}

static void test_rule_limit(void **state)
{
	json_t *obj = load("{\"default\": \"drop\"}");
	json_t *rules = json_array();
	struct fw_policy p;
	struct ferr err = { 0 };
	char want[128];

	(void)state;
	json_object_set_new(obj, "rules", rules);
	for (int i = 0; i < FERRY_FW_RULES_MAX; i++)
		json_array_append_new(rules, json_pack("{s:s}", "dir", "in"));
	assert_int_equal(fw_policy_from_json(obj, "vm.firewall", &p, &err), 0);
	assert_int_equal(p.nrules, FERRY_FW_RULES_MAX);
	json_array_append_new(rules, json_pack("{s:s}", "dir", "in"));
	assert_int_equal(fw_policy_from_json(obj, "vm.firewall", &p, &err), -1);
	snprintf(want, sizeof(want), "vm.firewall.rules has %d rules; at most %d",
		 FERRY_FW_RULES_MAX + 1, FERRY_FW_RULES_MAX);
	assert_string_equal(err.msg, want);
	json_decref(obj);
}

static void test_round_trip_and_digest(void **state)
{
	const char *text =
		"{\"rules\": [{\"to\": \"2001:db8:0:0::/32\", \"dir\": \"out\","
		" \"proto\": \"udp\", \"port\": \"53-53\"},"
		" {\"dir\": \"in\", \"proto\": \"tcp\", \"port\": \"1000-2000\","
		"  \"from\": \"192.0.2.1\"}], \"default\": \"drop\"}";
	struct fw_policy p, q;
	char d1[FW_DIGEST_HEX + 1], d2[FW_DIGEST_HEX + 1];
	json_t *j, *want;
	char *s;

	(void)state;
	parse_ok(text, &p);
	j = fw_policy_to_json(&p);
	assert_non_null(j);
	/* canonical: every rule spelled out, single ports as numbers,
	 * addresses as ADDR/BITS */
	want = load("{\"default\": \"drop\", \"rules\": ["
		    "{\"dir\": \"out\", \"action\": \"accept\", \"proto\": \"udp\","
		    " \"port\": 53, \"to\": \"2001:db8::/32\"},"
		    "{\"dir\": \"in\", \"action\": \"accept\", \"proto\": \"tcp\","
		    " \"port\": \"1000-2000\", \"from\": \"192.0.2.1/32\"}]}");
	if (!json_equal(j, want)) {
		s = json_dumps(j, JSON_SORT_KEYS);
		fail_msg("canonical JSON: %s", s);
	}
	/* and it parses back to the same policy */
	assert_int_equal(fw_policy_from_json(j, "x", &q, NULL), 0);
	assert_memory_equal(&p, &q, sizeof(p));
	fw_policy_digest(&p, d1);
	fw_policy_digest(&q, d2);
	assert_int_equal(strlen(d1), FW_DIGEST_HEX);
	assert_string_equal(d1, d2);
	/* the origin is not content */
	q.origin = FW_ORIGIN_DEFAULT;
	fw_policy_digest(&q, d2);
	assert_string_equal(d1, d2);
	/* any change of content changes it */
	q = p;
	q.rules[1].port_hi = 2001;
	fw_policy_digest(&q, d2);
	assert_string_not_equal(d1, d2);
	q = p;
	q.def = FW_ACCEPT;
	fw_policy_digest(&q, d2);
	assert_string_not_equal(d1, d2);
	q = p;
	q.nrules = 1;
	fw_policy_digest(&q, d2);
	assert_string_not_equal(d1, d2);
	/* rule order matters (first match wins) */
	q = p;
	q.rules[0] = p.rules[1];
	q.rules[1] = p.rules[0];
	fw_policy_digest(&q, d2);
	assert_string_not_equal(d1, d2);
	json_decref(j);
	json_decref(want);

	/* not present: null, with its own digest */
	memset(&q, 0, sizeof(q));
	j = fw_policy_to_json(&q);
	assert_true(json_is_null(j));
	json_decref(j);
	fw_policy_digest(&q, d2);
	assert_int_equal(strlen(d2), FW_DIGEST_HEX);
	assert_string_not_equal(d1, d2);
}

static void test_digest_pinned(void **state)
{
	struct fw_policy p;
	char d[FW_DIGEST_HEX + 1];

	(void)state;
	/* sha256('{"default":"drop","rules":[]}')[0:8]: hosts of different
	 * builds must agree on it */
	parse_ok("{\"default\": \"drop\", \"rules\": []}", &p);
	fw_policy_digest(&p, d);
	assert_string_equal(d, "6fe2444afb6a225e");
	/* keys sorted, compact: sha256('{"default":"drop","rules":[{"action":
	 * "accept","dir":"in","from":"10.0.0.0/8","port":22,"proto":"tcp"}]}') */
	parse_ok("{\"rules\": [{\"port\": 22, \"proto\": \"tcp\", \"dir\": \"in\","
		 " \"from\": \"10.0.0.0/8\"}], \"default\": \"drop\"}",
		 &p);
	fw_policy_digest(&p, d);
	assert_string_equal(d, "a1e57c740946c7ec");
}

static void test_cluster_and_effective(void **state)
{
	struct fw_cluster c;
	struct fw_policy own, out;
	struct ferr err = { 0 };
	json_t *j;

	(void)state;
	j = load("{\"default\": {\"default\": \"drop\", \"rules\": ["
		 "{\"dir\": \"in\", \"proto\": \"tcp\", \"port\": 22}]},"
		 " \"required\": true, \"accept_default\": \"deny\"}");
	assert_int_equal(fw_cluster_from_json(j, "policy.firewall", &c, &err), 0);
	json_decref(j);
	assert_true(c.def.present);
	assert_int_equal(c.def.origin, FW_ORIGIN_DEFAULT);
	assert_true(c.required);
	assert_true(c.deny_accept);

	/* a VM without rules gets the default */
	memset(&own, 0, sizeof(own));
	assert_int_equal(fw_effective(&c, &own, &out, &err), 0);
	assert_true(out.present);
	assert_int_equal(out.origin, FW_ORIGIN_DEFAULT);
	assert_int_equal(out.rules[0].port_lo, 22);
	/* its own rules win */
	parse_ok("{\"default\": \"drop\"}", &own);
	assert_int_equal(fw_effective(&c, &own, &out, &err), 0);
	assert_int_equal(out.origin, FW_ORIGIN_VM);
	assert_int_equal(out.nrules, 0);
	/* its own "accept" default is refused */
	parse_ok("{\"default\": \"accept\"}", &own);
	assert_int_equal(fw_effective(&c, &own, &out, &err), -1);
	assert_int_equal(err.code, FERR_FORBIDDEN);
	assert_non_null(strstr(err.msg, "firewall.accept_default: deny"));
	/* required, and no default: refused */
	memset(&own, 0, sizeof(own));
	c.def.present = false;
	assert_int_equal(fw_effective(&c, &own, &out, &err), -1);
	assert_int_equal(err.code, FERR_FORBIDDEN);
	assert_non_null(strstr(err.msg, "firewall.required"));
	/* neither required nor a default: no rules, fine */
	c.required = false;
	assert_int_equal(fw_effective(&c, &own, &out, &err), 0);
	assert_false(out.present);

	/* the cluster's own checks */
	j = load("{\"default\": {\"default\": \"accept\"},"
		 " \"accept_default\": \"deny\"}");
	assert_int_equal(fw_cluster_from_json(j, "policy.firewall", &c, &err), -1);
	assert_string_equal(err.msg,
			    "policy.firewall.default has \"default\": \"accept\", "
			    "which accept_default \"deny\" refuses");
	json_decref(j);
	j = load("{\"default\": {\"default\": \"drop\", \"rules\": [{}]}}");
	assert_int_equal(fw_cluster_from_json(j, "policy.firewall", &c, &err), -1);
	assert_string_equal(err.msg, "policy.firewall.default.rules[0].dir is "
				     "required (\"in\" or \"out\")");
	json_decref(j);
	j = load("{\"required\": \"yes\"}");
	assert_int_equal(fw_cluster_from_json(j, "policy.firewall", &c, &err), -1);
	assert_string_equal(err.msg, "policy.firewall.required must be true or false");
	json_decref(j);
	j = load("{\"accept_default\": \"maybe\"}");
	assert_int_equal(fw_cluster_from_json(j, "policy.firewall", &c, &err), -1);
	assert_string_equal(err.msg, "policy.firewall.accept_default must be one "
				     "of \"allow\", \"deny\"");
	json_decref(j);
	j = load("{}");
	assert_int_equal(fw_cluster_from_json(j, "policy.firewall", &c, &err), 0);
	assert_false(c.def.present || c.required || c.deny_accept);
	json_decref(j);
}

static void test_tag(void **state)
{
	(void)state;
	/* the first 29 bits of the uuid; never 0 */
	assert_int_equal(fw_tag("0badc0de-0000-4000-8000-000000000000"),
			 0x0badc0de & 0x1fffffff);
	assert_int_equal(fw_tag("fffffffe-0000-4000-8000-000000000000"),
			 0x1ffffffe);
	assert_int_not_equal(fw_tag("00000000-0000-4000-8000-000000000000"), 0);
	assert_int_not_equal(fw_tag("e0000000-0000-4000-8000-000000000000"), 0);
}

/* ---- the connection-tracking wire format ---- */

static struct fw_ct_flow tcp_flow(void)
{
	struct fw_ct_flow f = {
		.family = 4, .proto = 6, .tcp_state = 3,
		.status = FW_CT_STATUS_KNOWN, .timeout = 432000,
		.sport = 40000, .dport = 22,
		.wscale = { 7, 14 }, .tcp_flags = { 0x07, 0x03 },
		.src = { 10, 0, 0, 1 }, .dst = { 192, 0, 2, 9 },
	};
	return f;
}

static void check_flow_equal(const struct fw_ct_flow *a,
			     const struct fw_ct_flow *b)
{
	assert_int_equal(a->family, b->family);
	assert_int_equal(a->proto, b->proto);
	assert_int_equal(a->tcp_state, b->tcp_state);
	assert_int_equal(a->status, b->status);
	assert_int_equal(a->timeout, b->timeout);
	assert_int_equal(a->sport, b->sport);
	assert_int_equal(a->dport, b->dport);
	assert_int_equal(a->icmp_type, b->icmp_type);
	assert_int_equal(a->icmp_code, b->icmp_code);
	assert_memory_equal(a->wscale, b->wscale, 2);
	assert_memory_equal(a->tcp_flags, b->tcp_flags, 2);
	assert_memory_equal(a->src, b->src, 16);
	assert_memory_equal(a->dst, b->dst, 16);
}

static void test_ct_header(void **state)
{
	uint8_t h[FW_CT_HDR_LEN];
	uint32_t count = 0;
	struct ferr err = { 0 };

	(void)state;
	fw_ct_encode_header(h, 3);
	/* little-endian, fixed places */
	assert_memory_equal(h, "FCTX", 4);
	assert_int_equal(h[FW_CT_HDR_OFF_VERSION], FW_CT_VERSION);
	assert_int_equal(h[FW_CT_HDR_OFF_VERSION + 1], 0);
	assert_int_equal(h[FW_CT_HDR_OFF_COUNT], 3);
	assert_int_equal(fw_ct_decode_header(h, &count, &err), 0);
	assert_int_equal(count, 3);

	fw_ct_encode_header(h, FERRY_FW_CT_FLOWS_MAX);
	assert_int_equal(fw_ct_decode_header(h, &count, &err), 0);
	assert_int_equal(count, FERRY_FW_CT_FLOWS_MAX);
	fw_ct_encode_header(h, FERRY_FW_CT_FLOWS_MAX + 1);
	assert_int_equal(fw_ct_decode_header(h, &count, &err), -1);
	assert_int_equal(err.code, FERR_INVALID);
	assert_non_null(strstr(err.msg, "at most 65536"));
	fw_ct_encode_header(h, UINT32_MAX);
	assert_int_equal(fw_ct_decode_header(h, &count, &err), -1);

	fw_ct_encode_header(h, 1);
	h[0] ^= 1;
	assert_int_equal(fw_ct_decode_header(h, &count, &err), -1);
	assert_string_equal(err.msg, "connection context: bad magic");
	fw_ct_encode_header(h, 1);
	h[FW_CT_HDR_OFF_VERSION] = 2;
	assert_int_equal(fw_ct_decode_header(h, &count, &err), -1);
	assert_string_equal(err.msg, "connection context: version 2 is not 1");
	fw_ct_encode_header(h, 1);
	h[FW_CT_HDR_OFF_VERSION + 1] = 1;
	assert_int_equal(fw_ct_decode_header(h, &count, &err), -1);
	assert_string_equal(err.msg, "connection context: version 257 is not 1");
	for (int off = FW_CT_HDR_OFF_FLAGS; off < FW_CT_HDR_LEN; off++) {
		if (off >= FW_CT_HDR_OFF_COUNT && off < FW_CT_HDR_OFF_RESERVED)
			continue;
		fw_ct_encode_header(h, 1);
		h[off] = 0x80;
		assert_int_equal(fw_ct_decode_header(h, &count, &err), -1);
		assert_string_equal(err.msg,
				    "connection context: reserved bits set");
	}
}

static void test_ct_record_round_trip(void **state)
{
	uint8_t r[FW_CT_REC_LEN];
	struct fw_ct_flow f = tcp_flow(), g;
	struct ferr err = { 0 };

	(void)state;
	fw_ct_encode(r, &f);
	/* the layout */
	assert_int_equal(r[FW_CT_REC_OFF_FAMILY], 4);
	assert_int_equal(r[FW_CT_REC_OFF_PROTO], 6);
	assert_int_equal(r[FW_CT_REC_OFF_TIMEOUT], 432000 & 0xff);
	assert_int_equal(r[FW_CT_REC_OFF_TIMEOUT + 2], 432000 >> 16);
	assert_int_equal(r[FW_CT_REC_OFF_SPORT], 40000 & 0xff);
	assert_int_equal(r[FW_CT_REC_OFF_SPORT + 1], 40000 >> 8);
	assert_int_equal(r[FW_CT_REC_OFF_SRC], 10);
	assert_int_equal(r[FW_CT_REC_OFF_DST + 3], 9);
	assert_int_equal(fw_ct_decode(r, &g, &err), 0);
	check_flow_equal(&f, &g);

	/* IPv6 UDP */
	memset(&f, 0, sizeof(f));
	f.family = 6;
	f.proto = 17;
	f.timeout = 30;
	f.sport = 5353;
	f.dport = 53;
	f.src[0] = 0x20;
	f.src[1] = 0x01;
	f.src[15] = 1;
	f.dst[0] = 0xfe;
	f.dst[1] = 0x80;
	f.dst[15] = 2;
	fw_ct_encode(r, &f);
	assert_int_equal(fw_ct_decode(r, &g, &err), 0);
	check_flow_equal(&f, &g);

	/* ICMP echo: the id in sport, id 0 is fine */
	memset(&f, 0, sizeof(f));
	f.family = 4;
	f.proto = 1;
	f.timeout = 1;
	f.icmp_type = 8;
	f.status = FW_CT_STATUS_SEEN_REPLY;
	memcpy(f.src, (uint8_t[]){ 10, 1, 2, 3 }, 4);
	memcpy(f.dst, (uint8_t[]){ 10, 1, 2, 4 }, 4);
	fw_ct_encode(r, &f);
	assert_int_equal(fw_ct_decode(r, &g, &err), 0);
	check_flow_equal(&f, &g);
	/* ICMPv6 */
	memset(&f, 0, sizeof(f));
	f.family = 6;
	f.proto = 58;
	f.timeout = 30;
	f.sport = 7;
	f.icmp_type = 128;
	f.src[0] = 0x20;
	f.src[15] = 1;
	f.dst[0] = 0x20;
	f.dst[15] = 2;
	fw_ct_encode(r, &f);
	assert_int_equal(fw_ct_decode(r, &g, &err), 0);
	check_flow_equal(&f, &g);
}

/* A record made from tcp_flow() by mutate is refused with a message
 * containing want. */
static void ct_bad(void (*mutate)(struct fw_ct_flow *, uint8_t *),
		   const char *want)
{
	uint8_t r[FW_CT_REC_LEN];
	struct fw_ct_flow f = tcp_flow(), g;
	struct ferr err = { 0 };

	fw_ct_encode(r, &f);
	mutate(&f, r);
	if (fw_ct_decode(r, &g, &err) == 0)
		fail_msg("accepted a record that should be refused (%s)", want);
	assert_int_equal(err.code, FERR_INVALID);
	if (!strstr(err.msg, want))
		fail_msg("got \"%s\", want \"%s\"", err.msg, want);
}

#define MUT(name, body)                                                  \
	static void name(struct fw_ct_flow *f, uint8_t *r)               \
	{                                                                \
		(void)f;                                                 \
		(void)r;                                                 \
		body;                                                    \
	}

/* re-encode after changing f */
#define REENC(name, body) MUT(name, { body; fw_ct_encode(r, f); })

REENC(m_family, f->family = 5)
REENC(m_family0, f->family = 0)
REENC(m_proto, f->proto = 132)
REENC(m_icmpv6_over_4, {
	f->proto = 58;
	f->tcp_state = 0;
	memset(f->wscale, 0, 2);
	memset(f->tcp_flags, 0, 2);
	f->dport = 0;
})
REENC(m_status, f->status |= 0x8)
REENC(m_timeout0, f->timeout = 0)
REENC(m_timeout_big, f->timeout = FERRY_FW_CT_TIMEOUT_MAX + 1)
REENC(m_state0, f->tcp_state = 0)
REENC(m_state10, f->tcp_state = FW_CT_TCP_STATE_MAX + 1)
REENC(m_wscale, f->wscale[1] = 15)
REENC(m_wscale0, f->wscale[0] = 15)
REENC(m_tcpflags, f->tcp_flags[0] = 0x08)
REENC(m_tcpflags1, f->tcp_flags[1] = 0x80)
REENC(m_udp_state, { f->proto = 17; })
REENC(m_udp_icmp, {
	f->proto = 17;
	f->tcp_state = 0;
	memset(f->wscale, 0, 2);
	memset(f->tcp_flags, 0, 2);
	f->icmp_type = 3;
})
REENC(m_sport0, f->sport = 0)
REENC(m_dport0, f->dport = 0)
REENC(m_icmp_dport, {
	f->proto = 1;
	f->tcp_state = 0;
	memset(f->wscale, 0, 2);
	memset(f->tcp_flags, 0, 2);
})
REENC(m_src0, memset(f->src, 0, 16))
REENC(m_dst_mcast, f->dst[0] = 224)
REENC(m_dst_bcast, memset(f->dst, 255, 4))
REENC(m_src_lo, f->src[0] = 127)
REENC(m_v4_tail, f->dst[4] = 1)
REENC(m_v6_mcast, {
	f->family = 6;
	f->dst[0] = 0xff;
})
REENC(m_v6_zero, {
	f->family = 6;
	memset(f->src, 0, 16);
})
REENC(m_v6_lo, {
	f->family = 6;
	memset(f->src, 0, 16);
	f->src[15] = 1;
})
MUT(m_reserved0, r[FW_CT_REC_OFF_RESERVED0] = 1)
MUT(m_reserved1, r[FW_CT_REC_OFF_RESERVED1 + 1] = 1)

static void test_ct_record_bad(void **state)
{
	(void)state;
	ct_bad(m_family, "connection context: family 5");
	ct_bad(m_family0, "connection context: family 0");
	ct_bad(m_proto, "protocol 132 over IPv4");
	ct_bad(m_icmpv6_over_4, "protocol 58 over IPv4");
	ct_bad(m_status, "status 0xe or timeout");
	ct_bad(m_timeout0, "timeout 0 s out of range");
	ct_bad(m_timeout_big, "timeout 432001 s out of range");
	ct_bad(m_state0, "TCP fields do not go with protocol 6");
	ct_bad(m_state10, "TCP fields do not go with protocol 6");
	ct_bad(m_wscale, "TCP fields do not go with protocol 6");
	ct_bad(m_wscale0, "TCP fields do not go with protocol 6");
	ct_bad(m_tcpflags, "TCP fields do not go with protocol 6");
	ct_bad(m_tcpflags1, "TCP fields do not go with protocol 6");
	ct_bad(m_udp_state, "TCP fields do not go with protocol 17");
	ct_bad(m_udp_icmp, "ICMP fields do not go with protocol 17");
	ct_bad(m_sport0, "ports or ICMP fields do not go with protocol 6");
	ct_bad(m_dport0, "ports or ICMP fields do not go with protocol 6");
	ct_bad(m_icmp_dport, "ports or ICMP fields do not go with protocol 1");
	ct_bad(m_src0, "not a unicast IPv4 address");
	ct_bad(m_dst_mcast, "not a unicast IPv4 address");
	ct_bad(m_dst_bcast, "not a unicast IPv4 address");
	ct_bad(m_src_lo, "not a unicast IPv4 address");
	ct_bad(m_v4_tail, "not a unicast IPv4 address");
	ct_bad(m_v6_mcast, "not a unicast IPv6 address");
	ct_bad(m_v6_zero, "not a unicast IPv6 address");
	ct_bad(m_v6_lo, "not a unicast IPv6 address");
	ct_bad(m_reserved0, "reserved bytes set");
	ct_bad(m_reserved1, "reserved bytes set");
}

/* A message of n copies of tcp_flow() with distinct source ports. */
static uint8_t *message(uint32_t n, size_t *len)
{
	uint8_t *buf;
	struct fw_ct_flow f = tcp_flow();

	*len = FW_CT_HDR_LEN + (size_t)n * FW_CT_REC_LEN;
	buf = test_malloc(*len);
	fw_ct_encode_header(buf, n);
	for (uint32_t i = 0; i < n; i++) {
		f.sport = (uint16_t)(1 + i % 65535);
		fw_ct_encode(buf + FW_CT_HDR_LEN + i * FW_CT_REC_LEN, &f);
	}
	return buf;
}

static void test_ct_message(void **state)
{
	size_t len;
	uint8_t *buf = message(3, &len);
	uint32_t count = 99;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(fw_ct_check(buf, len, &count, &err), 0);
	assert_int_equal(count, 3);
	/* truncated anywhere: refused */
	for (size_t l = 0; l < len; l++) {
		assert_int_equal(fw_ct_check(buf, l, &count, &err), -1);
		assert_int_equal(err.code, FERR_INVALID);
	}
	assert_int_equal(fw_ct_check(buf, 15, &count, &err), -1);
	assert_string_equal(err.msg, "connection context: 15 bytes, no header");
	assert_int_equal(fw_ct_check(buf, len - 1, &count, &err), -1);
	assert_string_equal(err.msg, "connection context: 183 bytes for 3 flows");
	/* a record more than the header says: refused */
	fw_ct_encode_header(buf, 2);
	assert_int_equal(fw_ct_check(buf, len, &count, &err), -1);
	assert_string_equal(err.msg, "connection context: 184 bytes for 2 flows");
	/* a bad record is named by its index */
	fw_ct_encode_header(buf, 3);
	buf[FW_CT_HDR_LEN + 2 * FW_CT_REC_LEN + FW_CT_REC_OFF_FAMILY] = 9;
	assert_int_equal(fw_ct_check(buf, len, &count, &err), -1);
	assert_string_equal(err.msg, "flow 2: connection context: family 9");
	test_free(buf);
	/* empty is fine */
	buf = message(0, &len);
	assert_int_equal(fw_ct_check(buf, len, &count, &err), 0);
	assert_int_equal(count, 0);
	test_free(buf);
	/* a count over the limit is refused from the header alone, before any
	 * length arithmetic */
	buf = message(0, &len);
	fw_ct_encode_header(buf, UINT32_MAX);
	assert_int_equal(fw_ct_check(buf, len, &count, &err), -1);
	assert_non_null(strstr(err.msg, "at most"));
	test_free(buf);
}

static void test_ct_message_max(void **state)
{
	size_t len;
	uint8_t *buf = message(FERRY_FW_CT_FLOWS_MAX, &len);
	uint32_t count = 0;

	(void)state;
	assert_int_equal(len, FW_CT_MSG_MAX);
	assert_int_equal(fw_ct_check(buf, len, &count, NULL), 0);
	assert_int_equal(count, FERRY_FW_CT_FLOWS_MAX);
	test_free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_rule_limit),
		cmocka_unit_test(test_round_trip_and_digest),
		cmocka_unit_test(test_digest_pinned),
		cmocka_unit_test(test_cluster_and_effective),
		cmocka_unit_test(test_tag),
		cmocka_unit_test(test_ct_header),
		cmocka_unit_test(test_ct_record_round_trip),
		cmocka_unit_test(test_ct_record_bad),
		cmocka_unit_test(test_ct_message),
		cmocka_unit_test(test_ct_message_max),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
