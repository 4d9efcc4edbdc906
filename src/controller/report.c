/* report.c - a host's load report (GET /v1/load, src/load/load.h), checked
 * field by field: every byte of it comes from the network. */
#include "ctl_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool finite_in(double v, double lo, double hi)
{
	return isfinite(v) && v >= lo && v <= hi;
}

/* One VM entry into *vr; false with why when it breaks the contract. */
static bool vm_entry(const json_t *vm, struct ctl_vm_report *vr, char *why,
		     size_t len)
{
	const char *name = json_string_value(json_object_get(vm, "name"));
	const char *st = json_string_value(json_object_get(vm, "state"));
	const json_t *cpu = json_object_get(vm, "cpu_cores");
	const json_t *mem = json_object_get(vm, "memory_mib");
	const json_t *dirty = json_object_get(vm, "dirty_mibps");
	const json_t *mig = json_object_get(vm, "migrating");
	const json_t *labels = json_object_get(vm, "labels");
	const char *k;
	json_t *v;

	/* every field is set below (labels up to nlabels): a host lists
	 * thousands of these a second, so no memset of the label table */
	vr->name[0] = '\0';
	vr->has_cpu = vr->migrating = false;
	vr->cpu = vr->dirty_mibps = 0;
	vr->mem_mib = 0;
	vr->nlabels = 0;
	if (!json_is_object(vm) || !name || !name_is_valid(name)) {
		snprintf(why, len, "a VM without a valid name");
		return false;
	}
	snprintf(vr->name, sizeof(vr->name), "%s", name);
	if (!st) {
		snprintf(why, len, "vm %s: no state", name);
		return false;
	}
	vr->state = !strcmp(st, "running")    ? CTL_VM_RUNNING
		    : !strcmp(st, "paused")   ? CTL_VM_PAUSED
		    : !strcmp(st, "incoming") ? CTL_VM_INCOMING
					      : CTL_VM_OTHER;
	if (json_is_number(cpu)) {
		vr->cpu = json_number_value(cpu);
		vr->has_cpu = true;
		if (!finite_in(vr->cpu, 0, BAL_VM_CPU_MAX)) {
			snprintf(why, len, "vm %s: cpu_cores out of range",
				 name);
			return false;
		}
	} else if (cpu && !json_is_null(cpu)) {
		snprintf(why, len, "vm %s: cpu_cores is not a number", name);
		return false;
	}
	if (!json_is_integer(mem) || json_integer_value(mem) < 1 ||
	    (uint64_t)json_integer_value(mem) > FERRY_VM_MEM_MAX_MIB) {
		snprintf(why, len, "vm %s: memory_mib out of range", name);
		return false;
	}
	vr->mem_mib = (uint64_t)json_integer_value(mem);
	/* an unknown or insane dirty rate counts as unknown */
	if (json_is_number(dirty) &&
	    finite_in(json_number_value(dirty), 0, BAL_DIRTY_MAX_MIBPS))
		vr->dirty_mibps = json_number_value(dirty);
	if (mig && !json_is_boolean(mig)) {
		snprintf(why, len, "vm %s: migrating is not a boolean", name);
		return false;
	}
	vr->migrating = json_is_true(mig);
	if (labels && !json_is_object(labels)) {
		snprintf(why, len, "vm %s: labels is not an object", name);
		return false;
	}
	json_object_foreach((json_t *)labels, k, v) {
		const char *s = json_string_value(v);

		if (vr->nlabels == FERRY_VM_LABELS_MAX || !name_is_valid(k) ||
		    !s || !name_is_valid(s)) {
			snprintf(why, len, "vm %s: bad labels", name);
			return false;
		}
		snprintf(vr->labels[vr->nlabels].key,
			 sizeof(vr->labels[0].key), "%s", k);
		snprintf(vr->labels[vr->nlabels].value,
			 sizeof(vr->labels[0].value), "%s", s);
		vr->nlabels++;
	}
	return true;
}

int ctl_report_parse(const json_t *load, const char *host,
		     struct ctl_report *out, struct ferr *err)
{
	const json_t *cpus = json_object_get(load, "cpus");
	const json_t *mem = json_object_get(load, "memory_total_mib");
	const json_t *used = json_object_get(load, "memory_committed_mib");
	const json_t *dr = json_object_get(load, "draining");
	const json_t *vms = json_object_get(load, "vms");
	const json_t *vm;
	size_t i;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(load))
		return ferr_set(err, FERR_INVALID,
				"host %s: the load report is not an object",
				host);
	if (!json_is_integer(cpus) || json_integer_value(cpus) < 1 ||
	    json_integer_value(cpus) > (json_int_t)BAL_CORES_MAX)
		return ferr_set(err, FERR_INVALID,
				"host %s: cpus must be 1..%d", host,
				(int)BAL_CORES_MAX);
	if (!json_is_integer(mem) || json_integer_value(mem) < 1)
		return ferr_set(err, FERR_INVALID,
				"host %s: memory_total_mib must be positive",
				host);
	if (used && (!json_is_integer(used) || json_integer_value(used) < 0))
		return ferr_set(err, FERR_INVALID,
				"host %s: memory_committed_mib must be a "
				"count",
				host);
	if (!json_is_boolean(dr))
		return ferr_set(err, FERR_INVALID,
				"host %s: draining must be a boolean", host);
	if (!json_is_array(vms) || json_array_size(vms) > CTL_HOST_VMS_MAX)
		return ferr_set(err, FERR_INVALID,
				"host %s: vms must be a list of at most %d",
				host, CTL_HOST_VMS_MAX);
	out->cores = (double)json_integer_value(cpus);
	out->mem_mib = (uint64_t)json_integer_value(mem);
	out->mem_committed_mib = used ? (uint64_t)json_integer_value(used) : 0;
	out->draining = json_is_true(dr);
	if (json_array_size(vms)) {
		out->vms = malloc(json_array_size(vms) * sizeof(*out->vms));
		if (!out->vms)
			return ferr_set(err, FERR_INTERNAL, "out of memory");
	}
	json_array_foreach(vms, i, vm) {
		char why[sizeof(out->first_skip)];

		if (vm_entry(vm, &out->vms[out->nvms], why, sizeof(why))) {
			out->nvms++;
		} else if (out->skipped++ == 0) {
			snprintf(out->first_skip, sizeof(out->first_skip),
				 "%s", why);
		}
	}
	return 0;
}

void ctl_report_clear(struct ctl_report *r)
{
	free(r->vms);
	memset(r, 0, sizeof(*r));
}
