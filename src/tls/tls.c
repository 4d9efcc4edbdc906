/* tls.c - TLS 1.3 mutual-authentication contexts, peer identities and
 * classes, per-connection hooks and the revocation list. */
#include "tls.h"
#include "tls_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* The one TLS 1.3 suite ferry speaks (API and migration channels). */
#define TLS_SUITES "TLS_AES_256_GCM_SHA384"

const char *tls_error_string(char *buf, size_t len)
{
	unsigned long e;
	size_t off = 0;

	buf[0] = '\0';
	while ((e = ERR_get_error()) != 0) {
		char one[256];
		int n;

		ERR_error_string_n(e, one, sizeof(one));
		n = snprintf(buf + off, len - off, "%s%s", off ? "; " : "",
			     one);
		if (n < 0 || (size_t)n >= len - off)
			break;
		off += (size_t)n;
	}
	if (!buf[0])
		snprintf(buf, len, "unknown TLS error");
	return buf;
}

/* Keys given by tls_key_provide, by key file path. */
static struct {
	char *path;
	EVP_PKEY *key;
} provided[TLS_PROVIDED_KEYS_MAX];

int tls_key_provide(const char *key_file, EVP_PKEY *key, struct ferr *err)
{
	for (int i = 0; i < TLS_PROVIDED_KEYS_MAX; i++) {
		if (provided[i].path)
			continue;
		provided[i].path = strdup(key_file);
		if (!provided[i].path || EVP_PKEY_up_ref(key) != 1) {
			free(provided[i].path);
			provided[i].path = NULL;
			return ferr_set(err, FERR_INTERNAL, "out of memory");
		}
		provided[i].key = key;
		return 0;
	}
	return ferr_set(err, FERR_INTERNAL, "too many provided TLS keys");
}

void tls_keys_clear(void)
{
	for (int i = 0; i < TLS_PROVIDED_KEYS_MAX; i++) {
		free(provided[i].path);
		EVP_PKEY_free(provided[i].key);
		provided[i].path = NULL;
		provided[i].key = NULL;
	}
}

static EVP_PKEY *provided_key(const char *key_file)
{
	for (int i = 0; i < TLS_PROVIDED_KEYS_MAX; i++)
		if (provided[i].path && !strcmp(provided[i].path, key_file))
			return provided[i].key;
	return NULL;
}

int tls_exporter(SSL *ssl, unsigned char out[TLS_EXPORTER_LEN],
		 struct ferr *err)
{
	if (!ssl ||
	    SSL_export_keying_material(ssl, out, TLS_EXPORTER_LEN,
				       TLS_EXPORTER_ATTEST,
				       strlen(TLS_EXPORTER_ATTEST), NULL, 0,
				       0) != 1)
		return ferr_set(err, FERR_INTERNAL,
				"no TLS exporter for this connection");
	return 0;
}

static int verify_revocation(int ok, X509_STORE_CTX *x);

/* Common part of server and client contexts. */
static SSL_CTX *ctx_new(const SSL_METHOD *method, const char *ca_file,
			const char *cert_file, const char *key_file,
			struct ferr *err)
{
	char ebuf[512];
	SSL_CTX *ctx;

	ERR_clear_error();
	ctx = SSL_CTX_new(method);
	if (!ctx) {
		ferr_set(err, FERR_INTERNAL, "SSL_CTX_new: %s",
			 tls_error_string(ebuf, sizeof(ebuf)));
		return NULL;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, TLS_SUITES)) {
		ferr_set(err, FERR_INTERNAL, "cannot restrict to TLS 1.3: %s",
			 tls_error_string(ebuf, sizeof(ebuf)));
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
	if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		ferr_set(err, FERR_INVALID, "cannot load CA %s: %s", ca_file,
			 tls_error_string(ebuf, sizeof(ebuf)));
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		ferr_set(err, FERR_INVALID, "cannot load certificate %s: %s",
			 cert_file, tls_error_string(ebuf, sizeof(ebuf)));
		goto fail;
	}
	if (provided_key(key_file)
		    ? SSL_CTX_use_PrivateKey(ctx, provided_key(key_file)) != 1
		    : SSL_CTX_use_PrivateKey_file(ctx, key_file,
						  SSL_FILETYPE_PEM) != 1) {
		ferr_set(err, FERR_INVALID, "cannot load key %s: %s", key_file,
			 tls_error_string(ebuf, sizeof(ebuf)));
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ferr_set(err, FERR_INVALID, "key %s does not match %s: %s",
			 key_file, cert_file,
			 tls_error_string(ebuf, sizeof(ebuf)));
		goto fail;
	}
	SSL_CTX_set_verify(ctx,
			   SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
			   verify_revocation);
	SSL_CTX_set_verify_depth(ctx, 2);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

SSL_CTX *tls_server_ctx_new(const char *ca_file, const char *cert_file,
			    const char *key_file, struct ferr *err)
{
	SSL_CTX *ctx = ctx_new(TLS_server_method(), ca_file, cert_file,
			       key_file, err);

	if (ctx)
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return ctx;
}

SSL_CTX *tls_client_ctx_new(const char *ca_file, const char *cert_file,
			    const char *key_file, struct ferr *err)
{
	return ctx_new(TLS_client_method(), ca_file, cert_file, key_file, err);
}

int tls_client_expect(SSL *ssl, const char *ip, const char *name,
		      struct ferr *err)
{
	X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);

	if (ip && X509_VERIFY_PARAM_set1_ip_asc(vp, ip) != 1)
		return ferr_set(err, FERR_INVALID, "bad peer address %s", ip);
	if (name) {
		X509_VERIFY_PARAM_set_hostflags(
			vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
				    X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
		if (X509_VERIFY_PARAM_set1_host(vp, name, 0) != 1 ||
		    SSL_set_tlsext_host_name(ssl, name) != 1)
			return ferr_set(err, FERR_INVALID, "bad peer name %s",
					name);
	}
	return 0;
}

/* First DNS subjectAltName of cert into out; -1 if none fits. */
static int first_dns_san(X509 *cert, char *out, size_t len)
{
	GENERAL_NAMES *names;
	int rc = -1;

	names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	if (!names)
		return -1;
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		const unsigned char *d;
		int n;

		if (gn->type != GEN_DNS)
			continue;
		d = ASN1_STRING_get0_data(gn->d.dNSName);
		n = ASN1_STRING_length(gn->d.dNSName);
		if (n <= 0 || (size_t)n >= len || memchr(d, 0, (size_t)n))
			break;
		memcpy(out, d, (size_t)n);
		out[n] = '\0';
		rc = 0;
		break;
	}
	GENERAL_NAMES_free(names);
	return rc;
}

/* Identity of cert: its CN, else its first DNS SAN; a valid name. */
static int cert_identity(X509 *cert, char *out, size_t len)
{
	X509_NAME *subj = X509_get_subject_name(cert);
	int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
	int rc = -1;

	if (idx >= 0) {
		ASN1_STRING *cn =
			X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
		const unsigned char *d = ASN1_STRING_get0_data(cn);
		int n = ASN1_STRING_length(cn);

		if (n > 0 && (size_t)n < len && !memchr(d, 0, (size_t)n)) {
			memcpy(out, d, (size_t)n);
			out[n] = '\0';
			rc = 0;
		}
	} else {
		rc = first_dns_san(cert, out, len);
	}
	if (rc == 0 && !name_is_valid(out))
		rc = -1;
	return rc;
}

int tls_cert_identity(const char *cert_file, char *out, size_t len,
		      struct ferr *err)
{
	FILE *f = fopen(cert_file, "re");
	X509 *cert;
	int rc;

	if (!f)
		return ferr_set(err, FERR_NOT_FOUND, "cannot open %s",
				cert_file);
	cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!cert)
		return ferr_set(err, FERR_INVALID,
				"%s is not a PEM certificate", cert_file);
	rc = cert_identity(cert, out, len);
	X509_free(cert);
	if (rc < 0)
		return ferr_set(err, FERR_INVALID,
				"%s has no valid identity (CN)", cert_file);
	return 0;
}

int tls_peer_identity(SSL *ssl, char *out, size_t len)
{
	X509 *peer;
	int rc;

	if (!ssl || SSL_get_verify_result(ssl) != X509_V_OK)
		return -1;
	peer = SSL_get1_peer_certificate(ssl);
	if (!peer)
		return -1;
	rc = cert_identity(peer, out, len);
	X509_free(peer);
	return rc;
}

bool tls_peer_is_host(SSL *ssl)
{
	X509 *peer;
	bool host;

	if (!ssl || SSL_get_verify_result(ssl) != X509_V_OK)
		return false;
	peer = SSL_get1_peer_certificate(ssl);
	if (!peer)
		return false;
	/* without the extension X509_get_extended_key_usage says "any" */
	host = (X509_get_extension_flags(peer) & EXFLAG_XKUSAGE) &&
	       (X509_get_extended_key_usage(peer) & XKU_SSL_SERVER);
	X509_free(peer);
	return host;
}

const char *tls_handshake_error(SSL *ssl, char *buf, size_t len)
{
	long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
	size_t n;

	tls_error_string(buf, len);
	n = strlen(buf);
	if (vr != X509_V_OK && n < len)
		snprintf(buf + n, len - n, ": %s",
			 X509_verify_cert_error_string(vr));
	return buf;
}

/* ---- per-connection hooks ---- */

struct tls_conn {
	const struct tls_conn_hooks *hooks;
	void *conn;
	bool reported; /* failed() already called */
	bool done;     /* the handshake completed */
};

static int g_conn_idx = -1; /* SSL ex_data: struct tls_conn */
static pthread_once_t g_conn_once = PTHREAD_ONCE_INIT;

/* ex_data free callback: an SSL is going away. */
static void conn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
		      long argl, void *argp)
{
	struct tls_conn *c = ptr;

	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (!c)
		return;
	c->hooks->gone(c->conn);
	free(c);
}

static void conn_index_init(void)
{
	g_conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_free);
}

/* The name of the alert in an info callback's ret. OpenSSL 3.0 calls TLS
 * 1.3's certificate_required (what a client without a certificate gets)
 * "unknown". */
static const char *alert_name(int ret, char *buf, size_t len)
{
	const char *s = SSL_alert_desc_string_long(ret);

	if ((ret & 0xff) == SSL_AD_CERTIFICATE_REQUIRED)
		return "certificate required";
	if (!strcmp(s, "unknown")) {
		snprintf(buf, len, "alert %d", ret & 0xff);
		return buf;
	}
	return s;
}

/* Handshake done, or a failure alert from us: tell the hooks. */
static void conn_info(const SSL *ssl, int where, int ret)
{
	struct tls_conn *c = SSL_get_ex_data(ssl, g_conn_idx);
	char why[FERRY_ERR_MSG_MAX], alert[32];

	if (!c)
		return;
	if ((where & SSL_CB_HANDSHAKE_DONE) && !c->done) {
		c->done = true;
		c->hooks->done(c->conn);
	}
	/* Only a handshake that never completed is a failed authentication:
	 * after it, OpenSSL 3 also raises a fatal alert when an authenticated
	 * client closes without close_notify (unexpected EOF, "decode
	 * error"). */
	if ((where & SSL_CB_WRITE_ALERT) && !c->reported && !c->done) {
		long vr = SSL_get_verify_result(ssl);

		c->reported = true;
		snprintf(why, sizeof(why), "TLS handshake failed: %s%s%s",
			 alert_name(ret, alert, sizeof(alert)),
			 vr != X509_V_OK ? ": " : "",
			 vr != X509_V_OK ? X509_verify_cert_error_string(vr)
					 : "");
		c->hooks->failed(c->conn, why);
	}
}

int tls_conn_attach(SSL *ssl, const struct tls_conn_hooks *hooks, void *conn,
		    struct ferr *err)
{
	struct tls_conn *c;

	pthread_once(&g_conn_once, conn_index_init);
	if (g_conn_idx < 0)
		return ferr_set(err, FERR_INTERNAL,
				"cannot attach to TLS connections");
	c = calloc(1, sizeof(*c));
	if (!c)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	c->hooks = hooks;
	c->conn = conn;
	if (!SSL_set_ex_data(ssl, g_conn_idx, c)) {
		free(c);
		return ferr_set(err, FERR_INTERNAL,
				"cannot attach to a TLS connection");
	}
	SSL_set_info_callback(ssl, conn_info);
	return 0;
}

void *tls_conn_get(SSL *ssl)
{
	struct tls_conn *c;

	if (!ssl || g_conn_idx < 0)
		return NULL;
	c = SSL_get_ex_data(ssl, g_conn_idx);
	return c ? c->conn : NULL;
}

/* ---- revocation ----
 *
 * One list per process, swapped whole under a lock and checked by a
 * verify callback on every context. (OpenSSL's own X509_V_FLAG_CRL_CHECK
 * reads CRLs from each context's X509_STORE, from which an old CRL cannot
 * be removed while other threads verify with it; the lookup itself is
 * OpenSSL's X509_CRL_get0_by_cert.) */

static pthread_mutex_t g_crl_lock = PTHREAD_MUTEX_INITIALIZER;
static X509_CRL *g_crl;

/* Certificate verification: after OpenSSL's own checks, refuse a peer
 * (depth 0: ferry issues no intermediates) that the list revokes. */
static int verify_revocation(int ok, X509_STORE_CTX *x)
{
	const ASN1_TIME *next;
	X509_REVOKED *rev;
	X509_CRL *crl;

	if (!ok || X509_STORE_CTX_get_error_depth(x) != 0)
		return ok;
	pthread_mutex_lock(&g_crl_lock);
	crl = g_crl;
	if (crl)
		X509_CRL_up_ref(crl);
	pthread_mutex_unlock(&g_crl_lock);
	if (!crl)
		return ok;
	next = X509_CRL_get0_nextUpdate(crl);
	if (X509_CRL_get0_by_cert(crl, &rev,
				  X509_STORE_CTX_get_current_cert(x)) > 0) {
		X509_STORE_CTX_set_error(x, X509_V_ERR_CERT_REVOKED);
		ok = 0;
	} else if (next && X509_cmp_current_time(next) < 0) {
		X509_STORE_CTX_set_error(x, X509_V_ERR_CRL_HAS_EXPIRED);
		ok = 0;
	}
	X509_CRL_free(crl);
	return ok;
}

int tls_crl_read(const char *path, X509 *ca, X509_CRL **out,
		 struct ferr *err)
{
	const ASN1_TIME *next;
	X509_CRL *crl = NULL;
	char *text = NULL;
	size_t len = 0;
	BIO *bio;

	if (file_read_all(path, FERRY_CRL_MAX, &text, &len, err) < 0)
		return -1;
	bio = BIO_new_mem_buf(text, (int)len);
	if (bio)
		crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
	BIO_free(bio);
	free(text);
	ERR_clear_error();
	if (!crl)
		return ferr_set(err, FERR_INVALID,
				"%s is not a PEM certificate revocation list",
				path);
	next = X509_CRL_get0_nextUpdate(crl);
	if (X509_NAME_cmp(X509_CRL_get_issuer(crl),
			  X509_get_subject_name(ca)) != 0 ||
	    X509_CRL_verify(crl, X509_get0_pubkey(ca)) != 1) {
		ERR_clear_error();
		ferr_set(err, FERR_INVALID,
			 "%s is not signed by the cluster CA", path);
		goto fail;
	}
	if (next && X509_cmp_current_time(next) < 0) {
		ferr_set(err, FERR_INVALID,
			 "%s has expired (nextUpdate is past)", path);
		goto fail;
	}
	*out = crl;
	return 0;
fail:
	X509_CRL_free(crl);
	return -1;
}

int tls_crl_load(const char *crl_file, const char *ca_file, size_t *revoked,
		 struct ferr *err)
{
	X509_CRL *crl = NULL, *old;
	X509 *ca;
	FILE *f = fopen(ca_file, "re");

	if (!f)
		return ferr_set(err, FERR_NOT_FOUND, "cannot open CA %s",
				ca_file);
	ca = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!ca) {
		ERR_clear_error();
		return ferr_set(err, FERR_INVALID,
				"%s is not a PEM certificate", ca_file);
	}
	if (tls_crl_read(crl_file, ca, &crl, err) < 0) {
		X509_free(ca);
		return -1;
	}
	X509_free(ca);
	if (revoked)
		*revoked = (size_t)sk_X509_REVOKED_num(
			X509_CRL_get_REVOKED(crl));
	pthread_mutex_lock(&g_crl_lock);
	old = g_crl;
	g_crl = crl;
	pthread_mutex_unlock(&g_crl_lock);
	X509_CRL_free(old);
	return 0;
}
