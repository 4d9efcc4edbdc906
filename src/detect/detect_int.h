/* detect_int.h - what the files of ferry-detect share (probe.c: sockets;
 * hosts.c: the API thread; run.c: the loop; events.c: events, the audit
 * cross-check and alarms; output.c: what it shows and keeps; replay.c;
 * main.c: the command line). The pure parts are in detect.h. */
#ifndef FERRY_DETECT_INT_H
#define FERRY_DETECT_INT_H

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>

#include "cli.h"
#include "common.h"
#include "detect.h"

#define DT_TARGETS_MAX 64
#define DT_HOSTS_MAX CLI_HOSTS_MAX
#define DT_VMS_MAX 256        /* VMs known across all hosts */
#define DT_MIG_RECS_MAX 1024  /* newest migration.* records kept per host */
#define DT_LOCAL_MAX 4096     /* local samples queued between reads */
#define DT_WINDOW 512         /* probes in flight per target */
#define DT_ALARMS_MAX 256
#define DT_EVENTS_MAX 256

/* ---- probe.c ---- */

struct probe_sock {
	int fd;
	bool raw;
	uint16_t id;
};

/* An ICMP echo socket in namespace ns (NULL: ours): a datagram socket if
 * allowed, else raw. Kernel receive timestamps are on. */
int probe_open(const char *ns, struct probe_sock *ps, struct ferr *err);

/* Send echo request seq to addr (network order). 0 or -1. */
int probe_send(struct probe_sock *ps, uint32_t addr, uint16_t seq);

/* Wall clock in microseconds. */
uint64_t wall_us(void);

/* Read one echo reply: 2 with *addr, *seq and *at_us (wall clock of the
 * kernel's receive time, us; 0 if unknown), 1 to retry, 0 when nothing is
 * left. */
int probe_recv(struct probe_sock *ps, uint32_t *addr, uint16_t *seq,
	       uint64_t *at_us);

/* An AF_PACKET socket bound to ifname in namespace ns: every frame. */
int packet_open(const char *ns, const char *ifname, struct ferr *err);

/* Read frames until one that frame_parse recognises: 2 with *fi and
 * *at_us (as probe_recv), 1 to retry, 0 when nothing is left. */
int packet_recv(int fd, struct frame_info *fi, uint64_t *at_us);

/* ---- hosts.c: the API thread ---- */

/* A VM as the hosts list it. */
struct dt_vm {
	char name[FERRY_NAME_MAX + 1];
	char host[FERRY_NAME_MAX + 1];
	char mac[18];
	uint32_t ip;              /* from ferry.ip= in its cmdline, or 0 */
	bool running;             /* running or paused, not incoming */
};

/* A migration.* record of a host's verified audit log. */
struct dt_mig_rec {
	uint64_t ts;
	char vm[FERRY_NAME_MAX + 1];
	char action[24];
	char id[40];              /* detail.id or "" */
};

struct dt_host {
	char name[FERRY_NAME_MAX + 1];
	bool reached;             /* the last refresh got an answer */
	bool audit_ok;            /* the whole log verified */
	char audit_msg[FERRY_ERR_MSG_MAX];
	uint64_t audit_records;
	struct dt_mig_rec *recs;  /* DT_MIG_RECS_MAX */
	unsigned nrecs;
};

/* One local sample: the guest's probe, its guest-clock send time. */
struct dt_local {
	unsigned vm;              /* index in the local VM list */
	uint64_t guest_ms;
	uint64_t read_ms;         /* wall clock when it was read */
	double rtt_ms;            /* < 0: lost */
};

struct dt_view {
	pthread_mutex_t mu;
	uint64_t generation;      /* refreshes completed */
	uint64_t refreshed_ms;    /* wall clock when the last one started */
	struct dt_host hosts[DT_HOSTS_MAX];
	unsigned nhosts;
	struct dt_vm vms[DT_VMS_MAX];
	unsigned nvms;
	struct dt_local local[DT_LOCAL_MAX];
	unsigned nlocal;
};

struct dt_api {
	struct cli_config cfg;
	struct client client;
	unsigned interval_ms;
	const char *local_vms[DT_TARGETS_MAX];
	unsigned nlocal_vms;
	uint64_t console_off[DT_TARGETS_MAX];
	char console_host[DT_TARGETS_MAX][FERRY_NAME_MAX + 1];
	char partial[DT_TARGETS_MAX][128]; /* a console line cut by a read */
	struct dt_view *view;
	int wake_fd;              /* written after each refresh */
	atomic_bool stop;
	pthread_t thread;
	bool started;
	unsigned nhosts;
	EVP_PKEY *keys[DT_HOSTS_MAX]; /* audit keys, pinned at first sight */
	/* the thread's scratch, copied into view under its lock */
	struct dt_host work[DT_HOSTS_MAX];
	struct dt_vm vms[DT_VMS_MAX];
	struct dt_local q[DT_LOCAL_MAX];
};

/* Refresh view once now (VM lists, audit logs, local consoles). */
void api_refresh(struct dt_api *a);

/* Start the thread refreshing every interval_ms / stop it and free what
 * the view and the thread hold (also after a failed start). */
int api_start(struct dt_api *a, struct ferr *err);
void api_stop(struct dt_api *a);

/* Parse one console line "netprobe: seq=N t=T rtt_us=R|lost": 0 with the
 * guest time and rtt (ms, < 0 lost), -1 if it is not such a line. */
int netprobe_line(const char *line, uint64_t *guest_ms, double *rtt_ms);

/* The address in a cmdline's "ferry.ip=A.B.C.D/N" (network order), or 0. */
uint32_t cmdline_ip(const char *cmdline);

/* ---- run.c: the loop ---- */

struct dt_opts {
	const char *config;       /* client.json (auditor identity) */
	const char *state_dir;    /* state.json, alarms, events, CSV, audit */
	const char *netns;        /* where the probes and the listener live */
	const char *iface;        /* listen for announcements here, or NULL */
	const char *targets[DT_TARGETS_MAX]; /* "ADDR" or "ADDR=VM" */
	unsigned ntargets;
	bool from_hosts;          /* also every bridged VM with ferry.ip= */
	const char *local_vms[DT_TARGETS_MAX];
	unsigned nlocal;
	unsigned timeout_ms;      /* a probe is lost after this */
	unsigned api_interval_ms; /* hosts refreshed this often */
	unsigned grace_ms;        /* audit records may lag a detection */
	unsigned duration_s;      /* 0: until SIGINT/SIGTERM */
	bool watch;               /* per-target lines each second */
	bool json;                /* JSON lines instead of text */
	bool no_series;           /* no series.csv (a line per probe) */
	struct det_params det;
};

/* ---- the running detector's state (run.c, events.c, output.c) ---- */

#define OFFSET_READS 10       /* console reads the guest clock maps from */

struct target {
	char addr_s[INET_ADDRSTRLEN];
	uint32_t addr;
	char vm[FERRY_NAME_MAX + 1];
	char mac[18];
	bool local;               /* the guest's own probes */
	unsigned local_idx;
	struct det det;
	uint32_t next_seq, oldest;
	uint64_t sent[DT_WINDOW];  /* us */
	bool answered[DT_WINDOW];
	/* local: wall - guest clock, the smallest (read time - guest time) of
	 * each of the last OFFSET_READS reads; their minimum is the offset.
	 * Recent reads only: the guest's clock stops whenever the VM does */
	int64_t offsets[OFFSET_READS];
	unsigned noffsets;
	/* last second's statistics */
	unsigned n_ok, n_lost;
	double sum_rtt, last_rtt;
	int event;                /* index of its open reported event, or -1 */
};

enum ev_state { EV_PENDING, EV_EXPLAINED, EV_ALARMED };

struct event {
	unsigned target;
	struct det_event ev;
	bool closed;
	enum ev_state state;
	char vm[FERRY_NAME_MAX + 1];
	char explained_by[40];
};

struct alarm {
	uint64_t at_ms;
	char kind[32];            /* unexplained_migration, audit_tampered */
	char vm[FERRY_NAME_MAX + 1];
	char host[FERRY_NAME_MAX + 1];
	char target[INET_ADDRSTRLEN + 8];
	uint64_t switchover_ms;
	char message[FERRY_ERR_MSG_MAX];
};

/* The argument of a target's detector callback. */
struct det_ctx {
	struct run *r;
	unsigned target;
};

struct run {
	const struct dt_opts *o;
	struct target t[DT_TARGETS_MAX * 2];
	struct det_ctx ctx[DT_TARGETS_MAX * 2];
	unsigned nt;
	bool targets_full;        /* --from-hosts found more VMs than fit */
	struct event ev[DT_EVENTS_MAX];
	unsigned nev;
	struct alarm al[DT_ALARMS_MAX];
	unsigned nal;
	bool host_bad[DT_HOSTS_MAX];
	struct dt_view view;
	struct dt_api api;
	struct audit *audit;
	FILE *csv, *events;
	char path_state[FERRY_PATH_MAX];
	uint64_t started_ms;
};

/* Run the detector until the duration ends or a signal. 0, or -1 with
 * *err when it could not start. */
int dt_run(const struct dt_opts *o, struct ferr *err);

/* Replay the series of target (NULL: any) from source ("remote" or
 * "local") in a series.csv through a detector with params p, printing its
 * reports as JSON lines. */
int dt_replay(const char *csv, const char *target, const char *source,
	      const struct det_params *p, unsigned timeout_ms,
	      struct ferr *err);

/* ---- events.c ---- */

/* The detectors' callback (arg: a struct det_ctx): record a reported
 * migration, or its end, or an anomaly, and print it. */
void dt_on_det(const struct det_event *ev, enum det_report what, void *arg);

/* Keep the records of open events current (their switchover may move). */
void dt_sync_events(struct run *r);

/* With the hosts' view (under its lock): alarm on each host whose audit
 * log stopped verifying, and match each pending migration against the
 * verified logs; one still unmatched a grace after its detection raises
 * an unexplained_migration alarm. */
void dt_cross_check(struct run *r);

/* Recorded migrations (migration.end) of watched VMs, and those no event
 * covers: {"recorded", "detected", "undetected": [...]}. */
json_t *dt_coverage(const struct run *r);

/* Raise an alarm (once per kind, VM, host and switchover within 30 s):
 * logged, printed, kept, and appended to the detector's audit log. */
void dt_raise_alarm(struct run *r, const char *kind, const char *vm,
		    const char *host, const char *target, uint64_t sw,
		    const char *fmt, ...) __attribute__((format(printf, 7, 8)));

/* ---- output.c ---- */

/* Copy string src into dst of size n, cut to fit. */
void dt_copy(char *dst, size_t n, const char *src);

/* "HH:MM:SS.mmm" (UTC) of a wall-clock time in ms. */
void dt_fmt_time(uint64_t ms, char *out, size_t len);

/* An event or an alarm as JSON (new references). */
json_t *dt_event_json(const struct run *r, const struct event *e);
json_t *dt_alarm_json(const struct alarm *a);

/* One output of kind type: a JSON line (obj, stolen) with --json, else
 * text (may be NULL: nothing); every kind but "stats" also goes to
 * events.jsonl. */
void dt_emit(const struct run *r, const char *type, json_t *obj,
	     const char *text);

/* Rewrite state.json atomically (under the view's lock). */
void dt_write_state(struct run *r);

/* One probe's line in series.csv (rtt < 0: lost). */
void dt_csv_row(struct run *r, const struct target *t, uint64_t send_ms,
		double rtt);

/* Each target's last second (watch). */
void dt_stats_line(struct run *r);

/* Create the state dir, open series.csv, events.jsonl and the detector's
 * audit log. */
int dt_open_outputs(struct run *r, struct ferr *err);

/* Print the alarms of the state file in state_dir (JSON with json). */
int dt_alarms(const char *state_dir, bool json, struct ferr *err);

#endif
