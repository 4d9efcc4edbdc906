/* eventlog.c - the measurement event log: what was extended into which
 * PCR, strictly parsed (it arrives from peers) and replayed. */
#include "attest.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

static const char *const kind_names[ATTEST_KINDS + 1] = {
	[ATTEST_KIND_FERRYD] = "ferryd",
	[ATTEST_KIND_QEMU] = "qemu",
	[ATTEST_KIND_POLICY] = "policy",
};

const char *attest_kind_name(enum attest_kind k)
{
	return k >= 1 && k <= ATTEST_KINDS ? kind_names[k] : "?";
}

enum attest_kind attest_kind_parse(const char *s)
{
	for (int k = 1; k <= ATTEST_KINDS; k++)
		if (!strcmp(s, kind_names[k]))
			return (enum attest_kind)k;
	return 0;
}

void attest_event_hash(const struct attest_event *e,
		       uint8_t out[ATTEST_DIGEST_LEN])
{
	size_t plen = strlen(e->path);
	uint8_t hdr[4] = { (uint8_t)e->kind, e->pcr, (uint8_t)(plen >> 8),
			   (uint8_t)plen };
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	/* SHA-256 cannot fail once the context exists; without one (out of
	 * memory) the output is all ones, which replays to no real PCR */
	memset(out, 0xff, ATTEST_DIGEST_LEN);
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(md);
		return;
	}
	EVP_DigestUpdate(md, ATTEST_EVENT_TAG, sizeof(ATTEST_EVENT_TAG));
	EVP_DigestUpdate(md, hdr, sizeof(hdr));
	EVP_DigestUpdate(md, e->path, plen);
	EVP_DigestUpdate(md, e->sha256, ATTEST_DIGEST_LEN);
	EVP_DigestFinal_ex(md, out, NULL);
	EVP_MD_CTX_free(md);
}

/* Is s a path we measure: absolute, printable ASCII, fits? */
static bool path_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > ATTEST_PATH_MAX || s[0] != '/')
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

int attest_log_add(struct attest_log *log, unsigned pcr, enum attest_kind k,
		   const char *path, const uint8_t sha256[ATTEST_DIGEST_LEN],
		   struct ferr *err)
{
	struct attest_event *e;

	if (pcr > ATTEST_PCR_MAX)
		return ferr_set(err, FERR_INVALID,
				"PCR %u is not one of 0-%d", pcr,
				ATTEST_PCR_MAX);
	if (!path_ok(path))
		return ferr_set(err, FERR_INVALID,
				"cannot measure \"%.64s\": the path must be "
				"absolute printable ASCII of at most %d bytes",
				path, ATTEST_PATH_MAX);
	if (k < 1 || k > ATTEST_KINDS)
		return ferr_set(err, FERR_INVALID, "unknown event kind");
	if (log->n >= ATTEST_EVENTS_MAX)
		return ferr_set(err, FERR_CONFLICT,
				"the measurement log is full (%d events since "
				"the TPM was reset)",
				ATTEST_EVENTS_MAX);
	e = &log->ev[log->n++];
	e->pcr = (uint8_t)pcr;
	e->kind = k;
	snprintf(e->path, sizeof(e->path), "%s", path);
	memcpy(e->sha256, sha256, ATTEST_DIGEST_LEN);
	return 0;
}

const struct attest_event *attest_log_latest(const struct attest_log *log,
					     enum attest_kind k)
{
	for (unsigned i = log->n; i-- > 0;)
		if (log->ev[i].kind == k)
			return &log->ev[i];
	return NULL;
}

void attest_log_replay(const struct attest_log *log, unsigned pcr,
		       uint8_t out[ATTEST_DIGEST_LEN])
{
	uint8_t buf[2 * ATTEST_DIGEST_LEN];

	memset(out, 0, ATTEST_DIGEST_LEN);
	for (unsigned i = 0; i < log->n; i++) {
		if (log->ev[i].pcr != pcr)
			continue;
		memcpy(buf, out, ATTEST_DIGEST_LEN);
		attest_event_hash(&log->ev[i], buf + ATTEST_DIGEST_LEN);
		attest_sha256(buf, sizeof(buf), out);
	}
}

int attest_log_from_json(const json_t *arr, struct attest_log *log,
			 struct ferr *err)
{
	static const char *const fields[] = { "pcr", "kind", "path", "sha256",
					      NULL };
	char what[32];
	size_t i;
	json_t *v;

	log->n = 0;
	if (!json_is_array(arr))
		return ferr_set(err, FERR_INVALID,
				"events: must be an array");
	if (json_array_size(arr) > ATTEST_EVENTS_MAX)
		return ferr_set(err, FERR_INVALID,
				"events: more than %d", ATTEST_EVENTS_MAX);
	json_array_foreach(arr, i, v) {
		const char *kind = NULL, *path = NULL, *hex = NULL;
		uint64_t pcr = 0;
		uint8_t d[ATTEST_DIGEST_LEN];
		enum attest_kind k;

		snprintf(what, sizeof(what), "events[%zu]", i);
		if (json_check_fields(v, fields, what, err) < 0 ||
		    json_get_u64(v, "pcr", what, 0, ATTEST_PCR_MAX, &pcr,
				 err) < 0 ||
		    json_get_string(v, "kind", what, ATTEST_KIND_MAX, &kind,
				    err) < 0 ||
		    json_get_string(v, "path", what, ATTEST_PATH_MAX, &path,
				    err) < 0 ||
		    json_get_string(v, "sha256", what, ATTEST_DIGEST_HEX_LEN,
				    &hex, err) < 0)
			return -1;
		if (!json_object_get(v, "pcr") || !kind || !path || !hex)
			return ferr_set(err, FERR_INVALID,
					"%s: needs pcr, kind, path and sha256",
					what);
		k = attest_kind_parse(kind);
		if (!k)
			return ferr_set(err, FERR_INVALID,
					"%s.kind: unknown kind \"%s\"", what,
					kind);
		if (attest_unhex(hex, d, sizeof(d)) < 0)
			return ferr_set(err, FERR_INVALID,
					"%s.sha256: not %d lowercase hex "
					"digits",
					what, ATTEST_DIGEST_HEX_LEN);
		if (attest_log_add(log, (unsigned)pcr, k, path, d, err) < 0)
			return ferr_wrap(err, "%s", what);
	}
	return 0;
}

json_t *attest_log_to_json(const struct attest_log *log)
{
	json_t *arr = json_array();

	for (unsigned i = 0; arr && i < log->n; i++) {
		const struct attest_event *e = &log->ev[i];
		char hex[ATTEST_DIGEST_HEX_LEN + 1];

		attest_hex(e->sha256, ATTEST_DIGEST_LEN, hex);
		if (json_array_append_new(
			    arr, json_pack("{s:i, s:s, s:s, s:s}", "pcr",
					   (int)e->pcr, "kind",
					   attest_kind_name(e->kind), "path",
					   e->path, "sha256", hex)) < 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}
