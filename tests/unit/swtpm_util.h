/* swtpm_util.h - a throw-away software TPM for unit tests: swtpm_setup
 * with EK certificates from a local CA (the "TPM manufacturer"), then
 * `swtpm socket` on two free loopback ports. Header-only, used by
 * test_attest_tpm.c; the system tests have tests/system/tpmlib.py. */
#ifndef FERRY_TEST_SWTPM_UTIL_H
#define FERRY_TEST_SWTPM_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct swtpm {
	char dir[64];       /* everything lives here */
	char ca_dir[96];    /* the local CA (keys and certificates) */
	char mfr_dir[96];   /* its certificates only: the "manufacturer" */
	char tcti[96];
	int port;
	pid_t pid;
};

/* Is a TCP port (and the next) free on 127.0.0.1? */
static int swtpm_port_free(int port)
{
	for (int p = port; p <= port + 1; p++) {
		struct sockaddr_in a = { .sin_family = AF_INET,
					 .sin_port = htons((uint16_t)p) };
		int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		if (fd >= 0)
			close(fd);
		if (!ok)
			return 0;
	}
	return 1;
}

/* Run a shell command; 0 when it exited 0. */
static int swtpm_sh(const char *cmd)
{
	int st = system(cmd);

	return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Create and start a TPM in a fresh temp dir. -1 when swtpm is missing
 * or does not come up within 10 s. */
static int swtpm_start(struct swtpm *t)
{
	char cmd[1024], path[160];
	FILE *f;

	memset(t, 0, sizeof(*t));
	if (access("/usr/bin/swtpm", X_OK) != 0 ||
	    access("/usr/bin/swtpm_setup", X_OK) != 0)
		return -1;
	snprintf(t->dir, sizeof(t->dir), "/tmp/ferry-swtpm-XXXXXX");
	if (!mkdtemp(t->dir))
		return -1;
	snprintf(t->ca_dir, sizeof(t->ca_dir), "%s/ca", t->dir);
	snprintf(path, sizeof(path), "%s/localca.conf", t->dir);
	f = fopen(path, "w");
	if (!f)
		return -1;
	fprintf(f, "statedir = %s\nsigningkey = %s/signkey.pem\n"
		   "issuercert = %s/issuercert.pem\ncertserial = %s/serial\n",
		t->ca_dir, t->ca_dir, t->ca_dir, t->ca_dir);
	fclose(f);
	snprintf(path, sizeof(path), "%s/setup.conf", t->dir);
	f = fopen(path, "w");
	if (!f)
		return -1;
	fprintf(f, "create_certs_tool = /usr/bin/swtpm_localca\n"
		   "create_certs_tool_config = %s/localca.conf\n"
		   "create_certs_tool_options = /etc/swtpm-localca.options\n"
		   "active_pcr_banks = sha256\n",
		t->dir);
	fclose(f);
	snprintf(cmd, sizeof(cmd),
		 "mkdir -p %s/state %s && swtpm_setup --tpm2 --tpmstate "
		 "%s/state --create-ek-cert --create-platform-cert --config "
		 "%s/setup.conf --logfile %s/setup.log >/dev/null 2>&1",
		 t->dir, t->ca_dir, t->dir, t->dir, t->dir);
	if (swtpm_sh(cmd) < 0)
		return -1;
	snprintf(t->mfr_dir, sizeof(t->mfr_dir), "%s/manufacturer", t->dir);
	snprintf(cmd, sizeof(cmd),
		 "mkdir -p %s && cp %s/swtpm-localca-rootca-cert.pem "
		 "%s/issuercert.pem %s/",
		 t->mfr_dir, t->ca_dir, t->ca_dir, t->mfr_dir);
	if (swtpm_sh(cmd) < 0)
		return -1;
	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	for (int i = 0; i < 100 && !t->port; i++) {
		int p = 20000 + rand() % 40000;

		if (swtpm_port_free(p))
			t->port = p;
	}
	if (!t->port)
		return -1;
	t->pid = fork();
	if (t->pid < 0)
		return -1;
	if (t->pid == 0) {
		char srv[64], ctrl[64], state[96];

		snprintf(srv, sizeof(srv), "type=tcp,port=%d,bindaddr=127.0.0.1",
			 t->port);
		snprintf(ctrl, sizeof(ctrl),
			 "type=tcp,port=%d,bindaddr=127.0.0.1", t->port + 1);
		snprintf(state, sizeof(state), "dir=%s/state", t->dir);
		execl("/usr/bin/swtpm", "swtpm", "socket", "--tpm2",
		      "--tpmstate", state, "--server", srv, "--ctrl", ctrl,
		      "--flags", "startup-clear", (char *)NULL);
		_exit(127);
	}
	snprintf(t->tcti, sizeof(t->tcti), "swtpm:host=127.0.0.1,port=%d",
		 t->port);
	for (int i = 0; i < 200; i++) { /* up to 10 s */
		struct sockaddr_in a = { .sin_family = AF_INET,
					 .sin_port = htons((uint16_t)t->port) };
		int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (ok)
			return 0;
		usleep(50000);
	}
	return -1;
}

/* Stop the TPM (waiting for it) and remove its folder. */
static void swtpm_stop(struct swtpm *t)
{
	char cmd[128];

	if (t->pid > 0) {
		kill(t->pid, SIGTERM);
		waitpid(t->pid, NULL, 0);
		t->pid = 0;
	}
	if (t->dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
		swtpm_sh(cmd);
	}
}

#endif
