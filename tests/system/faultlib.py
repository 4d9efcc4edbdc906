"""Fault injection for ferry's recovery tests and the fault matrix.

ferryd built with -Dfault_points=true (the sanitizer build, `make asan`)
stops itself with SIGSTOP the first time it reaches the point named in
$FERRY_FAULT_POINT (src/common/fault.h). A test arms a point on one host,
starts a migration, waits until that ferryd is stopped there, injects its
fault (kills a process, cuts a link, changes a file) at exactly that
phase, continues what is still alive, and then checks the invariants:

- the VM runs on exactly one host (or nowhere, when the fault killed the
  QEMU the VM was running in: a crashed VM), and no host still shows it
  "unresolved";
- memload on the running copy keeps beating with errors=0 and no
  CORRUPTION line;
- both hosts' VM lists agree;
- neither host has leftovers (QEMU processes, sockets, files of no VM);
- both audit logs verify, and the migration's end is recorded.

Points (src/migrate): src.prepared, src.precopy, src.switchover,
src.committed, src.postcopy; dst.prepared, dst.loading, dst.committing,
dst.committed (docs/reliability.md says where each one is).
"""

import json
import os
import signal
import time

from ferrylib import (CORRUPTION_RE, parse_heartbeats, proc_state, qemu_running,
                      wait_until)

# short timeouts, so that stalls and silences resolve within a test
FAST_TIMEOUTS = {"peer_timeout_s": 15, "confirm_timeout_s": 10, "stall_timeout_s": 10}


def fault_points_built(cluster):
    """Was ferryd built with fault points?"""
    return b"fault point %s reached" in cluster.ferryd_bin.read_bytes()


def arm(c, host, point):
    """(Re)start host's ferryd so that it stops at point."""
    h = c.hosts[host]
    if h.running():
        c.stop_host(host)
    c.start_host(host, env={"FERRY_FAULT_POINT": point})


def wait_stopped(c, host, timeout=90):
    """Wait until host's ferryd has stopped itself at its fault point."""
    h = c.hosts[host]

    def stopped():
        if h.proc.poll() is not None:
            raise AssertionError(f"ferryd {host} exited ({h.proc.returncode}) "
                                 f"before its fault point")
        return proc_state(h.proc.pid) == "T"
    wait_until(stopped, timeout, 0.05, f"ferryd {host} to stop at its fault point")


def cont(c, host):
    """SIGCONT host's ferryd (stopped at its fault point)."""
    os.kill(c.hosts[host].proc.pid, signal.SIGCONT)


def restart(c, host):
    """Start host's ferryd again without a fault point (after a kill)."""
    c.start_host(host)


def qemu_pid(c, host, uuid):
    pids = c.qemu_pids(host, uuid)
    assert len(pids) <= 1, f"{host} runs {len(pids)} QEMUs for {uuid}"
    return next(iter(pids), None)


def kill_qemu(c, host, uuid):
    pid = qemu_pid(c, host, uuid)
    assert pid, f"{host} has no QEMU for {uuid} to kill"
    os.kill(pid, signal.SIGKILL)
    return pid


def vm_on(c, host, name):
    """host's view of vm name: its record, or None when it does not list it."""
    status, info = c.api(host, "GET", f"/v1/vms/{name}")
    return info if status == 200 else None


def settled_owner(c, hosts, name, uuid, timeout=90):
    """Wait until exactly one host runs vm name (QEMU alive, state running,
    nothing unresolved, incoming or held by a migration anywhere) or none does (every host lists
    it shut off or not at all); returns the owner or None."""
    last = {}

    def check():
        views = {h: vm_on(c, h, name) for h in hosts}
        last.update(views)
        states = {h: v["state"] for h, v in views.items() if v}
        if any(s in ("unresolved", "incoming", "starting", "stopping")
               for s in states.values()):
            return None
        # a migration still holds it: the hosts are read one after the
        # other, so its switchover can fall between two reads
        if any(v and v.get("hold") for v in views.values()):
            return None
        running = [h for h, v in views.items()
                   if v and v["state"] == "running" and qemu_running(v["pid"], uuid)]
        others_quiet = all(not c.qemu_pids(h, uuid) for h in hosts if h not in running)
        if len(running) == 1 and others_quiet:
            return running[0]
        if not running and others_quiet and all(
                not v or v["state"] == "shutoff" for v in views.values()):
            return "nowhere"
        if len(running) > 1:
            brief = {h: v and {k: v.get(k) for k in ("state", "pid", "hold", "last_error")}
                     for h, v in views.items()}
            raise AssertionError(f"vm {name} runs on {running}: {brief}")
        return None
    try:
        owner = wait_until(check, timeout, 0.25, f"vm {name} to settle")
    except AssertionError as e:
        raise AssertionError(f"{e}; last views: {last}") from None
    return None if owner == "nowhere" else owner


def check_memload(c, host, name, after_seq=0, n=2, timeout=60):
    """memload on host's copy beats n more times, errors=0, no CORRUPTION."""
    c.wait_heartbeats(host, name, n, after_seq=after_seq, timeout=timeout)
    text = c.console(host, name)
    hbs = parse_heartbeats(text)
    assert hbs and hbs[-1]["errors"] == 0, hbs[-3:]
    assert not CORRUPTION_RE.search(text), CORRUPTION_RE.search(text).group(0)


def check_clean(c, hosts):
    for h in hosts:
        c.no_leftovers(h)


def audit_records(c, host, action=None):
    q = "/v1/audit?limit=10000" + (f"&action={action}" if action else "")
    return c.api_ok(host, "GET", q)["records"]


def check_audit(c, hosts, mig_id=None):
    """Every host's audit log verifies (ferry audit verify), and when
    mig_id is given, each names the migration's end."""
    for h in hosts:
        r = c.cli("--json", "audit", "verify", host=h, check=False)
        assert r.returncode == 0, f"{h}: audit verify: {r.stdout} {r.stderr}"
        rep = json.loads(r.stdout.splitlines()[-1])
        assert rep.get("ok") is not False, rep
    if mig_id:
        for h in hosts:
            ends = [x for x in audit_records(c, h, "migration.end")
                    if x["detail"].get("id") == mig_id]
            assert ends, f"{h} has no migration.end for {mig_id}"


def source_record(c, host, mig_id):
    status, rec = c.api(host, "GET", f"/v1/migrations/{mig_id}")
    return rec if status == 200 else None


def start_migration(c, src, name, dst, body_extra=None, address=None, port=None):
    """POST /v1/vms/NAME/migrate on src -> the record (202)."""
    h = c.hosts[dst]
    body = {"to": dst, "address": address or h.address, "port": port or h.port}
    body.update(body_extra or {})
    return c.api_ok(src, "POST", f"/v1/vms/{name}/migrate", body, expect=(202,))


def wait_outcome(c, host, mig_id, timeout=120):
    """The migration's record on host once it has left "running"."""
    def done():
        rec = source_record(c, host, mig_id)
        return rec if rec and rec.get("outcome") not in (None, "running") else None
    return wait_until(done, timeout, 0.2, f"migration {mig_id} on {host} to end")


def timed(fn):
    """(seconds, result) of fn()."""
    t0 = time.monotonic()
    r = fn()
    return time.monotonic() - t0, r
