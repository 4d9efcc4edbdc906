/* cmd_balance.c - `ferry balance status|plan|mode|params` and `ferry host
 * drain|undrain`, answered by a controller (a ferryd in controller mode:
 * the client config's "controller", or --host; leader or standby). */
#define _GNU_SOURCE
#include "cli.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define DRAIN_POLL_US (500 * 1000)
#define DRAIN_TIMEOUT_S 3600

static int usage(void)
{
	fprintf(stderr, "usage: ferry balance status|plan\n"
			"       ferry balance mode off|recommend|auto\n"
			"       ferry balance params [KEY=VALUE]...\n"
			"       ferry host drain|undrain HOST\n"
			"  (answered by the controller: client.json "
			"\"controller\", or --host)\n");
	return EXIT_USAGE;
}

static const char *str(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "-";
}

/* Connect to the controller host. */
static int connect_controller(const struct cli_opts *o, struct cli_config *cfg,
			      const struct cli_host **h, struct client *c,
			      struct ferr *err)
{
	struct cli_opts oo = *o;

	if (cli_config_load(o->config, cfg, err) < 0)
		return -1;
	if (!oo.host && cfg->controller[0])
		oo.host = cfg->controller;
	return cli_connect(&oo, cfg, h, c, err);
}

static void print_status(const json_t *r)
{
	static const char *const cols[] = { "name", "load_s", "cpu_s",
					    "mem_s", "draining", "vms",
					    "reachable", NULL };
	static const char *const heads[] = { "HOST", "LOAD", "CPU(cores)",
					     "MEM(MiB)", "DRAINING", "VMS",
					     "UP", NULL };
	json_t *hosts = json_object_get(r, "hosts"), *h, *m;
	size_t i;

	printf("controller %s: %s (leader %s, token %lld)\n",
	       str(r, "controller"), str(r, "role"),
	       str(json_object_get(r, "leader"), "controller"),
	       (long long)json_integer_value(json_object_get(r, "token")));
	printf("mode %s, round %lld every %lld s, imbalance %.3f, %lld "
	       "migrations so far\n",
	       str(r, "mode"),
	       (long long)json_integer_value(json_object_get(r, "round")),
	       (long long)json_integer_value(json_object_get(r, "interval_s")),
	       json_number_value(json_object_get(r, "imbalance")),
	       (long long)json_integer_value(
		       json_object_get(r, "moves_total")));
	json_array_foreach(hosts, i, h) {
		char b[64];

		snprintf(b, sizeof(b), "%.2f",
			 json_number_value(json_object_get(h, "load")));
		json_object_set_new(h, "load_s", json_string(b));
		snprintf(b, sizeof(b), "%.2f/%lld",
			 json_number_value(json_object_get(h, "cpu_cores")),
			 (long long)json_integer_value(
				 json_object_get(h, "cpus")));
		json_object_set_new(h, "cpu_s", json_string(b));
		snprintf(b, sizeof(b), "%lld/%lld",
			 (long long)json_integer_value(
				 json_object_get(h, "memory_committed_mib")),
			 (long long)json_integer_value(
				 json_object_get(h, "memory_total_mib")));
		json_object_set_new(h, "mem_s", json_string(b));
	}
	print_table(hosts, cols, heads);
	json_array_foreach(json_object_get(r, "inflight"), i, m)
		printf("in flight: %s %s -> %s (%s)\n", str(m, "vm"),
		       str(m, "from"), str(m, "to"), str(m, "id"));
}

static void print_plan(const json_t *r)
{
	json_t *m;
	size_t i;

	if (json_array_size(json_object_get(r, "moves")) == 0)
		printf("no move planned: %s\n", str(r, "note"));
	json_array_foreach(json_object_get(r, "moves"), i, m)
		printf("move %s %s -> %s: %s; load %s %.2f -> %.2f, %s "
		       "%.2f -> %.2f (improvement %.3f)\n",
		       str(m, "vm"), str(m, "from"), str(m, "to"),
		       str(m, "trigger"), str(m, "from"),
		       json_real_value(json_object_get(m, "from_load_before")),
		       json_real_value(json_object_get(m, "from_load_after")),
		       str(m, "to"),
		       json_real_value(json_object_get(m, "to_load_before")),
		       json_real_value(json_object_get(m, "to_load_after")),
		       json_real_value(json_object_get(m, "improvement")));
	json_array_foreach(json_object_get(r, "blocked"), i, m)
		printf("blocked %s on %s: %s\n", str(m, "vm"), str(m, "host"),
		       str(m, "reason"));
}

/* Print a drain report. */
static void print_drain(const json_t *d)
{
	json_t *m;
	size_t i;

	json_array_foreach(json_object_get(d, "moved"), i, m)
		printf("moved %s to %s\n", str(m, "vm"), str(m, "to"));
	json_array_foreach(json_object_get(d, "blocked"), i, m)
		printf("could not move %s: %s\n", str(m, "vm"),
		       str(m, "reason"));
	printf("host %s: drain %s, %lld VM(s) left\n", str(d, "host"),
	       str(d, "state"),
	       (long long)json_integer_value(json_object_get(d, "remaining")));
}

/* POST a drain and follow its report until it is done. */
static int drain(const struct cli_opts *o, struct client *c,
		 const struct cli_host *h, const char *host, struct ferr *err)
{
	uint64_t deadline = now_ms() + (uint64_t)DRAIN_TIMEOUT_S * 1000;
	json_t *body = json_pack("{s:s}", "host", host), *r = NULL;
	int rc = -1;

	if (client_call(c, h, "POST", "/v1/balance/drain", body, &r, err) < 0)
		goto out;
	for (;;) {
		json_t *d, *found = NULL;
		size_t i;

		json_decref(r);
		r = NULL;
		if (client_call(c, h, "GET", "/v1/balance/drains", NULL, &r,
				err) < 0)
			goto out;
		json_array_foreach(json_object_get(r, "drains"), i, d)
			if (!strcmp(str(d, "host"), host))
				found = d;
		if (!found) {
			ferr_set(err, FERR_UNAVAILABLE,
				 "the controller has no drain of %s", host);
			goto out;
		}
		if (!strcmp(str(found, "state"), "done")) {
			if (o->json)
				print_json(found);
			else
				print_drain(found);
			rc = json_integer_value(json_object_get(
				     found, "remaining")) == 0
				     ? 0
				     : ferr_set(err, FERR_CONFLICT,
						"host %s still holds VMs that "
						"could not move",
						host);
			goto out;
		}
		if (now_ms() >= deadline) {
			ferr_set(err, FERR_TIMEOUT, "the drain of %s is still "
						    "running", host);
			goto out;
		}
		usleep(DRAIN_POLL_US);
	}
out:
	json_decref(body);
	json_decref(r);
	return rc;
}

/* {"params": {KEY: number}} from KEY=VALUE arguments; NULL after a
 * message when one is malformed. */
static json_t *params_body(int argc, char **argv)
{
	json_t *p = json_object();

	for (int i = 0; p && i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		char key[64], *end = NULL;
		double d;

		if (!eq || eq == argv[i] || !eq[1] ||
		    (size_t)(eq - argv[i]) >= sizeof(key))
			goto bad;
		snprintf(key, sizeof(key), "%.*s", (int)(eq - argv[i]),
			 argv[i]);
		if (strspn(eq + 1, "0123456789") == strlen(eq + 1)) {
			uint64_t u;

			if (parse_u64(eq + 1, 0, INT64_MAX, &u) < 0)
				goto bad;
			json_object_set_new(p, key, json_integer((json_int_t)u));
			continue;
		}
		d = strtod(eq + 1, &end);
		if (!end || *end)
			goto bad;
		json_object_set_new(p, key, json_real(d));
		continue;
bad:
		fprintf(stderr, "ferry: error: \"%s\" is not KEY=NUMBER\n",
			argv[i]);
		json_decref(p);
		return NULL;
	}
	return json_pack("{s:o}", "params", p);
}

/* Run verb against the controller (params: the body of `params`). */
static int run(const struct cli_opts *o, const char *verb, const char *arg,
	       const json_t *params)
{
	struct cli_config cfg;
	const struct cli_host *h;
	struct client c = { 0 };
	struct ferr err = { 0 };
	json_t *r = NULL, *body = NULL;
	int rc = -1;

	if (connect_controller(o, &cfg, &h, &c, &err) < 0)
		return cli_fail(&err);
	if (!strcmp(verb, "status") || !strcmp(verb, "plan")) {
		rc = client_call(&c, h, "GET",
				 verb[0] == 's' ? "/v1/balance"
						: "/v1/balance/plan",
				 NULL, &r, &err);
		if (rc == 0 && o->json)
			print_json(r);
		else if (rc == 0)
			(verb[0] == 's' ? print_status : print_plan)(r);
	} else if (!strcmp(verb, "mode")) {
		body = json_pack("{s:s}", "mode", arg);
		rc = client_call(&c, h, "POST", "/v1/balance/mode", body, &r,
				 &err);
		if (rc == 0)
			printf("balancer mode: %s\n", str(r, "mode"));
	} else if (!strcmp(verb, "params")) {
		body = params ? json_deep_copy(params) : NULL;
		rc = body ? client_call(&c, h, "POST", "/v1/balance/params",
					body, &r, &err)
			  : client_call(&c, h, "GET", "/v1/balance?hosts=0",
					NULL, &r, &err);
		if (rc == 0)
			print_json(json_object_get(r, "params"));
	} else if (!strcmp(verb, "drain")) {
		rc = drain(o, &c, h, arg, &err);
	} else {
		body = json_pack("{s:s}", "host", arg);
		rc = client_call(&c, h, "POST", "/v1/balance/undrain", body,
				 &r, &err);
		if (rc == 0)
			printf("host %s: undrained\n", arg);
	}
	json_decref(body);
	json_decref(r);
	client_free(&c);
	return rc < 0 ? cli_fail(&err) : EXIT_OK;
}

int cmd_balance(const struct cli_opts *o, int argc, char **argv)
{
	if (argc < 1 || cli_check_opts(o, 0, "balance"))
		return usage();
	if ((!strcmp(argv[0], "status") || !strcmp(argv[0], "plan")) &&
	    argc == 1)
		return run(o, argv[0], NULL, NULL);
	if (!strcmp(argv[0], "params")) {
		json_t *body = argc > 1 ? params_body(argc - 1, argv + 1) : NULL;
		int rc;

		if (argc > 1 && !body)
			return EXIT_USAGE;
		rc = run(o, "params", NULL, body);
		json_decref(body);
		return rc;
	}
	if (!strcmp(argv[0], "mode") && argc == 2 &&
	    (!strcmp(argv[1], "off") || !strcmp(argv[1], "recommend") ||
	     !strcmp(argv[1], "auto")))
		return run(o, "mode", argv[1], NULL);
	return usage();
}

int cmd_host_drain(const struct cli_opts *o, const char *verb,
		   const char *host)
{
	if (cli_check_opts(o, 0, "host drain"))
		return EXIT_USAGE;
	if (!name_is_valid(host)) {
		fprintf(stderr, "ferry: error: \"%s\" is not a valid host "
				"name\n",
			host);
		return EXIT_USAGE;
	}
	return run(o, verb, host, NULL);
}
