/* hosts.c - ferry-detect's API thread: every host's VM list, its audit log
 * (verified, key pinned at first sight), and the consoles of the VMs whose
 * guests probe from inside (local detection). Runs off the probe loop so a
 * slow host never delays a probe. */
#define _GNU_SOURCE
#include "detect_int.h"
#include "audit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#define CONSOLE_CHUNK (64 * 1024)

uint32_t cmdline_ip(const char *cmdline)
{
	const char *p = cmdline;
	char buf[16];
	struct in_addr a;
	size_t n;

	while ((p = strstr(p, "ferry.ip=")) != NULL) {
		if (p == cmdline || p[-1] == ' ')
			break;
		p++;
	}
	if (!p)
		return 0;
	p += strlen("ferry.ip=");
	n = strcspn(p, "/ ");
	if (n == 0 || n >= sizeof(buf))
		return 0;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return inet_pton(AF_INET, buf, &a) == 1 ? a.s_addr : 0;
}

int netprobe_line(const char *line, uint64_t *guest_ms, double *rtt_ms)
{
	unsigned long long seq, t, rtt;
	char rest[16];

	if (sscanf(line, "netprobe: seq=%llu t=%llu rtt_us=%llu", &seq, &t,
		   &rtt) == 3) {
		*guest_ms = t;
		*rtt_ms = (double)rtt / 1000.0;
		return 0;
	}
	if (sscanf(line, "netprobe: seq=%llu t=%llu %15s", &seq, &t, rest) ==
		    3 &&
	    !strcmp(rest, "lost")) {
		*guest_ms = t;
		*rtt_ms = -1;
		return 0;
	}
	return -1;
}

/* GET /v1/vms of host i into vms (appending). */
static void refresh_vms(struct dt_api *a, unsigned i, struct dt_vm *vms,
			unsigned *nvms, bool *reached)
{
	const struct cli_host *h = &a->cfg.hosts[i];
	json_t *reply = NULL, *v;
	struct ferr err;
	size_t k;

	if (client_call(&a->client, h, "GET", "/v1/vms", NULL, &reply, &err) <
	    0) {
		log_debug("host %s: %s", h->name, err.msg);
		*reached = false;
		return;
	}
	*reached = true;
	json_array_foreach(json_object_get(reply, "vms"), k, v) {
		json_t *net = json_object_get(v, "network");
		const char *name = json_string_value(json_object_get(v, "name"));
		const char *state =
			json_string_value(json_object_get(v, "state"));
		const char *mac = json_string_value(json_object_get(net, "mac"));
		const char *cl = json_string_value(json_object_get(v, "cmdline"));
		struct dt_vm *d;

		if (*nvms >= DT_VMS_MAX || !name || !state)
			continue;
		d = &vms[(*nvms)++];
		memset(d, 0, sizeof(*d));
		snprintf(d->name, sizeof(d->name), "%s", name);
		snprintf(d->host, sizeof(d->host), "%s", h->name);
		snprintf(d->mac, sizeof(d->mac), "%s", mac ? mac : "");
		d->ip = cl ? cmdline_ip(cl) : 0;
		d->running = !strcmp(state, "running") ||
			     !strcmp(state, "paused");
	}
	json_decref(reply);
}

/* Fetch and verify host i's audit log; keep its migration.* records. */
static void refresh_audit(struct dt_api *a, unsigned i, struct dt_host *out)
{
	const struct cli_host *h = &a->cfg.hosts[i];
	struct audit_report rep;
	json_t *reply = NULL;
	struct ferr err;
	const char *log, *line, *end;
	size_t len;

	out->audit_ok = false;
	out->nrecs = 0;
	if (!a->keys[i])
		a->keys[i] = client_audit_key(&a->client, h, &err);
	if (!a->keys[i]) {
		snprintf(out->audit_msg, sizeof(out->audit_msg),
			 "cannot get the audit key: %s", err.msg);
		return;
	}
	if (client_call(&a->client, h, "GET", "/v1/audit/log", NULL, &reply,
			&err) < 0) {
		snprintf(out->audit_msg, sizeof(out->audit_msg),
			 "cannot read the audit log: %s", err.msg);
		return;
	}
	log = json_string_value(json_object_get(reply, "log"));
	len = json_string_length(json_object_get(reply, "log"));
	if (!log) {
		snprintf(out->audit_msg, sizeof(out->audit_msg),
			 "the host sent no audit log");
		goto out;
	}
	audit_verify(log, len, a->keys[i], &rep);
	out->audit_records = rep.records;
	if (!rep.ok) {
		/* never trust a log that fails: say so */
		snprintf(out->audit_msg, sizeof(out->audit_msg),
			 "audit log fails verification: %s (%s)", rep.message,
			 audit_tamper_name(rep.kind));
		goto out;
	}
	out->audit_ok = true;
	out->audit_msg[0] = '\0';
	for (line = log; line < log + len; line = end + 1) {
		json_t *rec = NULL, *det;
		const char *act, *tgt, *id;
		struct dt_mig_rec *r;

		end = memchr(line, '\n', (size_t)(log + len - line));
		if (!end)
			break;
		if (!memmem(line, (size_t)(end - line), "\"migration.", 11) ||
		    audit_parse_record(line, (size_t)(end - line), &rec,
				       &err) < 0)
			continue;
		act = json_string_value(json_object_get(rec, "action"));
		tgt = json_string_value(json_object_get(rec, "target"));
		det = json_object_get(rec, "detail");
		id = json_string_value(json_object_get(det, "id"));
		if (act && tgt && !strncmp(act, "migration.", 10)) {
			if (out->nrecs == DT_MIG_RECS_MAX) { /* keep the newest */
				memmove(out->recs, out->recs + DT_MIG_RECS_MAX / 2,
					DT_MIG_RECS_MAX / 2 * sizeof(*r));
				out->nrecs = DT_MIG_RECS_MAX / 2;
			}
			r = &out->recs[out->nrecs++];
			r->ts = (uint64_t)json_integer_value(
				json_object_get(rec, "ts"));
			snprintf(r->vm, sizeof(r->vm), "%s", tgt);
			snprintf(r->action, sizeof(r->action), "%s", act);
			snprintf(r->id, sizeof(r->id), "%s", id ? id : "");
		}
		json_decref(rec);
	}
out:
	json_decref(reply);
}

/* New console output of local VM k: parse netprobe lines. */
static void refresh_console(struct dt_api *a, unsigned k, struct dt_vm *vms,
			    unsigned nvms, struct dt_local *q, unsigned *nq)
{
	const struct cli_host *h = NULL;
	const char *name = a->local_vms[k];
	char path[FERRY_NAME_MAX + 80];
	json_t *reply = NULL;
	struct ferr err;
	const char *data, *p;
	uint64_t now = wall_ms();

	for (unsigned i = 0; i < nvms; i++)
		if (!strcmp(vms[i].name, name) && vms[i].running)
			h = cli_host_find(&a->cfg, vms[i].host, &err);
	if (!h)
		return;
	if (strcmp(a->console_host[k], h->name)) {
		/* the VM moved: its console starts anew there */
		snprintf(a->console_host[k], sizeof(a->console_host[k]), "%s",
			 h->name);
		a->console_off[k] = 0;
		a->partial[k][0] = '\0';
	}
	snprintf(path, sizeof(path), "/v1/vms/%s/console?offset=%llu", name,
		 (unsigned long long)a->console_off[k]);
	if (client_call(&a->client, h, "GET", path, NULL, &reply, &err) < 0)
		return;
	data = json_string_value(json_object_get(reply, "data"));
	if (data) {
		char line[160];
		size_t plen = strlen(a->partial[k]);

		for (p = data; *p;) {
			const char *nl = strchr(p, '\n');
			size_t n = nl ? (size_t)(nl - p) : strlen(p);

			if (!nl) { /* keep a cut line for the next read */
				if (plen + n < sizeof(a->partial[k])) {
					memcpy(a->partial[k] + plen, p, n);
					a->partial[k][plen + n] = '\0';
				}
				break;
			}
			if (plen + n < sizeof(line)) {
				memcpy(line, a->partial[k], plen);
				memcpy(line + plen, p, n);
				line[plen + n] = '\0';
				if (*nq < DT_LOCAL_MAX &&
				    netprobe_line(line, &q[*nq].guest_ms,
						  &q[*nq].rtt_ms) == 0) {
					q[*nq].vm = k;
					q[*nq].read_ms = now;
					(*nq)++;
				}
			}
			a->partial[k][0] = '\0';
			plen = 0;
			p = nl + 1;
		}
	}
	a->console_off[k] = (uint64_t)json_integer_value(
		json_object_get(reply, "next"));
	/* a console shorter than what we read is a new boot's */
	if ((uint64_t)json_integer_value(json_object_get(reply, "size")) <
	    a->console_off[k]) {
		a->console_off[k] = 0;
		a->partial[k][0] = '\0';
	}
	json_decref(reply);
}

void api_refresh(struct dt_api *a)
{
	struct dt_vm *vms = a->vms;
	struct dt_local *q = a->q;
	struct dt_host *hosts = a->work;
	struct dt_view *v = a->view;
	unsigned nvms = 0, nq = 0;
	uint64_t started = wall_ms();

	for (unsigned i = 0; i < a->nhosts; i++) {
		struct dt_mig_rec *recs = hosts[i].recs;

		memset(&hosts[i], 0, sizeof(hosts[i]));
		hosts[i].recs = recs;
		snprintf(hosts[i].name, sizeof(hosts[i].name), "%s",
			 a->cfg.hosts[i].name);
		refresh_vms(a, i, vms, &nvms, &hosts[i].reached);
		if (hosts[i].reached)
			refresh_audit(a, i, &hosts[i]);
		else
			snprintf(hosts[i].audit_msg,
				 sizeof(hosts[i].audit_msg), "unreachable");
	}
	for (unsigned k = 0; k < a->nlocal_vms; k++)
		refresh_console(a, k, vms, nvms, q, &nq);
	pthread_mutex_lock(&v->mu);
	v->nhosts = a->nhosts;
	for (unsigned i = 0; i < v->nhosts; i++) {
		struct dt_mig_rec *keep = v->hosts[i].recs;

		v->hosts[i] = hosts[i];
		v->hosts[i].recs = keep;
		memcpy(keep, hosts[i].recs, hosts[i].nrecs * sizeof(*keep));
	}
	memcpy(v->vms, vms, nvms * sizeof(*vms));
	v->nvms = nvms;
	for (unsigned i = 0; i < nq && v->nlocal < DT_LOCAL_MAX; i++)
		v->local[v->nlocal++] = q[i];
	v->generation++;
	v->refreshed_ms = started;
	pthread_mutex_unlock(&v->mu);
	if (a->wake_fd >= 0) {
		char c = 1;

		if (write(a->wake_fd, &c, 1) < 0 && errno != EAGAIN)
			log_debug("wake: %s", strerror(errno));
	}
}

static void *api_main(void *arg)
{
	struct dt_api *a = arg;

	while (!atomic_load(&a->stop)) {
		uint64_t next = now_ms() + a->interval_ms;

		api_refresh(a);
		while (!atomic_load(&a->stop) && now_ms() < next)
			poll(NULL, 0, 20);
	}
	return NULL;
}

int api_start(struct dt_api *a, struct ferr *err)
{
	a->nhosts = a->cfg.nhosts < DT_HOSTS_MAX ? (unsigned)a->cfg.nhosts
						 : DT_HOSTS_MAX;
	for (unsigned i = 0; i < a->nhosts; i++) {
		a->work[i].recs = calloc(DT_MIG_RECS_MAX,
					 sizeof(struct dt_mig_rec));
		a->view->hosts[i].recs = calloc(DT_MIG_RECS_MAX,
						sizeof(struct dt_mig_rec));
		if (!a->work[i].recs || !a->view->hosts[i].recs)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	if (pthread_create(&a->thread, NULL, api_main, a) != 0)
		return ferr_set(err, FERR_INTERNAL, "cannot start a thread");
	a->started = true;
	return 0;
}

void api_stop(struct dt_api *a)
{
	atomic_store(&a->stop, true);
	if (a->started)
		pthread_join(a->thread, NULL);
	a->started = false;
	for (unsigned i = 0; i < DT_HOSTS_MAX; i++) {
		free(a->work[i].recs);
		free(a->view->hosts[i].recs);
		a->work[i].recs = a->view->hosts[i].recs = NULL;
		EVP_PKEY_free(a->keys[i]);
		a->keys[i] = NULL;
	}
}
