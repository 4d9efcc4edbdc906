/* qmp.c - QMP client: bounded line reader, commands and event queue. */
#define _GNU_SOURCE
#include "qmp.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define QMP_READ_CHUNK 65536
#define QMP_EVENTS_MAX 256 /* queued events; older ones are dropped */
#define QMP_KEEP_FDNAME "ferry-qmp-keep"

struct qmp {
	int fd;
	char *buf;       /* bytes read but not yet parsed */
	size_t len;
	size_t cap;
	uint64_t next_id;
	json_t *events;  /* queued events (array), at most QMP_EVENTS_MAX */
	uint64_t dropped; /* events dropped because the queue was full */
	qmp_event_cb cb;
	void *cb_arg;
	bool oob;        /* out-of-band execution negotiated */
	bool resync;     /* adopted: the first line may be a partial one */
};

int qmp_fd(const struct qmp *q)
{
	return q->fd;
}

void qmp_set_event_cb(struct qmp *q, qmp_event_cb cb, void *arg)
{
	q->cb = cb;
	q->cb_arg = arg;
}

void qmp_close(struct qmp *q)
{
	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	free(q->buf);
	json_decref(q->events);
	free(q);
}

/* Read once from the socket into the buffer. Returns bytes read, 0 on EOF,
 * -1 with errno (EAGAIN when nothing is there). */
static ssize_t fill(struct qmp *q)
{
	ssize_t n;

	if (q->cap - q->len < QMP_READ_CHUNK) {
		size_t ncap = q->cap ? q->cap * 2 : QMP_READ_CHUNK * 2;
		char *nb;

		if (ncap > FERRY_QMP_LINE_MAX + QMP_READ_CHUNK * 2) {
			errno = EMSGSIZE;
			return -1;
		}
		nb = realloc(q->buf, ncap);
		if (!nb)
			return -1;
		q->buf = nb;
		q->cap = ncap;
	}
	do {
		n = read(q->fd, q->buf + q->len, q->cap - q->len);
	} while (n < 0 && errno == EINTR);
	if (n > 0)
		q->len += (size_t)n;
	return n;
}

/* Take one complete line off the buffer and parse it. Returns 1 with *msg
 * set, 0 when no complete line is buffered, -1 on an invalid message. */
static int take_line(struct qmp *q, json_t **msg, struct ferr *err)
{
	char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
	size_t linelen;
	json_error_t jerr;

	if (!nl) {
		if (q->len > FERRY_QMP_LINE_MAX)
			return ferr_set(err, FERR_UNAVAILABLE,
					"QMP message longer than %d bytes",
					FERRY_QMP_LINE_MAX);
		return 0;
	}
	linelen = (size_t)(nl - q->buf);
	*msg = json_loadb(q->buf, linelen, JSON_REJECT_DUPLICATES, &jerr);
	memmove(q->buf, nl + 1, q->len - linelen - 1);
	q->len -= linelen + 1;
	if (!*msg || !json_is_object(*msg) ||
	    json_check_depth(*msg, "QMP message", err) < 0) {
		json_decref(*msg);
		*msg = NULL;
		if (q->resync) {
			/* the tail of a line our predecessor read in part */
			q->resync = false;
			return take_line(q, msg, err);
		}
		return ferr_set(err, FERR_UNAVAILABLE,
				"QEMU sent an invalid QMP message");
	}
	q->resync = false;
	return 1;
}

/* Wait for and return the next message, within deadline (now_ms()). */
static json_t *next_message(struct qmp *q, uint64_t deadline, struct ferr *err)
{
	for (;;) {
		json_t *msg = NULL;
		int r = take_line(q, &msg, err);
		struct pollfd pfd = { .fd = q->fd, .events = POLLIN };
		uint64_t now;
		ssize_t n;

		if (r < 0)
			return NULL;
		if (r > 0)
			return msg;
		now = now_ms();
		if (now >= deadline) {
			ferr_set(err, FERR_TIMEOUT, "QEMU did not answer in time");
			return NULL;
		}
		r = poll(&pfd, 1, (int)(deadline - now));
		if (r < 0 && errno != EINTR) {
			ferr_set(err, FERR_IO, "poll: %s", strerror(errno));
			return NULL;
		}
		if (r <= 0)
			continue;
		n = fill(q);
		if (n == 0) {
			ferr_set(err, FERR_UNAVAILABLE, "QEMU closed QMP");
			return NULL;
		}
		if (n < 0 && errno != EAGAIN) {
			ferr_set(err, FERR_UNAVAILABLE, "QMP read: %s",
				 strerror(errno));
			return NULL;
		}
	}
}

/* Send one byte of buf with descriptor fd attached (SCM_RIGHTS). */
static ssize_t send_with_fd(int sock, const char *buf, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

	memset(u.buf, 0, sizeof(u.buf));
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &mh, MSG_NOSIGNAL);
}

/* Send one JSON object followed by a newline, within deadline; passfd (if
 * not -1) goes with its first byte. */
static int send_message(struct qmp *q, json_t *msg, int passfd,
			uint64_t deadline, struct ferr *err)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	size_t len, off = 0;
	int rc = -1;

	if (!text)
		return ferr_set(err, FERR_INTERNAL, "cannot encode QMP command");
	len = strlen(text);
	text[len] = '\n'; /* replaces the NUL; we send by length */
	len++;
	while (off < len) {
		ssize_t n = passfd >= 0 ? send_with_fd(q->fd, text, passfd)
					: send(q->fd, text + off, len - off,
					       MSG_NOSIGNAL);

		if (n > 0)
			passfd = -1;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd pfd = { .fd = q->fd, .events = POLLOUT };
			uint64_t now = now_ms();

			if (now >= deadline) {
				ferr_set(err, FERR_TIMEOUT,
					 "QEMU does not read QMP");
				goto out;
			}
			poll(&pfd, 1, (int)(deadline - now));
			continue;
		}
		if (n < 0) {
			ferr_set(err, FERR_UNAVAILABLE, "QMP write: %s",
				 strerror(errno));
			goto out;
		}
		off += (size_t)n;
	}
	rc = 0;
out:
	free(text);
	return rc;
}

/* Queue an event message for qmp_poll_events. A full queue drops its
 * oldest event (and counts it): a burst of events never makes a QEMU look
 * broken, and whoever tracks state re-reads it (qmp_events_dropped). */
static void queue_event(struct qmp *q, json_t *msg)
{
	if (json_array_size(q->events) >= QMP_EVENTS_MAX) {
		json_array_remove(q->events, 0);
		q->dropped++;
	}
	json_array_append(q->events, msg);
}

uint64_t qmp_events_dropped(const struct qmp *q)
{
	return q->dropped;
}

static int run_command(struct qmp *q, const char *verb, const char *cmd,
		       json_t *args, int passfd, json_t **ret,
		       struct ferr *err)
{
	uint64_t deadline = now_ms() + FERRY_QMP_TIMEOUT_MS;
	uint64_t id = ++q->next_id;
	json_t *req, *msg = NULL;
	int rc = -1;

	req = json_pack("{s:s, s:I}", verb, cmd, "id", (json_int_t)id);
	if (!req) {
		json_decref(args);
		return ferr_set(err, FERR_INTERNAL, "cannot build QMP command");
	}
	if (args)
		json_object_set_new(req, "arguments", args);
	if (send_message(q, req, passfd, deadline, err) < 0)
		goto out;
	for (;;) {
		json_t *jid, *e;

		msg = next_message(q, deadline, err);
		if (!msg)
			goto out;
		if (json_object_get(msg, "event")) {
			queue_event(q, msg);
			json_decref(msg);
			msg = NULL;
			continue;
		}
		jid = json_object_get(msg, "id");
		if (!json_is_integer(jid) ||
		    (uint64_t)json_integer_value(jid) != id) {
			/* a late reply to an earlier, timed-out command */
			json_decref(msg);
			msg = NULL;
			continue;
		}
		e = json_object_get(msg, "error");
		if (e) {
			const char *desc =
				json_string_value(json_object_get(e, "desc"));
			ferr_set(err, FERR_UNAVAILABLE, "QEMU %s: %.200s", cmd,
				 desc ? desc : "error");
			goto out;
		}
		if (ret) {
			*ret = json_object_get(msg, "return");
			if (!*ret) {
				ferr_set(err, FERR_UNAVAILABLE,
					 "QEMU %s: reply without a return",
					 cmd);
				goto out;
			}
			json_incref(*ret);
		}
		rc = 0;
		goto out;
	}
out:
	json_decref(msg);
	json_decref(req);
	return rc;
}

int qmp_command(struct qmp *q, const char *cmd, json_t *args, json_t **ret,
		struct ferr *err)
{
	return run_command(q, "execute", cmd, args, -1, ret, err);
}

int qmp_keep(struct qmp *q, struct ferr *err)
{
	int rc;

	if (!q->oob)
		return ferr_set(err, FERR_UNAVAILABLE,
				"QEMU offered no out-of-band execution");
	rc = run_command(q, "execute", "getfd",
			 json_pack("{s:s}", "fdname", QMP_KEEP_FDNAME), q->fd,
			 NULL, err);

	/* QEMU makes the descriptors it receives blocking, and the flag is
	 * the socket's, shared with ours */
	if (fd_set_nonblock(q->fd) < 0 && rc == 0)
		rc = ferr_set(err, FERR_IO, "fcntl: %s", strerror(errno));
	return rc;
}

int qmp_command_oob(struct qmp *q, const char *cmd, json_t *args,
		    json_t **ret, struct ferr *err)
{
	return run_command(q, q->oob ? "exec-oob" : "execute", cmd, args, -1,
			   ret, err);
}

int qmp_poll_events(struct qmp *q, struct ferr *err)
{
	int rc = 0;
	bool eof = false;

	/* read and parse in turns, so the buffer holds at most one partial
	 * message however many events QEMU has sent */
	while (!eof) {
		ssize_t n = fill(q);

		if (n == 0) {
			eof = true;
		} else if (n < 0) {
			if (errno != EAGAIN)
				rc = ferr_set(err, FERR_UNAVAILABLE,
					      "QMP read: %s", strerror(errno));
			break;
		}
		for (;;) {
			json_t *msg = NULL;
			int r = take_line(q, &msg, err);

			if (r < 0)
				return -1;
			if (r == 0)
				break;
			if (json_object_get(msg, "event"))
				queue_event(q, msg);
			json_decref(msg);
		}
	}
	while (json_array_size(q->events) > 0) {
		json_t *ev = json_incref(json_array_get(q->events, 0));
		const char *name = json_string_value(json_object_get(ev, "event"));

		json_array_remove(q->events, 0);
		if (q->cb && name)
			q->cb(q, name, json_object_get(ev, "data"), q->cb_arg);
		json_decref(ev);
	}
	if (eof && rc == 0)
		rc = ferr_set(err, FERR_UNAVAILABLE, "QEMU closed QMP");
	return rc;
}

int qmp_from_fd(int fd, struct qmp **out, struct ferr *err)
{
	struct qmp *q = calloc(1, sizeof(*q));

	if (!q || !(q->events = json_array())) {
		free(q);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	q->fd = fd;
	if (fd_set_nonblock(fd) < 0) {
		qmp_close(q);
		return ferr_set(err, FERR_IO, "fcntl: %s", strerror(errno));
	}
	*out = q;
	return 0;
}

int qmp_adopt(int fd, struct qmp **out, struct ferr *err)
{
	if (qmp_from_fd(fd, out, err) < 0)
		return -1;
	(*out)->oob = true;    /* qmp_keep keeps only such connections */
	(*out)->resync = true;
	/* ids far from our predecessor's, whose late replies may come */
	(*out)->next_id = (wall_ms() & 0xffffffffffULL) << 16;
	return 0;
}

int qmp_connect(const char *path, int timeout_ms, struct qmp **out,
		struct ferr *err)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct qmp *q;
	json_t *greet = NULL, *caps, *c;
	size_t i;

	if (strlen(path) >= sizeof(sa.sun_path))
		return ferr_set(err, FERR_INVALID, "QMP path too long: %s",
				path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	q = calloc(1, sizeof(*q));
	if (!q)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	q->events = json_array();
	q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (q->fd < 0 || !q->events) {
		ferr_set(err, FERR_IO, "socket: %s", strerror(errno));
		goto fail;
	}
	if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ferr_set(err, FERR_UNAVAILABLE, "cannot connect to QMP %s: %s",
			 path, strerror(errno));
		goto fail;
	}
	if (fd_set_nonblock(q->fd) < 0) {
		ferr_set(err, FERR_IO, "fcntl: %s", strerror(errno));
		goto fail;
	}
	greet = next_message(q, deadline, err);
	if (!greet)
		goto fail;
	if (!json_object_get(greet, "QMP")) {
		ferr_set(err, FERR_UNAVAILABLE, "QMP greeting missing");
		goto fail;
	}
	/* out-of-band commands when QEMU offers them: they run even while
	 * its main thread is blocked (a post-copy VM waiting for pages) */
	caps = json_object_get(json_object_get(greet, "QMP"), "capabilities");
	json_array_foreach(caps, i, c)
		if (json_is_string(c) && !strcmp(json_string_value(c), "oob"))
			q->oob = true;
	json_decref(greet);
	greet = NULL;
	if (qmp_command(q, "qmp_capabilities",
			q->oob ? json_pack("{s:[s]}", "enable", "oob") : NULL,
			NULL, err) < 0)
		goto fail;
	*out = q;
	return 0;
fail:
	json_decref(greet);
	qmp_close(q);
	return -1;
}
