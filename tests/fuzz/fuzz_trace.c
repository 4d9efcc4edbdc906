/* libFuzzer target: the balancer's CSV trace parser (a file an operator
 * hands to ferry-balancer --simulate). A trace that parses must also
 * survive a write and a second read with the same shape. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bal_trace t, again;
	struct ferr err;
	char *out = NULL;
	size_t outlen = 0;
	FILE *f;

	if (size == 0)
		return 0;
	f = fmemopen((void *)data, size, "r");
	if (!f)
		return 0;
	if (bal_trace_read(f, "fuzz", &t, &err) < 0) {
		fclose(f);
		return 0;
	}
	fclose(f);
	f = open_memstream(&out, &outlen);
	if (!f || bal_trace_write(f, &t, &err) < 0)
		abort();
	fclose(f);
	f = fmemopen(out, outlen, "r");
	if (!f || bal_trace_read(f, "fuzz-again", &again, &err) < 0)
		abort(); /* what we wrote must read back */
	fclose(f);
	if (again.nvms != t.nvms || again.nintervals != t.nintervals ||
	    (again.dirty == NULL) != (t.dirty == NULL) ||
	    memcmp(again.names, t.names, t.nvms * sizeof(t.names[0])) != 0 ||
	    memcmp(again.mem_mib, t.mem_mib,
		   t.nvms * t.nintervals * sizeof(t.mem_mib[0])) != 0)
		abort();
	bal_trace_free(&again);
	bal_trace_free(&t);
	free(out);
	return 0;
}
