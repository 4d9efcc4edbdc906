/* Unit tests of the balancer's trace parser and its deterministic
 * simulation. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "balancer_fixture.h"

/* ---- traces ---- */

/* Parse text as a trace; the error message (or "" on success). */
static const char *parse(const char *text, struct ferr *err)
{
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	struct bal_trace t;
	int rc;

	assert_non_null(f);
	memset(err, 0, sizeof(*err));
	rc = bal_trace_read(f, "t.csv", &t, err);
	fclose(f);
	if (rc == 0)
		bal_trace_free(&t);
	return rc == 0 ? "" : err->msg;
}

static void expect_error(const char *text, const char *where,
			 const char *what)
{
	struct ferr err;
	const char *msg = parse(text, &err);

	if (!strstr(msg, where) || !strstr(msg, what))
		fail_msg("wanted \"%s\" and \"%s\", got \"%s\"", where, what,
			 msg);
	assert_int_equal(err.code, FERR_INVALID);
}

static void test_trace_errors(void **state)
{
	struct ferr err;

	(void)state;
	assert_string_equal(parse("interval,vm,cpu,mem_mib\n"
				  "0,a,1.5,1024\n0,b,0,2048\n"
				  "1,a,2,1024\n1,b,0.25,2048\n",
				  &err),
			    "");
	assert_string_equal(parse("interval,vm,cpu,mem_mib,dirty_mibps\r\n"
				  "0,a,1,1024,3.5\r\n1,a,1,1024,0",
				  &err),
			    "");
	expect_error("", "t.csv", "empty");
	expect_error("time,vm,cpu,mem\n0,a,1,1024\n", "t.csv:1:", "header");
	expect_error("interval,vm,cpu,mem_mib\n", "t.csv:1:", "no data");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n0,b,x,1024\n",
		     "t.csv:3:", "cpu");
	expect_error("interval,vm,cpu,mem_mib\n0,a,-1,1024\n", "t.csv:2:",
		     "cpu");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n0,a,1,1024\n",
		     "t.csv:3:", "twice");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n0,b,1,1024\n"
		     "1,a,1,1024\n2,a,1,1024\n",
		     "t.csv:5:", "interval 1 has 1 of 2 VMs (missing: b)");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n2,a,1,1024\n",
		     "t.csv:3:", "skips");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n1,a,1,1024\n"
		     "0,a,1,1024\n",
		     "t.csv:4:", "order");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n1,z,1,1024\n",
		     "t.csv:3:", "not in interval 0");
	expect_error("interval,vm,cpu,mem_mib\n0,A!,1,1024\n", "t.csv:2:",
		     "vm");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024,5\n", "t.csv:2:",
		     "fields");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1\n", "t.csv:2:",
		     "fields");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,0\n", "t.csv:2:",
		     "mem_mib");
	expect_error("interval,vm,cpu,mem_mib\n0,a,1,1024\n\n", "t.csv:3:",
		     "fields");
}

static void test_trace_limits(void **state)
{
	char longline[BAL_TRACE_LINE_MAX + 64];
	char text[2 * BAL_TRACE_LINE_MAX + 128];
	static const char nul[] = "interval,vm,cpu,mem_mib\n0,a,1\0,1024\n";
	FILE *f;
	struct bal_trace t;
	struct ferr err = { 0 };

	(void)state;
	memset(longline, '1', sizeof(longline) - 1);
	longline[sizeof(longline) - 1] = '\0';
	snprintf(text, sizeof(text), "interval,vm,cpu,mem_mib\n0,a,%s,1024\n",
		 longline);
	expect_error(text, "t.csv:2:", "longer than");
	f = fmemopen((void *)nul, sizeof(nul) - 1, "r");
	assert_non_null(f);
	assert_int_equal(bal_trace_read(f, "t.csv", &t, &err), -1);
	fclose(f);
	assert_non_null(strstr(err.msg, "t.csv:2: NUL"));
	assert_int_equal(bal_trace_load("/nonexistent/x.csv", &t, &err), -1);
	assert_int_equal(err.code, FERR_IO);
}

static void test_trace_roundtrip(void **state)
{
	struct bal_trace a, b;
	struct ferr err = { 0 };
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	(void)state;
	assert_int_equal(bal_trace_generate(BAL_TRACE_BURSTY, 7, 20, 3, &a,
					    &err),
			 0);
	f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(bal_trace_write(f, &a, &err), 0);
	fclose(f);
	f = fmemopen(buf, len, "r");
	assert_int_equal(bal_trace_read(f, "mem", &b, &err), 0);
	fclose(f);
	assert_int_equal(b.nvms, 7);
	assert_int_equal(b.nintervals, 20);
	assert_non_null(b.dirty);
	for (size_t i = 0; i < 7 * 20; i++) {
		assert_true(a.cpu[i] == b.cpu[i]);
		assert_int_equal(a.mem_mib[i], b.mem_mib[i]);
		assert_true(a.dirty[i] == b.dirty[i]);
	}
	bal_trace_free(&a);
	bal_trace_free(&b);
	free(buf);
}

/* ---- simulation ---- */

static void test_migration_model(void **state)
{
	struct bal_sim_config cfg;
	double t0, t1;

	(void)state;
	bal_sim_default(&cfg);
	/* no dirtying: setup + one copy + nothing left */
	t0 = bal_sim_migration_s(&cfg, 1250, 0);
	assert_true(t0 > cfg.setup_s + 1250 / cfg.bandwidth_mibps - 1e-9 &&
		    t0 < cfg.setup_s + 1250 / cfg.bandwidth_mibps + 1e-9);
	/* dirtying at half the bandwidth: a geometric series, < 2x */
	t1 = bal_sim_migration_s(&cfg, 1250, cfg.bandwidth_mibps / 2);
	assert_true(t1 > t0 && t1 < cfg.setup_s + 2 * (t0 - cfg.setup_s));
	/* faster than the link: bounded by the rounds */
	assert_true(bal_sim_migration_s(&cfg, 1250, 10 * cfg.bandwidth_mibps) <=
		    cfg.setup_s + (cfg.max_rounds + 1) * 1250 /
					  cfg.bandwidth_mibps + 1e-9);
}

static void test_sim_oscillations(void **state)
{
	struct bal_sim_config cfg;
	struct bal_sim_metrics m[BAL_SIM__COUNT], again;
	struct bal_trace t;
	struct ferr err = { 0 };

	(void)state;
	bal_sim_default(&cfg);
	cfg.hosts = 12;
	assert_int_equal(bal_trace_generate(BAL_TRACE_BURSTY, 60, 144, 7, &t,
					    &err),
			 0);
	for (unsigned p = 0; p < BAL_SIM__COUNT; p++)
		if (bal_sim_run(&cfg, &t, (enum bal_sim_policy)p, &m[p],
				&err) < 0)
			fail_msg("sim: %s", err.msg);
	assert_true(m[BAL_SIM_NAIVE].oscillations > 0);
	assert_true(m[BAL_SIM_STATIC].oscillations > 0);
	assert_true(m[BAL_SIM_BALANCER].oscillations <
		    m[BAL_SIM_NAIVE].oscillations);
	assert_true(m[BAL_SIM_BALANCER].oscillations <
		    m[BAL_SIM_STATIC].oscillations);
	assert_true(m[BAL_SIM_BALANCER].slatah <= m[BAL_SIM_NAIVE].slatah);
	assert_true(m[BAL_SIM_BALANCER].slatah <= m[BAL_SIM_STATIC].slatah);
	assert_true(m[BAL_SIM_BALANCER].slatah < m[BAL_SIM_NONE].slatah);
	assert_int_equal(m[BAL_SIM_NONE].migrations, 0);
	/* deterministic */
	assert_int_equal(bal_sim_run(&cfg, &t, BAL_SIM_BALANCER, &again, &err),
			 0);
	assert_int_equal(again.migrations, m[BAL_SIM_BALANCER].migrations);
	assert_true(again.slatah == m[BAL_SIM_BALANCER].slatah);
	/* a VM larger than a host is refused */
	cfg.mem_mib = 512;
	assert_int_equal(bal_sim_run(&cfg, &t, BAL_SIM_BALANCER, &again, &err),
			 -1);
	assert_int_equal(err.code, FERR_INVALID);
	bal_trace_free(&t);
}

static void test_bench_small(void **state)
{
	struct bal_params p;
	struct bal_cluster *c;
	struct bal_plan plan;
	struct bal_stats st;
	struct ferr err = { 0 };

	(void)state;
	bal_params_default(&p);
	c = cluster(&p);
	assert_int_equal(bal_bench_build(c, 2000, 20000, 1, &err), 0);
	bal_stats(c, &st);
	assert_true(st.hosts_hot > 100);
	assert_int_equal(st.hosts_draining, 2);
	plan_of(c, &plan);
	assert_int_equal(plan.nmoves, p.max_cluster);
	for (size_t i = 0; i < plan.nmoves; i++)
		assert_true(plan.moves[i].to_after < p.high);
	bal_plan_free(&plan);
	bal_cluster_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_trace_errors),
		cmocka_unit_test(test_trace_limits),
		cmocka_unit_test(test_trace_roundtrip),
		cmocka_unit_test(test_migration_model),
		cmocka_unit_test(test_sim_oscillations),
		cmocka_unit_test(test_bench_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
