/* Unit tests of the QMP client (src/qmp): a fake QEMU on a unix socket
 * floods events; the client stays bounded and QEMU is not taken for
 * broken. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "qmp.h"

#define BURST 20000 /* events, about 2 MB: past the read buffer's bound */

struct fake {
	char path[108];
	int lfd;
	pthread_t t;
	int burst_in_command; /* events before the command's reply */
	int burst_after;      /* events after it */
};

static void send_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = write(fd, s, len);

		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

static void send_events(int fd, int n)
{
	char ev[160];

	for (int i = 0; i < n; i++) {
		int len = snprintf(ev, sizeof(ev),
				   "{\"event\": \"MIGRATION_PASS\", \"data\": "
				   "{\"pass\": %d}, \"timestamp\": {\"seconds\""
				   ": 1, \"microseconds\": 2}}\n",
				   i);

		send_all(fd, ev, (size_t)len);
	}
}

/* Read one line (a command) and return its "id" value's text. */
static void read_cmd(int fd, char *id, size_t idlen)
{
	char buf[512];
	size_t n = 0;
	char *p;

	while (n < sizeof(buf) - 1 && read(fd, buf + n, 1) == 1 &&
	       buf[n] != '\n')
		n++;
	buf[n] = '\0';
	p = strstr(buf, "\"id\":");
	snprintf(id, idlen, "%ld", p ? strtol(p + 5, NULL, 10) : 0L);
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	char id[32], reply[128];
	int fd = accept(f->lfd, NULL, NULL);

	if (fd < 0)
		return NULL;
	{
		const char *greet =
			"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n";

		send_all(fd, greet, strlen(greet));
	}
	read_cmd(fd, id, sizeof(id)); /* qmp_capabilities */
	snprintf(reply, sizeof(reply), "{\"return\": {}, \"id\": %s}\n", id);
	send_all(fd, reply, strlen(reply));
	read_cmd(fd, id, sizeof(id)); /* the test's command */
	send_events(fd, f->burst_in_command);
	snprintf(reply, sizeof(reply),
		 "{\"return\": {\"status\": \"running\"}, \"id\": %s}\n", id);
	send_all(fd, reply, strlen(reply));
	send_events(fd, f->burst_after);
	/* stay open until the client closes */
	while (read(fd, id, sizeof(id)) > 0)
		;
	close(fd);
	return NULL;
}

static struct qmp *start_fake(struct fake *f, int in_cmd, int after)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct qmp *q = NULL;
	struct ferr err;

	snprintf(f->path, sizeof(f->path), "/tmp/ferry-qmp-test-%d.sock",
		 (int)getpid());
	unlink(f->path);
	memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
	f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 1), 0);
	f->burst_in_command = in_cmd;
	f->burst_after = after;
	assert_int_equal(pthread_create(&f->t, NULL, fake_main, f), 0);
	assert_int_equal(qmp_connect(f->path, 5000, &q, &err), 0);
	return q;
}

static void stop_fake(struct fake *f, struct qmp *q)
{
	qmp_close(q);
	pthread_join(f->t, NULL);
	close(f->lfd);
	unlink(f->path);
}

static int seen;

static void count_event(struct qmp *q, const char *name, json_t *data,
			void *arg)
{
	(void)q;
	(void)data;
	(void)arg;
	if (!strcmp(name, "MIGRATION_PASS"))
		seen++;
}

/* A burst while a command waits: the command succeeds, the queue keeps
 * at most its bound and counts the rest. */
static void test_burst_during_command(void **state)
{
	struct fake f;
	struct qmp *q;
	struct ferr err;
	json_t *ret = NULL;

	(void)state;
	q = start_fake(&f, BURST, 0);
	qmp_set_event_cb(q, count_event, NULL);
	assert_int_equal(qmp_command(q, "query-status", NULL, &ret, &err), 0);
	assert_string_equal(json_string_value(json_object_get(ret, "status")),
			    "running");
	json_decref(ret);
	seen = 0;
	assert_int_equal(qmp_poll_events(q, &err), 0);
	assert_true(seen > 0 && seen <= 256);
	assert_int_equal((int)qmp_events_dropped(q) + seen, BURST);
	stop_fake(&f, q);
}

/* A burst between commands, larger than the read buffer: read and parsed
 * in turns, never "QEMU sent too much". */
static void test_burst_between_commands(void **state)
{
	struct fake f;
	struct qmp *q;
	struct ferr err;
	uint64_t total = 0;

	(void)state;
	q = start_fake(&f, 0, BURST);
	qmp_set_event_cb(q, count_event, NULL);
	assert_int_equal(qmp_command(q, "query-status", NULL, NULL, &err), 0);
	seen = 0;
	/* the events arrive over time: poll until all are accounted for */
	for (int i = 0; i < 2000 && total < BURST; i++) {
		assert_int_equal(qmp_poll_events(q, &err), 0);
		total = (uint64_t)seen + qmp_events_dropped(q);
		usleep(1000);
	}
	assert_int_equal(total, BURST);
	stop_fake(&f, q);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_burst_during_command),
		cmocka_unit_test(test_burst_between_commands),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
