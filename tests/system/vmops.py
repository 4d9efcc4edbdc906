"""The test guest's VMs and their migrations, for ferry's system tests:
memload's output contract (guest/README.md), the VM and migration methods of
ferrylib.Cluster (the VmOps mixin) and MigrateResult. ferrylib re-exports
every public name."""

import json
import re
import subprocess
import time
from dataclasses import dataclass

from proclib import wait_until

# memload's output contract (guest/README.md)
HB_RE = re.compile(
    r"^memload: hb seq=(\d+) verified=(\d+) dirtied=(\d+) errors=(\d+) passes=(\d+)\s*$",
    re.M,
)
CORRUPTION_RE = re.compile(r"^memload: CORRUPTION .*$", re.M)
HB_FIELDS = ("seq", "verified", "dirtied", "errors", "passes")
VM_BOOT_TIMEOUT = 60.0  # start -> first heartbeat, generous for a loaded TCG host


def parse_heartbeats(text):
    """memload heartbeats in console text, as dicts, from complete lines only
    (a line still being written could carry a truncated number)."""
    text = text[: text.rfind("\n") + 1]
    return [dict(zip(HB_FIELDS, map(int, m.groups()))) for m in HB_RE.finditer(text)]


class VmOps:
    """Cluster's methods on VMs and migrations. They use the Cluster's api(),
    api_ok(), hosts, ferry_bin and client_config."""

    # ---------------------------------------------------------------- VMs

    def vm_definition(self, name, memory_mib=256, mib=32, rate=1000, secret=None,
                      extra="", vcpus=1, **fields):
        """A definition booting the test guest with memload.mib=mib and
        memload.rate=rate (plus secret and extra kernel parameters)."""
        # clocksource=hpet: see guest/README.md (TSC stalls after a migration
        # whose destination is resumed with `cont`, QEMU 7.2 TCG)
        # no_timer_check: a guest kernel checking its IO-APIC timer on a host
        # too loaded to deliver the ticks in time panics at boot (guest/README.md)
        cmdline = (f"console=ttyS0 quiet clocksource=hpet no_timer_check memload.mib={mib} "
                   f"memload.rate={rate}")
        if secret:
            cmdline += f" memload.secret={secret}"
        if extra:
            cmdline += f" {extra}"
        d = {"name": name, "memory_mib": memory_mib, "vcpus": vcpus,
             "kernel": "guest/vmlinuz", "initrd": "guest/initramfs.cpio.gz",
             "cmdline": cmdline}
        d.update(fields)
        return d

    def define_vm(self, host, name, **kw):
        """Define a test-guest VM (see vm_definition) through the API."""
        return self.api_ok(host, "POST", "/v1/vms", self.vm_definition(name, **kw),
                           expect=(201,))

    def start_vm(self, host, name):
        vm = self.api_ok(host, "POST", f"/v1/vms/{name}/start")
        assert vm["state"] == "running" and vm["pid"] > 0, vm
        return vm

    def stop_vm(self, host, name, force=False, timeout_s=30, wait=True):
        self.api_ok(host, "POST", f"/v1/vms/{name}/stop",
                    {"force": force, "timeout_s": timeout_s}, expect=(202,))
        if wait:
            return self.wait_vm_state(host, name, "shutoff", timeout_s + 20)
        return None

    def vm_info(self, host, name):
        return self.api_ok(host, "GET", f"/v1/vms/{name}")

    def list_vms(self, host):
        return self.api_ok(host, "GET", "/v1/vms")["vms"]

    def wait_vm_state(self, host, name, state, timeout=30):
        last = {}

        def check():
            last.update(self.vm_info(host, name))
            return last if last["state"] == state else None
        try:
            return wait_until(check, timeout, 0.1, f"vm {name} on {host} to be {state}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last: {last}") from None

    def vm_dir(self, host, name):
        return self.hosts[host].state_dir / "vms" / name

    def pidfile(self, host, uuid):
        return self.hosts[host].state_dir / "run" / f"{uuid}.pid"

    def console(self, host, vm):
        """The VM's whole serial console through the API."""
        out, offset = [], 0
        while True:
            r = self.api_ok(host, "GET", f"/v1/vms/{vm}/console?offset={offset}")
            out.append(r["data"])
            if r["next"] <= offset:
                return "".join(out)
            offset = r["next"]

    def console_file(self, host, vm):
        """The console log straight from the state dir (works without ferryd)."""
        try:
            return (self.vm_dir(host, vm) / "console.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _console_text(self, host, vm, source):
        return self.console(host, vm) if source == "api" else self.console_file(host, vm)

    def heartbeats(self, host, vm, source="api"):
        """Parsed memload heartbeats; source "api" or "file"."""
        return parse_heartbeats(self._console_text(host, vm, source))

    def wait_heartbeats(self, host, vm, n=1, timeout=VM_BOOT_TIMEOUT, after_seq=None,
                        source="api"):
        """Wait for n heartbeats with seq > after_seq (default: the last one
        seen now; 0: since boot) and return all heartbeats."""
        if after_seq is None:
            hbs = self.heartbeats(host, vm, source)
            after_seq = hbs[-1]["seq"] if hbs else 0
        deadline = time.monotonic() + timeout
        while True:
            text = self._console_text(host, vm, source)
            hbs = parse_heartbeats(text)
            if sum(1 for h in hbs if h["seq"] > after_seq) >= n:
                return hbs
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"vm {vm} on {host}: fewer than {n} heartbeats after seq {after_seq} "
                    f"within {timeout}s; console tail:\n"
                    + "\n".join(text.splitlines()[-15:]))
            time.sleep(0.25)

    # ---------------------------------------------------------------- migration

    def migrate_argv(self, src, vm, to, *opts, config=None):
        """argv of `ferry --host SRC --json migrate VM --to TO OPTS` (config:
        another client.json, e.g. another user's; default the cluster's)."""
        return [self.ferry_bin, "--config", config or self.client_config, "--host", src,
                "--json", "migrate", vm, "--to", to, *opts]

    def migrate_start(self, src, vm, to, *opts, config=None):
        """Start `ferry migrate` in the background (see migrate()); finish it
        with migrate_result()."""
        return subprocess.Popen([str(a) for a in self.migrate_argv(src, vm, to, *opts,
                                                                   config=config)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def migrate_result(self, proc, timeout=600):
        """Wait for a migrate_start() process -> MigrateResult."""
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"ferry migrate did not end within {timeout}s; "
                                 f"stderr: {err}") from None
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        return MigrateResult(proc.returncode, events, err)

    def migrate(self, src, vm, to, *opts, timeout=600, config=None):
        """Run `ferry --host SRC --json migrate VM --to TO OPTS` to its end ->
        MigrateResult (returncode, JSON events, stderr; .summary is the final
        record). Does not assert the outcome."""
        return self.migrate_result(self.migrate_start(src, vm, to, *opts, config=config),
                                   timeout)

    def migrations(self, host):
        """GET /v1/migrations: active migrations and the history, newest first."""
        return self.api_ok(host, "GET", "/v1/migrations")["migrations"]

    def migration(self, host, mig_id):
        return self.api_ok(host, "GET", f"/v1/migrations/{mig_id}")

    def active_migration(self, host, vm):
        """The record of vm's migration in progress on host (source side), or
        None."""
        status, info = self.api(host, "GET", f"/v1/vms/{vm}")
        mig_id = info.get("active_migration") if status == 200 else None
        if not isinstance(mig_id, str) or info.get("state") == "incoming":
            return None
        rec = self.migration(host, mig_id)
        return rec if rec.get("outcome") == "running" else None

    def wait_migration(self, host, vm, pred, timeout=60, what="migration progress",
                       proc=None):
        """Poll vm's active outgoing migration on host until pred(record) is
        true; returns that record. proc (from migrate_start) lets it fail at
        once when the migration ended; until it has started, it waits."""
        last = {}

        def check():
            rec = self.active_migration(host, vm)
            if rec is None:
                if proc is not None and proc.poll() is not None:
                    done = [m for m in self.migrations(host)
                            if m.get("vm") == vm and m.get("role") == "source"]
                    raise AssertionError(
                        f"migration of {vm} on {host} ended (ferry exited "
                        f"{proc.returncode}) while waiting for {what}; latest: "
                        f"{done[0] if done else None}; last seen: {last}")
                return None
            last.clear()
            last.update(rec)
            return rec if pred(rec) else None
        try:
            return wait_until(check, timeout, 0.1, f"{what} of {vm} on {host}")
        except AssertionError as e:
            if "timed out" in str(e):
                raise AssertionError(f"{e}; last seen: {last}") from None
            raise

    def wait_migration_done(self, host, mig_id, timeout=120):
        """Poll migration mig_id on host until its outcome is no longer
        "running"; returns the final record."""
        return wait_until(lambda: (lambda r: r if r.get("outcome") != "running" else None)(
            self.migration(host, mig_id)), timeout, 0.2, f"migration {mig_id} on {host} to end")


@dataclass
class MigrateResult:
    """The end of a `ferry --json migrate` run: exit code, its JSON lines
    (events "started", "progress"..., "summary") and stderr."""
    returncode: int
    events: list
    stderr: str

    @property
    def summary(self):
        for e in reversed(self.events):
            if e.get("event") == "summary":
                return e
        raise AssertionError(f"ferry migrate printed no summary (exit "
                             f"{self.returncode}): {self.stderr}")

    @property
    def started(self):
        return next((e for e in self.events if e.get("event") == "started"), None)
