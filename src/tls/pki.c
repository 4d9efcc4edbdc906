/* pki.c - the cluster CA and the host and user certificates it issues,
 * built with the OpenSSL API (EC P-256 keys, SHA-256 signatures). */
#define _GNU_SOURCE
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define PKI_SERIAL_BITS 127
#define PKI_SAN_MAX 1024

/* Open path for writing a new file with mode; refuses to overwrite. */
static FILE *open_new(const char *path, unsigned mode, struct ferr *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	FILE *f;

	if (fd < 0) {
		ferr_set(err, errno == EEXIST ? FERR_CONFLICT : FERR_IO,
			 "cannot create %s: %s", path, strerror(errno));
		return NULL;
	}
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		ferr_set(err, FERR_IO, "cannot open %s: %s", path,
			 strerror(errno));
	}
	return f;
}

/* Write key (mode 0600) or cert (0644) PEM to a new file. */
static int write_pem(const char *path, EVP_PKEY *key, X509 *cert,
		     struct ferr *err)
{
	char ebuf[256];
	FILE *f = open_new(path, key ? 0600 : 0644, err);
	int ok;

	if (!f)
		return -1;
	ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
		 : PEM_write_X509(f, cert);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		ok = 0;
	if (fclose(f) != 0)
		ok = 0;
	if (!ok) {
		unlink(path);
		return ferr_set(err, FERR_IO, "cannot write %s: %s", path,
				tls_error_string(ebuf, sizeof(ebuf)));
	}
	return 0;
}

/* Write a new key file and its certificate; neither is left behind on
 * failure. */
static int write_pair(const char *kpath, EVP_PKEY *key, const char *cpath,
		      X509 *cert, struct ferr *err)
{
	if (write_pem(kpath, key, NULL, err) < 0)
		return -1;
	if (write_pem(cpath, NULL, cert, err) < 0) {
		unlink(kpath);
		return -1;
	}
	return 0;
}

/* Add one v3 extension given in OpenSSL's config syntax. */
static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!ext)
		return -1;
	ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* A new certificate shell: random serial, validity, subject CN. */
static X509 *cert_new(EVP_PKEY *key, const char *cn, unsigned days)
{
	X509 *cert = X509_new();
	BIGNUM *bn = BN_new();
	X509_NAME *name;

	if (!cert || !bn)
		goto fail;
	if (!BN_rand(bn, PKI_SERIAL_BITS, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)))
		goto fail;
	if (!X509_set_version(cert, 2) ||
	    !X509_gmtime_adj(X509_getm_notBefore(cert), -300) ||
	    !X509_gmtime_adj(X509_getm_notAfter(cert), (long)days * 86400L) ||
	    !X509_set_pubkey(cert, key))
		goto fail;
	name = X509_get_subject_name(cert);
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
					(const unsigned char *)"ferry", -1, -1,
					0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					(const unsigned char *)cn, -1, -1, 0))
		goto fail;
	BN_free(bn);
	return cert;
fail:
	BN_free(bn);
	X509_free(cert);
	return NULL;
}

int pki_init(const char *dir, const char *cluster, unsigned days,
	     struct ferr *err)
{
	char kpath[FERRY_PATH_MAX], cpath[FERRY_PATH_MAX], ebuf[256];
	char cn[FERRY_NAME_MAX + 16];
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	int rc = -1;

	if (!name_is_valid(cluster))
		return ferr_set(err, FERR_INVALID,
				"cluster name \"%s\" is not a valid name",
				cluster);
	if (days == 0 || days > FERRY_CERT_DAYS_MAX)
		return ferr_set(err, FERR_INVALID,
				"days must be between 1 and %d",
				FERRY_CERT_DAYS_MAX);
	if (mkdir_p(dir, 0755, err) < 0 ||
	    fmt_checked(kpath, sizeof(kpath), err, "path", "%s/ca.key", dir) <
		    0 ||
	    fmt_checked(cpath, sizeof(cpath), err, "path", "%s/ca.crt", dir) <
		    0)
		return -1;
	if (access(kpath, F_OK) == 0 || access(cpath, F_OK) == 0)
		return ferr_set(err, FERR_CONFLICT,
				"a CA already exists in %s; refusing to "
				"overwrite it", dir);
	snprintf(cn, sizeof(cn), "%s-ca", cluster);
	ERR_clear_error();
	key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!key || !(cert = cert_new(key, cn, days)) ||
	    !X509_set_issuer_name(cert, X509_get_subject_name(cert)) ||
	    add_ext(cert, cert, NID_basic_constraints,
		    "critical,CA:TRUE,pathlen:0") < 0 ||
	    add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign") <
		    0 ||
	    add_ext(cert, cert, NID_subject_key_identifier, "hash") < 0 ||
	    !X509_sign(cert, key, EVP_sha256())) {
		ferr_set(err, FERR_INTERNAL, "cannot create the CA: %s",
			 tls_error_string(ebuf, sizeof(ebuf)));
		goto out;
	}
	if (write_pair(kpath, key, cpath, cert, err) < 0)
		goto out;
	rc = 0;
out:
	EVP_PKEY_free(key);
	X509_free(cert);
	return rc;
}

/* Load the CA key and certificate from dir. */
static int load_ca(const char *dir, EVP_PKEY **key, X509 **cert,
		   struct ferr *err)
{
	char path[FERRY_PATH_MAX], ebuf[256];
	FILE *f;

	if (fmt_checked(path, sizeof(path), err, "path", "%s/ca.key", dir) < 0)
		return -1;
	f = fopen(path, "re");
	if (!f)
		return ferr_set(err, FERR_NOT_FOUND,
				"cannot open %s: %s (run `ferry pki init` "
				"first)", path, strerror(errno));
	*key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!*key)
		return ferr_set(err, FERR_INVALID, "cannot read %s: %s", path,
				tls_error_string(ebuf, sizeof(ebuf)));
	if (fmt_checked(path, sizeof(path), err, "path", "%s/ca.crt", dir) < 0)
		goto fail;
	f = fopen(path, "re");
	if (!f) {
		ferr_set(err, FERR_NOT_FOUND, "cannot open %s: %s", path,
			 strerror(errno));
		goto fail;
	}
	*cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!*cert) {
		ferr_set(err, FERR_INVALID, "cannot read %s: %s", path,
			 tls_error_string(ebuf, sizeof(ebuf)));
		goto fail;
	}
	return 0;
fail:
	EVP_PKEY_free(*key);
	*key = NULL;
	return -1;
}

/* Build "IP:a,IP:b,DNS:c" from the lists; empty string when none. Each IP
 * must parse as an address and each DNS name must be a valid ferry name, so
 * nothing can smuggle OpenSSL config syntax in. */
static int san_string(const char *const *ips, const char *const *dns,
		      char *out, size_t len, struct ferr *err)
{
	unsigned char buf[16];
	size_t off = 0;

	out[0] = '\0';
	for (int pass = 0; pass < 2; pass++) {
		const char *const *list = pass ? dns : ips;

		for (; list && *list; list++) {
			int n;

			if (pass ? !name_is_valid(*list)
				 : (inet_pton(AF_INET, *list, buf) != 1 &&
				    inet_pton(AF_INET6, *list, buf) != 1))
				return ferr_set(err, FERR_INVALID,
						"bad %s subjectAltName \"%s\"",
						pass ? "DNS" : "IP", *list);
			n = snprintf(out + off, len - off, "%s%s:%s",
				     off ? "," : "", pass ? "DNS" : "IP",
				     *list);
			if (n < 0 || (size_t)n >= len - off)
				return ferr_set(err, FERR_INVALID,
						"too many subjectAltNames");
			off += (size_t)n;
		}
	}
	return 0;
}

int pki_issue(const char *dir, enum pki_kind kind, const char *name,
	      const char *const *ips, const char *const *dns, unsigned days,
	      struct ferr *err)
{
	const char *sub = kind == PKI_HOST ? "hosts" : "users";
	char kpath[FERRY_PATH_MAX], cpath[FERRY_PATH_MAX], sdir[FERRY_PATH_MAX];
	char san[PKI_SAN_MAX], ebuf[256];
	EVP_PKEY *cakey = NULL, *key = NULL;
	X509 *cacert = NULL, *cert = NULL;
	int rc = -1;

	if (!name_is_valid(name))
		return ferr_set(err, FERR_INVALID,
				"\"%s\" is not a valid name "
				"([a-z0-9][a-z0-9._-]*, at most %d characters)",
				name, FERRY_NAME_MAX);
	if (days == 0 || days > FERRY_CERT_DAYS_MAX)
		return ferr_set(err, FERR_INVALID,
				"days must be between 1 and %d",
				FERRY_CERT_DAYS_MAX);
	if (san_string(ips, dns, san, sizeof(san), err) < 0)
		return -1;
	if (kind == PKI_HOST) {
		/* a host certificate always names its host, so peers can
		 * check the name wherever they connect through */
		size_t n = strlen(san);

		if (fmt_checked(san + n, sizeof(san) - n, err,
				"subjectAltNames", "%sDNS:%s", n ? "," : "",
				name) < 0)
			return -1;
	}
	if (fmt_checked(sdir, sizeof(sdir), err, "path", "%s/%s", dir, sub) <
		    0 ||
	    fmt_checked(kpath, sizeof(kpath), err, "path", "%s/%s.key", sdir,
			name) < 0 ||
	    fmt_checked(cpath, sizeof(cpath), err, "path", "%s/%s.crt", sdir,
			name) < 0)
		return -1;
	if (load_ca(dir, &cakey, &cacert, err) < 0)
		return -1;
	if (mkdir_p(sdir, 0755, err) < 0)
		goto out;
	if (access(kpath, F_OK) == 0 || access(cpath, F_OK) == 0) {
		ferr_set(err, FERR_CONFLICT,
			 "%s already has a certificate in %s; refusing to "
			 "overwrite it", name, sdir);
		goto out;
	}
	ERR_clear_error();
	key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!key || !(cert = cert_new(key, name, days)) ||
	    !X509_set_issuer_name(cert, X509_get_subject_name(cacert)) ||
	    add_ext(cert, cacert, NID_basic_constraints, "critical,CA:FALSE") <
		    0 ||
	    add_ext(cert, cacert, NID_key_usage,
		    "critical,digitalSignature") < 0 ||
	    add_ext(cert, cacert, NID_ext_key_usage,
		    kind == PKI_HOST ? "serverAuth,clientAuth" : "clientAuth") <
		    0 ||
	    add_ext(cert, cacert, NID_subject_key_identifier, "hash") < 0 ||
	    add_ext(cert, cacert, NID_authority_key_identifier, "keyid") < 0 ||
	    (san[0] && add_ext(cert, cacert, NID_subject_alt_name, san) < 0) ||
	    !X509_sign(cert, cakey, EVP_sha256())) {
		ferr_set(err, FERR_INTERNAL, "cannot issue a certificate: %s",
			 tls_error_string(ebuf, sizeof(ebuf)));
		goto out;
	}
	if (write_pair(kpath, key, cpath, cert, err) < 0)
		goto out;
	rc = 0;
out:
	EVP_PKEY_free(cakey);
	EVP_PKEY_free(key);
	X509_free(cacert);
	X509_free(cert);
	return rc;
}
