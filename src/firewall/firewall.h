/* firewall.h - a VM's network security context (docs/security.md,
 * "Security context"): its firewall rules, enforced with nftables on its
 * tap, and the connection-tracking state of its flows, which a migration
 * carries to the destination.
 *
 * Three parts:
 *  - rules (rules.c, pure): the "firewall" object of a VM definition or of
 *    the cluster policy, parsed strictly; its canonical JSON and digest;
 *  - enforcement (nftjson.c builds and reads nftables JSON, pure; nft.c
 *    runs it through libnftables inside the host's network namespace): one
 *    table "ferry-<host>" per host in the bridge family, holding each VM's
 *    two chains bound to its tap, and one of the same name in the inet
 *    family, which hands the connection state (br_netfilter's conntrack)
 *    to the bridge chains in the packet mark and tags each new flow of a
 *    VM with the VM's tag (ct mark);
 *  - connection state (ct.c, libnetfilter_conntrack; ctwire.c and
 *    ct_wire.h, the fixed-width record format, pure): export of the flows
 *    tagged for one VM, their import on another host.
 *
 * The functions that touch the kernel block (netlink from a short-lived
 * thread inside the namespace; netdev.h): call them from worker threads,
 * or at start-up. They are serialised by one lock, so that each one's
 * read-then-change of the table is atomic with respect to the others.
 */
#ifndef FERRY_FIREWALL_H
#define FERRY_FIREWALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common.h"

/* ---- rules (rules.c) ---- */

enum fw_action { FW_ACCEPT, FW_DROP };
enum fw_dir { FW_IN, FW_OUT };     /* to the VM, from the VM */
enum fw_proto {
	FW_PROTO_ANY,
	FW_PROTO_TCP,
	FW_PROTO_UDP,
	FW_PROTO_ICMP,
	FW_PROTO_ICMPV6,
};
/* Where a VM's rules come from: its definition, or the cluster policy's
 * default (on this host, or the source's, carried by a migration). */
enum fw_origin { FW_ORIGIN_VM, FW_ORIGIN_DEFAULT };

/* An address prefix: family 0 is any address. */
struct fw_net {
	uint8_t family;           /* 0, 4 or 6 */
	uint8_t prefix;           /* bits */
	uint8_t addr[16];         /* host bits zero */
};

struct fw_rule {
	enum fw_dir dir;
	enum fw_action action;
	enum fw_proto proto;
	uint16_t port_lo, port_hi; /* tcp/udp destination ports; 0: any */
	struct fw_net peer;        /* "from" (dir in) or "to" (dir out) */
};

/* A firewall: rules in order, first match wins, then the default. */
struct fw_policy {
	bool present;
	enum fw_origin origin;     /* not part of the content (digest) */
	enum fw_action def;
	unsigned nrules;
	struct fw_rule rules[FERRY_FW_RULES_MAX];
};

/* Parse a firewall object (hostile input, strict):
 *   {"default": "drop"|"accept",
 *    "rules": [{"dir": "in"|"out", "action": "accept"|"drop",
 *               "proto": "any"|"tcp"|"udp"|"icmp"|"icmpv6",
 *               "port": 22 | "8000-8080", "from": CIDR, "to": CIDR}]}
 * "default" is required; a rule needs "dir", the rest is optional (action
 * accept, proto any). "port" needs tcp or udp; "from" only with dir in,
 * "to" only with dir out; a CIDR ("10.0.0.0/8", "2001:db8::/32", or one
 * address) has no host bits set; icmp needs an IPv4 peer, icmpv6 an IPv6
 * one. FERR_INVALID naming what.field (what: e.g. "vm.firewall"); *p is
 * then unspecified. On success p->origin is FW_ORIGIN_VM. */
int fw_policy_from_json(const json_t *obj, const char *what,
			struct fw_policy *p, struct ferr *err);

/* The canonical JSON of p (every rule with dir, action, proto; port and
 * peer when set), or NULL out of memory. A policy that is not present is
 * JSON null. */
json_t *fw_policy_to_json(const struct fw_policy *p);

#define FW_DIGEST_HEX 16

/* The first 64 bits of SHA-256 over the canonical JSON (sorted, compact),
 * in hex: equal digests mean the same rules. */
void fw_policy_digest(const struct fw_policy *p,
		      char out[FW_DIGEST_HEX + 1]);

/* The cluster policy's "firewall" (docs/policy.md):
 *   {"default": FIREWALL, "required": true|false,
 *    "accept_default": "allow"|"deny"}
 * every member optional. */
struct fw_cluster {
	struct fw_policy def;      /* .present: what VMs without rules get */
	bool required;             /* a bridged VM without rules is refused */
	bool deny_accept;          /* rules with "default": "accept" are */
};

/* Parse it (strict, like fw_policy_from_json; the default's origin is
 * FW_ORIGIN_DEFAULT). */
int fw_cluster_from_json(const json_t *obj, const char *what,
			 struct fw_cluster *c, struct ferr *err);

/* The rules a bridged VM gets on a host under c: own when present, else
 * c's default; then c's checks. out->present is false when it gets none.
 * A refusal is FERR_FORBIDDEN saying which check. */
int fw_effective(const struct fw_cluster *c, const struct fw_policy *own,
		 struct fw_policy *out, struct ferr *err);

/* ---- enforcement (nft.c) ---- */

/* The tag of a VM's flows (their ct mark): the low 29 bits of its uuid's
 * first 32 (never 0). The same on every host, so imported flows keep
 * it. */
uint32_t fw_tag(const char *uuid);

/* One VM's binding on this host. */
struct fw_vm {
	const char *uuid;
	const char *tap;           /* its tap's interface name */
	uint8_t mac[6];            /* the VM's MAC (its frames' source) */
	const struct fw_policy *policy;
};

/* Install vm's chains and bindings in host's table in namespace ns (NULL
 * or "": ferryd's own), creating the tables when absent, in one atomic
 * nftables transaction: on error nothing changed. An installation that is
 * already exactly this (same tap, MAC, tag and rules) is left alone, with
 * its counters: *changed (may be NULL) says whether anything changed.
 * Another VM of this host with the same tag is FERR_CONFLICT. */
int fw_install(const char *host, const char *ns, const struct fw_vm *vm,
	       bool *changed, struct ferr *err);

/* Remove the chains and bindings of the VM uuid (nothing there is fine),
 * atomically. */
int fw_remove(const char *host, const char *ns, const char *uuid,
	      struct ferr *err);

/* At start-up: remove every VM from host's tables in ns whose uuid is not
 * in keep[0..nkeep); when the tables' fixed part is not what ferry made,
 * delete both tables (the caller then installs its running VMs again).
 * *removed (may be NULL) counts the VMs removed, *rebuilt says the tables
 * went. */
int fw_prune(const char *host, const char *ns, const char *const *keep,
	     size_t nkeep, unsigned *removed, bool *rebuilt,
	     struct ferr *err);

/* What is installed for uuid: {"installed": bool, "tap", "digest",
 * "counters": {"in": [...], "out": [...]}}, each counter {"rule": N or
 * "established", "invalid", "not_syn", "default", "packets", "bytes"}.
 * NULL with err on failure. */
json_t *fw_show(const char *host, const char *ns, const char *uuid,
		struct ferr *err);

/* ---- connection state (ct.c) ---- */

/* The tracked flows of the VM tagged tag in namespace ns, encoded as a
 * context message (ct_wire.h) into *buf (malloc'd, *len bytes; *count
 * flows). Flows ferry cannot carry (NAT, helpers, other protocols) are
 * skipped and counted in *skipped (may be NULL). More than
 * FERRY_FW_CT_FLOWS_MAX flows is FERR_TOO_LARGE. */
int fw_ct_export(const char *ns, uint32_t tag, uint8_t **buf, size_t *len,
		 unsigned *count, unsigned *skipped, struct ferr *err);

/* Import a context message into namespace ns, every flow tagged tag (the
 * sender's tags are not trusted): a flow already tracked is updated. The
 * message is checked whole first (ct_decode): a bad one changes nothing. */
int fw_ct_import(const char *ns, uint32_t tag, const uint8_t *buf,
		 size_t len, unsigned *count, struct ferr *err);

/* Delete the tracked flows tagged tag in namespace ns (the VM is gone from
 * this host). *count (may be NULL) gets how many. */
int fw_ct_flush(const char *ns, uint32_t tag, unsigned *count,
		struct ferr *err);

#endif
