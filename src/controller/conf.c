/* conf.c - the "balancer" section of ferryd.json (docs/balancer.md,
 * "Controller mode"), and the hosts file it may name. */
#include "ctl_int.h"
#include "policy.h"
#include "tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Add the hosts of obj {"NAME": {"address", "port"}} (what names where
 * they come from in errors). */
static int add_hosts(struct controller *c, const json_t *obj,
		     const char *what, struct ferr *err)
{
	static const char *const hf[] = { "address", "port", NULL };
	struct ctl_host *nh;
	const char *k;
	json_t *h;
	size_t n;

	if (!json_is_object(obj))
		return ferr_set(err, FERR_INVALID,
				"%s must be an object {\"NAME\": {\"address\", "
				"\"port\"}}",
				what);
	if (!add_size(c->nhosts, json_object_size(obj), &n) ||
	    n > CTL_HOSTS_MAX)
		return ferr_set(err, FERR_INVALID,
				"balancer: more than %d hosts", CTL_HOSTS_MAX);
	nh = realloc(c->hosts, (n ? n : 1) * sizeof(*nh));
	if (!nh)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	c->hosts = nh;
	json_object_foreach((json_t *)obj, k, h) {
		struct ctl_host *ch = &c->hosts[c->nhosts];
		uint64_t port = FERRY_API_PORT_DEFAULT;
		const char *s = NULL;
		unsigned char buf[16];

		if (!name_is_valid(k))
			return ferr_set(err, FERR_INVALID,
					"%s: \"%.64s\" is not a valid host "
					"name",
					what, k);
		if (json_object_get(c->host_index, k))
			return ferr_set(err, FERR_INVALID,
					"%s: host %s is listed twice", what, k);
		if (json_check_fields(h, hf, what, err) < 0 ||
		    json_get_string(h, "address", what, 63, &s, err) < 0 ||
		    json_get_u64(h, "port", what, 1, 65535, &port, err) < 0)
			return -1;
		if (!s || (inet_pton(AF_INET, s, buf) != 1 &&
			   inet_pton(AF_INET6, s, buf) != 1))
			return ferr_set(err, FERR_INVALID,
					"%s.%s.address must be a numeric IP "
					"address",
					what, k);
		memset(ch, 0, sizeof(*ch));
		snprintf(ch->name, sizeof(ch->name), "%s", k);
		snprintf(ch->address, sizeof(ch->address), "%s", s);
		ch->port = (uint16_t)port;
		if (json_object_set_new(c->host_index, k,
					json_integer((json_int_t)c->nhosts)) <
		    0)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
		c->nhosts++;
	}
	return 0;
}

static int hosts_file(struct controller *c, const char *path,
		      struct ferr *err)
{
	char *text = NULL;
	size_t len = 0;
	json_t *root;
	int rc;

	if (file_read_all(path, CTL_HOSTS_FILE_MAX, &text, &len, err) < 0)
		return -1;
	root = json_parse_object(text, len, path, err);
	free(text);
	if (!root)
		return -1;
	rc = add_hosts(c, root, path, err);
	json_decref(root);
	return rc;
}

/* A path field, resolved against the config's folder; "" when absent. */
static int path_field(const struct ferryd_config *cfg, const json_t *conf,
		      const char *key, char *out, size_t len,
		      struct ferr *err)
{
	const char *s = NULL;

	out[0] = '\0';
	if (json_get_string(conf, key, "balancer", FERRY_PATH_MAX - 1, &s,
			    err) < 0)
		return -1;
	return s ? path_resolve(cfg->config_dir, s, out, len, err) : 0;
}

int ctl_conf_parse(struct controller *c, const json_t *conf,
		   struct ferr *err)
{
	static const char *const fields[] = {
		"mode",   "interval_s", "window", "cert",
		"key",    "hosts",      "hosts_file", "policy",
		"params", "poll_timeout_s", NULL
	};
	const struct ferryd_config *cfg = c->cfg;
	char cert[FERRY_PATH_MAX], key[FERRY_PATH_MAX], path[FERRY_PATH_MAX];
	const char *s = NULL;
	uint64_t v;

	if (json_check_fields(conf, fields, "balancer", err) < 0 ||
	    json_get_string(conf, "mode", "balancer", 16, &s, err) < 0)
		return -1;
	c->mode_default = CTL_MODE_RECOMMEND;
	if (s) {
		int m = ctl_mode_parse(s);

		if (m < 0)
			return ferr_set(err, FERR_INVALID,
					"balancer.mode must be off, recommend "
					"or auto");
		c->mode_default = (enum ctl_mode)m;
	}
	v = CTL_INTERVAL_S_DEFAULT;
	if (json_get_u64(conf, "interval_s", "balancer", 1, 3600, &v, err) < 0)
		return -1;
	c->interval_s = (unsigned)v;
	v = CTL_WINDOW_DEFAULT;
	if (json_get_u64(conf, "window", "balancer", 1, CTL_WINDOW_MAX, &v,
			 err) < 0)
		return -1;
	c->window = (unsigned)v;
	v = CTL_POLL_TIMEOUT_S_DEFAULT;
	if (json_get_u64(conf, "poll_timeout_s", "balancer", 1, 60, &v, err) <
	    0)
		return -1;
	c->poll_timeout_s = (unsigned)v;
	if (path_field(cfg, conf, "cert", cert, sizeof(cert), err) < 0 ||
	    path_field(cfg, conf, "key", key, sizeof(key), err) < 0)
		return -1;
	if (!cert[0] || !key[0])
		return ferr_set(err, FERR_INVALID,
				"balancer.cert and balancer.key are required "
				"(the controller's identity)");
	if (tls_cert_identity(cert, c->identity, sizeof(c->identity), err) < 0)
		return -1;
	c->ctx = tls_client_ctx_new(cfg->ca_file, cert, key, err);
	if (!c->ctx)
		return -1;
	c->host_index = json_object();
	if (!c->host_index)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (json_object_get(conf, "hosts") &&
	    add_hosts(c, json_object_get(conf, "hosts"), "balancer.hosts",
		      err) < 0)
		return -1;
	if (path_field(cfg, conf, "hosts_file", path, sizeof(path), err) < 0 ||
	    (path[0] && hosts_file(c, path, err) < 0))
		return -1;
	if (c->nhosts == 0)
		return ferr_set(err, FERR_INVALID,
				"balancer: hosts or hosts_file must name at "
				"least one host");
	if (path_field(cfg, conf, "policy", path, sizeof(path), err) < 0)
		return -1;
	if (!json_object_get(conf, "policy"))
		snprintf(path, sizeof(path), "%s", cfg->policy_file);
	if (path[0]) {
		struct stat st;

		snprintf(c->policy_path, sizeof(c->policy_path), "%s", path);
		if (stat(path, &st) == 0)
			c->policy_mtime = st.st_mtim;
		if (policy_load(path, &c->policy, err) < 0)
			return -1;
	}
	bal_params_default(&c->params_default);
	if (json_object_get(conf, "params") &&
	    bal_params_from_json(json_object_get(conf, "params"),
				 "balancer.params", &c->params_default,
				 err) < 0)
		return -1;
	return 0;
}
