/* frame.c - the frames of a compressed channel (wire.h, "Frames"): the
 * source's encoder, which decides frame by frame whether compressing pays,
 * and the destination's decoder with its limits. */
#include "migrate_int.h"
#include "le.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* ZSTD_customMem (exported by libzstd, declared among its "advanced"
 * functions): contexts whose buffers, which hold literals of guest
 * memory, are wiped when zstd frees them */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

/* A frame must save this fraction of its raw length to go compressed. */
#define FRAME_MIN_SAVING_DIV 32
/* The controller (RELAY_Z_AUTO): share levels gained per link-bound
 * window (a quarter: all frames within 0.4 s) and lost per other
 * window; windows to wait after the data did not shrink by a tenth. */
#define ZCTL_UP 2
#define ZCTL_DOWN 1
#define ZCTL_HOLD_INCOMPRESSIBLE 8
#define ZCTL_MIN_SAVING_TENTHS 1

/* zstd's allocations, with their size in front so that free can wipe. */
#define WIPE_HDR 16 /* keeps malloc's alignment */

static void *wipe_alloc(void *opaque, size_t size)
{
	uint8_t *p;

	(void)opaque;
	if (size > SIZE_MAX - WIPE_HDR)
		return NULL;
	p = malloc(WIPE_HDR + size);
	if (!p)
		return NULL;
	memcpy(p, &size, sizeof(size));
	return p + WIPE_HDR;
}

static void wipe_free(void *opaque, void *addr)
{
	uint8_t *p = addr;
	size_t size;

	(void)opaque;
	if (!p)
		return;
	p -= WIPE_HDR;
	memcpy(&size, p, sizeof(size));
	OPENSSL_cleanse(p + WIPE_HDR, size);
	free(p);
}

static const ZSTD_customMem wipe_mem = { wipe_alloc, wipe_free, NULL };

void frame_header(uint8_t hdr[MIG_FRAME_HDR_LEN], unsigned type,
		  uint32_t len, uint32_t raw)
{
	memset(hdr, 0, MIG_FRAME_HDR_LEN);
	hdr[MIG_FRAME_OFF_TYPE] = (uint8_t)type;
	le_put32(hdr + MIG_FRAME_OFF_LEN, len);
	le_put32(hdr + MIG_FRAME_OFF_RAW, raw);
}

/* ---- the controller ---- */

bool zctl_link_bound(const struct zwin *w)
{
	/* the relay waited on the network for half the window, and TCP says
	 * it was not the receiver that held it back */
	return w->wall_us > 0 && w->blocked_us * 2 >= w->wall_us &&
	       w->rwnd_us * 2 <= w->busy_us;
}

void zctl_update(struct zctl *c, const struct zwin *w)
{
	if (w->zin > 0 &&
	    w->zout * 10 > w->zin * (10 - ZCTL_MIN_SAVING_TENTHS)) {
		c->level = 0;
		c->hold = ZCTL_HOLD_INCOMPRESSIBLE;
	} else if (c->hold > 0) {
		c->hold--;
	} else if (zctl_link_bound(w)) {
		c->level = c->level + ZCTL_UP < ZCTL_LEVELS ? c->level + ZCTL_UP
							  : ZCTL_LEVELS;
	} else if (c->level > 0) {
		c->level -= ZCTL_DOWN;
	}
}

bool zctl_next(struct zctl *c)
{
	c->acc += c->level;
	if (c->acc < ZCTL_LEVELS)
		return false;
	c->acc -= ZCTL_LEVELS;
	return true;
}

/* ---- the encoder ---- */

int frame_enc_init(struct frame_enc *e, enum relay_z mode, struct ferr *err)
{
	memset(e, 0, sizeof(*e));
	e->mode = mode;
	e->ctl.level = mode == RELAY_Z_ON ? ZCTL_LEVELS : 0;
	e->cctx = ZSTD_createCCtx_advanced(wipe_mem);
	if (!e->cctx ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(e->cctx,
						ZSTD_c_compressionLevel,
						MIG_FRAME_ZSTD_LEVEL)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(e->cctx,
						ZSTD_c_contentSizeFlag, 1)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_checksumFlag,
						0))) {
		ZSTD_freeCCtx(e->cctx);
		e->cctx = NULL;
		return ferr_set(err, FERR_INTERNAL,
				"cannot set up the zstd compressor");
	}
	return 0;
}

void frame_enc_free(struct frame_enc *e)
{
	ZSTD_freeCCtx(e->cctx);
	e->cctx = NULL;
}

size_t frame_enc(struct frame_enc *e, uint8_t *raw, size_t n, uint8_t *out,
		 bool *in_out)
{
	size_t z = 0;

	if (zctl_next(&e->ctl)) {
		/* the payload must come out shorter than the raw bytes, by
		 * at least 1/FRAME_MIN_SAVING_DIV, and within the ratio */
		size_t cap = n - n / FRAME_MIN_SAVING_DIV - 1;

		z = ZSTD_compress2(e->cctx, out + MIG_FRAME_HDR_LEN, cap,
				   raw + MIG_FRAME_HDR_LEN, n);
		e->win.zin += n;
		if (ZSTD_isError(z) || z == 0 ||
		    (uint64_t)z * MIG_FRAME_RATIO_MAX < n) {
			z = 0;
			e->win.zout += n;
		} else {
			e->win.zout += z;
		}
	}
	e->win.in_bytes += n;
	e->raw_total += n;
	*in_out = z != 0;
	if (z) {
		e->z_raw += n;
		e->z_out += z;
		frame_header(out, MIG_FRAME_ZSTD, (uint32_t)z, (uint32_t)n);
		return z + MIG_FRAME_HDR_LEN;
	}
	frame_header(raw, MIG_FRAME_RAW, (uint32_t)n, (uint32_t)n);
	return n + MIG_FRAME_HDR_LEN;
}

void frame_enc_window(struct frame_enc *e, struct zwin *w)
{
	w->in_bytes = e->win.in_bytes;
	w->zin = e->win.zin;
	w->zout = e->win.zout;
	if (e->mode == RELAY_Z_AUTO) {
		unsigned was = e->ctl.level;

		zctl_update(&e->ctl, w);
		e->switches += was != e->ctl.level;
	}
	memset(&e->win, 0, sizeof(e->win));
}

/* ---- the decoder ---- */

int frame_dec_init(struct frame_dec *d, struct ferr *err)
{
	memset(d, 0, sizeof(*d));
	d->dctx = ZSTD_createDCtx_advanced(wipe_mem);
	d->zbuf = malloc(MIG_FRAME_RAW_MAX);
	if (!d->dctx || !d->zbuf ||
	    ZSTD_isError(ZSTD_DCtx_setParameter(d->dctx, ZSTD_d_windowLogMax,
						MIG_FRAME_WINDOW_LOG))) {
		frame_dec_free(d);
		return ferr_set(err, FERR_INTERNAL,
				"cannot set up the zstd decompressor");
	}
	return 0;
}

void frame_dec_free(struct frame_dec *d)
{
	ZSTD_freeDCtx(d->dctx);
	if (d->zbuf)
		OPENSSL_cleanse(d->zbuf, MIG_FRAME_RAW_MAX);
	free(d->zbuf);
	d->dctx = NULL;
	d->zbuf = NULL;
}

uint8_t *frame_dec_space(struct frame_dec *d, uint8_t *out, size_t *want)
{
	if (d->hlen < MIG_FRAME_HDR_LEN) {
		*want = MIG_FRAME_HDR_LEN - d->hlen;
		return d->hdr + d->hlen;
	}
	*want = d->len - d->have;
	return (d->type == MIG_FRAME_RAW ? out : d->zbuf) + d->have;
}

/* Check a complete header; on success the payload is expected next. */
static int header_check(struct frame_dec *d, struct ferr *err)
{
	uint32_t len = le_get32(d->hdr + MIG_FRAME_OFF_LEN);
	uint32_t raw = le_get32(d->hdr + MIG_FRAME_OFF_RAW);
	unsigned type = d->hdr[MIG_FRAME_OFF_TYPE];

	if (type != MIG_FRAME_RAW && type != MIG_FRAME_ZSTD)
		return ferr_set(err, FERR_INVALID, "frame: unknown type %u",
				type);
	if (d->hdr[MIG_FRAME_OFF_FLAGS] || d->hdr[MIG_FRAME_OFF_RESERVED] ||
	    d->hdr[MIG_FRAME_OFF_RESERVED + 1])
		return ferr_set(err, FERR_INVALID,
				"frame: flags or reserved bytes are not zero");
	if (raw == 0 || raw > MIG_FRAME_RAW_MAX)
		return ferr_set(err, FERR_INVALID,
				"frame: raw length %u outside 1..%u",
				(unsigned)raw, (unsigned)MIG_FRAME_RAW_MAX);
	if (type == MIG_FRAME_RAW && len != raw)
		return ferr_set(err, FERR_INVALID,
				"frame: raw frame of %u bytes claims %u",
				(unsigned)len, (unsigned)raw);
	if (type == MIG_FRAME_ZSTD &&
	    (len == 0 || len >= raw ||
	     (uint64_t)len * MIG_FRAME_RATIO_MAX < raw))
		return ferr_set(err, FERR_INVALID,
				"frame: %u compressed bytes cannot stand for %u "
				"(at most %d times, and fewer than raw)",
				(unsigned)len, (unsigned)raw,
				MIG_FRAME_RATIO_MAX);
	d->type = (uint8_t)type;
	d->len = len;
	d->raw = raw;
	d->have = 0;
	return 0;
}

/* Expand the zstd payload in zbuf into out (room for d->raw bytes). */
static int expand(struct frame_dec *d, uint8_t *out, struct ferr *err)
{
	unsigned long long csize = ZSTD_getFrameContentSize(d->zbuf, d->len);
	size_t fsize = ZSTD_findFrameCompressedSize(d->zbuf, d->len);
	size_t n;

	if (csize != d->raw || ZSTD_isError(fsize) || fsize != d->len)
		return ferr_set(err, FERR_INVALID,
				"frame: the zstd payload is not one frame of "
				"%u bytes",
				(unsigned)d->raw);
	n = ZSTD_decompressDCtx(d->dctx, out, d->raw, d->zbuf, d->len);
	if (ZSTD_isError(n) || n != d->raw)
		return ferr_set(err, FERR_INVALID, "frame: zstd: %s",
				ZSTD_isError(n) ? ZSTD_getErrorName(n)
						: "short output");
	return 0;
}

int frame_dec_advance(struct frame_dec *d, size_t n, uint8_t *out,
		      size_t *outlen, struct ferr *err)
{
	*outlen = 0;
	if (d->hlen < MIG_FRAME_HDR_LEN) {
		d->hlen += n;
		if (d->hlen < MIG_FRAME_HDR_LEN)
			return 0;
		return header_check(d, err) < 0 ? -1 : 0;
	}
	d->have += n;
	if (d->have < d->len)
		return 0;
	if (d->type == MIG_FRAME_ZSTD && expand(d, out, err) < 0)
		return -1;
	*outlen = d->raw;
	d->hlen = 0;
	return 1;
}

bool frame_dec_idle(const struct frame_dec *d)
{
	return d->hlen == 0;
}
