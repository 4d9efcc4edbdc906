/* ha_wire.h - checkpoint HA's wire format and limits (docs/ha.md).
 *
 * A checkpoint travels over one stream connection of the migration data
 * plane (TLS 1.3, host certificates, HELLO/ACK bound to the session key:
 * migrate.h) as a sequence of records. Each record is a fixed 32-byte
 * header, then `len` payload bytes:
 *
 *   BEGIN   arg = the RAM size in bytes; no payload
 *   PAGES   arg = the first page's index; payload = len/HA_PAGE_SIZE pages
 *   DISK    arg = byte offset in the disk; payload = the disk's bytes there
 *           at the checkpoint's instant (only what changed since the last)
 *   DEVICE  payload = QEMU's device state (x-ignore-shared stream)
 *   COMMIT  arg = pages sent; payload = SHA-256 over every payload of the
 *           checkpoint, in order
 *   ACK     backup -> primary: arg = HA_ACK_OK or HA_ACK_REFUSED
 *   HELLO   backup -> primary when a connection opens: arg = the last
 *           complete checkpoint it holds (0: none); seq is 0
 *
 * All records of one checkpoint carry its sequence number. The backup
 * stages a checkpoint apart from the last complete one and applies it
 * only after a COMMIT whose digest matches; a torn or refused checkpoint
 * is dropped and the previous one stays. Fields are little-endian and
 * encoded byte by byte.
 */
#ifndef FERRY_HA_WIRE_H
#define FERRY_HA_WIRE_H

#include <stdint.h>

#include "common.h"

#define HA_MAGIC 0x43414846u /* "FHAC" read as little-endian bytes */
#define HA_VERSION 1u

#define HA_REC_LEN 32
#define HA_REC_OFF_MAGIC 0     /* u32 */
#define HA_REC_OFF_VERSION 4   /* u16 */
#define HA_REC_OFF_TYPE 6      /* u16, HA_REC_* */
#define HA_REC_OFF_SEQ 8       /* u64: the checkpoint's number, from 1 */
#define HA_REC_OFF_ARG 16      /* u64: per type */
#define HA_REC_OFF_LEN 24      /* u32: payload bytes */
#define HA_REC_OFF_RESERVED 28 /* u32, zero */
_Static_assert(HA_REC_OFF_RESERVED + 4 == HA_REC_LEN, "record header");

enum ha_rec_type {
	HA_REC_BEGIN = 1,
	HA_REC_PAGES = 2,
	HA_REC_DEVICE = 3,
	HA_REC_COMMIT = 4,
	HA_REC_ACK = 5,
	HA_REC_HELLO = 6,
	HA_REC_DISK = 7,
};

#define HA_ACK_OK 0u
#define HA_ACK_REFUSED 1u

#define HA_PAGE_SIZE 4096u
#define HA_PAGES_PER_REC 256u                /* 1 MiB of pages a record */
#define HA_DIGEST_LEN 32u                    /* SHA-256 */
#define HA_DEVSTATE_MAX (64u * 1024 * 1024)  /* device state, bytes */
#define HA_RAM_MAX (1ULL << 40)              /* guest RAM, bytes */
#define HA_SECTOR 512u                       /* disk offsets and lengths */
#define HA_DISK_CHUNK (1024u * 1024)         /* a DISK record's payload */
#define HA_DISK_MAX (1ULL << 44)             /* disk size, bytes */
_Static_assert(HA_PAGES_PER_REC * HA_PAGE_SIZE <= HA_DEVSTATE_MAX,
	       "a record's payload fits the u32 length");

struct ha_rec {
	uint16_t type;
	uint64_t seq;
	uint64_t arg;
	uint32_t len;
};

/* ---- the fence agent's control messages (fence.c) ----
 *
 * ferryd -> its fence agent, over a SOCK_SEQPACKET socket pair, one
 * 16-byte message per packet: ARM moves the deadline (CLOCK_MONOTONIC ms,
 * shared by every process of the host) by which another ARM must arrive,
 * else the agent freezes the VM's QEMU; DISARM ends the agent without
 * freezing. An end of the socket (ferryd gone) freezes at once. */
#define HA_FENCE_MAGIC 0x41464846u /* "FHFA" read as little-endian bytes */
#define HA_FENCE_VERSION 1u
#define HA_FENCE_MSG_LEN 16
#define HA_FENCE_OFF_MAGIC 0     /* u32 */
#define HA_FENCE_OFF_VERSION 4   /* u16 */
#define HA_FENCE_OFF_CMD 6       /* u16, HA_FENCE_* */
#define HA_FENCE_OFF_DEADLINE 8  /* u64: monotonic ms (ARM), else 0 */
_Static_assert(HA_FENCE_OFF_DEADLINE + 8 == HA_FENCE_MSG_LEN, "fence msg");

enum ha_fence_cmd {
	HA_FENCE_ARM = 1,
	HA_FENCE_DISARM = 2,
};

/* Encode / decode a fence message. Decoding checks magic, version, the
 * command and a zero deadline for DISARM: -1 with FERR_INVALID. Pure. */
void ha_fence_encode(uint8_t out[HA_FENCE_MSG_LEN], uint16_t cmd,
		     uint64_t deadline_ms);
int ha_fence_decode(const uint8_t in[HA_FENCE_MSG_LEN], uint16_t *cmd,
		    uint64_t *deadline_ms, struct ferr *err);

/* Encode a record header. */
void ha_rec_encode(uint8_t out[HA_REC_LEN], const struct ha_rec *r);

/* Decode a record header and check it: magic, version, a known type,
 * zero reserved bytes, seq >= 1 (HELLO: 0), and a payload length that fits
 * the type
 * (PAGES: 1..HA_PAGES_PER_REC whole pages; DISK: 1..HA_DISK_CHUNK whole
 * sectors at a sector-aligned offset below HA_DISK_MAX; DEVICE: at most
 * HA_DEVSTATE_MAX; COMMIT: HA_DIGEST_LEN; BEGIN and ACK: none). -1 with
 * FERR_INVALID naming the field. Pure. */
int ha_rec_decode(const uint8_t in[HA_REC_LEN], struct ha_rec *r,
		  struct ferr *err);

/* ---- the HA record of a protected VM (record.c, recover.c) ----
 *
 * The primary keeps one JSON file per protected VM,
 * <state_dir>/ha/<uuid>.json, written atomically (file_write_atomic), so
 * that a restarted ferryd knows what it protected (docs/ha.md,
 * "Restarts"):
 *
 *   {"version": 1, "vm": NAME, "uuid": UUID, "requester": NAME,
 *    "backup": HOST or "" (none: the VM failed over to here),
 *    "address": IP, "port": N (the backup's API; "" and 0 without one),
 *    "interval_s": N}
 *
 * Nothing about the lease is kept: the owner key names its holder and its
 * lease, and a restart reads them there. The file is input from disk and
 * is checked as hostile. */
#define HA_RECORD_VERSION 1u
#define HA_RECORD_MAX 4096        /* bytes of one record file */
#define HA_RECORD_ADDR_MAX 63     /* a numeric IPv4 or IPv6 address */
#define HA_RECORD_INTERVAL_MAX 3600

struct ha_record {
	char vm[FERRY_NAME_MAX + 1];
	char uuid[FERRY_UUID_STR_LEN + 1];
	char requester[FERRY_NAME_MAX + 1];
	char backup[FERRY_NAME_MAX + 1];   /* "": no backup */
	char address[HA_RECORD_ADDR_MAX + 1];
	uint16_t port;
	uint32_t interval_s;
};

/* Parse a record file's text (len bytes, need not be NUL-terminated):
 * exactly the fields above, the version HA_RECORD_VERSION, names and the
 * uuid well formed, the address numeric, port and interval in range; a
 * backup needs an address and a port, no backup neither. -1 with
 * FERR_INVALID (FERR_TOO_LARGE above HA_RECORD_MAX) naming the field;
 * *r is then unspecified. Pure. */
int ha_record_parse(const char *text, size_t len, struct ha_record *r,
		    struct ferr *err);

/* The record's text (malloc'd, NUL-terminated, *len without the NUL);
 * -1 when r would not parse back (FERR_INVALID) or out of memory. Pure. */
int ha_record_format(const struct ha_record *r, char **out, size_t *len,
		     struct ferr *err);

#endif
