/* output.c - human tables and key/value lines, JSON output, error lines. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#define COL_WIDTH_MAX 64

int cli_exit_code(const struct ferr *err)
{
	switch (err->code) {
	case FERR_INVALID:
	case FERR_METHOD:
		return EXIT_FAILED;
	case FERR_NOT_FOUND:
		return EXIT_NOT_FOUND;
	case FERR_UNAUTH:
	case FERR_UNAVAILABLE:
	case FERR_TIMEOUT:
		return EXIT_UNREACHABLE;
	default:
		return EXIT_FAILED;
	}
}

int cli_fail(const struct ferr *err)
{
	fprintf(stderr, "ferry: error: %s\n", err->msg);
	return cli_exit_code(err);
}

void print_json(const json_t *obj)
{
	char *s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);

	if (s) {
		puts(s);
		free(s);
	}
}

/* Render a scalar JSON value into out ("-" for null/absent). */
static void scalar(const json_t *v, char *out, size_t len)
{
	if (json_is_string(v))
		snprintf(out, len, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(out, len, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		snprintf(out, len, "%.2f", json_real_value(v));
	else if (json_is_boolean(v))
		snprintf(out, len, "%s", json_is_true(v) ? "yes" : "no");
	else if (v && (json_is_object(v) || json_is_array(v))) {
		char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);

		snprintf(out, len, "%s", s ? s : "?");
		free(s);
	} else
		snprintf(out, len, "-");
}

void print_kv(const json_t *obj, const char *const *keys)
{
	size_t w = 0;

	for (const char *const *k = keys; *k; k++)
		if (strlen(*k) > w)
			w = strlen(*k);
	for (const char *const *k = keys; *k; k++) {
		char val[1024];
		const json_t *v = json_object_get(obj, *k);

		if (!v)
			continue;
		scalar(v, val, sizeof(val));
		printf("%-*s  %s\n", (int)w + 1, *k, val);
	}
}

void print_table(const json_t *arr, const char *const *cols,
		 const char *const *headers)
{
	size_t ncol = 0, width[32] = { 0 };
	size_t i;
	json_t *row;

	while (cols[ncol] && ncol < 32)
		ncol++;
	for (size_t c = 0; c < ncol; c++)
		width[c] = strlen(headers[c]);
	json_array_foreach(arr, i, row) {
		for (size_t c = 0; c < ncol; c++) {
			char val[COL_WIDTH_MAX + 1];

			scalar(json_object_get(row, cols[c]), val, sizeof(val));
			if (strlen(val) > width[c])
				width[c] = strlen(val);
		}
	}
	for (size_t c = 0; c < ncol; c++) {
		if (c + 1 < ncol)
			printf("%-*s  ", (int)width[c], headers[c]);
		else
			printf("%s\n", headers[c]);
	}
	json_array_foreach(arr, i, row) {
		for (size_t c = 0; c < ncol; c++) {
			char val[COL_WIDTH_MAX + 1];

			scalar(json_object_get(row, cols[c]), val, sizeof(val));
			if (c + 1 < ncol)
				printf("%-*s  ", (int)width[c], val);
			else
				printf("%s\n", val);
		}
	}
}

void fmt_mib(uint64_t mib, char *out, size_t len)
{
	if (mib >= 1024)
		snprintf(out, len, "%.1fG", (double)mib / 1024.0);
	else
		snprintf(out, len, "%lluM", (unsigned long long)mib);
}
