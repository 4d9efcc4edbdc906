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
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

/* The other end of an adopted or kept connection: plays QEMU for one
 * command. */
struct peer {
	int fd;
	pthread_t t;
	int passed;       /* a descriptor that came with the command, or -1 */
	char cmd[512];    /* the command's text */
};

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	size_t n = 0;
	char reply[128], *id;

	p->passed = -1;
	while (n < sizeof(p->cmd) - 1) {
		struct iovec iov = { .iov_base = p->cmd + n, .iov_len = 1 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = u.buf,
				     .msg_controllen = sizeof(u.buf) };
		struct cmsghdr *cm;

		if (recvmsg(p->fd, &mh, 0) != 1)
			break;
		cm = CMSG_FIRSTHDR(&mh);
		if (cm && cm->cmsg_type == SCM_RIGHTS) {
			memcpy(&p->passed, CMSG_DATA(cm), sizeof(int));
			/* as QEMU does with what it receives */
			fcntl(p->passed, F_SETFL,
			      fcntl(p->passed, F_GETFL) & ~O_NONBLOCK);
		}
		if (p->cmd[n++] == '\n')
			break;
	}
	p->cmd[n] = '\0';
	id = strstr(p->cmd, "\"id\":");
	snprintf(reply, sizeof(reply), "{\"return\": {}, \"id\": %lld}\n",
		 id ? strtoll(id + 5, NULL, 10) : 0LL);
	send_all(p->fd, reply, strlen(reply));
	return NULL;
}

/* A connection taken over from a predecessor: the tail of a line it read
 * in part is dropped, a late reply to its command (id 1) is not taken for
 * ours, queued events are kept, and commands go out of band. */
static void test_adopt(void **state)
{
	const char *backlog =
		"\"running\": true}, \"id\": 7}\n"
		"{\"return\": {\"wrong\": 1}, \"id\": 1}\n"
		"{\"event\": \"MIGRATION_PASS\", \"data\": {}}\n";
	struct peer p = { 0 };
	struct qmp *q = NULL;
	struct ferr err;
	json_t *ret = NULL;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	send_all(sv[1], backlog, strlen(backlog));
	assert_int_equal(qmp_adopt(sv[0], &q, &err), 0);
	p.fd = sv[1];
	assert_int_equal(pthread_create(&p.t, NULL, peer_main, &p), 0);
	qmp_set_event_cb(q, count_event, NULL);
	assert_int_equal(qmp_command_oob(q, "migrate-recover", NULL, &ret,
					 &err),
			 0);
	pthread_join(p.t, NULL);
	assert_non_null(strstr(p.cmd, "\"exec-oob\""));
	assert_null(json_object_get(ret, "wrong"));
	json_decref(ret);
	seen = 0;
	assert_int_equal(qmp_poll_events(q, &err), 0);
	assert_int_equal(seen, 1);
	qmp_close(q);
	close(sv[1]);
}

/* qmp_keep passes the connection's own socket with getfd, and leaves it
 * non-blocking although the receiver made it blocking. */
static void test_keep(void **state)
{
	struct peer p = { 0 };
	struct qmp *q = NULL;
	struct ferr err;
	struct stat a, b;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(qmp_adopt(sv[0], &q, &err), 0);
	p.fd = sv[1];
	assert_int_equal(pthread_create(&p.t, NULL, peer_main, &p), 0);
	assert_int_equal(qmp_keep(q, &err), 0);
	pthread_join(p.t, NULL);
	assert_non_null(strstr(p.cmd, "\"getfd\""));
	assert_true(p.passed >= 0);
	assert_int_equal(fstat(p.passed, &a), 0);
	assert_int_equal(fstat(qmp_fd(q), &b), 0);
	assert_true(a.st_ino == b.st_ino); /* our own socket */
	assert_true(fcntl(qmp_fd(q), F_GETFL) & O_NONBLOCK);
	close(p.passed);
	qmp_close(q);
	close(sv[1]);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_burst_during_command),
		cmocka_unit_test(test_burst_between_commands),
		cmocka_unit_test(test_adopt),
		cmocka_unit_test(test_keep),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
