/* cli.h - the `ferry` command line: client config, HTTPS client, output,
 * and one file per command group (host, vm, pki).
 *
 * Exit codes (docs/cli.md): 0 success, 1 the operation failed, 2 usage
 * error, 3 cannot reach or authenticate to the host, 4 no such object.
 */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <openssl/ssl.h>

#include "common.h"

enum cli_exit {
	EXIT_OK = 0,
	EXIT_FAILED = 1,
	EXIT_USAGE = 2,
	EXIT_UNREACHABLE = 3,
	EXIT_NOT_FOUND = 4,
};

#define CLI_HOSTS_MAX 64
#define CLI_TIMEOUT_S_DEFAULT 60

/* Options, parsed once for every command (opts.c has their table). `set`
 * has one bit per option so a command can refuse options that do not apply
 * to it. To add an option: a bit here, a field in struct cli_opts and a row
 * in opts.c's table. */
#define OPT_CONFIG (UINT64_C(1) << 0)
#define OPT_HOST (UINT64_C(1) << 1)
#define OPT_JSON (UINT64_C(1) << 2)
#define OPT_FORCE (UINT64_C(1) << 3)
#define OPT_TIMEOUT (UINT64_C(1) << 4)
#define OPT_NO_WAIT (UINT64_C(1) << 5)
#define OPT_FOLLOW (UINT64_C(1) << 6)
#define OPT_DIR (UINT64_C(1) << 7)
#define OPT_IP (UINT64_C(1) << 8)
#define OPT_DNS (UINT64_C(1) << 9)
#define OPT_DAYS (UINT64_C(1) << 10)
#define OPT_CLUSTER (UINT64_C(1) << 11)
#define OPT_OFFSET (UINT64_C(1) << 12)
#define OPT_TO (UINT64_C(1) << 13)
#define OPT_OFFLINE (UINT64_C(1) << 14)
#define OPT_POSTCOPY (UINT64_C(1) << 15)
#define OPT_MAX_DOWNTIME (UINT64_C(1) << 16)
#define OPT_BANDWIDTH (UINT64_C(1) << 17)
#define OPT_CHANNELS (UINT64_C(1) << 18)
#define OPT_INSECURE (UINT64_C(1) << 19)
#define OPT_MAX_TIME (UINT64_C(1) << 20)
#define OPT_CANCEL (UINT64_C(1) << 21)
#define OPT_LOG (UINT64_C(1) << 22)
#define OPT_KEY (UINT64_C(1) << 23)
#define OPT_SINCE (UINT64_C(1) << 24)
#define OPT_UNTIL (UINT64_C(1) << 25)
#define OPT_VM (UINT64_C(1) << 26)
#define OPT_ACTOR (UINT64_C(1) << 27)
#define OPT_ACTION (UINT64_C(1) << 28)
#define OPT_LIMIT (UINT64_C(1) << 29)
#define OPT_PORT (UINT64_C(1) << 30)
#define OPT_POLICY (UINT64_C(1) << 31)
#define OPT_FERRYD (UINT64_C(1) << 32)
#define OPT_BACKUP (UINT64_C(1) << 33)
#define OPT_INTERVAL (UINT64_C(1) << 34)
#define OPT_COMPRESS (UINT64_C(1) << 35)
#define OPT_GLOBAL (OPT_CONFIG | OPT_HOST | OPT_JSON | OPT_TIMEOUT)
#define CLI_SANS_MAX 16

struct cli_opts {
	uint64_t set;
	const char *config;
	const char *host;
	bool json;
	bool force;
	unsigned timeout_s;
	bool no_wait;
	bool follow;
	const char *dir;
	const char *ips[CLI_SANS_MAX + 1];
	const char *dns[CLI_SANS_MAX + 1];
	unsigned days;
	const char *cluster;
	uint64_t offset;
	const char *to;
	bool offline;
	bool postcopy;
	uint64_t max_downtime_ms;
	uint64_t bandwidth_mibps;
	uint64_t channels;
	const char *compress;
	bool insecure;
	uint64_t max_time_s;
	bool cancel;
	const char *log;        /* audit: a local audit.log */
	const char *key;        /* audit: the host's audit.pub */
	uint64_t since_ms;      /* audit show filters */
	uint64_t until_ms;
	const char *vm;
	const char *actor;
	const char *action;
	uint64_t limit;
	unsigned port;          /* ui: 0 takes any free port */
	const char *policy;     /* attest: the policy with reference values */
	const char *ferryd;     /* host reseal: the host's ferryd.json */
	const char *backup;     /* ha enable: the backup host */
	const char *interval;   /* ha enable: "N" or "Ns" seconds */
};

struct cli_host {
	char name[FERRY_NAME_MAX + 1];
	char address[64];
	uint16_t port;
};

/* The client config (client.json): credentials and named hosts. */
struct cli_config {
	char ca[FERRY_PATH_MAX];
	char cert[FERRY_PATH_MAX];
	char key[FERRY_PATH_MAX];
	char crl[FERRY_PATH_MAX];            /* revocation list, or "" */
	char default_host[FERRY_NAME_MAX + 1];
	char controller[FERRY_NAME_MAX + 1]; /* the balancer's host, or "" */
	char detector_state[FERRY_PATH_MAX]; /* ferry-detect's state.json for
						the dashboard, or "" */
	struct cli_host hosts[CLI_HOSTS_MAX];
	size_t nhosts;
};

/* ---- client.c ---- */

/* Parse client config text; relative paths are resolved against base_dir.
 * Errors name origin and the field. */
int cli_config_parse(const char *text, size_t len, const char *base_dir,
		     const char *origin, struct cli_config *cfg,
		     struct ferr *err);

/* Load the config from path, or $FERRY_CONFIG, or
 * ~/.config/ferry/client.json. */
int cli_config_load(const char *path, struct cli_config *cfg,
		    struct ferr *err);

/* Find a host by name; NULL name means the default host. */
const struct cli_host *cli_host_find(const struct cli_config *cfg,
				     const char *name, struct ferr *err);

struct client {
	const struct cli_config *cfg;
	SSL_CTX *ctx;
	unsigned timeout_s;
};

/* Create a client with the config's credentials (and its revocation
 * list: a host whose certificate it revokes is refused). */
int client_init(struct client *c, const struct cli_config *cfg,
		unsigned timeout_s, struct ferr *err);
void client_free(struct client *c);

/* One HTTPS request to host: method, path (with query), body (may be
 * NULL). On a reply, returns 0 with *status and *reply (the parsed JSON
 * object). A connection, TLS or protocol failure is -1 with FERR_UNAVAILABLE
 * or FERR_TIMEOUT. */
int client_request(struct client *c, const struct cli_host *host,
		   const char *method, const char *path, const json_t *body,
		   int *status, json_t **reply, struct ferr *err);

/* Like client_request, but a non-2xx status becomes -1 with *err from the
 * reply's error object. On success *reply is the object. */
int client_call(struct client *c, const struct cli_host *host,
		const char *method, const char *path, const json_t *body,
		json_t **reply, struct ferr *err);

/* client_call to a host whose certificate must also name it, giving the
 * connection's attestation exporter (TLS_EXPORTER_LEN bytes) in exporter
 * (may be NULL): for `ferry host attest` and `enroll`. */
int client_call_bound(struct client *c, const struct cli_host *host,
		      const char *method, const char *path,
		      const json_t *body, json_t **reply,
		      unsigned char *exporter, struct ferr *err);

/* The host's audit public key (GET /v1/audit/key) as an EVP_PKEY the
 * caller frees; NULL with FERR_UNAVAILABLE if it sent none usable. */
EVP_PKEY *client_audit_key(struct client *c, const struct cli_host *host,
			   struct ferr *err);

/* ---- output.c ---- */

/* Print a one-line error to stderr and return the exit code for it. */
int cli_fail(const struct ferr *err);

/* Map an error to an exit code. */
int cli_exit_code(const struct ferr *err);

/* Print obj as JSON (one line) to stdout. */
void print_json(const json_t *obj);

/* Print the fields of obj as aligned "key: value" lines. */
void print_kv(const json_t *obj, const char *const *keys);

/* Print an array of objects as a table with the given columns. */
void print_table(const json_t *arr, const char *const *cols,
		 const char *const *headers);

/* Human size from MiB, e.g. "512M" or "2.0G". */
void fmt_mib(uint64_t mib, char *out, size_t len);

/* ---- commands: argv after the group word ---- */
int cmd_host(const struct cli_opts *o, int argc, char **argv);
int cmd_vm(const struct cli_opts *o, int argc, char **argv);
int cmd_pki(const struct cli_opts *o, int argc, char **argv);
int cmd_migrate(const struct cli_opts *o, int argc, char **argv);
int cmd_audit(const struct cli_opts *o, int argc, char **argv);
int cmd_balance(const struct cli_opts *o, int argc, char **argv);
int cmd_ui(const struct cli_opts *o, int argc, char **argv);
int cmd_complete(const struct cli_opts *o, int argc, char **argv);
int cmd_ha(const struct cli_opts *o, int argc, char **argv);

/* `ferry host drain|undrain HOST` (verb "drain" or "undrain"). */
int cmd_host_drain(const struct cli_opts *o, const char *verb,
		   const char *host);
int cmd_policy(const struct cli_opts *o, int argc, char **argv);

/* `ferry host enroll|attest|reseal` (cmd_attest.c); argv[0] is the verb. */
int cmd_host_attest(const struct cli_opts *o, int argc, char **argv);

/* `ferry vm sign FILE --dir PKI` (cmd_attest.c): the definition with its
 * constraints signed by the attestation authority, on stdout. */
int cmd_vm_sign(const struct cli_opts *o, const char *file);

/* cmd_firewall.c: `ferry vm firewall show|set|clear NAME`. */
int cmd_vm_firewall(const struct cli_opts *o, int argc, char **argv);

/* Print GET /v1/vms/NAME/firewall's answer: the rules with their
 * counters. */
void print_firewall(const json_t *fw);

/* Read a JSON file ("-" is stdin) as a JSON object (at most
 * FERRY_JSON_DEPTH_MAX deep). */
json_t *cli_read_json(const char *path, struct ferr *err);

/* ---- opts.c: options and connection set-up shared by every command ---- */

/* Parse the options in argv (getopt_long, any order) into *o. Returns -1
 * to go on (optind then indexes the command word), or an exit code: 0 after
 * --help or --version, EXIT_USAGE after a bad option (printed). usage
 * prints the top-level usage. */
int cli_parse_opts(int argc, char **argv, struct cli_opts *o,
		   void (*usage)(FILE *));

/* Print every option of the table, with a placeholder for its value
 * (--help ends with it, so the list is complete by construction; the man
 * page describes each, and a test checks it names every one). */
void cli_usage_options(FILE *f);

/* Shared by commands: load config, pick the host, init a client. */
int cli_connect(const struct cli_opts *o, struct cli_config *cfg,
		const struct cli_host **host, struct client *c,
		struct ferr *err);

/* Refuse options outside allowed (global options are always allowed):
 * prints the first one and returns EXIT_USAGE, else 0. */
int cli_check_opts(const struct cli_opts *o, uint64_t allowed,
		   const char *cmd);

#endif
