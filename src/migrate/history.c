/* history.c - finished migrations: <state>/migrations.jsonl, one JSON
 * record a line, fsync'd, rotated by size to migrations.jsonl.1. At start
 * only the file's tail is read, so a large file never stops the load. */
#define _GNU_SOURCE
#include "migrate_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Parse the complete lines of text (len bytes) into h->recs; the first
 * line is skipped when skip_first (it may be cut). */
static void parse_lines(struct history *h, char *text, size_t len,
			bool skip_first)
{
	char *p = text, *end = text + len;

	if (skip_first) {
		char *nl = memchr(p, '\n', len);

		p = nl ? nl + 1 : end;
	}
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		json_t *rec;

		if (!nl)
			break; /* a torn last line */
		rec = json_loadb(p, (size_t)(nl - p), JSON_REJECT_DUPLICATES,
				 NULL);
		if (json_is_object(rec) &&
		    json_check_depth(rec, "history", NULL) == 0) {
			json_array_append_new(h->recs, rec);
			if (json_array_size(h->recs) > MIG_HISTORY_MAX)
				json_array_remove(h->recs, 0);
		} else {
			json_decref(rec);
			log_warn("migration history: skipping a bad line");
		}
		p = nl + 1;
	}
}

int history_open(struct history *h, const char *state_dir, struct ferr *err)
{
	struct stat st;
	char *text = NULL;
	size_t got = 0;
	off_t off = 0;
	int fd;

	h->recs = json_array();
	if (!h->recs)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	if (fmt_checked(h->path, sizeof(h->path), err, "path",
			"%s/migrations.jsonl", state_dir) < 0)
		return -1;
	fd = open(h->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warn("migration history %s: %s", h->path,
				 strerror(errno));
		return 0;
	}
	if (fstat(fd, &st) == 0 && st.st_size > MIG_HISTORY_TAIL)
		off = st.st_size - MIG_HISTORY_TAIL;
	text = malloc(MIG_HISTORY_TAIL + 1);
	if (text && lseek(fd, off, SEEK_SET) == off &&
	    fd_read_upto(fd, text, MIG_HISTORY_TAIL, &got) == 0)
		parse_lines(h, text, got, off > 0);
	else
		log_warn("migration history %s: cannot read it", h->path);
	free(text);
	close(fd);
	return 0;
}

void history_close(struct history *h)
{
	json_decref(h->recs);
	h->recs = NULL;
}

/* Past MIG_HISTORY_ROTATE bytes, the file becomes migrations.jsonl.1. */
static void maybe_rotate(struct history *h)
{
	char old[FERRY_PATH_MAX + 4];
	struct stat st;

	if (stat(h->path, &st) < 0 || st.st_size < MIG_HISTORY_ROTATE)
		return;
	snprintf(old, sizeof(old), "%s.1", h->path);
	if (rename(h->path, old) < 0)
		log_warn("migration history: cannot rotate %s: %s", h->path,
			 strerror(errno));
	else
		log_info("migration history: rotated to %s", old);
}

void history_add(struct history *h, const json_t *rec)
{
	char *line = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
	int fd;

	json_array_append(h->recs, (json_t *)rec);
	if (json_array_size(h->recs) > MIG_HISTORY_MAX)
		json_array_remove(h->recs, 0);
	if (!line)
		return;
	maybe_rotate(h);
	fd = open(h->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0 || fd_write_all(fd, line, strlen(line)) < 0 ||
	    fd_write_all(fd, "\n", 1) < 0 || fsync(fd) < 0)
		log_warn("cannot append to %s: %s", h->path, strerror(errno));
	if (fd >= 0)
		close(fd);
	free(line);
}

json_t *history_find(struct history *h, const char *id)
{
	size_t i;
	json_t *rec;

	json_array_foreach(h->recs, i, rec) {
		if (!strcmp(json_string_value(json_object_get(rec, "id")) ?: "",
			    id))
			return json_deep_copy(rec);
	}
	return NULL;
}
