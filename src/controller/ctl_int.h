/* ctl_int.h - what the controller's files share (not for other
 * components): the controller's state, the cluster state store, leader
 * election, the poller, load report parsing and the round.
 *
 * Threads:
 *   - the controller thread (ctl_main in controller.c) runs the rounds; it
 *     owns the host table, the decision code's model, the poll loop
 *     (c->base) and everything in "round state" below;
 *   - the lease thread (leader.c, with etcd only) keeps the lease alive and
 *     campaigns; it owns struct ctl_lead under lead.lock;
 *   - etcd's watch threads feed the store's cache (store.c) under
 *     store.lock;
 *   - ferryd's loop and worker threads call the API (api.c): they read
 *     c->view and the store's cache under their locks and write through
 *     the store; they never touch round state.
 * Lock order: c->lock, then lead.lock or store.lock (never both).
 */
#ifndef FERRY_CTL_INT_H
#define FERRY_CTL_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "balancer.h"
#include "common.h"
#include "config.h"
#include "controller.h"
#include "etcd.h"
#include "httpc.h"

#define CTL_HOSTS_FILE_MAX (16 * 1024 * 1024) /* balancer.hosts_file */
#define CTL_HOST_VMS_MAX 4096      /* VMs one load report may list */
#define CTL_CONNECTS_MAX 256       /* new TLS connections at once */
#define CTL_MOVES_KEPT 4096        /* move records kept in the store */
#define CTL_DRAINS_MAX 1024        /* drains at once */
#define CTL_PLAN_JSON_MAX (512 * 1024) /* the plan as stored */
#define CTL_LEAD_MARGIN_MS 1000    /* a leader stops acting this long
				      before its lease could have expired */
#define CTL_STORE_RETRY_MS 1000
/* ferryd closes a connection idle for its limits.deadline_s (10 s by
 * default) and counts that as a refusal: with rounds this far apart the
 * controller closes its connections after each round instead */
#define CTL_KEEP_INTERVAL_MAX_S 8

enum ctl_mode { CTL_MODE_OFF, CTL_MODE_RECOMMEND, CTL_MODE_AUTO };
extern const char *const ctl_mode_names[3];
int ctl_mode_parse(const char *s); /* -1 when not a mode */

/* ---- keys of the cluster state (docs/etcd.md, docs/balancer.md) ---- */
#define CTL_KEY_LEADER "controller/leader"
#define CTL_KEY_MODE "cluster/mode"
#define CTL_KEY_PARAMS "cluster/params"
#define CTL_KEY_PLAN "cluster/plan"
#define CTL_KEY_DRAINS "cluster/drains/" /* + host */
#define CTL_KEY_MOVES "cluster/moves/"   /* + vm */
#define CTL_KEY_CLUSTER "cluster/"

/* ---- one host's load report, checked (report.c) ---- */

enum ctl_vm_state { CTL_VM_RUNNING, CTL_VM_PAUSED, CTL_VM_INCOMING,
		    CTL_VM_OTHER };

struct ctl_vm_report {
	char name[FERRY_NAME_MAX + 1];
	enum ctl_vm_state state;
	bool has_cpu;          /* cpu_cores was measured */
	double cpu;
	uint64_t mem_mib;
	double dirty_mibps;    /* 0: unknown */
	bool migrating;
	struct label labels[FERRY_VM_LABELS_MAX];
	unsigned nlabels;
};

struct ctl_report {
	double cores;
	uint64_t mem_mib;
	uint64_t mem_committed_mib;
	bool draining;
	struct ctl_vm_report *vms;
	size_t nvms;
	size_t skipped;        /* entries that broke the contract */
	char first_skip[160];  /* why the first one was skipped */
};

/* Check a GET /v1/load reply of host (hostile input) into *out (caller
 * frees with ctl_report_clear). Host fields out of range are FERR_INVALID
 * naming the field; a VM entry that breaks the contract is skipped and
 * counted, the others are kept. */
int ctl_report_parse(const json_t *load, const char *host,
		     struct ctl_report *out, struct ferr *err);
void ctl_report_clear(struct ctl_report *r);

/* ---- the controller ---- */

struct ctl_host {
	char name[FERRY_NAME_MAX + 1];
	char address[64];
	uint16_t port;
	struct httpc_conn *conn;  /* kept open between rounds */
	void *kept_req;           /* the request running on conn */
	bool connected;           /* conn answered its last request */
	bool up;                  /* answered this round */
	bool draining;            /* as it reported */
	double cores;
	uint64_t mem_mib, mem_committed_mib;
	uint32_t nvms;            /* VMs it lists, incoming copies excepted */
	int64_t fenced;           /* the token it acknowledged */
	char error[200];          /* why it is not up */
};

/* A VM's CPU window and labels; `user` of its struct bal_vm. */
struct ctl_vm {
	char name[FERRY_NAME_MAX + 1];
	uint64_t seen_round;
	bool kept;                /* marked while pruning */
	unsigned n, pos, cap;
	struct label *labels;
	unsigned nlabels;
	float samples[];          /* cap = the window */
};

/* A migration this controller (or the leader before it) started. */
struct ctl_move {
	char vm[FERRY_NAME_MAX + 1];
	char from[FERRY_NAME_MAX + 1];
	char to[FERRY_NAME_MAX + 1];
	char id[FERRY_NAME_MAX + 1]; /* "" until the source answered */
	uint64_t started_ms;      /* wall clock */
	int64_t token;
	bool drain;
	bool seen;                /* the model had it in flight */
	bool asking;              /* a GET of its record is running */
	char outcome[16];         /* "" while running */
	char error[200];
};

/* What the API shows of a host (a copy made each round). */
struct ctl_host_view {
	const char *name;         /* into the host table (never freed) */
	bool up, draining;
	double load, cpu, cores;
	uint64_t mem_mib, mem_committed_mib;
	uint32_t nvms;
	unsigned hot_rounds;
	char error[200];
};

struct ctl_lead {
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop, wake;
	int64_t lease, ttl_s;
	bool leader;
	int64_t token;            /* create_revision of our leader key */
	uint64_t valid_until;     /* now_ms(): act only before this */
	uint64_t since_ms;        /* wall clock, leader since */
	json_t *holder;           /* the leader key's value, or NULL */
	struct etcd_watch *watch;
	bool watch_lost;
	unsigned elections;       /* times this controller won */
};

struct ctl_store {
	pthread_mutex_t lock;
	json_t *kv;               /* key -> {"v": value, "m": mod, "c": create} */
	int64_t local_rev;        /* local backend's revision counter */
	struct etcd_watch *watch;
	bool lost;                /* the watch ended: read again */
	bool loaded;
	char mode_path[FERRY_PATH_MAX]; /* local backend: the mode survives */
};

struct controller {
	const struct ferryd_config *cfg;
	struct audit *audit;
	char identity[FERRY_NAME_MAX + 1];
	SSL_CTX *ctx;
	struct etcd *etcd;        /* NULL: no etcd, this controller is alone */
	struct ctl_store store;
	struct ctl_lead lead;
	/* configuration */
	struct ctl_host *hosts;
	size_t nhosts;
	json_t *host_index;       /* name -> index */
	enum ctl_mode mode_default;
	unsigned interval_s;
	unsigned window;
	unsigned poll_timeout_s;
	struct bal_params params_default;
	struct policy *policy;
	char policy_path[FERRY_PATH_MAX];
	struct timespec policy_mtime;
	pthread_t thread;
	bool thread_started;
	/* round state (controller thread only) */
	struct event_base *base;
	struct bal_cluster *bal;
	struct bal_params params;
	struct ctl_vm **vms;
	size_t nvms, capvms;
	struct ctl_move *moves;   /* sorted by vm */
	size_t nmoves, capmoves;
	bool leading;             /* rounds run (the leader, or alone) */
	int64_t token;            /* leadership we act under (0: none) */
	bool deposed;             /* a host or etcd said a newer leader is */
	uint64_t round;
	uint64_t phase;           /* requests sent since the last ctl_wait */
	unsigned phase_pending;   /* ... still running */
	unsigned connecting;      /* ... of them on a new connection */
	size_t next_poll;         /* next host to ask this round */
	bool polling;             /* reports go to the model */
	enum ctl_mode mode;
	json_t *drains;           /* the round's drains {host: {"v", "m"}} */
	json_t *notes;            /* the round's drain notes {host: {"moved",
				     "blocked"}} */
	json_t *history;          /* ended moves to seed the model with */
	json_t *plan_stored;      /* what we last wrote to CTL_KEY_PLAN */
	/* shared with the API (lock) */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop, wake;
	struct ctl_host_view *view;
	size_t nview;
	json_t *status;           /* the round's figures, without hosts */
	uint64_t moves_total;
};

/* ---- helpers (controller.c) ---- */
void ctl_audit(struct controller *c, const char *actor, const char *action,
	       const char *target, const char *outcome, json_t *detail);
struct ctl_host *ctl_host_find(struct controller *c, const char *name);
void ctl_wake(struct controller *c);
/* The balancer's policy callback: the cluster policy must let us move the
 * VM out of `from` to `to`, and `to` accept it. */
bool ctl_policy_allows(void *arg, const struct bal_vm *vm,
		       const struct bal_host *from, const struct bal_host *to,
		       char *why, size_t len);

/* ---- configuration (conf.c) ---- */
int ctl_conf_parse(struct controller *c, const json_t *conf,
		   struct ferr *err);

/* ---- the cluster state (store.c) ----
 * A mirror of the keys under CTL_KEY_CLUSTER, kept by a watch (etcd), or
 * the only copy (no etcd; the mode survives in STATE_DIR/balancer.mode). */
int ctl_store_open(struct controller *c, struct ferr *err);
void ctl_store_close(struct controller *c);
/* Read everything again and restart the watch (after it was lost). */
int ctl_store_reload(struct controller *c, struct ferr *err);
/* A copy of key's value (NULL when absent); *mod (may be NULL) gets its
 * mod_revision (0 when absent). */
json_t *ctl_store_get(struct controller *c, const char *key, int64_t *mod);
/* {relative key: {"v": value, "m": mod}} of every key under prefix. */
json_t *ctl_store_list(struct controller *c, const char *prefix);

struct ctl_store_op {
	const char *key;
	json_t *value;           /* borrowed; NULL deletes the key */
	int64_t expect_mod;      /* -1: any; 0: must be absent; else equal */
};
/* Apply ops atomically. fenced: only while c->token is the leader key's
 * create_revision (a deposed leader's write fails and sets c->deposed).
 * FERR_CONFLICT when a compare failed (nothing was written). Blocks on
 * etcd: the controller thread and worker threads only. */
int ctl_store_write(struct controller *c, const struct ctl_store_op *ops,
		    size_t n, bool fenced, struct ferr *err);

/* ---- leader election (leader.c) ---- */
int ctl_lead_start(struct controller *c, struct ferr *err);
void ctl_lead_stop(struct controller *c);
/* Are we the leader, and may act now? *token gets the fencing token
 * (without etcd: always the leader, token 0). */
bool ctl_lead_valid(struct controller *c, int64_t *token);
/* Something said a newer leader exists: check with etcd now. */
void ctl_lead_recheck(struct controller *c);
/* The leader as etcd names it (a copy), for the API. */
json_t *ctl_lead_json(struct controller *c);

/* ---- requests to hosts (poll.c), controller thread ---- */
typedef void (*ctl_reply_fn)(struct controller *c, struct ctl_host *h,
			     int status, json_t *reply,
			     const struct ferr *err, void *arg);
/* Send a request to h (on its kept connection when idle, else on a new
 * one); fn runs from ctl_wait. */
int ctl_send(struct controller *c, struct ctl_host *h, const char *method,
	     const char *path, const json_t *body, ctl_reply_fn fn,
	     void *arg, struct ferr *err);
/* Run the loop until every request sent since the last ctl_wait ended
 * (those of earlier waits may still run: their answers come later), or
 * deadline (now_ms()). */
void ctl_wait(struct controller *c, uint64_t deadline);
/* Ask every host for its load (announcing our token first where it is
 * new), feeding each report to the model as it arrives, until all
 * answered or the poll timeout passed. */
void ctl_poll(struct controller *c);
/* Close every kept connection (forget_tokens: and which hosts have
 * acknowledged our token, when leadership ends). */
void ctl_poll_close(struct controller *c, bool forget_tokens);

/* ---- the round (round.c, moves.c, drains.c), controller thread ---- */
void ctl_round(struct controller *c);
void ctl_round_reset(struct controller *c);
/* A host's report, fed to the model while polling. */
void ctl_feed(struct controller *c, struct ctl_host *h,
	      const struct ctl_report *r);
struct ctl_move *ctl_move_find(struct controller *c, const char *vm);
void ctl_moves_load(struct controller *c);
void ctl_moves_follow(struct controller *c, uint64_t now_s);
void ctl_moves_start(struct controller *c, const struct bal_plan *plan,
		     uint64_t now_s);
void ctl_moves_settle(struct controller *c, uint64_t now_s);
void ctl_moves_prune(struct controller *c, uint64_t now_s);
/* Note a move's end (or failure) in the drain of host. */
void ctl_drain_note(struct controller *c, const char *host, bool moved,
		    const char *vm, const char *text);
void ctl_drains_flags(struct controller *c);
void ctl_drains_progress(struct controller *c, const struct bal_plan *plan);

#endif
