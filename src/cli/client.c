/* client.c - the CLI's client config and its calls to hosts (via httpc). */
#define _GNU_SOURCE
#include "cli.h"
#include "config.h"
#include "httpc.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

/* Required path field of obj, resolved against base. */
static int get_path(const json_t *obj, const char *key, const char *base,
		    char *out, size_t len, struct ferr *err)
{
	const char *s = NULL;

	if (json_get_string(obj, key, "config", FERRY_PATH_MAX - 1, &s, err) <
	    0)
		return -1;
	if (!s)
		return ferr_set(err, FERR_INVALID, "config.%s is required",
				key);
	return path_resolve(base, s, out, len, err);
}

/* One entry of "hosts": {"address": "...", "port": N}. */
static int parse_host(const char *name, const json_t *h, struct cli_host *out,
		      struct ferr *err)
{
	static const char *const fields[] = { "address", "port", NULL };
	unsigned char buf[16];
	const char *addr = NULL;
	uint64_t port = FERRY_API_PORT_DEFAULT;

	if (!name_is_valid(name))
		return ferr_set(err, FERR_INVALID,
				"hosts: \"%.64s\" is not a valid host name",
				name);
	if (json_check_fields(h, fields, "hosts entry", err) < 0 ||
	    json_get_string(h, "address", "hosts entry", 63, &addr, err) < 0 ||
	    json_get_u64(h, "port", "hosts entry", 1, 65535, &port, err) < 0)
		return ferr_wrap(err, "hosts.%s", name);
	if (!addr || (inet_pton(AF_INET, addr, buf) != 1 &&
		      inet_pton(AF_INET6, addr, buf) != 1))
		return ferr_set(err, FERR_INVALID,
				"hosts.%s.address must be a numeric IP "
				"address",
				name);
	snprintf(out->name, sizeof(out->name), "%s", name);
	snprintf(out->address, sizeof(out->address), "%s", addr);
	out->port = (uint16_t)port;
	return 0;
}

int cli_config_parse(const char *text, size_t len, const char *base_dir,
		     const char *origin, struct cli_config *cfg,
		     struct ferr *err)
{
	static const char *const fields[] = { "ca", "cert", "key", "crl",
					      "hosts", "default_host",
					      "controller", "detector_state",
					      NULL };
	const char *key, *def = NULL;
	json_t *root, *hosts, *h;
	int rc = -1;

	memset(cfg, 0, sizeof(*cfg));
	root = json_parse_object(text, len, origin, err);
	if (!root)
		return -1;
	if (json_check_fields(root, fields, "config", err) < 0 ||
	    get_path(root, "ca", base_dir, cfg->ca, sizeof(cfg->ca), err) < 0 ||
	    get_path(root, "cert", base_dir, cfg->cert, sizeof(cfg->cert),
		     err) < 0 ||
	    get_path(root, "key", base_dir, cfg->key, sizeof(cfg->key), err) <
		    0 ||
	    (json_object_get(root, "crl") &&
	     get_path(root, "crl", base_dir, cfg->crl, sizeof(cfg->crl),
		      err) < 0))
		goto wrap;
	hosts = json_object_get(root, "hosts");
	if (!json_is_object(hosts) || json_object_size(hosts) == 0) {
		ferr_set(err, FERR_INVALID,
			 "config.hosts must be an object naming at least one "
			 "host");
		goto wrap;
	}
	if (json_object_size(hosts) > CLI_HOSTS_MAX) {
		ferr_set(err, FERR_INVALID, "config.hosts has more than %d hosts",
			 CLI_HOSTS_MAX);
		goto wrap;
	}
	json_object_foreach(hosts, key, h) {
		if (parse_host(key, h, &cfg->hosts[cfg->nhosts], err) < 0)
			goto wrap;
		cfg->nhosts++;
	}
	if (json_get_string(root, "default_host", "config", FERRY_NAME_MAX,
			    &def, err) < 0)
		goto wrap;
	if (def) {
		snprintf(cfg->default_host, sizeof(cfg->default_host), "%s",
			 def);
		if (!cli_host_find(cfg, def, err))
			goto wrap;
	}
	def = NULL;
	if (json_get_string(root, "controller", "config", FERRY_NAME_MAX, &def,
			    err) < 0)
		goto wrap;
	if (def) {
		snprintf(cfg->controller, sizeof(cfg->controller), "%s", def);
		if (!cli_host_find(cfg, def, err))
			goto wrap;
	}
	/* ferry-detect's state file, which `ferry ui` shows alarms from */
	if (json_object_get(root, "detector_state") &&
	    get_path(root, "detector_state", base_dir, cfg->detector_state,
		     sizeof(cfg->detector_state), err) < 0)
		goto wrap;
	rc = 0;
	goto out;
wrap:
	ferr_wrap(err, "%s", origin);
out:
	json_decref(root);
	return rc;
}

int cli_config_load(const char *path, struct cli_config *cfg,
		    struct ferr *err)
{
	char buf[FERRY_PATH_MAX], real[FERRY_PATH_MAX];
	char *text = NULL;
	size_t len = 0;
	int rc;

	if (!path)
		path = getenv("FERRY_CONFIG");
	if (!path) {
		const char *home = getenv("HOME");

		if (!home || fmt_checked(buf, sizeof(buf), err, "path",
					 "%s/.config/ferry/client.json",
					 home) < 0)
			return ferr_set(err, FERR_INVALID,
					"no client config: use --config or "
					"set FERRY_CONFIG");
		path = buf;
	}
	if (!realpath(path, real))
		return ferr_set(err, FERR_INVALID,
				"cannot open client config %s: %s", path,
				strerror(errno));
	if (file_read_all(real, FERRY_CONFIG_MAX, &text, &len, err) < 0)
		return -1;
	rc = cli_config_parse(text, len, dirname(real), path, cfg, err);
	free(text);
	return rc;
}

const struct cli_host *cli_host_find(const struct cli_config *cfg,
				     const char *name, struct ferr *err)
{
	if (!name || !*name) {
		if (cfg->default_host[0])
			name = cfg->default_host;
		else if (cfg->nhosts == 1)
			return &cfg->hosts[0];
		else {
			ferr_set(err, FERR_INVALID,
				 "several hosts are configured and none is the "
				 "default: use --host NAME");
			return NULL;
		}
	}
	for (size_t i = 0; i < cfg->nhosts; i++)
		if (!strcmp(cfg->hosts[i].name, name))
			return &cfg->hosts[i];
	ferr_set(err, FERR_NOT_FOUND, "host %s is not in the client config",
		 name);
	return NULL;
}

int client_init(struct client *c, const struct cli_config *cfg,
		unsigned timeout_s, struct ferr *err)
{
	memset(c, 0, sizeof(*c));
	c->cfg = cfg;
	c->timeout_s = timeout_s ? timeout_s : CLI_TIMEOUT_S_DEFAULT;
	if (cfg->crl[0] && tls_crl_load(cfg->crl, cfg->ca, NULL, err) < 0)
		return -1;
	c->ctx = tls_client_ctx_new(cfg->ca, cfg->cert, cfg->key, err);
	return c->ctx ? 0 : -1;
}

void client_free(struct client *c)
{
	SSL_CTX_free(c->ctx);
	c->ctx = NULL;
}

int client_request(struct client *c, const struct cli_host *host,
		   const char *method, const char *path, const json_t *body,
		   int *status, json_t **reply, struct ferr *err)
{
	struct httpc_peer p = { .name = host->name,
				.address = host->address,
				.port = host->port };

	return httpc_request(c->ctx, &p, c->timeout_s, method, path, body,
			     status, reply, err);
}

int client_call(struct client *c, const struct cli_host *host,
		const char *method, const char *path, const json_t *body,
		json_t **reply, struct ferr *err)
{
	struct httpc_peer p = { .name = host->name,
				.address = host->address,
				.port = host->port };

	return httpc_call(c->ctx, &p, c->timeout_s, method, path, body, reply,
			  err);
}

int client_call_bound(struct client *c, const struct cli_host *host,
		      const char *method, const char *path,
		      const json_t *body, json_t **reply,
		      unsigned char *exporter, struct ferr *err)
{
	struct httpc_peer p = { .name = host->name,
				.address = host->address,
				.port = host->port,
				.check_name = true };

	return httpc_call_x(c->ctx, &p, c->timeout_s, method, path, body,
			    reply, exporter, err);
}

EVP_PKEY *client_audit_key(struct client *c, const struct cli_host *host,
			   struct ferr *err)
{
	json_t *reply = NULL;
	const char *pem;
	EVP_PKEY *key = NULL;
	BIO *bio;

	if (client_call(c, host, "GET", "/v1/audit/key", NULL, &reply, err) <
	    0)
		return NULL;
	pem = json_string_value(json_object_get(reply, "public_key"));
	bio = pem ? BIO_new_mem_buf(pem, -1) : NULL;
	if (bio)
		key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	json_decref(reply);
	if (!key)
		ferr_set(err, FERR_UNAVAILABLE,
			 "host %s sent no usable audit public key", host->name);
	return key;
}
