/* tls.c - TLS 1.3 mutual-authentication contexts and peer identities. */
#include "tls.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
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
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
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

int tls_peer_identity(SSL *ssl, char *out, size_t len)
{
	X509 *peer;
	X509_NAME *subj;
	int idx;
	int rc = -1;

	if (!ssl || SSL_get_verify_result(ssl) != X509_V_OK)
		return -1;
	peer = SSL_get1_peer_certificate(ssl);
	if (!peer)
		return -1;
	subj = X509_get_subject_name(peer);
	idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
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
		rc = first_dns_san(peer, out, len);
	}
	X509_free(peer);
	if (rc == 0 && !name_is_valid(out))
		rc = -1;
	return rc;
}
