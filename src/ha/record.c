/* record.c - the HA record of a protected VM (ha_wire.h): its JSON text,
 * parsed strictly as input from disk. Pure: unit-tested and fuzzed. */
#define _GNU_SOURCE
#include "ha_wire.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* A requester is a certificate's identity: printable, no spaces. */
static bool identity_ok(const char *s)
{
	if (!s[0] || strlen(s) > FERRY_NAME_MAX)
		return false;
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e)
			return false;
	return true;
}

static bool address_ok(const char *s)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, s, buf) == 1 ||
	       inet_pton(AF_INET6, s, buf) == 1;
}

/* A required string field into out (at most max bytes). */
static int get_str(const json_t *o, const char *key, size_t max, char *out,
		   struct ferr *err)
{
	const char *v = NULL;

	if (json_get_string(o, key, "ha record", max, &v, err) < 0)
		return -1;
	if (!v)
		return ferr_set(err, FERR_INVALID, "ha record: %s is missing",
				key);
	memcpy(out, v, strlen(v) + 1);
	return 0;
}

/* The checks that do not depend on JSON (shared by format). */
static int check(const struct ha_record *r, struct ferr *err)
{
	if (!name_is_valid(r->vm))
		return ferr_set(err, FERR_INVALID,
				"ha record: vm is not a valid name");
	if (!uuid_is_valid(r->uuid))
		return ferr_set(err, FERR_INVALID,
				"ha record: uuid is not a uuid");
	if (!identity_ok(r->requester))
		return ferr_set(err, FERR_INVALID,
				"ha record: requester is not a printable "
				"identity");
	if (r->interval_s < 1 || r->interval_s > HA_RECORD_INTERVAL_MAX)
		return ferr_set(err, FERR_INVALID,
				"ha record: interval_s must be 1..%u",
				HA_RECORD_INTERVAL_MAX);
	if (!r->backup[0]) {
		if (r->address[0] || r->port)
			return ferr_set(err, FERR_INVALID,
					"ha record: address and port without "
					"a backup");
		return 0;
	}
	if (!name_is_valid(r->backup))
		return ferr_set(err, FERR_INVALID,
				"ha record: backup is not a valid host name");
	if (!address_ok(r->address))
		return ferr_set(err, FERR_INVALID,
				"ha record: address is not a numeric IP "
				"address");
	if (!r->port)
		return ferr_set(err, FERR_INVALID,
				"ha record: port must be 1..65535");
	return 0;
}

int ha_record_parse(const char *text, size_t len, struct ha_record *r,
		    struct ferr *err)
{
	static const char *const fields[] = { "version", "vm", "uuid",
					      "requester", "backup", "address",
					      "port", "interval_s", NULL };
	uint64_t version = 0, port = 0, interval = 0;
	json_t *o;
	int rc = -1;

	memset(r, 0, sizeof(*r));
	if (len > HA_RECORD_MAX)
		return ferr_set(err, FERR_TOO_LARGE,
				"ha record: %zu bytes, at most %d", len,
				HA_RECORD_MAX);
	o = json_parse_object(text, len, "ha record", err);
	if (!o)
		return -1;
	if (json_check_fields(o, fields, "ha record", err) < 0)
		goto out;
	/* the version first: a later format is named as such */
	if (!json_object_get(o, "version")) {
		ferr_set(err, FERR_INVALID, "ha record: version is missing");
		goto out;
	}
	if (json_get_u64(o, "version", "ha record", 0, UINT32_MAX, &version,
			 err) < 0)
		goto out;
	if (version != HA_RECORD_VERSION) {
		ferr_set(err, FERR_INVALID,
			 "ha record: version %llu, this ferryd reads %u",
			 (unsigned long long)version, HA_RECORD_VERSION);
		goto out;
	}
	if (get_str(o, "vm", FERRY_NAME_MAX, r->vm, err) < 0 ||
	    get_str(o, "uuid", FERRY_UUID_STR_LEN, r->uuid, err) < 0 ||
	    get_str(o, "requester", FERRY_NAME_MAX, r->requester, err) < 0 ||
	    get_str(o, "backup", FERRY_NAME_MAX, r->backup, err) < 0 ||
	    get_str(o, "address", HA_RECORD_ADDR_MAX, r->address, err) < 0)
		goto out;
	if (!json_object_get(o, "port") || !json_object_get(o, "interval_s")) {
		ferr_set(err, FERR_INVALID,
			 "ha record: port and interval_s are required");
		goto out;
	}
	if (json_get_u64(o, "port", "ha record", 0, 65535, &port, err) < 0 ||
	    json_get_u64(o, "interval_s", "ha record", 1,
			 HA_RECORD_INTERVAL_MAX, &interval, err) < 0)
		goto out;
	r->port = (uint16_t)port;
	r->interval_s = (uint32_t)interval;
	rc = check(r, err);
out:
	json_decref(o);
	return rc;
}

int ha_record_format(const struct ha_record *r, char **out, size_t *len,
		     struct ferr *err)
{
	json_t *o;

	*out = NULL;
	if (check(r, err) < 0)
		return -1;
	o = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:i, s:i}", "version",
		      (int)HA_RECORD_VERSION, "vm", r->vm, "uuid", r->uuid,
		      "requester", r->requester, "backup", r->backup,
		      "address", r->address, "port", (int)r->port,
		      "interval_s", (int)r->interval_s);
	if (o)
		*out = json_dumps(o, JSON_SORT_KEYS | JSON_INDENT(1));
	json_decref(o);
	if (!*out)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	*len = strlen(*out);
	return 0;
}
