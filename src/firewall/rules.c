/* rules.c - a VM's firewall rules: strict parsing, canonical JSON and
 * digest (firewall.h). Pure. */
#include "firewall.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#define CIDR_TEXT_MAX 64
#define PORT_TEXT_MAX 11 /* "65535-65535" */

static const char *const action_names[] = { "accept", "drop" };
static const char *const dir_names[] = { "in", "out" };
static const char *const proto_names[] = { "any", "tcp", "udp", "icmp",
					   "icmpv6" };

#define NAMES(a) (sizeof(a) / sizeof((a)[0]))

/* The index of s in names, or -1. */
static int lookup(const char *s, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(s, names[i]))
			return (int)i;
	return -1;
}

/* An optional enumerated string field: absent leaves *out. */
static int get_enum(const json_t *obj, const char *key, const char *what,
		    const char *const *names, size_t n, int *out,
		    struct ferr *err)
{
	const char *s = NULL;
	int i;

	if (json_get_string(obj, key, what, 16, &s, err) < 0)
		return -1;
	if (!s)
		return 0;
	i = lookup(s, names, n);
	if (i < 0) {
		char list[96] = "";

		for (size_t k = 0; k < n; k++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list),
				 "%s\"%s\"", k ? ", " : "", names[k]);
		return ferr_set(err, FERR_INVALID, "%s.%s must be one of %s",
				what, key, list);
	}
	*out = i;
	return 0;
}

/* Digits only, 1..65535. */
static int port_value(const char *s, size_t len, uint16_t *out)
{
	uint32_t v = 0;

	if (len == 0 || len > 5)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	if (v < 1 || v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

/* "port": 22 or "LO-HI". */
static int parse_port(const json_t *v, const char *what, struct fw_rule *r,
		      struct ferr *err)
{
	const char *s, *dash;

	if (json_is_integer(v)) {
		json_int_t p = json_integer_value(v);

		if (p < 1 || p > 65535)
			return ferr_set(err, FERR_INVALID,
					"%s.port must be 1..65535", what);
		r->port_lo = r->port_hi = (uint16_t)p;
		return 0;
	}
	s = json_string_value(v);
	if (!s || strlen(s) != json_string_length(v) ||
	    strlen(s) > PORT_TEXT_MAX || !(dash = strchr(s, '-')) ||
	    port_value(s, (size_t)(dash - s), &r->port_lo) < 0 ||
	    port_value(dash + 1, strlen(dash + 1), &r->port_hi) < 0)
		return ferr_set(err, FERR_INVALID,
				"%s.port must be a port (1..65535) or a range "
				"\"LOW-HIGH\"",
				what);
	if (r->port_lo > r->port_hi)
		return ferr_set(err, FERR_INVALID,
				"%s.port range %s runs backwards", what, s);
	return 0;
}

/* Prefix bits: decimal, no leading zero, at most max. */
static int prefix_value(const char *s, unsigned max, unsigned *out)
{
	unsigned v = 0;
	size_t len = strlen(s);

	if (len == 0 || len > 3 || (len > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

/* A CIDR "ADDR[/BITS]" with no host bits set. */
static int parse_net(const char *s, const char *what, const char *key,
		     struct fw_net *n, struct ferr *err)
{
	char text[CIDR_TEXT_MAX];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned bits, max;

	memset(n, 0, sizeof(*n));
	if (alen == 0 || alen >= sizeof(text))
		goto bad;
	memcpy(text, s, alen);
	text[alen] = '\0';
	if (inet_pton(AF_INET, text, n->addr) == 1) {
		n->family = 4;
		max = 32;
	} else if (inet_pton(AF_INET6, text, n->addr) == 1) {
		n->family = 6;
		max = 128;
	} else {
		goto bad;
	}
	bits = max;
	if (slash && prefix_value(slash + 1, max, &bits) < 0)
		goto bad;
	n->prefix = (uint8_t)bits;
	for (unsigned b = bits; b < max; b++) {
		if (n->addr[b / 8] & (0x80 >> (b % 8)))
			return ferr_set(err, FERR_INVALID,
					"%s.%s \"%.64s\" has host bits set "
					"beyond /%u",
					what, key, s, bits);
	}
	return 0;
bad:
	return ferr_set(err, FERR_INVALID,
			"%s.%s \"%.64s\" is not an IPv4 or IPv6 address or "
			"prefix (ADDR or ADDR/BITS)",
			what, key, s);
}

static int parse_rule(const json_t *obj, const char *what, struct fw_rule *r,
		      struct ferr *err)
{
	static const char *const fields[] = { "dir", "action", "proto",
					      "port", "from", "to", NULL };
	int dir = -1, action = FW_ACCEPT, proto = FW_PROTO_ANY;
	const char *peer = NULL;
	const char *peer_key;

	memset(r, 0, sizeof(*r));
	if (json_check_fields(obj, fields, what, err) < 0 ||
	    get_enum(obj, "dir", what, dir_names, NAMES(dir_names), &dir,
		     err) < 0 ||
	    get_enum(obj, "action", what, action_names, NAMES(action_names),
		     &action, err) < 0 ||
	    get_enum(obj, "proto", what, proto_names, NAMES(proto_names),
		     &proto, err) < 0)
		return -1;
	if (dir < 0)
		return ferr_set(err, FERR_INVALID,
				"%s.dir is required (\"in\" or \"out\")", what);
	r->dir = (enum fw_dir)dir;
	r->action = (enum fw_action)action;
	r->proto = (enum fw_proto)proto;
	if (json_object_get(obj, "port")) {
		if (r->proto != FW_PROTO_TCP && r->proto != FW_PROTO_UDP)
			return ferr_set(err, FERR_INVALID,
					"%s.port needs \"proto\": \"tcp\" or "
					"\"udp\"",
					what);
		if (parse_port(json_object_get(obj, "port"), what, r, err) < 0)
			return -1;
	}
	peer_key = r->dir == FW_IN ? "from" : "to";
	if (json_object_get(obj, r->dir == FW_IN ? "to" : "from"))
		return ferr_set(err, FERR_INVALID,
				"%s: a rule with \"dir\": \"%s\" takes \"%s\", "
				"not \"%s\"",
				what, dir_names[r->dir], peer_key,
				r->dir == FW_IN ? "to" : "from");
	if (json_get_string(obj, peer_key, what, CIDR_TEXT_MAX, &peer, err) <
		    0 ||
	    (peer && parse_net(peer, what, peer_key, &r->peer, err) < 0))
		return -1;
	if ((r->proto == FW_PROTO_ICMP && r->peer.family == 6) ||
	    (r->proto == FW_PROTO_ICMPV6 && r->peer.family == 4))
		return ferr_set(err, FERR_INVALID,
				"%s: proto %s does not go with the IPv%u "
				"address %s",
				what, proto_names[r->proto],
				(unsigned)r->peer.family, peer);
	return 0;
}

int fw_policy_from_json(const json_t *obj, const char *what,
			struct fw_policy *p, struct ferr *err)
{
	static const char *const fields[] = { "default", "rules", NULL };
	const json_t *rules = json_object_get(obj, "rules");
	char rwhat[96];
	int def = -1;
	size_t i;
	json_t *r;

	memset(p, 0, sizeof(*p));
	if (json_check_fields(obj, fields, what, err) < 0 ||
	    get_enum(obj, "default", what, action_names, NAMES(action_names),
		     &def, err) < 0)
		return -1;
	if (def < 0)
		return ferr_set(err, FERR_INVALID,
				"%s.default is required (\"accept\" or "
				"\"drop\")",
				what);
	if (rules && !json_is_array(rules))
		return ferr_set(err, FERR_INVALID,
				"%s.rules must be an array", what);
	if (json_array_size(rules) > FERRY_FW_RULES_MAX)
		return ferr_set(err, FERR_INVALID,
				"%s.rules has %zu rules; at most %d",
				what, json_array_size(rules),
				FERRY_FW_RULES_MAX);
	json_array_foreach(rules, i, r) {
		snprintf(rwhat, sizeof(rwhat), "%.64s.rules[%zu]", what, i);
		if (parse_rule(r, rwhat, &p->rules[i], err) < 0)
			return -1;
	}
	p->nrules = (unsigned)json_array_size(rules);
	p->def = (enum fw_action)def;
	p->origin = FW_ORIGIN_VM;
	p->present = true;
	return 0;
}

int fw_cluster_from_json(const json_t *obj, const char *what,
			 struct fw_cluster *c, struct ferr *err)
{
	static const char *const fields[] = { "default", "required",
					      "accept_default", NULL };
	static const char *const allow_deny[] = { "allow", "deny" };
	char dwhat[96];
	int deny = 0;

	memset(c, 0, sizeof(*c));
	if (json_check_fields(obj, fields, what, err) < 0 ||
	    json_get_bool(obj, "required", what, &c->required, err) < 0 ||
	    get_enum(obj, "accept_default", what, allow_deny,
		     NAMES(allow_deny), &deny, err) < 0)
		return -1;
	c->deny_accept = deny == 1;
	if (json_object_get(obj, "default")) {
		snprintf(dwhat, sizeof(dwhat), "%.64s.default", what);
		if (fw_policy_from_json(json_object_get(obj, "default"), dwhat,
					&c->def, err) < 0)
			return -1;
		c->def.origin = FW_ORIGIN_DEFAULT;
		if (c->deny_accept && c->def.def == FW_ACCEPT)
			return ferr_set(err, FERR_INVALID,
					"%s.default has \"default\": \"accept\", "
					"which accept_default \"deny\" refuses",
					what);
	}
	return 0;
}

int fw_effective(const struct fw_cluster *c, const struct fw_policy *own,
		 struct fw_policy *out, struct ferr *err)
{
	*out = own->present ? *own : c->def;
	if (!out->present && c->required)
		return ferr_set(err, FERR_FORBIDDEN,
				"the policy requires firewall rules for "
				"bridged VMs (firewall.required), and the VM "
				"has none and there is no default");
	if (out->present && out->def == FW_ACCEPT && c->deny_accept)
		return ferr_set(err, FERR_FORBIDDEN,
				"the policy refuses firewall rules whose "
				"default is accept (firewall.accept_default: "
				"deny)");
	return 0;
}

/* The canonical text of a prefix: ADDR/BITS. */
static void net_text(const struct fw_net *n, char *out, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	inet_ntop(n->family == 4 ? AF_INET : AF_INET6, n->addr, a, sizeof(a));
	snprintf(out, len, "%s/%u", a, (unsigned)n->prefix);
}

json_t *fw_policy_to_json(const struct fw_policy *p)
{
	json_t *rules, *o;

	if (!p->present)
		return json_null();
	rules = json_array();
	o = json_pack("{s:s, s:o}", "default", action_names[p->def], "rules",
		      rules);
	if (!o)
		return NULL;
	for (unsigned i = 0; i < p->nrules; i++) {
		const struct fw_rule *r = &p->rules[i];
		json_t *j = json_pack("{s:s, s:s, s:s}", "dir",
				      dir_names[r->dir], "action",
				      action_names[r->action], "proto",
				      proto_names[r->proto]);
		char buf[CIDR_TEXT_MAX];

		if (!j) {
			json_decref(o);
			return NULL;
		}
		if (r->port_lo && r->port_lo == r->port_hi) {
			json_object_set_new(j, "port",
					    json_integer(r->port_lo));
		} else if (r->port_lo) {
			snprintf(buf, sizeof(buf), "%u-%u",
				 (unsigned)r->port_lo, (unsigned)r->port_hi);
			json_object_set_new(j, "port", json_string(buf));
		}
		if (r->peer.family) {
			net_text(&r->peer, buf, sizeof(buf));
			json_object_set_new(j, r->dir == FW_IN ? "from" : "to",
					    json_string(buf));
		}
		json_array_append_new(rules, j);
	}
	return o;
}

void fw_policy_digest(const struct fw_policy *p,
		      char out[FW_DIGEST_HEX + 1])
{
	json_t *j = fw_policy_to_json(p);
	char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS |
					       JSON_ENCODE_ANY)
		       : NULL;
	uint8_t md[SHA256_DIGEST_LENGTH];

	SHA256((const uint8_t *)(text ? text : ""), text ? strlen(text) : 0,
	       md);
	for (int i = 0; i < FW_DIGEST_HEX / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	free(text);
	json_decref(j);
}
