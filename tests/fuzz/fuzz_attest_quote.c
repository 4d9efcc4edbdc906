/* libFuzzer target: the quote and event-log parser, i.e. everything the
 * verifier does with a peer's quote blob (JSON, base64, TPMS_ATTEST and
 * TPMT_SIGNATURE unmarshalling, the event log, replay and the reference
 * values), against the fixed test key of tests/unit/attest_soft.h with an
 * all-zero nonce, so the seeds (made by test_attest with
 * FERRY_WRITE_SEEDS) reach the checks past the signature. */
#include <stdint.h>
#include <stdlib.h>

#include "../unit/attest_soft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static EVP_PKEY *key;
	static struct attest_record rec;
	static json_t *refs;
	static struct attest_log log;
	uint8_t nonce[ATTEST_NONCE_LEN] = { 0 };
	struct attest_expect x = { .nonce = nonce, .scope = "fuzz" };
	struct ferr err;
	json_t *blob, *report = NULL;

	if (!key) {
		setenv(ATTEST_TSS2_LOG_ENV, ATTEST_TSS2_LOG_QUIET, 0);
		key = soft_key_fixed();
		if (!key || soft_record(key, "host-b", &rec) < 0)
			abort();
		refs = json_pack("{s:[s], s:[], s:[]}", "ferryd",
				 "1111111111111111111111111111111111111111111111"
				 "111111111111111111",
				 "qemu", "policy");
	}
	x.refs = refs;
	blob = json_parse_object((const char *)data, size, "fuzz", &err);
	if (!blob)
		return 0;
	attest_verify(blob, &rec, &x, &report, &err);
	attest_log_from_json(json_object_get(blob, "events"), &log, &err);
	json_decref(report);
	json_decref(blob);
	return 0;
}
