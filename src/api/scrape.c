/* scrape.c - GET /v1/metrics: this host's figures in the Prometheus text
 * format (docs/metrics.md). What lives on the loop (VMs, migrations, the
 * load report) is copied there, in memory, at once; the audit log's head
 * (whose lock an fsync may hold) is read and the text rendered on a worker,
 * so a scrape never makes the loop wait for the disk. */
#include "api.h"
#include "audit.h"
#include "load.h"
#include "metrics.h"
#include "migrate.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>

/* every enum vm_state (VM_UNKNOWN is the last), then "incoming" */
#define VM_STATE_SLOTS (VM_UNKNOWN + 2)

struct scrape {
	struct api_call *call;
	struct audit *audit; /* borrowed; audit_head on the worker */
	/* copied on the loop */
	unsigned vms[VM_STATE_SLOTS];
	struct mig_stats mig;
	struct audit_refusal_total refusals[AUDIT_REFUSAL_ACTIONS + 1];
	size_t nrefusals;
	json_t *load;
	/* the worker's result */
	char *text;
	size_t len;
	struct ferr err;
};

static const char *vm_slot_name(size_t i)
{
	return i <= VM_UNKNOWN ? vm_state_name((enum vm_state)i) : "incoming";
}

/* A JSON number of the load report as a double (0 when absent). */
static double num(const json_t *o, const char *key)
{
	return json_number_value(json_object_get(o, key));
}

static void migrations(struct metrics *m, const struct mig_stats *s)
{
	static const char *const roles[] = { "source", "destination" };
	static const char *const outcomes[] = { "completed", "failed",
						"cancelled" };
	static const double dur_bounds[] = MIG_STAT_DURATION_BOUNDS;
	static const double down_bounds[] = MIG_STAT_DOWNTIME_BOUNDS;
	struct metric_label l[2];
	struct metric_hist h;

	metrics_family(m, "ferry_migrations_total", METRIC_COUNTER,
		       "Migrations that ended since ferryd started, by this "
		       "host's role and the outcome.");
	for (int r = 0; r < MIG_STAT_ROLES; r++) {
		for (int o = 0; o < MIG_STAT_OUTCOMES; o++) {
			l[0] = (struct metric_label){ "role", roles[r] };
			l[1] = (struct metric_label){ "outcome", outcomes[o] };
			metrics_sample(m, l, 2, (double)s->ended[r][o]);
		}
	}
	metrics_family(m, "ferry_migration_duration_seconds",
		       METRIC_HISTOGRAM,
		       "Duration of completed migrations: from the request to "
		       "the VM running on the destination (source), from "
		       "prepare to finish (destination).");
	for (int r = 0; r < MIG_STAT_ROLES; r++) {
		l[0] = (struct metric_label){ "role", roles[r] };
		h = (struct metric_hist){ dur_bounds, s->duration[r].counts,
					  MIG_STAT_BUCKETS,
					  (double)s->duration[r].sum_ms / 1e3 };
		metrics_histogram(m, l, 1, &h);
	}
	metrics_family(m, "ferry_migration_downtime_seconds", METRIC_HISTOGRAM,
		       "Guest-visible pause of completed outgoing migrations.");
	h = (struct metric_hist){ down_bounds, s->downtime.counts,
				  MIG_STAT_BUCKETS,
				  (double)s->downtime.sum_ms / 1e3 };
	metrics_histogram(m, NULL, 0, &h);
	metrics_family(m, "ferry_migration_ram_bytes_total", METRIC_COUNTER,
		       "Guest RAM QEMU sent in outgoing migrations.");
	metrics_sample(m, NULL, 0, (double)s->ram_bytes);
	metrics_family(m, "ferry_migration_wire_bytes_total", METRIC_COUNTER,
		       "Data-plane TCP payload of ended migrations, both "
		       "directions, by this host's role.");
	for (int r = 0; r < MIG_STAT_ROLES; r++) {
		l[0] = (struct metric_label){ "role", roles[r] };
		metrics_sample(m, l, 1, (double)s->wire_bytes[r]);
	}
	metrics_family(m, "ferry_migrations_active", METRIC_GAUGE,
		       "Migrations in progress: outgoing running, queued or "
		       "unresolved (held until the destination answers), "
		       "incoming sessions.");
	{
		const struct {
			const char *role, *state;
			unsigned n;
		} a[] = { { "source", "running", s->active },
			  { "source", "queued", s->queued },
			  { "source", "unresolved", s->unresolved },
			  { "destination", "running", s->incoming } };

		for (size_t i = 0; i < sizeof(a) / sizeof(a[0]); i++) {
			l[0] = (struct metric_label){ "role", a[i].role };
			l[1] = (struct metric_label){ "state", a[i].state };
			metrics_sample(m, l, 2, a[i].n);
		}
	}
}

static void host_load(struct metrics *m, const json_t *load)
{
	static const char *const mem[] = { "total", "committed", "free" };
	char key[32];

	metrics_family(m, "ferry_host_cpus", METRIC_GAUGE,
		       "CPUs this host counts for placement.");
	metrics_sample(m, NULL, 0, num(load, "cpus"));
	metrics_family(m, "ferry_host_cpu_utilization", METRIC_GAUGE,
		       "Busy share of the whole machine's CPU time (0 to 1), "
		       "smoothed.");
	metrics_sample(m, NULL, 0, num(load, "cpu_util"));
	metrics_family(m, "ferry_host_vm_cpu_cores", METRIC_GAUGE,
		       "CPU cores the host's VMs use together.");
	metrics_sample(m, NULL, 0, num(load, "vm_cpu_cores"));
	metrics_family(m, "ferry_host_memory_bytes", METRIC_GAUGE,
		       "Memory this host counts for placement: total, "
		       "committed to VMs, free.");
	for (size_t i = 0; i < 3; i++) {
		struct metric_label l = { "kind", mem[i] };

		snprintf(key, sizeof(key), "memory_%s_mib", mem[i]);
		metrics_sample(m, &l, 1, num(load, key) * 1048576.0);
	}
	metrics_family(m, "ferry_host_draining", METRIC_GAUGE,
		       "1 while the host is draining (takes no VMs in).");
	metrics_sample(m, NULL, 0,
		       json_is_true(json_object_get(load, "draining")));
}

/* Worker: the audit head, then the whole text. */
static void scrape_work(void *arg)
{
	struct scrape *s = arg;
	struct metrics *m = metrics_new();
	struct metric_label l;
	uint64_t seq = 0;

	if (!m) {
		ferr_set(&s->err, FERR_INTERNAL, "out of memory");
		return;
	}
	audit_head(s->audit, &seq, NULL);
	metrics_family(m, "ferry_build_info", METRIC_GAUGE,
		       "Always 1; the version of this ferryd.");
	l = (struct metric_label){ "version", FERRY_VERSION };
	metrics_sample(m, &l, 1, 1);
	metrics_family(m, "ferry_vms", METRIC_GAUGE,
		       "VMs on this host by state (incoming: arriving by "
		       "migration).");
	for (size_t i = 0; i < VM_STATE_SLOTS; i++) {
		l = (struct metric_label){ "state", vm_slot_name(i) };
		metrics_sample(m, &l, 1, s->vms[i]);
	}
	migrations(m, &s->mig);
	metrics_family(m, "ferry_refusals_total", METRIC_COUNTER,
		       "Refused connections and requests since ferryd started, "
		       "by kind (the audit action of their coalesced "
		       "records).");
	for (size_t i = 0; i < s->nrefusals; i++) {
		l = (struct metric_label){ "kind", s->refusals[i].action };
		metrics_sample(m, &l, 1, (double)s->refusals[i].count);
	}
	metrics_family(m, "ferry_audit_records_total", METRIC_COUNTER,
		       "Records in this host's audit log (the sequence number "
		       "of the newest).");
	metrics_sample(m, NULL, 0, (double)seq);
	host_load(m, s->load);
	if (metrics_finish(m, &s->text, &s->len, &s->err) < 0)
		log_error("api: metrics: %s", s->err.msg);
	metrics_free(m);
}

static void scrape_done(void *arg)
{
	struct scrape *s = arg;

	if (s->text)
		api_call_reply_text(s->call, METRICS_CONTENT_TYPE, s->text,
				    s->len);
	else
		api_call_reply(s->call, ferr_http_status(s->err.code),
			       api_error_json(&s->err));
	json_decref(s->load);
	free(s);
}

int api_metrics(struct api_ctx *ctx, struct api_call *call, struct ferr *err)
{
	struct scrape *s = calloc(1, sizeof(*s));

	if (!s)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	s->call = call;
	s->audit = ctx->audit;
	for (struct vm *vm = vmm_first(ctx->vmm); vm; vm = vm->next)
		s->vms[vm->incoming ? VM_STATE_SLOTS - 1
				    : vm->state <= VM_UNKNOWN ? vm->state
							      : VM_UNKNOWN]++;
	migrator_stats(ctx->mig, &s->mig);
	s->nrefusals = audit_refusals_totals(ctx->refusals, s->refusals);
	s->load = load_report(ctx->load);
	if (!s->load || worker_submit(ctx->pool, scrape_work, scrape_done, s,
				      err) < 0) {
		if (!s->load)
			ferr_set(err, FERR_INTERNAL, "out of memory");
		json_decref(s->load);
		free(s);
		return -1;
	}
	return API_DEFERRED;
}
