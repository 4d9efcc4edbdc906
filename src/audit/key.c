/* key.c - the audit log's host key: load, create, publish. */
#define _GNU_SOURCE
#include "audit_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

/* ---- the host key ---------------------------------------------------------- */

/* Load the private key at path. 0, 1 when it does not exist, or -1. */
static int key_load(const char *path, EVP_PKEY **out, struct ferr *err)
{
	char buf[AUDIT_KEY_FILE_MAX];
	struct stat st;
	size_t len = 0;
	int fd, rc = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return 1;
		return ferr_set(err, FERR_IO, "cannot open %s: %s", path,
				strerror(errno));
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ferr_set(err, FERR_INVALID, "%s is not a regular file", path);
		goto out;
	}
	if ((st.st_mode & AUDIT_KEY_GROUP_OTHER) || st.st_uid != geteuid()) {
		ferr_set(err, FERR_INVALID,
			 "%s must be owned by this user and not accessible by "
			 "others (it has mode %04o); chmod 600 it", path,
			 (unsigned)(st.st_mode & 07777));
		goto out;
	}
	if (fd_read_upto(fd, buf, sizeof(buf), &len) < 0) {
		ferr_set(err, FERR_IO, "cannot read %s: %s", path,
			 strerror(errno));
		goto out;
	}
	if (len == sizeof(buf)) {
		ferr_set(err, FERR_TOO_LARGE, "%s is larger than %d bytes",
			 path, AUDIT_KEY_FILE_MAX - 1);
		goto out;
	}
	*out = audit_pem_key(buf, len, true, path, err);
	rc = *out ? 0 : -1;
out:
	secret_wipe(buf, sizeof(buf));
	close(fd);
	return rc;
}

/* Create a new key at path (O_EXCL, 0600). 0, 1 when path appeared
 * meanwhile (load it instead), or -1. */
static int key_create(const char *path, EVP_PKEY **out, struct ferr *err)
{
	char ebuf[128];
	EVP_PKEY *key = NULL;
	BIO *bio = NULL;
	char *pem = NULL;
	long plen = 0;
	int fd = -1, rc = -1;

	ERR_clear_error();
	key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	bio = BIO_new(BIO_s_mem());
	if (!key || !bio ||
	    !PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) ||
	    (plen = BIO_get_mem_data(bio, &pem)) <= 0) {
		ferr_set(err, FERR_INTERNAL, "cannot create the audit key: %s",
			 audit_ssl_error(ebuf, sizeof(ebuf)));
		goto out;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  AUDIT_KEY_MODE);
	if (fd < 0) {
		if (errno == EEXIST)
			rc = 1;
		else
			ferr_set(err, FERR_IO, "cannot create %s: %s", path,
				 strerror(errno));
		goto out;
	}
	if (fchmod(fd, AUDIT_KEY_MODE) < 0 ||
	    fd_write_all(fd, pem, (size_t)plen) < 0 || fsync(fd) < 0) {
		ferr_set(err, FERR_IO, "cannot write %s: %s", path,
			 strerror(errno));
		unlink(path);
		goto out;
	}
	*out = key;
	key = NULL;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (pem && plen > 0)
		secret_wipe(pem, (size_t)plen);
	BIO_free(bio);
	EVP_PKEY_free(key);
	return rc;
}

/* Write <dir>/audit.pub for key unless it already holds that PEM. */
static int pub_sync(const char *dir, EVP_PKEY *key, struct ferr *err)
{
	char path[FERRY_PATH_MAX], ebuf[128];
	char *pem = NULL, *old = NULL;
	size_t olen = 0;
	long plen = 0;
	BIO *bio;
	int rc = -1;

	if (fmt_checked(path, sizeof(path), err, "audit folder path",
			"%s/" AUDIT_PUB_NAME, dir) < 0)
		return -1;
	bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_PUBKEY(bio, key) ||
	    (plen = BIO_get_mem_data(bio, &pem)) <= 0) {
		ferr_set(err, FERR_INTERNAL, "cannot encode the audit key: %s",
			 audit_ssl_error(ebuf, sizeof(ebuf)));
		goto out;
	}
	if (file_read_all(path, AUDIT_KEY_FILE_MAX, &old, &olen, NULL) == 0 &&
	    olen == (size_t)plen && !memcmp(old, pem, olen)) {
		rc = 0;
		goto out;
	}
	rc = file_write_atomic(path, pem, (size_t)plen, AUDIT_PUB_MODE, err);
out:
	free(old);
	BIO_free(bio);
	return rc;
}

/* Load <dir>/audit.key or create it, and keep audit.pub in step. */
int audit_key_open(const char *dir, EVP_PKEY **key, struct ferr *err)
{
	char path[FERRY_PATH_MAX];
	int rc = 1;

	if (fmt_checked(path, sizeof(path), err, "audit folder path",
			"%s/" AUDIT_KEY_NAME, dir) < 0)
		return -1;
	/* Twice at most: a key created by someone else between our load and
	 * our O_EXCL create is loaded on the second round. */
	for (int round = 0; round < 2 && rc == 1; round++) {
		rc = key_load(path, key, err);
		if (rc != 1)
			break;
		rc = key_create(path, key, err);
		if (rc == 0 && audit_fsync_dir(dir, err) < 0)
			rc = -1;
	}
	if (rc == 1)
		rc = ferr_set(err, FERR_IO, "cannot load or create %s", path);
	if (rc == 0 && pub_sync(dir, *key, err) < 0)
		rc = -1;
	if (rc < 0) {
		EVP_PKEY_free(*key);
		*key = NULL;
	}
	return rc;
}

int audit_key_given(const char *dir, EVP_PKEY *given, EVP_PKEY **key,
		    struct ferr *err)
{
	if (EVP_PKEY_get_base_id(given) != EVP_PKEY_ED25519)
		return ferr_set(err, FERR_INVALID,
				"the audit key given is not Ed25519");
	if (EVP_PKEY_up_ref(given) != 1)
		return ferr_set(err, FERR_INTERNAL, "cannot use the audit key");
	*key = given;
	if (pub_sync(dir, *key, err) < 0) {
		EVP_PKEY_free(*key);
		*key = NULL;
		return -1;
	}
	return 0;
}
