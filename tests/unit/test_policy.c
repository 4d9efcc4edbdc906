/* Unit tests of the policy: parsing, roles, permissions, migration rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "policy.h"

static const char *GOOD =
	"{\"version\": 1,"
	" \"roles\": {\"admin\": [\"alice\"], \"operator\": [\"bob\"],"
	"  \"auditor\": [\"carol\"], \"controller\": [\"balancer\"],"
	"  \"host\": [\"host-a\", \"host-b\", \"host-c\"]},"
	" \"hosts\": {\"host-a\": {\"labels\": {\"region\": \"eu\"}},"
	"  \"host-b\": {\"labels\": {\"region\": \"eu\"}},"
	"  \"host-c\": {\"labels\": {\"region\": \"us\"}}},"
	" \"groups\": {\"web\": [\"web-1\", \"web-2\"]},"
	" \"rules\": ["
	"  {\"name\": \"eu-stays\", \"vms\": {\"labels\": {\"region\": \"eu\"}},"
	"   \"migrate_out\": {\"roles\": [\"admin\", \"controller\"]},"
	"   \"to\": {\"labels\": {\"region\": \"eu\"}},"
	"   \"accept_from\": {\"labels\": {\"region\": \"eu\"}},"
	"   \"migrate_in\": {\"roles\": [\"admin\", \"controller\"]}},"
	"  {\"name\": \"web-anywhere\", \"vms\": {\"groups\": [\"web\"]},"
	"   \"migrate_out\": {\"identities\": [\"bob\"]},"
	"   \"to\": {\"all\": true}},"
	"  {\"name\": \"b-accepts-web\", \"vms\": {\"groups\": [\"web\"]},"
	"   \"accept_from\": {\"hosts\": [\"host-a\"]},"
	"   \"migrate_in\": {\"identities\": [\"bob\"]}}"
	" ]}";

static struct policy *load(const char *text)
{
	struct policy *p = NULL;
	struct ferr err = { 0 };

	if (policy_parse(text, strlen(text), "test.json", &p, &err) < 0)
		fail_msg("policy refused: %s", err.msg);
	return p;
}

static void test_roles_and_permissions(void **state)
{
	struct policy *p = load(GOOD);
	struct policy_decision d;

	(void)state;
	assert_int_equal(policy_roles(p, "alice"), ROLE_ADMIN);
	assert_int_equal(policy_roles(p, "host-b"), ROLE_HOST);
	assert_int_equal(policy_roles(p, "mallory"), 0);
	assert_true(policy_permits(p, "alice", ID_USER, PERM_VM_WRITE, &d));
	assert_true(policy_permits(p, "bob", ID_USER, PERM_VM_WRITE, &d));
	assert_false(policy_permits(p, "carol", ID_USER, PERM_VM_WRITE, &d));
	assert_non_null(strstr(d.reason, "lacks vm.write"));
	assert_true(policy_permits(p, "carol", ID_USER, PERM_AUDIT_READ, &d));
	assert_false(policy_permits(p, "bob", ID_USER, PERM_AUDIT_READ, &d));
	assert_true(policy_permits(p, "host-a", ID_HOST, PERM_MIG_PEER, &d));
	/* a user certificate named like a host does not get the host role */
	assert_false(policy_permits(p, "host-a", ID_USER, PERM_MIG_PEER, &d));
	assert_non_null(strstr(d.reason, "the host role needs a host "
					 "certificate"));
	assert_true(policy_permits(p, "host-a", ID_HOST, PERM_HOST_READ, &d));
	assert_false(policy_permits(p, "host-a", ID_USER, PERM_HOST_READ, &d));
	assert_false(policy_permits(p, "alice", ID_USER, PERM_MIG_PEER, &d));
	assert_false(policy_permits(p, "balancer", ID_USER, PERM_VM_WRITE, &d));
	assert_true(policy_permits(p, "balancer", ID_USER, PERM_VM_MIGRATE, &d));
	assert_false(policy_permits(p, "mallory", ID_USER, PERM_HOST_READ, &d));
	/* no policy: everything denied */
	assert_false(policy_permits(NULL, "alice", ID_HOST, PERM_HOST_READ, &d));
	assert_non_null(strstr(d.reason, "no policy"));
	policy_free(p);
}

static void test_migration_rules(void **state)
{
	struct policy *p = load(GOOD);
	struct label eu[] = { { "region", "eu" } };
	struct policy_vm eu_vm = { "db-1", eu, 1 };
	struct policy_vm web = { "web-1", NULL, 0 };
	struct policy_vm other = { "misc", NULL, 0 };
	struct policy_decision d;

	(void)state;
	policy_check_out(p, "alice", &eu_vm, "host-b", &d);
	assert_true(d.allow);
	assert_string_equal(d.rule, "eu-stays");
	/* labels keep the eu VM out of the us host, both ways */
	policy_check_out(p, "alice", &eu_vm, "host-c", &d);
	assert_false(d.allow);
	assert_string_equal(d.rule, "default-deny");
	assert_non_null(strstr(d.reason, "host-c"));
	policy_check_in(p, "alice", &eu_vm, "host-c", &d);
	assert_false(d.allow);
	policy_check_in(p, "alice", &eu_vm, "host-a", &d);
	assert_true(d.allow);
	/* the role is needed */
	policy_check_out(p, "bob", &eu_vm, "host-b", &d);
	assert_false(d.allow);
	assert_non_null(strstr(d.reason, "no rule lets bob"));
	/* groups and identities */
	policy_check_out(p, "bob", &web, "host-c", &d);
	assert_true(d.allow);
	assert_string_equal(d.rule, "web-anywhere");
	policy_check_in(p, "bob", &web, "host-a", &d);
	assert_true(d.allow);
	policy_check_in(p, "bob", &web, "host-c", &d);
	assert_false(d.allow);
	/* default deny */
	policy_check_out(p, "alice", &other, "host-b", &d);
	assert_false(d.allow);
	assert_non_null(strstr(d.reason, "no rule allows"));
	policy_check_out(NULL, "alice", &eu_vm, "host-b", &d);
	assert_false(d.allow);
	policy_free(p);
}

/* Each broken policy is refused, naming the file and the field. */
static void test_invalid(void **state)
{
	static const struct {
		const char *text, *needle;
	} cases[] = {
		{ "{", "malformed JSON" },
		{ "{\"roles\": {}, \"x\": 1}", "unknown field \"x\"" },
		{ "{}", "roles: required" },
		{ "{\"version\": 2, \"roles\": {}}", "version" },
		{ "{\"roles\": {\"root\": []}}", "roles.root: unknown role" },
		{ "{\"roles\": {\"admin\": \"alice\"}}", "roles.admin" },
		{ "{\"roles\": {\"admin\": [\"Alice\"]}}", "roles.admin[0]" },
		{ "{\"roles\": {\"admin\": [\"a\", \"a\"]}}", "listed twice" },
		{ "{\"roles\": {}, \"hosts\": {\"h\": {\"labels\": {\"r\": 1}}}}",
		  "hosts.h.labels.r" },
		{ "{\"roles\": {}, \"rules\": [{\"vms\": {\"all\": true}}]}",
		  "rules[0].name" },
		{ "{\"roles\": {}, \"rules\": [{\"name\": \"r\", \"vms\": {\"all\":"
		  " true}, \"to\": {\"all\": true}}]}",
		  "migrate_out and to go together" },
		{ "{\"roles\": {}, \"rules\": [{\"name\": \"r\", \"vms\": {\"all\":"
		  " true}}]}",
		  "needs migrate_out+to" },
		{ "{\"roles\": {}, \"rules\": [{\"name\": \"r\", \"vms\": "
		  "{\"groups\": [\"g\"]}, \"migrate_out\": {\"roles\": "
		  "[\"admin\"]}, \"to\": {\"all\": true}}]}",
		  "no group named \"g\"" },
		{ "{\"roles\": {}, \"rules\": [{\"name\": \"r\", \"vms\": {\"all\":"
		  " true, \"names\": [\"a\"]}, \"migrate_out\": {\"roles\": "
		  "[\"admin\"]}, \"to\": {\"all\": true}}]}",
		  "exactly one of" },
		{ "{\"roles\": {}, \"rules\": [{\"name\": \"r\", \"vms\": {\"all\":"
		  " true}, \"migrate_out\": {\"roles\": [\"king\"]}, \"to\": "
		  "{\"all\": true}}]}",
		  "unknown role \"king\"" },
		{ "{\"roles\": {}, \"rules\": [{\"name\": \"r\", \"vms\": {\"all\":"
		  " true}, \"migrate_out\": {}, \"to\": {\"all\": true}}]}",
		  "needs roles or identities" },
		{ "{\"roles\": {}, \"rules\": [{\"name\": \"r\", \"vms\": {\"all\":"
		  " false}, \"migrate_out\": {\"roles\": [\"admin\"]}, \"to\": "
		  "{\"all\": true}}]}",
		  "must be true" },
		{ "{\"roles\": {}, \"rules\": [{\"name\": \"r\", \"vms\": {\"all\":"
		  " true}, \"migrate_out\": {\"roles\": [\"admin\"]}, \"to\": "
		  "{\"all\": true}}, {\"name\": \"r\", \"vms\": {\"all\": true}, "
		  "\"migrate_out\": {\"roles\": [\"admin\"]}, \"to\": {\"all\": "
		  "true}}]}",
		  "used twice" },
		{ "{\"roles\": {}, \"rules\": [{\"name\": \"r\", \"vms\": {\"all\":"
		  " true}, \"migrate_out\": {\"roles\": [\"admin\"]}, \"to\": "
		  "{\"all\": true}, \"attest\": \"maybe\"}]}",
		  "rules[0] (r).attest" },
		{ "{\"roles\": {}, \"attestation\": {\"reference\": [{\"ferryd\":"
		  " []}]}}",
		  "attestation.reference[0].hosts: required" },
		{ "{\"roles\": {}, \"attestation\": {\"reference\": [{\"hosts\":"
		  " {\"all\": true}, \"qemu\": [\"ABCD\"]}]}}",
		  "attestation.reference[0].qemu[0]: not a SHA-256" },
		{ "{\"roles\": {}, \"attestation\": {\"allow\": []}}",
		  "unknown field \"allow\"" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct policy *p = NULL;
		struct ferr err = { 0 };

		if (policy_parse(cases[i].text, strlen(cases[i].text),
				 "test.json", &p, &err) != -1)
			fail_msg("case %zu accepted", i);
		assert_null(p);
		if (!strstr(err.msg, cases[i].needle) ||
		    !strstr(err.msg, "test.json"))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg,
				 cases[i].needle);
	}
}

#define DA "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DB "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

/* "attest": "required" on the deciding rule; reference values per host. */
static void test_attestation(void **state)
{
	struct policy *p = load(
		"{\"roles\": {\"admin\": [\"alice\"]},"
		" \"hosts\": {\"host-b\": {\"labels\": {\"site\": \"eu\"}}},"
		" \"rules\": [{\"name\": \"strict\", \"vms\": {\"names\": "
		"[\"db\"]}, \"migrate_out\": {\"roles\": [\"admin\"]}, \"to\": "
		"{\"all\": true}, \"attest\": \"required\"},"
		" {\"name\": \"lax\", \"vms\": {\"all\": true}, \"migrate_out\":"
		" {\"roles\": [\"admin\"]}, \"to\": {\"all\": true}}],"
		" \"attestation\": {\"reference\": ["
		"  {\"hosts\": {\"labels\": {\"site\": \"eu\"}}, \"ferryd\": [\"" DA
		"\"], \"qemu\": [\"" DA "\"]},"
		"  {\"hosts\": {\"all\": true}, \"qemu\": [\"" DB "\"]}]}}");
	struct policy_vm db = { "db", NULL, 0 }, web = { "web", NULL, 0 };
	struct policy_decision d;
	char scope[128];
	json_t *refs;

	(void)state;
	policy_check_out(p, "alice", &db, "host-b", &d);
	assert_true(d.allow);
	assert_true(d.attest);
	policy_check_out(p, "alice", &web, "host-b", &d);
	assert_true(d.allow);
	assert_false(d.attest);
	/* host-b (site=eu) gets both entries' lists */
	refs = policy_attest_refs(p, "host-b", scope, sizeof(scope));
	assert_string_equal(scope, "site=eu");
	assert_int_equal(json_array_size(json_object_get(refs, "ferryd")), 1);
	assert_int_equal(json_array_size(json_object_get(refs, "qemu")), 2);
	assert_int_equal(json_array_size(json_object_get(refs, "policy")), 0);
	json_decref(refs);
	/* host-c has no labels: only the "all" entry */
	refs = policy_attest_refs(p, "host-c", scope, sizeof(scope));
	assert_string_equal(scope, "host host-c");
	assert_int_equal(json_array_size(json_object_get(refs, "ferryd")), 0);
	assert_string_equal(json_string_value(json_array_get(
				    json_object_get(refs, "qemu"), 0)),
			    DB);
	json_decref(refs);
	assert_true(policy_permits(p, "alice", ID_USER, PERM_ATTEST_ADMIN, &d));
	policy_free(p);
}

/* The monitor role reads metrics and nothing else; the host and
 * controller roles do not read metrics. */
static void test_metrics_permission(void **state)
{
	struct policy *p = load("{\"version\": 1, \"roles\": {"
				"\"monitor\": [\"prometheus\"],"
				"\"auditor\": [\"carol\"],"
				"\"host\": [\"host-a\"],"
				"\"controller\": [\"balancer\"]}}");
	struct policy_decision d;

	(void)state;
	assert_int_equal(policy_roles(p, "prometheus"), ROLE_MONITOR);
	assert_string_equal(role_name(ROLE_MONITOR), "monitor");
	assert_string_equal(perm_name(PERM_METRICS), "metrics");
	assert_true(policy_permits(p, "prometheus", ID_USER, PERM_METRICS, &d));
	assert_true(policy_permits(p, "carol", ID_USER, PERM_METRICS, &d));
	assert_false(policy_permits(p, "host-a", ID_HOST, PERM_METRICS, &d));
	assert_false(policy_permits(p, "balancer", ID_USER, PERM_METRICS, &d));
	for (int perm = 0; perm < PERM__COUNT; perm++)
		if (perm != PERM_METRICS)
			assert_false(policy_permits(p, "prometheus", ID_USER,
						    (enum perm)perm, &d));
	policy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roles_and_permissions),
		cmocka_unit_test(test_migration_rules),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_attestation),
		cmocka_unit_test(test_metrics_permission),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
