/* codec.c - config checks, base64, int64-as-string, keys and the gateway's
 * request bodies (pure; see codec.h). */
#include "codec.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

_Static_assert(ETCD_VALUE_MAX <= (INT32_MAX / 4) * 3,
	       "a value's base64 must fit OpenSSL's int lengths");
_Static_assert((ETCD_VALUE_MAX / 3 + 1) * 4 + 2 * ETCD_FULL_KEY_MAX <
		       ETCD_RESPONSE_MAX,
	       "an answer must hold the largest key and value");
_Static_assert(ETCD_WATCH_MSG_MAX <= ETCD_RESPONSE_MAX,
	       "a watch line is bounded like an answer");

char *etcd_b64_encode(const void *data, size_t len)
{
	char *out;

	if (len > ETCD_VALUE_MAX + (size_t)ETCD_FULL_KEY_MAX)
		return NULL;
	out = malloc((len + 2) / 3 * 4 + 1);
	if (!out)
		return NULL;
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

static bool b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int etcd_b64_decode(const char *s, size_t slen, size_t max, const char *what,
		    unsigned char **out, size_t *out_len, struct ferr *err)
{
	size_t pad = 0, n;
	unsigned char *buf;
	int got;

	if (slen % 4)
		return ferr_set(err, FERR_IO,
				"%s: base64 length %zu is not a multiple of 4",
				what, slen);
	if (slen / 4 * 3 > max + 2)
		return ferr_set(err, FERR_IO, "%s: longer than %zu bytes",
				what, max);
	if (slen && s[slen - 1] == '=')
		pad = slen >= 2 && s[slen - 2] == '=' ? 2 : 1;
	for (size_t i = 0; i < slen - pad; i++)
		if (!b64_char(s[i]))
			return ferr_set(err, FERR_IO,
					"%s: not base64 at byte %zu", what, i);
	n = slen / 4 * 3 - pad;
	if (n > max)
		return ferr_set(err, FERR_IO, "%s: longer than %zu bytes",
				what, max);
	buf = malloc(slen / 4 * 3 + 1);
	if (!buf)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	got = slen ? EVP_DecodeBlock(buf, (const unsigned char *)s, (int)slen)
		   : 0;
	if (got < 0 || (size_t)got != slen / 4 * 3) {
		free(buf);
		return ferr_set(err, FERR_IO, "%s: bad base64", what);
	}
	buf[n] = '\0';
	*out = buf;
	*out_len = n;
	return 0;
}

int etcd_int64_parse(const char *s, int64_t min, int64_t *out)
{
	bool neg = s[0] == '-';
	const char *d = s + neg;
	size_t len = strlen(d);
	uint64_t v;
	int64_t r;

	if (len == 0 || len > ETCD_INT64_DIGITS || (d[0] == '0' && len > 1) ||
	    parse_u64(d, 0, neg ? (uint64_t)INT64_MAX + 1 : INT64_MAX, &v) <
		    0)
		return -1;
	r = neg ? (int64_t)(0 - v) : (int64_t)v;
	if (r < min)
		return -1;
	*out = r;
	return 0;
}

int etcd_json_int64(const json_t *obj, const char *key, const char *what,
		    int64_t min, int64_t *out, struct ferr *err)
{
	json_t *v = json_object_get(obj, key);
	int64_t r;

	if (!v) {
		if (min > 0)
			return ferr_set(err, FERR_IO, "%s.%s is missing", what,
					key);
		*out = 0;
		return 0;
	}
	if (!json_is_string(v) ||
	    json_string_length(v) > ETCD_INT64_DIGITS + 1 ||
	    strlen(json_string_value(v)) != json_string_length(v) ||
	    etcd_int64_parse(json_string_value(v), min, &r) < 0)
		return ferr_set(err, FERR_IO,
				"%s.%s must be a decimal string >= %" PRId64,
				what, key, min);
	*out = r;
	return 0;
}

int etcd_json_uint64(const json_t *obj, const char *key, const char *what,
		     uint64_t *out, struct ferr *err)
{
	json_t *v = json_object_get(obj, key);
	const char *s;
	uint64_t r;

	if (!v) {
		*out = 0;
		return 0;
	}
	s = json_is_string(v) ? json_string_value(v) : "";
	if (json_string_length(v) > 20 || strlen(s) != json_string_length(v) ||
	    (s[0] == '0' && s[1]) || parse_u64(s, 0, UINT64_MAX, &r) < 0)
		return ferr_set(err, FERR_IO,
				"%s.%s must be an unsigned decimal string", what,
				key);
	*out = r;
	return 0;
}

json_t *etcd_json_int64_new(int64_t v)
{
	char buf[ETCD_INT64_DIGITS + 2];

	snprintf(buf, sizeof(buf), "%" PRId64, v);
	return json_string(buf);
}

int etcd_key_check(const char *key, bool allow_empty, struct ferr *err)
{
	size_t n = key ? strnlen(key, ETCD_KEY_MAX + 1) : 0;

	if (!key || (!n && !allow_empty))
		return ferr_set(err, FERR_INVALID, "etcd key is empty");
	if (n > ETCD_KEY_MAX)
		return ferr_set(err, FERR_INVALID,
				"etcd key is longer than %d bytes",
				ETCD_KEY_MAX);
	if (key[0] == '/')
		return ferr_set(err, FERR_INVALID,
				"etcd key \"%.64s\" must not start with '/' "
				"(keys are relative to the prefix)", key);
	for (size_t i = 0; i < n; i++)
		if (key[i] < 0x21 || key[i] > 0x7e)
			return ferr_set(err, FERR_INVALID,
					"etcd key has a byte 0x%02x at %zu "
					"(printable ASCII only)",
					(unsigned char)key[i], i);
	return 0;
}

int etcd_prefix_check(const char *prefix, struct ferr *err)
{
	size_t n = strnlen(prefix, ETCD_PREFIX_MAX);

	if (n == 0 || n >= ETCD_PREFIX_MAX || prefix[0] != '/' ||
	    (n > 1 && prefix[n - 1] == '/') || strstr(prefix, "//") ||
	    strspn(prefix, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			   "0123456789._/-") != n || n == 1)
		return ferr_set(err, FERR_INVALID,
				"etcd prefix \"%.64s\" must be '/' and "
				"[A-Za-z0-9._/-] (no \"//\", no '/' at the "
				"end), at most %d bytes",
				prefix, ETCD_PREFIX_MAX - 1);
	return 0;
}

/* Put base64 of the full key ("<prefix>/<key>") into obj[field], and with
 * is_prefix the end of its prefix range into obj["range_end"]. */
static int set_key(json_t *obj, const char *field, const char *prefix,
		   const char *key, bool is_prefix, struct ferr *err)
{
	char full[ETCD_FULL_KEY_MAX];
	char *b64;
	size_t n;

	if (etcd_key_check(key, is_prefix, err) < 0)
		return -1;
	if (fmt_checked(full, sizeof(full), err, "etcd key", "%s/%s", prefix,
			key) < 0)
		return -1;
	n = strlen(full);
	b64 = etcd_b64_encode(full, n);
	if (!b64 || json_object_set_new(obj, field, json_string(b64)) < 0)
		goto oom;
	free(b64);
	if (is_prefix) {
		/* every key below: up to the last byte plus one (keys are
		 * printable ASCII, so there is no carry) */
		full[n - 1]++;
		b64 = etcd_b64_encode(full, n);
		if (!b64 ||
		    json_object_set_new(obj, "range_end", json_string(b64)) < 0)
			goto oom;
		free(b64);
	}
	return 0;
oom:
	free(b64);
	return ferr_set(err, FERR_INTERNAL, "out of memory");
}

static int set_value(json_t *obj, const char *field, const void *value,
		     size_t len, struct ferr *err)
{
	char *b64;

	if (len > ETCD_VALUE_MAX)
		return ferr_set(err, FERR_INVALID,
				"etcd value is longer than %d bytes",
				ETCD_VALUE_MAX);
	if (len && !value)
		return ferr_set(err, FERR_INVALID, "etcd value is NULL");
	b64 = etcd_b64_encode(len ? value : "", len);
	if (!b64 || json_object_set_new(obj, field, json_string(b64)) < 0) {
		free(b64);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	free(b64);
	return 0;
}

static int set_int64(json_t *obj, const char *field, int64_t v,
		     struct ferr *err)
{
	if (json_object_set_new(obj, field, etcd_json_int64_new(v)) < 0)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	return 0;
}

json_t *etcd_req_range(const char *prefix, const char *key, bool is_prefix,
		       size_t limit, struct ferr *err)
{
	json_t *r = json_object();

	if (!r || set_key(r, "key", prefix, key, is_prefix, err) < 0 ||
	    (limit && set_int64(r, "limit", (int64_t)limit, err) < 0)) {
		if (!r)
			ferr_set(err, FERR_INTERNAL, "out of memory");
		json_decref(r);
		return NULL;
	}
	return r;
}

json_t *etcd_req_put(const char *prefix, const char *key, const void *value,
		     size_t len, int64_t lease, struct ferr *err)
{
	json_t *r = json_object();

	if (lease < 0) {
		ferr_set(err, FERR_INVALID, "lease id %" PRId64 " < 0", lease);
		goto fail;
	}
	if (!r || set_key(r, "key", prefix, key, false, err) < 0 ||
	    set_value(r, "value", value, len, err) < 0 ||
	    (lease && set_int64(r, "lease", lease, err) < 0))
		goto fail;
	return r;
fail:
	if (!r)
		ferr_set(err, FERR_INTERNAL, "out of memory");
	json_decref(r);
	return NULL;
}

json_t *etcd_req_delete(const char *prefix, const char *key, bool is_prefix,
			struct ferr *err)
{
	return etcd_req_range(prefix, key, is_prefix, 0, err);
}

static const char *const cmp_targets[] = { "VERSION", "CREATE", "MOD",
					   "VALUE", "LEASE" };
static const char *const cmp_fields[] = { "version", "create_revision",
					  "mod_revision", "value", "lease" };
static const char *const cmp_results[] = { "EQUAL", "GREATER", "LESS",
					   "NOT_EQUAL" };

static json_t *req_cmp(const char *prefix, const struct etcd_cmp *c,
		       struct ferr *err)
{
	json_t *o = json_object();
	unsigned t = c->target, r = c->result;

	if (!o) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	if (t > ETCD_CMP_LEASE || r > ETCD_NOT_EQUAL) {
		ferr_set(err, FERR_INVALID, "bad compare target or result");
		goto fail;
	}
	if (t != ETCD_CMP_VALUE && c->number < 0) {
		ferr_set(err, FERR_INVALID, "compare number %" PRId64 " < 0",
			 c->number);
		goto fail;
	}
	if (set_key(o, "key", prefix, c->key, false, err) < 0 ||
	    json_object_set_new(o, "target", json_string(cmp_targets[t])) < 0 ||
	    json_object_set_new(o, "result", json_string(cmp_results[r])) < 0 ||
	    (t == ETCD_CMP_VALUE
		     ? set_value(o, cmp_fields[t], c->value, c->value_len, err)
		     : set_int64(o, cmp_fields[t], c->number, err)) < 0)
		goto fail;
	return o;
fail:
	json_decref(o);
	return NULL;
}

static json_t *req_op(const char *prefix, const struct etcd_op *op,
		      struct ferr *err)
{
	static const char *const names[] = { "request_put", "request_range",
					     "request_delete_range" };
	json_t *inner = NULL, *o;

	switch (op->type) {
	case ETCD_OP_PUT:
		if (op->prefix) {
			ferr_set(err, FERR_INVALID, "a put has no prefix form");
			return NULL;
		}
		inner = etcd_req_put(prefix, op->key, op->value,
				     op->value_len, op->lease, err);
		break;
	case ETCD_OP_GET:
	case ETCD_OP_DELETE:
		inner = etcd_req_range(prefix, op->key, op->prefix, 0, err);
		break;
	default:
		ferr_set(err, FERR_INVALID, "bad txn op type %d", op->type);
		return NULL;
	}
	if (!inner)
		return NULL;
	o = json_object();
	if (!o || json_object_set_new(o, names[op->type], inner) < 0) {
		json_decref(o);
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	return o;
}

/* obj[field] = [build(item) for each of n items]; nothing when n == 0. */
static int add_list(json_t *obj, const char *field, const char *prefix,
		    const void *items, size_t n, bool cmp, struct ferr *err)
{
	json_t *arr;

	if (n > ETCD_TXN_OPS_MAX)
		return ferr_set(err, FERR_INVALID,
				"txn %s has %zu entries, at most %d", field, n,
				ETCD_TXN_OPS_MAX);
	if (!n)
		return 0;
	if (!items)
		return ferr_set(err, FERR_INVALID, "txn %s is NULL", field);
	arr = json_array();
	if (!arr || json_object_set_new(obj, field, arr) < 0)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	for (size_t i = 0; i < n; i++) {
		json_t *e = cmp ? req_cmp(prefix, (const struct etcd_cmp *)items + i,
					  err)
				: req_op(prefix, (const struct etcd_op *)items + i,
					 err);

		if (!e || json_array_append_new(arr, e) < 0)
			return e ? ferr_set(err, FERR_INTERNAL, "out of memory")
				 : ferr_wrap(err, "txn %s[%zu]", field, i);
	}
	return 0;
}

json_t *etcd_req_txn(const char *prefix, const struct etcd_txn *txn,
		     struct ferr *err)
{
	json_t *r = json_object();

	if (!r) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	if (add_list(r, "compare", prefix, txn->cmp, txn->n_cmp, true, err) <
		    0 ||
	    add_list(r, "success", prefix, txn->success, txn->n_success, false,
		     err) < 0 ||
	    add_list(r, "failure", prefix, txn->failure, txn->n_failure, false,
		     err) < 0) {
		json_decref(r);
		return NULL;
	}
	return r;
}

json_t *etcd_req_lease(int64_t id, int64_t ttl, struct ferr *err)
{
	json_t *r = json_object();

	if (id < 0 || ttl < 0 || ttl > ETCD_LEASE_TTL_S_MAX) {
		json_decref(r);
		ferr_set(err, FERR_INVALID,
			 "lease id %" PRId64 " or TTL %" PRId64
			 " out of range (TTL at most %d s)",
			 id, ttl, ETCD_LEASE_TTL_S_MAX);
		return NULL;
	}
	if (!r || set_int64(r, "ID", id, err) < 0 ||
	    (ttl && set_int64(r, "TTL", ttl, err) < 0)) {
		if (!r)
			ferr_set(err, FERR_INTERNAL, "out of memory");
		json_decref(r);
		return NULL;
	}
	return r;
}

json_t *etcd_req_watch(const char *prefix, const char *key, bool is_prefix,
		       int64_t start_revision, struct ferr *err)
{
	json_t *inner, *r;

	if (start_revision < 0) {
		ferr_set(err, FERR_INVALID, "watch start revision < 0");
		return NULL;
	}
	inner = etcd_req_range(prefix, key, is_prefix, 0, err);
	if (!inner)
		return NULL;
	if (start_revision &&
	    set_int64(inner, "start_revision", start_revision, err) < 0) {
		json_decref(inner);
		return NULL;
	}
	r = json_object();
	if (!r || json_object_set_new(r, "create_request", inner) < 0) {
		json_decref(r);
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	return r;
}

void etcd_config_defaults(struct etcd_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->prefix, sizeof(cfg->prefix), "%s", ETCD_PREFIX_DEFAULT);
	cfg->timeout_ms = ETCD_TIMEOUT_MS_DEFAULT;
	cfg->member_timeout_ms = ETCD_MEMBER_TIMEOUT_MS_DEFAULT;
	cfg->lease_ttl_s = ETCD_LEASE_TTL_S_DEFAULT;
}

int etcd_endpoint_check(const char *url, struct ferr *err)
{
	char host[INET6_ADDRSTRLEN + 2];
	unsigned char addr[16];
	const char *h, *colon;
	uint64_t port;
	size_t hlen;

	if (strncmp(url, "https://", 8))
		return ferr_set(err, FERR_INVALID,
				"etcd endpoint \"%.80s\" must start with "
				"https://", url);
	h = url + 8;
	colon = h[0] == '[' ? strstr(h, "]:") : strchr(h, ':');
	if (colon && h[0] == '[')
		colon++;
	hlen = colon ? (size_t)(colon - h) : 0;
	if (!colon || hlen == 0 || hlen >= sizeof(host) ||
	    parse_u64(colon + 1, 1, 65535, &port) < 0 ||
	    colon[1] == '0')
		return ferr_set(err, FERR_INVALID,
				"etcd endpoint \"%.80s\" must be "
				"https://ADDRESS:PORT (numeric address, port "
				"1-65535, no path)", url);
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (h[0] == '[') {
		host[hlen - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, addr) != 1)
			return ferr_set(err, FERR_INVALID,
					"etcd endpoint \"%.80s\": bad IPv6 "
					"address", url);
	} else if (inet_pton(AF_INET, host, addr) != 1) {
		return ferr_set(err, FERR_INVALID,
				"etcd endpoint \"%.80s\": the address must be "
				"numeric IPv4 or [IPv6]", url);
	}
	return 0;
}

int etcd_config_check(const struct etcd_config *cfg, struct ferr *err)
{
	if (cfg->n_endpoints == 0 || cfg->n_endpoints > ETCD_ENDPOINTS_MAX)
		return ferr_set(err, FERR_INVALID,
				"etcd.endpoints must list 1 to %d members",
				ETCD_ENDPOINTS_MAX);
	for (unsigned i = 0; i < cfg->n_endpoints; i++) {
		if (strnlen(cfg->endpoints[i], ETCD_URL_MAX) >= ETCD_URL_MAX)
			return ferr_set(err, FERR_INVALID,
					"etcd.endpoints[%u] is too long", i);
		if (etcd_endpoint_check(cfg->endpoints[i], err) < 0)
			return ferr_wrap(err, "etcd.endpoints[%u]", i);
		for (unsigned j = 0; j < i; j++)
			if (!strcmp(cfg->endpoints[i], cfg->endpoints[j]))
				return ferr_set(err, FERR_INVALID,
						"etcd.endpoints[%u] repeats "
						"%s", i, cfg->endpoints[j]);
	}
	if (!cfg->ca_file[0] || !cfg->cert_file[0] || !cfg->key_file[0])
		return ferr_set(err, FERR_INVALID,
				"etcd needs ca, cert and key files");
	if (etcd_prefix_check(cfg->prefix, err) < 0)
		return ferr_wrap(err, "etcd.prefix");
	if (cfg->timeout_ms < ETCD_MEMBER_TIMEOUT_MS_MIN ||
	    cfg->timeout_ms > ETCD_TIMEOUT_MS_MAX ||
	    cfg->member_timeout_ms < ETCD_MEMBER_TIMEOUT_MS_MIN ||
	    cfg->member_timeout_ms > cfg->timeout_ms)
		return ferr_set(err, FERR_INVALID,
				"etcd.timeout_ms must be %d..%d and "
				"etcd.member_timeout_ms %d..timeout_ms",
				ETCD_MEMBER_TIMEOUT_MS_MIN, ETCD_TIMEOUT_MS_MAX,
				ETCD_MEMBER_TIMEOUT_MS_MIN);
	if (cfg->lease_ttl_s < 2 || cfg->lease_ttl_s > ETCD_LEASE_TTL_S_MAX)
		return ferr_set(err, FERR_INVALID,
				"etcd.lease_ttl_s must be 2..%d",
				ETCD_LEASE_TTL_S_MAX);
	return 0;
}
