/* leader.c - electing one leader among the controllers (etcd only).
 *
 * Each controller holds an etcd lease of etcd.lease_ttl_s, renewed every
 * third of it by the lease thread, and tries to create CTL_KEY_LEADER with
 * it (etcd_acquire: one compare-and-swap transaction). The one that created
 * it leads; the key's create_revision is its fencing token, carried by
 * every migration it starts and every fenced write. A standby watches the
 * key and tries again as soon as it goes (the leader's lease expired or was
 * revoked).
 *
 * Self-fencing: a leader acts only until its last successful renewal's
 * send time + TTL - CTL_LEAD_MARGIN_MS: by then etcd may have let the lease
 * expire and elected another. Hosts refuse what arrives late anyway
 * (docs/balancer.md, "Fencing"). */
#include "ctl_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEAD_RETRY_MS 1000

static int on_leader_events(void *arg, const struct etcd_event *ev, size_t n)
{
	struct controller *c = arg;

	(void)ev;
	(void)n;
	pthread_mutex_lock(&c->lead.lock);
	c->lead.wake = true;
	pthread_cond_signal(&c->lead.cond);
	pthread_mutex_unlock(&c->lead.lock);
	return 0;
}

static void on_leader_ended(void *arg, const struct ferr *why)
{
	struct controller *c = arg;

	log_warn("controller: the watch of the leader key ended: %s",
		 why ? why->msg : "stopped");
	pthread_mutex_lock(&c->lead.lock);
	c->lead.watch_lost = true;
	c->lead.wake = true;
	pthread_cond_signal(&c->lead.cond);
	pthread_mutex_unlock(&c->lead.lock);
}

/* Lock held. Stop leading (and say why). */
static void step_down(struct controller *c, const char *why)
{
	struct ctl_lead *l = &c->lead;

	if (l->leader)
		log_warn("controller: no longer the leader (token %lld): %s",
			 (long long)l->token, why);
	l->leader = false;
	l->token = 0;
}

/* One pass: a lease, its renewal, a campaign. Returns the ms to wait. */
static unsigned lead_pass(struct controller *c, json_t *me)
{
	struct ctl_lead *l = &c->lead;
	unsigned period = (unsigned)(l->ttl_s * 1000 / 3);
	struct etcd_claim claim = { 0 };
	struct ferr err;
	int64_t lease, granted = 0;
	uint64_t t0 = now_ms();
	char *text;

	pthread_mutex_lock(&l->lock);
	lease = l->lease;
	if (l->watch_lost) {
		l->watch_lost = false;
		pthread_mutex_unlock(&l->lock);
		etcd_watch_stop(l->watch);
		l->watch = NULL;
		pthread_mutex_lock(&l->lock);
	}
	pthread_mutex_unlock(&l->lock);
	if (!l->watch) {
		static const struct etcd_watch_ops ops = { on_leader_events,
							   on_leader_ended };

		l->watch = etcd_watch_start(c->etcd, CTL_KEY_LEADER, false, 0,
					    &ops, c, &err);
		if (!l->watch)
			log_warn("controller: cannot watch the leader key: %s",
				 err.msg);
	}
	if (!lease) {
		if (etcd_lease_grant(c->etcd, l->ttl_s, 0, &lease, &granted,
				     &err) < 0) {
			log_warn("controller: no etcd lease: %s", err.msg);
			return LEAD_RETRY_MS;
		}
	} else if (etcd_lease_keepalive(c->etcd, lease, 0, &granted, &err) <
		   0) {
		pthread_mutex_lock(&l->lock);
		if (err.code == FERR_NOT_FOUND) {
			step_down(c, "the lease expired");
			l->lease = 0;
		} else if (l->leader && now_ms() >= l->valid_until) {
			step_down(c, "the lease could not be renewed in time");
		}
		pthread_mutex_unlock(&l->lock);
		log_warn("controller: lease renewal: %s", err.msg);
		ctl_wake(c);
		return err.code == FERR_NOT_FOUND ? 0 : LEAD_RETRY_MS;
	}
	if (granted <= 0)
		granted = l->ttl_s;
	text = json_dumps(me, JSON_COMPACT);
	if (!text ||
	    etcd_acquire(c->etcd, CTL_KEY_LEADER, text, strlen(text), lease, 0,
			 &claim, &err) < 0) {
		free(text);
		pthread_mutex_lock(&l->lock);
		l->lease = lease;
		if (l->leader && now_ms() >= l->valid_until)
			step_down(c, "etcd could not confirm the leadership");
		pthread_mutex_unlock(&l->lock);
		log_warn("controller: campaign: %s", text ? err.msg : "no memory");
		return LEAD_RETRY_MS;
	}
	free(text);
	pthread_mutex_lock(&l->lock);
	l->lease = lease;
	json_decref(l->holder);
	l->holder = json_parse_object((const char *)claim.holder.value,
				      claim.holder.value_len, "leader", &err);
	if (claim.won) {
		if (!l->leader || l->token != claim.revision) {
			l->leader = true;
			l->token = claim.revision;
			l->since_ms = wall_ms();
			l->elections++;
			log_info("controller: leader, token %lld",
				 (long long)l->token);
		}
		l->valid_until = t0 + (uint64_t)granted * 1000 -
				 CTL_LEAD_MARGIN_MS;
	} else {
		step_down(c, "another controller holds the leader key");
	}
	pthread_mutex_unlock(&l->lock);
	etcd_kv_clear(&claim.holder);
	ctl_wake(c);
	return period;
}

static void *lead_main(void *arg)
{
	struct controller *c = arg;
	struct ctl_lead *l = &c->lead;
	json_t *me = json_pack("{s:s, s:s, s:s, s:i}", "controller",
			       c->cfg->host, "identity", c->identity,
			       "address", c->cfg->listen_addr, "port",
			       (int)c->cfg->listen_port);
	struct ferr err;

	for (;;) {
		unsigned wait = lead_pass(c, me);
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += wait / 1000;
		ts.tv_nsec += (long)(wait % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&l->lock);
		while (!l->stop && !l->wake && wait)
			if (pthread_cond_timedwait(&l->cond, &l->lock, &ts) ==
			    ETIMEDOUT)
				break;
		l->wake = false;
		if (l->stop) {
			pthread_mutex_unlock(&l->lock);
			break;
		}
		pthread_mutex_unlock(&l->lock);
	}
	/* hand over at once: revoking the lease deletes the leader key */
	if (l->lease &&
	    etcd_lease_revoke(c->etcd, l->lease, now_ms() + 2000, &err) < 0)
		log_warn("controller: lease not revoked: %s", err.msg);
	json_decref(me);
	return NULL;
}

int ctl_lead_start(struct controller *c, struct ferr *err)
{
	struct ctl_lead *l = &c->lead;

	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	if (!c->etcd) {
		l->leader = true; /* alone */
		return 0;
	}
	l->ttl_s = c->cfg->etcd.lease_ttl_s;
	if (pthread_create(&l->thread, NULL, lead_main, c) != 0)
		return ferr_set(err, FERR_INTERNAL,
				"cannot start the lease thread");
	l->started = true;
	return 0;
}

void ctl_lead_stop(struct controller *c)
{
	struct ctl_lead *l = &c->lead;

	if (l->started) {
		pthread_mutex_lock(&l->lock);
		l->stop = true;
		pthread_cond_signal(&l->cond);
		pthread_mutex_unlock(&l->lock);
		pthread_join(l->thread, NULL);
		l->started = false;
	}
	etcd_watch_stop(l->watch);
	l->watch = NULL;
	json_decref(l->holder);
	l->holder = NULL;
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
}

bool ctl_lead_valid(struct controller *c, int64_t *token)
{
	struct ctl_lead *l = &c->lead;
	bool ok;

	pthread_mutex_lock(&l->lock);
	ok = l->leader && (!c->etcd || now_ms() < l->valid_until);
	*token = ok ? l->token : 0;
	pthread_mutex_unlock(&l->lock);
	return ok;
}

void ctl_lead_recheck(struct controller *c)
{
	pthread_mutex_lock(&c->lead.lock);
	c->lead.wake = true;
	pthread_cond_signal(&c->lead.cond);
	pthread_mutex_unlock(&c->lead.lock);
}

json_t *ctl_lead_json(struct controller *c)
{
	struct ctl_lead *l = &c->lead;
	json_t *o;

	pthread_mutex_lock(&l->lock);
	o = json_pack("{s:s, s:I, s:I, s:O?}", "role",
		      l->leader ? "leader" : "standby", "token",
		      (json_int_t)l->token, "elections",
		      (json_int_t)l->elections, "leader", l->holder);
	if (l->leader)
		json_object_set_new(o, "leader_since",
				    json_integer((json_int_t)l->since_ms));
	pthread_mutex_unlock(&l->lock);
	return o;
}
