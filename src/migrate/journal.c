/* journal.c - the durable record of migrations in flight: one small JSON
 * file per migration and role, replaced atomically (temp file, fsync,
 * rename, fsync of the folder) at each phase that changes what recovery
 * must do. */
#define _GNU_SOURCE
#include "migrate_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *role_prefix(enum journal_role role)
{
	return role == JOURNAL_SOURCE ? "src" : "dst";
}

int journal_init(const char *state_dir, char *dir, size_t len,
		 struct ferr *err)
{
	if (fmt_checked(dir, len, err, "path", "%s/journal", state_dir) < 0)
		return -1;
	return mkdir_p(dir, 0700, err);
}

static int rec_path(const char *dir, enum journal_role role, const char *id,
		    char *out, size_t len, struct ferr *err)
{
	return fmt_checked(out, len, err, "journal path", "%s/%s-%s.json", dir,
			   role_prefix(role), id);
}

/* Is s exactly 32 lowercase hex digits? */
static bool id_ok(const char *s)
{
	if (!s || strlen(s) != MIG_ID_HEX_LEN)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

int journal_write(const char *dir, enum journal_role role, const char *id,
		  json_t *rec, struct ferr *err)
{
	char path[FERRY_PATH_MAX], version[16];
	char *text;
	int rc;

	if (!id_ok(id))
		return ferr_set(err, FERR_INTERNAL, "bad journal id");
	if (rec_path(dir, role, id, path, sizeof(path), err) < 0)
		return -1;
	snprintf(version, sizeof(version), "%d.%d", JOURNAL_VERSION_MAJOR,
		 JOURNAL_VERSION_MINOR);
	json_object_set_new(rec, "version", json_string(version));
	json_object_set_new(rec, "id", json_string(id));
	json_object_set_new(rec, "role",
			    json_string(role == JOURNAL_SOURCE ? "source"
							       : "destination"));
	json_object_set_new(rec, "updated_at",
			    json_integer((json_int_t)wall_ms()));
	text = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
	if (!text)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	rc = file_write_atomic(path, text, strlen(text), 0600, err);
	free(text);
	if (rc < 0)
		ferr_wrap(err, "journal");
	return rc;
}

int journal_remove(const char *dir, enum journal_role role, const char *id,
		   struct ferr *err)
{
	char path[FERRY_PATH_MAX];

	if (rec_path(dir, role, id, path, sizeof(path), err) < 0)
		return -1;
	if (unlink(path) < 0 && errno != ENOENT)
		return ferr_set(err, FERR_IO, "cannot remove %s: %s", path,
				strerror(errno));
	return 0;
}

int journal_check(const json_t *rec, struct ferr *err)
{
	const char *v, *dot;
	uint64_t major, minor;
	char buf[16];

	if (!json_is_object(rec))
		return ferr_set(err, FERR_INVALID,
				"a journal record must be an object");
	v = json_string_value(json_object_get(rec, "version"));
	dot = v ? strchr(v, '.') : NULL;
	if (!dot || (size_t)(dot - v) >= sizeof(buf))
		return ferr_set(err, FERR_INVALID,
				"a journal record needs a version "
				"\"MAJOR.MINOR\"");
	memcpy(buf, v, (size_t)(dot - v));
	buf[dot - v] = '\0';
	if (parse_u64(buf, 0, 1000, &major) < 0 ||
	    parse_u64(dot + 1, 0, 1000000, &minor) < 0)
		return ferr_set(err, FERR_INVALID,
				"journal version \"%.20s\" is malformed", v);
	if (major != JOURNAL_VERSION_MAJOR)
		return ferr_set(err, FERR_INVALID,
				"journal version %.20s is not understood by "
				"this ferryd (major version %d)",
				v, JOURNAL_VERSION_MAJOR);
	if (!id_ok(json_string_value(json_object_get(rec, "id"))))
		return ferr_set(err, FERR_INVALID,
				"a journal record needs an id of %d hex "
				"digits",
				MIG_ID_HEX_LEN);
	return 0;
}

/* Read and check one record file. */
static json_t *read_path(const char *path, struct ferr *err)
{
	char *text = NULL;
	size_t len = 0;
	json_t *rec;

	if (file_read_all(path, JOURNAL_FILE_MAX, &text, &len, err) < 0)
		return NULL;
	rec = json_parse_object(text, len, path, err);
	free(text);
	if (rec && journal_check(rec, err) < 0) {
		json_decref(rec);
		return NULL;
	}
	return rec;
}

json_t *journal_read(const char *dir, enum journal_role role, const char *id,
		     struct ferr *err)
{
	char path[FERRY_PATH_MAX];

	if (rec_path(dir, role, id, path, sizeof(path), err) < 0)
		return NULL;
	return read_path(path, err);
}

/* Is rec a terminal destination record older than JOURNAL_KEEP_MS? */
static bool expired(const json_t *rec)
{
	const char *phase = json_string_value(json_object_get(rec, "phase"));
	json_int_t at = json_integer_value(json_object_get(rec, "updated_at"));
	uint64_t now = wall_ms();

	if (!phase || (strcmp(phase, "committed") != 0 &&
		       strcmp(phase, "aborted") != 0))
		return false;
	return at > 0 && now > (uint64_t)at &&
	       now - (uint64_t)at > JOURNAL_KEEP_MS;
}

json_t *journal_load(const char *dir, struct ferr *err)
{
	json_t *out = json_pack("{s:[], s:[]}", "source", "destination");
	struct dirent *de;
	unsigned n = 0;
	DIR *d;

	if (!out) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	d = opendir(dir);
	if (!d) {
		json_decref(out);
		ferr_set(err, FERR_IO, "cannot open %s: %s", dir,
			 strerror(errno));
		return NULL;
	}
	while ((de = readdir(d))) {
		char path[FERRY_PATH_MAX];
		size_t len = strlen(de->d_name);
		struct ferr e2;
		bool src;
		json_t *rec;

		if (len < 9 || strcmp(de->d_name + len - 5, ".json") != 0)
			continue;
		src = !strncmp(de->d_name, "src-", 4);
		if (!src && strncmp(de->d_name, "dst-", 4) != 0)
			continue;
		if (++n > JOURNAL_RECORDS_MAX) {
			log_error("journal: more than %d records in %s; the "
				  "rest is not read",
				  JOURNAL_RECORDS_MAX, dir);
			break;
		}
		if (fmt_checked(path, sizeof(path), &e2, "path", "%s/%s", dir,
				de->d_name) < 0)
			continue;
		rec = read_path(path, &e2);
		if (!rec) {
			log_error("journal: %s: %s (left in place)", path,
				  e2.msg);
			continue;
		}
		if (!src && expired(rec)) {
			unlink(path);
			json_decref(rec);
			continue;
		}
		json_array_append_new(json_object_get(out, src ? "source"
							       : "destination"),
				      rec);
	}
	closedir(d);
	return out;
}
