/* fault.c - fault-injection points (fault.h). */
#include "fault.h"
#include "common.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

void fault_point(const char *name)
{
#ifdef FERRY_FAULT_POINTS
	static atomic_bool fired;
	const char *want = getenv("FERRY_FAULT_POINT");

	if (!want || strcmp(want, name) != 0 || atomic_exchange(&fired, true))
		return;
	log_warn("fault point %s reached: stopping for the test (SIGSTOP)",
		 name);
	raise(SIGSTOP);
	log_warn("fault point %s: continued", name);
#else
	(void)name;
#endif
}
