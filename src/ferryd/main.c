/* ferryd - the per-host daemon: owns the host's QEMU VMs, serves the
 * mutual-TLS API, carries migrations, enforces the policy and keeps the
 * audit log. Stopping ferryd leaves the VMs running; the next ferryd
 * re-attaches to them. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <systemd/sd-daemon.h>

#include "api.h"
#include "attest_tpm.h"
#include "audit.h"
#include "common.h"
#include "config.h"
#include "etcd.h"
#include "controller.h"
#include "guard.h"
#include "ha.h"
#include "load.h"
#include "migrate.h"
#include "policy.h"
#include "tls.h"
#include "vm.h"
#include "worker.h"

/* Everything ferryd runs, for the signal and timer callbacks. */
struct ferryd {
	struct event_base *base;
	struct api_ctx actx;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: ferryd --config FILE [--log-level "
		   "debug|info|warn|error]\n"
		   "       ferryd --version\n");
}

/* SIGTERM/SIGINT: leave the loop; VMs keep running. Under systemd
 * (Type=notify, NOTIFY_SOCKET set) it hears STOPPING=1 first; without
 * NOTIFY_SOCKET sd_notify does nothing. */
static void on_term(evutil_socket_t sig, short what, void *arg)
{
	struct ferryd *d = arg;

	(void)what;
	log_info("ferryd: signal %d, shutting down (VMs keep running)",
		 (int)sig);
	sd_notify(0, "STOPPING=1\nSTATUS=stopping; the VMs keep running");
	event_base_loopexit(d->base, NULL);
}

/* SIGHUP (systemctl reload): reload the policy and the revocation list; a
 * broken one leaves the old in force. systemd hears RELOADING=1 (with the
 * monotonic time it wants since version 253) before, READY=1 after. */
static void on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct ferryd *d = arg;
	struct timespec ts;
	struct ferr err;
	int rc;

	(void)sig;
	(void)what;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		   (unsigned long long)ts.tv_sec * 1000000ULL +
			   (unsigned long long)ts.tv_nsec / 1000);
	rc = api_policy_reload(&d->actx, "-", &err);
	sd_notifyf(0, "READY=1\nSTATUS=policy %s", rc == 0
		   ? "reloaded" : "reload refused, the old one stays");
}

/* Every AUDIT_REFUSAL_FLUSH_MS: write the coalesced refusals. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
	struct ferryd *d = arg;
	struct ferr err;

	(void)fd;
	(void)what;
	if (audit_refusals_flush(d->actx.refusals, &err) < 0)
		log_error("audit: %s", err.msg);
}

/* Many clients at once need descriptors: raise the soft limit to the
 * hard one. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* The etcd client's copy of the TLS key the TPM keeps sealed (its file is
 * gone): etcd's key defaults to the host's. The PEM is wiped after. */
static int etcd_key_share(const char *key_file, EVP_PKEY *key,
			  struct ferr *err)
{
	BIO *b = BIO_new(BIO_s_secmem());
	char *pem = NULL;
	long len;
	int rc = -1;

	if (!b || !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)) {
		ferr_set(err, FERR_INTERNAL, "cannot encode the TLS key");
		goto out;
	}
	len = BIO_get_mem_data(b, &pem);
	rc = etcd_key_provide(key_file, pem, len > 0 ? (size_t)len : 0, err);
	if (len > 0)
		OPENSSL_cleanse(pem, (size_t)len);
out:
	BIO_free(b);
	return rc;
}

static int parse_args(int argc, char **argv, const char **config_path)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const levels[] = { "debug", "info", "warn",
					       "error" };
	int c;

	while ((c = getopt_long(argc, argv, "c:l:Vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			*config_path = optarg;
			break;
		case 'l': {
			int lv = -1;

			for (int i = 0; i < 4; i++)
				if (!strcmp(optarg, levels[i]))
					lv = i;
			if (lv < 0) {
				fprintf(stderr,
					"ferryd: unknown log level %s\n",
					optarg);
				return 2;
			}
			log_set_level((enum log_level)lv);
			break;
		}
		case 'V':
			printf("ferryd %s\n", FERRY_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!*config_path || optind != argc) {
		usage(stderr);
		return 2;
	}
	return -1; /* go on */
}

int main(int argc, char **argv)
{
	struct ferryd d = { 0 };
	struct ferryd_config cfg = { 0 };
	struct event *ev[4] = { 0 };
	struct timeval flush_tv = { .tv_sec = AUDIT_REFUSAL_FLUSH_MS / 1000 };
	struct vmm *vmm = NULL;
	struct migrator *mig = NULL;
	struct migrator_deps deps;
	struct api_server *api = NULL;
	struct audit *audit = NULL;
	struct audit_refusals *refusals = NULL;
	struct guard *guard = NULL;
	struct load *load = NULL;
	struct controller *ctl = NULL;
	struct ha *ha = NULL;
	struct policy *policy = NULL;
	struct worker_pool *pool = NULL;
	struct attest_host *attest = NULL;
	SSL_CTX *ctx = NULL;
	enum accel_mode accel;
	const char *config_path = NULL;
	size_t revoked = 0;
	struct ferr err = { 0 };
	int rc;

	if (argc == 3 && !strcmp(argv[1], HA_FENCE_AGENT_ARG))
		return ha_fence_agent_main(argc, argv);
	rc = parse_args(argc, argv, &config_path);
	if (rc >= 0)
		return rc;
	rc = 1;
	json_wipe_on_free();
	signal(SIGPIPE, SIG_IGN);
	setenv(ATTEST_TSS2_LOG_ENV, ATTEST_TSS2_LOG_QUIET, 0);
	raise_fd_limit();
	if (config_load(config_path, &cfg, &err) < 0)
		goto fail;
	if (accel_resolve(cfg.accel, "/dev/kvm", "/proc/cpuinfo", &accel,
			  &err) < 0)
		goto fail;
	if (cfg.policy_file[0]) {
		if (policy_load(cfg.policy_file, &policy, &err) < 0)
			goto fail;
	} else {
		log_warn("ferryd: no policy configured (ferryd.json: policy): "
			 "every request will be denied");
	}
	if (mkdir_p(cfg.state_dir, 0700, &err) < 0)
		goto fail;
	/* measure, and open sealed storage, before anything uses the keys */
	if (cfg.attest.mode != ATTEST_MODE_OFF &&
	    attest_host_open(&cfg, &attest, &err) < 0) {
		if (cfg.attest.mode == ATTEST_MODE_REQUIRED || cfg.attest.seal)
			goto fail;
		log_warn("ferryd: attestation is optional and unavailable: %s",
			 err.msg);
	}
	if (attest_host_tls_key(attest) &&
	    (tls_key_provide(cfg.key_file, attest_host_tls_key(attest), &err) <
		     0 ||
	     etcd_key_share(cfg.key_file, attest_host_tls_key(attest),
			    &err) < 0))
		goto fail;
	if (audit_open_key(cfg.state_dir, cfg.host,
			   attest_host_audit_key(attest), &audit, &err) < 0 ||
	    audit_set_rotate(audit, cfg.audit_rotate_kib * 1024, &err) < 0 ||
	    audit_refusals_new(audit, &refusals, &err) < 0 ||
	    guard_new(&cfg.limits, &guard, &err) < 0)
		goto fail;
	ctx = tls_server_ctx_new(cfg.ca_file, cfg.cert_file, cfg.key_file,
				 &err);
	if (!ctx)
		goto fail;
	/* before any listener: revoked peers are refused from the first
	 * connection on */
	if (cfg.crl_file[0] &&
	    tls_crl_load(cfg.crl_file, cfg.ca_file, &revoked, &err) < 0)
		goto fail;
	/* migration threads wake the loop: libevent must be thread-safe */
	if (evthread_use_pthreads() < 0) {
		ferr_set(&err, FERR_INTERNAL, "libevent has no thread support");
		goto fail;
	}
	d.base = event_base_new();
	if (!d.base) {
		ferr_set(&err, FERR_INTERNAL, "cannot create the event loop");
		goto fail;
	}
	if (worker_pool_new(d.base, &pool, &err) < 0 ||
	    vmm_new(&cfg, d.base, accel, pool, &vmm, &err) < 0 ||
	    load_new(&cfg, d.base, vmm, &load, &err) < 0)
		goto fail;
	/* the running VMs' firewalls, before anything resumes one */
	vmm_fw_configure(vmm, policy_firewall(policy));
	vmm_fw_reattach(vmm);
	deps = (struct migrator_deps){ .audit = audit,
				       .refusals = refusals,
				       .guard = guard,
				       .policy = &policy,
				       .pool = pool,
				       .attest = attest ? attest_host_ops(attest)
							: NULL };
	if (migrator_new(&cfg, d.base, vmm, &deps, &mig, &err) < 0)
		goto fail;
	if (ha_new(&cfg, d.base,
		   &(struct ha_deps){ .audit = audit,
				      .policy = &policy,
				      .pool = pool,
				      .mig = mig,
				      .vmm = vmm },
		   &ha, &err) < 0)
		goto fail;
	if (cfg.balancer && controller_new(&cfg, audit, &ctl, &err) < 0)
		goto fail;
	d.actx = (struct api_ctx){ .vmm = vmm,
				   .mig = mig,
				   .policy = &policy,
				   .policy_path = cfg.policy_file[0]
							  ? cfg.policy_file
							  : NULL,
				   .crl_path = cfg.crl_file[0] ? cfg.crl_file
							       : NULL,
				   .ca_path = cfg.ca_file,
				   .crl_revoked = revoked,
				   .audit = audit,
				   .refusals = refusals,
				   .guard = guard,
				   .load = load,
				   .ctl = ctl,
				   .pool = pool,
				   .ha = ha,
				   .attest = attest ? attest_host_ops(attest)
						    : NULL };
	if (api_server_start(d.base, &cfg, ctx, &d.actx, &api, &err) < 0)
		goto fail;
	ev[0] = evsignal_new(d.base, SIGTERM, on_term, &d);
	ev[1] = evsignal_new(d.base, SIGINT, on_term, &d);
	ev[2] = evsignal_new(d.base, SIGHUP, on_hup, &d);
	ev[3] = event_new(d.base, -1, EV_PERSIST, on_flush, &d);
	for (int i = 0; i < 4; i++) {
		if (!ev[i] || event_add(ev[i], i == 3 ? &flush_tv : NULL) < 0) {
			ferr_set(&err, FERR_INTERNAL, "cannot watch signals");
			goto fail;
		}
	}
	if (audit_log(audit, "-", "ferryd.start", cfg.host, "ok",
		      json_pack("{s:s, s:s, s:I, s:s, s:s, s:I}", "version",
				FERRY_VERSION, "policy",
				cfg.policy_file[0] ? cfg.policy_file : "none",
				"vms", (json_int_t)vmm_count(vmm),
				"attestation",
				attest ? attest_host_summary(attest) : "off",
				"crl", cfg.crl_file[0] ? cfg.crl_file : "none",
				"crl_revoked", (json_int_t)revoked),
		      &err) < 0)
		goto fail;
	log_info("ferryd %s: host %s, accel %s (configured %s), %zu VMs, "
		 "attestation %s%s%s",
		 FERRY_VERSION, cfg.host, accel_mode_name(accel),
		 accel_mode_name(cfg.accel), vmm_count(vmm),
		 attest_mode_name(cfg.attest.mode), attest ? ": " : "",
		 attest ? attest_host_summary(attest) : "");
	/* the API listens: tell systemd (Type=notify) we are up */
	sd_notifyf(0, "READY=1\nSTATUS=serving on %s port %u, %zu VMs",
		   cfg.listen_addr, (unsigned)cfg.listen_port, vmm_count(vmm));
	event_base_dispatch(d.base);
	rc = 0;
	goto out;
fail:
	fprintf(stderr, "ferryd: %s\n", err.msg);
out:
	for (int i = 0; i < 4; i++)
		if (ev[i])
			event_free(ev[i]);
	/* stop what runs, let every operation it started end (their
	 * deadlines bound this), then free from the top down */
	controller_free(ctl);
	ha_stop(ha);
	migrator_stop(mig);
	if (pool && worker_drain(pool, WORKER_DRAIN_MS))
		log_error("ferryd: operations still running at exit");
	api_server_free(api);
	ha_free(ha);
	migrator_free(mig);
	load_free(load);
	if (!pool || !worker_pending(pool)) {
		vmm_free(vmm);
		worker_pool_free(pool);
	}
	/* before the guard and the audit go: the API's last connections are
	 * freed here, and a connection still in its handshake releases its
	 * count in the guard (api.h, api_server_start) */
	if (d.base)
		event_base_free(d.base);
	if (audit && rc == 0)
		audit_log(audit, "-", "ferryd.stop", cfg.host, "ok", NULL,
			  &err);
	audit_refusals_free(refusals);
	audit_close(audit);
	guard_free(guard);
	policy_free(policy);
	SSL_CTX_free(ctx);
	tls_keys_clear();
	etcd_keys_clear();
	attest_host_free(attest);
	config_clear(&cfg);
	return rc;
}
