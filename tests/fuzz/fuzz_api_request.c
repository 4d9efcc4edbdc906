/* libFuzzer target: the API request parser (method, URI, body). Input
 * layout: first byte picks the method, then the URI up to a NUL, then the
 * body. The whole input, in two pieces, also goes through the header
 * watch (hdrscan.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const methods[] = { "GET", "POST", "DELETE",
						"PUT" };
	struct api_request req;
	struct ferr err;
	const uint8_t *nul;
	char *uri;
	size_t ulen;

	struct api_hdr_scan scan;

	if (size < 1)
		return 0;
	memset(&scan, 0, sizeof(scan));
	api_hdr_scan(&scan, (const char *)data, size / 2);
	api_hdr_scan(&scan, (const char *)data + size / 2, size - size / 2);
	nul = memchr(data + 1, 0, size - 1);
	ulen = nul ? (size_t)(nul - (data + 1)) : size - 1;
	uri = malloc(ulen + 1);
	if (!uri)
		return 0;
	memcpy(uri, data + 1, ulen);
	uri[ulen] = '\0';
	if (api_parse_request(methods[data[0] % 4], uri,
			      nul ? (const char *)nul + 1 : NULL,
			      nul ? size - ulen - 2 : 0, &req, &err) == 0)
		api_request_clear(&req);
	free(uri);
	return 0;
}
