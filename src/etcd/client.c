/* client.c - the client handle, its config checks and the HTTPS transport
 * with fail-over across endpoints (libcurl; see etcd.h for why). */
#define _GNU_SOURCE
#include "client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static struct {
	char *path;
	char *pem;
	size_t len;
} provided;

int etcd_key_provide(const char *key_file, const void *pem, size_t len,
		     struct ferr *err)
{
	char *p = strdup(key_file), *k = malloc(len ? len : 1);

	if (!p || !k) {
		free(p);
		free(k);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	memcpy(k, pem, len);
	etcd_keys_clear();
	provided.path = p;
	provided.pem = k;
	provided.len = len;
	return 0;
}

void etcd_keys_clear(void)
{
	if (provided.pem)
		explicit_bzero(provided.pem, provided.len);
	free(provided.pem);
	free(provided.path);
	memset(&provided, 0, sizeof(provided));
}

static bool key_provided(const char *key_file)
{
	return provided.path && !strcmp(provided.path, key_file);
}

struct etcd *etcd_open(const struct etcd_config *cfg, struct ferr *err)
{
	const char *files[] = { cfg->ca_file, cfg->cert_file, cfg->key_file };
	json_t *probe;
	struct etcd *e;

	if (etcd_config_check(cfg, err) < 0)
		return NULL;
	for (size_t i = 0; i < 3; i++)
		if (!(i == 2 && key_provided(files[i])) &&
		    access(files[i], R_OK) != 0) {
			ferr_set(err, FERR_NOT_FOUND, "etcd: cannot read %s: %s",
				 files[i], strerror(errno));
			return NULL;
		}
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK) {
		ferr_set(err, FERR_INTERNAL, "libcurl: %s",
			 curl_easy_strerror(curl_init_rc));
		return NULL;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	e->cfg = *cfg;
	pthread_mutex_init(&e->lock, NULL);
	probe = etcd_req_range(cfg->prefix, "probe", false, 1, err);
	e->probe = probe ? json_dumps(probe, JSON_COMPACT) : NULL;
	json_decref(probe);
	if (!e->probe) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		etcd_close(e);
		return NULL;
	}
	return e;
}

void etcd_close(struct etcd *e)
{
	if (!e)
		return;
	while (e->pool) {
		struct etcd_conn *c = e->pool;

		e->pool = c->next;
		curl_easy_cleanup(c->curl);
		free(c);
	}
	pthread_mutex_destroy(&e->lock);
	free(e->probe);
	free(e);
}

int etcd_curl_init(const struct etcd *e, CURL *curl, struct ferr *err)
{
	const struct etcd_config *c = &e->cfg;
	CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                          \
	do {                                                                   \
		if (rc == CURLE_OK)                                            \
			rc = curl_easy_setopt(curl, opt, val);                 \
	} while (0)
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_PROTOCOLS_STR, "https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_PROXY, "");
	SET(CURLOPT_NOPROXY, "*");
	SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	SET(CURLOPT_SSLVERSION,
	    (long)(CURL_SSLVERSION_TLSv1_3 | CURL_SSLVERSION_MAX_TLSv1_3));
	SET(CURLOPT_TLS13_CIPHERS, "TLS_AES_256_GCM_SHA384");
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_CAINFO, c->ca_file);
	SET(CURLOPT_CAPATH, NULL); /* the cluster CA only, no system store */
	SET(CURLOPT_SSLCERT, c->cert_file);
	if (key_provided(c->key_file)) {
		struct curl_blob b = { provided.pem, provided.len,
				       CURL_BLOB_COPY };

		SET(CURLOPT_SSLKEY_BLOB, &b);
		SET(CURLOPT_SSLKEYTYPE, "PEM");
	} else {
		SET(CURLOPT_SSLKEY, c->key_file);
	}
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
#undef SET
	if (rc != CURLE_OK)
		return ferr_set(err, FERR_INTERNAL, "libcurl option: %s",
				curl_easy_strerror(rc));
	return 0;
}

struct etcd_conn *etcd_conn_get(struct etcd *e, struct ferr *err)
{
	struct etcd_conn *c;

	pthread_mutex_lock(&e->lock);
	c = e->pool;
	if (c)
		e->pool = c->next;
	pthread_mutex_unlock(&e->lock);
	if (c)
		return c;
	c = calloc(1, sizeof(*c));
	if (c)
		c->curl = curl_easy_init();
	if (!c || !c->curl) {
		free(c);
		ferr_set(err, FERR_INTERNAL, "out of memory (libcurl)");
		return NULL;
	}
	if (etcd_curl_init(e, c->curl, err) < 0) {
		curl_easy_cleanup(c->curl);
		free(c);
		return NULL;
	}
	return c;
}

void etcd_conn_put(struct etcd *e, struct etcd_conn *c)
{
	pthread_mutex_lock(&e->lock);
	c->next = e->pool;
	e->pool = c;
	pthread_mutex_unlock(&e->lock);
}

void etcd_skip_endpoint(struct etcd *e, unsigned idx)
{
	unsigned next = (idx + 1) % e->cfg.n_endpoints;

	__atomic_compare_exchange_n(&e->preferred, &idx, next, false,
				    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* Sleep ms milliseconds (bounded retry pacing). */
static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Check an answer's header: a member of another cluster than the one the
 * client first talked to is refused (FERR_UNAVAILABLE). */
static int check_header(struct etcd *e, const json_t *resp, unsigned idx,
			struct ferr *err)
{
	struct etcd_header h;
	uint64_t pinned = 0;

	if (etcd_parse_header(resp, &h, err) < 0)
		return -1;
	if (!__atomic_compare_exchange_n(&e->cluster_id, &pinned, h.cluster_id,
					 false, __ATOMIC_SEQ_CST,
					 __ATOMIC_SEQ_CST) &&
	    pinned != h.cluster_id)
		return ferr_set(err, FERR_UNAVAILABLE,
				"etcd: %s is a member of cluster %" PRIx64
				", not of %" PRIx64 " (refused: its revisions "
				"and leases are another history)",
				e->cfg.endpoints[idx], h.cluster_id, pinned);
	return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct etcd_buf *b = arg;
	size_t len = size * n, cap;
	char *p;

	if (len > ETCD_RESPONSE_MAX - b->len)
		return 0; /* over the limit: abort the transfer */
	if (b->len + len + 1 > b->cap) {
		cap = b->cap ? b->cap : 4096;
		while (cap < b->len + len + 1)
			cap *= 2;
		p = realloc(b->data, cap);
		if (!p)
			return 0;
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return len;
}

/* Parse a 200 answer: one JSON object, or for a stream one result line. */
static int parse_answer(struct etcd *e, unsigned idx, const struct etcd_buf *b,
			bool stream, json_t **reply, bool *retry,
			struct ferr *err)
{
	json_t *root = json_parse_object(b->data ? b->data : "", b->len,
					 "etcd answer", err), *res = root;

	*retry = true; /* a broken answer: another member may do better */
	if (!root) {
		err->code = FERR_IO;
		return ferr_wrap(err, "%s", e->cfg.endpoints[idx]);
	}
	if (stream && etcd_stream_result(root, &res, retry, err) < 0)
		goto fail;
	if (check_header(e, res, idx, err) < 0)
		goto fail;
	json_incref(res);
	json_decref(root);
	*reply = res;
	return 0;
fail:
	json_decref(root);
	return ferr_wrap(err, "%s", e->cfg.endpoints[idx]);
}

int etcd_attempt(struct etcd *e, struct etcd_conn *c, unsigned idx,
		 const char *path, const char *body, uint64_t budget_ms,
		 bool stream, json_t **reply, bool *retry, struct ferr *err)
{
	char url[ETCD_URL_MAX + 64], ebuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL, *h2;
	struct etcd_buf b = { 0 };
	long status = 0;
	CURLcode rc;
	int ret = -1;

	*retry = true;
	if (fmt_checked(url, sizeof(url), err, "etcd url", "%s%s",
			e->cfg.endpoints[idx], path) < 0)
		return -1;
	hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	h2 = hdrs ? curl_slist_append(hdrs, "Expect:") : NULL;
	if (!h2) {
		curl_slist_free_all(hdrs);
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	curl_easy_setopt(c->curl, CURLOPT_URL, url);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, (long)budget_ms);
	curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)budget_ms);
	rc = curl_easy_perform(c->curl);
	curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(hdrs);
	if (rc != CURLE_OK) {
		ferr_set(err, rc == CURLE_OPERATION_TIMEDOUT ? FERR_TIMEOUT
							     : FERR_UNAVAILABLE,
			 "etcd %s: %s", e->cfg.endpoints[idx],
			 ebuf[0] ? ebuf : curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		etcd_parse_error(status, b.data ? b.data : "", b.len, retry,
				 err);
		ferr_wrap(err, "%s", e->cfg.endpoints[idx]);
		goto out;
	}
	ret = parse_answer(e, idx, &b, stream, reply, retry, err);
out:
	if (ret < 0 && *retry)
		__atomic_store_n(&e->verified[idx], 0, __ATOMIC_SEQ_CST);
	free(b.data);
	return ret;
}

int etcd_probe(struct etcd *e, struct etcd_conn *c, unsigned idx,
	       uint64_t budget_ms, struct ferr *err)
{
	json_t *reply = NULL;
	bool retry;

	if (__atomic_load_n(&e->verified[idx], __ATOMIC_SEQ_CST))
		return 0;
	if (etcd_attempt(e, c, idx, ETCD_PATH_RANGE, e->probe, budget_ms, false,
			 &reply, &retry, err) < 0)
		return -1;
	json_decref(reply);
	__atomic_store_n(&e->verified[idx], 1, __ATOMIC_SEQ_CST);
	return 0;
}

int etcd_call(struct etcd *e, const char *path, json_t *body,
	      uint64_t deadline, bool stream, json_t **reply,
	      struct ferr *err)
{
	unsigned n = e->cfg.n_endpoints, first, idx, tries = 0;
	uint64_t now = now_ms(), pause = ETCD_RETRY_MIN_MS;
	struct ferr last = { FERR_TIMEOUT, "no member was tried" };
	struct etcd_conn *c = NULL;
	char *text = NULL;
	bool retry;
	int rc = -1;

	if (!body)
		return -1; /* the request builder set *err */
	if (!deadline)
		deadline = now + e->cfg.timeout_ms;
	text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	c = text ? etcd_conn_get(e, err) : NULL;
	if (!c) {
		if (!text)
			ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	first = __atomic_load_n(&e->preferred, __ATOMIC_SEQ_CST);
	while ((now = now_ms()) < deadline) {
		uint64_t budget;

		if (tries && tries % n == 0) {
			/* every member failed this round: pause, then again */
			sleep_ms(pause < deadline - now ? pause
							     : deadline - now);
			pause = pause * 2 < ETCD_RETRY_MAX_MS ? pause * 2
							      : ETCD_RETRY_MAX_MS;
			if ((now = now_ms()) >= deadline)
				break;
		}
		budget = deadline - now;
		if (budget > e->cfg.member_timeout_ms)
			budget = e->cfg.member_timeout_ms;
		idx = (first + tries++) % n;
		retry = true;
		if (etcd_probe(e, c, idx, budget, &last) == 0) {
			uint64_t spent = now_ms() - now;

			if (spent < budget &&
			    etcd_attempt(e, c, idx, path, text, budget - spent,
					 stream, reply, &retry, &last) == 0) {
				rc = 0;
				goto out;
			}
		}
		if (!retry) {
			if (err)
				*err = last;
			goto out;
		}
		log_debug("etcd: %s", last.msg);
		etcd_skip_endpoint(e, idx);
	}
	/* the deadline passed: say what the members did */
	ferr_set(err,
		 last.code == FERR_IO || last.code == FERR_UNAVAILABLE
			 ? last.code
			 : FERR_TIMEOUT,
		 "etcd: no member answered within the deadline (%u tries); "
		 "last: %.160s", tries, last.msg);
out:
	if (c)
		etcd_conn_put(e, c);
	free(text);
	return rc;
}
