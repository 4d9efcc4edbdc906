/* json.c - strict field checks over jansson objects for hostile input. */
#include "common.h"

#include <string.h>

int json_check_fields(const json_t *obj, const char *const *allowed,
		      const char *what, struct ferr *err)
{
	const char *key;
	json_t *val;

	if (!json_is_object(obj))
		return ferr_set(err, FERR_INVALID, "%s must be a JSON object",
				what);
	json_object_foreach((json_t *)obj, key, val) {
		bool ok = false;

		(void)val;
		for (const char *const *a = allowed; *a; a++) {
			if (!strcmp(*a, key)) {
				ok = true;
				break;
			}
		}
		if (!ok)
			return ferr_set(err, FERR_INVALID,
					"%s: unknown field \"%.64s\"", what,
					key);
	}
	return 0;
}

int json_get_string(const json_t *obj, const char *key, const char *what,
		    size_t max_len, const char **out, struct ferr *err)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		return 0;
	if (!json_is_string(v))
		return ferr_set(err, FERR_INVALID, "%s.%s must be a string",
				what, key);
	if (json_string_length(v) > max_len)
		return ferr_set(err, FERR_INVALID,
				"%s.%s is longer than %zu bytes", what, key,
				max_len);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return ferr_set(err, FERR_INVALID, "%s.%s contains a NUL byte",
				what, key);
	*out = json_string_value(v);
	return 0;
}

int json_get_u64(const json_t *obj, const char *key, const char *what,
		 uint64_t min, uint64_t max, uint64_t *out, struct ferr *err)
{
	json_t *v = json_object_get(obj, key);
	json_int_t i;

	if (!v)
		return 0;
	if (!json_is_integer(v))
		return ferr_set(err, FERR_INVALID, "%s.%s must be an integer",
				what, key);
	i = json_integer_value(v);
	if (i < 0 || (uint64_t)i < min || (uint64_t)i > max)
		return ferr_set(err, FERR_INVALID,
				"%s.%s must be between %llu and %llu", what,
				key, (unsigned long long)min,
				(unsigned long long)max);
	*out = (uint64_t)i;
	return 0;
}

int json_get_bool(const json_t *obj, const char *key, const char *what,
		  bool *out, struct ferr *err)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return ferr_set(err, FERR_INVALID, "%s.%s must be true or false",
				what, key);
	*out = json_is_true(v);
	return 0;
}

/* Nesting depth of v (a scalar is 0, [] or {} is 1), counting no further
 * than limit + 1. jansson itself stops at JSON_PARSER_MAX_DEPTH (2048), so
 * the recursion is bounded. */
static unsigned depth_of(const json_t *v, unsigned limit)
{
	unsigned max = 0, d;
	const char *key;
	json_t *child;
	size_t i;

	if (!json_is_object(v) && !json_is_array(v))
		return 0;
	if (limit == 0)
		return 1;
	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, key, child) {
			d = depth_of(child, limit - 1);
			max = d > max ? d : max;
			if (max >= limit)
				break;
		}
	} else {
		json_array_foreach(v, i, child) {
			d = depth_of(child, limit - 1);
			max = d > max ? d : max;
			if (max >= limit)
				break;
		}
	}
	return max + 1;
}

int json_check_depth(const json_t *v, const char *what, struct ferr *err)
{
	if (depth_of(v, FERRY_JSON_DEPTH_MAX) > FERRY_JSON_DEPTH_MAX)
		return ferr_set(err, FERR_INVALID,
				"%s: JSON nested deeper than %d levels", what,
				FERRY_JSON_DEPTH_MAX);
	return 0;
}

json_t *json_parse_object(const char *text, size_t len, const char *what,
			  struct ferr *err)
{
	json_error_t jerr;
	json_t *root;

	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		ferr_set(err, FERR_INVALID, "%s: malformed JSON at line %d: %s",
			 what, jerr.line, jerr.text);
		return NULL;
	}
	if (json_check_depth(root, what, err) < 0) {
		json_decref(root);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		ferr_set(err, FERR_INVALID, "%s must be a JSON object", what);
		return NULL;
	}
	return root;
}
