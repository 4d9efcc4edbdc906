/* tls_int.h - what the tls component's own files share. */
#ifndef FERRY_TLS_INT_H
#define FERRY_TLS_INT_H

#include <openssl/x509.h>

#include "common.h"

/* Read the CRL at path (at most FERRY_CRL_MAX bytes) into *out, checking
 * that ca signed it and that it has not expired. */
int tls_crl_read(const char *path, X509 *ca, X509_CRL **out,
		 struct ferr *err);

#endif
