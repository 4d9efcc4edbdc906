/* controller.c - ferryd in controller mode: set-up, the controller thread
 * (leadership changes and rounds) and the helpers the other files share. */
#define _GNU_SOURCE
#include "ctl_int.h"
#include "audit.h"
#include "policy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

const char *const ctl_mode_names[3] = { "off", "recommend", "auto" };

int ctl_mode_parse(const char *s)
{
	for (int i = 0; s && i < 3; i++)
		if (!strcmp(s, ctl_mode_names[i]))
			return i;
	return -1;
}

void ctl_audit(struct controller *c, const char *actor, const char *action,
	       const char *target, const char *outcome, json_t *detail)
{
	struct ferr err;

	if (audit_log(c->audit, actor ? actor : c->identity, action, target,
		      outcome, detail, &err) < 0)
		log_error("controller: audit: %s", err.msg);
}

struct ctl_host *ctl_host_find(struct controller *c, const char *name)
{
	json_t *i = json_object_get(c->host_index, name);

	return i ? &c->hosts[json_integer_value(i)] : NULL;
}

void ctl_wake(struct controller *c)
{
	pthread_mutex_lock(&c->lock);
	c->wake = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

bool ctl_policy_allows(void *arg, const struct bal_vm *vm,
		       const struct bal_host *from, const struct bal_host *to,
		       char *why, size_t len)
{
	struct controller *c = arg;
	const struct ctl_vm *v = vm->user;
	struct policy_vm pvm = { vm->name, v ? v->labels : NULL,
				 v ? v->nlabels : 0 };
	struct policy_decision d;

	if (!c->policy)
		return true; /* the hosts decide */
	policy_check_out(c->policy, c->identity, &pvm, to->name, &d);
	if (d.allow)
		policy_check_in(c->policy, c->identity, &pvm, from->name, &d);
	if (!d.allow)
		snprintf(why, len, "%s", d.reason);
	return d.allow;
}

/* ---- leadership ---- */

static void take_over(struct controller *c, int64_t token)
{
	struct ferr err;

	/* what the previous leader wrote last, not what the watch has
	 * delivered so far */
	if (ctl_store_reload(c, &err) < 0) {
		log_warn("controller: cannot read the cluster state to take "
			 "over: %s",
			 err.msg);
		return;
	}
	c->leading = true;
	c->token = token;
	c->deposed = false;
	ctl_round_reset(c);
	ctl_moves_load(c);
	if (c->etcd) {
		log_info("controller: leading with token %lld, %zu move(s) in "
			 "flight",
			 (long long)token, c->nmoves);
		ctl_audit(c, NULL, "balance.lead", c->cfg->host, "ok",
			  json_pack("{s:I}", "token", (json_int_t)token));
	}
}

static void step_down(struct controller *c)
{
	c->leading = false;
	c->token = 0;
	ctl_poll_close(c, true);
	ctl_round_reset(c);
	pthread_mutex_lock(&c->lock);
	c->nview = 0;
	json_decref(c->status);
	c->status = NULL;
	pthread_mutex_unlock(&c->lock);
	ctl_audit(c, NULL, "balance.lead", c->cfg->host, "ended", NULL);
}

static void *ctl_main(void *arg)
{
	struct controller *c = arg;

	for (;;) {
		unsigned wait_ms = c->interval_s * 1000;
		struct timespec ts;
		struct ferr err;
		int64_t token;
		bool lead;

		if (c->etcd && (!c->store.loaded || c->store.lost) &&
		    ctl_store_reload(c, &err) < 0) {
			log_warn("controller: cluster state: %s", err.msg);
			wait_ms = CTL_STORE_RETRY_MS;
		}
		lead = c->store.loaded && ctl_lead_valid(c, &token);
		if (lead && (!c->leading || token != c->token))
			take_over(c, token);
		else if (!lead && c->leading)
			step_down(c);
		if (c->leading) {
			ctl_round(c);
			if (c->deposed) {
				step_down(c);
				ctl_lead_recheck(c);
			}
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += wait_ms / 1000;
		ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&c->lock);
		while (!c->stop && !c->wake)
			if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) ==
			    ETIMEDOUT)
				break;
		c->wake = false;
		if (c->stop) {
			pthread_mutex_unlock(&c->lock);
			return NULL;
		}
		pthread_mutex_unlock(&c->lock);
	}
}

/* ---- set-up ---- */

/* The poll loop: only the controller thread touches it (no locks), and
 * epoll changes are batched per loop turn (thousands of connections switch
 * between reading and writing each round). */
static struct event_base *poll_base_new(void)
{
	struct event_config *ec = event_config_new();
	struct event_base *b = NULL;

	if (ec && event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK |
						    EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) ==
			  0)
		b = event_base_new_with_config(ec);
	if (ec)
		event_config_free(ec);
	return b ? b : event_base_new();
}

/* One kept connection per host: make room for them. */
static void raise_fd_limit(size_t hosts)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)hosts + 1024;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
		log_warn("controller: %zu hosts want %llu descriptors, the "
			 "limit is %llu: some hosts will not be polled",
			 hosts, (unsigned long long)want,
			 (unsigned long long)rl.rlim_cur);
}

int controller_new(const struct ferryd_config *cfg, struct audit *audit,
		   struct controller **out, struct ferr *err)
{
	struct controller *c = calloc(1, sizeof(*c));

	if (!c)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	c->cfg = cfg;
	c->audit = audit;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	if (ctl_conf_parse(c, cfg->balancer, err) < 0)
		goto fail;
	c->params = c->params_default;
	if (bal_cluster_new(&c->params, &c->bal, err) < 0)
		goto fail;
	bal_set_policy(c->bal, ctl_policy_allows, c);
	c->base = poll_base_new();
	if (!c->base) {
		ferr_set(err, FERR_INTERNAL, "cannot create the event loop");
		goto fail;
	}
	if (cfg->etcd.n_endpoints) {
		c->etcd = etcd_open(&cfg->etcd, err);
		if (!c->etcd)
			goto fail;
	}
	raise_fd_limit(c->nhosts);
	if (ctl_store_open(c, err) < 0 || ctl_lead_start(c, err) < 0)
		goto fail;
	if (pthread_create(&c->thread, NULL, ctl_main, c) != 0) {
		ferr_set(err, FERR_INTERNAL, "cannot start the controller");
		goto fail;
	}
	c->thread_started = true;
	log_info("controller: %zu hosts, mode %s by default, every %u s, as "
		 "%s%s",
		 c->nhosts, ctl_mode_names[c->mode_default], c->interval_s,
		 c->identity,
		 c->etcd ? ", cluster state in etcd" : ", alone (no etcd)");
	*out = c;
	return 0;
fail:
	ferr_wrap(err, "balancer");
	controller_free(c);
	return -1;
}

void controller_free(struct controller *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		pthread_mutex_lock(&c->lock);
		c->stop = true;
		pthread_cond_signal(&c->cond);
		pthread_mutex_unlock(&c->lock);
		pthread_join(c->thread, NULL);
	}
	/* the lease goes first: a standby takes over at once */
	if (c->lead.started || c->etcd)
		ctl_lead_stop(c);
	if (c->store.kv)
		ctl_store_close(c);
	ctl_poll_close(c, true);
	ctl_round_reset(c);
	bal_cluster_free(c->bal);
	free(c->vms);
	json_decref(c->drains);
	json_decref(c->notes);
	if (c->base)
		event_base_free(c->base);
	etcd_close(c->etcd);
	free(c->hosts);
	json_decref(c->host_index);
	free(c->view);
	json_decref(c->status);
	policy_free(c->policy);
	SSL_CTX_free(c->ctx);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
