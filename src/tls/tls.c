/* tls.c - TLS 1.3 mutual-authentication contexts and peer identities. */
#include "tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
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
			   NULL);
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

/* ---- the connection gate ---- */

#define GATE_ADDR_MAX 64

/* Per-connection state, in the SSL's ex_data. */
struct gate_conn {
	struct tls_gate gate; /* a copy: see tls_ctx_set_gate */
	char addr[GATE_ADDR_MAX];
	bool counted;  /* admitted and not yet released */
	bool reported; /* refused() already called */
	bool done;     /* the handshake completed */
};

static int g_conn_idx = -1; /* SSL ex_data: struct gate_conn */

/* ex_data free callback: an SSL is going away. */
static void gate_conn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad,
			   int idx, long argl, void *argp)
{
	struct gate_conn *c = ptr;

	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (!c)
		return;
	if (c->counted)
		c->gate.release(c->gate.arg, c->addr);
	free(c);
}

/* The peer address of ssl's socket, "?" when unknown. */
static void peer_addr(SSL *ssl, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = SSL_get_fd(ssl);

	snprintf(out, len, "?");
	if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out,
			  (socklen_t)len);
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
			  out, (socklen_t)len);
}

/* ClientHello: admit the connection or refuse the handshake. */
static int gate_client_hello(SSL *ssl, int *al, void *arg)
{
	const struct tls_gate *gate = arg;
	struct gate_conn *c = SSL_get_ex_data(ssl, g_conn_idx);
	char why[FERRY_ERR_MSG_MAX];

	if (c) /* a second ClientHello (HelloRetryRequest) */
		return SSL_CLIENT_HELLO_SUCCESS;
	c = calloc(1, sizeof(*c));
	if (!c) {
		*al = SSL_AD_INTERNAL_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	c->gate = *gate;
	peer_addr(ssl, c->addr, sizeof(c->addr));
	if (!SSL_set_ex_data(ssl, g_conn_idx, c)) {
		free(c);
		*al = SSL_AD_INTERNAL_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	if (!gate->admit(gate->arg, c->addr, why, sizeof(why))) {
		c->reported = true;
		gate->refused(gate->arg, c->addr, true, why);
		*al = SSL_AD_HANDSHAKE_FAILURE;
		return SSL_CLIENT_HELLO_ERROR;
	}
	c->counted = true;
	return SSL_CLIENT_HELLO_SUCCESS;
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

/* Handshake done: release the count. A failure alert: report it. */
static void gate_info(const SSL *ssl, int where, int ret)
{
	struct gate_conn *c = SSL_get_ex_data(ssl, g_conn_idx);
	char why[FERRY_ERR_MSG_MAX], alert[32];

	if (!c)
		return;
	if (where & SSL_CB_HANDSHAKE_DONE) {
		c->done = true;
		if (c->counted) {
			c->counted = false;
			c->gate.release(c->gate.arg, c->addr);
		}
	}
	/* Only a handshake that never completed is a failed authentication:
	 * after it, OpenSSL 3 also raises a fatal alert when an authenticated
	 * client closes without close_notify (unexpected EOF, "decode
	 * error"), and the state machine no longer reads as finished. */
	if ((where & SSL_CB_WRITE_ALERT) && !c->reported && !c->done) {
		long vr = SSL_get_verify_result(ssl);

		c->reported = true;
		snprintf(why, sizeof(why), "TLS handshake failed: %s%s%s",
			 alert_name(ret, alert, sizeof(alert)),
			 vr != X509_V_OK ? ": " : "",
			 vr != X509_V_OK ? X509_verify_cert_error_string(vr)
					 : "");
		c->gate.refused(c->gate.arg, c->addr, false, why);
	}
}

int tls_ctx_set_gate(SSL_CTX *ctx, const struct tls_gate *gate,
		     struct ferr *err)
{
	if (g_conn_idx < 0)
		g_conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL,
						  gate_conn_free);
	if (g_conn_idx < 0)
		return ferr_set(err, FERR_INTERNAL,
				"cannot install the TLS gate");
	SSL_CTX_set_client_hello_cb(ctx, gate_client_hello, (void *)gate);
	SSL_CTX_set_info_callback(ctx, gate_info);
	return 0;
}
