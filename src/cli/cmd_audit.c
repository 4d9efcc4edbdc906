/* cmd_audit.c - `ferry audit verify|show` and `ferry policy reload`. */
#define _GNU_SOURCE
#include "attest.h"
#include "cli.h"
#include "audit.h"
#include "httpc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Largest audit log series `ferry audit verify` downloads. */
#define CLI_AUDIT_DOWNLOAD_MAX (1ULL << 40)


static int usage(void)
{
	fprintf(stderr,
		"usage: ferry audit verify [--log FILE|DIR --key FILE]\n"
		"       ferry audit show [--since T] [--until T] [--vm NAME] "
		"[--actor ID]\n"
		"                        [--action A[*]] [--limit N] [--log "
		"FILE]\n"
		"  without --log, the host's log is fetched over the API\n");
	return EXIT_USAGE;
}

/* The host's log series, streamed into an unnamed temporary file, then
 * verified from a mapping of it. The host's head (Ferry-Audit-Head) must
 * be where the log ends. */
static int verify_remote(struct client *c, const struct cli_host *h,
			 EVP_PKEY *key, struct audit_report *rep,
			 struct ferr *err)
{
	const char *tmp = getenv("TMPDIR");
	char head[AUDIT_HASH_HEX_LEN + 64] = "", mine[AUDIT_HASH_HEX_LEN + 64];
	struct httpc_peer p = { .name = h->name, .address = h->address,
				.port = h->port };
	struct stat st;
	void *map = NULL;
	int fd, rc = -1;

	fd = open(tmp && *tmp ? tmp : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC,
		  0600);
	if (fd < 0)
		return ferr_set(err, FERR_IO, "cannot create a temporary file "
				"in %s: %s", tmp && *tmp ? tmp : "/tmp",
				strerror(errno));
	if (httpc_download(c->ctx, &p, c->timeout_s, "/v1/audit/log",
			   "application/x-ndjson", fd, CLI_AUDIT_DOWNLOAD_MAX,
			   "Ferry-Audit-Head", head, sizeof(head), err) < 0)
		goto out;
	if (fstat(fd, &st) < 0) {
		ferr_set(err, FERR_IO, "cannot stat the downloaded log: %s",
			 strerror(errno));
		goto out;
	}
	if (st.st_size > 0 &&
	    (map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd,
			0)) == MAP_FAILED) {
		map = NULL;
		ferr_set(err, FERR_IO, "cannot map the downloaded log: %s",
			 strerror(errno));
		goto out;
	}
	audit_verify(map, (size_t)st.st_size, key, rep);
	snprintf(mine, sizeof(mine), "%llu %s",
		 (unsigned long long)rep->last_seq, rep->head_hash);
	if (rep->ok && strcmp(head, mine) != 0) {
		rep->ok = false;
		rep->kind = AUDIT_TAMPER_TRUNCATED;
		snprintf(rep->message, sizeof(rep->message),
			 "the log ends at seq %llu but host %s reports its "
			 "head as \"%.100s\": records are missing at the end",
			 (unsigned long long)rep->last_seq, h->name, head);
	}
	rc = 0;
out:
	if (map)
		munmap(map, (size_t)st.st_size);
	close(fd);
	return rc;
}

/* ferry audit verify: check the chain and every signature. */
static int verify(const struct cli_opts *o, struct ferr *err)
{
	struct cli_config cfg;
	const struct cli_host *h = NULL;
	struct client c = { 0 };
	struct audit_report rep = { 0 };
	EVP_PKEY *key = NULL;
	int rc = -1;

	if (o->log && !o->key)
		return ferr_set(err, FERR_INVALID,
				"--log needs --key (the host's audit.pub)");
	if (o->key && !(key = audit_load_pubkey(o->key, err)))
		return -1;
	if (o->log) {
		audit_verify_path(o->log, key, &rep);
	} else {
		if (cli_connect(o, &cfg, &h, &c, err) < 0)
			goto out;
		if (!key) {
			fprintf(stderr, "ferry: warning: the public key comes "
					"from host itself; pass --key to pin "
					"it\n");
			key = client_audit_key(&c, h, err);
			if (!key)
				goto out;
		}
		if (verify_remote(&c, h, key, &rep, err) < 0)
			goto out;
	}
	if (o->json) {
		json_t *j = json_pack("{s:b, s:s, s:I, s:I, s:I, s:s, s:I, s:s, "
				      "s:I, s:I, s:s}",
				      "ok", rep.ok, "kind",
				      audit_tamper_name(rep.kind), "records",
				      (json_int_t)rep.records, "first_seq",
				      (json_int_t)rep.first_seq, "last_seq",
				      (json_int_t)rep.last_seq, "head",
				      rep.head_hash, "files",
				      (json_int_t)rep.files, "bad_file",
				      rep.file, "bad_line",
				      (json_int_t)rep.first_bad_line, "bad_seq",
				      (json_int_t)rep.first_bad_seq, "message",
				      rep.message);
		print_json(j);
		json_decref(j);
	} else if (rep.ok) {
		printf("audit log%s%s verified: %llu records (seq %llu..%llu) "
		       "in %llu file(s), head %s\n",
		       h ? " of " : "", h ? h->name : "",
		       (unsigned long long)rep.records,
		       (unsigned long long)rep.first_seq,
		       (unsigned long long)rep.last_seq,
		       (unsigned long long)rep.files, rep.head_hash);
	}
	if (!rep.ok) {
		ferr_set(err, FERR_INVALID, "audit log: %s (%s)", rep.message,
			 audit_tamper_name(rep.kind));
		goto out;
	}
	rc = 0;
out:
	EVP_PKEY_free(key);
	client_free(&c);
	return rc;
}

/* A record's time as "YYYY-MM-DD HH:MM:SS.mmm". */
static void fmt_ts(json_int_t ms, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* Append "&key=value" to a query string. */
static void add_param(char *q, size_t len, const char *key, const char *val)
{
	size_t n = strlen(q);

	snprintf(q + n, len - n, "%s%s=%s", n ? "&" : "?", key, val);
}

/* ferry audit show: the records that match the filters. */
static int show(const struct cli_opts *o, struct ferr *err)
{
	static const char *const cols[] = { "time", "actor", "action",
					    "target", "outcome", "details",
					    NULL };
	static const char *const heads[] = { "TIME", "ACTOR", "ACTION",
					     "TARGET", "OUTCOME", "DETAIL",
					     NULL };
	struct cli_config cfg;
	const struct cli_host *h;
	struct client c = { 0 };
	json_t *reply = NULL, *recs, *rec;
	char q[512] = "", path[600], num[32];
	size_t i;
	int rc = -1;

	if (o->log) {
		struct audit_filter f = {
			.since_ms = o->since_ms,
			.until_ms = o->until_ms,
			.target = o->vm,
			.actor = o->actor,
			.action = o->action,
			.limit = (unsigned)o->limit,
		};

		recs = audit_query(o->log, &f, err);
		if (!recs)
			return -1;
		reply = json_pack("{s:o}", "records", recs);
	} else {
		if (o->since_ms) {
			snprintf(num, sizeof(num), "%llu",
				 (unsigned long long)o->since_ms);
			add_param(q, sizeof(q), "since", num);
		}
		if (o->until_ms) {
			snprintf(num, sizeof(num), "%llu",
				 (unsigned long long)o->until_ms);
			add_param(q, sizeof(q), "until", num);
		}
		if (o->limit) {
			snprintf(num, sizeof(num), "%llu",
				 (unsigned long long)o->limit);
			add_param(q, sizeof(q), "limit", num);
		}
		if (o->vm)
			add_param(q, sizeof(q), "vm", o->vm);
		if (o->actor)
			add_param(q, sizeof(q), "actor", o->actor);
		if (o->action)
			add_param(q, sizeof(q), "action", o->action);
		snprintf(path, sizeof(path), "/v1/audit%s", q);
		if (cli_connect(o, &cfg, &h, &c, err) < 0 ||
		    client_call(&c, h, "GET", path, NULL, &reply, err) < 0)
			goto out;
	}
	recs = json_object_get(reply, "records");
	if (o->json) {
		print_json(reply);
	} else {
		json_array_foreach(recs, i, rec) {
			char ts[40];
			json_t *d = json_object_get(rec, "detail");
			char *ds = d ? json_dumps(d, JSON_COMPACT |
							     JSON_SORT_KEYS)
				     : NULL;

			fmt_ts(json_integer_value(json_object_get(rec, "ts")),
			       ts, sizeof(ts));
			json_object_set_new(rec, "time", json_string(ts));
			json_object_set_new(rec, "details",
					    json_string(ds ? ds : "-"));
			free(ds);
		}
		print_table(recs, cols, heads);
	}
	rc = 0;
out:
	json_decref(reply);
	client_free(&c);
	return rc;
}

int cmd_audit(const struct cli_opts *o, int argc, char **argv)
{
	struct ferr err = { 0 };
	int rc;

	if (argc != 1)
		return usage();
	if (!strcmp(argv[0], "verify")) {
		if (cli_check_opts(o, OPT_LOG | OPT_KEY, "audit verify"))
			return EXIT_USAGE;
		rc = verify(o, &err);
	} else if (!strcmp(argv[0], "show")) {
		if (cli_check_opts(o,
				   OPT_LOG | OPT_SINCE | OPT_UNTIL | OPT_VM |
					   OPT_ACTOR | OPT_ACTION | OPT_LIMIT,
				   "audit show"))
			return EXIT_USAGE;
		rc = show(o, &err);
	} else {
		return usage();
	}
	return rc < 0 ? cli_fail(&err) : EXIT_OK;
}

/* ferry policy digest FILE: the digest attestation measures of a policy
 * file (attest_policy_digest), to list in reference values. */
static int policy_digest(const struct cli_opts *o, const char *path)
{
	uint8_t d[ATTEST_DIGEST_LEN];
	char hex[ATTEST_DIGEST_HEX_LEN + 1], *text = NULL;
	struct ferr err = { 0 };
	size_t len = 0;
	int rc;

	if (cli_check_opts(o, 0, "policy digest"))
		return EXIT_USAGE;
	if (file_read_all(path, 1024 * 1024, &text, &len, &err) < 0)
		return cli_fail(&err);
	rc = attest_policy_digest(text, len, d, &err);
	free(text);
	if (rc < 0)
		return cli_fail(&err);
	attest_hex(d, sizeof(d), hex);
	printf("%s\n", hex);
	return EXIT_OK;
}

int cmd_policy(const struct cli_opts *o, int argc, char **argv)
{
	struct cli_config cfg;
	const struct cli_host *h;
	struct client c = { 0 };
	struct ferr err = { 0 };
	json_t *reply = NULL;
	int rc = EXIT_OK;

	if (argc == 2 && !strcmp(argv[0], "digest"))
		return policy_digest(o, argv[1]);
	if (argc != 1 || strcmp(argv[0], "reload") != 0) {
		fprintf(stderr, "usage: ferry policy reload [--host NAME]\n"
				"       ferry policy digest FILE\n");
		return EXIT_USAGE;
	}
	if (cli_check_opts(o, 0, "policy reload"))
		return EXIT_USAGE;
	if (cli_connect(o, &cfg, &h, &c, &err) < 0 ||
	    client_call(&c, h, "POST", "/v1/policy/reload", NULL, &reply,
			&err) < 0) {
		rc = cli_fail(&err);
		goto out;
	}
	if (o->json)
		print_json(reply);
	else
		printf("host %s: policy %s reloaded (%lld rules)\n", h->name,
		       json_string_value(json_object_get(reply, "policy")),
		       (long long)json_integer_value(
			       json_object_get(reply, "rules")));
	if (!o->json && json_object_get(reply, "crl_revoked"))
		printf("host %s: revocation list reloaded (%lld revoked)\n",
		       h->name,
		       (long long)json_integer_value(
			       json_object_get(reply, "crl_revoked")));
out:
	json_decref(reply);
	client_free(&c);
	return rc;
}
