/* watch.c - watches: one thread per watch streams POST /v3/watch through a
 * libcurl multi handle (so etcd_watch_stop can wake it at once), splits
 * the stream into lines, delivers events, and on a dropped connection or a
 * silent member resumes on the next member from the revision after the
 * last event delivered. */
#include "client.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Why one connection of a watch ended. */
enum watch_end { W_RUNNING, W_RECONNECT, W_FINAL };

struct etcd_watch {
	struct etcd *e;
	char key[ETCD_KEY_MAX + 1];
	bool prefix;
	struct etcd_watch_ops ops;
	void *arg;
	pthread_t thread;
	CURLM *multi;
	CURL *curl;             /* the stream's handle */
	int stop;               /* atomic: etcd_watch_stop was called */
	int64_t next_rev;       /* atomic: where a new connection starts */
	unsigned connects;      /* atomic */
	/* the current connection, watch thread only */
	struct etcd_buf line;
	enum watch_end state;
	struct ferr why;        /* the reason of W_RECONNECT or W_FINAL */
	uint64_t last_data;
	bool got_data;          /* this connection brought a valid line */
};

static bool stopping(struct etcd_watch *w)
{
	return __atomic_load_n(&w->stop, __ATOMIC_SEQ_CST);
}

/* Handle one complete line of the stream. */
static void on_line(struct etcd_watch *w, const char *text, size_t len)
{
	struct etcd_watch_msg m = { 0 };
	int64_t next = __atomic_load_n(&w->next_rev, __ATOMIC_SEQ_CST);
	size_t first = 0;
	bool retry;

	if (etcd_parse_watch_msg(text, len, w->e->cfg.prefix, &m, &retry,
				 &w->why) < 0) {
		w->state = retry ? W_RECONNECT : W_FINAL;
		return;
	}
	w->got_data = !m.canceled;
	if (m.compact_revision) {
		ferr_set(&w->why, FERR_CONFLICT,
			 "etcd watch: revision %" PRId64 " was compacted "
			 "(compact revision %" PRId64 ")", next,
			 m.compact_revision);
		w->state = W_FINAL;
	} else if (m.canceled) {
		ferr_set(&w->why, FERR_UNAVAILABLE,
			 "etcd watch canceled: %s", m.reason);
		w->state = W_RECONNECT;
	} else if (m.created && !next) {
		/* watching "from now": now is after the header's revision */
		__atomic_store_n(&w->next_rev, m.revision + 1, __ATOMIC_SEQ_CST);
	}
	/* drop events already delivered (a member must not resend them) */
	while (first < m.n && m.ev[first].kv.mod_revision < next)
		first++;
	if (first < m.n && w->state == W_RUNNING && !stopping(w)) {
		int stop = w->ops.events(w->arg, m.ev + first, m.n - first);

		__atomic_store_n(&w->next_rev,
				 m.ev[m.n - 1].kv.mod_revision + 1,
				 __ATOMIC_SEQ_CST);
		if (stop) {
			ferr_clear(&w->why);
			w->state = W_FINAL;
		}
	}
	etcd_watch_msg_clear(&m);
}

static size_t on_data(char *data, size_t size, size_t n, void *arg)
{
	struct etcd_watch *w = arg;
	size_t len = size * n, used = 0;
	long status = 0;
	bool retry;

	w->last_data = now_ms();
	curl_easy_getinfo(w->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		/* refused before the stream began: an error object (small
		 * enough to come in one piece) */
		etcd_parse_error(status, data, len, &retry, &w->why);
		w->state = retry ? W_RECONNECT : W_FINAL;
		return 0;
	}
	while (used < len && w->state == W_RUNNING) {
		char *nl = memchr(data + used, '\n', len - used);
		size_t chunk = nl ? (size_t)(nl - (data + used)) : len - used;
		size_t cap;

		if (chunk > ETCD_WATCH_MSG_MAX - w->line.len) {
			ferr_set(&w->why, FERR_IO,
				 "etcd watch: a message over %d bytes",
				 ETCD_WATCH_MSG_MAX);
			w->state = W_FINAL;
			break;
		}
		if (w->line.len + chunk + 1 > w->line.cap) {
			char *p;

			cap = w->line.cap ? w->line.cap : 4096;
			while (cap < w->line.len + chunk + 1)
				cap *= 2;
			p = realloc(w->line.data, cap);
			if (!p) {
				ferr_set(&w->why, FERR_INTERNAL,
					 "out of memory");
				w->state = W_FINAL;
				break;
			}
			w->line.data = p;
			w->line.cap = cap;
		}
		memcpy(w->line.data + w->line.len, data + used, chunk);
		w->line.len += chunk;
		used += chunk;
		if (nl) {
			used++;
			if (w->line.len)
				on_line(w, w->line.data, w->line.len);
			w->line.len = 0;
		}
	}
	return w->state == W_RUNNING ? len : 0; /* 0 aborts the transfer */
}

/* Is member idx still serving? A linearizable read needs its quorum. */
static bool probe(struct etcd_watch *w, unsigned idx)
{
	struct etcd_conn *c = etcd_conn_get(w->e, &w->why);
	bool ok;

	__atomic_store_n(&w->e->verified[idx], 0, __ATOMIC_SEQ_CST);
	ok = c && etcd_probe(w->e, c, idx, w->e->cfg.member_timeout_ms,
			     &w->why) == 0;
	if (c)
		etcd_conn_put(w->e, c);
	return ok;
}

/* One connection to member idx, until it ends. */
static void run_connection(struct etcd_watch *w, unsigned idx)
{
	CURL *curl = w->curl;
	char url[ETCD_URL_MAX + 32], ebuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL, *h2, *h3;
	int64_t start = __atomic_load_n(&w->next_rev, __ATOMIC_SEQ_CST);
	json_t *req = etcd_req_watch(w->e->cfg.prefix, w->key, w->prefix,
				     start, &w->why);
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	CURLMsg *msg;
	int running = 1, left;

	json_decref(req);
	w->state = W_RUNNING;
	w->line.len = 0;
	w->got_data = false;
	hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	h2 = hdrs ? curl_slist_append(hdrs, "Expect:") : NULL;
	h3 = h2 ? curl_slist_append(h2, ETCD_HDR_REQUIRE_LEADER) : NULL;
	if (!body || !h3) {
		if (body)
			ferr_set(&w->why, FERR_INTERNAL, "out of memory");
		w->state = W_FINAL;
		goto out;
	}
	if (!__atomic_load_n(&w->e->verified[idx], __ATOMIC_SEQ_CST) &&
	    !probe(w, idx)) {
		w->state = W_RECONNECT;
		goto out;
	}
	snprintf(url, sizeof(url), "%s%s", w->e->cfg.endpoints[idx],
		 ETCD_PATH_WATCH);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, w);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)w->e->cfg.member_timeout_ms);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 0L); /* a stream */
	curl_multi_add_handle(w->multi, curl);
	__atomic_add_fetch(&w->connects, 1, __ATOMIC_SEQ_CST);
	w->last_data = now_ms();
	while (w->state == W_RUNNING && !stopping(w)) {
		curl_multi_perform(w->multi, &running);
		if (!running || w->state != W_RUNNING)
			break;
		if (now_ms() - w->last_data >= ETCD_WATCH_IDLE_MS) {
			if (!probe(w, idx)) {
				w->state = W_RECONNECT;
				break;
			}
			w->last_data = now_ms();
		}
		curl_multi_poll(w->multi, NULL, 0, ETCD_WATCH_IDLE_MS / 4, NULL);
	}
	if (w->state == W_RUNNING && !stopping(w)) {
		/* the stream ended (connection dropped or server closed) */
		CURLcode rc = CURLE_OK;

		while ((msg = curl_multi_info_read(w->multi, &left)))
			if (msg->msg == CURLMSG_DONE)
				rc = msg->data.result;
		ferr_set(&w->why, FERR_UNAVAILABLE, "etcd watch on %s ended: %s",
			 w->e->cfg.endpoints[idx],
			 ebuf[0] ? ebuf : curl_easy_strerror(rc));
		w->state = W_RECONNECT;
	}
	curl_multi_remove_handle(w->multi, curl);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
out:
	curl_slist_free_all(hdrs);
	free(body);
}

static void *watch_thread(void *arg)
{
	struct etcd_watch *w = arg;
	unsigned n = w->e->cfg.n_endpoints, failed = 0;
	unsigned idx = __atomic_load_n(&w->e->preferred, __ATOMIC_SEQ_CST);
	uint64_t pause = ETCD_RETRY_MIN_MS;

	w->curl = curl_easy_init();
	if (!w->curl || etcd_curl_init(w->e, w->curl, &w->why) < 0) {
		if (!w->curl)
			ferr_set(&w->why, FERR_INTERNAL, "out of memory");
		w->state = W_FINAL;
	}
	while (w->state != W_FINAL && !stopping(w)) {
		run_connection(w, idx);
		if (w->state == W_FINAL || stopping(w))
			break;
		log_info("%s; resuming from revision %" PRId64, w->why.msg,
			 __atomic_load_n(&w->next_rev, __ATOMIC_SEQ_CST));
		etcd_skip_endpoint(w->e, idx);
		idx = (idx + 1) % n;
		if (w->got_data) {
			failed = 0;
			pause = ETCD_RETRY_MIN_MS;
		} else if (++failed % n == 0) {
			/* a round of members failed: pause, wakeable by stop */
			curl_multi_poll(w->multi, NULL, 0, (int)pause, NULL);
			pause = pause * 2 < ETCD_RETRY_MAX_MS ? pause * 2
							      : ETCD_RETRY_MAX_MS;
		}
	}
	curl_easy_cleanup(w->curl);
	if (w->state == W_FINAL && !stopping(w) && w->ops.ended)
		w->ops.ended(w->arg, &w->why);
	return NULL;
}

struct etcd_watch *etcd_watch_start(struct etcd *e, const char *key,
				    bool prefix, int64_t start_revision,
				    const struct etcd_watch_ops *ops,
				    void *arg, struct ferr *err)
{
	struct etcd_watch *w;

	if (etcd_key_check(key, prefix, err) < 0)
		return NULL;
	if (!ops || !ops->events || start_revision < 0) {
		ferr_set(err, FERR_INVALID,
			 "etcd watch needs an events callback and a start "
			 "revision >= 0");
		return NULL;
	}
	w = calloc(1, sizeof(*w));
	if (!w || !(w->multi = curl_multi_init())) {
		free(w);
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	w->e = e;
	snprintf(w->key, sizeof(w->key), "%s", key);
	w->prefix = prefix;
	w->ops = *ops;
	w->arg = arg;
	w->next_rev = start_revision;
	if (pthread_create(&w->thread, NULL, watch_thread, w) != 0) {
		curl_multi_cleanup(w->multi);
		free(w);
		ferr_set(err, FERR_INTERNAL, "cannot start the watch thread");
		return NULL;
	}
	return w;
}

void etcd_watch_stop(struct etcd_watch *w)
{
	if (!w)
		return;
	__atomic_store_n(&w->stop, 1, __ATOMIC_SEQ_CST);
	curl_multi_wakeup(w->multi);
	pthread_join(w->thread, NULL);
	curl_multi_cleanup(w->multi);
	free(w->line.data);
	free(w);
}

int64_t etcd_watch_next_revision(struct etcd_watch *w)
{
	return __atomic_load_n(&w->next_rev, __ATOMIC_SEQ_CST);
}

unsigned etcd_watch_connects(struct etcd_watch *w)
{
	return __atomic_load_n(&w->connects, __ATOMIC_SEQ_CST);
}
