/* cmd_ui.c - `ferry ui [--port N]`: the web dashboard (src/ui), reaching
 * every host of the client config with the operator's credentials. */
#include "cli.h"
#include "ui.h"

#include <stdio.h>
#include <string.h>

static void print_url(const char *url, void *arg)
{
	size_t nhosts = *(const size_t *)arg;

	printf("ferry ui: the dashboard of %zu host(s) is at\n\n    %s\n\n"
	       "Open it in a browser on this machine; the token in it is the "
	       "only key.\nCtrl-C stops.\n",
	       nhosts, url);
	fflush(stdout);
}

int cmd_ui(const struct cli_opts *o, int argc, char **argv)
{
	static struct ui_host hosts[CLI_HOSTS_MAX];
	struct cli_config cfg;
	struct ui_config uc = { 0 };
	struct ferr err = { 0 };

	(void)argv;
	if (argc != 0) {
		fprintf(stderr, "usage: ferry ui [--port N] [--config FILE]\n");
		return EXIT_USAGE;
	}
	if (cli_check_opts(o, OPT_PORT, "ui"))
		return EXIT_USAGE;
	if (cli_config_load(o->config, &cfg, &err) < 0)
		return cli_fail(&err);
	for (size_t i = 0; i < cfg.nhosts; i++) {
		snprintf(hosts[i].name, sizeof(hosts[i].name), "%s",
			 cfg.hosts[i].name);
		snprintf(hosts[i].address, sizeof(hosts[i].address), "%s",
			 cfg.hosts[i].address);
		hosts[i].port = cfg.hosts[i].port;
	}
	uc.ca = cfg.ca;
	uc.cert = cfg.cert;
	uc.key = cfg.key;
	uc.hosts = hosts;
	uc.nhosts = cfg.nhosts;
	uc.controller = cfg.controller[0] ? cfg.controller : NULL;
	uc.detector_state = cfg.detector_state[0] ? cfg.detector_state : NULL;
	uc.port = (o->set & OPT_PORT) ? (uint16_t)o->port : UI_PORT_DEFAULT;
	uc.timeout_s = o->timeout_s;
	if (ui_run(&uc, print_url, &cfg.nhosts, &err) < 0)
		return cli_fail(&err);
	return EXIT_OK;
}
