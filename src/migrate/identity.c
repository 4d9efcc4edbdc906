/* identity.c - identities (size, SHA-256) of a VM's shared-storage
 * files, so both hosts can check they see the same images. */
#define _GNU_SOURCE
#include "migrate_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define FP_CHUNK (1024 * 1024)

/* SHA-256 of len bytes of fd from off, fed into ctx, through buf
 * (FP_CHUNK bytes). */
static int hash_range(int fd, EVP_MD_CTX *ctx, unsigned char *buf,
		      uint64_t off, uint64_t len)
{
	while (len > 0) {
		size_t want = len > FP_CHUNK ? FP_CHUNK : (size_t)len;
		ssize_t n = pread(fd, buf, want, (off_t)off);

		if (n <= 0)
			return -1;
		if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
			return -1;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* Identity of one shared-storage file: size and sha256 (see migrate.h). */
static json_t *file_identity(const char *shared, const char *rel,
			     struct ferr *err)
{
	char path[FERRY_PATH_MAX], hex[2 * EVP_MAX_MD_SIZE + 1];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = NULL;
	unsigned char *buf = NULL;
	struct stat st;
	json_t *out = NULL;
	uint64_t size;
	int fd;

	if (fmt_checked(path, sizeof(path), err, "path", "%s/%s", shared,
			rel) < 0)
		return NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ferr_set(err, FERR_CONFLICT,
			 "%s is not a file in shared storage", rel);
		goto out;
	}
	size = (uint64_t)st.st_size;
	ctx = EVP_MD_CTX_new();
	buf = malloc(FP_CHUNK);
	if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto fail;
	if (size <= MIG_FINGERPRINT_FULL) {
		if (hash_range(fd, ctx, buf, 0, size) < 0)
			goto fail;
	} else if (hash_range(fd, ctx, buf, 0, FP_CHUNK) < 0 ||
		   hash_range(fd, ctx, buf, size - FP_CHUNK, FP_CHUNK) < 0) {
		goto fail;
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
		goto fail;
	hex_encode(md, mdlen, hex);
	out = json_pack("{s:s, s:I, s:s}", "path", rel, "size",
			(json_int_t)size, "sha256", hex);
	goto out;
fail:
	ferr_set(err, FERR_IO, "cannot read %s", path);
out:
	free(buf);
	EVP_MD_CTX_free(ctx);
	if (fd >= 0)
		close(fd);
	return out;
}

json_t *mig_files_identity(const char *shared_dir, const struct vm_def *def,
			   struct ferr *err)
{
	const char *const names[] = { "kernel", "initrd", "disk" };
	const char *const rels[] = { def->kernel, def->initrd, def->disk };
	json_t *files = json_object();

	for (int i = 0; i < 3 && files; i++) {
		json_t *id;

		if (!rels[i][0])
			continue;
		id = file_identity(shared_dir, rels[i], err);
		if (!id) {
			json_decref(files);
			return NULL;
		}
		json_object_set_new(files, names[i], id);
	}
	return files;
}

int mig_files_compare(const json_t *ours, const json_t *theirs,
		      struct ferr *err)
{
	const char *key;
	json_t *mine;

	if (!json_is_object(theirs) ||
	    json_object_size(theirs) != json_object_size(ours))
		return ferr_set(err, FERR_INVALID,
				"the source's file list does not match the "
				"VM definition");
	json_object_foreach((json_t *)ours, key, mine) {
		json_t *t = json_object_get(theirs, key);

		if (!t || !json_equal(t, mine))
			return ferr_set(err, FERR_CONFLICT,
					"%s %s differs between the hosts' "
					"shared storage (size or content): it "
					"must be the same image",
					key,
					json_string_value(
						json_object_get(mine, "path")));
	}
	return 0;
}
