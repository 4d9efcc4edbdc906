/* nftjson.c - ferry's nftables tables as JSON (fw_int.h): the fixed part,
 * one VM's chains and bindings, and the transactions that install or
 * remove them given what a listing shows. Pure: no kernel, no I/O. */
#include "fw_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#define ETH_P_RARP_NUM 0x8035

/* ---- building expressions ---- */

static json_t *meta(const char *key)
{
	return json_pack("{s:{s:s}}", "meta", "key", key);
}

static json_t *payload(const char *proto, const char *field)
{
	return json_pack("{s:{s:s, s:s}}", "payload", "protocol", proto,
			 "field", field);
}

static json_t *ct(const char *key)
{
	return json_pack("{s:{s:s}}", "ct", "key", key);
}

static json_t *match(const char *op, json_t *left, json_t *right)
{
	return json_pack("{s:{s:s, s:o, s:o}}", "match", "op", op, "left",
			 left, "right", right);
}

static json_t *binop(const char *op, json_t *left, json_t *right)
{
	return json_pack("{s:[o, o]}", op, left, right);
}

static json_t *mangle(json_t *key, json_t *value)
{
	return json_pack("{s:{s:o, s:o}}", "mangle", "key", key, "value",
			 value);
}

static json_t *mask(json_t *left, uint32_t m)
{
	return binop("&", left, json_integer(m));
}

static json_t *counter(void)
{
	return json_pack("{s:{s:i, s:i}}", "counter", "packets", 0, "bytes",
			 0);
}

static json_t *verdict(enum fw_action a)
{
	return json_pack("{s:n}", a == FW_ACCEPT ? "return" : "drop");
}

static json_t *lookup_map(json_t *key, const char *map)
{
	return json_pack("{s:{s:o, s:s}}", "map", "key", key, "data", map);
}

/* {"add"|...: {kind: {"family", "table", ...fields}}} */
static json_t *cmd(const char *verb, const char *kind, const char *family,
		   const char *table, json_t *fields)
{
	json_t *o = fields ? fields : json_object();

	json_object_set_new(o, "family", json_string(family));
	json_object_set_new(o, kind[0] == 't' ? "name" : "table",
			    json_string(table));
	return json_pack("{s:{s:o}}", verb, kind, o);
}

static void add_rule(json_t *b, const char *family, const char *table,
		     const char *chain, const char *comment, json_t *expr)
{
	json_t *f = json_pack("{s:s, s:o}", "chain", chain, "expr", expr);

	if (comment)
		json_object_set_new(f, "comment", json_string(comment));
	json_array_append_new(b, cmd("add", "rule", family, table, f));
}

static void add_base_chain(json_t *b, const char *family, const char *table,
			   const char *name, const char *hook, int prio)
{
	json_array_append_new(
		b, cmd("add", "chain", family, table,
		       json_pack("{s:s, s:s, s:s, s:i, s:s}", "name", name,
				 "type", "filter", "hook", hook, "prio", prio,
				 "policy", "accept")));
}

static void add_set(json_t *b, const char *family, const char *table,
		    const char *name, json_t *type, const char *map)
{
	json_t *f = json_pack("{s:s, s:o}", "name", name, "type", type);

	if (map)
		json_object_set_new(f, "map", json_string(map));
	json_array_append_new(b, cmd("add", map ? "map" : "set", family,
				     table, f));
}

/* ---- the fixed part ---- */

static void skeleton_bridge(json_t *b, const char *t)
{
	json_array_append_new(b, cmd("add", "table", "bridge", t, NULL));
	add_set(b, "bridge", t, "to_vm", json_string("ifname"), "verdict");
	add_set(b, "bridge", t, "from_vm", json_string("ifname"), "verdict");
	add_set(b, "bridge", t, "vm_taps", json_string("ifname"), NULL);
	add_set(b, "bridge", t, "vm_ports",
		json_pack("[s, s]", "ifname", "ether_addr"), NULL);
	add_base_chain(b, "bridge", t, "pre", "prerouting", -300);
	add_base_chain(b, "bridge", t, "fwd", "forward", 0);
	add_base_chain(b, "bridge", t, "inp", "input", 0);
	add_base_chain(b, "bridge", t, "outp", "output", 0);
	/* a VM's port sends only its VM's MAC (before the bridge learns) */
	add_rule(b, "bridge", t, "pre", FW_SKELETON,
		 json_pack("[o, o, o, {s:n}]",
			   match("==", meta("iifname"), json_string("@vm_taps")),
			   match("!=",
				 json_pack("{s:[o, o]}", "concat",
					   meta("iifname"),
					   payload("ether", "saddr")),
				 json_string("@vm_ports")),
			   counter(), "drop"));
	/* from a VM first (its out chain returns when it allows), then to */
	add_rule(b, "bridge", t, "fwd", FW_SKELETON,
		 json_pack("[{s:{s:o, s:s}}]", "vmap", "key", meta("iifname"),
			   "data", "@from_vm"));
	add_rule(b, "bridge", t, "fwd", FW_SKELETON,
		 json_pack("[{s:{s:o, s:s}}]", "vmap", "key", meta("oifname"),
			   "data", "@to_vm"));
	add_rule(b, "bridge", t, "inp", FW_SKELETON,
		 json_pack("[{s:{s:o, s:s}}]", "vmap", "key", meta("iifname"),
			   "data", "@from_vm"));
	add_rule(b, "bridge", t, "outp", FW_SKELETON,
		 json_pack("[{s:{s:o, s:s}}]", "vmap", "key", meta("oifname"),
			   "data", "@to_vm"));
}

/* The state bits of the packet mark from ct state. */
static void mark_state_rules(json_t *b, const char *t, const char *chain)
{
	add_rule(b, "inet", t, chain, FW_SKELETON,
		 json_pack("[o, o]",
			   match("in", ct("state"),
				 json_pack("[s, s]", "established", "related")),
			   mangle(meta("mark"), binop("|", meta("mark"),
						      json_integer(FW_MARK_EST)))));
	add_rule(b, "inet", t, chain, FW_SKELETON,
		 json_pack("[o, o]", match("in", ct("state"), json_string("new")),
			   mangle(meta("mark"), binop("|", meta("mark"),
						      json_integer(FW_MARK_NEW)))));
}

static void skeleton_inet(json_t *b, const char *t)
{
	json_array_append_new(b, cmd("add", "table", "inet", t, NULL));
	add_set(b, "inet", t, "vm_macs", json_string("ether_addr"), NULL);
	add_set(b, "inet", t, "vm_tags", json_string("ether_addr"), "mark");
	/* after conntrack (-200): br_netfilter runs these for bridged IP */
	add_base_chain(b, "inet", t, "pre", "prerouting", -150);
	add_base_chain(b, "inet", t, "out", "output", -150);
	json_array_append_new(b, cmd("add", "chain", "inet", t,
				     json_pack("{s:s}", "name", "vmflow")));
	add_rule(b, "inet", t, "pre", FW_SKELETON,
		 json_pack("[o, {s:{s:s}}]",
			   match("==", payload("ether", "saddr"),
				 json_string("@vm_macs")),
			   "goto", "target", "vmflow"));
	add_rule(b, "inet", t, "pre", FW_SKELETON,
		 json_pack("[o, {s:{s:s}}]",
			   match("==", payload("ether", "daddr"),
				 json_string("@vm_macs")),
			   "goto", "target", "vmflow"));
	/* a VM's packet: its new flow takes the tag of the VM that sends it,
	 * else of the one it goes to; the mark says tag and state */
	add_rule(b, "inet", t, "vmflow", FW_SKELETON,
		 json_pack("[o]", mangle(meta("mark"), json_integer(0))));
	add_rule(b, "inet", t, "vmflow", FW_SKELETON,
		 json_pack("[o, o]", match("in", ct("state"), json_string("new")),
			   mangle(ct("mark"),
				  lookup_map(payload("ether", "saddr"),
					     "@vm_tags"))));
	add_rule(b, "inet", t, "vmflow", FW_SKELETON,
		 json_pack("[o, o, o]",
			   match("in", ct("state"), json_string("new")),
			   match("==", ct("mark"), json_integer(0)),
			   mangle(ct("mark"),
				  lookup_map(payload("ether", "daddr"),
					     "@vm_tags"))));
	add_rule(b, "inet", t, "vmflow", FW_SKELETON,
		 json_pack("[o]", mangle(meta("mark"),
					 mask(ct("mark"), FW_MARK_TAG))));
	mark_state_rules(b, t, "vmflow");
	/* what the host sends: only the state bits */
	add_rule(b, "inet", t, "out", FW_SKELETON,
		 json_pack("[o]",
			   mangle(meta("mark"),
				  mask(meta("mark"),
				       ~(FW_MARK_EST | FW_MARK_NEW)))));
	mark_state_rules(b, t, "out");
}

/* Rules with the skeleton's comment each base chain must have. */
static const struct {
	const char *family, *chain;
	unsigned rules;
} skeleton_chains[] = {
	{ "bridge", "pre", 1 }, { "bridge", "fwd", 2 },  { "bridge", "inp", 1 },
	{ "bridge", "outp", 1 }, { "inet", "pre", 2 },   { "inet", "vmflow", 6 },
	{ "inet", "out", 3 },
};

bool fw_skeleton_ok(const struct fw_listing *l)
{
	if (!l->bridge || !l->inet)
		return false;
	for (size_t k = 0; k < sizeof(skeleton_chains) / sizeof(skeleton_chains[0]);
	     k++) {
		const json_t *listing = skeleton_chains[k].family[0] == 'b'
						? l->bridge
						: l->inet;
		const json_t *r;
		unsigned n = 0, others = 0;
		size_t i = 0;

		if (!fw_chain_exists(listing, skeleton_chains[k].chain))
			return false;
		while ((r = fw_ls_item(listing, "rule", &i))) {
			if (strcmp(json_string_value(json_object_get(r, "chain"))
					   ?: "",
				   skeleton_chains[k].chain))
				continue;
			if (!strcmp(json_string_value(json_object_get(
						r, "comment")) ?: "",
				    FW_SKELETON))
				n++;
			else
				others++;
		}
		if (n != skeleton_chains[k].rules || others)
			return false;
	}
	return true;
}

/* ---- one VM ---- */

int fw_want_init(struct fw_want *w, const struct fw_vm *vm, struct ferr *err)
{
	char pd[FW_DIGEST_HEX + 1], text[256];
	uint8_t md[SHA256_DIGEST_LENGTH];
	char u[FERRY_UUID_STR_LEN + 1];
	char chain[FW_CHAIN_MAX];

	memset(w, 0, sizeof(*w));
	fw_vm_chain(chain, vm->uuid, true);
	if (strlen(vm->uuid) != FERRY_UUID_STR_LEN || !fw_chain_uuid(chain, u))
		return ferr_set(err, FERR_INVALID, "bad vm uuid");
	if (!vm->tap[0] || strlen(vm->tap) > 15 || strchr(vm->tap, '"'))
		return ferr_set(err, FERR_INVALID, "bad tap name");
	w->uuid = vm->uuid;
	w->tap = vm->tap;
	w->policy = vm->policy;
	snprintf(w->mac, sizeof(w->mac), "%02x:%02x:%02x:%02x:%02x:%02x",
		 vm->mac[0], vm->mac[1], vm->mac[2], vm->mac[3], vm->mac[4],
		 vm->mac[5]);
	w->tag = fw_tag(vm->uuid);
	fw_policy_digest(vm->policy, pd);
	snprintf(text, sizeof(text), "%s|%s|%s|%u|%s", pd, w->tap, w->mac,
		 (unsigned)w->tag, FW_SKELETON);
	SHA256((const uint8_t *)text, strlen(text), md);
	for (int i = 0; i < FW_DIGEST_HEX / 2; i++)
		snprintf(w->digest + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* One user rule's match expressions. */
static json_t *rule_expr(const struct fw_rule *r)
{
	static const int l4[] = { 0, 6, 17, 1, 58 };
	json_t *e = json_array();

	if (r->peer.family) {
		char a[INET6_ADDRSTRLEN];

		inet_ntop(r->peer.family == 4 ? AF_INET : AF_INET6,
			  r->peer.addr, a, sizeof(a));
		json_array_append_new(
			e, match("==",
				 payload(r->peer.family == 4 ? "ip" : "ip6",
					 r->dir == FW_IN ? "saddr" : "daddr"),
				 json_pack("{s:{s:s, s:i}}", "prefix", "addr", a,
					   "len", (int)r->peer.prefix)));
	}
	if (r->proto != FW_PROTO_ANY)
		json_array_append_new(e, match("==", meta("l4proto"),
					       json_integer(l4[r->proto])));
	if (r->port_lo)
		json_array_append_new(
			e, match("==",
				 payload(r->proto == FW_PROTO_TCP ? "tcp" : "udp",
					 "dport"),
				 r->port_lo == r->port_hi
					 ? json_integer(r->port_lo)
					 : json_pack("{s:[i, i]}", "range",
						     (int)r->port_lo,
						     (int)r->port_hi)));
	json_array_append_new(e, counter());
	json_array_append_new(e, verdict(r->action));
	return e;
}

/* The rules of one of w's chains. */
static void vm_rules(json_t *b, const char *t, const struct fw_want *w,
		     bool in)
{
	const struct fw_policy *p = w->policy;
	char chain[FW_CHAIN_MAX], comment[32];

	fw_vm_chain(chain, w->uuid, in);
	add_rule(b, "bridge", t, chain, "arp",
		 json_pack("[o, {s:n}]",
			   match("==", payload("ether", "type"),
				 json_pack("{s:[s, i]}", "set", "arp",
					   ETH_P_RARP_NUM)),
			   "return"));
	add_rule(b, "bridge", t, chain, "nd",
		 json_pack("[o, {s:n}]",
			   match("==", payload("icmpv6", "type"),
				 json_pack("{s:[s, s, s, s]}", "set",
					   "nd-router-solicit",
					   "nd-router-advert",
					   "nd-neighbor-solicit",
					   "nd-neighbor-advert")),
			   "return"));
	if (in) {
		/* to the VM: its own flows, the host's (untagged), and those
		 * of a VM on this host; a flow tagged for another VM is not
		 * established here (an imported flow cannot open others) */
		add_rule(b, "bridge", t, chain, "established",
			 json_pack("[o, o, {s:n}]",
				   match("==",
					 mask(meta("mark"),
					      FW_MARK_EST | FW_MARK_TAG),
					 json_integer(FW_MARK_EST | w->tag)),
				   counter(), "return"));
		add_rule(b, "bridge", t, chain, "established",
			 json_pack("[o, o, {s:n}]",
				   match("==",
					 mask(meta("mark"),
					      FW_MARK_EST | FW_MARK_TAG),
					 json_integer(FW_MARK_EST)),
				   counter(), "return"));
		add_rule(b, "bridge", t, chain, "established",
			 json_pack("[o, o, o, {s:n}]",
				   match("==", mask(meta("mark"), FW_MARK_EST),
					 json_integer(FW_MARK_EST)),
				   match("==", meta("iifname"),
					 json_string("@vm_taps")),
				   counter(), "return"));
	} else {
		add_rule(b, "bridge", t, chain, "established",
			 json_pack("[o, o, {s:n}]",
				   match("==", mask(meta("mark"), FW_MARK_EST),
					 json_integer(FW_MARK_EST)),
				   counter(), "return"));
	}
	add_rule(b, "bridge", t, chain, "invalid",
		 json_pack("[o, o, o, {s:n}]",
			   match("==", payload("ether", "type"),
				 json_pack("{s:[s, s]}", "set", "ip", "ip6")),
			   match("==", mask(meta("mark"), FW_MARK_NEW),
				 json_integer(0)),
			   counter(), "drop"));
	if (p->def == FW_DROP)
		/* a new TCP flow opens with a SYN: a stray segment of a flow
		 * this host does not track (one that moved without its
		 * state) is no new connection */
		add_rule(b, "bridge", t, chain, "not_syn",
			 json_pack("[o, o, {s:n}]",
				   match("!=",
					 binop("&", payload("tcp", "flags"),
					       json_pack("[s, s, s, s]", "fin",
							 "syn", "rst", "ack")),
					 json_string("syn")),
				   counter(), "drop"));
	for (unsigned i = 0; i < p->nrules; i++) {
		if ((p->rules[i].dir == FW_IN) != in)
			continue;
		snprintf(comment, sizeof(comment), "rule %u", i);
		add_rule(b, "bridge", t, chain, comment,
			 rule_expr(&p->rules[i]));
	}
	snprintf(comment, sizeof(comment), "default %s", w->digest);
	add_rule(b, "bridge", t, chain, comment,
		 json_pack("[o, o]", counter(), verdict(p->def)));
}

/* ---- what to remove ---- */

/* Which VMs go: keep == NULL: uuid only; else all but keep's. */
struct sel {
	const char *uuid;
	const char *const *keep;
	size_t nkeep;
	const char *tap;  /* install: a binding of this tap goes too */
};

static bool sel_goes(const struct sel *s, const char *uuid)
{
	if (!s->keep)
		return s->uuid && uuid && !strcmp(uuid, s->uuid);
	for (size_t i = 0; i < s->nkeep; i++)
		if (uuid && !strcmp(uuid, s->keep[i]))
			return false;
	return true;
}

static bool in_list(const json_t *list, const char *s)
{
	size_t i;
	json_t *v;

	json_array_foreach(list, i, v)
		if (s && !strcmp(json_string_value(v), s))
			return true;
	return false;
}

static void del_elem(json_t *b, const char *family, const char *t,
		     const char *set, json_t *key)
{
	json_array_append_new(b, cmd("delete", "element", family, t,
				     json_pack("{s:s, s:[o]}", "name", set,
					       "elem", key)));
}

/* Append to b what removes the VMs s selects, and every binding that no
 * remaining VM owns; *vms counts the VMs (chains) removed. */
static void plan_removal(json_t *b, const char *t, const struct fw_listing *l,
			 const struct sel *s, bool chains, unsigned *vms)
{
	json_t *kept_taps = json_array(), *kept_macs = json_array();
	json_t *gone = json_array();
	const char *maps[] = { "to_vm", "from_vm" };
	char u[FERRY_UUID_STR_LEN + 1];
	const json_t *c;
	size_t i;
	json_t *e;

	for (int k = 0; k < 2; k++) {
		json_array_foreach(fw_ls_elems(l->bridge, maps[k]), i, e) {
			const char *tap = fw_elem_key(e);
			bool owned = fw_chain_uuid(fw_elem_target(e), u);

			if (!owned || sel_goes(s, u) ||
			    (s->tap && tap && !strcmp(tap, s->tap)))
				del_elem(b, "bridge", t, maps[k],
					 json_string(tap ?: ""));
			else if (!in_list(kept_taps, tap))
				json_array_append_new(kept_taps,
						      json_string(tap));
		}
	}
	json_array_foreach(fw_ls_elems(l->bridge, "vm_taps"), i, e)
		if (!in_list(kept_taps, fw_elem_key(e)))
			del_elem(b, "bridge", t, "vm_taps",
				 json_string(fw_elem_key(e) ?: ""));
	json_array_foreach(fw_ls_elems(l->bridge, "vm_ports"), i, e) {
		if (in_list(kept_taps, fw_concat_part(e, 0)))
			json_array_append_new(kept_macs,
					      json_string(fw_concat_part(e, 1) ?: ""));
		else
			del_elem(b, "bridge", t, "vm_ports", json_deep_copy(e));
	}
	json_array_foreach(fw_ls_elems(l->inet, "vm_macs"), i, e)
		if (!in_list(kept_macs, fw_elem_key(e)))
			del_elem(b, "inet", t, "vm_macs",
				 json_string(fw_elem_key(e) ?: ""));
	json_array_foreach(fw_ls_elems(l->inet, "vm_tags"), i, e)
		if (!in_list(kept_macs, fw_elem_key(e)))
			del_elem(b, "inet", t, "vm_tags",
				 json_string(fw_elem_key(e) ?: ""));
	i = 0;
	while (chains && (c = fw_ls_item(l->bridge, "chain", &i))) {
		const char *name = json_string_value(json_object_get(c, "name"));

		if (!fw_chain_uuid(name, u) || !sel_goes(s, u))
			continue;
		json_array_append_new(b, cmd("flush", "chain", "bridge", t,
					     json_pack("{s:s}", "name", name)));
		json_array_append_new(b, cmd("delete", "chain", "bridge", t,
					     json_pack("{s:s}", "name", name)));
		if (!in_list(gone, u))
			json_array_append_new(gone, json_string(u));
	}
	if (vms)
		*vms = (unsigned)json_array_size(gone);
	json_decref(kept_taps);
	json_decref(kept_macs);
	json_decref(gone);
}

/* The target of the element of map keyed key, or NULL. */
static const char *map_lookup(const json_t *listing, const char *map,
			      const char *key)
{
	size_t i;
	json_t *e;

	json_array_foreach(fw_ls_elems(listing, map), i, e)
		if (key && !strcmp(fw_elem_key(e) ?: "", key))
			return fw_elem_target(e);
	return NULL;
}

/* Who owns mac (the uuid behind its port) into u, or false. */
static bool mac_owner(const struct fw_listing *l, const char *mac,
		      char u[FERRY_UUID_STR_LEN + 1])
{
	size_t i;
	json_t *e;

	json_array_foreach(fw_ls_elems(l->bridge, "vm_ports"), i, e)
		if (!strcmp(fw_concat_part(e, 1) ?: "", mac) &&
		    fw_chain_uuid(map_lookup(l->bridge, "to_vm",
					  fw_concat_part(e, 0)),
			       u))
			return true;
	return false;
}

/* Is w installed exactly? */
static bool intact(const struct fw_listing *l, const struct fw_want *w)
{
	char in[FW_CHAIN_MAX], out[FW_CHAIN_MAX], comment[32];
	const char *maps[] = { "to_vm", "from_vm" };
	bool port = false, mac = false, tag = false;
	size_t i;
	json_t *e;

	if (!fw_skeleton_ok(l))
		return false;
	fw_vm_chain(in, w->uuid, true);
	fw_vm_chain(out, w->uuid, false);
	snprintf(comment, sizeof(comment), "default %s", w->digest);
	if (!fw_rule_with_comment(l->bridge, in, comment) ||
	    !fw_rule_with_comment(l->bridge, out, comment) ||
	    !in_list(fw_ls_elems(l->bridge, "vm_taps"), w->tap))
		return false;
	for (int k = 0; k < 2; k++) {
		bool found = false;

		json_array_foreach(fw_ls_elems(l->bridge, maps[k]), i, e) {
			const char *target = fw_elem_target(e) ?: "";
			bool ours = !strcmp(target, k ? out : in);

			if (ours != !strcmp(fw_elem_key(e) ?: "", w->tap))
				return false; /* another tap, or not ours */
			found |= ours;
		}
		if (!found)
			return false;
	}
	json_array_foreach(fw_ls_elems(l->bridge, "vm_ports"), i, e)
		port |= !strcmp(fw_concat_part(e, 0) ?: "", w->tap) &&
			!strcmp(fw_concat_part(e, 1) ?: "", w->mac);
	mac = in_list(fw_ls_elems(l->inet, "vm_macs"), w->mac);
	json_array_foreach(fw_ls_elems(l->inet, "vm_tags"), i, e)
		tag |= !strcmp(fw_elem_key(e) ?: "", w->mac) &&
		       json_integer_value(json_array_get(e, 1)) == w->tag;
	return port && mac && tag;
}

json_t *fw_batch_install(const char *table, const struct fw_listing *l,
			 const struct fw_want *w, bool *is_intact,
			 struct ferr *err)
{
	struct sel s = { .uuid = w->uuid, .tap = w->tap };
	char u[FERRY_UUID_STR_LEN + 1], chain[FW_CHAIN_MAX];
	json_t *b, *root;
	size_t i;
	json_t *e;

	*is_intact = intact(l, w);
	if (*is_intact)
		return NULL;
	if (mac_owner(l, w->mac, u) && strcmp(u, w->uuid) != 0) {
		ferr_set(err, FERR_CONFLICT,
			 "vm %s has MAC %s on this host already", u, w->mac);
		return NULL;
	}
	json_array_foreach(fw_ls_elems(l->inet, "vm_tags"), i, e) {
		if (json_integer_value(json_array_get(e, 1)) == w->tag &&
		    strcmp(fw_elem_key(e) ?: "", w->mac) != 0 &&
		    mac_owner(l, fw_elem_key(e) ?: "", u) &&
		    strcmp(u, w->uuid) != 0) {
			ferr_set(err, FERR_CONFLICT,
				 "vm %s has the same flow tag %#x as vm %s",
				 u, (unsigned)w->tag, w->uuid);
			return NULL;
		}
	}
	b = json_array();
	root = json_pack("{s:o}", "nftables", b);
	if (!root)
		return NULL;
	if (!l->bridge && !l->inet) {
		skeleton_bridge(b, table);
		skeleton_inet(b, table);
	} else if (!fw_skeleton_ok(l)) {
		/* changed behind ferry's back: never guess which of its VMs
		 * are still right (fw_prune rebuilds it at start-up) */
		json_decref(root);
		ferr_set(err, FERR_CONFLICT,
			 "the nftables tables %s are not as ferry made them; "
			 "restart ferryd to rebuild them",
			 table);
		return NULL;
	} else {
		plan_removal(b, table, l, &s, false, NULL);
	}
	for (int in = 1; in >= 0; in--) {
		fw_vm_chain(chain, w->uuid, in);
		json_array_append_new(b, cmd("add", "chain", "bridge", table,
					     json_pack("{s:s}", "name", chain)));
		json_array_append_new(b, cmd("flush", "chain", "bridge", table,
					     json_pack("{s:s}", "name", chain)));
		vm_rules(b, table, w, in);
	}
	for (int in = 1; in >= 0; in--) {
		fw_vm_chain(chain, w->uuid, in);
		json_array_append_new(
			b, cmd("add", "element", "bridge", table,
			       json_pack("{s:s, s:[[s, {s:{s:s}}]]}", "name",
					 in ? "to_vm" : "from_vm", "elem",
					 w->tap, "jump", "target", chain)));
	}
	json_array_append_new(b, cmd("add", "element", "bridge", table,
				     json_pack("{s:s, s:[s]}", "name",
					       "vm_taps", "elem", w->tap)));
	json_array_append_new(
		b, cmd("add", "element", "bridge", table,
		       json_pack("{s:s, s:[{s:[s, s]}]}", "name", "vm_ports",
				 "elem", "concat", w->tap, w->mac)));
	json_array_append_new(b, cmd("add", "element", "inet", table,
				     json_pack("{s:s, s:[s]}", "name",
					       "vm_macs", "elem", w->mac)));
	json_array_append_new(b, cmd("add", "element", "inet", table,
				     json_pack("{s:s, s:[[s, I]]}", "name",
					       "vm_tags", "elem", w->mac,
					       (json_int_t)w->tag)));
	return root;
}

json_t *fw_batch_remove(const char *table, const struct fw_listing *l,
			const char *uuid, const char *const *keep,
			size_t nkeep, unsigned *removed)
{
	struct sel s = { .uuid = uuid, .keep = keep, .nkeep = nkeep };
	json_t *b = json_array();

	if (removed)
		*removed = 0;
	if (l->bridge && l->inet)
		plan_removal(b, table, l, &s, true, removed);
	if (!json_array_size(b)) {
		json_decref(b);
		return NULL;
	}
	return json_pack("{s:o}", "nftables", b);
}

json_t *fw_batch_drop(const char *table, const struct fw_listing *l)
{
	json_t *b = json_array();

	if (l->bridge)
		json_array_append_new(b, cmd("delete", "table", "bridge", table,
					     NULL));
	if (l->inet)
		json_array_append_new(b, cmd("delete", "table", "inet", table,
					     NULL));
	return json_pack("{s:o}", "nftables", b);
}
