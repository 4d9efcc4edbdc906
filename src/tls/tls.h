/* tls.h - OpenSSL contexts for ferry's mutual-TLS connections, peer
 * identities, and the cluster PKI (CA, host and user certificates).
 *
 * All connections are TLS 1.3 only and both ends present a certificate
 * issued by the cluster CA. An identity is the certificate's subject CN, or
 * its first DNS subjectAltName when it has no CN.
 */
#ifndef FERRY_TLS_H
#define FERRY_TLS_H

#include <stdbool.h>
#include <openssl/ssl.h>

#include "common.h"

/* Server context: our cert+key, peers must present a cert from ca_file.
 * Returns NULL with *err set (naming the file) on failure. */
SSL_CTX *tls_server_ctx_new(const char *ca_file, const char *cert_file,
			    const char *key_file, struct ferr *err);

/* Client context: our cert+key, the server must present a cert from ca_file
 * (its name is checked per connection with tls_client_expect_host). */
SSL_CTX *tls_client_ctx_new(const char *ca_file, const char *cert_file,
			    const char *key_file, struct ferr *err);

/* Require the server of this client connection to hold a certificate for
 * the numeric address ip (IP SAN; may be NULL) and for name (DNS SAN, which
 * every host certificate carries for its own name; may be NULL), sending
 * name as SNI. */
int tls_client_expect(SSL *ssl, const char *ip, const char *name,
		      struct ferr *err);

/* Use key for every context made later with key_file as its key file,
 * instead of reading that file (a key kept sealed by the TPM, see
 * attest_tpm.h, whose file no longer exists). Takes a reference. Call
 * before any thread makes contexts; tls_keys_clear() drops them all. At
 * most TLS_PROVIDED_KEYS_MAX keys. */
#define TLS_PROVIDED_KEYS_MAX 4
int tls_key_provide(const char *key_file, EVP_PKEY *key, struct ferr *err);
void tls_keys_clear(void);

/* The TLS exporter (RFC 8446, 7.5) of a connection for attestation, with
 * the label TLS_EXPORTER_ATTEST and no context: both ends of one TLS
 * session get the same TLS_EXPORTER_LEN bytes, no other session does. */
#define TLS_EXPORTER_ATTEST "EXPORTER-ferry-attest"
#define TLS_EXPORTER_LEN 32
int tls_exporter(SSL *ssl, unsigned char out[TLS_EXPORTER_LEN],
		 struct ferr *err);

/* Copy the verified peer's identity into out. -1 when the peer has no
 * verified certificate or its name is not a valid ferry name. */
int tls_peer_identity(SSL *ssl, char *out, size_t len);

/* Is the verified peer's certificate a host certificate? Host certificates
 * carry extendedKeyUsage serverAuth (and clientAuth); user certificates
 * carry clientAuth only (see pki_issue). A name alone says nothing: the
 * host role and the migration data plane need a host certificate. */
bool tls_peer_is_host(SSL *ssl);

/* Why the handshake of ssl failed, into buf: OpenSSL's error queue
 * (cleared) and the peer certificate's verification error, e.g.
 * "...certificate verify failed: certificate revoked". Returns buf. */
const char *tls_handshake_error(SSL *ssl, char *buf, size_t len);

/* Hooks on one server connection, attached with tls_conn_attach: done()
 * once its handshake completed (the peer is authenticated), failed() when
 * the handshake failed with an alert from us (why names the alert and the
 * certificate's verification error: no, a foreign or a revoked
 * certificate), and gone() when the SSL is freed (always, last; conn may
 * be freed there). Called on the thread that drives the SSL. */
struct tls_conn_hooks {
	void (*done)(void *conn);
	void (*failed)(void *conn, const char *why);
	void (*gone)(void *conn);
};

/* Attach hooks (static storage) and the caller's conn to ssl. */
int tls_conn_attach(SSL *ssl, const struct tls_conn_hooks *hooks, void *conn,
		    struct ferr *err);

/* The conn attached to ssl, or NULL. */
void *tls_conn_get(SSL *ssl);

/* Revocation: load the CRL in crl_file (PEM, at most FERRY_CRL_MAX bytes),
 * check that the CA in ca_file signed it and that it has not expired, and
 * make it the list that every context of this process (server and client,
 * all threads) checks peer certificates against, replacing the previous
 * one. On error the previous list stays. *revoked (may be NULL) gets the
 * number of revoked certificates. */
int tls_crl_load(const char *crl_file, const char *ca_file, size_t *revoked,
		 struct ferr *err);

/* The identity (CN, else first DNS SAN) of the certificate in cert_file. */
int tls_cert_identity(const char *cert_file, char *out, size_t len,
		      struct ferr *err);

/* Format and clear the OpenSSL error queue into buf; returns buf. */
const char *tls_error_string(char *buf, size_t len);

/* PKI: create a cluster CA in dir (ca.key 0600, ca.crt) and its empty
 * revocation list (crl.pem). Refuses to overwrite an existing CA. */
int pki_init(const char *dir, const char *cluster, unsigned days,
	     struct ferr *err);

enum pki_kind { PKI_HOST, PKI_USER, PKI_ANY };

/* PKI: issue a certificate for name signed by the CA in dir, written to
 * dir/hosts/NAME.{key,crt} or dir/users/NAME.{key,crt} (key 0600). Host
 * certificates get serverAuth+clientAuth and the given IP/DNS SANs; user
 * certificates get clientAuth only. NULL-terminated san lists may be NULL.
 * Refuses to overwrite an existing key, and a name that already has a
 * certificate of the other kind (FERR_CONFLICT): hosts and users share
 * one name space in the policy. */
int pki_issue(const char *dir, enum pki_kind kind, const char *name,
	      const char *const *ips, const char *const *dns, unsigned days,
	      struct ferr *err);

/* PKI: revoke name's certificate (kind PKI_HOST, PKI_USER, or PKI_ANY for
 * whichever one name has; FERR_CONFLICT when it has both): add its serial
 * to dir/crl.pem (written atomically, signed by the CA, created when
 * absent) and move its files to dir/revoked/NAME.SERIAL.{crt,key}, so the
 * name can be issued again. serial (may be NULL) gets the serial in hex. */
int pki_revoke(const char *dir, enum pki_kind kind, const char *name,
	       char *serial, size_t serial_len, struct ferr *err);

#endif
