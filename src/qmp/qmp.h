/* qmp.h - a client for QEMU's QMP monitor over a unix socket.
 *
 * Commands are synchronous with a timeout; asynchronous events are queued
 * and handed to a callback by qmp_poll_events(). Everything QEMU sends is
 * treated as hostile: lines are bounded and must be JSON objects.
 */
#ifndef FERRY_QMP_H
#define FERRY_QMP_H

#include <stdint.h>

#include <jansson.h>

#include "common.h"

struct qmp;

/* Called once per event: name is the QMP event name, data may be NULL. */
typedef void (*qmp_event_cb)(struct qmp *q, const char *name, json_t *data,
			     void *arg);

/* Connect to the QMP socket at path, read the greeting and negotiate
 * capabilities, all within timeout_ms. */
int qmp_connect(const char *path, int timeout_ms, struct qmp **out,
		struct ferr *err);

/* Take over fd, a connected QMP stream whose greeting was already read or
 * is not expected (capabilities not negotiated): e.g. a socket QEMU was
 * handed, or a fuzzer's. Set non-blocking; owned by *out. */
int qmp_from_fd(int fd, struct qmp **out, struct ferr *err);

/* Hand QEMU a duplicate of q's own socket (QMP getfd): QEMU then holds
 * the connection open, so it and its negotiated capabilities outlive this
 * process, for a successor to take back (qmp_adopt). Only for a
 * connection with out-of-band execution (FERR_UNAVAILABLE otherwise).
 * While QEMU holds it, a new connection to that monitor is not served:
 * re-attach must adopt it. */
int qmp_keep(struct qmp *q, struct ferr *err);

/* Take over fd, a connection a predecessor negotiated (with out-of-band
 * execution) and kept with qmp_keep: its first line may be the tail of
 * one the predecessor read in part (dropped), and replies to the
 * predecessor's commands may still come (ignored). Owned by *out. */
int qmp_adopt(int fd, struct qmp **out, struct ferr *err);

/* Close the connection and free q (NULL is fine). Queued events are
 * dropped. */
void qmp_close(struct qmp *q);

/* The socket, for an event loop to watch for readability. */
int qmp_fd(const struct qmp *q);

/* Set the event callback. */
void qmp_set_event_cb(struct qmp *q, qmp_event_cb cb, void *arg);

/* Run command cmd with args (a JSON object or NULL; the reference is
 * stolen). On success *ret (if not NULL) gets a new reference to the
 * "return" value. A QMP error reply is FERR_UNAVAILABLE with QEMU's
 * description; no reply within FERRY_QMP_TIMEOUT_MS is FERR_TIMEOUT. Events
 * that arrive meanwhile are queued. */
int qmp_command(struct qmp *q, const char *cmd, json_t *args, json_t **ret,
		struct ferr *err);

/* Like qmp_command, out of band ("exec-oob") when QEMU offered it at
 * connect: for the commands QEMU allows there (migrate-recover,
 * migrate-pause), which must work while its main thread is blocked. */
int qmp_command_oob(struct qmp *q, const char *cmd, json_t *args,
		    json_t **ret, struct ferr *err);

/* Events dropped so far because more than the queue's bound arrived
 * between two dispatches (the oldest go first). Whoever tracks QEMU's
 * state from events should re-read it when this grows. */
uint64_t qmp_events_dropped(const struct qmp *q);

/* Read what is available without blocking and dispatch every queued event.
 * Returns -1 (FERR_UNAVAILABLE) when QEMU closed the socket or sent
 * something invalid; q must then be closed. */
int qmp_poll_events(struct qmp *q, struct ferr *err);

#endif
