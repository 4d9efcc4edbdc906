/* frame.h - the frames of compressed channels (wire.h, "Frames"): the
 * source relay's encoder and its choice to compress, the destination
 * relay's decoder (frame.c). Internal to the migrate component; included
 * by migrate_int.h. */
#ifndef FERRY_MIGRATE_FRAME_H
#define FERRY_MIGRATE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "wire.h"

/* What a relay does with the bytes it carries (wire.h, "Frames"). */
enum relay_z {
	RELAY_Z_OFF,    /* the channel carries the stream as it is */
	RELAY_Z_AUTO,   /* frames; compress while the link is the limit */
	RELAY_Z_ON,     /* frames; compress every frame that shrinks */
	RELAY_Z_DECODE, /* frames from the peer: expand them */
};

/* One window (ZCTL_WINDOW_MS) of a framing relay's sending. */
struct zwin {
	uint64_t wall_us;    /* its length */
	uint64_t blocked_us; /* waiting for the network to take bytes */
	uint64_t busy_us;    /* TCP_INFO: time with data in flight */
	uint64_t rwnd_us;    /* TCP_INFO: ... limited by the receiver */
	uint64_t in_bytes;   /* QEMU bytes framed (frame.c fills these) */
	uint64_t zin, zout;  /* bytes into / out of the compressor */
};

#define ZCTL_WINDOW_MS 100

/* The choice to compress (RELAY_Z_AUTO), as a share of the frames:
 * while the link (not the receiver, not the CPU) limits the channel the
 * share grows, else it shrinks, so the relay compresses as much as keeps
 * the link the limit: on a fast link nothing, on a slow one everything, in
 * between the share where compressing and sending take equally long. Data
 * that does not shrink by a tenth stops it for a while. */
#define ZCTL_LEVELS 8      /* share = level / ZCTL_LEVELS */
struct zctl {
	unsigned level;    /* 0..ZCTL_LEVELS */
	unsigned hold;     /* windows to wait before compressing again */
	unsigned acc;      /* spreads the share over the frames */
};

/* Was the network the limit in w (the relay waited on it for half the
 * window, and the receiver's window held TCP back for at most half its
 * busy time)? */
bool zctl_link_bound(const struct zwin *w);

/* Decide for the next window after w. Pure. */
void zctl_update(struct zctl *c, const struct zwin *w);

/* Compress the next frame? (Advances the spreading.) */
bool zctl_next(struct zctl *c);

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

struct frame_enc {
	struct ZSTD_CCtx_s *cctx;
	enum relay_z mode;   /* RELAY_Z_AUTO or RELAY_Z_ON */
	struct zctl ctl;     /* the share (always all with RELAY_Z_ON) */
	struct zwin win;     /* the current window's byte counts */
	/* totals, for the log line at the end of the channel */
	uint64_t raw_total;  /* QEMU bytes framed */
	uint64_t z_raw, z_out; /* of them in zstd frames, and their size */
	unsigned switches;   /* windows in which the share changed */
};

int frame_enc_init(struct frame_enc *e, enum relay_z mode, struct ferr *err);
void frame_enc_free(struct frame_enc *e);

/* Frame the n (1..MIG_FRAME_RAW_MAX) bytes at raw + MIG_FRAME_HDR_LEN,
 * whose MIG_FRAME_HDR_LEN bytes before them are free: either a zstd frame
 * into out (room for MIG_FRAME_HDR_LEN + MIG_FRAME_RAW_MAX), *in_out =
 * true, or a raw frame in place (header into raw[0..HDR_LEN)). Returns the
 * frame's length. */
size_t frame_enc(struct frame_enc *e, uint8_t *raw, size_t n, uint8_t *out,
		 bool *in_out);

/* End a window: w's network figures plus the encoder's byte counts go to
 * the controller (RELAY_Z_AUTO), and the counts restart. */
void frame_enc_window(struct frame_enc *e, struct zwin *w);

/* Encode a frame header. */
void frame_header(uint8_t hdr[MIG_FRAME_HDR_LEN], unsigned type,
		  uint32_t len, uint32_t raw);

struct frame_dec {
	struct ZSTD_DCtx_s *dctx;
	uint8_t *zbuf;       /* a zstd payload (MIG_FRAME_RAW_MAX) */
	uint8_t hdr[MIG_FRAME_HDR_LEN];
	size_t hlen;         /* header bytes received */
	uint8_t type;
	uint32_t len, raw;   /* of the frame whose payload comes */
	size_t have;         /* payload bytes received */
};

int frame_dec_init(struct frame_dec *d, struct ferr *err);
void frame_dec_free(struct frame_dec *d);

/* Where the next bytes from the peer go and how many are wanted there: the
 * header, a zstd payload, or a raw payload straight into out (the buffer
 * that frame_dec_advance fills; room for MIG_FRAME_RAW_MAX). */
uint8_t *frame_dec_space(struct frame_dec *d, uint8_t *out, size_t *want);

/* n bytes arrived where frame_dec_space said. 1 when a frame is complete:
 * its *outlen bytes are in out; 0 when more bytes are needed; -1 (err,
 * FERR_INVALID) for a frame that breaks the limits of wire.h. */
int frame_dec_advance(struct frame_dec *d, size_t n, uint8_t *out,
		      size_t *outlen, struct ferr *err);

/* Between frames (an end of stream here is clean)? */
bool frame_dec_idle(const struct frame_dec *d);

#endif
