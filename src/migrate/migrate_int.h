/* migrate_int.h - what the files of the migrate component share. Other
 * components use migrate.h.
 *
 * Files, from the top down:
 *   migrate.c   the migrator: lifecycle, outgoing requests, the queue,
 *               records, audit
 *   recover.c   start-up recovery and the resolver of unresolved
 *               migrations (the confirm protocol)
 *   outgoing.c  the source's driver thread and its record
 *   outchan.c   the source's acceptor and channel threads
 *   converge.c  the escalation of a migration that does not converge
 *   inprepare.c the destination's prepare (loop thread)
 *   incoming.c  the destination's finish / abort (loop thread)
 *   inchan.c    the destination's data-plane listener and channel threads
 *   postcopy.c  recovery of a post-copy migration whose stream broke
 *   peer.c      the source's calls to the destination (blocking, threads)
 *   session.c   the destination's session table and its state machine
 *   journal.c   the durable record of every migration in flight
 *   history.c   finished migrations (migrations.jsonl)
 *   identity.c  identities of shared-storage files
 *   options.c   migrate request options
 *   channel.c   HELLO/ACK and the session binding (wire.h)  \  declared
 *   relay.c     one channel's bytes                          |  in
 *   dataplane.c TCP, TLS and unix socket set-up              /  dataplane.h
 *   frame.c     frames of compressed channels (frame.h)
 *   plan.c      one stream or multifd, frames or not
 *   attest_step.c attestation in prepare, the VM's own constraints
 *   secctx.c    the VM's security context: its rules in prepare, its
 *               tracked flows on the context channel
 */
#ifndef FERRY_MIGRATE_INT_H
#define FERRY_MIGRATE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "dataplane.h"
#include "migrate.h"
#include "wire.h"

#define MIG_ID_HEX_LEN (MIG_SESSION_ID_LEN * 2)

#define MIG_POLL_INTERVAL_MS 100     /* source: query-migrate period */
#define MIG_DATA_CONNS_MAX 64        /* data-plane channel threads at once */
#define MIG_FINISH_WAIT_MS 30000     /* destination: wait for the load */
#define MIG_SESSION_GRACE_S 120      /* destination session lifetime beyond
					max_time_s without a finish */
#define MIG_RESOLVE_MIN_S 1          /* resolver backoff, first retry */
#define MIG_RESOLVE_MAX_S 60         /* resolver backoff, at most */
#define MIG_QUEUE_MAX 64             /* outgoing migrations waiting */
#define MIG_ABORT_RETRY_S 900        /* retry an unconfirmed abort */
#define MIG_DEST_BUSY_RETRY_MS 2000  /* destination at its limit: retry */
#define MIG_UNLIMITED_BW (1ULL << 40) /* "no cap" for max-bandwidth */
#define MIG_STOP_WAIT_MS 10000       /* stop: channel threads to end */

/* ---- options.c ---- */

enum mig_mode { MIG_LIVE, MIG_OFFLINE, MIG_POSTCOPY };

/* Compression of the channels (--compress). */
enum mig_compress {
	MIG_COMPRESS_AUTO, /* frames; the relays compress while link-bound */
	MIG_COMPRESS_ON,   /* frames; every frame that shrinks goes zstd */
	MIG_COMPRESS_OFF,  /* no frames */
};

/* Options of one outgoing migration, validated (mig_opts_from_json). */
struct mig_opts {
	enum mig_mode mode;
	char to[FERRY_NAME_MAX + 1]; /* destination host name (its identity) */
	char address[64];            /* destination API address */
	uint16_t port;               /* destination API port */
	uint64_t max_downtime_ms;    /* 0: the VM's setting */
	uint64_t bandwidth_mibps;    /* 0: unlimited */
	uint64_t channels;           /* 0: chosen; 1: one stream; N: multifd */
	enum mig_compress compress;
	uint64_t max_time_s;         /* 0: the VM's setting */
	bool insecure;               /* plaintext data plane (benchmarks) */
	int64_t fence;               /* a controller's fencing token, 0: none */
};

/* Parse a migrate request body: {"to", "address", "port", "mode",
 * "max_downtime_ms", "bandwidth_mibps", "channels", "max_time_s",
 * "insecure", "compress", "fence"}. Unknown fields, wrong types and bad
 * values are FERR_INVALID naming the field. */
int mig_opts_from_json(const json_t *body, struct mig_opts *o,
		       struct ferr *err);

const char *mig_mode_name(enum mig_mode m);
const char *mig_compress_name(enum mig_compress c);

/* ---- plan.c: one stream or multifd, frames or not ---- */

struct mig_plan_in {
	unsigned host_cpus;  /* online CPUs of the source host */
	unsigned vcpus;      /* the VM's */
	bool postcopy;       /* post-copy enabled: QEMU needs one stream */
	uint64_t channels;   /* the request's: 0 choose, 1 one stream, N */
	enum mig_compress compress;
	bool peer_local;     /* the destination is on this host (loopback) */
};

struct mig_plan {
	unsigned multifd;    /* multifd channels; 0: QEMU's one stream */
	enum relay_z z;      /* the source relays' frames (RELAY_Z_OFF: none) */
	const char *why;     /* the rule that chose multifd, for the record */
};

/* Choose the path (docs/performance.md, "Choosing the path"). Pure. */
void mig_plan_make(const struct mig_plan_in *in, struct mig_plan *out);

/* Is addr (numeric) a loopback address (127/8, ::1, ::ffff:127/104)? */
bool mig_addr_is_loopback(const char *addr);

/* The plan for the migration record. */
json_t *mig_plan_json(const struct mig_plan *p, enum mig_compress c);

/* After a refused prepare: when compression was only chosen
 * automatically and err is an older destination refusing the "compress"
 * field, drop the frames and return true (prepare again); else false. */
bool mig_plan_fallback(struct mig_plan *p, enum mig_compress c,
		       const struct ferr *err);

/* ---- journal.c: the durable record of migrations in flight ----
 *
 * One file per migration, <state>/journal/<role>-<id>.json, written
 * atomically (fsync'd) at each phase that changes what recovery must do
 * (docs/migration-protocol.md, "Journal"). Records are JSON objects with a
 * "version" "MAJOR.MINOR": a newer minor version is read, another major
 * version is refused (and the file kept). Thread-safe: file operations
 * only. */
#define JOURNAL_VERSION_MAJOR 1
#define JOURNAL_VERSION_MINOR 0
#define JOURNAL_FILE_MAX (64 * 1024)
#define JOURNAL_RECORDS_MAX 4096     /* files read at start-up */
#define JOURNAL_KEEP_MS (14ULL * 24 * 3600 * 1000) /* terminal records */

enum journal_role { JOURNAL_SOURCE, JOURNAL_DEST };

/* The journal folder under state_dir into dir (created). */
int journal_init(const char *state_dir, char *dir, size_t len,
		 struct ferr *err);

/* Write rec (stamped with the version) as the record of (role, id). */
int journal_write(const char *dir, enum journal_role role, const char *id,
		  json_t *rec, struct ferr *err);

/* Remove the record of (role, id); a missing one is fine. */
int journal_remove(const char *dir, enum journal_role role, const char *id,
		   struct ferr *err);

/* The record of (role, id), or NULL (FERR_NOT_FOUND when there is none;
 * FERR_INVALID for a broken or foreign-version one). */
json_t *journal_read(const char *dir, enum journal_role role, const char *id,
		     struct ferr *err);

/* Every readable record, {"source": [...], "destination": [...]}; broken
 * ones are logged and left in place. Terminal destination records older
 * than JOURNAL_KEEP_MS are removed on the way. */
json_t *journal_load(const char *dir, struct ferr *err);

/* Check a record read from disk: an object whose "version" has our major
 * version and whose "id" is 32 hex digits. */
int journal_check(const json_t *rec, struct ferr *err);

/* ---- peer.c: the source's calls to the destination ----
 * Blocking, with deadlines: driver and worker threads only. */

struct peer_target {
	char name[FERRY_NAME_MAX + 1]; /* its identity */
	char address[64];
	uint16_t port;
};

/* Where an incoming session stands, as the destination says. */
enum peer_outcome {
	PEER_COMMITTED,     /* the VM is the destination's */
	PEER_NOT_COMMITTED, /* explicit and final: never committed */
	PEER_PENDING,       /* prepared, not finished: finish or abort it */
	PEER_UNKNOWN,       /* no usable answer (unreachable, 4xx, 5xx) */
};

const char *peer_outcome_name(enum peer_outcome o);

/* What prepare answers. */
struct peer_session {
	char id[MIG_ID_HEX_LEN + 1];     /* the destination's session id */
	uint8_t key[MIG_KEY_LEN];        /* wiped by the caller */
	char data_addr[64];
	uint16_t data_port;
	json_t *attestation;             /* its "attestation" (a reference,
					    the caller's), or NULL */
	uint8_t exporter[MIG_EXPORTER_LEN]; /* of the prepare's TLS session */
};

/* POST /v1/incoming. FERR_RATE when the destination is at its limit. */
int peer_prepare(struct migrator *m, const struct peer_target *t,
		 const json_t *body, struct peer_session *out,
		 struct ferr *err);

/* POST /v1/incoming/ID/finish: PEER_COMMITTED on success, else
 * PEER_UNKNOWN (ask peer_query). */
enum peer_outcome peer_finish(struct migrator *m, const struct peer_target *t,
			      const char *session, bool resume,
			      struct ferr *err);

/* GET /v1/incoming/ID: the destination's explicit outcome, or
 * PEER_UNKNOWN for anything else. */
enum peer_outcome peer_query(struct migrator *m, const struct peer_target *t,
			     const char *session, struct ferr *err);

/* POST /v1/incoming/ID/recover: a new session to carry a post-copy
 * stream again (postcopy.c). FERR_NOT_FOUND or FERR_FORBIDDEN when the
 * destination cannot (the VM is gone there). */
int peer_recover(struct migrator *m, const struct peer_target *t,
		 const char *session, struct peer_session *out,
		 struct ferr *err);

/* POST /v1/incoming/ID/abort, with {"reason"} when reason is not NULL
 * (the destination records and audits it). 0 when the destination aborted
 * it or never had it. */
int peer_abort(struct migrator *m, const struct peer_target *t,
	       const char *session, const char *reason, struct ferr *err);

/* POST /v1/incoming/ID/lost: tell the destination that this host's half
 * of post-copy session's VM is gone (migrator_source_lost). 0 when the
 * destination acted on it or no longer has the VM. */
int peer_lost(struct migrator *m, const struct peer_target *t,
	      const char *session, struct ferr *err);

/* Drive a session to an outcome after a switchover: finish it while it is
 * pending, until committed, explicitly not committed, or deadline_ms
 * passes (PEER_UNKNOWN). *stop (may be NULL) cuts it short. */
enum peer_outcome peer_settle(struct migrator *m, const struct peer_target *t,
			      const char *session, bool resume,
			      uint64_t deadline_ms, const atomic_bool *stop,
			      struct ferr *err);

/* ---- session.c: the destination's sessions ----
 *
 * A session is found by its id (for the API, loop thread) or its binary
 * id (for the data plane, channel threads). Its lifetime is counted: the
 * table holds one reference while the session is live, and every other
 * holder (a channel thread, an operation in flight on the loop) one more;
 * the session is freed with its key wiped when the last goes. States:
 *
 *   PREPARING -> PREPARED -> FINISHING -> COMMITTED
 *        |           |           |
 *        +-----------+-----------+-------> ABORTED / FAILED
 *
 * Ending a session takes it out of the table; an ended session that is not
 * COMMITTED has its channels stopped (a committed post-copy session keeps
 * them: the destination pulls pages over them).
 */
enum in_state {
	IN_PREPARING, /* QEMU starting, not yet receiving */
	IN_PREPARED,  /* receiving channels */
	IN_FINISHING, /* a finish is loading / resuming the VM */
	IN_COMMITTED,
	IN_ABORTED,
	IN_FAILED,
};

const char *in_state_name(enum in_state s);

struct in_session {
	char id[MIG_ID_HEX_LEN + 1];
	uint8_t sid[MIG_SESSION_ID_LEN];
	uint8_t key[MIG_KEY_LEN];
	char migration[MIG_ID_HEX_LEN + 1]; /* the source's migration id */
	char source[FERRY_NAME_MAX + 1];    /* identity that prepared it */
	char requester[FERRY_NAME_MAX + 1];
	char vm[FERRY_NAME_MAX + 1];
	char uuid[FERRY_UUID_STR_LEN + 1];
	char in_sock[FERRY_SOCK_PATH_MAX + 1];
	uint16_t nchan;
	bool insecure;
	bool postcopy;
	bool frames;              /* channels carry frames (zstd) */
	uint32_t seen;            /* channel indexes accepted (lock) */
	unsigned next_index;      /* next channel to connect to QEMU (lock) */
	enum in_state state;      /* written under the lock */
	int fds[2 * MIG_CHANNELS_MAX]; /* live sockets, for a stop (lock) */
	unsigned refs;            /* lock */
	bool in_table;            /* lock */
	atomic_bool stop;
	struct relay_counters ctr;
	uint64_t created_wall_ms;
	uint64_t max_time_s;
	bool committing;          /* loop: QEMU was asked to resume the VM */
	bool recovery;            /* carries a post-copy stream again: ends
				     by a finish, never commits anything */
	bool ctx_on;              /* its VM has a firewall here: a context
				     channel may bring its flows (secctx.c) */
	bool ctx_claimed;         /* that channel came (lock) */
	char ctx_ns[64];          /* the VM's bridge's namespace here */
	struct migrator *m;
	struct event *timer;      /* loop: lifetime without a finish */
	mig_stream_fn stream_fn;  /* a stream session (stream.c): its
				     connections go to stream_fn, not QEMU */
	void *stream_ctx;
	struct in_session *next;  /* the table (lock) */
};

struct session_table {
	pthread_mutex_t lock;
	pthread_cond_t cond;      /* a session changed state or channels */
	struct in_session *head;
	unsigned live;            /* sessions in the table */
};

void session_table_init(struct session_table *t);
void session_table_destroy(struct session_table *t);

/* A new session in state PREPARING with a fresh random id and key,
 * holding one reference for the caller and one for the table, or NULL
 * (err). */
struct in_session *session_new(struct session_table *t, struct ferr *err);

/* The live session with this hex id / binary id, with a reference taken
 * for the caller, or NULL. */
struct in_session *session_get(struct session_table *t, const char *id);
struct in_session *session_get_sid(struct session_table *t,
				   const uint8_t sid[MIG_SESSION_ID_LEN]);

/* Take one more reference on s (the caller holds one already). */
void session_ref(struct session_table *t, struct in_session *s);

/* Drop a reference; the last one frees s (key wiped). */
void session_put(struct session_table *t, struct in_session *s);

/* Move s from one live state to another; -1 (FERR_CONFLICT) when s is
 * not in state from. */
int session_advance(struct session_table *t, struct in_session *s,
		    enum in_state from, enum in_state to, struct ferr *err);

/* End s in a final state (COMMITTED, ABORTED, FAILED): out of the table,
 * channels stopped unless COMMITTED. Returns false (and does nothing) when
 * s had ended already. */
bool session_end(struct session_table *t, struct in_session *s,
		 enum in_state final);

/* Live migration sessions in states PREPARING..FINISHING (stream
 * sessions are not counted). */
unsigned session_count(struct session_table *t);

/* The first live session, with a reference, or NULL (to end them all). */
struct in_session *session_first(struct session_table *t);

/* Channel threads: record / forget a live socket of s, so that ending s
 * wakes its threads (t->lock held). */
void session_fd_track_locked(struct in_session *s, int fd, bool add);

/* ---- history.c: finished migrations (migrations.jsonl) ---- */

#define MIG_HISTORY_MAX 200                   /* records kept in memory */
#define MIG_HISTORY_ROTATE (8 * 1024 * 1024)  /* bytes, then .1 */
#define MIG_HISTORY_TAIL (1024 * 1024)        /* bytes read at start */

struct history {
	char path[FERRY_PATH_MAX];
	json_t *recs;             /* newest last (loop thread) */
};

/* Load the newest records from the tail of path (never the whole file). */
int history_open(struct history *h, const char *state_dir, struct ferr *err);
void history_close(struct history *h);

/* Append a finished record (fsync'd), rotating the file past
 * MIG_HISTORY_ROTATE bytes. Loop thread. */
void history_add(struct history *h, const json_t *rec);

/* The record with this id (a new reference) or NULL. */
json_t *history_find(struct history *h, const char *id);

/* ---- identity.c ---- */

/* Identity of def's shared-storage files, {"kernel": {"path", "size",
 * "sha256"}, ...}, where sha256 covers the whole file up to
 * MIG_FINGERPRINT_FULL bytes, else its first and last MiB. Blocking file
 * I/O: threads only. */
#define MIG_FINGERPRINT_FULL (64ULL * 1024 * 1024)
json_t *mig_files_identity(const char *shared_dir, const struct vm_def *def,
			   struct ferr *err);

/* Compare the source's identities with ours (FERR_CONFLICT naming the
 * first file that differs). */
int mig_files_compare(const json_t *ours, const json_t *theirs,
		      struct ferr *err);

/* ---- the migrator ---- */

/* ---- attest_step.c: attestation in a migration ---- */

struct mig;

/* Source, loop (migrator_start): decide whether to attest g's destination
 * (the allowing rule requires it, the VM's constraints do, or
 * attestation.mode is required) and take its reference values. */
int mig_attest_plan(struct migrator *m, struct mig *g, bool rule_requires,
		    struct ferr *err);

/* Source, driver: add {"attest": {"challenge"}} (fresh) to a prepare body
 * when attesting. */
int mig_attest_body(struct mig *g, json_t *body, struct ferr *err);

/* Source, driver, before any channel: check the destination's answer
 * (g->att.answer: {"quote", "quote_ms"}, NULL when it sent none) for the
 * nonce of (the challenge, g's id, the prepare's TLS exporter): its
 * enrolled AK, the nonce, the log's replay, the reference values. Records
 * it in g's record ("attestation") and audits it; FERR_FORBIDDEN
 * "attestation of HOST refused: <reason>". 0 at once when not attesting. */
int mig_attest_check(struct mig *g, struct ferr *err);

/* Destination, loop: the VM's own constraints against this host (its
 * labels in the policy), the requester's roles, and whether the source
 * asked for attestation. FERR_FORBIDDEN naming the constraint. */
int mig_constraints_check(struct migrator *m, const struct vm_def *def,
			  const char *requester, bool attested,
			  struct ferr *err);

/* Any thread (reads a file): the constraints' signature by the
 * attestation authority (<registrar>/authority.pub). */
int mig_constraints_verify(const char *registrar, const struct vm_def *def,
			   struct ferr *err);

/* Worker: keep the constraints sealed (attest_ops.store) when sealing is
 * on: <state_dir>/attest/constraints-<uuid>.sealed. */
int mig_constraints_store(struct migrator *m, const struct vm_def *def,
			  struct ferr *err);

/* ---- secctx.c: the VM's security context in a migration ---- */

/* Source, driver: add "firewall" (the rules on the VM's tap, its own or
 * the default) to a prepare body (version 1.2) when it has any. */
int mig_ctx_body(struct mig *g, json_t *body, struct ferr *err);

/* Destination, loop: the prepare's "firewall" (NULL when absent) into
 * def->fw, checked against the VM's own rules and this host's policy
 * (audited as a policy decision); s learns whether a context may come. */
int mig_ctx_prepare(struct migrator *m, const json_t *fw, const char *peer,
		    struct vm_def *def, struct in_session *s,
		    struct ferr *err);

/* Source, driver, once the source QEMU completed (the VM is stopped):
 * export the tracked flows of the VM, send them on the context channel
 * and wait until the destination imported them; 0 at once when the VM has
 * no firewall. On failure the migration must fail before its switchover.
 * Records "context" ({flows, skipped, bytes, export_ms, import_ms, ms}). */
int mig_ctx_send(struct mig *g, struct ferr *err);

/* Destination, channel thread: the context channel of s (its HELLO
 * checked): ACK, read the context, import it into the VM's namespace with
 * the VM's tag, answer (audited as migration.context). */
int mig_ctx_receive(struct migrator *m, struct in_session *s,
		    struct mig_conn *c, const uint8_t exporter[MIG_EXPORTER_LEN],
		    struct ferr *err);

enum mig_state {
	MIG_QUEUED,     /* waiting for a free slot (loop) */
	MIG_RUNNING,    /* the driver runs */
	MIG_ENDED,      /* the driver ended; the loop finishes up */
};

/* An outgoing migration. The driver thread owns everything but `rec`
 * (guarded by lock, read by the API) and the fields marked loop. */
struct mig {
	struct migrator *m;
	char id[MIG_ID_HEX_LEN + 1];     /* ours, in records and the API */
	char session[MIG_ID_HEX_LEN + 1]; /* the destination's */
	char rsession[MIG_ID_HEX_LEN + 1]; /* a post-copy recovery's, or "" */
	unsigned recoveries;      /* post-copy recoveries so far */
	bool resume_only;         /* adopted after a restart: only resume its
				     post-copy (recover.c) */
	uint8_t sid[MIG_SESSION_ID_LEN];
	uint8_t key[MIG_KEY_LEN]; /* from the destination; wiped at the end */
	struct vm_def def;
	struct vm_paths paths;
	struct mig_opts opts;
	struct peer_target peer;
	char requester[FERRY_NAME_MAX + 1];
	char data_addr[64];
	uint16_t data_port;
	char out_sock[FERRY_SOCK_PATH_MAX + 1];
	unsigned multifd;         /* multifd channels, 0 when off */
	unsigned nchan;           /* connections QEMU opens */
	struct mig_plan plan;     /* the path (plan.c) */
	bool postcopy_cap;
	bool was_running;         /* the VM ran when the driver started */
	atomic_bool cancel;       /* set by the API */
	atomic_bool relay_stop;   /* tells channel threads to give up */
	struct relay_counters ctr;
	struct mig_attest att;    /* the destination's attestation */
	int listen_fd;
	struct mig_conn ready;    /* channel 0 dialled and authenticated
				     before QEMU connects (a post-copy
				     recovery's), fd -1 when none; taken by
				     its channel thread */
	pthread_t driver;
	pthread_t acceptor;
	bool acceptor_started;
	pthread_t chan_thread[MIG_CHANNELS_MAX];
	unsigned nthreads;
	pthread_mutex_t lock;
	json_t *rec;              /* the record (lock) */
	enum mig_state state;     /* loop */
	bool unresolved;          /* driver's verdict: outcome unknown */
	bool interrupted;         /* driver: ferryd stopped in post-copy; the
				   * journal keeps it for the next start */
	bool split;               /* driver's verdict: post-copy failed after
				   * the switch; the source copy is void */
	bool abort_pending;       /* driver: the destination did not confirm
				     its abort */
	struct event *done_ev;    /* driver -> loop */
	struct mig *next;         /* loop: active and queued lists */
};

/* A migration whose outcome the destination has not told yet: its VM is
 * held paused (state "unresolved"), and the loop keeps asking with
 * backoff. */
struct aborter;

struct unresolved {
	struct migrator *m;
	json_t *jrec;             /* its journal record (loop) */
	char id[MIG_ID_HEX_LEN + 1];
	char vm[FERRY_NAME_MAX + 1];
	char uuid[FERRY_UUID_STR_LEN + 1];
	unsigned backoff_s;
	unsigned attempts;
	bool asking;              /* a query runs on a worker thread */
	enum peer_outcome answer; /* the worker's result */
	struct ferr err;
	struct event *timer;
	struct unresolved *next;
};

/* fence.c: the highest fencing token a controller presented here. */
struct fence {
	int64_t highest;
	char path[FERRY_PATH_MAX];
};

/* Read STATE_DIR/fence (absent: 0). A file that is not a token is
 * FERR_INVALID naming it. */
int fence_load(struct fence *f, const char *state_dir, struct ferr *err);

/* Accept token (>= 1) unless it is below the highest seen (FERR_CONFLICT:
 * a newer controller leads); a higher one is written durably first. Loop
 * thread. */
int fence_check(struct fence *f, int64_t token, struct ferr *err);

struct migrator {
	const struct ferryd_config *cfg;
	struct event_base *base;
	struct vmm *vmm;
	struct migrator_deps deps;
	SSL_CTX *server_ctx;      /* ours: data-plane accept */
	SSL_CTX *client_ctx;      /* ours: calls and channels to peers */
	char journal_dir[FERRY_PATH_MAX];
	struct history history;   /* loop */
	struct fence fence;       /* loop */
	struct mig *active;       /* loop */
	struct mig *queued;       /* loop, oldest first */
	struct unresolved *unresolved; /* loop */
	struct aborter *aborters; /* loop: unconfirmed aborts (recover.c) */
	bool stopping;            /* loop */
	/* destination side */
	struct session_table sessions;
	int listen_fd;
	pthread_t listener;
	bool listener_started;
	atomic_bool stop;
	atomic_int chan_threads;  /* destination channel threads alive */
	_Atomic uint64_t conns_accepted; /* data-plane TCP connections */
	/* their sockets, fd + 1 (0: free slot), so that a stop can shut them
	 * and the threads end before m goes (sessions.lock) */
	int chan_fds[MIG_DATA_CONNS_MAX];
	struct mig_stats stats;   /* loop: stats.c */
};

/* migrate.c: write an audit record, logging (not failing) on error.
 * Thread-safe. detail is stolen. */
void mig_audit(struct migrator *m, const char *actor, const char *action,
	       const char *target, const char *outcome, json_t *detail);

/* outgoing.c: run the driver of g (a thread). */
void *mig_driver(void *arg);

/* outchan.c: listen on g's unix socket and start the acceptor of the
 * g->nchan channels QEMU opens there (each relayed to g's session). */
int channels_start(struct mig *g, struct ferr *err);

/* outchan.c: dial and authenticate channel idx of g's session (TLS,
 * HELLO, ACK; dataplane_dial). */
int mig_dial(struct mig *g, unsigned idx, struct mig_conn *c,
	     struct ferr *err);

/* outchan.c: let the channels end (or stop them), join their threads,
 * remove the socket. */
void channels_finish(struct mig *g);

/* postcopy.c: the post-copy stream of g broke (its QEMU reports
 * postcopy-paused): have the destination listen again, carry a new
 * channel and resume QEMU's migration; retries with backoff until the
 * migrator stops. -1 when the destination cannot take it any more. Driver
 * thread. */
int pc_resume(struct mig *g, struct qmp *q, struct ferr *err);

/* migrate.c: run a driver that only resumes the broken post-copy
 * migration of jrec (a source journal record at phase "postcopy") for vm,
 * after a restart. */
int mig_resume_postcopy(struct migrator *m, struct vm *vm,
			const json_t *jrec, struct ferr *err);

/* outgoing.c: set a field of g's record under its lock (steals val). */
void mig_rec_set(struct mig *g, const char *key, json_t *val);

/* outgoing.c: record the first error of the migration (later ones are
 * consequences), and log it. */
void mig_rec_error(struct mig *g, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* outgoing.c: append a step to the record's escalation log (at_ms since
 * t0), log and audit it. */
void mig_rec_step(struct mig *g, uint64_t t0, const char *step,
		  const char *detail);

/* converge.c: where a migration's escalation stands (the driver sets t0,
 * deadline, max_downtime, downtime and iter_remaining = UINT64_MAX). */
struct converge {
	uint64_t t0, deadline;
	uint64_t max_downtime, downtime;
	unsigned iteration;
	uint64_t iter_remaining; /* remaining at the last new iteration */
	unsigned stuck;
	bool throttled, postcopy, offline;
};

/* converge.c: after a query-migrate result qm, escalate when the
 * iterations stall or the time bound says so (QMP commands on q). *paused
 * is set when the VM was paused (offline). */
int mig_converge_check(struct mig *g, struct qmp *q, struct converge *c,
		       json_t *qm, bool *paused, struct ferr *err);

/* outgoing.c: the source's journal record of g at phase (a new object). */
json_t *mig_journal_rec(struct mig *g, const char *phase);

/* incoming.c: journal the destination's session s at phase (loop). */
int incoming_journal(struct migrator *m, const struct in_session *s,
		     const char *phase, bool resume, struct ferr *err);

/* incoming.c: the session's deadline passed before its finish: abort it
 * (an event callback, arg the session). */
void incoming_session_timeout(evutil_socket_t fd, short what, void *arg);

/* incoming.c: a VM's QEMU exited (loop thread). */
void incoming_vm_exited(struct migrator *m, struct vm *vm);

/* incoming.c: abort every live session (loop thread, at stop). */
void incoming_abort_all(struct migrator *m);

/* inchan.c: start / stop the data-plane listener thread. */
int inchan_listen(struct migrator *m, struct ferr *err);
void inchan_stop(struct migrator *m);

/* recover.c: resolve every journalled migration and every VM QEMU left in
 * a migration state (at start-up, before the API listens). */
void recover_all(struct migrator *m);

/* recover.c: hand a source migration whose outcome is unknown to the
 * resolver: its VM is held paused as "unresolved", and the loop keeps
 * asking the destination (jrec: its journal record, taken). */
void recover_unresolved(struct migrator *m, json_t *jrec);

/* stream.c: serve an authenticated connection of stream session s on this
 * channel thread (the ACK is sent here); returns when the stream ends. */
void stream_serve(struct migrator *m, struct in_session *s,
		  struct mig_conn *c, const uint8_t exporter[MIG_EXPORTER_LEN]);

/* recover.c: abort the destination's session of a source record (a
 * failed migration), retrying with backoff until the destination confirms;
 * journalled: the record stays in the journal ("aborting") until then. */
void recover_abort(struct migrator *m, const json_t *rec, bool journalled);

/* recover.c: stop the resolver (at stop). */
void recover_stop(struct migrator *m);

/* stats.c: count a finished record (the one the history gets) in
 * m->stats. Loop thread. */
void mig_stats_note(struct migrator *m, const json_t *rec);

#endif
