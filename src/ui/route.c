/* route.c - the dashboard's own API: paths, names and query parameters are
 * checked here, before anything reaches a host. */
#include "ui.h"

#include <stdio.h>
#include <string.h>

#define SEGMENTS_MAX 6

/* Split "/api/a/b" into segments after "/api/"; each a non-empty name-sized
 * piece. */
static int split(const char *path, char seg[][FERRY_NAME_MAX + 1], int *n,
		 struct ferr *err)
{
	const char *p;

	*n = 0;
	if (strncmp(path, "/api/", 5) != 0)
		return ferr_set(err, FERR_NOT_FOUND, "no such page");
	p = path + 5;
	for (;;) {
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (*n == SEGMENTS_MAX || len == 0 || len > FERRY_NAME_MAX)
			return ferr_set(err, FERR_NOT_FOUND, "no such route");
		memcpy(seg[*n], p, len);
		seg[*n][len] = '\0';
		(*n)++;
		if (!end)
			return 0;
		p = end + 1;
	}
}

/* Is s an audit action filter: [a-z0-9._-]+ with an optional final '*'? */
static bool action_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > FERRY_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' ||
		      (c == '*' && i == n - 1)))
			return false;
	}
	return true;
}

/* Check a query parameter of route kind and append it to r->query. */
static int add_param(struct ui_route *r, const char *key, const char *val,
		     struct ferr *err)
{
	uint64_t v;
	bool ok;
	size_t n = strlen(r->query);

	if (r->kind == UI_R_CONSOLE && !strcmp(key, "offset"))
		ok = parse_u64(val, 0, INT64_MAX, &v) == 0;
	else if (r->kind == UI_R_AUDIT &&
		 (!strcmp(key, "since") || !strcmp(key, "until")))
		ok = parse_u64(val, 0, INT64_MAX, &v) == 0;
	else if (r->kind == UI_R_AUDIT && !strcmp(key, "limit"))
		ok = parse_u64(val, 1, FERRY_AUDIT_QUERY_MAX, &v) == 0;
	else if (r->kind == UI_R_AUDIT &&
		 (!strcmp(key, "vm") || !strcmp(key, "actor")))
		ok = name_is_valid(val);
	else if (r->kind == UI_R_AUDIT && !strcmp(key, "action"))
		ok = action_ok(val);
	else
		return ferr_set(err, FERR_INVALID,
				"unknown query parameter \"%.32s\"", key);
	if (!ok)
		return ferr_set(err, FERR_INVALID,
				"bad value for query parameter %s", key);
	if (snprintf(r->query + n, sizeof(r->query) - n, "%c%s=%s",
		     n ? '&' : '?', key, val) >= (int)(sizeof(r->query) - n))
		return ferr_set(err, FERR_INVALID, "query too long");
	return 0;
}

/* Check and rebuild the query string "k=v&k=v" (no escapes). */
static int parse_query(struct ui_route *r, const char *query,
		       struct ferr *err)
{
	char buf[512], *save = NULL, *kv;

	r->query[0] = '\0';
	if (!query || !*query)
		return 0;
	if (strlen(query) >= sizeof(buf))
		return ferr_set(err, FERR_INVALID, "query too long");
	snprintf(buf, sizeof(buf), "%s", query);
	for (kv = strtok_r(buf, "&", &save); kv;
	     kv = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(kv, '=');

		if (!eq || eq == kv)
			return ferr_set(err, FERR_INVALID,
					"query parameters are key=value");
		*eq = '\0';
		/* the same key twice would be ambiguous */
		for (const char *p = r->query; (p = strstr(p, kv)); p++)
			if (p > r->query && (p[-1] == '?' || p[-1] == '&') &&
			    p[strlen(kv)] == '=')
				return ferr_set(err, FERR_INVALID,
						"query parameter %s given "
						"twice",
						kv);
		if (add_param(r, kv, eq + 1, err) < 0)
			return -1;
	}
	return 0;
}

static int need(const char *method, const char *want, struct ferr *err)
{
	if (strcmp(method, want) != 0)
		return ferr_set(err, FERR_METHOD, "use %s here", want);
	return 0;
}

/* Copy a name segment after checking it. */
static int take_name(char *out, const char *s, const char *what,
		     struct ferr *err)
{
	if (!name_is_valid(s))
		return ferr_set(err, FERR_INVALID, "\"%.64s\" is not a valid "
				"%s name", s, what);
	snprintf(out, FERRY_NAME_MAX + 1, "%s", s);
	return 0;
}

int ui_route_parse(const char *method, const char *path, const char *query,
		   struct ui_route *r, struct ferr *err)
{
	char seg[SEGMENTS_MAX][FERRY_NAME_MAX + 1];
	int n;

	memset(r, 0, sizeof(*r));
	if (split(path, seg, &n, err) < 0)
		return -1;
	if (n == 1 && !strcmp(seg[0], "state")) {
		r->kind = UI_R_STATE;
		return need(method, "GET", err) < 0 ? -1
						   : parse_query(r, query, err);
	}
	if (n == 2 && !strcmp(seg[0], "balance") && !strcmp(seg[1], "mode")) {
		r->kind = UI_R_BAL_MODE;
		r->post = true;
		return need(method, "POST", err) < 0 ? -1
						    : parse_query(r, query, err);
	}
	if (n < 3 || strcmp(seg[0], "hosts") != 0)
		return ferr_set(err, FERR_NOT_FOUND, "no such route");
	if (take_name(r->host, seg[1], "host", err) < 0)
		return -1;
	if (n == 3 && (!strcmp(seg[2], "drain") || !strcmp(seg[2], "undrain"))) {
		r->kind = UI_R_DRAIN;
		r->post = true;
		snprintf(r->verb, sizeof(r->verb), "%s", seg[2]);
	} else if (n == 3 && !strcmp(seg[2], "audit")) {
		r->kind = UI_R_AUDIT;
	} else if (n == 4 && !strcmp(seg[2], "audit") &&
		   !strcmp(seg[3], "verify")) {
		r->kind = UI_R_VERIFY;
	} else if (n == 5 && !strcmp(seg[2], "migrations") &&
		   !strcmp(seg[4], "cancel")) {
		r->kind = UI_R_CANCEL;
		r->post = true;
		if (take_name(r->vm, seg[3], "migration", err) < 0)
			return -1;
	} else if (n == 5 && !strcmp(seg[2], "vms")) {
		if (take_name(r->vm, seg[3], "VM", err) < 0)
			return -1;
		if (!strcmp(seg[4], "console")) {
			r->kind = UI_R_CONSOLE;
		} else if (!strcmp(seg[4], "migrate")) {
			r->kind = UI_R_MIGRATE;
			r->post = true;
		} else if (!strcmp(seg[4], "start") || !strcmp(seg[4], "stop") ||
			   !strcmp(seg[4], "pause") ||
			   !strcmp(seg[4], "resume")) {
			r->kind = UI_R_VM_ACTION;
			r->post = true;
			snprintf(r->verb, sizeof(r->verb), "%s", seg[4]);
		} else {
			return ferr_set(err, FERR_NOT_FOUND, "no such route");
		}
	} else {
		return ferr_set(err, FERR_NOT_FOUND, "no such route");
	}
	if (need(method, r->post ? "POST" : "GET", err) < 0)
		return -1;
	return parse_query(r, query, err);
}
