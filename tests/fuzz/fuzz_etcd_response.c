/* libFuzzer target: the etcd client's checks of the gateway's answers
 * (every parser of src/etcd/codec.h). The first byte picks the parser, the
 * rest is the answer. */
#include <stdint.h>
#include <stdlib.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct etcd_cmp cmp = { .key = "a", .target = ETCD_CMP_CREATE };
	const struct etcd_op ops[] = { { .type = ETCD_OP_PUT, .key = "a" },
				       { .type = ETCD_OP_GET, .key = "a" },
				       { .type = ETCD_OP_DELETE, .key = "a" } };
	const struct etcd_txn txn = { &cmp, 1, ops, 3, ops + 1, 2 };
	const char *text = (const char *)data + 1;
	struct etcd_watch_msg m = { 0 };
	struct etcd_txn_result r = { 0 };
	struct etcd_kvs kvs = { 0 };
	struct etcd_header h;
	int64_t a, b, c;
	struct ferr err;
	json_t *j, *res;
	bool retry;

	if (size < 1)
		return 0;
	size--;
	switch (data[0] % 4) {
	case 0:
		etcd_parse_watch_msg(text, size, "/ferry", &m, &retry, &err);
		etcd_watch_msg_clear(&m);
		return 0;
	case 1:
		etcd_parse_error(503, text, size, &retry, &err);
		return 0;
	}
	j = json_loadb(text, size, JSON_REJECT_DUPLICATES, NULL);
	if (!j)
		return 0;
	if (data[0] % 4 == 2) {
		etcd_parse_range(j, "/ferry", &kvs, &err);
		etcd_kvs_clear(&kvs);
		etcd_parse_txn(j, "/ferry", &txn, &r, &err);
		etcd_txn_result_clear(&r);
	} else {
		etcd_parse_header(j, &h, &err);
		etcd_parse_put(j, &a, &err);
		etcd_parse_delete(j, &a, &b, &err);
		etcd_parse_lease(j, 0, &a, &b, &c, &err);
		if (etcd_stream_result(j, &res, &retry, &err) == 0)
			etcd_parse_lease(res, 7, &a, &b, &c, &err);
	}
	json_decref(j);
	return 0;
}
