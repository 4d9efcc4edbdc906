/* config.c - strict parser for ferryd.json. */
#define _GNU_SOURCE
#include "config.h"
#include "netdev.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>

const char *accel_mode_name(enum accel_mode m)
{
	switch (m) {
	case ACCEL_KVM:
		return "kvm";
	case ACCEL_TCG:
		return "tcg";
	default:
		return "auto";
	}
}

const char *attest_mode_name(enum attest_mode m)
{
	switch (m) {
	case ATTEST_MODE_OPTIONAL:
		return "optional";
	case ATTEST_MODE_REQUIRED:
		return "required";
	default:
		return "off";
	}
}

int path_resolve(const char *base_dir, const char *p, char *out, size_t len,
		 struct ferr *err)
{
	if (!*p)
		return ferr_set(err, FERR_INVALID, "empty path");
	if (p[0] == '/' || !base_dir || !*base_dir)
		return fmt_checked(out, len, err, "path", "%s", p);
	return fmt_checked(out, len, err, "path", "%s/%s", base_dir, p);
}

/* Fetch required string field `key` of obj and resolve it as a path. */
static int get_path(const json_t *obj, const char *key, const char *what,
		    const char *base, char *out, size_t len, struct ferr *err)
{
	const char *s = NULL;

	if (json_get_string(obj, key, what, FERRY_PATH_MAX - 1, &s, err) < 0)
		return -1;
	if (!s)
		return ferr_set(err, FERR_INVALID, "%s.%s is required", what,
				key);
	if (path_resolve(base, s, out, len, err) < 0)
		return ferr_wrap(err, "%s.%s", what, key);
	return 0;
}

/* The optional "limits" object (flood protection). */
static int parse_limits(const json_t *obj, struct guard_limits *l,
			struct ferr *err)
{
	static const char *const fields[] = {
		"conns_per_addr", "conns_total", "handshakes_per_s",
		"handshake_burst", "requests_per_s", "request_burst",
		"deadline_s", NULL
	};
	unsigned *dst[] = { &l->conns_per_addr,   &l->conns_total,
			    &l->handshakes_per_s, &l->handshake_burst,
			    &l->requests_per_s,   &l->request_burst,
			    &l->deadline_s };

	if (json_check_fields(obj, fields, "limits", err) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(dst) / sizeof(dst[0]); i++) {
		uint64_t v = *dst[i];

		if (json_get_u64(obj, fields[i], "limits", 1,
				 dst[i] == &l->deadline_s
					 ? FERRY_GUARD_DEADLINE_S_MAX
					 : 1000000,
				 &v, err) < 0)
			return -1;
		*dst[i] = (unsigned)v;
	}
	return 0;
}

const struct bridge_map *config_bridge(const struct ferryd_config *cfg,
				       const char *name)
{
	for (unsigned i = 0; i < cfg->nbridges; i++)
		if (!strcmp(cfg->bridges[i].name, name))
			return &cfg->bridges[i];
	return NULL;
}

const char *config_dataplane_addr(const struct ferryd_config *cfg)
{
	return cfg->migration_netns[0] ? cfg->advertise_addr
				       : cfg->listen_addr;
}

/* The optional "bridges" object: {"NAME": {"device": "br0", "netns": ...}}
 * maps the bridge names of VM definitions to this host's bridges. */
static int parse_bridges(const json_t *obj, struct ferryd_config *cfg,
			 struct ferr *err)
{
	static const char *const fields[] = { "device", "netns", NULL };
	const char *k;
	json_t *v;

	if (!json_is_object(obj))
		return ferr_set(err, FERR_INVALID,
				"bridges must be an object of NAME: "
				"{\"device\": ..., \"netns\": ...}");
	if (json_object_size(obj) > FERRY_BRIDGES_MAX)
		return ferr_set(err, FERR_INVALID,
				"bridges has more than %d entries",
				FERRY_BRIDGES_MAX);
	json_object_foreach((json_t *)obj, k, v) {
		struct bridge_map *b = &cfg->bridges[cfg->nbridges];
		const char *dev = NULL, *ns = NULL;
		char what[FERRY_NAME_MAX + 16];

		if (!name_is_valid(k))
			return ferr_set(err, FERR_INVALID,
					"bridges.%.64s: not a valid name "
					"([a-z0-9][a-z0-9._-]*)", k);
		if (!json_is_object(v))
			return ferr_set(err, FERR_INVALID,
					"bridges.%s must be an object", k);
		snprintf(what, sizeof(what), "bridges.%s", k);
		if (json_check_fields(v, fields, what, err) < 0 ||
		    json_get_string(v, "device", what, sizeof(b->device) - 1,
				    &dev, err) < 0 ||
		    json_get_string(v, "netns", what, sizeof(b->netns) - 1, &ns,
				    err) < 0)
			return -1;
		if (!dev || !ifname_is_valid(dev))
			return ferr_set(err, FERR_INVALID,
					"bridges.%s.device must be an "
					"interface name (1-15 characters)", k);
		if (ns && !netns_name_is_valid(ns))
			return ferr_set(err, FERR_INVALID,
					"bridges.%s.netns \"%s\" is not a "
					"network namespace name", k, ns);
		snprintf(b->name, sizeof(b->name), "%s", k);
		snprintf(b->device, sizeof(b->device), "%s", dev);
		snprintf(b->netns, sizeof(b->netns), "%s", ns ? ns : "");
		cfg->nbridges++;
	}
	return 0;
}

/* The optional "etcd" section (docs/etcd.md). ca, cert and key default to
 * the host's own tls files. */
static int parse_etcd(const json_t *obj, const char *base,
		      const struct ferryd_config *cfg, struct etcd_config *e,
		      struct ferr *err)
{
	static const char *const fields[] = {
		"endpoints", "ca", "cert", "key", "prefix", "lease_ttl_s",
		"timeout_ms", "member_timeout_ms", NULL
	};
	json_t *eps = json_object_get(obj, "endpoints"), *v;
	const char *s = NULL;
	uint64_t ttl, t, mt;
	size_t i;

	etcd_config_defaults(e);
	ttl = e->lease_ttl_s;
	t = e->timeout_ms;
	mt = e->member_timeout_ms;
	if (json_check_fields(obj, fields, "etcd", err) < 0)
		return -1;
	if (!json_is_array(eps) || json_array_size(eps) == 0 ||
	    json_array_size(eps) > ETCD_ENDPOINTS_MAX)
		return ferr_set(err, FERR_INVALID,
				"etcd.endpoints must be a list of 1 to %d "
				"\"https://ADDRESS:PORT\" strings",
				ETCD_ENDPOINTS_MAX);
	json_array_foreach(eps, i, v) {
		if (!json_is_string(v) ||
		    json_string_length(v) >= ETCD_URL_MAX)
			return ferr_set(err, FERR_INVALID,
					"etcd.endpoints[%zu] must be a string "
					"of less than %d bytes", i,
					ETCD_URL_MAX);
		snprintf(e->endpoints[i], ETCD_URL_MAX, "%s",
			 json_string_value(v));
	}
	e->n_endpoints = (unsigned)json_array_size(eps);
	memcpy(e->ca_file, cfg->ca_file, sizeof(e->ca_file));
	memcpy(e->cert_file, cfg->cert_file, sizeof(e->cert_file));
	memcpy(e->key_file, cfg->key_file, sizeof(e->key_file));
	if ((json_object_get(obj, "ca") &&
	     get_path(obj, "ca", "etcd", base, e->ca_file, sizeof(e->ca_file),
		      err) < 0) ||
	    (json_object_get(obj, "cert") &&
	     get_path(obj, "cert", "etcd", base, e->cert_file,
		      sizeof(e->cert_file), err) < 0) ||
	    (json_object_get(obj, "key") &&
	     get_path(obj, "key", "etcd", base, e->key_file,
		      sizeof(e->key_file), err) < 0) ||
	    json_get_string(obj, "prefix", "etcd", ETCD_PREFIX_MAX - 1, &s,
			    err) < 0 ||
	    json_get_u64(obj, "lease_ttl_s", "etcd", 2, ETCD_LEASE_TTL_S_MAX,
			 &ttl, err) < 0 ||
	    json_get_u64(obj, "timeout_ms", "etcd", ETCD_MEMBER_TIMEOUT_MS_MIN,
			 ETCD_TIMEOUT_MS_MAX, &t, err) < 0 ||
	    json_get_u64(obj, "member_timeout_ms", "etcd",
			 ETCD_MEMBER_TIMEOUT_MS_MIN, ETCD_TIMEOUT_MS_MAX, &mt,
			 err) < 0)
		return -1;
	if (s)
		snprintf(e->prefix, sizeof(e->prefix), "%s", s);
	e->lease_ttl_s = (unsigned)ttl;
	e->timeout_ms = (unsigned)t;
	e->member_timeout_ms = (unsigned)mt;
	return etcd_config_check(e, err);
}

/* "attestation": a mode string, or {"mode", "tcti", "pcr", "policy_pcr",
 * "seal", "registrar"}. */
static int parse_attest(const json_t *v, const char *base,
			struct attest_config *a, struct ferr *err)
{
	static const char *const fields[] = { "mode", "tcti", "pcr",
					      "policy_pcr", "seal",
					      "registrar", NULL };
	const char *mode = NULL, *tcti = NULL;
	uint64_t pcr = a->pcr, ppcr = a->policy_pcr;
	bool seal;

	if (json_is_string(v)) {
		mode = json_string_value(v);
	} else if (json_check_fields(v, fields, "attestation", err) < 0 ||
		   json_get_string(v, "mode", "attestation", 16, &mode,
				   err) < 0 ||
		   json_get_string(v, "tcti", "attestation",
				   FERRY_ATTEST_TCTI_MAX, &tcti, err) < 0 ||
		   json_get_u64(v, "pcr", "attestation", 0,
				FERRY_ATTEST_PCR_MAX, &pcr, err) < 0 ||
		   json_get_u64(v, "policy_pcr", "attestation", 0,
				FERRY_ATTEST_PCR_MAX, &ppcr, err) < 0) {
		return -1;
	}
	if (!mode || (strcmp(mode, "off") && strcmp(mode, "optional") &&
		      strcmp(mode, "required")))
		return ferr_set(err, FERR_INVALID,
				"attestation.mode must be \"off\", "
				"\"optional\" or \"required\"");
	a->mode = !strcmp(mode, "required")   ? ATTEST_MODE_REQUIRED
		  : !strcmp(mode, "optional") ? ATTEST_MODE_OPTIONAL
					      : ATTEST_MODE_OFF;
	seal = a->mode == ATTEST_MODE_REQUIRED;
	if (json_is_object(v) &&
	    json_get_bool(v, "seal", "attestation", &seal, err) < 0)
		return -1;
	a->seal = seal && a->mode != ATTEST_MODE_OFF;
	if (pcr == ppcr)
		return ferr_set(err, FERR_INVALID,
				"attestation.pcr and policy_pcr must differ "
				"(PCRs 0-%d)",
				FERRY_ATTEST_PCR_MAX);
	a->pcr = (unsigned)pcr;
	a->policy_pcr = (unsigned)ppcr;
	if (tcti) {
		for (const char *c = tcti; *c; c++)
			if (*c <= 0x20 || *c > 0x7e)
				return ferr_set(err, FERR_INVALID,
						"attestation.tcti: printable "
						"characters without spaces");
		snprintf(a->tcti, sizeof(a->tcti), "%s", tcti);
	}
	if (json_is_object(v) && json_object_get(v, "registrar") &&
	    get_path(v, "registrar", "attestation", base, a->registrar,
		     sizeof(a->registrar), err) < 0)
		return -1;
	if (a->seal && !a->registrar[0])
		return ferr_set(err, FERR_INVALID,
				"attestation.seal needs attestation.registrar "
				"(the folder with the authority's public key)");
	return 0;
}

/* Drop comment members (keys beginning with CONFIG_COMMENT_PREFIX) from
 * every object in v, at any depth. */
static void strip_comments(json_t *v)
{
	const char *key;
	json_t *val;
	void *tmp;
	size_t i;

	if (json_is_array(v)) {
		json_array_foreach(v, i, val)
			strip_comments(val);
		return;
	}
	json_object_foreach_safe(v, tmp, key, val) {
		if (key[0] == CONFIG_COMMENT_PREFIX)
			json_object_del(v, key);
		else
			strip_comments(val);
	}
}


/* The optional "qemu_user": a user name ([a-z_][a-z0-9_-]*, at most
 * FERRY_USER_NAME_MAX bytes), not root. */
static int get_qemu_user(const json_t *root, struct ferryd_config *cfg,
			 struct ferr *err)
{
	const char *s = NULL;

	if (json_get_string(root, "qemu_user", "config", FERRY_USER_NAME_MAX,
			    &s, err) < 0)
		return -1;
	if (!s)
		return 0;
	for (const char *p = s; *p; p++) {
		if (!((*p >= 'a' && *p <= 'z') || *p == '_' ||
		      (p > s && ((*p >= '0' && *p <= '9') || *p == '-'))))
			return ferr_set(err, FERR_INVALID,
					"qemu_user \"%.32s\" is not a user "
					"name ([a-z_][a-z0-9_-]*)", s);
	}
	if (!*s || !strcmp(s, "root"))
		return ferr_set(err, FERR_INVALID,
				"qemu_user must name an unprivileged user");
	snprintf(cfg->qemu_user, sizeof(cfg->qemu_user), "%s", s);
	return 0;
}

/* "ha_peers": [{"host", "address", "port"}] (docs/ha.md). */
static int parse_ha_peers(const json_t *arr, struct ferryd_config *cfg,
			  struct ferr *err)
{
	static const char *const fields[] = { "host", "address", "port",
					      NULL };
	unsigned char buf[16];
	size_t i;
	json_t *o;

	if (!json_is_array(arr) || json_array_size(arr) > FERRY_HA_PEERS_MAX)
		return ferr_set(err, FERR_INVALID,
				"ha_peers must be an array of at most %d hosts",
				FERRY_HA_PEERS_MAX);
	json_array_foreach(arr, i, o) {
		struct ha_peer_cfg *p = &cfg->ha_peers[i];
		const char *host = NULL, *addr = NULL;
		uint64_t port = FERRY_API_PORT_DEFAULT;

		if (json_check_fields(o, fields, "ha_peers", err) < 0 ||
		    json_get_string(o, "host", "ha_peers", FERRY_NAME_MAX,
				    &host, err) < 0 ||
		    json_get_string(o, "address", "ha_peers", 63, &addr,
				    err) < 0 ||
		    json_get_u64(o, "port", "ha_peers", 1, 65535, &port,
				 err) < 0)
			return -1;
		if (!host || !name_is_valid(host) || !addr ||
		    (inet_pton(AF_INET, addr, buf) != 1 &&
		     inet_pton(AF_INET6, addr, buf) != 1))
			return ferr_set(err, FERR_INVALID,
					"ha_peers[%zu] needs a host name and "
					"a numeric IP address", i);
		snprintf(p->host, sizeof(p->host), "%s", host);
		snprintf(p->address, sizeof(p->address), "%s", addr);
		p->port = (uint16_t)port;
	}
	cfg->n_ha_peers = (unsigned)json_array_size(arr);
	return 0;
}

int config_parse(const char *text, size_t len, const char *base_dir,
		 const char *origin, struct ferryd_config *cfg,
		 struct ferr *err)
{
	static const char *const top_fields[] = {
		"host", "listen", "tls", "state_dir", "shared_dir", "accel",
		"qemu", "memory_reserve_mib", "migration", "policy", "limits",
		"capacity", "balancer", "etcd", "attestation", "qemu_user",
		"audit_rotate_kib", "bridges", "ram_dir", "ha_peers", NULL
	};
	static const char *const cap_fields[] = { "cpus", "memory_mib", NULL };
	static const char *const mig_fields[] = {
		"port", "advertise_address", "advertise_port", "max_incoming",
		"max_outgoing", "peer_timeout_s", "confirm_timeout_s",
		"stall_timeout_s", "allow_plaintext", "netns", NULL
	};
	static const char *const listen_fields[] = { "address", "port", NULL };
	static const char *const tls_fields[] = { "ca", "cert", "key", "crl",
						  NULL };
	json_t *root = NULL, *listen, *tls;
	const char *s = NULL;
	unsigned char addrbuf[16];
	uint64_t port = FERRY_API_PORT_DEFAULT;
	int rc = -1;

	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->config_dir, sizeof(cfg->config_dir), "%s",
		 base_dir ? base_dir : "");
	cfg->accel = ACCEL_AUTO;
	cfg->max_incoming = FERRY_MIG_INCOMING_DEFAULT;
	cfg->max_outgoing = FERRY_MIG_OUTGOING_DEFAULT;
	cfg->peer_timeout_s = FERRY_MIG_PEER_TIMEOUT_S;
	cfg->confirm_timeout_s = FERRY_MIG_CONFIRM_TIMEOUT_S;
	cfg->stall_timeout_s = FERRY_MIG_STALL_TIMEOUT_S;
	cfg->limits = (struct guard_limits){
		.conns_per_addr = FERRY_GUARD_CONNS_PER_ADDR,
		.conns_total = FERRY_GUARD_CONNS_TOTAL,
		.handshakes_per_s = FERRY_GUARD_HANDSHAKES_PER_S,
		.handshake_burst = FERRY_GUARD_HANDSHAKE_BURST,
		.requests_per_s = FERRY_GUARD_REQUESTS_PER_S,
		.request_burst = FERRY_GUARD_REQUEST_BURST,
		.deadline_s = FERRY_GUARD_DEADLINE_S,
	};
	cfg->memory_reserve_mib = 256;
	cfg->attest.pcr = FERRY_ATTEST_PCR_DEFAULT;
	cfg->attest.policy_pcr = FERRY_ATTEST_POLICY_PCR_DEFAULT;
	snprintf(cfg->attest.tcti, sizeof(cfg->attest.tcti), "%s",
		 FERRY_ATTEST_TCTI_DEFAULT);
	cfg->audit_rotate_kib = FERRY_AUDIT_ROTATE_KIB_DEFAULT;
	snprintf(cfg->qemu_binary, sizeof(cfg->qemu_binary), "%s",
		 "/usr/bin/qemu-system-x86_64");

	root = json_parse_object(text, len, origin, err);
	if (!root)
		return -1;
	strip_comments(root);
	if (json_check_fields(root, top_fields, origin, err) < 0)
		goto out;

	if (json_get_string(root, "host", origin, FERRY_NAME_MAX, &s, err) < 0)
		goto out;
	if (!s) {
		ferr_set(err, FERR_INVALID, "%s: host is required", origin);
		goto out;
	}
	if (!name_is_valid(s)) {
		ferr_set(err, FERR_INVALID,
			 "%s: host \"%s\" is not a valid name "
			 "([a-z0-9][a-z0-9._-]*, at most %d characters)",
			 origin, s, FERRY_NAME_MAX);
		goto out;
	}
	snprintf(cfg->host, sizeof(cfg->host), "%s", s);

	listen = json_object_get(root, "listen");
	if (!listen) {
		ferr_set(err, FERR_INVALID, "%s: listen is required", origin);
		goto out;
	}
	if (json_check_fields(listen, listen_fields, "listen", err) < 0)
		goto wrap;
	s = NULL;
	if (json_get_string(listen, "address", "listen", 63, &s, err) < 0)
		goto wrap;
	if (!s) {
		ferr_set(err, FERR_INVALID, "listen.address is required");
		goto wrap;
	}
	if (inet_pton(AF_INET, s, addrbuf) != 1 &&
	    inet_pton(AF_INET6, s, addrbuf) != 1) {
		ferr_set(err, FERR_INVALID,
			 "listen.address \"%s\" is not a numeric IP address",
			 s);
		goto wrap;
	}
	snprintf(cfg->listen_addr, sizeof(cfg->listen_addr), "%s", s);
	if (json_get_u64(listen, "port", "listen", 1, 65535, &port, err) < 0)
		goto wrap;
	cfg->listen_port = (uint16_t)port;

	tls = json_object_get(root, "tls");
	if (!tls) {
		ferr_set(err, FERR_INVALID, "%s: tls is required", origin);
		goto out;
	}
	if (json_check_fields(tls, tls_fields, "tls", err) < 0 ||
	    get_path(tls, "ca", "tls", base_dir, cfg->ca_file,
		     sizeof(cfg->ca_file), err) < 0 ||
	    get_path(tls, "cert", "tls", base_dir, cfg->cert_file,
		     sizeof(cfg->cert_file), err) < 0 ||
	    get_path(tls, "key", "tls", base_dir, cfg->key_file,
		     sizeof(cfg->key_file), err) < 0 ||
	    (json_object_get(tls, "crl") &&
	     get_path(tls, "crl", "tls", base_dir, cfg->crl_file,
		      sizeof(cfg->crl_file), err) < 0))
		goto wrap;

	if (get_path(root, "state_dir", "config", base_dir, cfg->state_dir,
		     sizeof(cfg->state_dir), err) < 0 ||
	    get_path(root, "shared_dir", "config", base_dir, cfg->shared_dir,
		     sizeof(cfg->shared_dir), err) < 0)
		goto wrap;
	if (strchr(cfg->state_dir, ',') || strchr(cfg->shared_dir, ',')) {
		/* QEMU option values are comma-separated */
		ferr_set(err, FERR_INVALID,
			 "state_dir and shared_dir must not contain ','");
		goto wrap;
	}
	if (json_object_get(root, "ram_dir")) {
		if (get_path(root, "ram_dir", "config", base_dir, cfg->ram_dir,
			     sizeof(cfg->ram_dir), err) < 0)
			goto wrap;
		if (strchr(cfg->ram_dir, ',') ||
		    strlen(cfg->ram_dir) > FERRY_STATE_DIR_MAX) {
			ferr_set(err, FERR_INVALID,
				 "ram_dir must not contain ',' and must be at "
				 "most %d bytes", FERRY_STATE_DIR_MAX);
			goto wrap;
		}
	}
	if (strlen(cfg->state_dir) > FERRY_STATE_DIR_MAX) {
		ferr_set(err, FERR_INVALID,
			 "state_dir \"%s\" is longer than %d bytes: the unix "
			 "sockets under it would not fit in sun_path",
			 cfg->state_dir, FERRY_STATE_DIR_MAX);
		goto wrap;
	}

	s = NULL;
	if (json_get_string(root, "accel", "config", 8, &s, err) < 0)
		goto wrap;
	if (s) {
		if (!strcmp(s, "auto"))
			cfg->accel = ACCEL_AUTO;
		else if (!strcmp(s, "kvm"))
			cfg->accel = ACCEL_KVM;
		else if (!strcmp(s, "tcg"))
			cfg->accel = ACCEL_TCG;
		else {
			ferr_set(err, FERR_INVALID,
				 "accel must be \"auto\", \"kvm\" or \"tcg\", "
				 "not \"%s\"", s);
			goto wrap;
		}
	}
	if (json_object_get(root, "qemu") &&
	    get_path(root, "qemu", "config", base_dir, cfg->qemu_binary,
		     sizeof(cfg->qemu_binary), err) < 0)
		goto wrap;
	if (json_get_u64(root, "memory_reserve_mib", "config", 0,
			 FERRY_VM_MEM_MAX_MIB, &cfg->memory_reserve_mib,
			 err) < 0)
		goto wrap;

	/* migration data plane: default port is the API port + 1 */
	port = cfg->listen_port == 65535 ? 65534 : cfg->listen_port + 1u;
	snprintf(cfg->advertise_addr, sizeof(cfg->advertise_addr), "%s",
		 cfg->listen_addr);
	if (json_object_get(root, "migration")) {
		json_t *mig = json_object_get(root, "migration");
		uint64_t aport = 0, in = cfg->max_incoming,
			 out = cfg->max_outgoing, pt = cfg->peer_timeout_s,
			 ct = cfg->confirm_timeout_s,
			 st = cfg->stall_timeout_s;
		const char *ns = NULL;

		s = NULL;
		if (json_check_fields(mig, mig_fields, "migration", err) < 0 ||
		    json_get_u64(mig, "port", "migration", 1, 65535, &port,
				 err) < 0 ||
		    json_get_u64(mig, "advertise_port", "migration", 1, 65535,
				 &aport, err) < 0 ||
		    json_get_string(mig, "advertise_address", "migration", 63,
				    &s, err) < 0 ||
		    json_get_u64(mig, "max_incoming", "migration", 1,
				 FERRY_MIG_CONCURRENT_MAX, &in, err) < 0 ||
		    json_get_u64(mig, "max_outgoing", "migration", 1,
				 FERRY_MIG_CONCURRENT_MAX, &out, err) < 0 ||
		    json_get_u64(mig, "peer_timeout_s", "migration", 1, 600,
				 &pt, err) < 0 ||
		    json_get_u64(mig, "confirm_timeout_s", "migration", 1,
				 3600, &ct, err) < 0 ||
		    json_get_u64(mig, "stall_timeout_s", "migration", 1, 3600,
				 &st, err) < 0 ||
		    json_get_bool(mig, "allow_plaintext", "migration",
				  &cfg->allow_plaintext, err) < 0 ||
		    json_get_string(mig, "netns", "migration",
				    sizeof(cfg->migration_netns) - 1, &ns,
				    err) < 0)
			goto wrap;
		if (ns && !netns_name_is_valid(ns)) {
			ferr_set(err, FERR_INVALID,
				 "migration.netns \"%s\" is not a network "
				 "namespace name", ns);
			goto wrap;
		}
		/* the data plane then listens on the advertised address, in
		 * that namespace */
		if (ns && !s) {
			ferr_set(err, FERR_INVALID,
				 "migration.netns needs "
				 "migration.advertise_address");
			goto wrap;
		}
		snprintf(cfg->migration_netns, sizeof(cfg->migration_netns),
			 "%s", ns ? ns : "");
		cfg->max_incoming = (unsigned)in;
		cfg->max_outgoing = (unsigned)out;
		cfg->peer_timeout_s = (unsigned)pt;
		cfg->confirm_timeout_s = (unsigned)ct;
		cfg->stall_timeout_s = (unsigned)st;
		if (s) {
			if (inet_pton(AF_INET, s, addrbuf) != 1 &&
			    inet_pton(AF_INET6, s, addrbuf) != 1) {
				ferr_set(err, FERR_INVALID,
					 "migration.advertise_address \"%s\" "
					 "is not a numeric IP address",
					 s);
				goto wrap;
			}
			snprintf(cfg->advertise_addr,
				 sizeof(cfg->advertise_addr), "%s", s);
		}
		cfg->advertise_port = (uint16_t)aport;
	}
	cfg->migration_port = (uint16_t)port;
	if (!cfg->advertise_port)
		cfg->advertise_port = cfg->migration_port;
	if (json_object_get(root, "policy") &&
	    get_path(root, "policy", "config", base_dir, cfg->policy_file,
		     sizeof(cfg->policy_file), err) < 0)
		goto wrap;
	if (json_object_get(root, "limits") &&
	    parse_limits(json_object_get(root, "limits"), &cfg->limits, err) <
		    0)
		goto wrap;
	if (json_object_get(root, "capacity")) {
		json_t *cap = json_object_get(root, "capacity");

		if (json_check_fields(cap, cap_fields, "capacity", err) < 0 ||
		    json_get_u64(cap, "cpus", "capacity", 1, 4096,
				 &cfg->capacity_cpus, err) < 0 ||
		    json_get_u64(cap, "memory_mib", "capacity", 1,
				 FERRY_VM_MEM_MAX_MIB * 64,
				 &cfg->capacity_memory_mib, err) < 0)
			goto wrap;
	}
	if (json_object_get(root, "bridges") &&
	    parse_bridges(json_object_get(root, "bridges"), cfg, err) < 0)
		goto wrap;
	if (get_qemu_user(root, cfg, err) < 0 ||
	    json_get_u64(root, "audit_rotate_kib", "config", 0,
			 FERRY_AUDIT_ROTATE_KIB_MAX, &cfg->audit_rotate_kib,
			 err) < 0)
		goto wrap;
	if (cfg->audit_rotate_kib &&
	    cfg->audit_rotate_kib < FERRY_AUDIT_ROTATE_KIB_MIN) {
		ferr_set(err, FERR_INVALID,
			 "audit_rotate_kib must be 0 (never) or at least %d",
			 FERRY_AUDIT_ROTATE_KIB_MIN);
		goto wrap;
	}
	if (json_object_get(root, "balancer")) {
		cfg->balancer = json_deep_copy(json_object_get(root, "balancer"));
		if (!json_is_object(cfg->balancer)) {
			ferr_set(err, FERR_INVALID,
				 "balancer must be an object (balancer.md)");
			goto wrap;
		}
	}
	if (json_object_get(root, "etcd") &&
	    parse_etcd(json_object_get(root, "etcd"), base_dir, cfg, &cfg->etcd,
		       err) < 0)
		goto wrap;
	if (json_object_get(root, "ha_peers") &&
	    parse_ha_peers(json_object_get(root, "ha_peers"), cfg, err) < 0)
		goto wrap;
	if (json_object_get(root, "attestation") &&
	    parse_attest(json_object_get(root, "attestation"), base_dir,
			 &cfg->attest, err) < 0)
		goto wrap;
	if (cfg->migration_port == cfg->listen_port) {
		ferr_set(err, FERR_INVALID,
			 "migration.port must differ from listen.port");
		goto wrap;
	}
	rc = 0;
	goto out;
wrap:
	ferr_wrap(err, "%s", origin);
out:
	if (rc < 0)
		config_clear(cfg);
	json_decref(root);
	return rc;
}

void config_clear(struct ferryd_config *cfg)
{
	json_decref(cfg->balancer);
	cfg->balancer = NULL;
}

int config_load(const char *path, struct ferryd_config *cfg, struct ferr *err)
{
	char dirbuf[FERRY_PATH_MAX];
	char *text = NULL;
	size_t len = 0;
	int rc;

	if (!realpath(path, dirbuf))
		return ferr_set(err, FERR_NOT_FOUND, "cannot open %s: %s",
				path, strerror(errno));
	if (file_read_all(path, FERRY_CONFIG_MAX, &text, &len, err) < 0)
		return -1;
	rc = config_parse(text, len, dirname(dirbuf), path, cfg, err);
	free(text);
	return rc;
}
