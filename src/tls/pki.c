/* pki.c - the cluster CA and the host and user certificates it issues,
 * built with the OpenSSL API (EC P-256 keys, SHA-256 signatures). */
#define _GNU_SOURCE
#include "tls.h"
#include "tls_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define PKI_SERIAL_BITS 127
#define PKI_SERIAL_HEX_MAX 41 /* 160 bits in hex and a NUL */
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

static int crl_write(const char *dir, EVP_PKEY *cakey, X509 *cacert,
		     X509_CRL *old, X509 *revoke, struct ferr *err);

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
	if (write_pair(kpath, key, cpath, cert, err) < 0 ||
	    crl_write(dir, key, cert, NULL, NULL, err) < 0)
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

/* dir/hosts/NAME.crt or dir/users/NAME.crt. */
static int cert_path(const char *dir, enum pki_kind kind, const char *name,
		     char *out, size_t len, struct ferr *err)
{
	return fmt_checked(out, len, err, "path", "%s/%s/%s.crt", dir,
			   kind == PKI_HOST ? "hosts" : "users", name);
}

int pki_issue(const char *dir, enum pki_kind kind, const char *name,
	      const char *const *ips, const char *const *dns, unsigned days,
	      struct ferr *err)
{
	const char *sub = kind == PKI_HOST ? "hosts" : "users";
	char kpath[FERRY_PATH_MAX], cpath[FERRY_PATH_MAX], sdir[FERRY_PATH_MAX];
	char san[PKI_SAN_MAX], ebuf[256], other[FERRY_PATH_MAX];
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
	if (cert_path(dir, kind == PKI_HOST ? PKI_USER : PKI_HOST, name, other,
		      sizeof(other), err) < 0)
		goto out;
	if (access(other, F_OK) == 0) {
		ferr_set(err, FERR_CONFLICT,
			 "%s already has a %s certificate (%s): host and user "
			 "names must differ, or a user could act as the host",
			 name, kind == PKI_HOST ? "user" : "host", other);
		goto out;
	}
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

/* ---- revocation ---- */

/* Write dir/crl.pem: the CA's list with old's entries (may be NULL) and
 * revoke's serial (may be NULL), numbered one past old's, valid until the
 * CA expires. */
static int crl_write(const char *dir, EVP_PKEY *cakey, X509 *cacert,
		     X509_CRL *old, X509 *revoke, struct ferr *err)
{
	STACK_OF(X509_REVOKED) *prev = old ? X509_CRL_get_REVOKED(old) : NULL;
	char path[FERRY_PATH_MAX], ebuf[256];
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *now = ASN1_TIME_set(NULL, time(NULL));
	ASN1_INTEGER *num = NULL;
	X509_EXTENSION *aki = NULL;
	X509V3_CTX v3;
	BIO *mem = BIO_new(BIO_s_mem());
	char *pem;
	long pem_len;
	int rc = -1;

	if (fmt_checked(path, sizeof(path), err, "path", "%s/crl.pem", dir) < 0)
		goto out;
	ERR_clear_error();
	num = old ? X509_CRL_get_ext_d2i(old, NID_crl_number, NULL, NULL)
		  : NULL;
	if (!num)
		num = ASN1_INTEGER_new();
	if (!crl || !now || !num || !mem ||
	    !ASN1_INTEGER_set_int64(num, (old ? ASN1_INTEGER_get(num) : 0) + 1) ||
	    !X509_CRL_set_version(crl, X509_CRL_VERSION_2) ||
	    !X509_CRL_set_issuer_name(crl, X509_get_subject_name(cacert)) ||
	    !X509_CRL_set1_lastUpdate(crl, now) ||
	    !X509_CRL_set1_nextUpdate(crl, X509_get0_notAfter(cacert)) ||
	    !X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0))
		goto ssl_fail;
	X509V3_set_ctx(&v3, cacert, NULL, NULL, crl, 0);
	aki = X509V3_EXT_conf_nid(NULL, &v3, NID_authority_key_identifier,
				  "keyid");
	if (!aki || !X509_CRL_add_ext(crl, aki, -1))
		goto ssl_fail;
	for (int i = 0; i < sk_X509_REVOKED_num(prev); i++) {
		X509_REVOKED *r = X509_REVOKED_dup(sk_X509_REVOKED_value(prev, i));

		if (!r || !X509_CRL_add0_revoked(crl, r)) {
			X509_REVOKED_free(r);
			goto ssl_fail;
		}
	}
	if (revoke) {
		X509_REVOKED *r = X509_REVOKED_new();

		if (!r ||
		    !X509_REVOKED_set_serialNumber(
			    r, (ASN1_INTEGER *)X509_get0_serialNumber(revoke)) ||
		    !X509_REVOKED_set_revocationDate(r, now) ||
		    !X509_CRL_add0_revoked(crl, r)) {
			X509_REVOKED_free(r);
			goto ssl_fail;
		}
	}
	if (!X509_CRL_sort(crl) || !X509_CRL_sign(crl, cakey, EVP_sha256()) ||
	    !PEM_write_bio_X509_CRL(mem, crl))
		goto ssl_fail;
	pem_len = BIO_get_mem_data(mem, &pem);
	rc = file_write_atomic(path, pem, (size_t)pem_len, 0644, err);
	goto out;
ssl_fail:
	ferr_set(err, FERR_INTERNAL, "cannot write %s: %s", path,
		 tls_error_string(ebuf, sizeof(ebuf)));
out:
	X509_EXTENSION_free(aki);
	ASN1_INTEGER_free(num);
	ASN1_TIME_free(now);
	X509_CRL_free(crl);
	BIO_free(mem);
	return rc;
}

/* The certificate in path, or NULL. */
static X509 *read_cert(const char *path, struct ferr *err)
{
	FILE *f = fopen(path, "re");
	X509 *cert;

	if (!f) {
		ferr_set(err, FERR_NOT_FOUND, "cannot open %s: %s", path,
			 strerror(errno));
		return NULL;
	}
	cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!cert) {
		ERR_clear_error();
		ferr_set(err, FERR_INVALID, "%s is not a PEM certificate",
			 path);
	}
	return cert;
}

/* Find name's certificate of kind (PKI_ANY: the one it has) into path. */
static int find_cert(const char *dir, enum pki_kind kind, const char *name,
		     char *path, size_t len, struct ferr *err)
{
	char host[FERRY_PATH_MAX], user[FERRY_PATH_MAX];
	bool has_host, has_user;

	if (cert_path(dir, PKI_HOST, name, host, sizeof(host), err) < 0 ||
	    cert_path(dir, PKI_USER, name, user, sizeof(user), err) < 0)
		return -1;
	has_host = (kind != PKI_USER) && access(host, F_OK) == 0;
	has_user = (kind != PKI_HOST) && access(user, F_OK) == 0;
	if (has_host && has_user)
		return ferr_set(err, FERR_CONFLICT,
				"%s has a host and a user certificate: say "
				"which to revoke (ferry pki revoke host|user "
				"%s)",
				name, name);
	if (!has_host && !has_user)
		return ferr_set(err, FERR_NOT_FOUND,
				"%s has no %scertificate in %s", name,
				kind == PKI_HOST   ? "host "
				: kind == PKI_USER ? "user "
						   : "",
				dir);
	return fmt_checked(path, len, err, "path", "%s",
			   has_host ? host : user);
}

int pki_revoke(const char *dir, enum pki_kind kind, const char *name,
	       char *serial, size_t serial_len, struct ferr *err)
{
	char cpath[FERRY_PATH_MAX], kpath[FERRY_PATH_MAX];
	char rdir[FERRY_PATH_MAX], rcert[FERRY_PATH_MAX], rkey[FERRY_PATH_MAX];
	char crlpath[FERRY_PATH_MAX], hex[PKI_SERIAL_HEX_MAX];
	EVP_PKEY *cakey = NULL;
	X509 *cacert = NULL, *cert = NULL;
	X509_CRL *old = NULL;
	BIGNUM *bn = NULL;
	char *s = NULL;
	int rc = -1;

	if (!name_is_valid(name))
		return ferr_set(err, FERR_INVALID,
				"\"%s\" is not a valid name", name);
	if (find_cert(dir, kind, name, cpath, sizeof(cpath), err) < 0 ||
	    fmt_checked(kpath, sizeof(kpath), err, "path", "%.*s.key",
			(int)(strlen(cpath) - 4), cpath) < 0 ||
	    fmt_checked(crlpath, sizeof(crlpath), err, "path", "%s/crl.pem",
			dir) < 0 ||
	    fmt_checked(rdir, sizeof(rdir), err, "path", "%s/revoked", dir) <
		    0)
		return -1;
	if (load_ca(dir, &cakey, &cacert, err) < 0)
		return -1;
	if (!(cert = read_cert(cpath, err)))
		goto out;
	if (X509_check_issued(cacert, cert) != X509_V_OK) {
		ferr_set(err, FERR_INVALID, "%s was not issued by %s/ca.crt",
			 cpath, dir);
		goto out;
	}
	if (access(crlpath, F_OK) == 0 &&
	    tls_crl_read(crlpath, cacert, &old, err) < 0)
		goto out;
	bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
	s = bn ? BN_bn2hex(bn) : NULL;
	if (!s || strlen(s) >= sizeof(hex)) {
		ferr_set(err, FERR_INVALID, "%s has a bad serial number",
			 cpath);
		goto out;
	}
	snprintf(hex, sizeof(hex), "%s", s);
	if (fmt_checked(rcert, sizeof(rcert), err, "path", "%s/%s.%s.crt",
			rdir, name, hex) < 0 ||
	    fmt_checked(rkey, sizeof(rkey), err, "path", "%s/%s.%s.key", rdir,
			name, hex) < 0 ||
	    mkdir_p(rdir, 0755, err) < 0 ||
	    crl_write(dir, cakey, cacert, old, cert, err) < 0)
		goto out;
	/* the list is written: the name is free again */
	if (rename(cpath, rcert) < 0 ||
	    (access(kpath, F_OK) == 0 && rename(kpath, rkey) < 0)) {
		ferr_set(err, FERR_IO,
			 "%s is revoked, but moving its files to %s failed: %s",
			 name, rdir, strerror(errno));
		goto out;
	}
	if (serial)
		snprintf(serial, serial_len, "%s", hex);
	rc = 0;
out:
	OPENSSL_free(s);
	BN_free(bn);
	X509_CRL_free(old);
	X509_free(cert);
	X509_free(cacert);
	EVP_PKEY_free(cakey);
	return rc;
}
