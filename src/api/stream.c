/* stream.c - GET /v1/audit/log: the audit log's series sent as a chunked
 * reply, AUDIT_READ_CHUNK bytes at a time, the next read only once the
 * previous chunk has left. Memory stays bounded whatever the log's size. */
#define _GNU_SOURCE
#include "api.h"
#include "audit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>

#define UTF8_SEQ_MAX 4

/* One reply in progress. */
struct stream {
	struct evhttp_request *r;
	struct audit_series s;
	size_t file;        /* index of the file being sent */
	int fd;             /* that file, or -1 */
	uint64_t off, size; /* read offset and size of that file */
	bool raw;           /* NDJSON as stored; else a JSON string */
	unsigned char carry[UTF8_SEQ_MAX]; /* JSON: a character cut by the
					      chunk boundary */
	size_t ncarry;
	char *buf;
};

static void stream_free(struct stream *st)
{
	if (st->fd >= 0)
		close(st->fd);
	audit_series_free(&st->s);
	free(st->buf);
	free(st);
}

/* Bytes of the UTF-8 character starting at p (n bytes available): its
 * length when valid, 0 when invalid, -1 when it may continue beyond n. */
static int utf8_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	int len;

	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	/* no overlong forms, surrogates or code points past U+10FFFF */
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	for (int i = 1; i < len; i++) {
		if ((size_t)i >= n)
			return -1;
		if (p[i] < (i == 1 ? lo : 0x80) || p[i] > (i == 1 ? hi : 0xbf))
			return 0;
	}
	return len;
}

/* Append p[0..n) to out as the inside of a JSON string. A character cut at
 * the end is kept in st->carry (unless final); bytes that are not UTF-8
 * become '?'. */
static int escape(struct stream *st, const unsigned char *p, size_t n,
		  bool final, struct evbuffer *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0;

	while (i < n) {
		unsigned char c = p[i];
		char esc[7] = { '\\', 'u', '0', '0', hex[c >> 4],
				hex[c & 15], 0 };
		int len;

		if (c == '"' || c == '\\') {
			esc[1] = (char)c;
			esc[2] = 0;
		} else if (c >= 0x20 && c < 0x80) {
			esc[0] = (char)c;
			esc[1] = 0;
		} else if (c >= 0x80) {
			len = utf8_len(p + i, n - i);
			if (len < 0 && !final) {
				st->ncarry = n - i;
				memcpy(st->carry, p + i, st->ncarry);
				return 0;
			}
			if (len > 0) {
				if (evbuffer_add(out, p + i, (size_t)len) < 0)
					return -1;
				i += (size_t)len;
				continue;
			}
			esc[0] = '?';
			esc[1] = 0;
		}
		if (evbuffer_add(out, esc, strlen(esc)) < 0)
			return -1;
		i++;
	}
	return 0;
}

/* Read the next piece of the series into out; *end when none is left. */
static int next_piece(struct stream *st, struct evbuffer *out, bool *end)
{
	struct ferr err;
	size_t have = st->ncarry;
	ssize_t n;

	*end = false;
	while (st->fd < 0 || st->off >= st->size) {
		if (st->fd >= 0) {
			close(st->fd);
			st->fd = -1;
			st->file++;
		}
		if (st->file >= st->s.n) {
			*end = true;
			return st->raw ? 0 : escape(st, st->carry, have, true,
						    out);
		}
		st->off = 0;
		st->fd = audit_series_open(&st->s, st->file, &st->size, &err);
		if (st->fd < 0) {
			log_error("api: audit log stream: %s", err.msg);
			return -1;
		}
	}
	memcpy(st->buf, st->carry, have);
	st->ncarry = 0;
	n = pread(st->fd, st->buf + have,
		  st->size - st->off < AUDIT_READ_CHUNK
			  ? (size_t)(st->size - st->off)
			  : AUDIT_READ_CHUNK,
		  (off_t)st->off);
	if (n <= 0) {
		log_error("api: audit log stream: cannot read %s: %s",
			  st->s.files[st->file].name,
			  n < 0 ? strerror(errno) : "it was truncated");
		return -1;
	}
	st->off += (uint64_t)n;
	if (st->raw)
		return evbuffer_add(out, st->buf, (size_t)n);
	return escape(st, (unsigned char *)st->buf, have + (size_t)n, false,
		      out);
}

static void on_sent(struct evhttp_connection *conn, void *arg);

/* Send the next chunk, or end the reply. A read error drops the
 * connection mid-reply, so the client sees a cut body, not a complete
 * (shorter) log. */
static void send_next(struct stream *st)
{
	struct evbuffer *out = evbuffer_new();
	struct evhttp_connection *conn;
	bool end = false;

	if (!out || next_piece(st, out, &end) < 0) {
		if (out)
			evbuffer_free(out);
		conn = evhttp_request_get_connection(st->r);
		if (!conn) { /* detached: ours to free */
			evhttp_send_reply_end(st->r);
			stream_free(st);
			return;
		}
		/* evhttp sees the end of the connection and frees it (on_close
		 * frees the rest); never inside its own callbacks */
		shutdown(bufferevent_getfd(evhttp_connection_get_bufferevent(
				 conn)),
			 SHUT_RDWR);
		return;
	}
	if (end && !st->raw)
		evbuffer_add(out, "\"}\n", 3);
	if (evbuffer_get_length(out))
		evhttp_send_reply_chunk_with_cb(st->r, out,
						end ? NULL : on_sent, st);
	else if (!end)
		on_sent(NULL, st);
	evbuffer_free(out);
	if (end) {
		conn = evhttp_request_get_connection(st->r);
		if (conn)
			evhttp_connection_set_closecb(conn, NULL, NULL);
		evhttp_send_reply_end(st->r);
		stream_free(st);
	}
}

/* The last chunk has been written out: send the next one. */
static void on_sent(struct evhttp_connection *conn, void *arg)
{
	(void)conn;
	send_next(arg);
}

/* The client went away (or timed out) mid-reply. */
static void on_close(struct evhttp_connection *conn, void *arg)
{
	struct stream *st = arg;

	(void)conn;
	/* a request evhttp detached from its connection is ours to free;
	 * one still attached goes with the connection */
	if (!evhttp_request_get_connection(st->r))
		evhttp_send_reply_end(st->r);
	stream_free(st);
}

int api_audit_log_stream(struct api_ctx *ctx, struct evhttp_request *r,
			 struct ferr *err)
{
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(r);
	const char *accept = evhttp_find_header(
		evhttp_request_get_input_headers(r), "Accept");
	char head[AUDIT_HASH_HEX_LEN + 64], hash[AUDIT_HASH_HEX_LEN + 1];
	struct stream *st = calloc(1, sizeof(*st));
	uint64_t seq = 0;

	if (!st || !(st->buf = malloc(AUDIT_READ_CHUNK + UTF8_SEQ_MAX))) {
		free(st);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	st->r = r;
	st->fd = -1;
	st->raw = accept && strstr(accept, API_NDJSON) != NULL;
	if (audit_series_snapshot(ctx->audit, &st->s, &seq, hash, err) < 0) {
		st->s.live_fd = -1;
		stream_free(st);
		return -1;
	}
	snprintf(head, sizeof(head), "%llu %s", (unsigned long long)seq, hash);
	evhttp_add_header(hdr, "Content-Type",
			  st->raw ? API_NDJSON : "application/json");
	evhttp_add_header(hdr, "Ferry-Audit-Head", head);
	evhttp_send_reply_start(r, 200, "OK");
	evhttp_connection_set_closecb(evhttp_request_get_connection(r),
				      on_close, st);
	if (!st->raw) {
		struct evbuffer *out = evbuffer_new();

		if (out) {
			evbuffer_add_printf(out,
					    "{\"head\":{\"hash\":\"%s\",\"seq\""
					    ":%llu},\"log\":\"",
					    hash, (unsigned long long)seq);
			evhttp_send_reply_chunk(r, out);
			evbuffer_free(out);
		}
	}
	send_next(st);
	return 0;
}
