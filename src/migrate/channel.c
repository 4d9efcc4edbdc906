/* channel.c - HELLO/ACK encoding and the HMAC binding of a data-plane
 * connection to its migration session (wire.h). */
#include "migrate_int.h"
#include "le.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

void hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

/* Value of one hex digit, or -1. */
static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int hex_decode(const char *in, uint8_t *out, size_t len)
{
	if (strlen(in) != 2 * len)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int mig_exporter(SSL *ssl, const uint8_t key[MIG_KEY_LEN],
		 const uint8_t sid[MIG_SESSION_ID_LEN], uint16_t channel,
		 uint8_t out[MIG_EXPORTER_LEN], struct ferr *err)
{
	uint8_t ctx[MIG_SESSION_ID_LEN + 2];
	unsigned int len = MIG_EXPORTER_LEN;

	memcpy(ctx, sid, MIG_SESSION_ID_LEN);
	le_put16(ctx + MIG_SESSION_ID_LEN, channel);
	if (!ssl) {
		/* plaintext: no TLS session to bind to; a value only the
		 * holders of the session key can make stands in for it */
		uint8_t buf[sizeof(MIG_PLAINTEXT_LABEL) + sizeof(ctx)];

		memcpy(buf, MIG_PLAINTEXT_LABEL, sizeof(MIG_PLAINTEXT_LABEL));
		memcpy(buf + sizeof(MIG_PLAINTEXT_LABEL), ctx, sizeof(ctx));
		if (!HMAC(EVP_sha256(), key, MIG_KEY_LEN, buf, sizeof(buf),
			  out, &len))
			return ferr_set(err, FERR_INTERNAL,
					"cannot derive the channel binding");
		return 0;
	}
	if (SSL_export_keying_material(ssl, out, MIG_EXPORTER_LEN,
				       MIG_EXPORTER_LABEL,
				       strlen(MIG_EXPORTER_LABEL), ctx,
				       sizeof(ctx), 1) != 1)
		return ferr_set(err, FERR_INTERNAL,
				"cannot derive the TLS exporter");
	return 0;
}

/* HMAC-SHA256(key, label || msg || exporter) into mac. */
static void mac_compute(const char *label, const uint8_t *msg, size_t len,
			const uint8_t key[MIG_KEY_LEN],
			const uint8_t exporter[MIG_EXPORTER_LEN],
			uint8_t mac[MIG_MAC_LEN])
{
	uint8_t buf[64 + MIG_HELLO_LEN + MIG_EXPORTER_LEN];
	size_t llen = strlen(label), n = 0;
	unsigned int maclen = MIG_MAC_LEN;

	memcpy(buf, label, llen);
	n += llen;
	memcpy(buf + n, msg, len);
	n += len;
	memcpy(buf + n, exporter, MIG_EXPORTER_LEN);
	n += MIG_EXPORTER_LEN;
	if (!HMAC(EVP_sha256(), key, MIG_KEY_LEN, buf, n, mac, &maclen))
		memset(mac, 0, MIG_MAC_LEN); /* never matches a real MAC */
	OPENSSL_cleanse(buf, sizeof(buf));
}

void mig_hello_build(uint8_t out[MIG_HELLO_LEN], const struct mig_hello *h,
		     const uint8_t key[MIG_KEY_LEN],
		     const uint8_t exporter[MIG_EXPORTER_LEN])
{
	memset(out, 0, MIG_HELLO_LEN);
	le_put32(out + MIG_HELLO_OFF_MAGIC, MIG_MAGIC);
	le_put16(out + MIG_HELLO_OFF_VERSION, MIG_VERSION);
	le_put16(out + MIG_HELLO_OFF_FLAGS, h->flags);
	memcpy(out + MIG_HELLO_OFF_SESSION, h->session, MIG_SESSION_ID_LEN);
	le_put16(out + MIG_HELLO_OFF_CHANNEL, h->channel);
	le_put16(out + MIG_HELLO_OFF_NCHAN, h->nchan);
	mac_compute(MIG_MAC_LABEL_HELLO, out, MIG_HELLO_OFF_MAC, key, exporter,
		    out + MIG_HELLO_OFF_MAC);
}

int mig_hello_parse(const uint8_t in[MIG_HELLO_LEN], struct mig_hello *h,
		    struct ferr *err)
{
	if (le_get32(in + MIG_HELLO_OFF_MAGIC) != MIG_MAGIC)
		return ferr_set(err, FERR_INVALID, "not a ferry migration "
						   "channel (bad magic)");
	if (le_get16(in + MIG_HELLO_OFF_VERSION) != MIG_VERSION)
		return ferr_set(err, FERR_INVALID,
				"unsupported channel version %u",
				(unsigned)le_get16(in + MIG_HELLO_OFF_VERSION));
	h->flags = le_get16(in + MIG_HELLO_OFF_FLAGS);
	h->channel = le_get16(in + MIG_HELLO_OFF_CHANNEL);
	h->nchan = le_get16(in + MIG_HELLO_OFF_NCHAN);
	memcpy(h->session, in + MIG_HELLO_OFF_SESSION, MIG_SESSION_ID_LEN);
	if (h->flags & ~MIG_FLAGS_KNOWN)
		return ferr_set(err, FERR_INVALID, "unknown channel flags 0x%x",
				(unsigned)h->flags);
	if (le_get32(in + MIG_HELLO_OFF_RESERVED) != 0)
		return ferr_set(err, FERR_INVALID,
				"reserved channel field is not zero");
	if (h->nchan == 0 || h->nchan > MIG_CHANNELS_MAX ||
	    h->channel >= h->nchan)
		return ferr_set(err, FERR_INVALID, "bad channel %u of %u",
				(unsigned)h->channel, (unsigned)h->nchan);
	return 0;
}

bool mig_hello_mac_ok(const uint8_t in[MIG_HELLO_LEN],
		      const uint8_t key[MIG_KEY_LEN],
		      const uint8_t exporter[MIG_EXPORTER_LEN])
{
	uint8_t mac[MIG_MAC_LEN];
	bool ok;

	mac_compute(MIG_MAC_LABEL_HELLO, in, MIG_HELLO_OFF_MAC, key, exporter,
		    mac);
	ok = CRYPTO_memcmp(mac, in + MIG_HELLO_OFF_MAC, MIG_MAC_LEN) == 0;
	OPENSSL_cleanse(mac, sizeof(mac));
	return ok;
}

void mig_ack_build(uint8_t out[MIG_ACK_LEN], uint16_t status,
		   uint16_t channel, const uint8_t key[MIG_KEY_LEN],
		   const uint8_t exporter[MIG_EXPORTER_LEN])
{
	memset(out, 0, MIG_ACK_LEN);
	le_put32(out + MIG_ACK_OFF_MAGIC, MIG_MAGIC);
	le_put16(out + MIG_ACK_OFF_VERSION, MIG_VERSION);
	le_put16(out + MIG_ACK_OFF_STATUS, status);
	le_put16(out + MIG_ACK_OFF_CHANNEL, channel);
	if (status == MIG_ACK_OK && key)
		mac_compute(MIG_MAC_LABEL_ACK, out, MIG_ACK_OFF_MAC, key,
			    exporter, out + MIG_ACK_OFF_MAC);
}

int mig_ack_check(const uint8_t in[MIG_ACK_LEN], uint16_t channel,
		  const uint8_t key[MIG_KEY_LEN],
		  const uint8_t exporter[MIG_EXPORTER_LEN], struct ferr *err)
{
	uint8_t mac[MIG_MAC_LEN];
	bool ok;

	if (le_get32(in + MIG_ACK_OFF_MAGIC) != MIG_MAGIC ||
	    le_get16(in + MIG_ACK_OFF_VERSION) != MIG_VERSION)
		return ferr_set(err, FERR_UNAVAILABLE,
				"the destination answered with a bad ACK");
	if (le_get16(in + MIG_ACK_OFF_STATUS) != MIG_ACK_OK)
		return ferr_set(err, FERR_UNAVAILABLE,
				"the destination refused channel %u",
				(unsigned)channel);
	if (le_get16(in + MIG_ACK_OFF_CHANNEL) != channel ||
	    le_get16(in + MIG_ACK_OFF_RESERVED) != 0 ||
	    le_get32(in + MIG_ACK_OFF_RESERVED2) != 0)
		return ferr_set(err, FERR_UNAVAILABLE,
				"the destination's ACK is malformed");
	mac_compute(MIG_MAC_LABEL_ACK, in, MIG_ACK_OFF_MAC, key, exporter,
		    mac);
	ok = CRYPTO_memcmp(mac, in + MIG_ACK_OFF_MAC, MIG_MAC_LEN) == 0;
	OPENSSL_cleanse(mac, sizeof(mac));
	if (!ok)
		return ferr_set(err, FERR_UNAVAILABLE,
				"the destination's ACK does not prove the "
				"session key");
	return 0;
}

void mig_ctx_reply_build(uint8_t out[MIG_CTX_REPLY_LEN], uint16_t status,
			 uint32_t count, uint32_t ms, const char *reason)
{
	memset(out, 0, MIG_CTX_REPLY_LEN);
	le_put32(out + MIG_CTX_REPLY_OFF_MAGIC, MIG_CTX_MAGIC);
	le_put16(out + MIG_CTX_REPLY_OFF_VERSION, MIG_VERSION);
	le_put16(out + MIG_CTX_REPLY_OFF_STATUS, status);
	le_put32(out + MIG_CTX_REPLY_OFF_COUNT, count);
	le_put32(out + MIG_CTX_REPLY_OFF_MS, ms);
	if (reason)
		strncpy((char *)out + MIG_CTX_REPLY_OFF_REASON, reason,
			MIG_CTX_REASON_LEN - 1);
}

int mig_ctx_reply_parse(const uint8_t in[MIG_CTX_REPLY_LEN], uint32_t *count,
			uint32_t *ms, struct ferr *err)
{
	char reason[MIG_CTX_REASON_LEN];

	if (le_get32(in + MIG_CTX_REPLY_OFF_MAGIC) != MIG_CTX_MAGIC ||
	    le_get16(in + MIG_CTX_REPLY_OFF_VERSION) != MIG_VERSION)
		return ferr_set(err, FERR_UNAVAILABLE,
				"the context reply is malformed");
	*count = le_get32(in + MIG_CTX_REPLY_OFF_COUNT);
	*ms = le_get32(in + MIG_CTX_REPLY_OFF_MS);
	if (le_get16(in + MIG_CTX_REPLY_OFF_STATUS) == MIG_ACK_OK)
		return 0;
	memcpy(reason, in + MIG_CTX_REPLY_OFF_REASON, sizeof(reason));
	reason[sizeof(reason) - 1] = '\0';
	for (char *c = reason; *c; c++) /* the peer's text, for logs */
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	return ferr_set(err, FERR_UNAVAILABLE,
			"the destination refused the VM's connection state: %s",
			reason);
}
