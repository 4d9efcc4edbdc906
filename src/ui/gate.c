/* gate.c - admission of a browser request: Host, Origin and the token. */
#include "ui.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

/* Is s exactly "PREFIXaddress:port" or "PREFIXlocalhost:port"? */
static bool is_self(const char *s, const char *prefix, const char *address,
		    uint16_t port)
{
	char a[128], b[128];

	snprintf(a, sizeof(a), "%s%s:%u", prefix, address, (unsigned)port);
	snprintf(b, sizeof(b), "%slocalhost:%u", prefix, (unsigned)port);
	return !strcmp(s, a) || !strcmp(s, b);
}

bool ui_host_ok(const char *host, const char *address, uint16_t port)
{
	return host && is_self(host, "", address, port);
}

bool ui_origin_ok(const char *origin, bool required, const char *address,
		  uint16_t port)
{
	if (!origin)
		return !required;
	return is_self(origin, "http://", address, port);
}

/* Is the len bytes at s the token? Constant time in the token's bytes. */
static bool token_eq(const char *token, const char *s, size_t len)
{
	return len == UI_TOKEN_HEX && strlen(token) == UI_TOKEN_HEX &&
	       CRYPTO_memcmp(token, s, UI_TOKEN_HEX) == 0;
}

bool ui_token_ok(const char *token, const char *cookie_name,
		 const char *cookie_hdr, const char *auth_hdr)
{
	static const char bearer[] = "Bearer ";
	size_t nlen = strlen(cookie_name);

	if (auth_hdr && !strncmp(auth_hdr, bearer, sizeof(bearer) - 1) &&
	    token_eq(token, auth_hdr + sizeof(bearer) - 1,
		     strlen(auth_hdr + sizeof(bearer) - 1)))
		return true;
	/* Cookie: a=1; NAME=TOKEN; b=2 */
	for (const char *p = cookie_hdr; p && *p;) {
		const char *end = strchr(p, ';');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		while (len && *p == ' ') {
			p++;
			len--;
		}
		if (len > nlen && !strncmp(p, cookie_name, nlen) &&
		    p[nlen] == '=' &&
		    token_eq(token, p + nlen + 1, len - nlen - 1))
			return true;
		p = end ? end + 1 : NULL;
	}
	return false;
}

bool ui_query_token_ok(const char *token, const char *query)
{
	static const char key[] = "token=";

	return query && !strncmp(query, key, sizeof(key) - 1) &&
	       token_eq(token, query + sizeof(key) - 1,
			strlen(query + sizeof(key) - 1));
}
