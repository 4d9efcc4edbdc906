/* libFuzzer target: the audit record parser and the log verifier. The
 * seed corpus holds a real log signed by the key below (from a demo run),
 * so mutations reach the chain and tamper classification. */
#include <stdint.h>
#include <stdlib.h>

#include <openssl/pem.h>

#include "audit.h"

static const char seed_pub[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MCowBQYDK2VwAyEAUvVTa1CeCRVj/AG79rh0WX8pa3b8eQVROG5CfqzkeI8=\n"
	"-----END PUBLIC KEY-----\n"
;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static EVP_PKEY *pub;
	struct audit_report rep;
	struct ferr err;
	json_t *rec = NULL;

	if (!pub) {
		BIO *b = BIO_new_mem_buf(seed_pub, -1);

		pub = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
		BIO_free(b);
		if (!pub)
			abort();
	}
	if (audit_parse_record((const char *)data, size, &rec, &err) == 0)
		json_decref(rec);
	audit_verify((const char *)data, size, pub, &rep);
	return 0;
}
