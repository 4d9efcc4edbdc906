/* load.c - CPU sampling of the host and of every VM's QEMU, and the
 * draining flag. */
#define _GNU_SOURCE
#include "load.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROC_STAT_MAX 4096
#define MEMINFO_MAX (64 * 1024)

/* CPU use of one QEMU process. */
struct track {
	pid_t pid;
	uint64_t ticks;   /* utime + stime at the last sample */
	double cores;     /* smoothed cores in use */
	bool measured;    /* cores holds at least one interval */
	bool seen;        /* sampled in the current round */
	double dirty_mibps; /* the last dirty-rate measurement */
	bool dirty_known;   /* dirty_mibps holds one */
	bool dirty_pending; /* a calc-dirty-rate was started */
	bool dirty_busy;    /* a round runs on a worker thread */
};

struct load {
	const struct ferryd_config *cfg;
	struct vmm *vmm;
	struct event *timer;
	char flag_path[FERRY_PATH_MAX];
	bool draining;
	uint64_t last_ms;
	uint64_t dirty_ms; /* the last round of dirty-rate measurements */
	uint64_t host_busy, host_total; /* /proc/stat at the last sample */
	double host_util;
	long hz;
	struct track tracks[LOAD_TRACKED_MAX];
	unsigned ntracks;
};

/* utime + stime of pid in clock ticks; -1 when it is gone. */
static int proc_ticks(pid_t pid, uint64_t *ticks)
{
	char path[64], *text = NULL, *p;
	unsigned long long ut = 0, st = 0;
	size_t len = 0;
	struct ferr err;
	int rc = -1;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (file_read_all(path, PROC_STAT_MAX, &text, &len, &err) < 0)
		return -1;
	/* fields after the command name, which ends at the last ')' */
	p = strrchr(text, ')');
	if (p && sscanf(p + 2,
			"%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu "
			"%llu",
			&ut, &st) == 2) {
		*ticks = ut + st;
		rc = 0;
	}
	free(text);
	return rc;
}

/* Busy and total jiffies of the whole machine from /proc/stat. */
static int host_ticks(uint64_t *busy, uint64_t *total)
{
	unsigned long long v[8] = { 0 };
	char *text = NULL;
	size_t len = 0;
	struct ferr err;
	int n;

	if (file_read_all("/proc/stat", MEMINFO_MAX, &text, &len, &err) < 0)
		return -1;
	n = sscanf(text, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
		   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
	free(text);
	if (n < 5)
		return -1;
	*total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
	*busy = *total - v[3] - v[4]; /* minus idle and iowait */
	return 0;
}

static struct track *track_of(struct load *l, pid_t pid)
{
	for (unsigned i = 0; i < l->ntracks; i++)
		if (l->tracks[i].pid == pid)
			return &l->tracks[i];
	return NULL;
}

/* One dirty-rate round of one QEMU, on a worker thread. */
struct dirty_job {
	struct load *l;
	pid_t pid;
	bool was_pending;   /* a calc-dirty-rate was started last round */
	bool measured;      /* out: rate holds a measurement */
	double rate;
	bool pending;       /* out: the next measurement was started */
};

/* Collect the measurement the QEMU made since the last round (QMP
 * query-dirty-rate; an answer that is not a sane number is ignored), then
 * start the next one. Failures only leave the figure unknown. */
static int dirty_work(struct qmp *q, void *arg, struct ferr *err)
{
	struct dirty_job *j = arg;
	json_t *ret = NULL;

	if (j->was_pending &&
	    qmp_command(q, "query-dirty-rate", NULL, &ret, err) == 0) {
		json_t *rate = json_object_get(ret, "dirty-rate");
		const char *st = json_string_value(json_object_get(ret,
								   "status"));

		if (st && !strcmp(st, "measured") && json_is_integer(rate) &&
		    json_integer_value(rate) >= 0 &&
		    json_integer_value(rate) <= LOAD_DIRTY_MIBPS_MAX) {
			j->rate = (double)json_integer_value(rate);
			j->measured = true;
		}
	}
	json_decref(ret);
	ret = NULL;
	j->pending =
		qmp_command(q, "calc-dirty-rate",
			    json_pack("{s:i, s:i}", "calc-time",
				      LOAD_DIRTY_CALC_S, "sample-pages",
				      LOAD_DIRTY_SAMPLES),
			    &ret, err) == 0;
	json_decref(ret);
	return 0;
}

static void dirty_done(void *arg, struct vm *vm, int rc,
		       const struct ferr *err)
{
	struct dirty_job *j = arg;
	struct track *t = track_of(j->l, j->pid);

	(void)vm;
	(void)rc;
	(void)err;
	if (t) {
		if (j->measured) {
			t->dirty_mibps = j->rate;
			t->dirty_known = true;
		}
		t->dirty_pending = j->pending;
		t->dirty_busy = false;
	}
	free(j);
}

/* Start a dirty-rate round for vm's QEMU unless one is under way. */
static void dirty_round(struct load *l, struct vm *vm, struct track *t)
{
	struct dirty_job *j;
	struct ferr err;

	if (t->dirty_busy)
		return;
	j = calloc(1, sizeof(*j));
	if (!j)
		return;
	*j = (struct dirty_job){ .l = l, .pid = t->pid,
				 .was_pending = t->dirty_pending };
	if (vm_run_qmp(vm, "dirty-rate", dirty_work, j, dirty_done, &err) <
	    0) {
		log_debug("vm %s: dirty rate: %s", vm->def.name, err.msg);
		free(j);
		return;
	}
	t->dirty_busy = true;
}

/* One sample: every VM's QEMU and the machine. */
static void sample(struct load *l)
{
	uint64_t now = now_ms(), busy, total;
	double dt = (double)(now - l->last_ms) / 1000.0;
	bool dirty = now - l->dirty_ms >= LOAD_DIRTY_PERIOD_MS;

	for (unsigned i = 0; i < l->ntracks; i++)
		l->tracks[i].seen = false;
	for (struct vm *vm = vmm_first(l->vmm); vm; vm = vm->next) {
		struct track *t;
		uint64_t ticks;

		if (vm->pid <= 0 || proc_ticks(vm->pid, &ticks) < 0)
			continue;
		t = track_of(l, vm->pid);
		if (!t) {
			if (l->ntracks == LOAD_TRACKED_MAX)
				continue;
			t = &l->tracks[l->ntracks++];
			*t = (struct track){ .pid = vm->pid, .ticks = ticks };
		} else if (dt > 0 && ticks >= t->ticks) {
			double cores = (double)(ticks - t->ticks) /
				       (double)l->hz / dt;

			t->cores = t->measured
					   ? LOAD_EWMA_ALPHA * cores +
						     (1.0 - LOAD_EWMA_ALPHA) *
							     t->cores
					   : cores;
			t->measured = true;
			t->ticks = ticks;
		}
		t->seen = true;
		/* not while the VM is busy: its own operations go first */
		if (dirty && vm->state == VM_RUNNING && !vm->incoming &&
		    !vm->hold.owner[0] && vm->qmp && !vm_busy(vm))
			dirty_round(l, vm, t);
	}
	if (dirty)
		l->dirty_ms = now;
	/* forget processes that are gone */
	for (unsigned i = 0; i < l->ntracks;) {
		if (!l->tracks[i].seen)
			l->tracks[i] = l->tracks[--l->ntracks];
		else
			i++;
	}
	if (host_ticks(&busy, &total) == 0) {
		if (l->host_total && total > l->host_total)
			l->host_util = (double)(busy - l->host_busy) /
				       (double)(total - l->host_total);
		l->host_busy = busy;
		l->host_total = total;
	}
	l->last_ms = now;
}

static void on_sample(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	sample(arg);
}

int load_new(const struct ferryd_config *cfg, struct event_base *base,
	     struct vmm *vmm, struct load **out, struct ferr *err)
{
	struct timeval tv = { .tv_sec = LOAD_SAMPLE_MS / 1000,
			      .tv_usec = (LOAD_SAMPLE_MS % 1000) * 1000 };
	struct load *l = calloc(1, sizeof(*l));

	if (!l)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	l->cfg = cfg;
	l->vmm = vmm;
	l->hz = sysconf(_SC_CLK_TCK);
	if (l->hz <= 0)
		l->hz = 100;
	if (fmt_checked(l->flag_path, sizeof(l->flag_path), err, "path",
			"%s/draining", cfg->state_dir) < 0)
		goto fail;
	l->draining = access(l->flag_path, F_OK) == 0;
	l->last_ms = now_ms();
	sample(l);
	l->timer = event_new(base, -1, EV_PERSIST, on_sample, l);
	if (!l->timer || event_add(l->timer, &tv) < 0) {
		ferr_set(err, FERR_INTERNAL, "cannot start load sampling");
		goto fail;
	}
	*out = l;
	return 0;
fail:
	load_free(l);
	return -1;
}

void load_free(struct load *l)
{
	if (!l)
		return;
	if (l->timer)
		event_free(l->timer);
	free(l);
}

bool load_draining(const struct load *l)
{
	return l->draining;
}

int load_set_draining(struct load *l, bool on, struct ferr *err)
{
	if (on) {
		if (file_write_atomic(l->flag_path, "draining\n", 9, 0600, err) <
		    0)
			return -1;
	} else if (unlink(l->flag_path) < 0 && errno != ENOENT) {
		return ferr_set(err, FERR_IO, "cannot remove %s: %s",
				l->flag_path, strerror(errno));
	}
	l->draining = on;
	log_info("host %s: %s", l->cfg->host,
		 on ? "draining: nothing is placed here"
		    : "no longer draining");
	return 0;
}

json_t *load_report(struct load *l)
{
	json_t *vms = json_array(), *host;
	double vm_cores = 0;
	long cpus = l->cfg->capacity_cpus ? (long)l->cfg->capacity_cpus
					  : sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t mem_total = l->cfg->capacity_memory_mib;
	uint64_t committed = vmm_committed_mib(l->vmm);

	if (!mem_total) {
		json_t *info = vmm_host_info(l->vmm);

		mem_total = (uint64_t)json_integer_value(
			json_object_get(info, "memory_total_mib"));
		json_decref(info);
	}
	for (struct vm *vm = vmm_first(l->vmm); vm; vm = vm->next) {
		struct track *t = vm->pid > 0 ? track_of(l, vm->pid) : NULL;
		json_t *labels = json_object();
		json_t *o;

		for (unsigned i = 0; i < vm->def.nlabels; i++)
			json_object_set_new(labels, vm->def.labels[i].key,
					    json_string(vm->def.labels[i].value));
		o = json_pack("{s:s, s:s, s:s, s:o, s:I, s:o, s:o, s:b}",
			      "name", vm->def.name, "uuid", vm->def.uuid,
			      "state",
			      vm->incoming ? "incoming"
					   : vm_state_name(vm->state),
			      "cpu_cores",
			      t && t->measured ? json_real(t->cores)
					       : json_null(),
			      "memory_mib", (json_int_t)vm->def.memory_mib,
			      "dirty_mibps",
			      t && t->dirty_known ? json_real(t->dirty_mibps)
						  : json_null(),
			      "labels", labels,
			      "migrating", vm->incoming || vm->hold.owner[0]);
		if (t && t->measured)
			vm_cores += t->cores;
		json_array_append_new(vms, o);
	}
	host = json_pack("{s:s, s:I, s:I, s:f, s:f, s:I, s:I, s:I, s:b, "
			 "s:o}",
			 "host", l->cfg->host, "ts", (json_int_t)wall_ms(),
			 "cpus", (json_int_t)cpus, "cpu_util", l->host_util,
			 "vm_cpu_cores", vm_cores, "memory_total_mib",
			 (json_int_t)mem_total, "memory_committed_mib",
			 (json_int_t)committed, "memory_free_mib",
			 (json_int_t)(mem_total > committed ? mem_total - committed
							    : 0),
			 "draining", l->draining, "vms", vms);
	return host;
}
