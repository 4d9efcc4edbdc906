/* simhost_tls.c - ferry-simhost's certificates (one per simulated host,
 * issued in memory from the cluster CA) and its SNI-switching TLS context. */
#define _GNU_SOURCE
#include <stdio.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "simhost.h"

/* ---- TLS ---- */

/* The host named by SNI shows its own certificate. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	int i = name ? host_index(name) : -1;

	(void)arg;
	if (i < 0 || SSL_use_certificate(ssl, S.hosts[i].cert) != 1 ||
	    SSL_use_PrivateKey(ssl, S.key) != 1) {
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	SSL_set_app_data(ssl, &S.hosts[i]);
	S.handshakes++;
	return SSL_TLSEXT_ERR_OK;
}

struct bufferevent *on_bev(struct event_base *base, void *arg)
{
	SSL *ssl = SSL_new(S.ctx);

	(void)arg;
	if (!ssl)
		return NULL;
	SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	return bufferevent_openssl_socket_new(base, -1, ssl,
					      BUFFEREVENT_SSL_ACCEPTING,
					      BEV_OPT_CLOSE_ON_FREE);
}

static X509 *load_pem_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *c = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;

	if (f)
		fclose(f);
	return c;
}

static EVP_PKEY *load_pem_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;

	if (f)
		fclose(f);
	return k;
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!ext || !X509_add_ext(cert, ext, -1))
		die("cannot add a certificate extension");
	X509_EXTENSION_free(ext);
}

/* Certificates for every host, from the CA in pki_dir. */
void issue_certs(const char *pki_dir, const char *address)
{
	char path[4096], san[256];
	X509 *ca;
	EVP_PKEY *cakey;

	snprintf(path, sizeof(path), "%s/ca.crt", pki_dir);
	ca = load_pem_cert(path);
	snprintf(path, sizeof(path), "%s/ca.key", pki_dir);
	cakey = load_pem_key(path);
	if (!ca || !cakey)
		die("cannot read the CA (ca.crt, ca.key)");
	S.key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!S.key)
		die("cannot make a key");
	for (size_t i = 0; i < S.nhosts; i++) {
		X509 *c = X509_new();
		X509_NAME *n;

		if (!c || !X509_set_version(c, 2) ||
		    !ASN1_INTEGER_set_uint64(X509_get_serialNumber(c),
					     rng_next() >> 1) ||
		    !X509_gmtime_adj(X509_getm_notBefore(c), -300) ||
		    !X509_gmtime_adj(X509_getm_notAfter(c), 86400L * 30) ||
		    !X509_set_pubkey(c, S.key) ||
		    !X509_set_issuer_name(c, X509_get_subject_name(ca)))
			die("cannot make a certificate");
		n = X509_get_subject_name(c);
		if (!X509_NAME_add_entry_by_txt(
			    n, "CN", MBSTRING_ASC,
			    (const unsigned char *)S.hosts[i].name, -1, -1, 0))
			die("cannot name a certificate");
		snprintf(san, sizeof(san), "IP:%s,DNS:%s", address,
			 S.hosts[i].name);
		add_ext(c, ca, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(c, ca, NID_key_usage, "critical,digitalSignature");
		add_ext(c, ca, NID_ext_key_usage, "serverAuth,clientAuth");
		add_ext(c, ca, NID_subject_alt_name, san);
		if (!X509_sign(c, cakey, EVP_sha256()))
			die("cannot sign a certificate");
		S.hosts[i].cert = c;
	}
	X509_free(ca);
	EVP_PKEY_free(cakey);
}

void make_ctx(const char *pki_dir)
{
	char path[4096];

	S.ctx = SSL_CTX_new(TLS_server_method());
	snprintf(path, sizeof(path), "%s/ca.crt", pki_dir);
	if (!S.ctx || !SSL_CTX_set_min_proto_version(S.ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(S.ctx, "TLS_AES_256_GCM_SHA384") ||
	    SSL_CTX_load_verify_locations(S.ctx, path, NULL) != 1)
		die("cannot make the TLS context");
	SSL_CTX_set_options(S.ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(S.ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_verify(S.ctx,
			   SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
			   NULL);
	SSL_CTX_set_tlsext_servername_callback(S.ctx, on_servername);
}
