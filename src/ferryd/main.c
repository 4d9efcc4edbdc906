/* ferryd - the per-host daemon: owns the host's QEMU VMs and serves the
 * mutual-TLS API. Stopping ferryd leaves the VMs running; the next ferryd
 * re-attaches to them. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/ssl.h>

#include "api.h"
#include "common.h"
#include "config.h"
#include "migrate.h"
#include "tls.h"
#include "vm.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: ferryd --config FILE [--log-level "
		   "debug|info|warn|error]\n"
		   "       ferryd --version\n");
}

/* SIGTERM/SIGINT: leave the loop; VMs keep running. */
static void on_term(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	log_info("ferryd: signal %d, shutting down (VMs keep running)",
		 (int)sig);
	event_base_loopexit(arg, NULL);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ferryd_config cfg;
	struct event_base *base = NULL;
	struct event *ev_term = NULL, *ev_int = NULL;
	struct vmm *vmm = NULL;
	struct migrator *mig = NULL;
	struct api_ctx actx = { 0 };
	struct api_server *api = NULL;
	SSL_CTX *ctx = NULL;
	enum accel_mode accel;
	const char *config_path = NULL;
	struct ferr err = { 0 };
	int rc = 1, c;

	while ((c = getopt_long(argc, argv, "c:l:Vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'l':
			if (!strcmp(optarg, "debug"))
				log_set_level(LOG_DEBUG);
			else if (!strcmp(optarg, "info"))
				log_set_level(LOG_INFO);
			else if (!strcmp(optarg, "warn"))
				log_set_level(LOG_WARN);
			else if (!strcmp(optarg, "error"))
				log_set_level(LOG_ERROR);
			else {
				fprintf(stderr,
					"ferryd: unknown log level %s\n",
					optarg);
				return 2;
			}
			break;
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
	if (!config_path || optind != argc) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (config_load(config_path, &cfg, &err) < 0)
		goto fail;
	if (accel_resolve(cfg.accel, "/dev/kvm", "/proc/cpuinfo", &accel,
			  &err) < 0)
		goto fail;
	ctx = tls_server_ctx_new(cfg.ca_file, cfg.cert_file, cfg.key_file,
				 &err);
	if (!ctx)
		goto fail;
	/* migration threads wake the loop: libevent must be thread-safe */
	if (evthread_use_pthreads() < 0) {
		ferr_set(&err, FERR_INTERNAL, "libevent has no thread support");
		goto fail;
	}
	base = event_base_new();
	if (!base) {
		ferr_set(&err, FERR_INTERNAL, "cannot create the event loop");
		goto fail;
	}
	if (vmm_new(&cfg, base, accel, &vmm, &err) < 0)
		goto fail;
	if (migrator_new(&cfg, base, vmm, ctx, &mig, &err) < 0)
		goto fail;
	actx.vmm = vmm;
	actx.mig = mig;
	if (api_server_start(base, &cfg, ctx, &actx, &api, &err) < 0)
		goto fail;
	ev_term = evsignal_new(base, SIGTERM, on_term, base);
	ev_int = evsignal_new(base, SIGINT, on_term, base);
	if (!ev_term || !ev_int || event_add(ev_term, NULL) < 0 ||
	    event_add(ev_int, NULL) < 0) {
		ferr_set(&err, FERR_INTERNAL, "cannot watch signals");
		goto fail;
	}
	log_info("ferryd %s: host %s, accel %s (configured %s), %zu VMs",
		 FERRY_VERSION, cfg.host, accel_mode_name(accel),
		 accel_mode_name(cfg.accel), vmm_count(vmm));
	event_base_dispatch(base);
	rc = 0;
	goto out;
fail:
	fprintf(stderr, "ferryd: %s\n", err.msg);
out:
	if (ev_term)
		event_free(ev_term);
	if (ev_int)
		event_free(ev_int);
	api_server_free(api);
	migrator_free(mig);
	vmm_free(vmm);
	if (base)
		event_base_free(base);
	SSL_CTX_free(ctx);
	return rc;
}
