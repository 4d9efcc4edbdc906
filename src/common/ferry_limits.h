/* ferry_limits.h - every size, count and time limit of ferry, in one place.
 *
 * Anything read from the network, a file or QEMU is checked against these
 * before it is used.
 */
#ifndef FERRY_FERRY_LIMITS_H
#define FERRY_FERRY_LIMITS_H


/* Errors and names */
#define FERRY_ERR_MSG_MAX 256        /* bytes of an error message */
#define FERRY_NAME_MAX 63            /* VM, host and user names */
#define FERRY_PATH_MAX 4096          /* any file path */
#define FERRY_SOCK_PATH_MAX 107      /* sun_path minus the NUL */
#define FERRY_STATE_DIR_MAX 60       /* keeps run/<uuid>.qmp under 107 */
#define FERRY_UUID_STR_LEN 36

/* Files */
#define FERRY_CONFIG_MAX (64 * 1024)   /* ferryd.json, client.json */
#define FERRY_VMDEF_FILE_MAX (64 * 1024)

/* JSON nesting accepted from hostile input */
#define FERRY_JSON_DEPTH_MAX 16

/* VM definitions */
#define FERRY_VM_MEM_MIN_MIB 16ULL
#define FERRY_VM_MEM_MAX_MIB (1024ULL * 1024)    /* 1 TiB */
#define FERRY_VM_VCPU_MIN 1ULL
#define FERRY_VM_VCPU_MAX 256ULL
#define FERRY_VM_CMDLINE_MAX 2048
#define FERRY_VM_MAX 1024                       /* VMs per host */
#define FERRY_VM_LABELS_MAX 16                  /* labels per VM */
#define FERRY_VM_DEST_LABELS_MAX 16   /* constraints: allowed key=value pairs */
#define FERRY_VM_ROLES_MAX 8          /* constraints: allowed roles */
#define FERRY_VM_SIG_LEN 64           /* constraints: ECDSA P-256 r || s */

/* A VM's firewall (src/firewall, security.md) */
#define FERRY_FW_RULES_MAX 64         /* rules per VM */
#define FERRY_FW_CT_FLOWS_MAX 65536   /* tracked flows carried by a migration */
#define FERRY_FW_CT_TIMEOUT_MAX 432000 /* s: an imported flow's timeout (the
					  kernel's TCP established default) */

/* REST API */
#define FERRY_API_PORT_DEFAULT 8443
#define FERRY_API_MAX_BODY (64 * 1024)          /* request body bytes */
#define FERRY_API_MAX_HEADERS (16 * 1024)       /* request header bytes */
#define FERRY_API_TIMEOUT_S 10                  /* idle read/write timeout;
							   the absolute one is
							   limits.deadline_s */
#define FERRY_API_CONSOLE_MAX (256 * 1024)      /* console bytes per reply */
#define FERRY_API_REPLY_MAX (64 * 1024 * 1024)  /* reply bytes the CLI reads */
#define FERRY_AUDIT_QUERY_DEFAULT 1000          /* records per audit query */
#define FERRY_AUDIT_QUERY_MAX 10000
#define FERRY_AUDIT_ROTATE_KIB_DEFAULT 65536    /* audit.log rotation size */
#define FERRY_AUDIT_ROTATE_KIB_MIN 32           /* = AUDIT_ROTATE_MIN */
#define FERRY_AUDIT_ROTATE_KIB_MAX (1024 * 1024 * 1024) /* 1 TiB */
#define FERRY_USER_NAME_MAX 32                  /* qemu_user */

/* QMP */
#define FERRY_QMP_LINE_MAX (1024 * 1024)        /* one QMP message */
#define FERRY_QMP_TIMEOUT_MS 10000              /* one QMP command */
#define FERRY_QEMU_START_TIMEOUT_MS 30000       /* QEMU up to QMP greeting */

/* VM lifecycle */
#define FERRY_STOP_TIMEOUT_S_DEFAULT 30         /* graceful stop, then force */
#define FERRY_STOP_TIMEOUT_S_MAX 3600
#define FERRY_KILL_WAIT_MS 5000                 /* after quit, before SIGKILL */
#define FERRY_VM_OPS_MAX 16                     /* operations queued per VM */

/* Migration settings of a VM */
#define FERRY_MIG_DOWNTIME_MS_DEFAULT 300ULL
#define FERRY_MIG_DOWNTIME_MS_MIN 1ULL
#define FERRY_MIG_DOWNTIME_MS_MAX 60000ULL
#define FERRY_MIG_TIME_S_DEFAULT 300ULL
#define FERRY_MIG_TIME_S_MIN 5ULL
#define FERRY_MIG_TIME_S_MAX 86400ULL

/* Migrations at once, per host (config migration.max_incoming/outgoing) */
#define FERRY_MIG_INCOMING_DEFAULT 2
#define FERRY_MIG_OUTGOING_DEFAULT 2
#define FERRY_MIG_CONCURRENT_MAX 64
#define FERRY_MIG_PEER_TIMEOUT_S 30    /* one control call to the peer */
#define FERRY_MIG_CONFIRM_TIMEOUT_S 60 /* settle a finish, then the resolver */
#define FERRY_MIG_STALL_TIMEOUT_S 15   /* no progress for this long: cancel */

/* Flood protection defaults (config "limits") */
#define FERRY_GUARD_CONNS_PER_ADDR 32    /* unauthenticated, per source */
#define FERRY_GUARD_CONNS_TOTAL 256      /* unauthenticated, in all */
#define FERRY_GUARD_HANDSHAKES_PER_S 50  /* per source */
#define FERRY_GUARD_HANDSHAKE_BURST 100
#define FERRY_GUARD_REQUESTS_PER_S 100   /* per identity */
#define FERRY_GUARD_REQUEST_BURST 200
#define FERRY_GUARD_DEADLINE_S 10        /* accept -> TLS handshake and the
					    request (API) or HELLO (data
					    plane); slow-loris clients */
#define FERRY_GUARD_DEADLINE_S_MAX 300

/* Attestation (attest_format.h has its formats): PCRs 0-15 only */
#define FERRY_ATTEST_PCR_MAX 15
#define FERRY_ATTEST_PCR_DEFAULT 15         /* software: ferryd, QEMU */
#define FERRY_ATTEST_POLICY_PCR_DEFAULT 13  /* the policy in force */
#define FERRY_ATTEST_TCTI_MAX 255
#define FERRY_ATTEST_TCTI_DEFAULT "device:/dev/tpmrm0"

/* Certificates */
#define FERRY_CERT_DAYS_DEFAULT 825
#define FERRY_CERT_DAYS_MAX 3650
#define FERRY_CA_DAYS_DEFAULT 3650
#define FERRY_CRL_MAX (1024 * 1024)     /* crl.pem bytes */

#endif
