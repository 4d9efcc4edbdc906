/* detect.h - ferry-detect: migrations seen from outside the hypervisor
 * (docs/detection.md).
 *
 * A target is a VM seen through one series: ICMP echo to its address
 * ("remote"), or the guest's own probes of a peer read from its console
 * ("local"). Each series feeds a struct det, which finds migration
 * signatures online:
 *   - rise:     a CUSUM on the log of the RTT's running median (5 probes)
 *               against a slow baseline: the pre-copy raises the RTT;
 *   - stall:    the VM answers nothing promptly for stall_ms (probes lost
 *               or late): QEMU's set-up and the stop-and-copy stop it;
 *   - pattern:  the pre-copy then the switchover (DET_SIG_PATTERN);
 *   - announce: a RARP self-announcement from the VM's MAC, or a
 *               gratuitous ARP for its address (QEMU and the guest announce
 *               the VM on the destination right after the switchover);
 *   - shift:    the baseline after an event differs from the one before (the
 *               path changed).
 * An event opens at the first signal and closes after quiet_ms without
 * one. Its confidence (see det_confidence) decides whether it is reported
 * as a migration; with require_announce (ferry-detect listening for
 * announcements) only an event with a RARP or GARP is.
 *
 * Everything here is pure: times are passed in (ms), nothing does I/O.
 */
#ifndef FERRY_DETECT_H
#define FERRY_DETECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DET_MEDIAN_N 5
#define DET_NAME_MAX 63

/* Signals, as bits of det_event.signals. */
enum det_signal {
	DET_SIG_RISE = 1u << 0,
	DET_SIG_STALL = 1u << 1,
	DET_SIG_RARP = 1u << 2,
	DET_SIG_GARP = 1u << 3,
	DET_SIG_PATTERN = 1u << 4, /* a short stop (at most max_stop_ms) that
				      follows a rise or QEMU's set-up stall
				      by >= precopy_ms: pre-copy, then the
				      switchover */
	DET_SIG_SHIFT = 1u << 5,
	DET_SIG_LONGSTOP = 1u << 6, /* a stop longer than max_stop_ms: a
				       pause, not a live switchover; no
				       pattern in this event */
};

struct det_params {
	unsigned interval_ms;  /* probe interval (default 50) */
	unsigned stall_ms;     /* no answer this long is a stall (150) */
	double cusum_k;        /* CUSUM slack, ln of the RTT ratio (ln 2) */
	double cusum_h;        /* CUSUM threshold (4) */
	double alpha;          /* baseline EWMA weight per probe (0.02) */
	unsigned warmup;       /* probes before detection starts (20) */
	unsigned quiet_ms;     /* an event ends after this long quiet (3000) */
	unsigned precopy_ms;   /* see DET_SIG_PATTERN (400) */
	double shift_ratio;    /* baseline change counted as a shift (1.5) */
	unsigned max_stop_ms;  /* longest stop taken for a switchover (1500) */
	double min_confidence; /* reported as a migration from this (0.5) */
	bool require_announce; /* only with a RARP or GARP (false) */
};

/* Defaults (the values in the comments above). */
void det_params_default(struct det_params *p);

/* One detected event. Times are in the caller's clock (ms); 0 = none. */
struct det_event {
	uint64_t start_ms;      /* first sign */
	uint64_t opened_ms;     /* when that sign was seen */
	uint64_t switchover_ms; /* the stop (stall start) or announce */
	uint64_t end_ms;        /* last sign */
	uint64_t detected_ms;   /* when the confidence reached the minimum */
	uint64_t switchover_known_ms; /* when switchover_ms was first set */
	unsigned signals;       /* enum det_signal bits */
	unsigned stalls;        /* stops seen (prompt answers between) */
	double confidence;
	double rtt_before_ms;   /* baseline before and after */
	double rtt_after_ms;
	double peak_ms;         /* highest RTT median in the event */
};

enum det_report {
	DET_REPORT_DETECTED, /* the confidence reached min_confidence */
	DET_REPORT_CLOSED,   /* the event ended (migration or not) */
};

typedef void (*det_cb)(const struct det_event *ev, enum det_report what,
		       void *arg);

struct det {
	struct det_params p;
	det_cb cb;
	void *cb_arg;
	/* series */
	uint64_t nsamples;
	double win[DET_MEDIAN_N]; /* last answered RTTs (ms) */
	unsigned nwin;
	double base;              /* baseline: EWMA of ln(median) */
	double cusum;
	uint64_t cusum_start_ms;  /* send time where cusum last left 0 */
	uint64_t last_answer_ms;  /* send time of the newest answered probe */
	uint64_t last_sent_ms;    /* newest probe sent */
	bool stalled;
	uint64_t stall_start_ms;
	uint64_t last_stall_start_ms;
	uint64_t last_stall_end_ms;   /* when the VM answered again */
	uint64_t prev_stall_start_ms; /* the stall before the current one */
	bool precopy_at_stall;    /* a pre-copy-like rise ended at the stall */
	bool rising;              /* cusum at or above its threshold */
	uint64_t rise_from_ms;    /* the current or last rise: start */
	uint64_t rise_to_ms;      /* and end (0 while it goes on) */
	uint64_t loss_run_ms;     /* first loss since the last prompt answer */
	uint64_t first_sign_ms;   /* of the current rise or first stall */
	/* current event */
	bool open;
	bool reported;
	uint64_t last_sign_ms;    /* quiet is measured from here */
	struct det_event ev;
};

/* Initialise d with params p (NULL: defaults) and a callback for events. */
void det_init(struct det *d, const struct det_params *p, det_cb cb,
	      void *arg);

/* A probe sent at send_ms was sent (call at send time). */
void det_sent(struct det *d, uint64_t send_ms);

/* The probe sent at send_ms came back after rtt_ms, or was lost
 * (rtt_ms < 0), known at now_ms. Probes may be reported out of order. */
void det_sample(struct det *d, uint64_t send_ms, double rtt_ms,
		uint64_t now_ms);

/* An announcement of this target (DET_SIG_RARP or DET_SIG_GARP) at_ms. */
void det_announce(struct det *d, unsigned kind, uint64_t at_ms);

/* Advance time: notice stalls and close quiet events. Call at least every
 * interval. */
void det_tick(struct det *d, uint64_t now_ms);

/* The confidence of a set of signals: RARP or GARP 0.6, the pre-copy
 * pattern 0.4, a stall 0.15, a rise 0.15, a shift 0.1; at most 1. */
double det_confidence(unsigned signals);

/* "rise,stall,..." for signals into out. */
void det_signals_str(unsigned signals, char *out, size_t len);

/* The baseline RTT (ms) of d, or 0 before warm-up. */
double det_baseline_ms(const struct det *d);

/* ---- frames (frame.c) ---- */

/* What an Ethernet frame announces: a RARP request ("reverse request",
 * QEMU's self-announce) or a gratuitous ARP (sender IP == target IP), or
 * an ARP reply binding an IPv4 address to a MAC. */
enum frame_kind { FRAME_OTHER, FRAME_RARP, FRAME_GARP, FRAME_ARP_REPLY };

struct frame_info {
	enum frame_kind kind;
	uint8_t mac[6];   /* the announced / replying MAC */
	uint32_t ip;      /* network order; 0 for RARP */
};

/* Parse len bytes of an Ethernet frame (hostile input; never reads past
 * len). FRAME_OTHER for anything else, including malformed frames. */
enum frame_kind frame_parse(const uint8_t *buf, size_t len,
			    struct frame_info *out);

#endif
