/* fence.c - controllers' fencing tokens on this host (docs/balancer.md,
 * "Fencing"): the highest token a controller presented, kept in
 * STATE_DIR/fence so that a restart keeps it. A migration request or an
 * announcement carrying a lower token comes from a deposed leader and is
 * refused. migrator_fence is the announcement's route; migrator_start
 * checks a migration request's token. */
#include "migrate_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FENCE_FILE "fence"
#define FENCE_FILE_MAX 32

int fence_load(struct fence *f, const char *state_dir, struct ferr *err)
{
	char *text = NULL;
	size_t len = 0;
	uint64_t v;
	struct ferr rerr;

	f->highest = 0;
	if (fmt_checked(f->path, sizeof(f->path), err, "path", "%s/%s",
			state_dir, FENCE_FILE) < 0)
		return -1;
	if (file_read_all(f->path, FENCE_FILE_MAX, &text, &len, &rerr) < 0) {
		if (rerr.code == FERR_NOT_FOUND)
			return 0; /* no controller has fenced this host yet */
		return ferr_set(err, rerr.code, "%s", rerr.msg);
	}
	if (len && text[len - 1] == '\n')
		text[len - 1] = '\0';
	if (parse_u64(text, 0, INT64_MAX, &v) < 0) {
		free(text);
		return ferr_set(err, FERR_INVALID,
				"%s: not a fencing token (a decimal number)",
				f->path);
	}
	free(text);
	f->highest = (int64_t)v;
	return 0;
}

int fence_check(struct fence *f, int64_t token, struct ferr *err)
{
	char buf[FENCE_FILE_MAX];
	int n;

	if (token < f->highest)
		return ferr_set(err, FERR_CONFLICT,
				"fencing token %lld is older than %lld: a "
				"newer controller leads",
				(long long)token, (long long)f->highest);
	if (token == f->highest)
		return 0;
	n = snprintf(buf, sizeof(buf), "%lld\n", (long long)token);
	if (file_write_atomic(f->path, buf, (size_t)n, 0600, err) < 0)
		return -1; /* not kept: not accepted */
	f->highest = token;
	return 0;
}

int migrator_fence(struct migrator *m, const json_t *body,
		   const char *requester, json_t **reply, struct ferr *err)
{
	static const char *const fields[] = { "fence", NULL };
	uint64_t token = 0;
	int rc;

	if (json_check_fields(body, fields, "fence", err) < 0 ||
	    json_get_u64(body, "fence", "fence", 1, INT64_MAX, &token, err) < 0)
		return -1;
	if (!token)
		return ferr_set(err, FERR_INVALID,
				"fence.fence is required (a token)");
	rc = fence_check(&m->fence, (int64_t)token, err);
	mig_audit(m, requester, "migration.fence", m->cfg->host,
		  rc == 0 ? "ok" : "refused",
		  rc == 0 ? json_pack("{s:I}", "fence", (json_int_t)token)
			  : json_pack("{s:I, s:s}", "fence", (json_int_t)token,
				      "reason", err->msg));
	if (rc == 0)
		*reply = json_pack("{s:I}", "fence",
				   (json_int_t)m->fence.highest);
	return rc;
}
