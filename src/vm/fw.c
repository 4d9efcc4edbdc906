/* fw.c - a bridged VM's firewall on this host (vm.h, "the VM's
 * firewall"): the rules it gets (its own, else the cluster default), on
 * its tap from before QEMU starts until QEMU exits (runtime.c calls the
 * vm_fwb_* functions from its launch, reap and quit), found again after a
 * restart, changed and shown through the API. The nftables and conntrack
 * work itself is src/firewall's. */
#include "vm_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The namespace of def's bridge on this host ("" : ferryd's own). */
static const char *bridge_ns(const struct vmm *m, const struct vm_def *def)
{
	const struct bridge_map *b = config_bridge(m->cfg, def->bridge);

	return b ? b->netns : "";
}

static bool fw_same(const struct fw_policy *a, const struct fw_policy *b)
{
	char da[FW_DIGEST_HEX + 1], db[FW_DIGEST_HEX + 1];

	if (a->present != b->present)
		return false;
	fw_policy_digest(a, da);
	fw_policy_digest(b, db);
	return !strcmp(da, db);
}

void vm_fwb_init(const struct vm *vm, struct vm_fwb *b)
{
	memset(b, 0, sizeof(*b));
	b->on = vm->def.net == NET_BRIDGE;
	if (!b->on)
		return;
	snprintf(b->ns, sizeof(b->ns), "%s", bridge_ns(vm->vmm, &vm->def));
	snprintf(b->uuid, sizeof(b->uuid), "%s", vm->def.uuid);
	snprintf(b->tap, sizeof(b->tap), "%s", vm->tap);
	mac_parse(vm->def.mac, b->mac);
}

int vm_fwb_plan(struct vmm *m, const struct vm *vm, struct vm_fwb *b,
		struct ferr *err)
{
	vm_fwb_init(vm, b);
	if (b->on && fw_effective(&m->fw, &vm->def.fw, &b->policy, err) < 0)
		return ferr_wrap(err, "vm %s", vm->def.name);
	return 0;
}

int vm_fwb_up(const struct vmm *m, const struct vm_fwb *b, struct ferr *err)
{
	struct fw_vm v = { .uuid = b->uuid, .tap = b->tap,
			   .policy = &b->policy };

	if (!b->on || !b->policy.present)
		return 0;
	memcpy(v.mac, b->mac, sizeof(v.mac));
	return fw_install(m->cfg->host, b->ns, &v, NULL, err);
}

void vm_fwb_down(const struct vmm *m, const struct vm_fwb *b)
{
	struct ferr err;
	unsigned flows = 0;

	if (!b->on)
		return;
	if (fw_remove(m->cfg->host, b->ns, b->uuid, &err) < 0)
		log_error("%s", err.msg);
	if (fw_ct_flush(b->ns, fw_tag(b->uuid), &flows, &err) < 0)
		log_error("vm %s: %s", b->uuid, err.msg);
	else if (flows)
		log_info("vm %s: forgot %u tracked flows", b->uuid, flows);
}

int vmm_fw_check(struct vmm *m, const struct vm_def *def, struct ferr *err)
{
	struct fw_policy eff;

	if (def->net != NET_BRIDGE)
		return def->fw.present
			       ? ferr_set(err, FERR_INVALID,
					  "vm %s has firewall rules but no "
					  "bridged network",
					  def->name)
			       : 0;
	if (fw_effective(&m->fw, &def->fw, &eff, err) < 0)
		return ferr_wrap(err, "host %s refuses vm %s", m->cfg->host,
				 def->name);
	return 0;
}

/* Does vm run with a tap this ferryd knows? */
static bool on_tap(const struct vm *vm)
{
	return vm->def.net == NET_BRIDGE && vm->pid > 0 && vm->tap[0] &&
	       vm->state != VM_SHUTOFF;
}

/* ---- operations ---- */

/* One firewall operation on a VM (set, show, a new default). */
struct fw_job {
	struct vmm *m;
	struct vm_fwb b;         /* with the rules to put on the tap */
	bool running;            /* on its tap when queued */
	bool show;
	struct fw_policy own;    /* set: the VM's new own rules */
	json_t *installed;       /* show: fw_show's answer */
	json_t **out;            /* show: the caller's */
	vm_done_fn done;
	void *ctx;
};

/* Worker: put b's rules on the tap (or take them off when it has none). */
static int job_work(struct qmp *q, void *arg, struct ferr *err)
{
	struct fw_job *j = arg;

	(void)q;
	if (!j->running)
		return 0;
	if (j->show) {
		j->installed = fw_show(j->m->cfg->host, j->b.ns, j->b.uuid, err);
		return j->installed ? 0 : -1;
	}
	if (!j->b.policy.present)
		return fw_remove(j->m->cfg->host, j->b.ns, j->b.uuid, err);
	return vm_fwb_up(j->m, &j->b, err);
}

static struct fw_job *job_new(struct vmm *m, struct vm *vm, vm_done_fn done,
			      void *ctx, struct ferr *err)
{
	struct fw_job *j = calloc(1, sizeof(*j));

	if (!j) {
		ferr_set(err, FERR_INTERNAL, "out of memory");
		return NULL;
	}
	j->m = m;
	j->done = done;
	j->ctx = ctx;
	j->running = on_tap(vm);
	vm_fwb_init(vm, &j->b);
	return j;
}

/* A new default reached a running VM. */
static void default_done(void *arg, struct vm *vm, int rc,
			 const struct ferr *err)
{
	struct fw_job *j = arg;

	if (vm && rc == 0 && on_tap(vm) && !vm->def.fw.present) {
		vm->fw = j->b.policy;
		log_info("vm %s: firewall: the cluster default changed",
			 vm->def.name);
	} else if (vm && rc < 0) {
		log_error("vm %s: firewall: the new cluster default: %s",
			  vm->def.name, err->msg);
	}
	free(j);
}

void vmm_fw_configure(struct vmm *m, const struct fw_cluster *c)
{
	m->fw = *c;
	for (struct vm *vm = m->head; m->fw_ready && vm; vm = vm->next) {
		struct fw_policy eff;
		struct fw_job *j;
		struct ferr err;

		if (!on_tap(vm) || vm->def.fw.present || vm->incoming)
			continue;
		if (fw_effective(&m->fw, &vm->def.fw, &eff, &err) < 0) {
			log_warn("vm %s keeps its firewall: %s", vm->def.name,
				 err.msg);
			continue;
		}
		if (fw_same(&eff, &vm->fw))
			continue;
		j = job_new(m, vm, NULL, NULL, &err);
		if (!j)
			continue;
		j->b.policy = eff;
		if (vm_run_work(vm, "firewall", job_work, j, default_done,
				&err) < 0) {
			log_error("vm %s: firewall: %s", vm->def.name, err.msg);
			free(j);
		}
	}
}

/* Write def as vm's definition file. */
static int def_save(struct vmm *m, const struct vm_def *def,
		    struct ferr *err)
{
	struct vm_paths p;
	char *text;
	int rc;

	if (vm_paths_get(m->cfg, def, &p, err) < 0)
		return -1;
	text = def_text(def);
	if (!text)
		return ferr_set(err, FERR_INTERNAL, "out of memory");
	rc = file_write_atomic(p.def, text, strlen(text), 0600, err);
	free(text);
	return rc;
}

/* Put the rules a failed set left on the tap back to what they were. */
static void revert_done(void *arg, struct vm *vm, int rc,
			const struct ferr *err)
{
	(void)vm;
	if (rc < 0)
		log_error("firewall: cannot put the old rules back: %s",
			  err->msg);
	free(arg);
}

static void set_done(void *arg, struct vm *vm, int rc, const struct ferr *err)
{
	struct fw_job *j = arg;
	struct ferr e2;
	struct vm_def def;

	if (vm && rc == 0) {
		def = vm->def;
		def.fw = j->own;
		if (def_save(j->m, &def, &e2) == 0) {
			vm->def = def;
			if (j->running)
				vm->fw = j->b.policy;
			log_info("vm %s: firewall %s", vm->def.name,
				 def.fw.present ? "rules set"
						: "rules removed");
		} else {
			struct ferr e3;
			struct fw_job *back = j->running
						      ? job_new(j->m, vm, NULL,
								NULL, &e3)
						      : NULL;

			rc = -1;
			err = &e2;
			if (back) {
				back->b.policy = vm->fw;
				if (vm_run_work(vm, "firewall", job_work, back,
						revert_done, &e3) < 0)
					free(back);
			}
		}
	}
	if (j->done)
		j->done(j->ctx, vm, rc, err);
	free(j);
}

int vmm_fw_set(struct vmm *m, struct vm *vm, const struct fw_policy *own,
	       vm_done_fn done, void *ctx, struct ferr *err)
{
	struct fw_policy eff = { 0 };
	struct fw_job *j;

	if (vm->incoming || vm->hold.owner[0])
		return ferr_set(err, FERR_CONFLICT,
				"vm %s is migrating; change its firewall when "
				"the migration has ended",
				vm->def.name);
	if (own->present && vm->def.net != NET_BRIDGE)
		return ferr_set(err, FERR_INVALID,
				"vm %s has no bridged network: there is no "
				"tap to filter",
				vm->def.name);
	if (vm->def.net == NET_BRIDGE &&
	    fw_effective(&m->fw, own, &eff, err) < 0)
		return ferr_wrap(err, "host %s refuses these rules for vm %s",
				 m->cfg->host, vm->def.name);
	j = job_new(m, vm, done, ctx, err);
	if (!j)
		return -1;
	j->own = *own;
	j->own.origin = FW_ORIGIN_VM;
	j->b.policy = eff;
	if (vm_run_work(vm, "firewall", job_work, j, set_done, err) < 0) {
		free(j);
		return -1;
	}
	return 0;
}

/* Where the rules in force come from. */
static const char *origin_name(const struct fw_policy *p)
{
	if (!p->present)
		return "none";
	return p->origin == FW_ORIGIN_VM ? "vm" : "default";
}

static void show_done(void *arg, struct vm *vm, int rc,
		      const struct ferr *err)
{
	struct fw_job *j = arg;

	if (vm && rc == 0) {
		struct fw_policy eff = vm->fw;
		struct ferr ignored;

		if (!on_tap(vm) && vm->def.net == NET_BRIDGE)
			fw_effective(&j->m->fw, &vm->def.fw, &eff, &ignored);
		*j->out = json_pack(
			"{s:s, s:o, s:s, s:o, s:o}", "vm", vm->def.name,
			"firewall",
			vm->def.fw.present && vm->def.fw.origin == FW_ORIGIN_VM
				? fw_policy_to_json(&vm->def.fw)
				: json_null(),
			"origin", origin_name(&eff), "rules",
			fw_policy_to_json(&eff), "installed",
			j->installed ? j->installed
				     : json_pack("{s:b}", "installed", 0));
		j->installed = NULL;
	}
	json_decref(j->installed);
	if (j->done)
		j->done(j->ctx, vm, rc, err);
	free(j);
}

int vmm_fw_show(struct vmm *m, struct vm *vm, json_t **out, vm_done_fn done,
		void *ctx, struct ferr *err)
{
	struct fw_job *j = job_new(m, vm, done, ctx, err);

	if (!j)
		return -1;
	j->show = true;
	j->out = out;
	if (vm_run_work(vm, "firewall", job_work, j, show_done, err) < 0) {
		free(j);
		return -1;
	}
	return 0;
}

/* ---- after a restart ---- */

/* Re-attach the VMs of namespace ns: prune the others, then install (an
 * intact installation stays as it is). */
static void reattach_ns(struct vmm *m, const char *ns)
{
	const char *keep[FERRY_VM_MAX];
	size_t n = 0;
	unsigned removed = 0;
	bool rebuilt = false;
	struct ferr err;

	for (struct vm *vm = m->head; vm; vm = vm->next)
		if (on_tap(vm) && !strcmp(bridge_ns(m, &vm->def), ns) &&
		    n < FERRY_VM_MAX)
			keep[n++] = vm->def.uuid;
	if (fw_prune(m->cfg->host, ns, keep, n, &removed, &rebuilt, &err) < 0) {
		log_error("firewall: namespace \"%s\": %s", ns, err.msg);
		return;
	}
	if (removed || rebuilt)
		log_info("firewall: namespace \"%s\": %u stopped VM(s) "
			 "removed%s",
			 ns, removed,
			 rebuilt ? "; the tables were not ferry's and were "
				   "rebuilt"
				 : "");
	for (struct vm *vm = m->head; vm; vm = vm->next) {
		struct vm_fwb b;
		struct fw_vm v;
		bool changed = false;

		if (!on_tap(vm) || strcmp(bridge_ns(m, &vm->def), ns) != 0)
			continue;
		if (vm_fwb_plan(m, vm, &b, &err) < 0) {
			/* running already: keep what it has */
			log_error("%s; its rules stay as they are", err.msg);
			snprintf(vm->last_error, sizeof(vm->last_error), "%s",
				 err.msg);
			continue;
		}
		v = (struct fw_vm){ .uuid = b.uuid, .tap = b.tap,
				    .policy = &b.policy };
		memcpy(v.mac, b.mac, sizeof(v.mac));
		if (b.policy.present &&
		    fw_install(m->cfg->host, ns, &v, &changed, &err) < 0) {
			log_error("vm %s: %s", vm->def.name, err.msg);
			snprintf(vm->last_error, sizeof(vm->last_error), "%s",
				 err.msg);
			continue;
		}
		vm->fw = b.policy;
		if (b.policy.present)
			log_info("vm %s: firewall on tap %s %s", vm->def.name,
				 vm->tap,
				 changed ? "installed again" : "intact");
	}
}

void vmm_fw_reattach(struct vmm *m)
{
	m->fw_ready = true;
	for (unsigned i = 0; i < m->cfg->nbridges; i++) {
		bool seen = false;

		for (unsigned k = 0; k < i; k++)
			seen |= !strcmp(m->cfg->bridges[k].netns,
					m->cfg->bridges[i].netns);
		if (!seen)
			reattach_ns(m, m->cfg->bridges[i].netns);
	}
}
