/* audit_int.h - what the writer's files share (audit.c: records, rotation
 * and the API; key.c: the host key; tail.c: recovery of the log's tail).
 * Not for other components: they use audit.h. */
#ifndef FERRY_AUDIT_INT_H
#define FERRY_AUDIT_INT_H

#include <pthread.h>

#include "audit.h"

#define AUDIT_DIR_MODE 0700
#define AUDIT_LOG_MODE 0640
#define AUDIT_KEY_MODE 0600
#define AUDIT_PUB_MODE 0644
#define AUDIT_TORN_MODE 0640
#define AUDIT_KEY_GROUP_OTHER 0077   /* key mode bits that must be clear */
#define AUDIT_TAIL_CHUNK 4096        /* bytes read per step backwards */
#define AUDIT_TORN_NAMES_MAX 100     /* audit.torn.<off>, .1 ... .99 */

struct audit {
	pthread_mutex_t mu;
	int fd;                              /* audit.log, O_APPEND, flock'ed */
	EVP_PKEY *key;                       /* the host's Ed25519 key */
	char dir[FERRY_PATH_MAX];
	char path[FERRY_PATH_MAX];           /* <dir>/audit.log */
	char host[FERRY_NAME_MAX + 1];
	uint64_t seq;                        /* seq of the last record */
	char prev[AUDIT_HASH_HEX_LEN + 1];   /* hash of the last line */
	uint64_t size;                       /* bytes of complete records */
	bool broken;                         /* a write failed: refuse more */
	uint64_t rotate_bytes;               /* rotate past this size; 0: never */
	char line[AUDIT_LINE_MAX + 1];       /* the record being built */
};

/* What audit_open found at the end of the log. */
struct audit_tail {
	bool torn;                           /* a partial line was moved */
	uint64_t torn_offset;
	uint64_t torn_bytes;
	char torn_name[FERRY_PATH_MAX];      /* base name it was saved as */
	bool suspect;                        /* the last line is not good */
	uint64_t suspect_offset;
	char reason[FERRY_ERR_MSG_MAX];
	char rotated_from[AUDIT_FILE_NAME_MAX]; /* audit.log was empty: the
						   chain goes on from this
						   rotated file */
};

/* Read exactly len bytes at off; a short file is EIO. */
int audit_pread_all(int fd, void *buf, size_t len, uint64_t off);

/* fsync a folder, so entries created in it are durable. */
int audit_fsync_dir(const char *dir, struct ferr *err);

/* Load <dir>/audit.key or create it, and keep audit.pub in step (key.c). */
int audit_key_open(const char *dir, EVP_PKEY **key, struct ferr *err);

/* Use the caller's key (sealed storage) instead of <dir>/audit.key, and
 * keep audit.pub in step (key.c). */
int audit_key_given(const char *dir, EVP_PKEY *given, EVP_PKEY **key,
		    struct ferr *err);

/* A log that does not end in '\n' has a torn tail: save it, cut it off and
 * make that durable. Sets a->size to the size that remains (tail.c). */
int audit_tail_recover(struct audit *a, struct audit_tail *t,
		       struct ferr *err);

/* Continue seq and prev from the last complete line of fd (size bytes,
 * ending in '\n'); note in *t when that line is not a good record of this
 * key (tail.c). */
int audit_head_load(struct audit *a, int fd, uint64_t size,
		    struct audit_tail *t, struct ferr *err);

#endif
