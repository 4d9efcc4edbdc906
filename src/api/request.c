/* request.c - routing and strict validation of API requests. Pure: no I/O,
 * so it is unit-tested and fuzzed directly. */
#include "api.h"

#include <stdio.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#define PATH_SEGMENTS_MAX 4

/* What a route accepts as its body. */
enum body_kind {
	BODY_NONE,   /* no body */
	BODY_EMPTY,  /* none or {} */
	BODY_STOP,   /* none or {"force", "timeout_s"} */
	BODY_FORCE,  /* none or {"force"} */
	BODY_OBJECT, /* a JSON object, validated by the handler */
	BODY_OPT_OBJECT, /* none, or a JSON object validated by the handler */
};

struct route_def {
	enum api_route route;
	const char *method;
	int nseg;         /* segments after /v1 */
	const char *seg0; /* "host", "vms", "migrations", "incoming", ... */
	const char *verb; /* 3 segments: the one after NAME/ID; 2 segments:
			     a fixed second segment (no NAME), or NULL */
	enum body_kind body;
};

static const struct route_def routes[] = {
	{ ROUTE_HOST_INFO, "GET", 1, "host", NULL, BODY_NONE },
	{ ROUTE_VM_LIST, "GET", 1, "vms", NULL, BODY_NONE },
	{ ROUTE_VM_DEFINE, "POST", 1, "vms", NULL, BODY_OBJECT },
	{ ROUTE_VM_INFO, "GET", 2, "vms", NULL, BODY_NONE },
	{ ROUTE_VM_DELETE, "DELETE", 2, "vms", NULL, BODY_NONE },
	{ ROUTE_VM_START, "POST", 3, "vms", "start", BODY_EMPTY },
	{ ROUTE_VM_STOP, "POST", 3, "vms", "stop", BODY_STOP },
	{ ROUTE_VM_PAUSE, "POST", 3, "vms", "pause", BODY_EMPTY },
	{ ROUTE_VM_RESUME, "POST", 3, "vms", "resume", BODY_FORCE },
	{ ROUTE_VM_CONSOLE, "GET", 3, "vms", "console", BODY_NONE },
	{ ROUTE_VM_MIGRATE, "POST", 3, "vms", "migrate", BODY_OBJECT },
	{ ROUTE_MIG_LIST, "GET", 1, "migrations", NULL, BODY_NONE },
	{ ROUTE_MIG_INFO, "GET", 2, "migrations", NULL, BODY_NONE },
	{ ROUTE_MIG_CANCEL, "POST", 3, "migrations", "cancel", BODY_EMPTY },
	{ ROUTE_IN_PREPARE, "POST", 1, "incoming", NULL, BODY_OBJECT },
	{ ROUTE_IN_INFO, "GET", 2, "incoming", NULL, BODY_NONE },
	{ ROUTE_IN_FINISH, "POST", 3, "incoming", "finish", BODY_OPT_OBJECT },
	{ ROUTE_IN_ABORT, "POST", 3, "incoming", "abort", BODY_OPT_OBJECT },
	{ ROUTE_IN_RECOVER, "POST", 3, "incoming", "recover", BODY_EMPTY },
	{ ROUTE_IN_LOST, "POST", 3, "incoming", "lost", BODY_EMPTY },
	{ ROUTE_AUDIT_QUERY, "GET", 1, "audit", NULL, BODY_NONE },
	{ ROUTE_AUDIT_LOG, "GET", 2, "audit", "log", BODY_NONE },
	{ ROUTE_AUDIT_KEY, "GET", 2, "audit", "key", BODY_NONE },
	{ ROUTE_POLICY_RELOAD, "POST", 2, "policy", "reload", BODY_EMPTY },
	{ ROUTE_LOAD, "GET", 1, "load", NULL, BODY_NONE },
	{ ROUTE_HOST_DRAIN, "POST", 2, "host", "drain", BODY_EMPTY },
	{ ROUTE_HOST_UNDRAIN, "POST", 2, "host", "undrain", BODY_EMPTY },
	{ ROUTE_BAL_STATUS, "GET", 1, "balance", NULL, BODY_NONE },
	{ ROUTE_BAL_PLAN, "GET", 2, "balance", "plan", BODY_NONE },
	{ ROUTE_BAL_MODE, "POST", 2, "balance", "mode", BODY_OBJECT },
	{ ROUTE_BAL_DRAIN, "POST", 2, "balance", "drain", BODY_OBJECT },
	{ ROUTE_BAL_UNDRAIN, "POST", 2, "balance", "undrain", BODY_OBJECT },
	{ ROUTE_BAL_DRAINS, "GET", 2, "balance", "drains", BODY_NONE },
	{ ROUTE_HA_ENABLE, "POST", 3, "vms", "ha", BODY_OBJECT },
	{ ROUTE_HA_DISABLE, "DELETE", 3, "vms", "ha", BODY_FORCE },
	{ ROUTE_HA_STATUS, "GET", 3, "vms", "ha", BODY_NONE },
	{ ROUTE_HA_FAILOVER, "POST", 3, "vms", "failover", BODY_EMPTY },
	{ ROUTE_HA_LIST, "GET", 1, "ha", NULL, BODY_NONE },
	{ ROUTE_STANDBY_PREPARE, "POST", 1, "standby", NULL, BODY_OBJECT },
	{ ROUTE_STANDBY_DISCARD, "DELETE", 2, "standby", NULL, BODY_NONE },
	{ ROUTE_HA_ADOPT, "POST", 2, "ha", "adopt", BODY_OBJECT },
	{ ROUTE_BAL_PARAMS, "POST", 2, "balance", "params", BODY_OBJECT },
	{ ROUTE_HOST_FENCE, "POST", 2, "host", "fence", BODY_OBJECT },
	{ ROUTE_ATTEST_IDENTITY, "GET", 2, "attest", "identity", BODY_NONE },
	{ ROUTE_ATTEST_QUOTE, "POST", 2, "attest", "quote", BODY_OBJECT },
	{ ROUTE_ATTEST_ACTIVATE, "POST", 2, "attest", "activate",
	  BODY_OBJECT },
	{ ROUTE_ATTEST_APPROVE, "POST", 2, "attest", "approvals",
	  BODY_OBJECT },
	{ ROUTE_METRICS, "GET", 1, "metrics", NULL, BODY_NONE },
	{ ROUTE_VM_FW_SHOW, "GET", 3, "vms", "firewall", BODY_NONE },
	{ ROUTE_VM_FW_SET, "POST", 3, "vms", "firewall", BODY_OBJECT },
};

enum perm api_route_perm(enum api_route r)
{
	switch (r) {
	case ROUTE_HOST_INFO:
		return PERM_HOST_READ;
	case ROUTE_VM_LIST:
	case ROUTE_VM_INFO:
	case ROUTE_VM_CONSOLE:
	case ROUTE_VM_FW_SHOW:
		return PERM_VM_READ;
	case ROUTE_VM_FW_SET:
		return PERM_VM_FIREWALL;
	case ROUTE_VM_MIGRATE:
	case ROUTE_HA_ENABLE:
	case ROUTE_HA_DISABLE:
	case ROUTE_HA_FAILOVER:
		return PERM_VM_MIGRATE;
	case ROUTE_HA_STATUS:
	case ROUTE_HA_LIST:
		return PERM_VM_READ;
	case ROUTE_STANDBY_PREPARE:
	case ROUTE_STANDBY_DISCARD:
	case ROUTE_HA_ADOPT:
		return PERM_MIG_PEER;
	case ROUTE_MIG_LIST:
	case ROUTE_MIG_INFO:
		return PERM_MIG_READ;
	case ROUTE_MIG_CANCEL:
		return PERM_MIG_CANCEL;
	case ROUTE_IN_PREPARE:
	case ROUTE_IN_INFO:
	case ROUTE_IN_FINISH:
	case ROUTE_IN_ABORT:
	case ROUTE_IN_RECOVER:
	case ROUTE_IN_LOST:
		return PERM_MIG_PEER;
	case ROUTE_AUDIT_QUERY:
	case ROUTE_AUDIT_LOG:
	case ROUTE_AUDIT_KEY:
		return PERM_AUDIT_READ;
	case ROUTE_POLICY_RELOAD:
		return PERM_POLICY_RELOAD;
	case ROUTE_LOAD:
	case ROUTE_BAL_STATUS:
	case ROUTE_BAL_PLAN:
	case ROUTE_BAL_DRAINS:
		return PERM_BALANCE_READ;
	case ROUTE_HOST_DRAIN:
	case ROUTE_HOST_UNDRAIN:
	case ROUTE_BAL_MODE:
	case ROUTE_BAL_DRAIN:
	case ROUTE_BAL_UNDRAIN:
	case ROUTE_BAL_PARAMS:
		return PERM_BALANCE_WRITE;
	case ROUTE_HOST_FENCE:
		return PERM_VM_MIGRATE; /* it fences migration requests */
	case ROUTE_ATTEST_IDENTITY:
	case ROUTE_ATTEST_QUOTE:
		return PERM_ATTEST_READ;
	case ROUTE_ATTEST_ACTIVATE:
	case ROUTE_ATTEST_APPROVE:
		return PERM_ATTEST_ADMIN;
	case ROUTE_METRICS:
		return PERM_METRICS;
	default:
		return PERM_VM_WRITE; /* define, delete, start, stop, ... */
	}
}

const char *api_route_action(enum api_route r)
{
	switch (r) {
	case ROUTE_VM_DEFINE:
		return "vm.define";
	case ROUTE_VM_DELETE:
		return "vm.delete";
	case ROUTE_VM_START:
		return "vm.start";
	case ROUTE_VM_STOP:
		return "vm.stop";
	case ROUTE_VM_PAUSE:
		return "vm.pause";
	case ROUTE_VM_RESUME:
		return "vm.resume";
	case ROUTE_VM_MIGRATE:
		return "migration.request";
	case ROUTE_MIG_CANCEL:
		return "migration.cancel";
	case ROUTE_IN_PREPARE:
		return "migration.prepare";
	case ROUTE_IN_FINISH:
		return "migration.finish";
	case ROUTE_IN_ABORT:
		return "migration.abort";
	case ROUTE_IN_RECOVER:
		return "migration.recover";
	case ROUTE_IN_LOST:
		return "migration.source_lost";
	case ROUTE_POLICY_RELOAD:
		return "policy.reload";
	case ROUTE_HOST_DRAIN:
		return "host.drain";
	case ROUTE_HOST_UNDRAIN:
		return "host.undrain";
	case ROUTE_BAL_MODE:
		return "balance.mode";
	case ROUTE_BAL_DRAIN:
		return "balance.drain";
	case ROUTE_BAL_UNDRAIN:
		return "balance.undrain";
	case ROUTE_HA_ENABLE:
		return "ha.enable";
	case ROUTE_HA_DISABLE:
		return "ha.disable";
	case ROUTE_HA_FAILOVER:
		return "ha.failover_request";
	case ROUTE_STANDBY_PREPARE:
		return "ha.standby_prepare";
	case ROUTE_STANDBY_DISCARD:
		return "ha.standby_discard_request";
	case ROUTE_HA_ADOPT:
		return "ha.adopt_request";
	case ROUTE_BAL_PARAMS:
		return "balance.params";
	case ROUTE_HOST_FENCE:
		return "host.fence";
	case ROUTE_ATTEST_ACTIVATE:
		return "attest.activate";
	case ROUTE_ATTEST_APPROVE:
		return "attest.approve";
	case ROUTE_VM_FW_SET:
		return "vm.firewall";
	default:
		return NULL;
	}
}

/* Is seg1 a fixed second segment of some route under seg0 (so it is not a
 * NAME)? */
static bool is_fixed_segment(const char *seg0, const char *seg1)
{
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (routes[i].nseg == 2 && routes[i].verb &&
		    !strcmp(routes[i].seg0, seg0) &&
		    !strcmp(routes[i].verb, seg1))
			return true;
	return false;
}

void api_request_clear(struct api_request *req)
{
	json_decref(req->body);
	req->body = NULL;
}

/* Split path "/v1/a/b/c" into segments after the prefix. */
static int split_path(const char *path, char seg[][FERRY_NAME_MAX + 2],
		      int *nseg, struct ferr *err)
{
	const char *p;
	int n = 0;

	if (strncmp(path, API_PREFIX "/", strlen(API_PREFIX) + 1) != 0)
		return ferr_set(err, FERR_NOT_FOUND,
				"no such route (the API lives under %s/)",
				API_PREFIX);
	p = path + strlen(API_PREFIX) + 1;
	for (;;) {
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (n == PATH_SEGMENTS_MAX || len == 0 || len > FERRY_NAME_MAX)
			return ferr_set(err, FERR_NOT_FOUND, "no such route");
		memcpy(seg[n], p, len);
		seg[n][len] = '\0';
		n++;
		if (!end)
			break;
		p = end + 1;
	}
	*nseg = n;
	return 0;
}

/* Parse the request body as the route's body kind says. */
static int parse_body(struct api_request *req, enum body_kind kind,
		      const char *body, size_t len, struct ferr *err)
{
	static const char *const stop_fields[] = { "force", "timeout_s", NULL };
	static const char *const force_fields[] = { "force", NULL };
	static const char *const none[] = { NULL };
	json_t *obj;
	uint64_t t = FERRY_STOP_TIMEOUT_S_DEFAULT;
	int rc = -1;

	if (len > FERRY_API_MAX_BODY)
		return ferr_set(err, FERR_TOO_LARGE,
				"request body is larger than %d bytes",
				FERRY_API_MAX_BODY);
	req->timeout_s = FERRY_STOP_TIMEOUT_S_DEFAULT;
	if (len == 0) {
		if (kind == BODY_OBJECT)
			return ferr_set(err, FERR_INVALID,
					"this request needs a JSON body");
		return 0;
	}
	if (kind == BODY_NONE)
		return ferr_set(err, FERR_INVALID,
				"this request takes no body");
	obj = json_parse_object(body, len, "request body", err);
	if (!obj)
		return -1;
	if (kind == BODY_OBJECT || kind == BODY_OPT_OBJECT) {
		req->body = obj;
		return 0;
	}
	if (json_check_fields(obj,
			      kind == BODY_STOP	   ? stop_fields
			      : kind == BODY_FORCE ? force_fields
						   : none,
			      "request body", err) < 0)
		goto out;
	if ((kind == BODY_STOP || kind == BODY_FORCE) &&
	    json_get_bool(obj, "force", "request body", &req->force, err) < 0)
		goto out;
	if (kind == BODY_STOP &&
	    json_get_u64(obj, "timeout_s", "request body", 1,
			 FERRY_STOP_TIMEOUT_S_MAX, &t, err) < 0)
		goto out;
	req->timeout_s = (unsigned)t;
	rc = 0;
out:
	json_decref(obj);
	return rc;
}

/* Is s an audit action filter: [a-z0-9._-]+ with an optional final '*'? */
static bool action_filter_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > FERRY_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' ||
		      (c == '*' && i == n - 1)))
			return false;
	}
	return true;
}

/* One query parameter of the console or audit routes. */
static int query_param(struct api_request *req, const char *key,
		       const char *value, struct ferr *err)
{
	bool console = req->route == ROUTE_VM_CONSOLE;
	uint64_t *num = NULL, max = INT64_MAX;
	char *str = NULL;

	if (req->route == ROUTE_BAL_STATUS) {
		/* hosts=0: the figures without the (long) host list */
		if (strcmp(key, "hosts") != 0 ||
		    (strcmp(value, "0") && strcmp(value, "1")))
			return ferr_set(err, FERR_INVALID,
					"the only query parameter is hosts=0 "
					"or hosts=1");
		req->no_hosts = value[0] == '0';
		return 0;
	}
	if (console && !strcmp(key, "offset")) {
		num = &req->offset;
	} else if (!strcmp(key, "limit")) {
		num = &req->limit;
		max = console ? FERRY_API_CONSOLE_MAX : FERRY_AUDIT_QUERY_MAX;
	} else if (!console && !strcmp(key, "since")) {
		num = &req->since;
	} else if (!console && !strcmp(key, "until")) {
		num = &req->until;
	} else if (!console && !strcmp(key, "vm")) {
		str = req->q_vm;
	} else if (!console && !strcmp(key, "actor")) {
		str = req->q_actor;
	} else if (!console && !strcmp(key, "action")) {
		str = req->q_action;
	} else {
		return ferr_set(err, FERR_INVALID,
				"unknown query parameter \"%.32s\"", key);
	}
	if (num && parse_u64(value, 0, max, num) < 0)
		return ferr_set(err, FERR_INVALID,
				"query parameter %s must be an integer "
				"between 0 and %llu",
				key, (unsigned long long)max);
	if (str) {
		bool ok = str == req->q_action ? action_filter_ok(value)
					       : name_is_valid(value);

		if (!ok)
			return ferr_set(err, FERR_INVALID,
					"query parameter %s is not valid", key);
		snprintf(str, FERRY_NAME_MAX + 1, "%s", value);
	}
	return 0;
}

/* Parse the query string: only the console, the audit query and the
 * balancer's status take parameters. */
static int parse_query(struct api_request *req, const char *query,
		       struct ferr *err)
{
	struct evkeyvalq params;
	struct evkeyval *kv;
	int rc = 0;

	req->offset = 0;
	req->limit = req->route == ROUTE_AUDIT_QUERY ? FERRY_AUDIT_QUERY_DEFAULT
						     : FERRY_API_CONSOLE_MAX;
	if (!query || !*query)
		return 0;
	if (req->route != ROUTE_VM_CONSOLE && req->route != ROUTE_AUDIT_QUERY &&
	    req->route != ROUTE_BAL_STATUS)
		return ferr_set(err, FERR_INVALID,
				"this request takes no query parameters");
	TAILQ_INIT(&params);
	if (evhttp_parse_query_str(query, &params) < 0) {
		evhttp_clear_headers(&params);
		return ferr_set(err, FERR_INVALID, "malformed query string");
	}
	TAILQ_FOREACH(kv, &params, next) {
		rc = query_param(req, kv->key, kv->value, err);
		if (rc < 0)
			break;
	}
	evhttp_clear_headers(&params);
	return rc;
}

int api_parse_request(const char *method, const char *uri, const char *body,
		      size_t len, struct api_request *req, struct ferr *err)
{
	char seg[PATH_SEGMENTS_MAX][FERRY_NAME_MAX + 2];
	struct evhttp_uri *u;
	const struct route_def *match = NULL;
	bool path_known = false;
	int nseg = 0;
	int rc = -1;

	memset(req, 0, sizeof(*req));
	u = evhttp_uri_parse_with_flags(uri, 0);
	if (!u || !evhttp_uri_get_path(u))
		return ferr_set(err, FERR_INVALID, "malformed request URI");
	if (split_path(evhttp_uri_get_path(u), seg, &nseg, err) < 0)
		goto out;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const struct route_def *r = &routes[i];

		if (r->nseg != nseg || strcmp(r->seg0, seg[0]) != 0)
			continue;
		if (r->verb && strcmp(r->verb, seg[nseg - 1]) != 0)
			continue;
		if (nseg == 2 && !r->verb && is_fixed_segment(seg[0], seg[1]))
			continue;
		path_known = true;
		if (!strcmp(r->method, method)) {
			match = r;
			break;
		}
	}
	if (!match) {
		if (path_known)
			ferr_set(err, FERR_METHOD,
				 "method %.16s is not allowed here", method);
		else
			ferr_set(err, FERR_NOT_FOUND, "no such route");
		goto out;
	}
	req->route = match->route;
	if (nseg == 3 || (nseg == 2 && !match->verb)) {
		if (!name_is_valid(seg[1])) {
			ferr_set(err, FERR_INVALID,
				 "\"%.64s\" is not a valid %s", seg[1],
				 strcmp(seg[0], "vms") ? "migration id"
						       : "VM name");
			goto out;
		}
		memcpy(req->vm, seg[1], strlen(seg[1]) + 1);
	}
	if (evhttp_uri_get_fragment(u)) {
		ferr_set(err, FERR_INVALID, "URI fragments are not allowed");
		goto out;
	}
	if (parse_query(req, evhttp_uri_get_query(u), err) < 0 ||
	    parse_body(req, match->body, body, len, err) < 0)
		goto out;
	rc = 0;
out:
	if (rc < 0)
		api_request_clear(req);
	evhttp_uri_free(u);
	return rc;
}

json_t *api_error_json(const struct ferr *err)
{
	return json_pack("{s:{s:s, s:s}}", "error", "code",
			 ferr_code_name(err->code), "message", err->msg);
}
