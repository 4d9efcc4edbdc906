/* nftlist.c - reading ferry's nftables tables from a listing (fw_int.h):
 * their sets, maps, chains and rules, and a VM's installed rules and
 * counters for fw_show. Pure: no kernel, no I/O. */
#include "fw_int.h"

#include <stdio.h>
#include <string.h>

#define VM_CHAIN_PREFIX "vm-"

const json_t *fw_ls_item(const json_t *listing, const char *kind, size_t *i)
{
	const json_t *arr = json_object_get(listing, "nftables");

	for (; *i < json_array_size(arr); (*i)++) {
		const json_t *o = json_object_get(json_array_get(arr, *i), kind);

		if (o) {
			(*i)++;
			return o;
		}
	}
	return NULL;
}

/* The "elem" array of set or map name (NULL when empty or absent). */
const json_t *fw_ls_elems(const json_t *listing, const char *name)
{
	const char *kinds[] = { "set", "map" };

	for (int k = 0; k < 2; k++) {
		const json_t *s;
		size_t i = 0;

		while ((s = fw_ls_item(listing, kinds[k], &i)))
			if (!strcmp(json_string_value(json_object_get(s, "name"))
					    ?: "",
				    name))
				return json_object_get(s, "elem");
	}
	return NULL;
}

/* A set element's value (a string), or a map element's key. */
const char *fw_elem_key(const json_t *e)
{
	return json_is_array(e) ? json_string_value(json_array_get(e, 0))
				: json_string_value(e);
}

/* A verdict map element's jump target. */
const char *fw_elem_target(const json_t *e)
{
	return json_string_value(json_object_get(
		json_object_get(json_array_get(e, 1), "jump"), "target"));
}

/* A concatenated element's i-th part. */
const char *fw_concat_part(const json_t *e, size_t i)
{
	return json_string_value(
		json_array_get(json_object_get(e, "concat"), i));
}

/* The uuid of a VM chain name "vm-<uuid>-in|out" into out, or false. */
bool fw_chain_uuid(const char *chain, char out[FERRY_UUID_STR_LEN + 1])
{
	size_t n = chain ? strlen(chain) : 0;
	size_t pre = strlen(VM_CHAIN_PREFIX);

	if (n != pre + FERRY_UUID_STR_LEN + 3 &&
	    n != pre + FERRY_UUID_STR_LEN + 4)
		return false;
	if (strncmp(chain, VM_CHAIN_PREFIX, pre) != 0 ||
	    (strcmp(chain + pre + FERRY_UUID_STR_LEN, "-in") != 0 &&
	     strcmp(chain + pre + FERRY_UUID_STR_LEN, "-out") != 0))
		return false;
	memcpy(out, chain + pre, FERRY_UUID_STR_LEN);
	out[FERRY_UUID_STR_LEN] = '\0';
	return true;
}

void fw_vm_chain(char out[FW_CHAIN_MAX], const char *uuid, bool in)
{
	snprintf(out, FW_CHAIN_MAX, VM_CHAIN_PREFIX "%s-%s", uuid,
		 in ? "in" : "out");
}

bool fw_chain_exists(const json_t *listing, const char *name)
{
	const json_t *c;
	size_t i = 0;

	while ((c = fw_ls_item(listing, "chain", &i)))
		if (!strcmp(json_string_value(json_object_get(c, "name")) ?: "",
			    name))
			return true;
	return false;
}

/* Does chain have a rule whose comment is comment? */
bool fw_rule_with_comment(const json_t *listing, const char *chain,
			      const char *comment)
{
	const json_t *r;
	size_t i = 0;

	while ((r = fw_ls_item(listing, "rule", &i)))
		if (!strcmp(json_string_value(json_object_get(r, "chain")) ?: "",
			    chain) &&
		    !strcmp(json_string_value(json_object_get(r, "comment"))
				    ?: "",
			    comment))
			return true;
	return false;
}

/* last[key] += o[key] */
static void add_to(json_t *last, const json_t *o, const char *key)
{
	json_object_set_new(last, key,
			    json_integer(json_integer_value(
						 json_object_get(last, key)) +
					 json_integer_value(
						 json_object_get(o, key))));
}

/* The counters of chain, by the rules' comments. */
static json_t *chain_counters(const json_t *listing, const char *chain)
{
	json_t *out = json_array();
	const json_t *r;
	size_t i = 0;

	while ((r = fw_ls_item(listing, "rule", &i))) {
		const char *c = json_string_value(json_object_get(r, "comment"));
		const json_t *cnt = NULL;
		unsigned n;
		size_t k;
		json_t *x, *o, *last;

		if (strcmp(json_string_value(json_object_get(r, "chain")) ?: "",
			   chain) || !c)
			continue;
		json_array_foreach(json_object_get(r, "expr"), k, x)
			if (json_object_get(x, "counter"))
				cnt = json_object_get(x, "counter");
		if (!cnt)
			continue;
		if (sscanf(c, "rule %u", &n) == 1)
			o = json_pack("{s:I}", "rule", (json_int_t)n);
		else
			o = json_pack("{s:s}", "rule",
				      !strncmp(c, "default", 7) ? "default" : c);
		json_object_set(o, "packets", json_object_get(cnt, "packets"));
		json_object_set(o, "bytes", json_object_get(cnt, "bytes"));
		/* the three "established" rules of an in chain add up */
		last = json_array_get(out, json_array_size(out) - 1);
		if (last && json_equal(json_object_get(last, "rule"),
				       json_object_get(o, "rule"))) {
			add_to(last, o, "packets");
			add_to(last, o, "bytes");
			json_decref(o);
			continue;
		}
		json_array_append_new(out, o);
	}
	return out;
}

json_t *fw_show_json(const struct fw_listing *l, const char *uuid)
{
	char in[FW_CHAIN_MAX], out[FW_CHAIN_MAX];
	const char *tap = NULL;
	const json_t *r;
	size_t i = 0;
	json_t *o;

	fw_vm_chain(in, uuid, true);
	fw_vm_chain(out, uuid, false);
	if (!l->bridge || !fw_chain_exists(l->bridge, in))
		return json_pack("{s:b}", "installed", 0);
	{
		size_t k;
		json_t *e;

		json_array_foreach(fw_ls_elems(l->bridge, "to_vm"), k, e)
			if (!strcmp(fw_elem_target(e) ?: "", in))
				tap = fw_elem_key(e);
	}
	o = json_pack("{s:b, s:s?, s:{s:o, s:o}}", "installed", 1, "tap", tap,
		      "counters", "in", chain_counters(l->bridge, in), "out",
		      chain_counters(l->bridge, out));
	while ((r = fw_ls_item(l->bridge, "rule", &i))) {
		const char *c = json_string_value(json_object_get(r, "comment"));

		if (c && !strcmp(json_string_value(json_object_get(r, "chain"))
					 ?: "",
				 in) &&
		    !strncmp(c, "default ", 8))
			json_object_set_new(o, "digest", json_string(c + 8));
	}
	return o;
}
