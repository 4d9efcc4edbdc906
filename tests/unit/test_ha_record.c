/* Unit tests: the HA record of a protected VM (src/ha/record.c,
 * ha_wire.h), read back by a restarted ferryd as input from disk. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ha_wire.h"

#define UUID "0b5e2c1a-7f3d-4e8a-9c21-5d6f7a8b9c0d"

static const struct ha_record good = {
	.vm = "web", .uuid = UUID, .requester = "admin",
	.backup = "host-b", .address = "127.0.0.3", .port = 7443,
	.interval_s = 10,
};

static void test_roundtrip(void **state)
{
	struct ha_record r = good, back;
	struct ferr err = { 0 };
	char *text = NULL;
	size_t len = 0;

	(void)state;
	assert_int_equal(ha_record_format(&r, &text, &len, &err), 0);
	assert_int_equal(ha_record_parse(text, len, &back, &err), 0);
	assert_memory_equal(&r, &back, sizeof(r));
	free(text);
	/* no backup (the VM failed over to here): no address, no port */
	memset(r.backup, 0, sizeof(r.backup));
	memset(r.address, 0, sizeof(r.address));
	r.port = 0;
	assert_int_equal(ha_record_format(&r, &text, &len, &err), 0);
	assert_int_equal(ha_record_parse(text, len, &back, &err), 0);
	assert_memory_equal(&r, &back, sizeof(r));
	free(text);
}

/* The record text with field `key` replaced by the JSON `value` (NULL:
 * removed), expected to be refused with needle in the message. */
static void refused(const char *key, const char *value, const char *needle,
		    enum ferr_code code)
{
	char text[1024], *p = text;
	const char *keys[] = { "version", "vm", "uuid", "requester", "backup",
			       "address", "port", "interval_s" };
	const char *vals[] = { "1", "\"web\"", "\"" UUID "\"", "\"admin\"",
			       "\"host-b\"", "\"127.0.0.3\"", "7443", "10" };
	struct ha_record r;
	struct ferr err = { 0 };
	bool first = true;

	p += sprintf(p, "{");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v = strcmp(keys[i], key) ? vals[i] : value;

		if (!v)
			continue;
		p += sprintf(p, "%s\"%s\": %s", first ? "" : ", ", keys[i], v);
		first = false;
	}
	if (!strcmp(key, "extra"))
		p += sprintf(p, ", \"extra\": %s", value);
	sprintf(p, "}");
	assert_int_equal(ha_record_parse(text, strlen(text), &r, &err), -1);
	assert_int_equal(err.code, code);
	if (!strstr(err.msg, needle))
		fail_msg("%s: \"%s\" lacks \"%s\"", text, err.msg, needle);
}

static void test_refusals(void **state)
{
	(void)state;
	refused("version", "2", "version 2, this ferryd reads 1",
		FERR_INVALID);
	refused("version", NULL, "version is missing", FERR_INVALID);
	refused("version", "\"1\"", "version", FERR_INVALID);
	refused("extra", "1", "extra", FERR_INVALID);
	refused("vm", NULL, "vm is missing", FERR_INVALID);
	refused("vm", "\"Web!\"", "vm is not a valid name", FERR_INVALID);
	refused("vm", "7", "vm", FERR_INVALID);
	refused("uuid", "\"0B5E2C1A-7F3D-4E8A-9C21-5D6F7A8B9C0D\"",
		"uuid is not a uuid", FERR_INVALID);
	refused("uuid", "\"0b5e2c1a-7f3d-4e8a-9c21-5d6f7a8b9c0\"",
		"uuid is not a uuid", FERR_INVALID);
	refused("uuid", "\"../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaa\"",
		"uuid", FERR_INVALID);
	refused("requester", "\"a b\"", "requester", FERR_INVALID);
	refused("requester", "\"\"", "requester", FERR_INVALID);
	refused("backup", "\"Host B\"", "backup is not a valid host name",
		FERR_INVALID);
	refused("backup", "\"\"", "address and port without a backup",
		FERR_INVALID);
	refused("address", "\"host-b.example\"", "address is not a numeric",
		FERR_INVALID);
	refused("address", "\"\"", "address is not a numeric", FERR_INVALID);
	refused("port", "0", "port must be", FERR_INVALID);
	refused("port", "65536", "port", FERR_INVALID);
	refused("port", "-1", "port", FERR_INVALID);
	refused("port", NULL, "port and interval_s are required",
		FERR_INVALID);
	refused("interval_s", "0", "interval_s", FERR_INVALID);
	refused("interval_s", "3601", "interval_s", FERR_INVALID);
	refused("interval_s", "1.5", "interval_s", FERR_INVALID);
}

static void test_not_json(void **state)
{
	static const char *const bad[] = { "", "{", "[]", "null",
					   "{\"version\": 1", "\x01\x02" };
	struct ha_record r;
	struct ferr err = { 0 };
	char *big;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(ha_record_parse(bad[i], strlen(bad[i]), &r,
						 &err),
				 -1);
		assert_int_equal(err.code, FERR_INVALID);
		assert_non_null(strstr(err.msg, "ha record"));
	}
	big = calloc(1, HA_RECORD_MAX + 2);
	assert_non_null(big);
	memset(big, ' ', HA_RECORD_MAX + 1);
	assert_int_equal(ha_record_parse(big, HA_RECORD_MAX + 1, &r, &err), -1);
	assert_int_equal(err.code, FERR_TOO_LARGE);
	free(big);
}

static void test_format_refuses(void **state)
{
	struct ha_record r = good;
	struct ferr err = { 0 };
	char *text = NULL;
	size_t len = 0;

	(void)state;
	r.port = 0;
	assert_int_equal(ha_record_format(&r, &text, &len, &err), -1);
	assert_null(text);
	r = good;
	r.uuid[0] = 'X';
	assert_int_equal(ha_record_format(&r, &text, &len, &err), -1);
	assert_null(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_not_json),
		cmocka_unit_test(test_format_refuses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
