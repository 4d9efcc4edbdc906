/* libFuzzer target: audit_verify's classification. Mutated records would
 * all fail their signature at the first line, so the harness re-signs
 * every line that is a JSON object with a fixed test key, and sets its
 * prev to the hash of the line before: the chain checks (deleted,
 * reordered, inserted, head, rotation) become reachable. The first two
 * input bytes are masks: bit i of byte 0 leaves line i unsigned (as
 * written), bit i of byte 1 leaves its prev alone; the rest is the log. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "audit.h"

#define OUT_MAX (1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static EVP_PKEY *key, *pub;

static void keys(void)
{
	static const unsigned char seed[32] = "ferry audit fuzz test key 0001";
	unsigned char raw[32];
	size_t len = sizeof(raw);

	key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed,
					   sizeof(seed));
	if (!key || EVP_PKEY_get_raw_public_key(key, raw, &len) != 1)
		abort();
	pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, len);
	if (!pub)
		abort();
}

/* Re-sign rec into out (at most max bytes); its length, or 0. */
static size_t resign(json_t *rec, bool sign, char *out, size_t max)
{
	unsigned char sig[64];
	char b64[AUDIT_SIG_B64_LEN + 1];
	size_t slen = sizeof(sig), n;
	EVP_MD_CTX *ctx;

	if (!sign)
		return json_dumpb(rec, out, max, AUDIT_JSON_FLAGS);
	json_object_del(rec, "sig");
	n = json_dumpb(rec, out, max, AUDIT_JSON_FLAGS);
	if (n == 0 || n > max)
		return 0;
	ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) != 1 ||
	    EVP_DigestSign(ctx, sig, &slen, (unsigned char *)out, n) != 1)
		abort();
	EVP_MD_CTX_free(ctx);
	EVP_EncodeBlock((unsigned char *)b64, sig, sizeof(sig));
	json_object_set_new(rec, "sig", json_string(b64));
	return json_dumpb(rec, out, max, AUDIT_JSON_FLAGS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char *out;
	char prev[AUDIT_HASH_HEX_LEN + 1];
	struct audit_report rep;
	const char *p, *end;
	size_t off = 0;
	unsigned line = 0;
	uint8_t unsigned_mask, keep_prev;

	if (!key)
		keys();
	if (!out && !(out = malloc(OUT_MAX)))
		abort();
	if (size < 2)
		return 0;
	unsigned_mask = data[0];
	keep_prev = data[1];
	memset(prev, '0', AUDIT_HASH_HEX_LEN);
	prev[AUDIT_HASH_HEX_LEN] = '\0';
	for (p = (const char *)data + 2, end = (const char *)data + size;
	     p < end; line++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl ? nl : end) - p), n = 0;
		bool bit = line < 8;
		json_t *rec = nl ? json_loadb(p, len, JSON_REJECT_DUPLICATES,
					      NULL)
				 : NULL;

		if (json_is_object(rec)) {
			if (!(bit && (keep_prev >> line & 1)))
				json_object_set_new(rec, "prev",
						    json_string(prev));
			n = resign(rec, !(bit && (unsigned_mask >> line & 1)),
				   out + off, OUT_MAX - off - 1);
		}
		json_decref(rec);
		if (n == 0 || n > OUT_MAX - off - 1) {
			if (len > OUT_MAX - off - 1)
				break;
			memcpy(out + off, p, len); /* as written */
			n = len;
		}
		audit_hash_hex(out + off, n, prev);
		off += n;
		if (nl)
			out[off++] = '\n';
		p += len + (nl ? 1 : 0);
	}
	audit_verify(out, off, pub, &rep);
	if (rep.ok != (rep.kind == AUDIT_TAMPER_NONE))
		abort();
	return 0;
}
