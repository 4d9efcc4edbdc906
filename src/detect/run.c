/* run.c - ferry-detect's loop: targets, probes, announcements, the local
 * series, and the set-up (detect_int.h). */
#define _GNU_SOURCE
#include "detect_int.h"
#include "audit.h"
#include "netdev.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TICK_MS 10
#define STATE_EVERY_MS 1000
#define LOCAL_LOST_MS 2000    /* netprobe's timeout */
#define LOCAL_LAG_MS 5000     /* local samples arrive at most this late */

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

/* ---- targets ---- */

static struct target *add_target(struct run *r, const char *addr_s,
				 const char *vm, bool local, struct ferr *err)
{
	struct target *t;
	struct in_addr a = { 0 };

	if (r->nt >= sizeof(r->t) / sizeof(r->t[0])) {
		ferr_set(err, FERR_INVALID, "too many targets");
		return NULL;
	}
	if (!local && inet_pton(AF_INET, addr_s, &a) != 1) {
		ferr_set(err, FERR_INVALID, "target %s is not an IPv4 address",
			 addr_s);
		return NULL;
	}
	t = &r->t[r->nt++];
	memset(t, 0, sizeof(*t));
	dt_copy(t->addr_s, sizeof(t->addr_s), addr_s);
	t->addr = a.s_addr;
	dt_copy(t->vm, sizeof(t->vm), vm ? vm : "");
	t->local = local;
	t->event = -1;
	det_init(&t->det, &r->o->det, NULL, NULL);
	return t;
}

/* Learn VM names and MACs from the hosts' lists. */
static void resolve_targets(struct run *r)
{
	for (unsigned i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];

		for (unsigned k = 0; k < r->view.nvms; k++) {
			const struct dt_vm *v = &r->view.vms[k];

			if ((t->vm[0] && !strcmp(v->name, t->vm)) ||
			    (!t->vm[0] && ((v->ip && v->ip == t->addr) ||
					   (t->mac[0] &&
					    !strcmp(v->mac, t->mac))))) {
				dt_copy(t->vm, sizeof(t->vm), v->name);
				if (v->mac[0])
					dt_copy(t->mac, sizeof(t->mac), v->mac);
			}
		}
	}
}

static void sample(struct run *r, struct target *t, uint64_t send_ms,
		   double rtt, uint64_t now)
{
	if (rtt < 0)
		t->n_lost++;
	else {
		t->n_ok++;
		t->sum_rtt += rtt;
		t->last_rtt = rtt;
	}
	dt_csv_row(r, t, send_ms, rtt);
	det_sample(&t->det, send_ms, rtt, now);
}

static void probe_tick(struct run *r, struct probe_sock *ps, uint64_t now,
		       bool send)
{
	uint64_t now_us = wall_us();

	for (unsigned i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];

		if (t->local)
			continue;
		/* time out the oldest probes */
		while (t->oldest != t->next_seq) {
			unsigned s = t->oldest % DT_WINDOW;

			if (!t->answered[s]) {
				if (now_us < t->sent[s] +
						     r->o->timeout_ms * 1000ULL)
					break;
				sample(r, t, t->sent[s] / 1000, -1, now);
			}
			t->oldest++;
		}
		if (send && t->next_seq - t->oldest < DT_WINDOW) {
			unsigned s = t->next_seq % DT_WINDOW;

			t->sent[s] = now_us;
			t->answered[s] = false;
			if (probe_send(ps, t->addr, (uint16_t)t->next_seq) < 0)
				log_debug("probe %s: %s", t->addr_s,
					  strerror(errno));
			det_sent(&t->det, now);
			t->next_seq++;
		}
		det_tick(&t->det, now);
	}
}

static void on_reply(struct run *r, uint32_t addr, uint16_t seq16,
		     uint64_t at_us)
{
	for (unsigned i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];
		uint32_t seq;
		unsigned s;

		if (t->local || t->addr != addr)
			continue;
		seq = t->oldest + (uint16_t)(seq16 - (uint16_t)t->oldest);
		s = seq % DT_WINDOW;
		if (seq >= t->next_seq || t->answered[s])
			continue;
		t->answered[s] = true;
		sample(r, t, t->sent[s] / 1000,
		       at_us > t->sent[s] ? (double)(at_us - t->sent[s]) / 1000.0
					  : 0.0,
		       at_us / 1000);
	}
}

static void on_frame(struct run *r, const struct frame_info *fi, uint64_t at)
{
	char mac[18];

	mac_format(fi->mac, mac);
	for (unsigned i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];
		bool by_ip = fi->ip && !t->local && fi->ip == t->addr;

		if (by_ip && !t->mac[0])
			dt_copy(t->mac, sizeof(t->mac), mac);
		if (fi->kind == FRAME_ARP_REPLY)
			continue;
		if (by_ip || (t->mac[0] && !strcmp(t->mac, mac)))
			det_announce(&t->det,
				     fi->kind == FRAME_RARP ? DET_SIG_RARP
							    : DET_SIG_GARP,
				     at);
	}
	if (fi->kind != FRAME_ARP_REPLY)
		log_debug("%s from %s", fi->kind == FRAME_RARP ? "RARP" : "GARP",
			  mac);
}

/* Local samples from the API thread, in guest-time order per VM. */
static void take_local(struct run *r)
{
	for (unsigned i = 0; i < r->nt; i++) {
		struct target *t = &r->t[i];
		int64_t off = INT64_MAX;
		bool any = false;

		if (!t->local)
			continue;
		for (unsigned k = 0; k < r->view.nlocal; k++) {
			const struct dt_local *l = &r->view.local[k];
			int64_t o = (int64_t)l->read_ms - (int64_t)l->guest_ms;

			if (l->vm == t->local_idx && o < off)
				off = o;
			any |= l->vm == t->local_idx;
		}
		if (!any)
			continue;
		t->offsets[t->noffsets++ % OFFSET_READS] = off;
		for (unsigned k = 0; k < OFFSET_READS && k < t->noffsets; k++)
			if (t->offsets[k] < off)
				off = t->offsets[k];
		for (unsigned k = 0; k < r->view.nlocal; k++) {
			const struct dt_local *l = &r->view.local[k];
			uint64_t send, done;

			if (l->vm != t->local_idx)
				continue;
			send = (uint64_t)((int64_t)l->guest_ms + off);
			done = send + (uint64_t)(l->rtt_ms < 0 ? LOCAL_LOST_MS
							      : l->rtt_ms);
			det_sent(&t->det, send);
			sample(r, t, send, l->rtt_ms, done);
			det_tick(&t->det, done);
		}
	}
	r->view.nlocal = 0;
}

/* The detector's callback for targets from first to the last. */
static void hook_targets(struct run *r, unsigned first)
{
	for (unsigned i = first; i < r->nt; i++) {
		r->ctx[i] = (struct det_ctx){ r, i };
		r->t[i].det.cb = dt_on_det;
		r->t[i].det.cb_arg = &r->ctx[i];
	}
}

/* --from-hosts: a target for each bridged VM with ferry.ip= in the hosts'
 * lists that has none yet (under the view's lock). Run at every refresh,
 * so VMs created after the start are watched too. */
static void add_host_targets(struct run *r)
{
	unsigned first = r->nt;

	for (unsigned k = 0; k < r->view.nvms; k++) {
		const struct dt_vm *v = &r->view.vms[k];
		char a[INET_ADDRSTRLEN];
		bool dup = false;
		struct ferr err;

		if (!v->ip || !v->mac[0])
			continue;
		inet_ntop(AF_INET, &v->ip, a, sizeof(a));
		for (unsigned i = 0; i < r->nt; i++)
			dup |= !r->t[i].local && r->t[i].addr == v->ip;
		if (dup)
			continue;
		if (!add_target(r, a, v->name, false, &err)) {
			if (!r->targets_full)
				log_warn("not watching %s (%s): %s", v->name, a,
					 err.msg);
			r->targets_full = true;
			continue;
		}
		log_info("watching %s at %s", v->name, a);
	}
	hook_targets(r, first);
}

static int setup_targets(struct run *r, struct ferr *err)
{
	const struct dt_opts *o = r->o;

	for (unsigned i = 0; i < o->ntargets; i++) {
		char buf[INET_ADDRSTRLEN + FERRY_NAME_MAX + 2];
		char *eq;

		dt_copy(buf, sizeof(buf), o->targets[i]);
		eq = strchr(buf, '=');
		if (eq)
			*eq++ = '\0';
		if (eq && !name_is_valid(eq))
			return ferr_set(err, FERR_INVALID,
					"--target %s: bad VM name", o->targets[i]);
		if (!add_target(r, buf, eq, false, err))
			return -1;
	}
	for (unsigned i = 0; i < o->nlocal; i++) {
		struct target *t = add_target(r, "local", o->local_vms[i],
					      true, err);

		if (!t)
			return -1;
		t->local_idx = i;
	}
	hook_targets(r, 0);
	/* with --from-hosts, no VM yet is fine: they come with the refreshes */
	if (o->from_hosts)
		add_host_targets(r);
	else if (!r->nt)
		return ferr_set(err, FERR_INVALID,
				"nothing to watch: give --target, --local or "
				"--from-hosts");
	return 0;
}

int dt_run(const struct dt_opts *o, struct ferr *err)
{
	struct run *r = calloc(1, sizeof(*r));
	struct probe_sock ps = { .fd = -1 };
	int pkt = -1, wake[2] = { -1, -1 }, rc = -1;
	uint64_t next_probe, next_state, end, gen_seen = 0;

	if (!r)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	r->o = o;
	r->started_ms = wall_ms();
	r->api.view = &r->view; /* api_stop cleans up through it */
	pthread_mutex_init(&r->view.mu, NULL);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	/* the configuration first: a bad one leaves no state dir behind */
	if (cli_config_load(o->config, &r->api.cfg, err) < 0 ||
	    client_init(&r->api.client, &r->api.cfg, 10, err) < 0 ||
	    dt_open_outputs(r, err) < 0)
		goto out;
	if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		ferr_set(err, FERR_IO, "pipe: %s", strerror(errno));
		goto out;
	}
	r->api.interval_ms = o->api_interval_ms;
	r->api.wake_fd = wake[1];
	for (unsigned i = 0; i < o->nlocal; i++)
		r->api.local_vms[i] = o->local_vms[i];
	r->api.nlocal_vms = o->nlocal;
	if (probe_open(o->netns, &ps, err) < 0)
		goto out;
	if (o->iface && (pkt = packet_open(o->netns, o->iface, err)) < 0)
		goto out;
	if (api_start(&r->api, err) < 0)
		goto out;
	/* the first look at the hosts: names, MACs, audit logs */
	for (uint64_t dl = now_ms() + 15000; !g_stop && now_ms() < dl;) {
		pthread_mutex_lock(&r->view.mu);
		gen_seen = r->view.generation;
		pthread_mutex_unlock(&r->view.mu);
		if (gen_seen)
			break;
		poll(NULL, 0, 20);
	}
	pthread_mutex_lock(&r->view.mu);
	rc = setup_targets(r, err);
	resolve_targets(r);
	r->view.nlocal = 0; /* console history before we started */
	pthread_mutex_unlock(&r->view.mu);
	if (rc < 0)
		goto out;
	audit_log(r->audit, "ferry-detect", "detect.start", "-", "ok",
		  json_pack("{s:i}", "targets", (int)r->nt), err);
	log_info("watching %u target(s)%s%s", r->nt,
		 o->iface ? ", announcements on " : "", o->iface ? o->iface : "");
	next_probe = next_state = wall_ms();
	end = o->duration_s ? now_ms() + o->duration_s * 1000ULL : 0;
	while (!g_stop && (!end || now_ms() < end)) {
		struct pollfd pf[3] = { { ps.fd, POLLIN, 0 },
					{ pkt, POLLIN, 0 },
					{ wake[0], POLLIN, 0 } };
		uint64_t now = wall_ms();
		int wait = next_probe > now ? (int)(next_probe - now) : 0;
		uint32_t addr;
		uint16_t seq;
		uint64_t at;
		struct frame_info fi;

		poll(pf, 3, wait < TICK_MS ? wait : TICK_MS);
		while (probe_recv(&ps, &addr, &seq, &at) > 0)
			on_reply(r, addr, seq, at ? at : wall_us());
		while (pkt >= 0 && packet_recv(pkt, &fi, &at) > 0)
			on_frame(r, &fi, (at ? at : wall_us()) / 1000);
		now = wall_ms();
		probe_tick(r, &ps, now, now >= next_probe);
		if (now >= next_probe) {
			next_probe += o->det.interval_ms;
			if (next_probe < now) /* we were late: no burst */
				next_probe = now + o->det.interval_ms;
		}
		if (pf[2].revents & POLLIN) {
			char buf[64];

			while (read(wake[0], buf, sizeof(buf)) > 0)
				;
			pthread_mutex_lock(&r->view.mu);
			if (o->from_hosts)
				add_host_targets(r);
			resolve_targets(r);
			take_local(r);
			dt_sync_events(r);
			dt_cross_check(r);
			pthread_mutex_unlock(&r->view.mu);
		}
		if (now >= next_state) {
			next_state = now + STATE_EVERY_MS;
			/* local series advance with their samples; a VM that
			 * stopped sending (gone, rebooting) must still see its
			 * events end */
			for (unsigned i = 0; i < r->nt; i++)
				if (r->t[i].local)
					det_tick(&r->t[i].det,
						 now - LOCAL_LAG_MS);
			dt_sync_events(r);
			if (o->watch)
				dt_stats_line(r);
			pthread_mutex_lock(&r->view.mu);
			dt_write_state(r);
			pthread_mutex_unlock(&r->view.mu);
			if (r->csv)
				fflush(r->csv);
		}
	}
	rc = 0;
out:
	atomic_store(&r->api.stop, true); /* the view stays valid until
					     api_stop */
	if (rc == 0) {
		pthread_mutex_lock(&r->view.mu);
		dt_sync_events(r);
		dt_write_state(r);
		pthread_mutex_unlock(&r->view.mu);
		audit_log(r->audit, "ferry-detect", "detect.stop", "-", "ok",
			  NULL, err);
	}
	api_stop(&r->api);
	client_free(&r->api.client);
	if (ps.fd >= 0)
		close(ps.fd);
	if (pkt >= 0)
		close(pkt);
	for (int i = 0; i < 2; i++)
		if (wake[i] >= 0)
			close(wake[i]);
	if (r->csv)
		fclose(r->csv);
	if (r->events)
		fclose(r->events);
	audit_close(r->audit);
	pthread_mutex_destroy(&r->view.mu);
	free(r);
	return rc;
}
