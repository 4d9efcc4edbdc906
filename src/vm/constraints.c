/* constraints.c - the migration constraints a VM carries in its definition
 * (vm.h, struct vm_constraints): strict parsing and their JSON forms. The
 * signature is checked where the authority's key is known (the migrate
 * component, the API). */
#include "vm.h"

#include <stdio.h>
#include <string.h>

#define WHAT "vm.constraints"

/* Exactly 2n lowercase hex digits of s into out. */
static int unhex(const char *s, uint8_t *out, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	if (strlen(s) != 2 * n)
		return -1;
	for (size_t i = 0; i < 2 * n; i++) {
		const char *d = strchr(digits, s[i]);

		if (!d)
			return -1;
		if (i % 2 == 0)
			out[i / 2] = (uint8_t)((d - digits) << 4);
		else
			out[i / 2] |= (uint8_t)(d - digits);
	}
	return 0;
}

static int parse_destinations(const json_t *d, struct vm_constraints *c,
			      struct ferr *err)
{
	const char *k;
	json_t *vals, *v;
	size_t i;

	if (!json_is_object(d) || json_object_size(d) == 0)
		return ferr_set(err, FERR_INVALID,
				WHAT ".destinations must be an object of "
				"label: [values]");
	json_object_foreach((json_t *)d, k, vals) {
		if (!name_is_valid(k) || !json_is_array(vals) ||
		    json_array_size(vals) == 0)
			return ferr_set(err, FERR_INVALID,
					WHAT ".destinations.%.64s: a label "
					"name with a non-empty array of values",
					k);
		json_array_foreach(vals, i, v) {
			if (!json_is_string(v) ||
			    !name_is_valid(json_string_value(v)))
				return ferr_set(err, FERR_INVALID,
						WHAT ".destinations.%.64s[%zu]: "
						"values must be "
						"[a-z0-9][a-z0-9._-]*",
						k, i);
			if (c->ndest == FERRY_VM_DEST_LABELS_MAX)
				return ferr_set(err, FERR_INVALID,
						WHAT ".destinations: more than "
						"%d values in all",
						FERRY_VM_DEST_LABELS_MAX);
			snprintf(c->dest[c->ndest].key,
				 sizeof(c->dest[0].key), "%s", k);
			snprintf(c->dest[c->ndest].value,
				 sizeof(c->dest[0].value), "%s",
				 json_string_value(v));
			c->ndest++;
		}
	}
	return 0;
}

static int parse_roles(const json_t *r, struct vm_constraints *c,
		       struct ferr *err)
{
	json_t *v;
	size_t i;

	if (!json_is_array(r) || json_array_size(r) == 0 ||
	    json_array_size(r) > FERRY_VM_ROLES_MAX)
		return ferr_set(err, FERR_INVALID,
				WHAT ".roles must be an array of 1 to %d role "
				"names",
				FERRY_VM_ROLES_MAX);
	json_array_foreach(r, i, v) {
		if (!json_is_string(v) || !name_is_valid(json_string_value(v)))
			return ferr_set(err, FERR_INVALID,
					WHAT ".roles[%zu] must be a role name",
					i);
		snprintf(c->roles[c->nroles++], sizeof(c->roles[0]), "%s",
			 json_string_value(v));
	}
	return 0;
}

int vm_constraints_from_json(const json_t *obj, struct vm_constraints *c,
			     struct ferr *err)
{
	static const char *const fields[] = { "destinations", "attest", "roles",
					      "signature", NULL };
	const char *att = NULL, *sig = NULL;
	uint8_t bin[FERRY_VM_SIG_LEN];

	memset(c, 0, sizeof(*c));
	if (!json_is_object(obj))
		return ferr_set(err, FERR_INVALID, WHAT " must be an object");
	if (json_check_fields(obj, fields, WHAT, err) < 0 ||
	    json_get_string(obj, "attest", WHAT, 16, &att, err) < 0 ||
	    json_get_string(obj, "signature", WHAT, 2 * FERRY_VM_SIG_LEN, &sig,
			    err) < 0)
		return -1;
	if (att && strcmp(att, "required") != 0 && strcmp(att, "optional"))
		return ferr_set(err, FERR_INVALID,
				WHAT ".attest: \"required\" or \"optional\"");
	c->attest = att && !strcmp(att, "required");
	if (json_object_get(obj, "destinations") &&
	    parse_destinations(json_object_get(obj, "destinations"), c, err) <
		    0)
		return -1;
	if (json_object_get(obj, "roles") &&
	    parse_roles(json_object_get(obj, "roles"), c, err) < 0)
		return -1;
	if (!sig || unhex(sig, bin, sizeof(bin)) < 0)
		return ferr_set(err, FERR_INVALID,
				WHAT ".signature: %d hex digits (sign them "
				"with `ferry vm sign`)",
				2 * FERRY_VM_SIG_LEN);
	memcpy(c->signature, bin, sizeof(bin));
	c->present = true;
	return 0;
}

json_t *vm_constraints_to_json(const struct vm_constraints *c,
			       bool with_signature)
{
	json_t *o, *d = NULL;

	if (!c->present || !(o = json_object()))
		return NULL;
	if (c->attest)
		json_object_set_new(o, "attest", json_string("required"));
	for (unsigned i = 0; i < c->ndest; i++) {
		json_t *vals;

		if (!d)
			d = json_object();
		vals = json_object_get(d, c->dest[i].key);
		if (!vals) {
			vals = json_array();
			json_object_set_new(d, c->dest[i].key, vals);
		}
		json_array_append_new(vals, json_string(c->dest[i].value));
	}
	if (d)
		json_object_set_new(o, "destinations", d);
	if (c->nroles) {
		json_t *r = json_array();

		for (unsigned i = 0; i < c->nroles; i++)
			json_array_append_new(r, json_string(c->roles[i]));
		json_object_set_new(o, "roles", r);
	}
	if (with_signature) {
		char hex[2 * FERRY_VM_SIG_LEN + 1];

		for (size_t i = 0; i < sizeof(c->signature); i++)
			snprintf(hex + 2 * i, 3, "%02x", c->signature[i]);
		json_object_set_new(o, "signature", json_string(hex));
	}
	return o;
}
