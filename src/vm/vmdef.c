/* vmdef.c - strict validation of VM definitions. */
#include "vm.h"
#include "netdev.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <openssl/rand.h>

bool vmdef_path_is_safe(const char *p)
{
	const char *seg = p;

	if (!*p || *p == '/' || strlen(p) >= FERRY_PATH_MAX)
		return false;
	for (const char *c = p; *c; c++) {
		if (!(isalnum((unsigned char)*c) || *c == '.' || *c == '_' ||
		      *c == '-' || *c == '+' || *c == '/'))
			return false;
	}
	/* reject "..", "." and empty segments */
	for (;;) {
		const char *end = strchr(seg, '/');
		size_t n = end ? (size_t)(end - seg) : strlen(seg);

		if (n == 0 || (n == 1 && seg[0] == '.') ||
		    (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return false;
		if (!end)
			return true;
		seg = end + 1;
	}
}

/* Fill def->uuid with a random version-4 UUID. */
static int uuid_generate(char *out, struct ferr *err)
{
	unsigned char b[16];

	if (RAND_bytes(b, sizeof(b)) != 1)
		return ferr_set(err, FERR_INTERNAL, "no randomness for a uuid");
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, FERRY_UUID_STR_LEN + 1,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
		 b[10], b[11], b[12], b[13], b[14], b[15]);
	return 0;
}

/* Copy an optional shared-storage path field into out after checking it. */
static int get_rel_path(const json_t *obj, const char *key, const char *what,
			char *out, size_t len, struct ferr *err)
{
	const char *s = NULL;

	if (json_get_string(obj, key, what, len - 1, &s, err) < 0)
		return -1;
	if (!s)
		return 0;
	if (!vmdef_path_is_safe(s))
		return ferr_set(err, FERR_INVALID,
				"%s.%s \"%.100s\" must be a path relative to "
				"the shared-storage dir, without \"..\", made "
				"of [A-Za-z0-9._+/-]",
				what, key, s);
	snprintf(out, len, "%s", s);
	return 0;
}

/* A disk format field: absent is raw. */
static int get_format(const json_t *disk, const char *key,
		      enum disk_format *out, struct ferr *err)
{
	const char *fmt = NULL;

	if (json_get_string(disk, key, "vm.disk", 8, &fmt, err) < 0)
		return -1;
	if (!fmt || !strcmp(fmt, "raw"))
		*out = DISK_RAW;
	else if (!strcmp(fmt, "qcow2"))
		*out = DISK_QCOW2;
	else
		return ferr_set(err, FERR_INVALID,
				"vm.disk.%s must be \"raw\" or \"qcow2\"", key);
	return 0;
}

/* Parse the optional "disk" object. */
static int parse_disk(const json_t *disk, struct vm_def *def, struct ferr *err)
{
	static const char *const fields[] = { "path", "format", "backing",
					      "backing_format", NULL };

	if (json_check_fields(disk, fields, "vm.disk", err) < 0 ||
	    get_rel_path(disk, "path", "vm.disk", def->disk, sizeof(def->disk),
			 err) < 0 ||
	    get_format(disk, "format", &def->disk_format, err) < 0 ||
	    get_rel_path(disk, "backing", "vm.disk", def->backing,
			 sizeof(def->backing), err) < 0 ||
	    get_format(disk, "backing_format", &def->backing_format, err) < 0)
		return -1;
	if (!def->disk[0])
		return ferr_set(err, FERR_INVALID, "vm.disk.path is required");
	if (def->backing[0] && def->disk_format != DISK_QCOW2)
		return ferr_set(err, FERR_INVALID,
				"vm.disk.backing needs vm.disk.format qcow2");
	if (!def->backing[0] && json_object_get(disk, "backing_format"))
		return ferr_set(err, FERR_INVALID,
				"vm.disk.backing_format needs vm.disk.backing");
	return 0;
}

/* Parse the optional "labels" object: {"key": "value"}, valid names. */
static int parse_labels(const json_t *labels, struct vm_def *def,
			struct ferr *err)
{
	const char *k;
	json_t *v;

	if (!json_is_object(labels))
		return ferr_set(err, FERR_INVALID,
				"vm.labels must be an object of key: value");
	if (json_object_size(labels) > FERRY_VM_LABELS_MAX)
		return ferr_set(err, FERR_INVALID,
				"vm.labels has more than %d labels",
				FERRY_VM_LABELS_MAX);
	json_object_foreach((json_t *)labels, k, v) {
		if (!name_is_valid(k) || !json_is_string(v) ||
		    !name_is_valid(json_string_value(v)))
			return ferr_set(err, FERR_INVALID,
					"vm.labels.%.64s: keys and values "
					"must be [a-z0-9][a-z0-9._-]*",
					k);
		snprintf(def->labels[def->nlabels].key,
			 sizeof(def->labels[0].key), "%s", k);
		snprintf(def->labels[def->nlabels].value,
			 sizeof(def->labels[0].value), "%s",
			 json_string_value(v));
		def->nlabels++;
	}
	return 0;
}

/* Parse the optional "migration" settings object. */
static int parse_migration(const json_t *mig, struct vm_def *def,
			   struct ferr *err)
{
	static const char *const fields[] = { "max_downtime_ms", "max_time_s",
					      "allow_postcopy", NULL };

	if (json_check_fields(mig, fields, "vm.migration", err) < 0 ||
	    json_get_u64(mig, "max_downtime_ms", "vm.migration",
			 FERRY_MIG_DOWNTIME_MS_MIN, FERRY_MIG_DOWNTIME_MS_MAX,
			 &def->max_downtime_ms, err) < 0 ||
	    json_get_u64(mig, "max_time_s", "vm.migration",
			 FERRY_MIG_TIME_S_MIN, FERRY_MIG_TIME_S_MAX,
			 &def->max_time_s, err) < 0 ||
	    json_get_bool(mig, "allow_postcopy", "vm.migration",
			  &def->allow_postcopy, err) < 0)
		return -1;
	return 0;
}

/* The optional "network": "none", "user" or {"bridge": NAME, "mac": MAC}.
 * def->mac already holds the uuid-derived default. */
static int parse_network(const json_t *net, struct vm_def *def,
			 struct ferr *err)
{
	static const char *const fields[] = { "bridge", "mac", NULL };
	const char *br = NULL, *mac = NULL;
	uint8_t m[6];

	if (!net || (json_is_string(net) &&
		     !strcmp(json_string_value(net), "none"))) {
		def->net = NET_NONE;
		return 0;
	}
	if (json_is_string(net) && !strcmp(json_string_value(net), "user")) {
		def->net = NET_USER;
		return 0;
	}
	if (!json_is_object(net))
		return ferr_set(err, FERR_INVALID,
				"vm.network must be \"none\", \"user\" or "
				"{\"bridge\": NAME, \"mac\": MAC}");
	if (json_check_fields(net, fields, "vm.network", err) < 0 ||
	    json_get_string(net, "bridge", "vm.network", FERRY_NAME_MAX, &br,
			    err) < 0 ||
	    json_get_string(net, "mac", "vm.network", 17, &mac, err) < 0)
		return -1;
	if (!br)
		return ferr_set(err, FERR_INVALID,
				"vm.network.bridge is required");
	if (!name_is_valid(br))
		return ferr_set(err, FERR_INVALID,
				"vm.network.bridge \"%.64s\" is not a valid "
				"name ([a-z0-9][a-z0-9._-]*)", br);
	if (mac) {
		if (mac_parse(mac, m) < 0)
			return ferr_set(err, FERR_INVALID,
					"vm.network.mac \"%.20s\" is not a "
					"unicast MAC address "
					"(aa:bb:cc:dd:ee:ff)", mac);
		mac_format(m, def->mac);
	}
	def->net = NET_BRIDGE;
	snprintf(def->bridge, sizeof(def->bridge), "%s", br);
	return 0;
}

int vmdef_from_json(const json_t *obj, struct vm_def *def, struct ferr *err)
{
	static const char *const fields[] = {
		"name", "uuid", "memory_mib", "vcpus", "kernel", "initrd",
		"cmdline", "disk", "network", "migration", "labels",
		"constraints", "firewall", NULL
	};
	const char *s = NULL;
	json_t *disk;

	memset(def, 0, sizeof(*def));
	def->vcpus = 1;
	def->max_downtime_ms = FERRY_MIG_DOWNTIME_MS_DEFAULT;
	def->max_time_s = FERRY_MIG_TIME_S_DEFAULT;
	if (json_check_fields(obj, fields, "vm", err) < 0)
		return -1;

	if (json_get_string(obj, "name", "vm", FERRY_NAME_MAX, &s, err) < 0)
		return -1;
	if (!s)
		return ferr_set(err, FERR_INVALID, "vm.name is required");
	if (!name_is_valid(s))
		return ferr_set(err, FERR_INVALID,
				"vm.name \"%.64s\" is not valid: use "
				"[a-z0-9][a-z0-9._-]*, at most %d characters",
				s, FERRY_NAME_MAX);
	snprintf(def->name, sizeof(def->name), "%s", s);

	s = NULL;
	if (json_get_string(obj, "uuid", "vm", FERRY_UUID_STR_LEN + 1, &s,
			    err) < 0)
		return -1;
	if (s) {
		if (!uuid_is_valid(s))
			return ferr_set(err, FERR_INVALID,
					"vm.uuid \"%.40s\" is not a lowercase "
					"UUID", s);
		snprintf(def->uuid, sizeof(def->uuid), "%s", s);
	} else if (uuid_generate(def->uuid, err) < 0) {
		return -1;
	}

	if (!json_object_get(obj, "memory_mib"))
		return ferr_set(err, FERR_INVALID, "vm.memory_mib is required");
	if (json_get_u64(obj, "memory_mib", "vm", FERRY_VM_MEM_MIN_MIB,
			 FERRY_VM_MEM_MAX_MIB, &def->memory_mib, err) < 0 ||
	    json_get_u64(obj, "vcpus", "vm", FERRY_VM_VCPU_MIN,
			 FERRY_VM_VCPU_MAX, &def->vcpus, err) < 0)
		return -1;

	if (get_rel_path(obj, "kernel", "vm", def->kernel, sizeof(def->kernel),
			 err) < 0 ||
	    get_rel_path(obj, "initrd", "vm", def->initrd, sizeof(def->initrd),
			 err) < 0)
		return -1;
	s = NULL;
	if (json_get_string(obj, "cmdline", "vm", FERRY_VM_CMDLINE_MAX, &s,
			    err) < 0)
		return -1;
	if (s) {
		for (const char *c = s; *c; c++)
			if (*c < 0x20 || *c > 0x7e)
				return ferr_set(err, FERR_INVALID,
						"vm.cmdline must be printable "
						"ASCII");
		snprintf(def->cmdline, sizeof(def->cmdline), "%s", s);
	}
	if (!def->kernel[0] && (def->initrd[0] || def->cmdline[0]))
		return ferr_set(err, FERR_INVALID,
				"vm.initrd and vm.cmdline need vm.kernel");

	disk = json_object_get(obj, "disk");
	if (disk && parse_disk(disk, def, err) < 0)
		return -1;
	if (!def->kernel[0] && !def->disk[0])
		return ferr_set(err, FERR_INVALID,
				"vm needs a kernel or a disk to boot from");

	if (json_object_get(obj, "migration") &&
	    parse_migration(json_object_get(obj, "migration"), def, err) < 0)
		return -1;
	if (json_object_get(obj, "labels") &&
	    parse_labels(json_object_get(obj, "labels"), def, err) < 0)
		return -1;

	if (json_object_get(obj, "constraints") &&
	    vm_constraints_from_json(json_object_get(obj, "constraints"),
				     &def->cons, err) < 0)
		return -1;

	/* a stable locally administered MAC derived from the uuid */
	snprintf(def->mac, sizeof(def->mac), "52:54:00:%.2s:%.2s:%.2s",
		 def->uuid, def->uuid + 2, def->uuid + 4);
	if (parse_network(json_object_get(obj, "network"), def, err) < 0)
		return -1;
	if (json_object_get(obj, "firewall")) {
		if (fw_policy_from_json(json_object_get(obj, "firewall"),
					"vm.firewall", &def->fw, err) < 0)
			return -1;
		if (def->net != NET_BRIDGE)
			return ferr_set(err, FERR_INVALID,
					"vm.firewall needs a bridged network "
					"(vm.network.bridge): it filters the "
					"VM's tap");
	}
	return 0;
}

json_t *vmdef_to_json(const struct vm_def *def)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:I}", "name", def->name,
			      "uuid", def->uuid, "memory_mib",
			      (json_int_t)def->memory_mib, "vcpus",
			      (json_int_t)def->vcpus);

	if (!o)
		return NULL;
	if (def->net == NET_BRIDGE)
		json_object_set_new(o, "network",
				    json_pack("{s:s, s:s}", "bridge",
					      def->bridge, "mac", def->mac));
	else
		json_object_set_new(o, "network",
				    json_string(def->net == NET_USER ? "user"
								     : "none"));
	if (def->kernel[0])
		json_object_set_new(o, "kernel", json_string(def->kernel));
	if (def->initrd[0])
		json_object_set_new(o, "initrd", json_string(def->initrd));
	if (def->cmdline[0])
		json_object_set_new(o, "cmdline", json_string(def->cmdline));
	json_object_set_new(
		o, "migration",
		json_pack("{s:I, s:I, s:b}", "max_downtime_ms",
			  (json_int_t)def->max_downtime_ms, "max_time_s",
			  (json_int_t)def->max_time_s, "allow_postcopy",
			  def->allow_postcopy));
	if (def->nlabels) {
		json_t *l = json_object();

		for (unsigned i = 0; i < def->nlabels; i++)
			json_object_set_new(l, def->labels[i].key,
					    json_string(def->labels[i].value));
		json_object_set_new(o, "labels", l);
	}
	if (def->cons.present)
		json_object_set_new(o, "constraints",
				    vm_constraints_to_json(&def->cons, true));
	if (def->fw.present && def->fw.origin == FW_ORIGIN_VM)
		json_object_set_new(o, "firewall", fw_policy_to_json(&def->fw));
	if (def->disk[0]) {
		json_t *d = json_pack("{s:s, s:s}", "path", def->disk, "format",
				      def->disk_format == DISK_QCOW2 ? "qcow2"
								     : "raw");

		if (d && def->backing[0]) {
			json_object_set_new(d, "backing",
					    json_string(def->backing));
			json_object_set_new(
				d, "backing_format",
				json_string(def->backing_format == DISK_QCOW2
						    ? "qcow2"
						    : "raw"));
		}
		json_object_set_new(o, "disk", d);
	}
	return o;
}
