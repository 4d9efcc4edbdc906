/* wire.h - the migration data plane's wire format and limits.
 *
 * Each QEMU migration channel (main, return path on the main channel,
 * multifd) is carried on its own TCP connection from the source ferryd to
 * the destination ferryd's migration port: TLS 1.3 (AES-256-GCM) with both
 * host certificates, then one HELLO from the source and one ACK from the
 * destination, then the channel's bytes as TLS application data.
 *
 * The HELLO and ACK bind the connection to one migration session: each
 * carries an HMAC-SHA256, keyed with the session's one-time 32-byte key,
 * over the message and a TLS exporter value of this connection, so a
 * connection is only accepted by the session that holds the key, and cannot
 * be replayed on another TLS connection. TLS record sequence numbers reject
 * any replayed, reordered or altered record after that.
 *
 * All fields are little-endian and fixed-width, encoded and decoded byte by
 * byte (never by casting structs). docs/migration-protocol.md describes the
 * whole protocol.
 */
#ifndef FERRY_MIGRATE_WIRE_H
#define FERRY_MIGRATE_WIRE_H

#include <stdint.h>

#define MIG_MAGIC 0x47494d46u /* "FMIG" read as little-endian bytes */
#define MIG_VERSION 1u

#define MIG_SESSION_ID_LEN 16  /* bytes; 32 hex characters in the API */
#define MIG_KEY_LEN 32         /* one-time session key */
#define MIG_MAC_LEN 32         /* HMAC-SHA256 */
#define MIG_EXPORTER_LEN 32
#define MIG_EXPORTER_LABEL "EXPORTER-ferry-migration-channel"
/* plaintext channels: HMAC(key, label || session || channel) instead */
#define MIG_PLAINTEXT_LABEL "ferry-migration-plaintext-channel"

/* HELLO: source -> destination, 64 bytes */
#define MIG_HELLO_LEN 64
#define MIG_HELLO_OFF_MAGIC 0     /* u32 */
#define MIG_HELLO_OFF_VERSION 4   /* u16 */
#define MIG_HELLO_OFF_FLAGS 6     /* u16, MIG_FLAG_* */
#define MIG_HELLO_OFF_SESSION 8   /* u8[16] */
#define MIG_HELLO_OFF_CHANNEL 24  /* u16: index in QEMU's connect order */
#define MIG_HELLO_OFF_NCHAN 26    /* u16: channels in this session */
#define MIG_HELLO_OFF_MAC 28      /* u8[32] over bytes [0, 28) */
#define MIG_HELLO_OFF_RESERVED 60 /* u32, zero */

/* ACK: destination -> source, 48 bytes */
#define MIG_ACK_LEN 48
#define MIG_ACK_OFF_MAGIC 0     /* u32 */
#define MIG_ACK_OFF_VERSION 4   /* u16 */
#define MIG_ACK_OFF_STATUS 6    /* u16, MIG_ACK_* */
#define MIG_ACK_OFF_CHANNEL 8   /* u16, echoes the HELLO */
#define MIG_ACK_OFF_RESERVED 10 /* u16, zero */
#define MIG_ACK_OFF_MAC 12      /* u8[32] over bytes [0, 12) */
#define MIG_ACK_OFF_RESERVED2 44 /* u32, zero */

#define MIG_FLAG_PLAINTEXT 0x0001u /* --insecure: no TLS on this channel */
#define MIG_FLAG_FRAMES 0x0002u    /* S -> D bytes are frames (below) */
#define MIG_FLAG_CONTEXT 0x0004u   /* the VM's security context, not a
				      QEMU channel (below) */
#define MIG_FLAGS_KNOWN \
	(MIG_FLAG_PLAINTEXT | MIG_FLAG_FRAMES | MIG_FLAG_CONTEXT)

#define MIG_ACK_OK 0u
#define MIG_ACK_REFUSED 1u /* unknown session, bad MAC, bad channel */

/* The context channel (HELLO flag MIG_FLAG_CONTEXT, channel 0): when the
 * source QEMU has completed (the VM is stopped), the source opens it, sends
 * one connection-tracking context (src/firewall/ct_wire.h) after the ACK,
 * and the destination answers with a CTX reply once it has imported it,
 * or refused it. One per session. */
#define MIG_CTX_MAGIC 0x52544346u  /* "FCTR" read as little-endian bytes */
#define MIG_CTX_REPLY_LEN 128
#define MIG_CTX_REPLY_OFF_MAGIC 0    /* u32 */
#define MIG_CTX_REPLY_OFF_VERSION 4  /* u16, MIG_VERSION */
#define MIG_CTX_REPLY_OFF_STATUS 6   /* u16, MIG_ACK_OK or MIG_ACK_REFUSED */
#define MIG_CTX_REPLY_OFF_COUNT 8    /* u32: flows imported */
#define MIG_CTX_REPLY_OFF_MS 12      /* u32: the import's time in ms */
#define MIG_CTX_REPLY_OFF_REASON 16  /* char[112]: why refused, NUL-padded */
#define MIG_CTX_REASON_LEN 112
#define MIG_CTX_TIMEOUT_MS 30000     /* the context out, the reply back */

_Static_assert(MIG_CTX_REPLY_OFF_REASON + MIG_CTX_REASON_LEN ==
		       MIG_CTX_REPLY_LEN,
	       "the context reply's fields fill it");

/* MAC domain separation labels */
#define MIG_MAC_LABEL_HELLO "ferry-migration-hello"
#define MIG_MAC_LABEL_ACK "ferry-migration-ack"

/* Limits */
#define MIG_CHANNELS_MAX 16          /* connections per session (1 + multifd) */
#define MIG_MULTIFD_MAX 15
#define MIG_HANDSHAKE_TIMEOUT_MS 10000
#define MIG_ORDER_TIMEOUT_MS 30000   /* wait for the lower channels */
#define MIG_RELAY_BUF (256 * 1024)
#define MIG_POLL_MS 200              /* relay wake-up to check for stop */

/* Frames: a channel whose HELLO has MIG_FLAG_FRAMES (the session was
 * prepared with "compress": "zstd") carries the source QEMU's bytes as a
 * sequence of frames inside TLS; the return direction stays a plain
 * stream. Each frame is a 12-byte header and its payload:
 *
 *   offset size field
 *   0      1    type: MIG_FRAME_RAW (payload = the bytes) or
 *                MIG_FRAME_ZSTD (payload = one zstd frame, level 1, with
 *                its content size, no dictionary)
 *   1      1    flags, 0
 *   2      2    reserved, 0
 *   4      4    payload length
 *   8      4    length of the bytes it stands for (raw length)
 *
 * The receiver refuses a frame whose raw length is 0 or above
 * MIG_FRAME_RAW_MAX, a raw frame whose payload length differs from it, a
 * zstd frame whose payload is not shorter than the raw length or that
 * claims to expand more than MIG_FRAME_RATIO_MAX times, and a zstd payload
 * that is not exactly one zstd frame of exactly that content size, whose
 * window exceeds MIG_FRAME_WINDOW_LOG: one frame never expands beyond
 * MIG_FRAME_RAW_MAX bytes of memory. */
#define MIG_FRAME_HDR_LEN 12
#define MIG_FRAME_OFF_TYPE 0     /* u8 */
#define MIG_FRAME_OFF_FLAGS 1    /* u8, 0 */
#define MIG_FRAME_OFF_RESERVED 2 /* u16, 0 */
#define MIG_FRAME_OFF_LEN 4      /* u32 */
#define MIG_FRAME_OFF_RAW 8      /* u32 */
#define MIG_FRAME_RAW 1u
#define MIG_FRAME_ZSTD 2u
#define MIG_FRAME_RAW_MAX MIG_RELAY_BUF
#define MIG_FRAME_RATIO_MAX 1024     /* raw length / payload length, at most */
#define MIG_FRAME_WINDOW_LOG 18      /* 2^18 = MIG_FRAME_RAW_MAX */
#define MIG_FRAME_ZSTD_LEVEL 1

_Static_assert(MIG_FRAME_OFF_RAW + 4 == MIG_FRAME_HDR_LEN,
	       "frame header fields fill its length");
_Static_assert((1 << MIG_FRAME_WINDOW_LOG) >= MIG_FRAME_RAW_MAX,
	       "a frame's window covers its raw length");

#endif
