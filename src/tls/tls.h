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

/* A gate on a server context, called for every TLS connection: admit()
 * when its ClientHello arrives (false refuses the handshake before any key
 * exchange), release() once it authenticated or closed, and refused() when
 * admit() said no (limited) or the handshake failed (e.g. no or a foreign client
 * certificate). addr is the peer's numeric address. Callbacks may run on
 * any thread. */
struct tls_gate {
	bool (*admit)(void *arg, const char *addr, char *why, size_t len);
	void (*release)(void *arg, const char *addr);
	void (*refused)(void *arg, const char *addr, bool limited,
			const char *why);
	void *arg;
};

/* Install gate on ctx (borrowed while ctx accepts connections). Each
 * connection keeps a copy of it, so gate itself may go before them, but
 * gate->arg must outlive them: with libevent their last free (which
 * releases a connection still counted) can come as late as
 * event_base_free. */
int tls_ctx_set_gate(SSL_CTX *ctx, const struct tls_gate *gate,
		     struct ferr *err);

/* The identity (CN, else first DNS SAN) of the certificate in cert_file. */
int tls_cert_identity(const char *cert_file, char *out, size_t len,
		      struct ferr *err);

/* Format and clear the OpenSSL error queue into buf; returns buf. */
const char *tls_error_string(char *buf, size_t len);

/* PKI: create a cluster CA in dir (ca.key 0600, ca.crt). Refuses to
 * overwrite an existing CA. */
int pki_init(const char *dir, const char *cluster, unsigned days,
	     struct ferr *err);

enum pki_kind { PKI_HOST, PKI_USER };

/* PKI: issue a certificate for name signed by the CA in dir, written to
 * dir/hosts/NAME.{key,crt} or dir/users/NAME.{key,crt} (key 0600). Host
 * certificates get serverAuth+clientAuth and the given IP/DNS SANs; user
 * certificates get clientAuth only. NULL-terminated san lists may be NULL.
 * Refuses to overwrite an existing key. */
int pki_issue(const char *dir, enum pki_kind kind, const char *name,
	      const char *const *ips, const char *const *dns, unsigned days,
	      struct ferr *err);

#endif
