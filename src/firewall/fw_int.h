/* fw_int.h - what the firewall component's files share (firewall.h is its
 * contract for the rest of ferry). nftjson.c is pure: it turns what the
 * kernel holds (a listing) and what a VM should have into one nftables
 * JSON transaction (nftlist.c reads a listing); nft.c runs those inside
 * a namespace.
 *
 * The tables "ferry-<host>" (docs/security.md, "Security context"):
 *
 *   bridge: maps to_vm / from_vm (tap -> jump to the VM's chain), sets
 *     vm_taps (taps) and vm_ports (tap . MAC: anti-spoofing); base chains
 *     pre (prerouting -300: a VM port sends only its VM's MAC), fwd
 *     (forward: from_vm then to_vm), inp (input: from_vm), outp (output:
 *     to_vm); per VM "vm-<uuid>-in" (to it) and "vm-<uuid>-out" (from it).
 *   inet: set vm_macs, map vm_tags (MAC -> tag); base chains pre
 *     (prerouting -150, after conntrack: tags a VM's new flows in ct mark,
 *     and writes its tag and connection state into the packet mark) and
 *     out (output -150: the state of packets the host sends).
 *
 * The packet mark of a VM's packet: FW_MARK_TAG bits the flow's tag,
 * FW_MARK_NEW a new flow, FW_MARK_EST an established or related one;
 * neither is an invalid or untracked packet.
 */
#ifndef FERRY_FW_INT_H
#define FERRY_FW_INT_H

#include "firewall.h"

#define FW_TABLE_PREFIX "ferry-"
#define FW_TABLE_MAX (sizeof(FW_TABLE_PREFIX) + FERRY_NAME_MAX)
#define FW_SKELETON "ferry-1"      /* comment of the fixed rules */
#define FW_MARK_TAG 0x1fffffffu
#define FW_MARK_NEW 0x20000000u
#define FW_MARK_EST 0x40000000u
#define FW_CHAIN_MAX 64            /* "vm-<uuid>-out" */
#define FW_MAC_TEXT 18

/* What one VM should have. */
struct fw_want {
	const char *uuid;
	const char *tap;
	char mac[FW_MAC_TEXT];
	uint32_t tag;
	const struct fw_policy *policy;
	char digest[FW_DIGEST_HEX + 1]; /* rules, tap, MAC, tag, skeleton */
};

/* Fill w from vm. FERR_INVALID for a bad uuid or tap name. */
int fw_want_init(struct fw_want *w, const struct fw_vm *vm,
		 struct ferr *err);

/* The kernel's view: `list table` JSON of each family ({"nftables":
 * [...]}), NULL when that table does not exist. Borrowed. */
struct fw_listing {
	const json_t *bridge;
	const json_t *inet;
};

/* Are the fixed parts of both tables exactly ferry's? */
bool fw_skeleton_ok(const struct fw_listing *l);

/* The transaction that installs w in table (both families), given l:
 * {"nftables": [...]}. *intact: l already has exactly w (the batch is
 * then NULL). FERR_CONFLICT when another VM holds w's MAC or tag. */
json_t *fw_batch_install(const char *table, const struct fw_listing *l,
			 const struct fw_want *w, bool *intact,
			 struct ferr *err);

/* The transaction that removes every VM not in keep[0..nkeep) (keep NULL:
 * only uuid, when uuid is not NULL) and every binding of no VM; NULL when
 * there is nothing to remove. *removed counts the VMs. */
json_t *fw_batch_remove(const char *table, const struct fw_listing *l,
			const char *uuid, const char *const *keep,
			size_t nkeep, unsigned *removed);

/* The transaction that deletes both tables (those that exist). */
json_t *fw_batch_drop(const char *table, const struct fw_listing *l);

/* ---- reading a listing (nftlist.c) ---- */

/* Each object of kind in the listing, from index *i on (advanced past it);
 * NULL past the end. */
const json_t *fw_ls_item(const json_t *listing, const char *kind, size_t *i);

/* The "elem" array of set or map name (NULL when empty or absent). */
const json_t *fw_ls_elems(const json_t *listing, const char *name);

/* A set element's value (a string), or a map element's key; NULL if none. */
const char *fw_elem_key(const json_t *e);

/* A verdict map element's jump target, or NULL. */
const char *fw_elem_target(const json_t *e);

/* A concatenated element's i-th part, or NULL. */
const char *fw_concat_part(const json_t *e, size_t i);

/* The uuid of a VM chain name "vm-<uuid>-in|out" into out, or false. */
bool fw_chain_uuid(const char *chain, char out[FERRY_UUID_STR_LEN + 1]);

/* The name of uuid's chain to the VM (in) or from it into out. */
void fw_vm_chain(char out[FW_CHAIN_MAX], const char *uuid, bool in);

/* Does the listing have a chain called name? */
bool fw_chain_exists(const json_t *listing, const char *name);

/* Does chain have a rule whose comment is comment? */
bool fw_rule_with_comment(const json_t *listing, const char *chain,
			  const char *comment);

/* fw_show's answer from a listing. */
json_t *fw_show_json(const struct fw_listing *l, const char *uuid);

/* ---- ct_wire.h codecs (ctwire.c) are declared there ---- */

#endif
