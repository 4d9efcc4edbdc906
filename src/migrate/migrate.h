/* migrate.h - secure live migration between ferryd hosts: what the rest of
 * ferryd (the API, main) uses. The component's own files share
 * migrate_int.h; the data plane's wire format is wire.h; the protocol is in
 * docs/migration-protocol.md.
 *
 * Control plane: the source ferryd asks the destination ferryd, over the
 * mutual-TLS API, to prepare (POST /v1/incoming); the destination
 * validates, starts QEMU with `-incoming defer -S`, creates a one-time
 * session (its own random id and key) and answers with them. The source
 * points its QEMU at a local unix socket; ferryd carries every channel over
 * its own TLS connection to the destination's migration port. After the
 * source QEMU completes, the source asks the destination to finish; only
 * when the destination reports the VM committed does the source remove its
 * copy. Both sides journal every migration durably (journal.c) and resolve
 * an interrupted one at start-up with the confirm protocol: a source VM is
 * resumed only on the destination's explicit "never committed".
 *
 * Threads: every function here runs on the loop's thread. Replies that
 * need QEMU, a peer or the disk come later, through a mig_reply_fn.
 */
#ifndef FERRY_MIGRATE_H
#define FERRY_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <jansson.h>

#include "common.h"
#include "config.h"
#include "vm.h"

struct migrator;
struct audit;
struct audit_refusals;
struct guard;
struct policy;
struct worker_pool;
struct attest_ops;

/* What the migrator uses from the rest of ferryd (all borrowed). */
struct migrator_deps {
	struct audit *audit;             /* migration phases and decisions */
	struct audit_refusals *refusals; /* refused data-plane connections */
	struct guard *guard;             /* data-plane connection limits */
	struct policy **policy;          /* the policy in force */
	struct worker_pool *pool;        /* blocking work off the loop */
	const struct attest_ops *attest; /* this host's TPM (NULL: off) */
};

/* A deferred answer: rc 0 with reply (a new reference, taken), or -1 with
 * err. Runs on the loop exactly once. */
typedef void (*mig_reply_fn)(void *ctx, int rc, json_t *reply,
			     const struct ferr *err);

/* Create the migrator: TLS contexts for peers and for the data plane, the
 * data-plane listener on cfg's migration port, the history, the journal.
 * Then recover: every journalled migration and every VM QEMU left in a
 * migration state is resolved or handed to the background resolver
 * (docs/migration-protocol.md, "Recovery"). Call before the API listens;
 * it may block (with deadlines) on peers. */
int migrator_new(const struct ferryd_config *cfg, struct event_base *base,
		 struct vmm *vmm, const struct migrator_deps *deps,
		 struct migrator **out, struct ferr *err);

/* Stop: cancel queued and running outgoing migrations (their drivers end
 * within their deadlines), abort incoming sessions, stop the listener.
 * Work this submits to the pool must then be drained before
 * migrator_free. */
void migrator_stop(struct migrator *m);

/* Free (after migrator_stop and a drained pool). NULL is fine. */
void migrator_free(struct migrator *m);

/* API: start migrating vm out, or queue it behind the running ones when
 * migration.max_outgoing are running; *reply (202) is the record. */
int migrator_start(struct migrator *m, struct vm *vm, const json_t *body,
		   const char *requester, json_t **reply, struct ferr *err);

/* API (controllers): POST /v1/host/fence {"fence": N}: a leader announces
 * its fencing token; from then on this host refuses migration requests
 * carrying a lower one (docs/balancer.md, "Fencing"). Refused
 * (FERR_CONFLICT) when N is below the highest seen; kept durably. */
int migrator_fence(struct migrator *m, const json_t *body,
		   const char *requester, json_t **reply, struct ferr *err);

/* API: one migration (active, queued or in the history) by id. */
int migrator_get(struct migrator *m, const char *id, json_t **reply,
		 struct ferr *err);

/* API: every active and queued migration and the history, newest first. */
json_t *migrator_list(struct migrator *m);

/* API: cancel an active or queued outgoing migration. */
int migrator_cancel(struct migrator *m, const char *id, json_t **reply,
		    struct ferr *err);

/* API (peer hosts): prepare an incoming migration. Checks what it can at
 * once (-1: refused, nothing done); otherwise 0 and fn follows. exporter
 * (32 bytes, NULL when unknown) is the TLS exporter of the caller's
 * connection, to which an attestation nonce is bound. */
int migrator_prepare(struct migrator *m, const json_t *body,
		     const char *peer, const unsigned char *exporter,
		     mig_reply_fn fn, void *ctx, struct ferr *err);

/* API (peer hosts): finish an incoming session (resume the VM here,
 * irreversibly), like migrator_prepare. A repeated finish of a committed
 * session answers committed again. */
int migrator_finish(struct migrator *m, const char *id, const json_t *body,
		    const char *peer, mig_reply_fn fn, void *ctx,
		    struct ferr *err);

/* API (peer hosts): the post-copy stream of committed session id broke
 * (QEMU paused the migration): listen again for a new channel (QEMU's
 * migrate-recover) and answer like prepare, with a new session to carry
 * it. Like migrator_prepare. */
int migrator_recover(struct migrator *m, const char *id, const char *peer,
		     mig_reply_fn fn, void *ctx, struct ferr *err);

/* API (peer hosts): the source of committed post-copy session id lost its
 * copy of the VM (its QEMU died, or its own half of the state can no
 * longer be sent). If this host's QEMU still waits for pages (post-copy
 * not complete), the VM cannot go on: it is killed and recorded as
 * crashed here, audited. *reply: {"outcome": "crashed"} or, when the VM
 * already had every page, {"outcome": "whole"} (it runs on). FERR_NOT_FOUND
 * when no such committed migration or running VM is here. Loop. */
int migrator_source_lost(struct migrator *m, const char *id,
			 const char *peer, json_t **reply, struct ferr *err);

/* API (peer hosts): abort an uncommitted session (a committed one is
 * FERR_CONFLICT; body: NULL or {"reason"}, recorded and audited), and
 * say where a session stands: {"id", "vm", "state",
 * "outcome": "committed" | "not_committed" | "pending"}. "not_committed"
 * is final: this host never committed the session and never will. */
int migrator_abort(struct migrator *m, const char *id, const json_t *body,
		   const char *peer, json_t **reply, struct ferr *err);
int migrator_incoming_get(struct migrator *m, const char *id,
			  const char *peer, json_t **reply, struct ferr *err);

/* Add the id of vm's active migration to a VM object. */
void migrator_annotate_vm(struct migrator *m, const struct vm *vm,
			  json_t *obj);

/* TCP connections the data-plane port accepted since the start. */
uint64_t migrator_conns_accepted(struct migrator *m);

/* Outgoing migrations running and queued, and unresolved ones. */
void migrator_counts(struct migrator *m, unsigned *active, unsigned *queued,
		     unsigned *unresolved);

/* ---- streams: the data plane for other components (checkpoint HA) ----
 *
 * A stream session is a standing session on this host's data plane: the
 * same TLS 1.3 with host certificates, HELLO/ACK bound to the session key
 * and the connection's exporter, the same refusals and audit records as a
 * migration channel; but it is never finished, and each authenticated
 * connection is handed to a callback instead of a QEMU socket. The source
 * may connect again after a connection ends. Used by src/ha to send
 * checkpoints to the backup (docs/ha.md). Thread-safe: any thread. */
#define MIG_STREAM_ID_HEX_LEN 32 /* a session id in hex */
#define MIG_STREAM_KEY_LEN 32

struct mig_stream;

/* Runs on the connection's own thread with the stream (ACK already sent);
 * the stream is closed after it returns. */
typedef void (*mig_stream_fn)(void *ctx, struct mig_stream *st);

/* Destination: open a stream session that accepts connections from host
 * `source` only. id (hex) and key go to the source through the API; *port
 * is the data plane's advertised port and data_addr its address. */
int migrator_stream_listen(struct migrator *m, const char *source,
			   mig_stream_fn fn, void *ctx,
			   char id[MIG_STREAM_ID_HEX_LEN + 1],
			   uint8_t key[MIG_STREAM_KEY_LEN], char *data_addr,
			   size_t addr_len, uint16_t *port, struct ferr *err);

/* Destination: end the session id; its connections are shut, so their
 * callbacks return soon (a callback may be running still). */
void migrator_stream_unlisten(struct migrator *m, const char *id);

/* Source: connect to `peer` (its identity) at addr:port for session id
 * with key (hex id, binary key). On success *out is the stream. */
int migrator_stream_dial(struct migrator *m, const char *peer,
			 const char *addr, uint16_t port, const char *id,
			 const uint8_t key[MIG_STREAM_KEY_LEN],
			 struct mig_stream **out, struct ferr *err);

/* Read / write exactly len bytes, each wait bounded by the stream's
 * timeout (mig_stream_set_timeout; 0: none). A TLS record that fails
 * authentication, a reset or an early end is an error. */
int mig_stream_read(struct mig_stream *st, void *buf, size_t len,
		    struct ferr *err);
int mig_stream_write(struct mig_stream *st, const void *buf, size_t len,
		     struct ferr *err);
void mig_stream_set_timeout(struct mig_stream *st, unsigned ms);

/* Source: close a dialed stream (clean: TLS close_notify) and free it. */
void mig_stream_close(struct mig_stream *st, bool clean);

/* ---- figures for /v1/metrics (stats.c) ---- */

enum mig_stat_role { MIG_STAT_SOURCE, MIG_STAT_DEST, MIG_STAT_ROLES };
enum mig_stat_outcome {
	MIG_STAT_COMPLETED,
	MIG_STAT_FAILED,
	MIG_STAT_CANCELLED,
	MIG_STAT_OUTCOMES
};

/* The histograms' finite buckets: upper bounds in seconds. */
#define MIG_STAT_BUCKETS 11
#define MIG_STAT_DURATION_BOUNDS \
	{ 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800 }
#define MIG_STAT_DOWNTIME_BOUNDS \
	{ 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10 }

/* A histogram: observations per bucket (not cumulative; the last one is
 * above every bound) and their sum in ms. */
struct mig_stat_hist {
	uint64_t counts[MIG_STAT_BUCKETS + 1];
	uint64_t sum_ms;
};

/* What this host's migrations did since ferryd started. Counted once per
 * finished record (the history's), on both roles; recovered records count
 * in `ended` only (their durations span the restart). */
struct mig_stats {
	uint64_t ended[MIG_STAT_ROLES][MIG_STAT_OUTCOMES];
	struct mig_stat_hist duration[MIG_STAT_ROLES]; /* completed ones */
	struct mig_stat_hist downtime;   /* source, completed: guest pause */
	uint64_t ram_bytes;              /* source: RAM QEMU sent */
	uint64_t wire_bytes[MIG_STAT_ROLES]; /* data-plane TCP payload, both
						directions */
	unsigned active, queued, unresolved; /* outgoing, now */
	unsigned incoming;               /* incoming sessions, now */
};

/* Fill *out (loop thread; memory only, never waits). */
void migrator_stats(struct migrator *m, struct mig_stats *out);

/* ---- attestation of a peer host (docs/attestation.md) ----
 *
 * The checks a migration's source makes of its destination, for other
 * components that hand a VM's state to a peer (checkpoint HA's backup):
 * the same decision, challenge, verification and refusal messages. */
struct mig_attest {
	bool on;                  /* attest the peer */
	json_t *refs;             /* its reference values (from the policy) */
	char scope[128];          /* where they come from, for messages */
	uint8_t challenge[32];    /* ATTEST_CHALLENGE_LEN */
	json_t *answer;           /* the peer's "attestation" */
	uint8_t exporter[32];     /* the request's TLS session */
};

/* Loop: is host `to` attested, as a migration to it would be (the rule
 * that allows it requires it, the VM's constraints do, or ferryd.json's
 * attestation.mode is required)? When so, a->refs and a->scope are its
 * reference values in the policy in force. a is cleared first. */
int migrator_attest_plan(struct migrator *m, bool rule_requires,
			 bool vm_requires, const char *to,
			 struct mig_attest *a, struct ferr *err);

/* Any thread: when a->on, a fresh a->challenge, sent as
 * body {"attest": {"challenge": hex}}. */
int migrator_attest_body(struct mig_attest *a, json_t *body,
			 struct ferr *err);

/* Any thread: check the peer's answer (a->answer {"quote", "quote_ms"},
 * NULL when it sent none) for the nonce of (a->challenge, context,
 * a->exporter): its enrolled AK, the nonce, the event log's replay, the
 * reference values. *report (new reference, always set) says what was
 * checked, with "reason" when refused; -1 with FERR_FORBIDDEN
 * "attestation of HOST refused: <reason>". */
int migrator_attest_verify(struct migrator *m, const struct mig_attest *a,
			   const char *host, const char *context,
			   json_t **report, struct ferr *err);

void migrator_attest_clear(struct mig_attest *a);

/* Peer, any thread: a request's "attest" {"challenge"} (what names it in
 * messages): the nonce for context over the TLS session whose exporter is
 * given (NULL when none). FERR_CONFLICT when this host cannot quote. */
int migrator_attest_request(struct migrator *m, const json_t *req,
			    const char *what, const char *context,
			    const uint8_t *exporter, uint8_t nonce[32],
			    struct ferr *err);

/* Peer, worker (the TPM is slow): quote nonce: *attestation = {"quote",
 * "quote_ms"}. Only after migrator_attest_request succeeded. */
int migrator_attest_quote(struct migrator *m, const uint8_t nonce[32],
			  json_t **attestation, struct ferr *err);

#endif
