/* hdrscan.c - a watch on a request's header bytes for the one framing error
 * evhttp 2.1 does not answer: a Content-Length that does not fit in 63
 * bits. evhttp reads it with strtoll, which saturates, and then waits for
 * 2^63-1 body bytes instead of answering. Pure: unit-tested and fuzzed.
 *
 * The rules follow evhttp's own header parsing, so that exactly the
 * requests evhttp would wait on are flagged and no other: lines end in LF
 * (a CR before it is dropped); the first line is the request line; a line
 * starting with SP or HT continues the previous header; only the first
 * Content-Length counts; its value is what follows "Content-Length:" less
 * leading spaces and trailing white space; a chunked Transfer-Encoding
 * (also only the first) wins over it. */
#include "api.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CL_NAME "content-length:"
#define TE_NAME "transfer-encoding:"

/* Does the line start with the header name (case-insensitive)? */
static bool is_header(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name);

	return len >= n && !strncasecmp(line, name, n);
}

/* The value of a header line: after the colon, less leading spaces and
 * trailing white space, NUL-terminated in place. */
static char *header_value(char *line, size_t len, size_t name_len)
{
	char *v = line + name_len;

	line[len] = '\0';
	v += strspn(v, " ");
	for (char *e = line + len; e > v && strchr(" \t\r\n", e[-1]); e--)
		e[-1] = '\0';
	return v;
}

/* One complete line (without its LF) of s->len bytes in s->line. */
static void scan_line(struct api_hdr_scan *s)
{
	char *line = s->line;
	size_t len = s->len;

	if (len > 0 && line[len - 1] == '\r' && !s->long_line)
		len--;
	if (!s->started) {
		s->started = true; /* the request line */
		s->done = len == 0; /* evhttp refuses an empty one itself */
		return;
	}
	if (len == 0 && !s->long_line) {
		s->done = true;
		return;
	}
	if (line[0] == ' ' || line[0] == '\t') {
		/* a continuation: the value evhttp sees is not a number */
		if (s->last_was_cl)
			s->overflow = false;
		s->last_was_cl = false;
		return;
	}
	s->last_was_cl = false;
	if (s->long_line)
		return; /* not one we can judge: the deadline covers it */
	if (!s->seen_cl && is_header(line, len, CL_NAME)) {
		char *v = header_value(line, len, strlen(CL_NAME)), *end;
		long long n;

		s->seen_cl = true;
		s->last_was_cl = true;
		errno = 0;
		n = strtoll(v, &end, 10);
		s->overflow = *v && !*end && n == LLONG_MAX && errno == ERANGE;
	} else if (!s->seen_te && is_header(line, len, TE_NAME)) {
		s->seen_te = true;
		s->chunked = !strcasecmp(
			header_value(line, len, strlen(TE_NAME)), "chunked");
	}
}

bool api_hdr_scan(struct api_hdr_scan *s, const char *p, size_t n)
{
	for (size_t i = 0; i < n && !s->done; i++) {
		/* past half the header limit evhttp may answer first */
		if (++s->total > FERRY_API_MAX_HEADERS / 2) {
			s->done = true;
			s->overflow = false;
			break;
		}
		if (p[i] == '\n') {
			scan_line(s);
			s->len = 0;
			s->long_line = false;
		} else if (s->len < sizeof(s->line) - 1) {
			s->line[s->len++] = p[i];
		} else {
			s->long_line = true;
		}
	}
	return s->done && s->overflow && !s->chunked;
}
