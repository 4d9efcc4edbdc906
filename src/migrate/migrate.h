/* migrate.h - secure live migration between ferryd hosts.
 *
 * Control plane (docs/migration-protocol.md): the source ferryd asks the
 * destination ferryd, over the mutual-TLS API, to prepare (POST
 * /v1/incoming); the destination validates, starts QEMU with
 * `-incoming defer -S` listening on a local unix socket, creates a one-time
 * session (random id and key) and answers with them. The source points its
 * QEMU at a local unix socket of its own; ferryd carries every channel QEMU
 * opens there over its own TLS connection to the destination's migration
 * port (wire.h), where ferryd feeds the destination QEMU's socket. After the
 * source QEMU completes, the source asks the destination to finish (resume
 * the VM there); only when the destination reports the VM running does the
 * source remove its copy. Any failure before that resumes the source VM and
 * aborts the destination's session.
 *
 * Threads: the source side runs one driver thread per migration (it owns a
 * second QMP monitor of the source QEMU and makes blocking calls to the
 * peer) plus one thread per channel; the destination runs one listener
 * thread plus one thread per channel. Everything that touches struct vm or
 * struct vmm runs on the main (event loop) thread.
 */
#ifndef FERRY_MIGRATE_H
#define FERRY_MIGRATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "common.h"
#include "config.h"
#include "vm.h"
#include "wire.h"

#define MIG_ID_HEX_LEN (MIG_SESSION_ID_LEN * 2)

enum mig_mode { MIG_LIVE, MIG_OFFLINE, MIG_POSTCOPY };

/* Options of one outgoing migration, validated (mig_opts_from_json). */
struct mig_opts {
	enum mig_mode mode;
	char to[FERRY_NAME_MAX + 1]; /* destination host name (its identity) */
	char address[64];            /* destination API address */
	uint16_t port;               /* destination API port */
	uint64_t max_downtime_ms;    /* 0: the VM's setting */
	uint64_t bandwidth_mibps;    /* 0: unlimited */
	uint64_t channels;           /* multifd channels; 0: the default */
	uint64_t max_time_s;         /* 0: the VM's setting */
	bool insecure;               /* plaintext data plane (benchmarks) */
};

/* Parse a migrate request body: {"to", "address", "port", "mode",
 * "max_downtime_ms", "bandwidth_mibps", "channels", "max_time_s",
 * "insecure"}. Unknown fields, wrong types and bad values are FERR_INVALID
 * naming the field. */
int mig_opts_from_json(const json_t *body, struct mig_opts *o,
		       struct ferr *err);

const char *mig_mode_name(enum mig_mode m);

/* ---- channel.c: HELLO/ACK messages and the session binding ---- */

struct mig_hello {
	uint16_t flags;
	uint16_t channel;
	uint16_t nchan;
	uint8_t session[MIG_SESSION_ID_LEN];
};

/* The exporter value of a TLS connection for (session, channel); 32 zero
 * bytes when ssl is NULL (plaintext channels). */
int mig_exporter(SSL *ssl, const uint8_t sid[MIG_SESSION_ID_LEN],
		 uint16_t channel, uint8_t out[MIG_EXPORTER_LEN],
		 struct ferr *err);

/* Encode a HELLO with its MAC. */
void mig_hello_build(uint8_t out[MIG_HELLO_LEN], const struct mig_hello *h,
		     const uint8_t key[MIG_KEY_LEN],
		     const uint8_t exporter[MIG_EXPORTER_LEN]);

/* Decode a HELLO's fields and check magic, version, flags, reserved bytes
 * and channel numbers (not the MAC: the key is found by the session id). */
int mig_hello_parse(const uint8_t in[MIG_HELLO_LEN], struct mig_hello *h,
		    struct ferr *err);

/* Is the HELLO's MAC right for key and exporter (constant time)? */
bool mig_hello_mac_ok(const uint8_t in[MIG_HELLO_LEN],
		      const uint8_t key[MIG_KEY_LEN],
		      const uint8_t exporter[MIG_EXPORTER_LEN]);

/* Encode an ACK. A refusal (status != MIG_ACK_OK) carries a zero MAC. */
void mig_ack_build(uint8_t out[MIG_ACK_LEN], uint16_t status,
		   uint16_t channel, const uint8_t key[MIG_KEY_LEN],
		   const uint8_t exporter[MIG_EXPORTER_LEN]);

/* Check an ACK for channel: format, status OK and MAC. */
int mig_ack_check(const uint8_t in[MIG_ACK_LEN], uint16_t channel,
		  const uint8_t key[MIG_KEY_LEN],
		  const uint8_t exporter[MIG_EXPORTER_LEN], struct ferr *err);

/* Lowercase hex of len bytes into out (2*len+1). */
void hex_encode(const uint8_t *in, size_t len, char *out);

/* Exactly 2*len lowercase or uppercase hex characters into len bytes. */
int hex_decode(const char *in, uint8_t *out, size_t len);

/* ---- relay.c: one channel's bytes between QEMU and the network ---- */

/* The network end of a channel: TLS (ssl != NULL) or plaintext. */
struct mig_conn {
	int fd;
	SSL *ssl;
};

/* Byte counts of one session, updated by its relays. */
struct relay_counters {
	_Atomic uint64_t to_remote;   /* application bytes sent to the peer */
	_Atomic uint64_t from_remote; /* application bytes from the peer */
	_Atomic uint64_t wire;        /* TCP payload bytes both ways */
};

/* Read / write exactly len bytes on a blocking connection (its socket
 * timeouts bound the wait). */
int conn_read_full(struct mig_conn *c, void *buf, size_t len,
		   struct ferr *err);
int conn_write_full(struct mig_conn *c, const void *buf, size_t len,
		    struct ferr *err);

/* Close the connection: clean sends TLS close_notify first; otherwise the
 * socket is reset so the peer sees an error, not an end of stream. Adds
 * the connection's TCP byte counts to ctr when not NULL. */
void conn_close(struct mig_conn *c, bool clean, struct relay_counters *ctr);

/* Relay between the local QEMU socket and the network connection in both
 * directions until both are closed (0), an error (-1: a TLS record that
 * fails authentication, a reset, an end of stream without close_notify), or
 * *stop becomes true (-1, FERR_UNAVAILABLE "cancelled"). An end of stream
 * on one side is passed on as a half-close. Both fds are made non-blocking;
 * neither is closed here. */
int relay_run(int local_fd, struct mig_conn *remote, const atomic_bool *stop,
	      struct relay_counters *ctr, struct ferr *err);

/* ---- dataplane.c: TCP and TLS set-up of channels ---- */

/* Source: connect from local_addr (this host's address, or NULL), in
 * network namespace netns (NULL or "": ferryd's own), to the
 * destination's migration port, authenticate it as peer_name (TLS unless
 * plaintext), send the HELLO for channel and check the ACK. On success
 * *out is a blocking connection ready to relay. */
int dataplane_dial(SSL_CTX *ctx, const char *netns, const char *local_addr,
		   const char *peer_name, const char *addr, uint16_t port,
		   bool plaintext,
		   const uint8_t sid[MIG_SESSION_ID_LEN],
		   const uint8_t key[MIG_KEY_LEN], uint16_t channel,
		   uint16_t nchan, struct mig_conn *out, struct ferr *err);

/* Destination: after accept(), run the TLS handshake (unless the first
 * bytes are a plaintext HELLO), read the HELLO and report the peer's
 * identity. The caller then looks up the session and answers. */
int dataplane_accept(SSL_CTX *ctx, int fd, struct mig_conn *out,
		     uint8_t hello[MIG_HELLO_LEN], char *peer, size_t peer_len,
		     struct ferr *err);

/* Set SO_RCVTIMEO/SO_SNDTIMEO (0 clears them) and TCP_NODELAY. */
void socket_set_timeouts(int fd, unsigned ms);

/* Connect a unix stream socket to path. */
int unix_connect(const char *path, struct ferr *err);

/* Create a listening unix stream socket at path (mode 0600). */
int unix_listen(const char *path, struct ferr *err);

/* ---- migrate.c: the host's migrations ---- */

struct migrator;

struct audit;
struct audit_refusals;
struct guard;
struct policy;

/* What the migrator uses from the rest of ferryd (all borrowed). */
struct migrator_deps {
	struct audit *audit;             /* migration phases and decisions */
	struct audit_refusals *refusals; /* refused data-plane connections */
	struct guard *guard;             /* data-plane connection limits */
	struct policy **policy;          /* the policy in force */
};

/* Create the migrator: TLS contexts for peers and for the data plane, the
 * data-plane listener on cfg's migration port, the history file. */
int migrator_new(const struct ferryd_config *cfg, struct event_base *base,
		 struct vmm *vmm, const struct migrator_deps *deps,
		 struct migrator **out, struct ferr *err);

/* Cancel and wait for every migration, stop the listener, free. */
void migrator_free(struct migrator *m);

/* API: start migrating vm out (202 with the record). */
int migrator_start(struct migrator *m, struct vm *vm, const json_t *body,
		   const char *requester, json_t **reply, struct ferr *err);

/* API: one migration (active or in the history) by id. */
int migrator_get(struct migrator *m, const char *id, json_t **reply,
		 struct ferr *err);

/* API: every active migration and the history, newest first. */
json_t *migrator_list(struct migrator *m);

/* API: ask an active outgoing migration to cancel. */
int migrator_cancel(struct migrator *m, const char *id, json_t **reply,
		    struct ferr *err);

/* API (peer): prepare an incoming migration. */
int migrator_prepare(struct migrator *m, const json_t *body,
		     const char *peer, json_t **reply, struct ferr *err);

/* API (peer): finish (resume the VM here), abort or query an incoming
 * session. */
int migrator_finish(struct migrator *m, const char *id, const json_t *body,
		    const char *peer, json_t **reply, struct ferr *err);
int migrator_abort(struct migrator *m, const char *id, const char *peer,
		   json_t **reply, struct ferr *err);
int migrator_incoming_get(struct migrator *m, const char *id,
			  const char *peer, json_t **reply, struct ferr *err);

/* Add the id of vm's active migration to a VM object. */
void migrator_annotate_vm(const struct vm *vm, json_t *obj);

/* ---- internals shared by migrate.c, outgoing.c and incoming.c ---- */

#define MIG_CHANNELS_DEFAULT 2       /* multifd channels */
#define MIG_POLL_INTERVAL_MS 100     /* source: query-migrate period */
#define MIG_DATA_CONNS_MAX 64        /* data-plane channel threads at once */
#define MIG_STALL_MS 15000           /* no progress for this long: cancel */
#define MIG_PEER_TIMEOUT_S 30        /* one control call to the peer */
#define MIG_CONFIRM_TIMEOUT_MS 60000 /* resolve an unanswered finish */
#define MIG_FINISH_WAIT_MS 30000     /* destination: wait for the load */
#define MIG_SESSION_GRACE_S 120      /* destination session lifetime beyond
					max_time_s without a finish */
#define MIG_HISTORY_MAX 200          /* records kept in memory */
#define MIG_HISTORY_FILE_MAX (8 * 1024 * 1024)
#define MIG_UNLIMITED_BW (1ULL << 40) /* "no cap" for max-bandwidth */

/* An outgoing migration. The driver thread owns everything but `rec`
 * (guarded by lock, read by the API) and the fields marked main. */
struct mig {
	struct migrator *m;
	char id[MIG_ID_HEX_LEN + 1];
	uint8_t sid[MIG_SESSION_ID_LEN];
	uint8_t key[MIG_KEY_LEN]; /* from the destination; wiped at the end */
	struct vm_def def;
	struct vm_paths paths;
	struct mig_opts opts;
	char requester[FERRY_NAME_MAX + 1];
	char data_addr[64];
	uint16_t data_port;
	char out_sock[FERRY_SOCK_PATH_MAX + 1];
	unsigned multifd;         /* multifd channels, 0 when off */
	unsigned nchan;           /* connections QEMU opens */
	bool postcopy_cap;
	atomic_bool cancel;       /* set by the API */
	atomic_bool relay_stop;   /* tells channel threads to give up */
	struct relay_counters ctr;
	int listen_fd;
	pthread_t driver;
	pthread_t acceptor;
	bool acceptor_started;
	pthread_t chan_thread[MIG_CHANNELS_MAX];
	unsigned nthreads;
	pthread_mutex_t lock;
	json_t *rec;              /* the record (lock) */
	bool done;                /* driver finished (lock) */
	struct event *done_ev;    /* main: driver -> main loop */
	struct mig *next;         /* main: active list */
};

/* A migration into this host (destination side). */
enum in_state { IN_PREPARED, IN_COMMITTED, IN_ABORTED, IN_FAILED };

struct in_session {
	char id[MIG_ID_HEX_LEN + 1];
	uint8_t sid[MIG_SESSION_ID_LEN];
	uint8_t key[MIG_KEY_LEN];
	char source[FERRY_NAME_MAX + 1]; /* identity that prepared it */
	char vm[FERRY_NAME_MAX + 1];
	char uuid[FERRY_UUID_STR_LEN + 1];
	char in_sock[FERRY_SOCK_PATH_MAX + 1];
	uint16_t nchan;
	bool insecure;
	bool postcopy;
	uint32_t seen;            /* channel indexes accepted (incoming lock) */
	unsigned next_index;      /* next channel to connect to QEMU (lock) */
	enum in_state state;      /* written by main under the lock */
	int fds[2 * MIG_CHANNELS_MAX]; /* live sockets, for abort (lock) */
	unsigned refs;            /* lock */
	atomic_bool stop;
	struct relay_counters ctr;
	uint64_t created_wall_ms;
	struct event *timer;      /* main: lifetime without a finish */
	struct migrator *m;
	struct in_session *next;
};

struct migrator {
	const struct ferryd_config *cfg;
	struct event_base *base;
	struct vmm *vmm;
	struct migrator_deps deps;
	SSL_CTX *server_ctx;      /* ours: data-plane accept */
	SSL_CTX *client_ctx;      /* ours: calls and channels to peers */
	char history_path[FERRY_PATH_MAX];
	json_t *history;          /* main: newest last */
	struct mig *active;       /* main */
	/* destination side */
	pthread_mutex_t lock;     /* sessions, their gates and fds */
	pthread_cond_t cond;
	struct in_session *sessions;
	int listen_fd;
	pthread_t listener;
	bool listener_started;
	atomic_bool stop;
	atomic_int chan_threads;  /* destination channel threads alive */
	/* their sockets, fd + 1 (0: free slot), so that a stop can shut them
	 * and the threads end before m goes (m->lock) */
	int chan_fds[MIG_DATA_CONNS_MAX];
};

/* outgoing.c: run the driver of g (a thread). */
void *mig_driver(void *arg);

/* outgoing.c: set a field of g's record under its lock (steals val). */
void mig_rec_set(struct mig *g, const char *key, json_t *val);

/* incoming.c: start / stop the data-plane listener thread. */
int incoming_listen(struct migrator *m, struct ferr *err);
void incoming_stop(struct migrator *m);

/* incoming.c: a VM's QEMU exited (main thread). */
void incoming_vm_exited(struct migrator *m, struct vm *vm);

/* incoming.c: abort and forget every session (main thread, at exit). */
void incoming_abort_all(struct migrator *m);

/* incoming.c: the session of id (NULL when unknown). Main thread. */
struct in_session *incoming_find(struct migrator *m, const char *id);

/* migrate.c: identity of def's shared-storage files, {"kernel": {"path",
 * "size", "sha256"}, ...}, where sha256 covers the whole file up to
 * MIG_FINGERPRINT_FULL bytes, else its first and last MiB. */
#define MIG_FINGERPRINT_FULL (64ULL * 1024 * 1024)
json_t *mig_files_identity(struct migrator *m, const struct vm_def *def,
			   struct ferr *err);

/* migrate.c: write an audit record, logging (not failing) on error.
 * Thread-safe. detail is stolen. */
void mig_audit(struct migrator *m, const char *actor, const char *action,
	       const char *target, const char *outcome, json_t *detail);

/* migrate.c: append a finished record to the history (main thread). */
void mig_history_add(struct migrator *m, json_t *rec);

#endif
