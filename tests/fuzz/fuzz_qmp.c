/* libFuzzer target: the QMP reader (src/qmp/qmp.c) on what a hostile QEMU
 * sends: the input arrives on a socket, then the client polls its events
 * and runs a command whose reply it must find among the lines. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_event(struct qmp *q, const char *name, json_t *data,
		     void *arg)
{
	(void)q;
	(void)data;
	if (!name)
		abort(); /* events are dispatched by name only */
	++*(unsigned *)arg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qmp *q = NULL;
	struct ferr err;
	json_t *ret = NULL;
	unsigned events = 0;
	int sv[2];

	if (size > 128 * 1024 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	/* the input, then end of stream: every wait ends at once */
	if (write(sv[1], data, size) != (ssize_t)size ||
	    shutdown(sv[1], SHUT_WR) < 0 || qmp_from_fd(sv[0], &q, &err) < 0) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	qmp_set_event_cb(q, on_event, &events);
	if (size && data[0] & 1) {
		if (qmp_command(q, "query-status", NULL, &ret, &err) == 0)
			json_decref(ret);
	}
	qmp_poll_events(q, &err);
	qmp_close(q);
	close(sv[1]);
	return 0;
}
