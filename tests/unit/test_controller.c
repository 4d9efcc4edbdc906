/* Unit tests of the controller's pure parts: load reports as hostile
 * input, modes, and the cluster state store without etcd (compare-and-set,
 * deletes, the mode surviving a restart). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ctl_int.h"

static int parse(const char *text, struct ctl_report *r, struct ferr *err)
{
	json_t *j = json_loads(text, 0, NULL);
	int rc;

	assert_non_null(j);
	rc = ctl_report_parse(j, "h1", r, err);
	json_decref(j);
	return rc;
}

#define HOST "\"cpus\": 32, \"memory_total_mib\": 1024, \"draining\": false, "

static void test_report(void **state)
{
	struct ctl_report r;
	struct ferr err = { 0 };

	(void)state;
	assert_int_equal(
		parse("{" HOST "\"memory_committed_mib\": 512, \"vms\": ["
		      "{\"name\": \"a\", \"state\": \"running\", \"cpu_cores\": "
		      "1.5, \"memory_mib\": 256, \"dirty_mibps\": 3, \"labels\": "
		      "{\"pin\": \"yes\", \"affinity\": \"g1\"}, \"migrating\": "
		      "true},"
		      "{\"name\": \"b\", \"state\": \"paused\", \"cpu_cores\": null, "
		      "\"memory_mib\": 128, \"dirty_mibps\": -4},"
		      "{\"name\": \"c\", \"state\": \"incoming\", \"memory_mib\": 64},"
		      "{\"name\": \"d\", \"state\": \"shutoff\", \"memory_mib\": 64}"
		      "]}",
		      &r, &err),
		0);
	assert_true(r.cores == 32);
	assert_int_equal(r.mem_mib, 1024);
	assert_int_equal(r.mem_committed_mib, 512);
	assert_false(r.draining);
	assert_int_equal(r.nvms, 4);
	assert_int_equal(r.skipped, 0);
	assert_string_equal(r.vms[0].name, "a");
	assert_int_equal(r.vms[0].state, CTL_VM_RUNNING);
	assert_true(r.vms[0].has_cpu && r.vms[0].cpu == 1.5);
	assert_true(r.vms[0].migrating);
	assert_int_equal(r.vms[0].nlabels, 2);
	assert_int_equal(r.vms[1].state, CTL_VM_PAUSED);
	assert_false(r.vms[1].has_cpu);
	assert_true(r.vms[1].dirty_mibps == 0); /* insane: unknown */
	assert_int_equal(r.vms[2].state, CTL_VM_INCOMING);
	assert_int_equal(r.vms[3].state, CTL_VM_OTHER);
	ctl_report_clear(&r);
}

static void test_report_hostile(void **state)
{
	static const struct {
		const char *text, *needle;
	} bad[] = {
		{ "{\"memory_total_mib\": 1, \"draining\": false, \"vms\": []}",
		  "cpus" },
		{ "{\"cpus\": 0, \"memory_total_mib\": 1, \"draining\": false, "
		  "\"vms\": []}",
		  "cpus" },
		{ "{\"cpus\": 1.5, \"memory_total_mib\": 1, \"draining\": false, "
		  "\"vms\": []}",
		  "cpus" },
		{ "{\"cpus\": 1, \"memory_total_mib\": -1, \"draining\": false, "
		  "\"vms\": []}",
		  "memory_total_mib" },
		{ "{\"cpus\": 1, \"memory_total_mib\": 1, \"draining\": 1, "
		  "\"vms\": []}",
		  "draining" },
		{ "{\"cpus\": 1, \"memory_total_mib\": 1, \"draining\": false, "
		  "\"vms\": {}}",
		  "vms" },
		{ "{" HOST "\"memory_committed_mib\": \"x\", \"vms\": []}",
		  "memory_committed_mib" },
	};
	/* VM entries that break the contract: skipped, the rest kept */
	static const char *const bad_vms[] = {
		"{\"state\": \"running\", \"memory_mib\": 1}",
		"{\"name\": \"BAD\", \"state\": \"running\", \"memory_mib\": 1}",
		"{\"name\": \"a\", \"memory_mib\": 1}",
		"{\"name\": \"a\", \"state\": \"running\"}",
		"{\"name\": \"a\", \"state\": \"running\", \"memory_mib\": 0}",
		"{\"name\": \"a\", \"state\": \"running\", \"memory_mib\": "
		"99999999999}",
		"{\"name\": \"a\", \"state\": \"running\", \"memory_mib\": 1, "
		"\"cpu_cores\": -1}",
		"{\"name\": \"a\", \"state\": \"running\", \"memory_mib\": 1, "
		"\"cpu_cores\": 1e300}",
		"{\"name\": \"a\", \"state\": \"running\", \"memory_mib\": 1, "
		"\"cpu_cores\": \"1\"}",
		"{\"name\": \"a\", \"state\": \"running\", \"memory_mib\": 1, "
		"\"migrating\": 1}",
		"{\"name\": \"a\", \"state\": \"running\", \"memory_mib\": 1, "
		"\"labels\": []}",
		"{\"name\": \"a\", \"state\": \"running\", \"memory_mib\": 1, "
		"\"labels\": {\"k\": 1}}",
		"{\"name\": \"a\", \"state\": \"running\", \"memory_mib\": 1, "
		"\"labels\": {\"K!\": \"v\"}}",
		"7",
	};
	struct ctl_report r;
	struct ferr err = { 0 };
	char text[512];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i].text, &r, &err) != -1)
			fail_msg("case %zu accepted", i);
		if (!strstr(err.msg, bad[i].needle))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg,
				 bad[i].needle);
		assert_null(r.vms);
	}
	for (size_t i = 0; i < sizeof(bad_vms) / sizeof(bad_vms[0]); i++) {
		snprintf(text, sizeof(text),
			 "{" HOST "\"vms\": [%s, {\"name\": \"ok\", \"state\": "
			 "\"running\", \"memory_mib\": 1}]}",
			 bad_vms[i]);
		assert_int_equal(parse(text, &r, &err), 0);
		if (r.skipped != 1 || r.nvms != 1 ||
		    strcmp(r.vms[0].name, "ok") != 0)
			fail_msg("vm case %zu: skipped %zu, kept %zu", i,
				 r.skipped, r.nvms);
		assert_true(r.first_skip[0] != '\0');
		ctl_report_clear(&r);
	}
}

static void test_modes(void **state)
{
	(void)state;
	assert_int_equal(ctl_mode_parse("off"), CTL_MODE_OFF);
	assert_int_equal(ctl_mode_parse("recommend"), CTL_MODE_RECOMMEND);
	assert_int_equal(ctl_mode_parse("auto"), CTL_MODE_AUTO);
	assert_int_equal(ctl_mode_parse("Auto"), -1);
	assert_int_equal(ctl_mode_parse(NULL), -1);
}

/* Without etcd the store is the controller's own. */
static void test_local_store(void **state)
{
	char dir[] = "/tmp/ferry-ctl-store-XXXXXX", path[128];
	struct ferryd_config cfg;
	struct controller c;
	struct ferr err = { 0 };
	json_t *v, *list;
	int64_t mod = 0, mod2 = 0;

	(void)state;
	assert_non_null(mkdtemp(dir));
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.state_dir, sizeof(cfg.state_dir), "%s", dir);
	memset(&c, 0, sizeof(c));
	c.cfg = &cfg;
	assert_int_equal(ctl_store_open(&c, &err), 0);
	assert_null(ctl_store_get(&c, CTL_KEY_MODE, &mod));
	assert_int_equal(mod, 0);
	v = json_pack("{s:s}", "mode", "auto");
	/* must be absent: written */
	assert_int_equal(ctl_store_write(&c,
					 &(struct ctl_store_op){ CTL_KEY_MODE,
								 v, 0 },
					 1, true, &err),
			 0);
	/* must be absent again: refused, nothing written */
	assert_int_equal(ctl_store_write(&c,
					 &(struct ctl_store_op){ CTL_KEY_MODE,
								 v, 0 },
					 1, true, &err),
			 -1);
	assert_int_equal(err.code, FERR_CONFLICT);
	json_decref(v);
	v = ctl_store_get(&c, CTL_KEY_MODE, &mod);
	assert_non_null(v);
	assert_true(mod > 0);
	assert_string_equal(json_string_value(json_object_get(v, "mode")),
			    "auto");
	json_decref(v);
	/* compare-and-set on the mod revision */
	v = json_pack("{s:s}", "state", "starting");
	assert_int_equal(ctl_store_write(&c,
					 &(struct ctl_store_op){
						 CTL_KEY_DRAINS "h1", v, 0 },
					 1, false, &err),
			 0);
	json_decref(ctl_store_get(&c, CTL_KEY_DRAINS "h1", &mod2));
	assert_int_equal(ctl_store_write(&c,
					 &(struct ctl_store_op){
						 CTL_KEY_DRAINS "h1", v,
						 mod2 + 1 },
					 1, false, &err),
			 -1);
	list = ctl_store_list(&c, CTL_KEY_DRAINS);
	assert_int_equal(json_object_size(list), 1);
	assert_non_null(json_object_get(list, "h1"));
	json_decref(list);
	/* deleted: gone from reads */
	assert_int_equal(ctl_store_write(&c,
					 &(struct ctl_store_op){
						 CTL_KEY_DRAINS "h1", NULL,
						 mod2 },
					 1, false, &err),
			 0);
	assert_null(ctl_store_get(&c, CTL_KEY_DRAINS "h1", NULL));
	list = ctl_store_list(&c, CTL_KEY_DRAINS);
	assert_int_equal(json_object_size(list), 0);
	json_decref(list);
	json_decref(v);
	ctl_store_close(&c);
	/* the mode survives a restart */
	memset(&c, 0, sizeof(c));
	c.cfg = &cfg;
	assert_int_equal(ctl_store_open(&c, &err), 0);
	v = ctl_store_get(&c, CTL_KEY_MODE, NULL);
	assert_non_null(v);
	assert_string_equal(json_string_value(json_object_get(v, "mode")),
			    "auto");
	json_decref(v);
	ctl_store_close(&c);
	snprintf(path, sizeof(path), "%s/balancer.mode", dir);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_report),
		cmocka_unit_test(test_report_hostile),
		cmocka_unit_test(test_modes),
		cmocka_unit_test(test_local_store),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
