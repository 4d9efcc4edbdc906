/* policy.h - who may do what: roles granted to identities, the permission
 * every API endpoint requires, and migration rules per VM and VM group
 * (who may migrate a VM out, where it may go, which sources a destination
 * accepts it from, who may ask a host to take it in).
 *
 * The policy is a JSON file (docs/policy.md), validated strictly on load:
 * every error names the file, the field and the reason. Everything is denied
 * unless a rule allows it. A loaded policy is immutable; reloading builds a
 * new one and swaps it in only when it is valid.
 */
#ifndef FERRY_POLICY_H
#define FERRY_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common.h"

enum role {
	ROLE_ADMIN = 1u << 0,
	ROLE_OPERATOR = 1u << 1,
	ROLE_AUDITOR = 1u << 2,
	ROLE_CONTROLLER = 1u << 3, /* the load balancer */
	ROLE_HOST = 1u << 4,       /* a peer ferryd */
	ROLE_MONITOR = 1u << 5,    /* a metrics scraper (Prometheus) */
};

/* The permission each API endpoint requires (docs/policy.md has the
 * table of roles that hold each). */
enum perm {
	PERM_HOST_READ,      /* host facts */
	PERM_VM_READ,        /* list, info, console */
	PERM_VM_WRITE,       /* define, start, stop, pause, resume, delete */
	PERM_VM_MIGRATE,     /* start a migration (rules decide the rest) */
	PERM_MIG_READ,       /* migration records and history */
	PERM_MIG_CANCEL,     /* cancel a migration */
	PERM_MIG_PEER,       /* prepare/finish/abort an incoming migration */
	PERM_AUDIT_READ,     /* read the audit log */
	PERM_POLICY_RELOAD,  /* reload the policy */
	PERM_BALANCE_READ,   /* load reports, balancer status and plans */
	PERM_BALANCE_WRITE,  /* balancer mode, host drain/undrain */
	PERM_ATTEST_READ,    /* the host's TPM identity and quotes */
	PERM_ATTEST_ADMIN,   /* enrolment (credential activation), approvals */
	PERM_METRICS,        /* GET /v1/metrics */
	PERM_VM_FIREWALL,    /* change a VM's firewall rules */
	PERM__COUNT
};

#define POLICY_LABELS_MAX FERRY_VM_LABELS_MAX

/* What a migration check looks at: the VM and the hosts involved. */
struct policy_vm {
	const char *name;
	const struct label *labels;
	unsigned nlabels;
};

/* The result of a check: allowed or not, the rule that decided (or
 * "default-deny"), and a human reason. */
struct policy_decision {
	bool allow;
	bool attest;    /* the allowing rule requires the destination's
			   attestation ("attest": "required") */
	bool plaintext; /* the allowing rule lets this migration cross in
			   plaintext ("plaintext": "allow"); default no */
	char rule[FERRY_NAME_MAX + 1];
	char reason[FERRY_ERR_MSG_MAX];
};

struct policy;

/* Parse a policy from JSON text; `origin` names the file in errors. */
int policy_parse(const char *text, size_t len, const char *origin,
		 struct policy **out, struct ferr *err);

/* Read and parse the policy file at path. */
int policy_load(const char *path, struct policy **out, struct ferr *err);

/* Load the policy at path and, only when it is valid, free *cur and put
 * the new one in its place; on error *cur is untouched (the old policy
 * stays in force). */
int policy_reload(struct policy **cur, const char *path, struct ferr *err);

/* The policy's firewall settings ("firewall", docs/policy.md): the
 * default rules of VMs that have none, and the checks on any VM's rules.
 * Never NULL (a NULL policy has none). */
struct fw_cluster;
const struct fw_cluster *policy_firewall(const struct policy *p);

/* Number of rules (for reload reports). */
size_t policy_rule_count(const struct policy *p);

/* Free a policy (NULL is fine). */
void policy_free(struct policy *p);

/* Roles (enum role bits) granted to identity; 0 for none. */
unsigned policy_roles(const struct policy *p, const char *identity);

/* The kind of certificate an identity authenticated with (tls.h,
 * tls_peer_is_host). Hosts and users share one name space in the policy,
 * so the host role counts only for a host certificate: a user certificate
 * named like a host is a user. */
enum id_class { ID_USER, ID_HOST };

/* Does identity, authenticated as cls, hold a role that carries perm? d
 * gets the reason. A NULL policy denies everything. */
bool policy_permits(const struct policy *p, const char *identity,
		    enum id_class cls, enum perm perm,
		    struct policy_decision *d);

/* Source side: may requester migrate vm out of this host to host `to`?
 * A rule must match the VM, list the requester under migrate_out and the
 * destination under to. */
void policy_check_out(const struct policy *p, const char *requester,
		      const struct policy_vm *vm, const char *to,
		      struct policy_decision *d);

/* Destination side: may host `from` (a peer with the host role) bring vm
 * in on behalf of requester? A rule must match the VM, list the source
 * under accept_from and the requester under migrate_in. */
void policy_check_in(const struct policy *p, const char *requester,
		     const struct policy_vm *vm, const char *from,
		     struct policy_decision *d);

/* Reference values for attesting host: the union of the lists of every
 * "attestation.reference" entry whose selector matches the host, as a new
 * object {"ferryd": [hex...], "qemu": [...], "policy": [...]} (empty
 * lists when none match; NULL only when out of memory). scope gets where
 * they come from for messages: the host's labels ("site=eu,tier=gold")
 * or, without labels, "host NAME". */
json_t *policy_attest_refs(const struct policy *p, const char *host,
			   char *scope, size_t scope_len);

/* Labels of a host from the policy (NULL when it has none). */
const json_t *policy_host_labels(const struct policy *p, const char *host);

/* Stable names for roles and permissions (docs, audit records). */
const char *perm_name(enum perm perm);
const char *role_name(enum role role);

#endif
