/* series.c - the files of an audit log (the live audit.log and the files
 * rotated from it) and queries across them, read with bounded memory. */
#define _GNU_SOURCE
#include "audit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- series ---------------------------------------------------------------- */

/* Open path for reading a regular file (no symlinks); *size its size. */
static int open_regular(const char *path, uint64_t *size, struct ferr *err)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return ferr_set(err, errno == ENOENT ? FERR_NOT_FOUND : FERR_IO,
				"cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return ferr_set(err, FERR_IO, "%s is not a regular file",
				path);
	}
	*size = (uint64_t)st.st_size;
	return fd;
}

/* The N of a rotated file's name audit.log.<N> (decimal, no leading zero,
 * 1..AUDIT_SEQ_MAX), or 0 when name is not one. */
static uint64_t rotated_seq(const char *name)
{
	static const char prefix[] = AUDIT_LOG_NAME ".";
	uint64_t n = 0;

	if (strncmp(name, prefix, sizeof(prefix) - 1) != 0)
		return 0;
	name += sizeof(prefix) - 1;
	if (*name == '0' || parse_u64(name, 1, AUDIT_SEQ_MAX, &n) < 0)
		return 0;
	return n;
}

static int file_cmp(const void *a, const void *b)
{
	const struct audit_file *x = a, *y = b;

	/* the live file (0) sorts last */
	if (x->last_seq == y->last_seq)
		return 0;
	if (!x->last_seq || (y->last_seq && x->last_seq > y->last_seq))
		return 1;
	return -1;
}

/* Append a file to s. */
static int series_add(struct audit_series *s, const char *name,
		      uint64_t last_seq, size_t *cap, struct ferr *err)
{
	if (s->n == AUDIT_SERIES_MAX)
		return ferr_set(err, FERR_TOO_LARGE,
				"%s holds more than %d audit files", s->dir,
				AUDIT_SERIES_MAX);
	if (s->n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		struct audit_file *nf = realloc(s->files, ncap * sizeof(*nf));

		if (!nf)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
		s->files = nf;
		*cap = ncap;
	}
	snprintf(s->files[s->n].name, sizeof(s->files[0].name), "%s", name);
	s->files[s->n].last_seq = last_seq;
	s->n++;
	return 0;
}

int audit_series_list(const char *dir, struct audit_series *s,
		      struct ferr *err)
{
	struct dirent *de;
	size_t cap = 0;
	DIR *d;
	int rc = -1;

	memset(s, 0, sizeof(*s));
	s->live_fd = -1;
	if (fmt_checked(s->dir, sizeof(s->dir), err, "audit folder path", "%s",
			dir) < 0)
		return -1;
	d = opendir(dir);
	if (!d)
		return ferr_set(err, errno == ENOENT ? FERR_NOT_FOUND : FERR_IO,
				"cannot open %s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		uint64_t seq = rotated_seq(de->d_name);

		if ((seq || !strcmp(de->d_name, AUDIT_LOG_NAME)) &&
		    series_add(s, de->d_name, seq, &cap, err) < 0)
			goto out;
	}
	if (s->n)
		qsort(s->files, s->n, sizeof(*s->files), file_cmp);
	rc = 0;
out:
	closedir(d);
	if (rc < 0)
		audit_series_free(s);
	return rc;
}

int audit_series_from_path(const char *path, struct audit_series *s,
			   struct ferr *err)
{
	char dir[FERRY_PATH_MAX];
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	struct stat st;
	size_t cap = 0;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return audit_series_list(path, s, err);
	if (!slash || slash == path)
		snprintf(dir, sizeof(dir), "%s", slash ? "/" : ".");
	else if (fmt_checked(dir, sizeof(dir), err, "audit file path",
			     "%.*s", (int)(slash - path), path) < 0)
		return -1;
	if (!strcmp(base, AUDIT_LOG_NAME))
		return audit_series_list(dir, s, err);
	memset(s, 0, sizeof(*s));
	s->live_fd = -1;
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	if (strlen(base) >= sizeof(s->files[0].name))
		return ferr_set(err, FERR_INVALID, "%s: file name too long",
				path);
	return series_add(s, base, rotated_seq(base), &cap, err);
}

int audit_series_open(const struct audit_series *s, size_t i, uint64_t *size,
		      struct ferr *err)
{
	char path[FERRY_PATH_MAX];
	int fd;

	if (i >= s->n)
		return ferr_set(err, FERR_NOT_FOUND, "no such audit file");
	if (i == s->n - 1 && s->live_fd >= 0) {
		fd = fcntl(s->live_fd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0)
			return ferr_set(err, FERR_IO, "cannot read %s: %s",
					AUDIT_LOG_NAME, strerror(errno));
		*size = s->live_size;
		return fd;
	}
	if (fmt_checked(path, sizeof(path), err, "audit file path", "%s/%s",
			s->dir, s->files[i].name) < 0)
		return -1;
	return open_regular(path, size, err);
}

void audit_series_free(struct audit_series *s)
{
	if (s->live_fd >= 0)
		close(s->live_fd);
	free(s->files);
	s->files = NULL;
	s->n = 0;
	s->live_fd = -1;
}

/* ---- queries -------------------------------------------------------------- */

/* Does the string field key of rec equal want (NULL: anything)? */
static bool field_is(const json_t *rec, const char *key, const char *want)
{
	const char *s;

	if (!want)
		return true;
	s = json_string_value(json_object_get(rec, key));
	return s && !strcmp(s, want);
}

/* Does action match pattern: equal, or a prefix when pattern ends in
 * '*'? (NULL pattern: anything) */
static bool action_matches(const char *action, const char *pattern)
{
	size_t n;

	if (!pattern)
		return true;
	n = strlen(pattern);
	if (n > 0 && pattern[n - 1] == '*')
		return !strncmp(action, pattern, n - 1);
	return !strcmp(action, pattern);
}

/* Does a parsed record pass every filter of f (NULL: no filters)? */
static bool record_matches(const json_t *rec, const struct audit_filter *f)
{
	uint64_t ts;

	if (!f)
		return true;
	ts = (uint64_t)json_integer_value(json_object_get(rec, "ts"));
	if (f->since_ms && ts < f->since_ms)
		return false;
	if (f->until_ms && ts > f->until_ms)
		return false;
	return field_is(rec, "target", f->target) &&
	       field_is(rec, "actor", f->actor) &&
	       action_matches(json_string_value(json_object_get(rec,
							       "action")),
			      f->action);
}

/* The newest `cap` matches, in a ring. */
struct query {
	const struct audit_filter *f;
	json_t **ring;
	size_t cap;
	size_t count;  /* matches kept, at most cap */
	size_t next;   /* slot the next match goes to */
};

/* Keep one line in the ring when it parses and matches. */
static void query_line(struct query *q, const char *line, size_t len)
{
	json_t *rec = NULL;

	if (audit_parse_record(line, len, &rec, NULL) < 0)
		return;
	if (!record_matches(rec, q->f)) {
		json_decref(rec);
		return;
	}
	json_decref(q->ring[q->next]);
	q->ring[q->next] = rec;
	q->next = (q->next + 1) % q->cap;
	if (q->count < q->cap)
		q->count++;
}

/* Feed the complete lines of one file (size bytes of fd) to the query;
 * a final line without a newline is skipped. */
static int query_file(struct query *q, int fd, uint64_t size, char *chunk,
		      char *line, const char *name, struct ferr *err)
{
	bool skipping = false; /* inside a line longer than AUDIT_LINE_MAX */
	uint64_t off = 0;
	size_t llen = 0;

	while (off < size) {
		size_t want = size - off < AUDIT_READ_CHUNK
				      ? (size_t)(size - off)
				      : AUDIT_READ_CHUNK;
		ssize_t n = pread(fd, chunk, want, (off_t)off);
		const char *p, *end;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ferr_set(err, FERR_IO, "cannot read %s: %s",
					name, strerror(errno));
		if (n == 0)
			break;
		off += (uint64_t)n;
		for (p = chunk, end = chunk + n; p < end;) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t take = (size_t)((nl ? nl : end) - p);

			if (!skipping && take <= AUDIT_LINE_MAX - llen) {
				memcpy(line + llen, p, take);
				llen += take;
			} else {
				skipping = true;
			}
			p += take;
			if (!nl)
				break;
			if (!skipping)
				query_line(q, line, llen);
			skipping = false;
			llen = 0;
			p++;
		}
	}
	return 0;
}

json_t *audit_query(const char *path, const struct audit_filter *f,
		    struct ferr *err)
{
	struct audit_series s = { .live_fd = -1 };
	struct query q = { .f = f };
	struct ferr oerr = { 0 };
	char *chunk = NULL, *line = NULL;
	bool ok = false;
	json_t *arr = NULL;

	q.cap = (f && f->limit && f->limit < AUDIT_QUERY_MAX)
			? f->limit : AUDIT_QUERY_MAX;
	if (audit_series_from_path(path, &s, &oerr) < 0 &&
	    oerr.code != FERR_NOT_FOUND) {
		if (err)
			*err = oerr;
		return NULL;
	}
	arr = json_array();
	q.ring = calloc(q.cap, sizeof(*q.ring));
	chunk = malloc(AUDIT_READ_CHUNK);
	line = malloc(AUDIT_LINE_MAX);
	if (!arr || !q.ring || !chunk || !line) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < s.n; i++) {
		uint64_t size = 0;
		int fd = audit_series_open(&s, i, &size, &oerr);
		int rc;

		if (fd < 0 && oerr.code == FERR_NOT_FOUND)
			continue; /* rotated away meanwhile */
		if (fd < 0) {
			if (err)
				*err = oerr;
			goto out;
		}
		rc = query_file(&q, fd, size, chunk, line, s.files[i].name,
				err);
		close(fd);
		if (rc < 0)
			goto out;
	}
	for (size_t i = 0; i < q.count; i++) {
		size_t slot = (q.next + q.cap - q.count + i) % q.cap;
		json_t *rec = q.ring[slot];

		q.ring[slot] = NULL;
		if (json_array_append_new(arr, rec) < 0) {
			ferr_set(err, FERR_INTERNAL, "out of memory");
			goto out;
		}
	}
	ok = true;
out:
	if (!ok) {
		json_decref(arr);
		arr = NULL;
	}
	for (size_t i = 0; q.ring && i < q.cap; i++)
		json_decref(q.ring[i]);
	free(q.ring);
	free(chunk);
	free(line);
	audit_series_free(&s);
	return arr;
}
