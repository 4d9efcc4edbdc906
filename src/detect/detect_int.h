/* detect_int.h - what the files of ferry-detect share (probe.c: sockets;
 * hosts.c: the API thread; run.c: the loop, events and alarms; main.c:
 * the command line). The pure parts are in detect.h. */
#ifndef FERRY_DETECT_INT_H
#define FERRY_DETECT_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cli.h"
#include "common.h"
#include "detect.h"

#define DT_TARGETS_MAX 64
#define DT_HOSTS_MAX CLI_HOSTS_MAX
#define DT_VMS_MAX 256        /* VMs known across all hosts */
#define DT_MIG_RECS_MAX 4096  /* migration.* records kept per host */
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
	volatile int stop;
	pthread_t thread;
	bool started;
};

/* Refresh view once now (VM lists, audit logs, local consoles). */
void api_refresh(struct dt_api *a);

/* Start / stop the thread refreshing every interval_ms. */
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
	struct det_params det;
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

/* Print the alarms of the state file in state_dir (JSON with json). */
int dt_alarms(const char *state_dir, bool json, struct ferr *err);

#endif
