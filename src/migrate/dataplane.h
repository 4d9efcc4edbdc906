/* dataplane.h - the data plane's part of the migrate component's internal
 * header (migrate_int.h includes it): HELLO/ACK and the session binding
 * (channel.c), connections and their relay (relay.c), TCP/TLS/unix socket
 * set-up (dataplane.c); the frames of compressed channels are in frame.h.
 * Internal to src/migrate. */
#ifndef FERRY_MIGRATE_DATAPLANE_H
#define FERRY_MIGRATE_DATAPLANE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "common.h"
#include "frame.h"
#include "wire.h"

/* ---- channel.c: HELLO/ACK messages and the session binding ---- */

struct mig_hello {
	uint16_t flags;
	uint16_t channel;
	uint16_t nchan;
	uint8_t session[MIG_SESSION_ID_LEN];
};

/* The value a channel's HELLO and ACK MACs are bound to: the TLS exporter
 * of the connection for (session, channel); for a plaintext channel, an
 * HMAC of (MIG_PLAINTEXT_LABEL, session, channel) under the session key.
 */
int mig_exporter(SSL *ssl, const uint8_t key[MIG_KEY_LEN],
		 const uint8_t sid[MIG_SESSION_ID_LEN], uint16_t channel,
		 uint8_t out[MIG_EXPORTER_LEN], struct ferr *err);

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

/* Encode a context reply (wire.h); reason (may be NULL) is cut to fit. */
void mig_ctx_reply_build(uint8_t out[MIG_CTX_REPLY_LEN], uint16_t status,
			 uint32_t count, uint32_t ms, const char *reason);

/* Decode a context reply: 0 with the flows imported and the import's
 * time, or FERR_UNAVAILABLE with the destination's reason. */
int mig_ctx_reply_parse(const uint8_t in[MIG_CTX_REPLY_LEN], uint32_t *count,
			uint32_t *ms, struct ferr *err);

/* Lowercase hex of len bytes into out (2*len+1). */
void hex_encode(const uint8_t *in, size_t len, char *out);

/* Exactly 2*len lowercase or uppercase hex characters into len bytes. */
int hex_decode(const char *in, uint8_t *out, size_t len);

/* ---- relay.c: one channel's bytes between QEMU and the network ---- */

/* The network end of a channel: TLS (ssl != NULL) or plaintext, and
 * whether it carries frames (a HELLO flag). */
struct mig_conn {
	int fd;
	SSL *ssl;
	enum relay_z z;
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

/* Set up a data-plane TLS connection for the relay, before its handshake:
 * a read buffer of MIG_RELAY_BUF, and kernel TLS when the kernel has it. */
void relay_tls_prepare(SSL *ssl);

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
 * plaintext), send the HELLO for channel (with MIG_FLAG_FRAMES unless z is
 * RELAY_Z_OFF) and check the ACK, the handshake and the ACK within
 * MIG_HANDSHAKE_TIMEOUT_MS. On success *out is a blocking connection ready
 * to relay, out->z = z. */
int dataplane_dial(SSL_CTX *ctx, const char *netns, const char *local_addr,
		   const char *peer_name, const char *addr, uint16_t port,
		   bool plaintext, enum relay_z z,
		   const uint8_t sid[MIG_SESSION_ID_LEN],
		   const uint8_t key[MIG_KEY_LEN], uint16_t channel,
		   uint16_t nchan, struct mig_conn *out, struct ferr *err);

/* dataplane_dial with the HELLO's flags (MIG_FLAG_*) given. */
int dataplane_dial_flags(SSL_CTX *ctx, const char *netns,
			 const char *local_addr, const char *peer_name,
			 const char *addr, uint16_t port, uint16_t flags,
			 enum relay_z z, const uint8_t sid[MIG_SESSION_ID_LEN],
			 const uint8_t key[MIG_KEY_LEN], uint16_t channel,
			 uint16_t nchan, struct mig_conn *out,
			 struct ferr *err);

/* Read (rd) or write exactly len bytes on a connection by deadline
 * (monotonic ms), however slowly the peer goes; what names it in errors. */
int conn_io_deadline(struct mig_conn *c, bool rd, void *buf, size_t len,
		     uint64_t deadline, const char *what, struct ferr *err);

/* Destination: after accept(), run the TLS handshake (unless the first
 * bytes are a plaintext HELLO), refuse a peer without a host certificate
 * (FERR_FORBIDDEN), read the HELLO and report the peer's identity, all
 * within deadline_ms of the call (FERR_TIMEOUT). The caller then looks up
 * the session and answers. */
int dataplane_accept(SSL_CTX *ctx, int fd, unsigned deadline_ms,
		     struct mig_conn *out, uint8_t hello[MIG_HELLO_LEN],
		     char *peer, size_t peer_len, struct ferr *err);

/* Set SO_RCVTIMEO/SO_SNDTIMEO (0 clears them) and TCP_NODELAY. */
void socket_set_timeouts(int fd, unsigned ms);

/* Connect a unix stream socket to path. */
int unix_connect(const char *path, struct ferr *err);

/* Mode of the unix sockets QEMU connects to: the run folder gives them
 * QEMU's group (vm.h, qemu_run_dir_prepare). */
#define MIG_SOCK_MODE 0660

/* Create a listening unix stream socket at path (mode MIG_SOCK_MODE). */
int unix_listen(const char *path, struct ferr *err);

#endif
