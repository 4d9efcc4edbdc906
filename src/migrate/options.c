/* options.c - the options of a migrate request. */
#include "migrate_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

const char *mig_mode_name(enum mig_mode m)
{
	switch (m) {
	case MIG_OFFLINE:
		return "offline";
	case MIG_POSTCOPY:
		return "postcopy";
	default:
		return "live";
	}
}

int mig_opts_from_json(const json_t *body, struct mig_opts *o,
		       struct ferr *err)
{
	static const char *const fields[] = {
		"to", "address", "port", "mode", "max_downtime_ms",
		"bandwidth_mibps", "channels", "max_time_s", "insecure",
		"compress", "fence", NULL
	};
	const char *s = NULL, *mode = NULL, *compress = NULL;
	unsigned char buf[16];
	uint64_t port = FERRY_API_PORT_DEFAULT, fence = 0;

	memset(o, 0, sizeof(*o));
	if (!body)
		return ferr_set(err, FERR_INVALID,
				"a migration request needs a body naming the "
				"destination");
	if (json_check_fields(body, fields, "migration", err) < 0 ||
	    json_get_string(body, "to", "migration", FERRY_NAME_MAX, &s, err) <
		    0)
		return -1;
	if (!s || !name_is_valid(s))
		return ferr_set(err, FERR_INVALID,
				"migration.to must name the destination host");
	snprintf(o->to, sizeof(o->to), "%s", s);
	s = NULL;
	if (json_get_string(body, "address", "migration", 63, &s, err) < 0)
		return -1;
	if (!s || (inet_pton(AF_INET, s, buf) != 1 &&
		   inet_pton(AF_INET6, s, buf) != 1))
		return ferr_set(err, FERR_INVALID,
				"migration.address must be the destination's "
				"numeric IP address");
	snprintf(o->address, sizeof(o->address), "%s", s);
	if (json_get_u64(body, "port", "migration", 1, 65535, &port, err) < 0 ||
	    json_get_string(body, "mode", "migration", 16, &mode, err) < 0 ||
	    json_get_u64(body, "max_downtime_ms", "migration",
			 FERRY_MIG_DOWNTIME_MS_MIN, FERRY_MIG_DOWNTIME_MS_MAX,
			 &o->max_downtime_ms, err) < 0 ||
	    json_get_u64(body, "bandwidth_mibps", "migration", 1, 1000000,
			 &o->bandwidth_mibps, err) < 0 ||
	    json_get_u64(body, "channels", "migration", 1, MIG_MULTIFD_MAX,
			 &o->channels, err) < 0 ||
	    json_get_u64(body, "max_time_s", "migration", FERRY_MIG_TIME_S_MIN,
			 FERRY_MIG_TIME_S_MAX, &o->max_time_s, err) < 0 ||
	    json_get_bool(body, "insecure", "migration", &o->insecure, err) < 0 ||
	    json_get_string(body, "compress", "migration", 8, &compress,
			    err) < 0 ||
	    json_get_u64(body, "fence", "migration", 1, INT64_MAX, &fence,
			 err) < 0)
		return -1;
	o->port = (uint16_t)port;
	o->fence = (int64_t)fence;
	if (!mode || !strcmp(mode, "live"))
		o->mode = MIG_LIVE;
	else if (!strcmp(mode, "offline"))
		o->mode = MIG_OFFLINE;
	else if (!strcmp(mode, "postcopy"))
		o->mode = MIG_POSTCOPY;
	else
		return ferr_set(err, FERR_INVALID,
				"migration.mode must be \"live\", \"offline\" "
				"or \"postcopy\"");
	if (!compress || !strcmp(compress, "auto"))
		o->compress = MIG_COMPRESS_AUTO;
	else if (!strcmp(compress, "on"))
		o->compress = MIG_COMPRESS_ON;
	else if (!strcmp(compress, "off"))
		o->compress = MIG_COMPRESS_OFF;
	else
		return ferr_set(err, FERR_INVALID,
				"migration.compress must be \"auto\", \"on\" "
				"or \"off\"");
	return 0;
}
