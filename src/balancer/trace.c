/* trace.c - CSV load traces: strict reading (the file is hostile input:
 * bounded lines, counts and values, errors with line numbers), writing,
 * and synthetic generation (docs/balancer.md, "Trace format"). */
#define _GNU_SOURCE
#include "bal_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEADER4 "interval,vm,cpu,mem_mib"
#define HEADER5 "interval,vm,cpu,mem_mib,dirty_mibps"
#define FIELDS_MAX 5
#define INTERVALS_PER_DAY 288.0   /* 5-minute intervals */
#define PI 3.14159265358979323846
#define NAMES_MIN_SLOTS 64

/* Synthetic traces (docs/balancer.md, "Synthetic traces"). */
#define GEN_MEM_CHOICES 4
static const uint32_t gen_mem_mib[GEN_MEM_CHOICES] = { 1024, 2048, 4096,
							8192 };
#define DIURNAL_BASE_MIN 0.6      /* cores */
#define DIURNAL_BASE_MAX 3.8
#define DIURNAL_AMP_MIN 0.2       /* share of the base */
#define DIURNAL_AMP_MAX 0.8
#define DIURNAL_NOISE 0.05        /* share of the base */
#define BURSTY_BASE_MIN 0.4
#define BURSTY_BASE_MAX 2.8
#define BURSTY_START_P 0.03       /* chance a burst starts, per interval */
#define BURSTY_LEN_MIN 2          /* intervals */
#define BURSTY_LEN_MAX 12
#define BURSTY_HEIGHT_MIN 1.2     /* extra cores */
#define BURSTY_HEIGHT_MAX 5.0
#define BURSTY_NOISE 0.10
#define STEADY_BASE_MIN 0.6
#define STEADY_BASE_MAX 3.8
#define STEADY_NOISE 0.05
#define GEN_DIRTY_NOISE 4.0       /* MiB/s */

/* ---- a small name -> VM index table ---- */

struct names {
	size_t *slot; /* index + 1 */
	size_t cap;
};

static uint64_t hash_name(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static size_t names_find(const struct names *nt, const struct bal_trace *t,
			 const char *name)
{
	size_t mask = nt->cap - 1;

	if (!nt->cap)
		return BAL_NONE;
	for (size_t i = (size_t)hash_name(name) & mask; nt->slot[i];
	     i = (i + 1) & mask)
		if (!strcmp(t->names[nt->slot[i] - 1], name))
			return nt->slot[i] - 1;
	return BAL_NONE;
}

/* Index VM e (t->nvms counts it already), growing the table. */
static int names_add(struct names *nt, const struct bal_trace *t, size_t e)
{
	size_t mask;

	if (nt->cap / 2 < t->nvms) {
		size_t cap = nt->cap ? nt->cap * 2 : NAMES_MIN_SLOTS;
		size_t *s = calloc(cap, sizeof(*s));

		if (!s)
			return -1;
		free(nt->slot);
		nt->slot = s;
		nt->cap = cap;
		for (size_t i = 0; i < t->nvms; i++) {
			size_t j = (size_t)hash_name(t->names[i]) & (cap - 1);

			while (s[j])
				j = (j + 1) & (cap - 1);
			s[j] = i + 1;
		}
		return 0;
	}
	mask = nt->cap - 1;
	for (size_t i = (size_t)hash_name(t->names[e]) & mask;;
	     i = (i + 1) & mask) {
		if (!nt->slot[i]) {
			nt->slot[i] = e + 1;
			return 0;
		}
	}
}

/* ---- reading ---- */

struct reader {
	FILE *f;
	const char *origin;
	unsigned long line;
	char buf[BAL_TRACE_LINE_MAX + 1];
	struct bal_trace *t;
	struct names nt;
	size_t cap_vms;       /* names[] slots */
	size_t cap_cells;     /* cpu[], mem_mib[], dirty[] slots */
	bool dirty;           /* the header has dirty_mibps */
	bool *seen;           /* per VM, in the current interval */
	size_t count;         /* VMs seen in the current interval */
	uint64_t interval;    /* the current interval */
};

static int rerr(struct reader *r, struct ferr *err, enum ferr_code code,
		const char *why)
{
	return ferr_set(err, code, "%s:%lu: %s", r->origin, r->line, why);
}

/* Next line into r->buf without its LF (and one CR before it). 1 for a
 * line, 0 at the end of the file, -1 on an error. */
static int read_line(struct reader *r, struct ferr *err)
{
	size_t n = 0;
	int ch;

	ch = getc(r->f);
	if (ch == EOF) {
		if (ferror(r->f))
			return ferr_set(err, FERR_IO, "%s: read error: %s",
					r->origin, strerror(errno));
		return 0;
	}
	r->line++;
	for (; ch != EOF && ch != '\n'; ch = getc(r->f)) {
		if (ch == '\0')
			return rerr(r, err, FERR_INVALID, "NUL byte");
		if (n >= BAL_TRACE_LINE_MAX)
			return ferr_set(err, FERR_INVALID,
					"%s:%lu: line longer than %d bytes",
					r->origin, r->line,
					BAL_TRACE_LINE_MAX);
		r->buf[n++] = (char)ch;
	}
	if (ch == EOF && ferror(r->f))
		return ferr_set(err, FERR_IO, "%s: read error: %s", r->origin,
				strerror(errno));
	if (n > 0 && r->buf[n - 1] == '\r')
		n--;
	r->buf[n] = '\0';
	return 1;
}

/* Split r->buf at commas into at most FIELDS_MAX fields; the count. */
static size_t split(char *s, char **f)
{
	size_t n = 0;

	f[n++] = s;
	for (; *s; s++) {
		if (*s != ',')
			continue;
		if (n == FIELDS_MAX)
			return FIELDS_MAX + 1;
		*s = '\0';
		f[n++] = s + 1;
	}
	return n;
}

/* Resize the cell arrays (cpu, mem_mib, dirty) to cap cells; on failure
 * the arrays keep their old size (and stay owned by t). */
static int realloc_cells(struct reader *r, size_t cap, struct ferr *err)
{
	struct bal_trace *t = r->t;
	void *a;

	a = realloc(t->cpu, cap * sizeof(*t->cpu));
	if (!a)
		goto oom;
	t->cpu = a;
	a = realloc(t->mem_mib, cap * sizeof(*t->mem_mib));
	if (!a)
		goto oom;
	t->mem_mib = a;
	if (r->dirty) {
		a = realloc(t->dirty, cap * sizeof(*t->dirty));
		if (!a)
			goto oom;
		t->dirty = a;
	}
	r->cap_cells = cap;
	return 0;
oom:
	return ferr_set(err, FERR_INTERNAL, "out of memory");
}

/* Make room for the cells of one more interval. */
static int grow_cells(struct reader *r, struct ferr *err)
{
	struct bal_trace *t = r->t;
	uint64_t need;
	size_t cap;

	if (!mul_u64(t->nintervals + 1, t->nvms, &need) ||
	    need > BAL_TRACE_CELLS_MAX)
		return ferr_set(err, FERR_TOO_LARGE,
				"%s:%lu: more than %llu VM-intervals",
				r->origin, r->line, BAL_TRACE_CELLS_MAX);
	if (need <= r->cap_cells)
		return 0;
	cap = r->cap_cells ? r->cap_cells : t->nvms;
	while (cap < need)
		cap = cap > BAL_TRACE_CELLS_MAX / 2 ? BAL_TRACE_CELLS_MAX
						     : cap * 2;
	return realloc_cells(r, cap, err);
}

/* The current interval is complete: every VM of interval 0 once. */
static int close_interval(struct reader *r, struct ferr *err)
{
	struct bal_trace *t = r->t;
	char why[FERRY_ERR_MSG_MAX];

	if (t->nvms == 0)
		return rerr(r, err, FERR_INVALID,
			    "interval 0 has no rows (a trace starts at "
			    "interval 0)");
	if (r->count != t->nvms) {
		size_t miss = 0;

		while (miss < t->nvms && r->seen[miss])
			miss++;
		snprintf(why, sizeof(why),
			 "interval %llu has %zu of %zu VMs (missing: %s)",
			 (unsigned long long)r->interval, r->count, t->nvms,
			 miss < t->nvms ? t->names[miss] : "?");
		return rerr(r, err, FERR_INVALID, why);
	}
	t->nintervals++;
	memset(r->seen, 0, t->nvms * sizeof(*r->seen));
	r->count = 0;
	return 0;
}

/* Interval 0 defines the VMs: add one. */
static int add_vm(struct reader *r, const char *name, struct ferr *err)
{
	struct bal_trace *t = r->t;
	void *a;

	if (t->nvms >= BAL_TRACE_VMS_MAX)
		return ferr_set(err, FERR_TOO_LARGE,
				"%s:%lu: more than %d VMs", r->origin, r->line,
				BAL_TRACE_VMS_MAX);
	if (t->nvms == r->cap_vms) {
		size_t cap = r->cap_vms ? r->cap_vms * 2 : NAMES_MIN_SLOTS;

		a = realloc(t->names, cap * sizeof(*t->names));
		if (!a)
			goto oom;
		t->names = a;
		a = realloc(r->seen, cap * sizeof(*r->seen));
		if (!a)
			goto oom;
		r->seen = a;
		if (realloc_cells(r, cap, err) < 0)
			return -1;
		r->cap_vms = cap;
	}
	snprintf(t->names[t->nvms], sizeof(t->names[0]), "%s", name);
	r->seen[t->nvms] = false;
	t->nvms++;
	if (names_add(&r->nt, t, t->nvms - 1) < 0)
		goto oom;
	return 0;
oom:
	return ferr_set(err, FERR_INTERNAL, "out of memory");
}

/* One data row. */
static int parse_row(struct reader *r, struct ferr *err)
{
	struct bal_trace *t = r->t;
	char *f[FIELDS_MAX + 1];
	char why[FERRY_ERR_MSG_MAX];
	size_t nf = split(r->buf, f), want = r->dirty ? 5 : 4, vm;
	uint64_t interval, mem;
	double cpu, dirty = 0;
	size_t cell;

	if (nf != want) {
		snprintf(why, sizeof(why), "%s fields, the header has %zu",
			 nf > FIELDS_MAX ? "too many" : "wrong number of",
			 want);
		return rerr(r, err, FERR_INVALID, why);
	}
	if (parse_u64(f[0], 0, BAL_TRACE_INTERVALS_MAX - 1, &interval) < 0)
		return rerr(r, err, FERR_INVALID,
			    "interval: not an integer in range");
	if (!name_is_valid(f[1]))
		return rerr(r, err, FERR_INVALID,
			    "vm: not a valid name ([a-z0-9][a-z0-9._-]*, at "
			    "most 63)");
	if (bal_parse_decimal(f[2], BAL_VM_CPU_MAX, &cpu) < 0) {
		snprintf(why, sizeof(why),
			 "cpu: not a decimal number of cores between 0 and %g",
			 BAL_VM_CPU_MAX);
		return rerr(r, err, FERR_INVALID, why);
	}
	if (parse_u64(f[3], FERRY_VM_MEM_MIN_MIB, FERRY_VM_MEM_MAX_MIB, &mem) <
	    0) {
		snprintf(why, sizeof(why),
			 "mem_mib: not an integer between %llu and %llu",
			 FERRY_VM_MEM_MIN_MIB, FERRY_VM_MEM_MAX_MIB);
		return rerr(r, err, FERR_INVALID, why);
	}
	if (r->dirty && bal_parse_decimal(f[4], BAL_DIRTY_MAX_MIBPS, &dirty) <
				0) {
		snprintf(why, sizeof(why),
			 "dirty_mibps: not a decimal number between 0 and %g",
			 BAL_DIRTY_MAX_MIBPS);
		return rerr(r, err, FERR_INVALID, why);
	}
	if (interval < r->interval) {
		snprintf(why, sizeof(why),
			 "interval %llu after interval %llu (rows must be in "
			 "interval order)",
			 (unsigned long long)interval,
			 (unsigned long long)r->interval);
		return rerr(r, err, FERR_INVALID, why);
	}
	if (interval > r->interval + 1) {
		snprintf(why, sizeof(why), "interval %llu skips interval %llu",
			 (unsigned long long)interval,
			 (unsigned long long)r->interval + 1);
		return rerr(r, err, FERR_INVALID, why);
	}
	if (interval == r->interval + 1) {
		if (close_interval(r, err) < 0)
			return -1;
		r->interval = interval;
		if (grow_cells(r, err) < 0)
			return -1;
	}
	vm = names_find(&r->nt, t, f[1]);
	if (vm == BAL_NONE) {
		if (interval != 0) {
			snprintf(why, sizeof(why),
				 "vm %s is not in interval 0", f[1]);
			return rerr(r, err, FERR_INVALID, why);
		}
		if (add_vm(r, f[1], err) < 0)
			return -1;
		vm = t->nvms - 1;
	}
	if (r->seen[vm]) {
		snprintf(why, sizeof(why), "vm %s listed twice in interval %llu",
			 f[1], (unsigned long long)interval);
		return rerr(r, err, FERR_INVALID, why);
	}
	r->seen[vm] = true;
	r->count++;
	cell = (size_t)interval * t->nvms + vm;
	t->cpu[cell] = (float)cpu;
	t->mem_mib[cell] = (uint32_t)mem;
	if (r->dirty)
		t->dirty[cell] = (float)dirty;
	return 0;
}

int bal_trace_read(FILE *f, const char *origin, struct bal_trace *t,
		   struct ferr *err)
{
	struct reader *r = calloc(1, sizeof(*r));
	int rc = -1, got;

	memset(t, 0, sizeof(*t));
	if (!r)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	r->f = f;
	r->origin = origin;
	r->t = t;
	got = read_line(r, err);
	if (got < 0)
		goto out;
	if (got == 0) {
		ferr_set(err, FERR_INVALID, "%s: empty file (no header)",
			 origin);
		goto out;
	}
	if (!strcmp(r->buf, HEADER5)) {
		r->dirty = true;
	} else if (strcmp(r->buf, HEADER4) != 0) {
		rerr(r, err, FERR_INVALID,
		     "header must be \"" HEADER4 "\" or \"" HEADER5 "\"");
		goto out;
	}
	while ((got = read_line(r, err)) > 0)
		if (parse_row(r, err) < 0)
			goto out;
	if (got < 0)
		goto out;
	if (t->nvms == 0) {
		rerr(r, err, FERR_INVALID, "no data rows");
		goto out;
	}
	if (close_interval(r, err) < 0)
		goto out;
	rc = 0;
out:
	free(r->nt.slot);
	free(r->seen);
	free(r);
	if (rc < 0)
		bal_trace_free(t);
	return rc;
}

int bal_trace_load(const char *path, struct bal_trace *t, struct ferr *err)
{
	FILE *f = fopen(path, "r");
	int rc;

	if (!f) {
		memset(t, 0, sizeof(*t));
		return ferr_set(err, FERR_IO, "%s: %s", path, strerror(errno));
	}
	rc = bal_trace_read(f, path, t, err);
	fclose(f);
	return rc;
}

int bal_trace_write(FILE *f, const struct bal_trace *t, struct ferr *err)
{
	fprintf(f, "%s\n", t->dirty ? HEADER5 : HEADER4);
	for (size_t i = 0; i < t->nintervals; i++) {
		for (size_t v = 0; v < t->nvms; v++) {
			size_t cell = i * t->nvms + v;

			fprintf(f, "%zu,%s,%.4f,%u", i, t->names[v],
				(double)t->cpu[cell], t->mem_mib[cell]);
			if (t->dirty)
				fprintf(f, ",%.3f", (double)t->dirty[cell]);
			fputc('\n', f);
		}
	}
	if (fflush(f) != 0 || ferror(f))
		return ferr_set(err, FERR_IO, "writing the trace: %s",
				strerror(errno));
	return 0;
}

void bal_trace_free(struct bal_trace *t)
{
	free(t->names);
	free(t->cpu);
	free(t->mem_mib);
	free(t->dirty);
	memset(t, 0, sizeof(*t));
}

int bal_trace_kind_parse(const char *s, enum bal_trace_kind *kind)
{
	static const char *const names[] = { "diurnal", "bursty", "steady" };

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcmp(s, names[i])) {
			*kind = (enum bal_trace_kind)i;
			return 0;
		}
	}
	return -1;
}

/* ---- generation ---- */

/* Per-VM state of a generator. */
struct gen_vm {
	double base, amp, phase;
	unsigned burst_left;
	double burst;
};

static double clamp_cpu(double v)
{
	if (v < 0)
		return 0;
	return v > BAL_VM_CPU_MAX ? BAL_VM_CPU_MAX : v;
}

static double gen_cpu(enum bal_trace_kind kind, struct gen_vm *g,
		      struct bal_rng *rng, size_t interval)
{
	double noise;

	switch (kind) {
	case BAL_TRACE_DIURNAL:
		noise = bal_rng_range(rng, -DIURNAL_NOISE, DIURNAL_NOISE);
		return g->base *
		       (1 + g->amp * sin(2 * PI * (double)interval /
						 INTERVALS_PER_DAY +
					 g->phase) +
			noise);
	case BAL_TRACE_BURSTY:
		if (g->burst_left == 0 &&
		    bal_rng_unit(rng) < BURSTY_START_P) {
			g->burst_left = BURSTY_LEN_MIN +
					(unsigned)(bal_rng_next(rng) %
						   (BURSTY_LEN_MAX -
						    BURSTY_LEN_MIN + 1));
			g->burst = bal_rng_range(rng, BURSTY_HEIGHT_MIN,
						 BURSTY_HEIGHT_MAX);
		}
		noise = bal_rng_range(rng, -BURSTY_NOISE, BURSTY_NOISE);
		if (g->burst_left == 0)
			return g->base * (1 + noise);
		g->burst_left--;
		return g->base * (1 + noise) + g->burst;
	case BAL_TRACE_STEADY:
		noise = bal_rng_range(rng, -STEADY_NOISE, STEADY_NOISE);
		return g->base * (1 + noise);
	}
	return 0;
}

int bal_trace_generate(enum bal_trace_kind kind, size_t nvms,
		       size_t nintervals, uint64_t seed, struct bal_trace *t,
		       struct ferr *err)
{
	struct bal_rng rng = { seed * 0x2545f4914f6cdd1dULL + (uint64_t)kind };
	struct gen_vm *g = NULL;
	uint64_t cells;
	int rc = -1;

	memset(t, 0, sizeof(*t));
	if (nvms == 0 || nvms > BAL_TRACE_VMS_MAX || nintervals == 0 ||
	    nintervals > BAL_TRACE_INTERVALS_MAX ||
	    !mul_u64(nvms, nintervals, &cells) || cells > BAL_TRACE_CELLS_MAX)
		return ferr_set(err, FERR_INVALID,
				"trace size: 1..%d VMs, 1..%d intervals, at "
				"most %llu VM-intervals",
				BAL_TRACE_VMS_MAX, BAL_TRACE_INTERVALS_MAX,
				BAL_TRACE_CELLS_MAX);
	t->names = calloc(nvms, sizeof(*t->names));
	t->cpu = calloc(cells, sizeof(*t->cpu));
	t->mem_mib = calloc(cells, sizeof(*t->mem_mib));
	t->dirty = calloc(cells, sizeof(*t->dirty));
	g = calloc(nvms, sizeof(*g));
	if (!t->names || !t->cpu || !t->mem_mib || !t->dirty || !g) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		goto out;
	}
	t->nvms = nvms;
	t->nintervals = nintervals;
	for (size_t v = 0; v < nvms; v++) {
		uint32_t mem = gen_mem_mib[bal_rng_next(&rng) % GEN_MEM_CHOICES];

		snprintf(t->names[v], sizeof(t->names[v]), "vm-%04zu", v);
		switch (kind) {
		case BAL_TRACE_DIURNAL:
			g[v].base = bal_rng_range(&rng, DIURNAL_BASE_MIN,
						  DIURNAL_BASE_MAX);
			g[v].amp = bal_rng_range(&rng, DIURNAL_AMP_MIN,
						 DIURNAL_AMP_MAX);
			g[v].phase = bal_rng_range(&rng, 0, 2 * PI);
			break;
		case BAL_TRACE_BURSTY:
			g[v].base = bal_rng_range(&rng, BURSTY_BASE_MIN,
						  BURSTY_BASE_MAX);
			break;
		case BAL_TRACE_STEADY:
			g[v].base = bal_rng_range(&rng, STEADY_BASE_MIN,
						  STEADY_BASE_MAX);
			break;
		}
		for (size_t i = 0; i < nintervals; i++)
			t->mem_mib[i * nvms + v] = mem;
	}
	for (size_t i = 0; i < nintervals; i++) {
		for (size_t v = 0; v < nvms; v++) {
			size_t cell = i * nvms + v;
			double cpu = clamp_cpu(gen_cpu(kind, &g[v], &rng, i));
			double dirty = cpu * BAL_DIRTY_PER_CORE_MIBPS +
				       bal_rng_range(&rng, 0, GEN_DIRTY_NOISE);

			/* what the CSV keeps, so a written trace reads back
			 * the same */
			t->cpu[cell] = (float)(round(cpu * 1e4) / 1e4);
			t->dirty[cell] = (float)(round(dirty * 1e3) / 1e3);
		}
	}
	rc = 0;
out:
	free(g);
	if (rc < 0)
		bal_trace_free(t);
	return rc;
}
