/* config.h - ferryd's configuration file (JSON), loaded strictly.
 *
 * Relative paths in the file are taken relative to the file's own folder.
 * See docs/configuration.md for every field.
 */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include <stdint.h>

#include "common.h"
#include "etcd.h"
#include "guard.h"

enum accel_mode { ACCEL_AUTO, ACCEL_KVM, ACCEL_TCG };

#define FERRY_BRIDGES_MAX 16
#define FERRY_HA_PEERS_MAX 16

/* A host that may keep this host's protected VMs' backups ("ha_peers"):
 * checkpoint HA re-protects a VM with one of them after a failover or a
 * migration (docs/ha.md). */
struct ha_peer_cfg {
	char host[FERRY_NAME_MAX + 1];
	char address[64];                  /* its API: numeric IP address */
	uint16_t port;
};

/* A VM network ("bridge" in a VM definition) mapped to this host's Linux
 * bridge, in a network namespace or ferryd's own (netns empty). */
struct bridge_map {
	char name[FERRY_NAME_MAX + 1];
	char device[16];
	char netns[64];
};

/* Attestation (docs/attestation.md): off (no TPM), optional (measure and
 * quote; destinations are attested when a policy rule requires it) or
 * required (ferryd needs its TPM to start, and attests every destination
 * before it sends guest memory). */
enum attest_mode { ATTEST_MODE_OFF, ATTEST_MODE_OPTIONAL, ATTEST_MODE_REQUIRED };

struct attest_config {
	enum attest_mode mode;
	char tcti[FERRY_ATTEST_TCTI_MAX + 1]; /* tss2 TCTI configuration */
	unsigned pcr;                      /* ferryd and QEMU are measured here */
	unsigned policy_pcr;               /* the policy in force, here */
	bool seal;                         /* TLS and audit keys sealed to the
					      TPM (default: mode required) */
	char registrar[FERRY_PATH_MAX];    /* enrolled hosts and the authority's
					      public key ("" when unset) */
};

struct ferryd_config {
	char host[FERRY_NAME_MAX + 1];     /* this host's name */
	char listen_addr[64];              /* numeric IPv4 or IPv6 address */
	uint16_t listen_port;
	char ca_file[FERRY_PATH_MAX];      /* cluster CA certificate */
	char cert_file[FERRY_PATH_MAX];    /* this host's certificate */
	char key_file[FERRY_PATH_MAX];     /* this host's private key */
	char crl_file[FERRY_PATH_MAX];     /* revoked certificates, or "" */
	char state_dir[FERRY_PATH_MAX];    /* VM definitions and runtime files */
	char shared_dir[FERRY_PATH_MAX];   /* shared storage: kernels, disks */
	char qemu_binary[FERRY_PATH_MAX];
	char qemu_user[FERRY_USER_NAME_MAX + 1]; /* QEMU runs as this user;
						    "": as ferryd's own */
	uint64_t audit_rotate_kib;         /* rotate audit.log past this;
					      0: never */
	enum accel_mode accel;
	uint64_t memory_reserve_mib;       /* kept free for the host itself */
	/* migration data plane */
	uint16_t migration_port;           /* listen_addr:migration_port */
	char advertise_addr[64];           /* what sources connect to */
	uint16_t advertise_port;
	unsigned max_incoming;             /* migrations received at once */
	unsigned max_outgoing;             /* migrations sent at once */
	char migration_netns[64];          /* data plane's namespace, or "" */
	struct bridge_map bridges[FERRY_BRIDGES_MAX];
	unsigned nbridges;
	unsigned peer_timeout_s;           /* one control call to a peer */
	unsigned confirm_timeout_s;        /* source: settle a finish before
					      handing it to the resolver */
	unsigned stall_timeout_s;          /* no progress: cancel */
	bool allow_plaintext;              /* plaintext migrations at all (the
					      policy must allow each too) */
	char policy_file[FERRY_PATH_MAX];  /* empty: no policy, all denied */
	struct guard_limits limits;        /* flood protection */
	uint64_t capacity_cpus;            /* reported to the balancer; 0: the */
	uint64_t capacity_memory_mib;      /* machine's own */
	char config_dir[FERRY_PATH_MAX];   /* resolves relative paths */
	json_t *balancer;                  /* controller mode (balancer.md), or
					      NULL; owned, see config_clear */
	struct etcd_config etcd;           /* n_endpoints 0: no etcd section */
	char ram_dir[FERRY_PATH_MAX];      /* "ram_dir": VMs' RAM as shared
					      files here (checkpoint HA reads
					      them); empty: anonymous RAM */
	struct attest_config attest;       /* "attestation" */
	struct ha_peer_cfg ha_peers[FERRY_HA_PEERS_MAX]; /* "ha_peers" */
	unsigned n_ha_peers;
};

/* A member whose key begins with this is a comment, ignored at any depth
 * ("#listen": "why the API listens where it does"): JSON has no comments,
 * and the default /etc/ferry/ferryd.json explains itself. */
#define CONFIG_COMMENT_PREFIX '#'

/* Parse the JSON text (len bytes) of a config into *cfg. base_dir resolves
 * relative paths; `origin` names the file in error messages. Unknown fields,
 * wrong types and bad values are FERR_INVALID naming the field. On error
 * *cfg is unspecified. */
int config_parse(const char *text, size_t len, const char *base_dir,
		 const char *origin, struct ferryd_config *cfg,
		 struct ferr *err);

/* Release what a parsed config owns. */
void config_clear(struct ferryd_config *cfg);

/* Read and parse the config file at path (see config_parse). */
int config_load(const char *path, struct ferryd_config *cfg, struct ferr *err);

/* The bridge map named name, or NULL. */
const struct bridge_map *config_bridge(const struct ferryd_config *cfg,
				       const char *name);

/* The address the migration data plane binds to, listening and dialling:
 * migration.advertise_address inside migration.netns when that is set,
 * else listen.address. */
const char *config_dataplane_addr(const struct ferryd_config *cfg);
/* "off", "optional" or "required". */
const char *attest_mode_name(enum attest_mode m);

/* "auto", "kvm" or "tcg". */
const char *accel_mode_name(enum accel_mode m);

/* Resolve p against base_dir into out (absolute p is copied as is). */
int path_resolve(const char *base_dir, const char *p, char *out, size_t len,
		 struct ferr *err);

#endif
