/* signal.c - online migration signatures in one RTT series (detect.h). */
#include "detect.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define RTT_FLOOR_MS 0.05       /* below this the log is noise */
#define RISE_HOLD_MS 1000       /* a stop this soon after a rise ended
				   still ends a pre-copy */
#define FAST_ALPHA 0.2          /* the recent level, for shifts */
#define EVENT_MAX_MS 120000ULL  /* an event longer than this is closed */
#define ANNOUNCE_STALL_MS 500   /* a stop that ended this soon before an
				   announce (or goes on) is
				   its switchover */

void det_params_default(struct det_params *p)
{
	*p = (struct det_params){
		.interval_ms = 50,
		.stall_ms = 150,
		.cusum_k = 0.6931471805599453, /* ln 2 */
		.cusum_h = 4.0,
		.alpha = 0.02,
		.warmup = 20,
		.quiet_ms = 3000,
		.precopy_ms = 400,
		.shift_ratio = 1.5,
		.max_stop_ms = 1500,
		.min_confidence = 0.5,
	};
}

double det_confidence(unsigned s)
{
	double c = 0;

	if (s & (DET_SIG_RARP | DET_SIG_GARP))
		c += 0.6;
	if (s & DET_SIG_PATTERN)
		c += 0.4;
	if (s & DET_SIG_STALL)
		c += 0.15;
	if (s & DET_SIG_RISE)
		c += 0.15;
	if (s & DET_SIG_SHIFT)
		c += 0.1;
	return c > 1.0 ? 1.0 : c;
}

void det_signals_str(unsigned s, char *out, size_t len)
{
	static const char *const names[] = { "rise",    "stall", "rarp",
					     "garp",    "pattern", "shift",
					     "longstop" };
	size_t off = 0;

	if (len)
		out[0] = '\0';
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int n;

		if (!(s & (1u << i)))
			continue;
		n = snprintf(out + off, len > off ? len - off : 0, "%s%s",
			     off ? "," : "", names[i]);
		if (n < 0 || (size_t)n >= len - off)
			return;
		off += (size_t)n;
	}
}

void det_init(struct det *d, const struct det_params *p, det_cb cb, void *arg)
{
	memset(d, 0, sizeof(*d));
	if (p)
		d->p = *p;
	else
		det_params_default(&d->p);
	d->cb = cb;
	d->cb_arg = arg;
}

double det_baseline_ms(const struct det *d)
{
	return d->nsamples >= d->p.warmup ? exp(d->base) : 0;
}

static bool warm(const struct det *d)
{
	return d->nsamples >= d->p.warmup;
}

static void ensure_open(struct det *d, uint64_t at_ms, uint64_t now)
{
	if (d->open)
		return;
	memset(&d->ev, 0, sizeof(d->ev));
	d->open = true;
	d->reported = false;
	d->ev.start_ms = at_ms;
	d->ev.opened_ms = now;
	d->ev.rtt_before_ms = exp(d->base);
}

/* Add signals to the event (opening it at at_ms if needed) and report it
 * once its confidence reaches the minimum. */
static void sign(struct det *d, unsigned sig, uint64_t at_ms, uint64_t now)
{
	ensure_open(d, at_ms, now);
	if (at_ms && at_ms < d->ev.start_ms)
		d->ev.start_ms = at_ms;
	if (at_ms > d->ev.end_ms)
		d->ev.end_ms = at_ms;
	d->ev.signals |= sig;
	d->ev.confidence = det_confidence(d->ev.signals);
	d->last_sign_ms = now;
	if (!d->reported && d->ev.confidence >= d->p.min_confidence &&
	    (!d->p.require_announce ||
	     (d->ev.signals & (DET_SIG_RARP | DET_SIG_GARP)))) {
		d->reported = true;
		d->ev.detected_ms = now;
		if (d->cb)
			d->cb(&d->ev, DET_REPORT_DETECTED, d->cb_arg);
	}
}

static void set_switchover(struct det *d, uint64_t at_ms, uint64_t now)
{
	if (d->ev.switchover_ms != at_ms) {
		d->ev.switchover_ms = at_ms;
		d->ev.switchover_known_ms = now;
	}
}

static double median(const double *v, unsigned n)
{
	double s[DET_MEDIAN_N];

	memcpy(s, v, n * sizeof(*v));
	for (unsigned i = 1; i < n; i++)
		for (unsigned j = i; j > 0 && s[j - 1] > s[j]; j--) {
			double t = s[j];
			s[j] = s[j - 1];
			s[j - 1] = t;
		}
	return s[n / 2];
}

/* Did a rise of this event begin at least precopy_ms before t, and go on
 * until at least RISE_HOLD_MS before it (a pre-copy that ends at t)? */
static bool precopy_before(const struct det *d, uint64_t t)
{
	return d->open && d->rise_from_ms &&
	       d->rise_from_ms >= d->ev.start_ms &&
	       t >= d->rise_from_ms + d->p.precopy_ms &&
	       (!d->rise_to_ms || d->rise_to_ms + RISE_HOLD_MS >= t);
}

/* A probe lost while the RTT has been up for precopy_ms: the switchover
 * of a migration whose stop is too short for a stall (or seen from inside
 * the guest, whose clock stops with it: only the probe in flight is lost). */
static void lost_in_rise(struct det *d, uint64_t send_ms, uint64_t now)
{
	/* losses are known a timeout late: was the RTT up when it was sent,
	 * since well before the losses began? */
	if (!d->loss_run_ms || send_ms < d->loss_run_ms)
		d->loss_run_ms = send_ms;
	if (!warm(d) || !precopy_before(d, d->loss_run_ms) ||
	    (d->ev.signals & (DET_SIG_LONGSTOP | DET_SIG_PATTERN)) ||
	    d->ev.stalls > 2)
		return;
	if (!(d->ev.signals & (DET_SIG_RARP | DET_SIG_GARP)))
		set_switchover(d, send_ms, now);
	sign(d, DET_SIG_PATTERN, send_ms, now);
}

void det_sent(struct det *d, uint64_t send_ms)
{
	if (send_ms > d->last_sent_ms)
		d->last_sent_ms = send_ms;
	if (!d->last_answer_ms)
		d->last_answer_ms = send_ms; /* nothing to wait for before */
}

/* The VM answers promptly again. A short stop after QEMU's set-up stop or
 * after a rise that began well before it is the pre-copy's end: the
 * switchover. A long one is a pause, not a live migration. */
static void stall_end(struct det *d, uint64_t now)
{
	uint64_t st = d->stall_start_ms, prev = d->prev_stall_start_ms;

	d->stalled = false;
	d->last_stall_end_ms = now;
	if (!d->open || (d->ev.signals & DET_SIG_LONGSTOP))
		return;
	if (now - st > d->p.max_stop_ms) {
		d->ev.signals |= DET_SIG_LONGSTOP;
		return;
	}
	if (d->ev.stalls <= 2 &&
	    ((prev && st >= prev + d->p.precopy_ms) || d->precopy_at_stall))
		sign(d, DET_SIG_PATTERN, st, now);
}

void det_sample(struct det *d, uint64_t send_ms, double rtt_ms, uint64_t now)
{
	double v, med, x;

	if (rtt_ms >= 0) {
		/* only a prompt answer shows the VM responsive: the late
		 * answers of probes queued during a stop do not */
		if (rtt_ms < d->p.stall_ms && send_ms > d->last_answer_ms) {
			d->last_answer_ms = send_ms;
			d->loss_run_ms = 0;
		}
		if (d->stalled && rtt_ms < d->p.stall_ms &&
		    send_ms >= d->stall_start_ms)
			stall_end(d, now);
		v = rtt_ms;
	} else {
		/* losses are stalls' business: the level is the answers' */
		lost_in_rise(d, send_ms, now);
		d->nsamples++;
		return;
	}
	d->win[d->nwin++ % DET_MEDIAN_N] = v;
	med = median(d->win, d->nwin < DET_MEDIAN_N ? d->nwin : DET_MEDIAN_N);
	x = log(med > RTT_FLOOR_MS ? med : RTT_FLOOR_MS);
	d->nsamples++;
	if (!warm(d)) {
		/* the mean of the first probes, of answered ones only */
		if (rtt_ms >= 0)
			d->base += (x - d->base) / (double)d->nsamples;
		d->cusum = 0;
		return;
	}
	if (d->open && med > d->ev.peak_ms)
		d->ev.peak_ms = med;
	if (d->cusum == 0 && x - d->base > d->p.cusum_k)
		d->cusum_start_ms = send_ms;
	d->cusum += x - d->base - d->p.cusum_k;
	if (d->cusum <= 0) {
		d->cusum = 0;
		if (!d->stalled && !d->open)
			d->base += d->p.alpha * (x - d->base);
	}
	if (d->cusum > 2 * d->p.cusum_h)
		d->cusum = 2 * d->p.cusum_h;
	if (d->cusum >= d->p.cusum_h && !d->rising) {
		d->rising = true;
		d->rise_from_ms = d->cusum_start_ms;
		d->rise_to_ms = 0;
	} else if (d->cusum < d->p.cusum_h && d->rising) {
		d->rising = false;
		d->rise_to_ms = send_ms;
	}
	if (d->cusum >= d->p.cusum_h) {
		/* a rise extends the event only until the switchover: after
		 * it the new path may keep the RTT up */
		unsigned after = DET_SIG_PATTERN | DET_SIG_RARP | DET_SIG_GARP;

		if (!d->open || !(d->ev.signals & DET_SIG_RISE))
			sign(d, DET_SIG_RISE, d->cusum_start_ms, now);
		else if (!(d->ev.signals & after))
			d->last_sign_ms = now;
	}
}

void det_announce(struct det *d, unsigned kind, uint64_t at_ms)
{
	bool first = !d->open || !(d->ev.signals & (DET_SIG_RARP | DET_SIG_GARP));
	/* the VM announces itself right after it resumes on the destination:
	 * the switchover is the stop still going on (remote probes are
	 * answered again once the switches learned the new port) or just
	 * ended; an older one was QEMU's set-up. Else the announce itself */
	bool stop = d->stalled ||
		    (d->last_stall_end_ms && d->last_stall_end_ms <= at_ms &&
		     at_ms - d->last_stall_end_ms <= ANNOUNCE_STALL_MS);

	ensure_open(d, at_ms, at_ms);
	if (first)
		set_switchover(d, stop ? d->last_stall_start_ms : at_ms, at_ms);
	sign(d, kind & (DET_SIG_RARP | DET_SIG_GARP), at_ms, at_ms);
}

/* The event ended: report it and start from a fresh baseline. */
static void close_event(struct det *d, uint64_t now)
{
	double level = log(median(d->win, d->nwin < DET_MEDIAN_N
						   ? d->nwin
						   : DET_MEDIAN_N));

	if (d->ev.signals & DET_SIG_STALL) {
		double ratio = exp(level) / d->ev.rtt_before_ms;

		if (ratio > d->p.shift_ratio || ratio < 1.0 / d->p.shift_ratio)
			d->ev.signals |= DET_SIG_SHIFT;
		d->ev.confidence = det_confidence(d->ev.signals);
	}
	if (d->cusum > 0) { /* a new level: take it as the baseline */
		d->base = level;
		d->cusum = 0;
	}
	d->rising = false;
	d->rise_from_ms = d->rise_to_ms = 0;
	d->ev.rtt_after_ms = exp(d->base);
	d->open = false;
	if (d->cb)
		d->cb(&d->ev, DET_REPORT_CLOSED, d->cb_arg);
	(void)now;
}

void det_tick(struct det *d, uint64_t now)
{
	uint64_t first_unanswered = d->last_answer_ms + d->p.interval_ms;

	if (warm(d) && !d->stalled && d->last_answer_ms &&
	    d->last_sent_ms >= first_unanswered + 2 * d->p.interval_ms &&
	    now >= first_unanswered + d->p.stall_ms) {
		d->prev_stall_start_ms = d->open && (d->ev.signals &
						     DET_SIG_STALL)
						 ? d->last_stall_start_ms
						 : 0;
		d->precopy_at_stall = precopy_before(d, first_unanswered);
		d->stalled = true;
		d->stall_start_ms = first_unanswered;
		ensure_open(d, first_unanswered, now);
		d->ev.stalls++;
		d->last_stall_start_ms = first_unanswered;
		/* the last stop before any announce is the switchover */
		if (!(d->ev.signals & (DET_SIG_RARP | DET_SIG_GARP)))
			set_switchover(d, first_unanswered, now);
		sign(d, DET_SIG_STALL, first_unanswered, now);
	}
	if (d->stalled) {
		d->last_sign_ms = now;
		if (d->open && now - d->stall_start_ms > d->p.max_stop_ms)
			d->ev.signals |= DET_SIG_LONGSTOP;
	}
	if (d->open && (now >= d->last_sign_ms + d->p.quiet_ms ||
			now >= d->ev.start_ms + EVENT_MAX_MS))
		close_event(d, now);
}
