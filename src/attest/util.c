/* util.c - encodings and digests shared by the attestation code. */
#define _GNU_SOURCE
#include "attest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

void attest_hex(const uint8_t *d, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[2 * n] = '\0';
}

static int nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* lowercase only: one spelling per value */
}

int attest_unhex(const char *s, uint8_t *out, size_t n)
{
	if (!s || strlen(s) != 2 * n)
		return -1;
	for (size_t i = 0; i < n; i++) {
		int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int attest_b64_decode(const char *s, size_t max, const char *what,
		      uint8_t **out, size_t *len, struct ferr *err)
{
	size_t slen = s ? strlen(s) : 0, cap, n;
	uint8_t *buf;
	int got;

	*out = NULL;
	if (!s || slen == 0 || slen % 4 != 0 || slen / 4 * 3 > max + 2)
		return ferr_set(err, FERR_INVALID,
				"%s: not base64 of at most %zu bytes", what,
				max);
	cap = slen / 4 * 3;
	buf = malloc(cap + 1);
	if (!buf)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	got = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)slen);
	if (got < 0) {
		free(buf);
		return ferr_set(err, FERR_INVALID, "%s: not base64", what);
	}
	/* EVP_DecodeBlock counts padding as zero bytes */
	n = (size_t)got;
	if (s[slen - 1] == '=')
		n--;
	if (s[slen - 2] == '=')
		n--;
	if (n > max) {
		free(buf);
		return ferr_set(err, FERR_INVALID,
				"%s: more than %zu bytes", what, max);
	}
	/* one spelling per value: it must re-encode to the same text */
	{
		char *again = malloc(slen + 1);
		bool same = again &&
			    EVP_EncodeBlock((unsigned char *)again, buf,
					    (int)n) == (int)slen &&
			    memcmp(again, s, slen) == 0;

		free(again);
		if (!same) {
			free(buf);
			return ferr_set(err, FERR_INVALID,
					"%s: not canonical base64", what);
		}
	}
	*out = buf;
	*len = n;
	return 0;
}

json_t *attest_b64_json(const uint8_t *d, size_t n)
{
	char *s = malloc((n + 2) / 3 * 4 + 1);
	json_t *j;

	if (!s)
		return NULL;
	EVP_EncodeBlock((unsigned char *)s, d, (int)n);
	j = json_string(s);
	free(s);
	return j;
}

void attest_sha256(const void *d, size_t n, uint8_t out[ATTEST_DIGEST_LEN])
{
	SHA256(d, n, out);
}

int attest_file_sha256(const char *path, uint8_t out[ATTEST_DIGEST_LEN],
		       struct ferr *err)
{
	unsigned char buf[64 * 1024];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc = -1;

	if (fd < 0) {
		ferr_set(err, FERR_NOT_FOUND, "cannot open %s: %s", path,
			 strerror(errno));
		goto out;
	}
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		ferr_set(err, FERR_INTERNAL, "SHA-256 unavailable");
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ferr_set(err, FERR_IO, "cannot read %s: %s", path,
				 strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(md, buf, (size_t)n);
	}
	EVP_DigestFinal_ex(md, out, NULL);
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	EVP_MD_CTX_free(md);
	return rc;
}

int attest_policy_digest(const char *text, size_t len,
			 uint8_t out[ATTEST_DIGEST_LEN], struct ferr *err)
{
	json_t *root = json_parse_object(text, len, "policy", err);
	char *canon;

	if (!root)
		return -1;
	json_object_del(root, "attestation");
	canon = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(root);
	if (!canon)
		return ferr_set(err, FERR_INTERNAL, "cannot serialize policy");
	attest_sha256(canon, strlen(canon), out);
	free(canon);
	return 0;
}

int attest_constraints_digest(const char *uuid, const json_t *cons,
			      uint8_t out[ATTEST_DIGEST_LEN], struct ferr *err)
{
	char *canon = json_dumps(cons, JSON_COMPACT | JSON_SORT_KEYS);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;

	ok = canon && md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
	     EVP_DigestUpdate(md, ATTEST_CONSTRAINTS_TAG,
			      sizeof(ATTEST_CONSTRAINTS_TAG)) &&
	     EVP_DigestUpdate(md, uuid, strlen(uuid) + 1) &&
	     EVP_DigestUpdate(md, canon, strlen(canon)) &&
	     EVP_DigestFinal_ex(md, out, NULL);
	EVP_MD_CTX_free(md);
	free(canon);
	return ok ? 0
		  : ferr_set(err, FERR_INTERNAL,
			     "cannot hash the VM's constraints");
}

int attest_nonce(const uint8_t challenge[ATTEST_CHALLENGE_LEN],
		 const char *context,
		 const uint8_t exporter[ATTEST_EXPORTER_LEN],
		 uint8_t out[ATTEST_NONCE_LEN], struct ferr *err)
{
	size_t clen = strlen(context);
	uint8_t be[2] = { (uint8_t)(clen >> 8), (uint8_t)clen };
	EVP_MD_CTX *md;

	if (clen == 0 || clen > ATTEST_CONTEXT_MAX)
		return ferr_set(err, FERR_INVALID,
				"attestation context must be 1-%d bytes",
				ATTEST_CONTEXT_MAX);
	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(md);
		return ferr_set(err, FERR_INTERNAL, "SHA-256 unavailable");
	}
	EVP_DigestUpdate(md, ATTEST_NONCE_TAG, sizeof(ATTEST_NONCE_TAG));
	EVP_DigestUpdate(md, challenge, ATTEST_CHALLENGE_LEN);
	EVP_DigestUpdate(md, be, 2);
	EVP_DigestUpdate(md, context, clen);
	EVP_DigestUpdate(md, exporter, ATTEST_EXPORTER_LEN);
	EVP_DigestFinal_ex(md, out, NULL);
	EVP_MD_CTX_free(md);
	return 0;
}
