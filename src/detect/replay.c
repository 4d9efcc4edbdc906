/* replay.c - `ferry-detect replay`: run the detector over a recorded
 * series.csv (ICMP signals only), to tune its parameters offline. */
#define _GNU_SOURCE
#include "detect_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct row {
	uint64_t t;
	double rtt; /* < 0 lost */
};

static int by_time(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	return x->t < y->t ? -1 : x->t > y->t;
}

static void print_ev(const struct det_event *ev, enum det_report what,
		     void *arg)
{
	char sig[96];

	(void)arg;
	det_signals_str(ev->signals, sig, sizeof(sig));
	printf("{\"type\":\"%s\",\"start_ms\":%llu,\"switchover_ms\":%llu,"
	       "\"end_ms\":%llu,\"detected_ms\":%llu,"
	       "\"switchover_known_ms\":%llu,\"signals\":\"%s\","
	       "\"confidence\":%.2f,\"stalls\":%u}\n",
	       what == DET_REPORT_DETECTED ? "detected" : "closed",
	       (unsigned long long)ev->start_ms,
	       (unsigned long long)ev->switchover_ms,
	       (unsigned long long)ev->end_ms,
	       (unsigned long long)ev->detected_ms,
	       (unsigned long long)ev->switchover_known_ms, sig,
	       ev->confidence, ev->stalls);
}

int dt_replay(const char *csv, const char *target, const char *source,
	      const struct det_params *p, unsigned timeout_ms,
	      struct ferr *err)
{
	FILE *f = fopen(csv, "r");
	struct row *rows = NULL;
	size_t n = 0, cap = 0;
	char line[512];
	struct det d;

	if (!f)
		return ferr_set(err, FERR_NOT_FOUND, "cannot open %s", csv);
	while (fgets(line, sizeof(line), f)) {
		char tgt[64], src[16], vm[80];
		unsigned long long t;
		double rtt;
		int lost;

		if (sscanf(line, "%llu,%63[^,],%15[^,],%79[^,],%lf,%d", &t, tgt,
			   src, vm, &rtt, &lost) != 6 &&
		    sscanf(line, "%llu,%63[^,],%15[^,],,%lf,%d", &t, tgt, src,
			   &rtt, &lost) != 5)
			continue;
		if ((target && strcmp(tgt, target)) || strcmp(src, source))
			continue;
		if (n == cap) {
			struct row *nr;

			cap = cap ? cap * 2 : 4096;
			nr = realloc(rows, cap * sizeof(*rows));
			if (!nr) {
				free(rows);
				fclose(f);
				return ferr_set(err, FERR_INTERNAL,
						"out of memory");
			}
			rows = nr;
		}
		rows[n++] = (struct row){ t, lost ? -1 : rtt };
	}
	fclose(f);
	if (n > 0)
		qsort(rows, n, sizeof(*rows), by_time);
	det_init(&d, p, print_ev, NULL);
	/* replay in time order: sends, answers and losses as they happened */
	for (size_t i = 0, done = 0; i < n; i++) {
		uint64_t t = rows[i].t;

		det_sent(&d, t);
		/* answers of earlier probes that came back before t */
		while (done < i) {
			uint64_t at = rows[done].t +
				      (rows[done].rtt < 0
					       ? timeout_ms
					       : (uint64_t)rows[done].rtt);

			if (at > t)
				break;
			det_tick(&d, at);
			det_sample(&d, rows[done].t, rows[done].rtt, at);
			done++;
		}
		for (uint64_t u = i ? rows[i - 1].t : t; u < t; u += 10)
			det_tick(&d, u);
		if (i + 1 == n)
			for (; done < n; done++)
				det_sample(&d, rows[done].t, rows[done].rtt,
					   t + timeout_ms);
	}
	det_tick(&d, n ? rows[n - 1].t + 600000 : 0);
	free(rows);
	return 0;
}
