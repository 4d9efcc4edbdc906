/* nft.c - ferry's nftables tables in a host's namespace, through
 * libnftables' JSON interface (firewall.h). Each operation lists the two
 * tables, decides (nftjson.c) and commits one transaction, in a thread
 * inside the namespace, under one lock. */
#define _GNU_SOURCE
#include "fw_int.h"
#include "netdev.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nftables/libnftables.h>

#define NFT_ERR_SHOWN 160 /* bytes of libnftables' message in an error */

/* br_netfilter hands bridged IP packets to the inet hooks (conntrack);
 * these must be on in the namespace */
static const char *const brnf_sysctls[] = {
	"/proc/sys/net/bridge/bridge-nf-call-iptables",
	"/proc/sys/net/bridge/bridge-nf-call-ip6tables",
};

static pthread_mutex_t fw_lock = PTHREAD_MUTEX_INITIALIZER;

uint32_t fw_tag(const char *uuid)
{
	uint32_t v = 0;

	for (int i = 0; i < 8 && uuid[i]; i++) {
		char c = uuid[i];

		v = v << 4 | (uint32_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	v &= FW_MARK_TAG;
	return v ? v : 1;
}

/* One operation inside the namespace. */
struct job {
	char table[FW_TABLE_MAX];
	const struct fw_want *want;  /* install */
	const char *uuid;            /* remove, show */
	const char *const *keep;     /* prune */
	size_t nkeep;
	bool prune, show;
	/* results */
	bool changed, rebuilt;
	unsigned removed;
	json_t *shown;
};

/* Run text; the JSON it prints into *out when out is not NULL. */
static int nft_run(struct nft_ctx *nft, const char *text, json_t **out,
		   struct ferr *err)
{
	const char *buf;

	if (nft_run_cmd_from_buffer(nft, text) != 0) {
		const char *e = nft_ctx_get_error_buffer(nft);
		const char *nl;

		/* libnftables' first line: "...: Error: Could not process
		 * rule: File exists" */
		e = e ? e : "";
		nl = strchr(e, '\n');
		return ferr_set(err, FERR_UNAVAILABLE, "nftables: %.*s",
				(int)(nl && nl - e < NFT_ERR_SHOWN
					      ? nl - e
					      : (int)strnlen(e, NFT_ERR_SHOWN)),
				e);
	}
	if (!out)
		return 0;
	buf = nft_ctx_get_output_buffer(nft);
	*out = json_loads(buf ? buf : "", 0, NULL);
	if (!*out)
		return ferr_set(err, FERR_UNAVAILABLE,
				"nftables printed no JSON");
	return 0;
}

/* Run a JSON command object. */
static int nft_run_json(struct nft_ctx *nft, const json_t *cmds,
			json_t **out, struct ferr *err)
{
	char *text = json_dumps(cmds, JSON_COMPACT);
	int rc;

	if (!text)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	rc = nft_run(nft, text, out, err);
	free(text);
	return rc;
}

/* The listing of table in family, or NULL when there is none. */
static int list_table(struct nft_ctx *nft, const json_t *tables,
		      const char *family, const char *table, json_t **out,
		      struct ferr *err)
{
	json_t *cmd;
	size_t i;
	json_t *e;
	bool found = false;
	int rc;

	*out = NULL;
	json_array_foreach(json_object_get(tables, "nftables"), i, e) {
		json_t *t = json_object_get(e, "table");

		found |= t &&
			 !strcmp(json_string_value(json_object_get(t, "family"))
					 ?: "",
				 family) &&
			 !strcmp(json_string_value(json_object_get(t, "name"))
					 ?: "",
				 table);
	}
	if (!found)
		return 0;
	cmd = json_pack("{s:[{s:{s:{s:s, s:s}}}]}", "nftables", "list",
			"table", "family", family, "name", table);
	rc = nft_run_json(nft, cmd, out, err);
	json_decref(cmd);
	return rc;
}

/* Turn the br_netfilter sysctls on in this namespace. */
static int brnf_on(struct ferr *err)
{
	for (size_t i = 0; i < sizeof(brnf_sysctls) / sizeof(brnf_sysctls[0]);
	     i++) {
		char v = 0;
		int fd = open(brnf_sysctls[i], O_RDWR | O_CLOEXEC);

		if (fd < 0)
			return ferr_set(err, FERR_UNAVAILABLE,
					"%s: %s (ferry's firewall needs "
					"br_netfilter for connection tracking "
					"on bridges)",
					brnf_sysctls[i], strerror(errno));
		if (read(fd, &v, 1) != 1 ||
		    (v != '1' && pwrite(fd, "1\n", 2, 0) != 2)) {
			ferr_set(err, FERR_UNAVAILABLE, "%s: cannot turn it on: %s",
				 brnf_sysctls[i], strerror(errno));
			close(fd);
			return -1;
		}
		close(fd);
	}
	return 0;
}

/* In the namespace: list, decide, commit. */
static int job_run(void *arg, struct ferr *err)
{
	struct job *j = arg;
	struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
	json_t *tables = NULL, *batch = NULL, *lb = NULL, *li = NULL;
	struct fw_listing l;
	bool is_intact = false;
	int rc = -1;

	if (!nft)
		return ferr_set(err, FERR_INTERNAL, "cannot open nftables");
	nft_ctx_output_set_flags(nft, NFT_CTX_OUTPUT_JSON);
	if (nft_ctx_buffer_output(nft) < 0 || nft_ctx_buffer_error(nft) < 0) {
		ferr_set(err, FERR_INTERNAL, "nftables: cannot buffer output");
		goto out;
	}
	if (nft_run(nft, "{\"nftables\": [{\"list\": {\"tables\": null}}]}",
		    &tables, err) < 0 ||
	    list_table(nft, tables, "bridge", j->table, &lb, err) < 0 ||
	    list_table(nft, tables, "inet", j->table, &li, err) < 0)
		goto out;
	l = (struct fw_listing){ lb, li };
	if (j->show) {
		j->shown = fw_show_json(&l, j->uuid);
		rc = j->shown ? 0 : ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	if (j->want) {
		if (brnf_on(err) < 0)
			goto out;
		batch = fw_batch_install(j->table, &l, j->want, &is_intact, err);
		if (!batch && !is_intact)
			goto out;
		j->changed = !is_intact;
	} else if (j->prune && (lb || li) && !fw_skeleton_ok(&l)) {
		batch = fw_batch_drop(j->table, &l);
		j->rebuilt = true;
	} else {
		batch = fw_batch_remove(j->table, &l, j->uuid, j->keep,
					j->nkeep, &j->removed);
	}
	rc = batch ? nft_run_json(nft, batch, NULL, err) : 0;
out:
	json_decref(tables);
	json_decref(lb);
	json_decref(li);
	json_decref(batch);
	nft_ctx_free(nft);
	return rc;
}

static int job_start(const char *host, const char *ns, struct job *j,
		     struct ferr *err)
{
	int rc;

	if (fmt_checked(j->table, sizeof(j->table), err, "table",
			FW_TABLE_PREFIX "%s", host) < 0)
		return -1;
	pthread_mutex_lock(&fw_lock);
	rc = netns_call(ns, job_run, j, err);
	pthread_mutex_unlock(&fw_lock);
	return rc;
}

int fw_install(const char *host, const char *ns, const struct fw_vm *vm,
	       bool *changed, struct ferr *err)
{
	struct fw_want w;
	struct job j = { .want = &w };

	if (fw_want_init(&w, vm, err) < 0 || job_start(host, ns, &j, err) < 0)
		return ferr_wrap(err, "firewall of vm %s", vm->uuid);
	if (changed)
		*changed = j.changed;
	return 0;
}

int fw_remove(const char *host, const char *ns, const char *uuid,
	      struct ferr *err)
{
	struct job j = { .uuid = uuid };

	if (job_start(host, ns, &j, err) < 0)
		return ferr_wrap(err, "firewall of vm %s", uuid);
	return 0;
}

int fw_prune(const char *host, const char *ns, const char *const *keep,
	     size_t nkeep, unsigned *removed, bool *rebuilt,
	     struct ferr *err)
{
	struct job j = { .keep = keep, .nkeep = nkeep, .prune = true };
	static const char *const none[] = { NULL };

	if (!keep)
		j.keep = none; /* keep nothing */
	if (job_start(host, ns, &j, err) < 0)
		return -1;
	if (removed)
		*removed = j.removed;
	if (rebuilt)
		*rebuilt = j.rebuilt;
	return 0;
}

json_t *fw_show(const char *host, const char *ns, const char *uuid,
		struct ferr *err)
{
	struct job j = { .uuid = uuid, .show = true };

	if (job_start(host, ns, &j, err) < 0)
		return NULL;
	return j.shown;
}
