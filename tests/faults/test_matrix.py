"""The fault matrix: each fault at each phase of a live migration, with the
invariants of faultlib.py checked after every trial (docs/reliability.md).

A trial migrates the VM from the host that runs it to the other one, with
a fault point armed on one of them (the phase's trigger); when that ferryd
has stopped itself there, the fault is injected, whatever still lives is
continued, whatever was killed is restarted, and the trial waits until the
VM has settled. A probe reads both hosts' serial consoles all along: the
same memload heartbeat on both hosts means the VM ran twice.

Outcomes per trial: ok, lost (runs nowhere; in a crash cell — the fault
killed the QEMU the VM was running in — that is "crashed", which is not
ferry's loss), twice, corrupt (memload saw an error), leaked (a host has
QEMU processes, sockets or files of no VM), audit (a log does not verify or
misses the migration's end).
"""

import json
import os
import signal
import threading
import time
import uuid as uuidlib

import pytest

import faultlib as fl
from faultproxy import FaultProxy
from ferrylib import parse_heartbeats, wait_until

A, B = "host-a", "host-b"
VM = "fm"
SMALL = {"memory_mib": 128, "mib": 8, "rate": 500}
TRIALS = int(os.environ.get("FAULT_TRIALS", "3"))
RUN = os.environ.get("FAULT_RUN") or uuidlib.uuid4().hex[:8]
HOLD_S = 14  # a SIGSTOP longer than every control-plane timeout below
TIMEOUTS = {"peer_timeout_s": 8, "confirm_timeout_s": 10, "stall_timeout_s": 8}

# phase: (whose fault point, the point)
PHASES = {
    "prepare": ("src", "src.prepared"),
    "precopy": ("src", "src.precopy"),
    "switchover": ("src", "src.switchover"),
    "finish": ("dst", "dst.committed"),
    "postcopy": ("src", "src.postcopy"),
}
FAULTS = ["kill_src_ferryd", "kill_dst_ferryd", "kill_src_qemu", "kill_dst_qemu",
          "stop_src_ferryd", "stop_dst_ferryd", "cut_link", "stall_link",
          "corrupt_byte"]
# the fault kills the QEMU the VM runs in at that phase: a crashed VM
CRASH = {("prepare", "kill_src_qemu"), ("precopy", "kill_src_qemu"),
         ("finish", "kill_dst_qemu"), ("postcopy", "kill_src_qemu"),
         ("postcopy", "kill_dst_qemu")}
SMOKE = ["switchover:kill_src_ferryd", "finish:kill_dst_ferryd",
         "precopy:cut_link", "switchover:kill_dst_qemu"]


def cells():
    sel = os.environ.get("FAULT_CELLS", "all")
    every = [f"{p}:{f}" for p in PHASES for f in FAULTS]
    if sel == "all":
        return every
    if sel == "smoke":
        return SMOKE
    return [c for c in sel.split(",") if c in every]


class Probe:
    """Reads both hosts' console files every 100 ms and remembers which
    memload heartbeats each host printed."""

    def __init__(self, c, name):
        self.c, self.name = c, name
        self.seen = {A: set(), B: set()}
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_ev.wait(0.1):
            for h in (A, B):
                for hb in parse_heartbeats(self.c.console_file(h, self.name)):
                    self.seen[h].add(hb["seq"])

    def __enter__(self):
        self.base = {h: set(s) for h, s in self.seen.items()}
        for h in (A, B):
            self.base[h] |= {hb["seq"] for hb in
                             parse_heartbeats(self.c.console_file(h, self.name))}
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.t.join()

    def twice(self):
        """Heartbeats printed on both hosts during the trial."""
        new = {h: self.seen[h] - self.base[h] for h in (A, B)}
        return sorted(new[A] & new[B])


@pytest.fixture
def rig(make_cluster, request):
    """Two hosts, each reachable through a fault proxy on its API port (the
    source's calls) and on its migration port (the channels)."""
    c = make_cluster(start=False)
    if not fl.fault_points_built(c):
        pytest.skip("ferryd built without fault points (make asan builds them)")
    api, data = {}, {}
    for name, h in c.hosts.items():
        api[name] = FaultProxy(h.address, h.port, listen_host=h.address).start()
        data[name] = FaultProxy(h.address, h.port + 1, listen_host=h.address).start()
        request.addfinalizer(api[name].stop)
        request.addfinalizer(data[name].stop)
        c.write_host_config(name, migration={**TIMEOUTS,
                                             "advertise_address": h.address,
                                             "advertise_port": data[name].port})
    c.start_all()
    return c, api, data


def fresh_vm(c, postcopy):
    """Remove what is left of the VM anywhere, define and boot it on A."""
    for h in (A, B):
        v = fl.vm_on(c, h, VM)
        if v and v["state"] != "shutoff":
            c.api(h, "POST", f"/v1/vms/{VM}/stop", {"force": True})
            c.wait_vm_state(h, VM, "shutoff", 30)
        if fl.vm_on(c, h, VM):
            c.api_ok(h, "DELETE", f"/v1/vms/{VM}")
    vm = c.define_vm(A, VM, migration={"allow_postcopy": True}, **SMALL) \
        if postcopy else c.define_vm(A, VM, **SMALL)
    c.start_vm(A, VM)
    c.wait_heartbeats(A, VM, 2, after_seq=0)
    return vm["uuid"]


def inject(c, api, data, fault, src, dst, trig, uid):
    """The fault, with trig stopped at its point; returns the hosts to
    restart."""
    proxies = [api[dst], data[dst]]
    if fault in ("kill_src_ferryd", "kill_dst_ferryd"):
        victim = src if fault == "kill_src_ferryd" else dst
        c.kill_host(victim, signal.SIGKILL)
        if victim != trig:
            fl.cont(c, trig)
        return [victim]
    if fault in ("kill_src_qemu", "kill_dst_qemu"):
        fl.kill_qemu(c, src if fault == "kill_src_qemu" else dst, uid)
        fl.cont(c, trig)
        return []
    if fault in ("stop_src_ferryd", "stop_dst_ferryd"):
        victim = src if fault == "stop_src_ferryd" else dst
        if victim != trig:
            os.kill(c.hosts[victim].proc.pid, signal.SIGSTOP)
            fl.cont(c, trig)
        time.sleep(HOLD_S)
        os.kill(c.hosts[victim].proc.pid, signal.SIGCONT)
        return []
    if fault == "cut_link":
        for p in proxies:
            p.cut()
        fl.cont(c, trig)
        time.sleep(HOLD_S)
        for p in proxies:
            p.heal()
        return []
    if fault == "stall_link":
        for p in proxies:
            p.stall()
        fl.cont(c, trig)
        time.sleep(HOLD_S)
        for p in proxies:
            p.heal()
        return []
    if fault == "corrupt_byte":
        for p in proxies:
            p.corrupt(100, direction="up", relative=True)
            p.corrupt(100, direction="down", relative=True)
        fl.cont(c, trig)
        return []
    raise AssertionError(f"unknown fault {fault}")


def open_journals(c):
    """Journal entries of migrations that are still open on either host:
    a source's (its entry goes when the migration is resolved) or a
    destination's not yet committed or aborted (decided ones stay, to
    answer the source's confirm)."""
    left = []
    for h in (A, B):
        jdir = c.hosts[h].state_dir / "journal"
        for f in sorted(jdir.glob("*.json")) if jdir.is_dir() else []:
            if f.name.startswith("src-"):
                left.append(f"{h}:{f.name}")
            elif f.name.startswith("dst-"):
                try:
                    phase = json.loads(f.read_text()).get("phase")
                except (OSError, ValueError):
                    phase = "unreadable"
                if phase not in ("committed", "aborted"):
                    left.append(f"{h}:{f.name}:{phase}")
    return left


def classify(c, name, uid, crash, probe, src, mig_id):
    """(outcome, detail) of a trial once the VM settled (or did not)."""
    twice = probe.twice()
    if twice:
        return "twice", f"heartbeats {twice[:5]} on both hosts"
    try:
        owner = fl.settled_owner(c, [A, B], name, uid, timeout=150)
    except AssertionError as e:
        return ("twice" if "runs on" in str(e) else "lost"), str(e)[:300]
    if owner is None:
        if not crash:
            return "lost", "the VM runs nowhere"
        outcome, detail = "crashed", "the VM crashed with its QEMU"
    else:
        try:
            fl.check_memload(c, owner, name)
        except AssertionError as e:
            return "corrupt", str(e)[:300]
        outcome, detail = "ok", f"runs on {owner}"
    try:
        wait_until(lambda: not open_journals(c), 60, 0.5,
                   "the migration's journal entries to close")
    except AssertionError:
        return "leaked", f"journal entries left: {open_journals(c)}"
    for h in (A, B):
        problems = c.leftovers(h)
        if problems:
            time.sleep(3)  # a clean-up may still be in flight
            problems = c.leftovers(h)
        if problems:
            return "leaked", f"{h}: {problems[:3]}"
    try:
        fl.check_audit(c, [A, B])
        # the source recorded how the migration ended, even across a crash
        wait_until(lambda: any(x["detail"].get("id") == mig_id for x in
                               fl.audit_records(c, src, "migration.end")),
                   30, 0.5, f"{src}'s migration.end of {mig_id}")
    except AssertionError as e:
        return "audit", str(e)[:300]
    return outcome, detail


@pytest.mark.parametrize("cell", cells())
def test_cell(rig, results, cell):
    c, api, data = rig
    phase, fault = cell.split(":")
    side, point = PHASES[phase]
    crash = (phase, fault) in CRASH
    postcopy = phase == "postcopy"
    uid = fresh_vm(c, postcopy)
    bad = []
    for n in range(TRIALS):
        owner = next(h for h in (A, B) if fl.vm_on(c, h, VM) and
                     fl.vm_on(c, h, VM)["state"] == "running")
        src, dst = owner, (B if owner == A else A)
        trig = src if side == "src" else dst
        fl.arm(c, trig, point)
        # capped: the fault lands while post-copy still pulls pages
        # (docs/reliability.md, what the matrix does not cover)
        extra = {"mode": "postcopy", "bandwidth_mibps": 4} if postcopy else {}
        if phase == "precopy":
            extra["bandwidth_mibps"] = 16  # stays in precopy a while
        t0 = time.monotonic()
        with Probe(c, VM) as probe:
            rec = fl.start_migration(c, src, VM, dst, extra, port=api[dst].port)
            try:
                fl.wait_stopped(c, trig, timeout=120)
                for h in inject(c, api, data, fault, src, dst, trig, uid):
                    fl.restart(c, h)
                for h in (A, B):
                    if not c.hosts[h].running():
                        fl.restart(c, h)
                outcome, detail = classify(c, VM, uid, crash, probe, src, rec["id"])
            except AssertionError as e:
                outcome, detail = "harness", str(e)[:300]
        # a corruption the trial never reached must not hit the next one
        for p in [*api.values(), *data.values()]:
            p.disarm_corruptions()
        results({"run": RUN, "phase": phase, "fault": fault, "trial": n,
                 "crash_cell": crash, "outcome": outcome, "detail": detail,
                 "seconds": round(time.monotonic() - t0, 1)})
        if outcome not in ("ok", "crashed"):
            bad.append((n, outcome, detail))
        if outcome != "ok":
            uid = fresh_vm(c, postcopy)
    assert not bad, f"{cell}: {bad}"
