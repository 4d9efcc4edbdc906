/* policy.c - strict parsing of the policy file and its decisions. */
#include "policy.h"
#include "firewall.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLICY_FILE_MAX (1024 * 1024)
#define POLICY_LIST_MAX 4096    /* identities, hosts, VM names per list */
#define POLICY_RULES_MAX 1024
#define POLICY_WHAT_MAX 160     /* "rules[3].to.labels" */

struct policy {
	json_t *root; /* validated: evaluated directly */
	struct fw_cluster fw; /* "firewall", parsed */
};

static const char *const role_names[] = { "admin", "operator", "auditor",
					   "controller", "host", "monitor" };
#define ROLE_COUNT 6

/* Roles that hold each permission. */
static const unsigned perm_roles[PERM__COUNT] = {
	[PERM_HOST_READ] = ROLE_ADMIN | ROLE_OPERATOR | ROLE_AUDITOR |
			   ROLE_CONTROLLER | ROLE_HOST,
	[PERM_VM_READ] = ROLE_ADMIN | ROLE_OPERATOR | ROLE_AUDITOR |
			 ROLE_CONTROLLER | ROLE_HOST,
	[PERM_VM_WRITE] = ROLE_ADMIN | ROLE_OPERATOR,
	[PERM_VM_MIGRATE] = ROLE_ADMIN | ROLE_OPERATOR | ROLE_CONTROLLER,
	[PERM_MIG_READ] = ROLE_ADMIN | ROLE_OPERATOR | ROLE_AUDITOR |
			  ROLE_CONTROLLER,
	[PERM_MIG_CANCEL] = ROLE_ADMIN | ROLE_OPERATOR | ROLE_CONTROLLER,
	[PERM_MIG_PEER] = ROLE_HOST,
	[PERM_AUDIT_READ] = ROLE_ADMIN | ROLE_AUDITOR,
	[PERM_POLICY_RELOAD] = ROLE_ADMIN,
	[PERM_BALANCE_READ] = ROLE_ADMIN | ROLE_OPERATOR | ROLE_AUDITOR |
			      ROLE_CONTROLLER,
	[PERM_BALANCE_WRITE] = ROLE_ADMIN | ROLE_OPERATOR | ROLE_CONTROLLER,
	[PERM_ATTEST_READ] = ROLE_ADMIN | ROLE_OPERATOR | ROLE_AUDITOR |
			     ROLE_CONTROLLER | ROLE_HOST,
	[PERM_ATTEST_ADMIN] = ROLE_ADMIN,
	[PERM_METRICS] = ROLE_ADMIN | ROLE_OPERATOR | ROLE_AUDITOR |
			 ROLE_MONITOR,
	[PERM_VM_FIREWALL] = ROLE_ADMIN,
};

static const char *const perm_names[PERM__COUNT] = {
	[PERM_HOST_READ] = "host.read",
	[PERM_VM_READ] = "vm.read",
	[PERM_VM_WRITE] = "vm.write",
	[PERM_VM_MIGRATE] = "vm.migrate",
	[PERM_MIG_READ] = "migration.read",
	[PERM_MIG_CANCEL] = "migration.cancel",
	[PERM_MIG_PEER] = "migration.peer",
	[PERM_AUDIT_READ] = "audit.read",
	[PERM_POLICY_RELOAD] = "policy.reload",
	[PERM_BALANCE_READ] = "balance.read",
	[PERM_BALANCE_WRITE] = "balance.write",
	[PERM_ATTEST_READ] = "attest.read",
	[PERM_ATTEST_ADMIN] = "attest.admin",
	[PERM_METRICS] = "metrics",
	[PERM_VM_FIREWALL] = "vm.firewall",
};

const char *perm_name(enum perm perm)
{
	return (unsigned)perm < PERM__COUNT ? perm_names[perm] : "?";
}

const char *role_name(enum role role)
{
	for (unsigned i = 0; i < ROLE_COUNT; i++)
		if (role == (1u << i))
			return role_names[i];
	return "?";
}

/* ---- validation ---- */

/* An array of at most POLICY_LIST_MAX valid, distinct names. */
static int check_names(const json_t *arr, const char *what, struct ferr *err)
{
	size_t i, j;
	json_t *v, *w;

	if (!json_is_array(arr))
		return ferr_set(err, FERR_INVALID, "%s: must be an array of "
						   "names",
				what);
	if (json_array_size(arr) > POLICY_LIST_MAX)
		return ferr_set(err, FERR_INVALID, "%s: more than %d entries",
				what, POLICY_LIST_MAX);
	json_array_foreach(arr, i, v) {
		if (!json_is_string(v) || !name_is_valid(json_string_value(v)))
			return ferr_set(err, FERR_INVALID,
					"%s[%zu]: not a valid name "
					"([a-z0-9][a-z0-9._-]*, at most %d)",
					what, i, FERRY_NAME_MAX);
		json_array_foreach(arr, j, w) {
			if (j >= i)
				break;
			if (json_equal(v, w))
				return ferr_set(err, FERR_INVALID,
						"%s[%zu]: \"%s\" is listed "
						"twice",
						what, i, json_string_value(v));
		}
	}
	return 0;
}

/* {"key": "value", ...}: at most POLICY_LABELS_MAX valid names. */
static int check_labels(const json_t *obj, const char *what, struct ferr *err)
{
	const char *k;
	json_t *v;

	if (!json_is_object(obj))
		return ferr_set(err, FERR_INVALID,
				"%s: must be an object of labels", what);
	if (json_object_size(obj) > POLICY_LABELS_MAX)
		return ferr_set(err, FERR_INVALID, "%s: more than %d labels",
				what, POLICY_LABELS_MAX);
	json_object_foreach((json_t *)obj, k, v) {
		if (!name_is_valid(k) || !json_is_string(v) ||
		    !name_is_valid(json_string_value(v)))
			return ferr_set(err, FERR_INVALID,
					"%s.%.64s: label keys and values must "
					"be valid names",
					what, k);
	}
	return 0;
}

/* A selector: exactly one of "all": true, "names"/"hosts": [...],
 * "groups": [...] (VMs only), "labels": {...}. */
static int check_selector(const json_t *sel, bool vms, const json_t *groups,
			  const char *what, struct ferr *err)
{
	static const char *const vm_fields[] = { "all", "names", "groups",
						 "labels", NULL };
	static const char *const host_fields[] = { "all", "hosts", "labels",
						   NULL };
	char sub[POLICY_WHAT_MAX];
	const char *key;
	json_t *v;

	if (json_check_fields(sel, vms ? vm_fields : host_fields, what, err) <
	    0)
		return -1;
	if (json_object_size(sel) != 1)
		return ferr_set(err, FERR_INVALID,
				"%s: needs exactly one of %s", what,
				vms ? "all, names, groups, labels"
				    : "all, hosts, labels");
	json_object_foreach((json_t *)sel, key, v) {
		snprintf(sub, sizeof(sub), "%s.%s", what, key);
		if (!strcmp(key, "all")) {
			if (!json_is_true(v))
				return ferr_set(err, FERR_INVALID,
						"%s: must be true", sub);
		} else if (!strcmp(key, "labels")) {
			if (check_labels(v, sub, err) < 0)
				return -1;
		} else {
			size_t i;
			json_t *g;

			if (check_names(v, sub, err) < 0)
				return -1;
			if (strcmp(key, "groups") != 0)
				continue;
			json_array_foreach(v, i, g) {
				if (!json_object_get(groups,
						     json_string_value(g)))
					return ferr_set(err, FERR_INVALID,
							"%s[%zu]: no group "
							"named \"%s\"",
							sub, i,
							json_string_value(g));
			}
		}
	}
	return 0;
}

/* {"roles": [...], "identities": [...]}: at least one entry. */
static int check_who(const json_t *who, const char *what, struct ferr *err)
{
	static const char *const fields[] = { "roles", "identities", NULL };
	char sub[POLICY_WHAT_MAX];
	json_t *roles = json_object_get(who, "roles");
	json_t *ids = json_object_get(who, "identities");
	size_t i;
	json_t *r;

	if (json_check_fields(who, fields, what, err) < 0)
		return -1;
	if (!roles && !ids)
		return ferr_set(err, FERR_INVALID,
				"%s: needs roles or identities", what);
	snprintf(sub, sizeof(sub), "%s.identities", what);
	if (ids && check_names(ids, sub, err) < 0)
		return -1;
	snprintf(sub, sizeof(sub), "%s.roles", what);
	if (roles && check_names(roles, sub, err) < 0)
		return -1;
	json_array_foreach(roles, i, r) {
		bool known = false;

		for (unsigned k = 0; k < ROLE_COUNT; k++)
			known |= !strcmp(json_string_value(r), role_names[k]);
		if (!known)
			return ferr_set(err, FERR_INVALID,
					"%s[%zu]: unknown role \"%s\" (admin, "
					"operator, auditor, controller, host, "
					"monitor)",
					sub, i, json_string_value(r));
	}
	return 0;
}

static int check_rule(const json_t *rule, size_t idx, const json_t *groups,
		      struct ferr *err)
{
	static const char *const fields[] = { "name", "vms", "migrate_out",
					      "to", "accept_from",
					      "migrate_in", "attest", "plaintext",
					      NULL };
	char what[POLICY_WHAT_MAX], sub[POLICY_WHAT_MAX];
	const char *name = NULL;
	json_t *v;

	snprintf(what, sizeof(what), "rules[%zu]", idx);
	if (json_check_fields(rule, fields, what, err) < 0 ||
	    json_get_string(rule, "name", what, FERRY_NAME_MAX, &name, err) <
		    0)
		return -1;
	if (!name || !name_is_valid(name))
		return ferr_set(err, FERR_INVALID,
				"%s.name: required, a valid name", what);
	snprintf(what, sizeof(what), "rules[%zu] (%s)", idx, name);
	if ((v = json_object_get(rule, "attest")) &&
	    (!json_is_string(v) ||
	     (strcmp(json_string_value(v), "required") != 0 &&
	      strcmp(json_string_value(v), "optional") != 0)))
		return ferr_set(err, FERR_INVALID,
				"%s.attest: \"required\" or \"optional\"",
				what);
	if ((v = json_object_get(rule, "plaintext")) &&
	    (!json_is_string(v) ||
	     (strcmp(json_string_value(v), "allow") != 0 &&
	      strcmp(json_string_value(v), "deny") != 0)))
		return ferr_set(err, FERR_INVALID,
				"%s.plaintext: \"allow\" or \"deny\"",
				what);
	v = json_object_get(rule, "vms");
	if (!v)
		return ferr_set(err, FERR_INVALID, "%s.vms: required", what);
	snprintf(sub, sizeof(sub), "%s.vms", what);
	if (check_selector(v, true, groups, sub, err) < 0)
		return -1;
	if (!json_object_get(rule, "migrate_out") !=
	    !json_object_get(rule, "to"))
		return ferr_set(err, FERR_INVALID,
				"%s: migrate_out and to go together", what);
	if (!json_object_get(rule, "accept_from") !=
	    !json_object_get(rule, "migrate_in"))
		return ferr_set(err, FERR_INVALID,
				"%s: accept_from and migrate_in go together",
				what);
	if (!json_object_get(rule, "to") &&
	    !json_object_get(rule, "accept_from"))
		return ferr_set(err, FERR_INVALID,
				"%s: needs migrate_out+to or "
				"accept_from+migrate_in",
				what);
	if ((v = json_object_get(rule, "migrate_out"))) {
		snprintf(sub, sizeof(sub), "%s.migrate_out", what);
		if (check_who(v, sub, err) < 0)
			return -1;
		snprintf(sub, sizeof(sub), "%s.to", what);
		if (check_selector(json_object_get(rule, "to"), false, NULL,
				   sub, err) < 0)
			return -1;
	}
	if ((v = json_object_get(rule, "migrate_in"))) {
		snprintf(sub, sizeof(sub), "%s.migrate_in", what);
		if (check_who(v, sub, err) < 0)
			return -1;
		snprintf(sub, sizeof(sub), "%s.accept_from", what);
		if (check_selector(json_object_get(rule, "accept_from"), false,
				   NULL, sub, err) < 0)
			return -1;
	}
	return 0;
}

/* A list of SHA-256 digests in lowercase hex. */
static int check_digests(const json_t *arr, const char *what, struct ferr *err)
{
	size_t i;
	json_t *v;

	if (!json_is_array(arr) || json_array_size(arr) > POLICY_LIST_MAX)
		return ferr_set(err, FERR_INVALID,
				"%s: must be an array of at most %d digests",
				what, POLICY_LIST_MAX);
	json_array_foreach(arr, i, v) {
		const char *s = json_string_value(v);
		size_t n = s ? strlen(s) : 0;

		if (n != 64 || strspn(s, "0123456789abcdef") != n)
			return ferr_set(err, FERR_INVALID,
					"%s[%zu]: not a SHA-256 digest (64 "
					"lowercase hex digits)",
					what, i);
	}
	return 0;
}

/* "attestation": {"reference": [{"hosts": selector, "ferryd": [...],
 * "qemu": [...], "policy": [...]}, ...]}: reference values per host. */
static int check_attestation(const json_t *att, struct ferr *err)
{
	static const char *const fields[] = { "reference", NULL };
	static const char *const ref_fields[] = { "hosts", "ferryd", "qemu",
						  "policy", NULL };
	static const char *const kinds[] = { "ferryd", "qemu", "policy" };
	char what[POLICY_WHAT_MAX], sub[POLICY_WHAT_MAX];
	json_t *refs = json_object_get(att, "reference"), *r;
	size_t i;

	if (json_check_fields(att, fields, "attestation", err) < 0)
		return -1;
	if (refs && (!json_is_array(refs) ||
		     json_array_size(refs) > POLICY_RULES_MAX))
		return ferr_set(err, FERR_INVALID,
				"attestation.reference: an array of at most %d "
				"entries",
				POLICY_RULES_MAX);
	json_array_foreach(refs, i, r) {
		snprintf(what, sizeof(what), "attestation.reference[%zu]", i);
		if (json_check_fields(r, ref_fields, what, err) < 0)
			return -1;
		snprintf(sub, sizeof(sub), "%s.hosts", what);
		if (!json_object_get(r, "hosts"))
			return ferr_set(err, FERR_INVALID, "%s: required",
					sub);
		if (check_selector(json_object_get(r, "hosts"), false, NULL,
				   sub, err) < 0)
			return -1;
		for (int k = 0; k < 3; k++) {
			json_t *v = json_object_get(r, kinds[k]);

			snprintf(sub, sizeof(sub), "%s.%s", what, kinds[k]);
			if (v && check_digests(v, sub, err) < 0)
				return -1;
		}
	}
	return 0;
}

static int check_policy(const json_t *root, struct ferr *err)
{
	static const char *const fields[] = { "version", "roles", "hosts",
					      "groups", "rules",
					      "attestation", "firewall", NULL };
	static const char *const host_fields[] = { "labels", NULL };
	json_t *roles, *hosts, *groups, *rules, *v;
	const char *key;
	uint64_t version = 1;
	char sub[POLICY_WHAT_MAX];
	size_t i, j;

	if (json_check_fields(root, fields, "policy", err) < 0 ||
	    json_get_u64(root, "version", "policy", 1, 1, &version, err) < 0)
		return -1;
	roles = json_object_get(root, "roles");
	if (!json_is_object(roles))
		return ferr_set(err, FERR_INVALID,
				"roles: required, an object of role -> "
				"identities");
	json_object_foreach(roles, key, v) {
		bool known = false;

		for (unsigned k = 0; k < ROLE_COUNT; k++)
			known |= !strcmp(key, role_names[k]);
		if (!known)
			return ferr_set(err, FERR_INVALID,
					"roles.%.64s: unknown role (admin, "
					"operator, auditor, controller, host, "
					"monitor)",
					key);
		snprintf(sub, sizeof(sub), "roles.%s", key);
		if (check_names(v, sub, err) < 0)
			return -1;
	}
	hosts = json_object_get(root, "hosts");
	if (hosts && !json_is_object(hosts))
		return ferr_set(err, FERR_INVALID,
				"hosts: must be an object of host -> "
				"{\"labels\": {...}}");
	json_object_foreach(hosts, key, v) {
		snprintf(sub, sizeof(sub), "hosts.%.64s", key);
		if (!name_is_valid(key))
			return ferr_set(err, FERR_INVALID,
					"%s: not a valid host name", sub);
		if (json_check_fields(v, host_fields, sub, err) < 0)
			return -1;
		snprintf(sub, sizeof(sub), "hosts.%s.labels", key);
		if (json_object_get(v, "labels") &&
		    check_labels(json_object_get(v, "labels"), sub, err) < 0)
			return -1;
	}
	groups = json_object_get(root, "groups");
	if (groups && !json_is_object(groups))
		return ferr_set(err, FERR_INVALID,
				"groups: must be an object of group -> VM "
				"names");
	json_object_foreach(groups, key, v) {
		snprintf(sub, sizeof(sub), "groups.%.64s", key);
		if (!name_is_valid(key))
			return ferr_set(err, FERR_INVALID,
					"%s: not a valid group name", sub);
		if (check_names(v, sub, err) < 0)
			return -1;
	}
	if (json_object_get(root, "attestation") &&
	    check_attestation(json_object_get(root, "attestation"), err) < 0)
		return -1;
	rules = json_object_get(root, "rules");
	if (rules && !json_is_array(rules))
		return ferr_set(err, FERR_INVALID, "rules: must be an array");
	if (json_array_size(rules) > POLICY_RULES_MAX)
		return ferr_set(err, FERR_INVALID,
				"rules: more than %d rules", POLICY_RULES_MAX);
	json_array_foreach(rules, i, v) {
		if (check_rule(v, i, groups, err) < 0)
			return -1;
		for (j = 0; j < i; j++) {
			if (json_equal(json_object_get(v, "name"),
				       json_object_get(json_array_get(rules, j),
						       "name")))
				return ferr_set(err, FERR_INVALID,
						"rules[%zu].name: \"%s\" is "
						"used twice",
						i,
						json_string_value(
							json_object_get(
								v, "name")));
		}
	}
	return 0;
}

int policy_parse(const char *text, size_t len, const char *origin,
		 struct policy **out, struct ferr *err)
{
	struct policy *p;
	json_t *root = json_parse_object(text, len, origin, err);

	if (!root)
		return -1;
	if (check_policy(root, err) < 0) {
		json_decref(root);
		return ferr_wrap(err, "%s", origin);
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		json_decref(root);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	p->root = root;
	if (json_object_get(root, "firewall") &&
	    fw_cluster_from_json(json_object_get(root, "firewall"), "firewall",
				 &p->fw, err) < 0) {
		policy_free(p);
		return ferr_wrap(err, "%s", origin);
	}
	*out = p;
	return 0;
}

int policy_load(const char *path, struct policy **out, struct ferr *err)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	if (file_read_all(path, POLICY_FILE_MAX, &text, &len, err) < 0)
		return -1;
	rc = policy_parse(text, len, path, out, err);
	free(text);
	return rc;
}

int policy_reload(struct policy **cur, const char *path, struct ferr *err)
{
	struct policy *p = NULL;

	if (policy_load(path, &p, err) < 0)
		return -1;
	policy_free(*cur);
	*cur = p;
	return 0;
}

const struct fw_cluster *policy_firewall(const struct policy *p)
{
	static const struct fw_cluster none;

	return p ? &p->fw : &none;
}

size_t policy_rule_count(const struct policy *p)
{
	return p ? json_array_size(json_object_get(p->root, "rules")) : 0;
}

void policy_free(struct policy *p)
{
	if (!p)
		return;
	json_decref(p->root);
	free(p);
}

/* ---- decisions ---- */

/* Is s in the array of strings? */
static bool in_list(const json_t *arr, const char *s)
{
	size_t i;
	json_t *v;

	json_array_foreach(arr, i, v)
		if (!strcmp(json_string_value(v), s))
			return true;
	return false;
}

unsigned policy_roles(const struct policy *p, const char *identity)
{
	json_t *roles;
	unsigned bits = 0;

	if (!p)
		return 0;
	roles = json_object_get(p->root, "roles");
	for (unsigned k = 0; k < ROLE_COUNT; k++)
		if (in_list(json_object_get(roles, role_names[k]), identity))
			bits |= 1u << k;
	return bits;
}

bool policy_permits(const struct policy *p, const char *identity,
		    enum id_class cls, enum perm perm,
		    struct policy_decision *d)
{
	unsigned named = policy_roles(p, identity);
	unsigned have = cls == ID_HOST ? named : named & ~(unsigned)ROLE_HOST;
	unsigned need = (unsigned)perm < PERM__COUNT ? perm_roles[perm] : 0;

	snprintf(d->rule, sizeof(d->rule), "%s", "roles");
	d->allow = (have & need) != 0;
	if (!p)
		snprintf(d->reason, sizeof(d->reason),
			 "no policy is loaded: everything is denied");
	else if (d->allow)
		snprintf(d->reason, sizeof(d->reason), "%s holds %s", identity,
			 perm_name(perm));
	else if (named & need)
		snprintf(d->reason, sizeof(d->reason),
			 "%s lacks %s: the host role needs a host certificate, "
			 "and %s presented a user certificate",
			 identity, perm_name(perm), identity);
	else
		snprintf(d->reason, sizeof(d->reason),
			 "%s lacks %s (needs one of the roles that hold it)",
			 identity, perm_name(perm));
	return d->allow;
}

/* Do labels (policy "labels" object) all appear among have[]? */
static bool labels_match(const json_t *want, const struct label *have,
			 unsigned nhave)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)want, k, v) {
		bool found = false;

		for (unsigned i = 0; i < nhave && !found; i++)
			found = !strcmp(have[i].key, k) &&
				!strcmp(have[i].value, json_string_value(v));
		if (!found)
			return false;
	}
	return true;
}

static bool vm_matches(const struct policy *p, const json_t *sel,
		       const struct policy_vm *vm)
{
	json_t *v;
	size_t i;

	if (json_is_true(json_object_get(sel, "all")))
		return true;
	if ((v = json_object_get(sel, "names")))
		return in_list(v, vm->name);
	if ((v = json_object_get(sel, "labels")))
		return labels_match(v, vm->labels, vm->nlabels);
	json_array_foreach(json_object_get(sel, "groups"), i, v) {
		json_t *members = json_object_get(
			json_object_get(p->root, "groups"),
			json_string_value(v));

		if (in_list(members, vm->name))
			return true;
	}
	return false;
}

static bool host_matches(const struct policy *p, const json_t *sel,
			 const char *host)
{
	const json_t *labels, *want;
	const char *k;
	json_t *v;

	if (json_is_true(json_object_get(sel, "all")))
		return true;
	if ((v = json_object_get(sel, "hosts")))
		return in_list(v, host);
	want = json_object_get(sel, "labels");
	labels = policy_host_labels(p, host);
	json_object_foreach((json_t *)want, k, v) {
		if (!labels || !json_equal(json_object_get(labels, k), v))
			return false;
	}
	return true;
}

static bool who_matches(const struct policy *p, const json_t *who,
			const char *identity)
{
	unsigned have = policy_roles(p, identity);
	size_t i;
	json_t *r;

	if (in_list(json_object_get(who, "identities"), identity))
		return true;
	json_array_foreach(json_object_get(who, "roles"), i, r) {
		for (unsigned k = 0; k < ROLE_COUNT; k++)
			if (!strcmp(json_string_value(r), role_names[k]) &&
			    (have & (1u << k)))
				return true;
	}
	return false;
}

/* The shared walk of policy_check_out / policy_check_in. */
static void check_migration(const struct policy *p, bool out,
			    const char *requester, const struct policy_vm *vm,
			    const char *host, struct policy_decision *d)
{
	const char *who_key = out ? "migrate_out" : "migrate_in";
	const char *host_key = out ? "to" : "accept_from";
	bool vm_seen = false, who_seen = false;
	size_t i;
	json_t *rule;

	d->allow = false;
	d->attest = false;
	d->plaintext = false;
	snprintf(d->rule, sizeof(d->rule), "%s", "default-deny");
	if (!p) {
		snprintf(d->reason, sizeof(d->reason),
			 "no policy is loaded: everything is denied");
		return;
	}
	json_array_foreach(json_object_get(p->root, "rules"), i, rule) {
		if (!json_object_get(rule, who_key) ||
		    !vm_matches(p, json_object_get(rule, "vms"), vm))
			continue;
		vm_seen = true;
		if (!who_matches(p, json_object_get(rule, who_key), requester))
			continue;
		who_seen = true;
		if (!host_matches(p, json_object_get(rule, host_key), host))
			continue;
		d->allow = true;
		d->attest = json_is_string(json_object_get(rule, "attest")) &&
			    !strcmp(json_string_value(
					    json_object_get(rule, "attest")),
				    "required");
		d->plaintext =
			json_is_string(json_object_get(rule, "plaintext")) &&
			!strcmp(json_string_value(
					json_object_get(rule, "plaintext")),
				"allow");
		snprintf(d->rule, sizeof(d->rule), "%s",
			 json_string_value(json_object_get(rule, "name")));
		snprintf(d->reason, sizeof(d->reason),
			 "rule %s lets %s migrate vm %s %s %s", d->rule,
			 requester, vm->name, out ? "to" : "in from", host);
		return;
	}
	if (!vm_seen)
		snprintf(d->reason, sizeof(d->reason),
			 "no rule allows migrating vm %s %s", vm->name,
			 out ? "out" : "in");
	else if (!who_seen)
		snprintf(d->reason, sizeof(d->reason),
			 "no rule lets %s migrate vm %s %s", requester,
			 vm->name, out ? "out" : "in");
	else
		snprintf(d->reason, sizeof(d->reason),
			 "no rule lets vm %s go %s host %s", vm->name,
			 out ? "to" : "in from", host);
}

void policy_check_out(const struct policy *p, const char *requester,
		      const struct policy_vm *vm, const char *to,
		      struct policy_decision *d)
{
	check_migration(p, true, requester, vm, to, d);
}

void policy_check_in(const struct policy *p, const char *requester,
		     const struct policy_vm *vm, const char *from,
		     struct policy_decision *d)
{
	check_migration(p, false, requester, vm, from, d);
}

const json_t *policy_host_labels(const struct policy *p, const char *host)
{
	if (!p)
		return NULL;
	return json_object_get(
		json_object_get(json_object_get(p->root, "hosts"), host),
		"labels");
}

json_t *policy_attest_refs(const struct policy *p, const char *host,
			   char *scope, size_t scope_len)
{
	static const char *const kinds[] = { "ferryd", "qemu", "policy" };
	json_t *out = json_pack("{s:[], s:[], s:[]}", "ferryd", "qemu",
				"policy");
	const json_t *labels = policy_host_labels(p, host);
	json_t *refs, *r, *v;
	const char *k;
	size_t i, j, off = 0;

	scope[0] = '\0';
	json_object_foreach((json_t *)labels, k, v) {
		int n = snprintf(scope + off, scope_len - off, "%s%s=%s",
				 off ? "," : "", k, json_string_value(v));

		if (n < 0 || (size_t)n >= scope_len - off)
			break;
		off += (size_t)n;
	}
	if (!scope[0])
		snprintf(scope, scope_len, "host %s", host);
	if (!out || !p)
		return out;
	refs = json_object_get(json_object_get(p->root, "attestation"),
			       "reference");
	json_array_foreach(refs, i, r) {
		if (!host_matches(p, json_object_get(r, "hosts"), host))
			continue;
		for (int n = 0; n < 3; n++)
			json_array_foreach(json_object_get(r, kinds[n]), j, v)
				json_array_append(json_object_get(out, kinds[n]),
						  v);
	}
	return out;
}
