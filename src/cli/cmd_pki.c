/* cmd_pki.c - `ferry pki init|host|user|revoke`: the cluster CA, its
 * certificates and its revocation list, written under --dir (see
 * docs/pki.md). */
#include "attest.h"
#include "cli.h"
#include "tls.h"

#include <stdio.h>
#include <string.h>

static int usage(void)
{
	fprintf(stderr,
		"usage: ferry pki init --dir DIR [--cluster NAME] [--days N]\n"
		"       ferry pki host NAME --dir DIR --ip ADDR [--ip ADDR] "
		"[--dns NAME] [--days N]\n"
		"       ferry pki user NAME --dir DIR [--days N]\n"
		"       ferry pki revoke [host|user] NAME --dir DIR\n");
	return EXIT_USAGE;
}

int cmd_pki(const struct cli_opts *o, int argc, char **argv)
{
	struct ferr err = { 0 };
	char reg[FERRY_PATH_MAX], mfr[FERRY_PATH_MAX];
	unsigned days;

	if (argc < 1)
		return usage();
	if (!o->dir) {
		fprintf(stderr, "ferry: error: --dir DIR is required\n");
		return EXIT_USAGE;
	}
	if (!strcmp(argv[0], "init")) {
		if (argc != 1 ||
		    cli_check_opts(o, OPT_DIR | OPT_CLUSTER | OPT_DAYS,
				   "pki init") != 0)
			return usage();
		days = o->days ? o->days : FERRY_CA_DAYS_DEFAULT;
		if (pki_init(o->dir, o->cluster ? o->cluster : "ferry", days,
			     &err) < 0 ||
		    fmt_checked(reg, sizeof(reg), &err, "path", "%s/attest",
				o->dir) < 0 ||
		    attest_authority_create(reg, &err) < 0 ||
		    fmt_checked(mfr, sizeof(mfr), &err, "path", "%s/%s", reg,
				ATTEST_MANUFACTURERS_DIR) < 0 ||
		    mkdir_p(mfr, 0755, &err) < 0)
			return cli_fail(&err);
		printf("created CA %s/ca.crt (key %s/ca.key, mode 0600)\n"
		       "created the attestation authority %s/%s (key %s, "
		       "mode 0600); put TPM manufacturer CA certificates in "
		       "%s/\n",
		       o->dir, o->dir, reg, ATTEST_AUTHORITY_PUB,
		       ATTEST_AUTHORITY_KEY, mfr);
		return EXIT_OK;
	}
	if (!strcmp(argv[0], "host") || !strcmp(argv[0], "user")) {
		bool host = argv[0][0] == 'h';

		if (argc != 2 ||
		    cli_check_opts(o,
				   OPT_DIR | OPT_DAYS |
					   (host ? OPT_IP | OPT_DNS : 0),
				   host ? "pki host" : "pki user") != 0)
			return usage();
		if (host && !o->ips[0] && !o->dns[0]) {
			fprintf(stderr, "ferry: error: a host certificate needs "
					"at least one --ip or --dns\n");
			return EXIT_USAGE;
		}
		days = o->days ? o->days : FERRY_CERT_DAYS_DEFAULT;
		if (pki_issue(o->dir, host ? PKI_HOST : PKI_USER, argv[1],
			      o->ips, o->dns, days, &err) < 0)
			return cli_fail(&err);
		printf("issued %s/%s/%s.crt (key %s.key, mode 0600)\n", o->dir,
		       host ? "hosts" : "users", argv[1], argv[1]);
		return EXIT_OK;
	}
	if (!strcmp(argv[0], "revoke")) {
		enum pki_kind kind = PKI_ANY;
		char serial[64];

		if (argc == 3 && !strcmp(argv[1], "host"))
			kind = PKI_HOST;
		else if (argc == 3 && !strcmp(argv[1], "user"))
			kind = PKI_USER;
		else if (argc != 2)
			return usage();
		if (cli_check_opts(o, OPT_DIR, "pki revoke") != 0)
			return usage();
		if (pki_revoke(o->dir, kind, argv[argc - 1], serial,
			       sizeof(serial), &err) < 0)
			return cli_fail(&err);
		printf("revoked %s (serial %s): %s/crl.pem updated, files moved "
		       "to %s/revoked/; copy crl.pem to the hosts and reload "
		       "them (SIGHUP or ferry policy reload)\n",
		       argv[argc - 1], serial, o->dir, o->dir);
		return EXIT_OK;
	}
	return usage();
}
