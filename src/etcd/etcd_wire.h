/* etcd_wire.h - the limits of the etcd client and the wire details of
 * etcd's v3 JSON gateway (etcd 3.4), as the team measured them:
 *
 * - every request is POST <endpoint>/v3/<service>/<method> with a JSON
 *   body; the answer is one JSON object, or for the streaming methods
 *   (watch, lease keepalive) one JSON object per line, each wrapped as
 *   {"result": {...}} or {"error": {...}};
 * - int64 and uint64 fields (revisions, counts, lease ids, TTLs) arrive as
 *   JSON strings of decimal digits; lease ids exceed 2^53, so no value
 *   ever passes through a double;
 * - fields holding their default (0, false, "", empty list, enum value 0
 *   such as PUT) are omitted from answers: absent means default;
 * - keys and values are base64 (standard alphabet, padded);
 * - an error is a non-200 status with {"error", "message", "code"}, code
 *   being the gRPC status code.
 */
#ifndef FERRY_ETCD_WIRE_H
#define FERRY_ETCD_WIRE_H

/* Version of these wire details: the gateway of etcd 3.4 (/v3 paths). */
#define ETCD_WIRE_VERSION 1

/* Config */
#define ETCD_ENDPOINTS_MAX 9              /* members a client knows */
#define ETCD_URL_MAX 80                   /* "https://[v6 address]:port" */
#define ETCD_PREFIX_MAX 128               /* the key prefix, bytes */
#define ETCD_PREFIX_DEFAULT "/ferry"
#define ETCD_TIMEOUT_MS_DEFAULT 5000      /* a call's default deadline */
#define ETCD_TIMEOUT_MS_MAX 600000
#define ETCD_MEMBER_TIMEOUT_MS_DEFAULT 2000 /* one member, one request */
#define ETCD_MEMBER_TIMEOUT_MS_MIN 100
#define ETCD_LEASE_TTL_S_DEFAULT 10
#define ETCD_LEASE_TTL_S_MAX 3600

/* Keys, values and answers */
#define ETCD_KEY_MAX 1024                 /* a relative key, bytes */
#define ETCD_VALUE_MAX (1024 * 1024)      /* a value (etcd takes 1.5 MiB) */
#define ETCD_RANGE_KVS_MAX 10000          /* kvs in one range answer */
#define ETCD_TXN_OPS_MAX 64               /* compares, and ops per branch
					     (etcd's default cap is 128) */
#define ETCD_RESPONSE_MAX (16 * 1024 * 1024) /* bytes of one answer */
#define ETCD_WATCH_MSG_MAX (16 * 1024 * 1024) /* bytes of one watch line */
#define ETCD_WATCH_EVENTS_MAX 100000      /* events in one watch message */
#define ETCD_INT64_DIGITS 19              /* decimal digits of INT64_MAX */

/* Watch liveness and retry pacing */
#define ETCD_WATCH_IDLE_MS 2000           /* no data for this long: probe */
#define ETCD_RETRY_MIN_MS 50              /* pause after a round of members */
#define ETCD_RETRY_MAX_MS 1000

/* Gateway paths (etcd 3.4) */
#define ETCD_PATH_RANGE "/v3/kv/range"
#define ETCD_PATH_PUT "/v3/kv/put"
#define ETCD_PATH_DELETE "/v3/kv/deleterange"
#define ETCD_PATH_TXN "/v3/kv/txn"
#define ETCD_PATH_LEASE_GRANT "/v3/lease/grant"
#define ETCD_PATH_LEASE_REVOKE "/v3/lease/revoke"
#define ETCD_PATH_LEASE_KEEPALIVE "/v3/lease/keepalive"
#define ETCD_PATH_LEASE_TTL "/v3/lease/timetolive"
#define ETCD_PATH_WATCH "/v3/watch"

/* gRPC status codes found in error answers */
#define ETCD_GRPC_INVALID_ARGUMENT 3
#define ETCD_GRPC_DEADLINE_EXCEEDED 4
#define ETCD_GRPC_NOT_FOUND 5
#define ETCD_GRPC_PERMISSION_DENIED 7
#define ETCD_GRPC_RESOURCE_EXHAUSTED 8
#define ETCD_GRPC_FAILED_PRECONDITION 9
#define ETCD_GRPC_OUT_OF_RANGE 11
#define ETCD_GRPC_UNAVAILABLE 14
#define ETCD_GRPC_UNAUTHENTICATED 16

/* gRPC metadata header: the member cancels our watch when it has no
 * leader (a member cut off from the quorum serves stale data). */
#define ETCD_HDR_REQUIRE_LEADER "Grpc-Metadata-hasleader: true"

#endif
