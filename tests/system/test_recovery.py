"""A VM is never lost and never runs twice: crash-safe migrations.

Each test stops a ferryd at a fault point of a migration (faultlib.py,
src/common/fault.h), injects a fault there, and checks where the VM ends
up: on exactly one host, beating with errors=0, both hosts agreeing, no
leftovers, both audit logs verifying. One test per row of the recovery
decision table (docs/migration-protocol.md, "Recovery"), and one per
finding of issue 9. Needs the sanitizer build with fault points:

    FERRY_BUILD=build-asan /usr/bin/python3 -m pytest tests/system/test_recovery.py
"""

import contextlib
import ctypes
import os
import signal
import time

import pytest

import faultlib as fl
from faultproxy import FaultProxy
from ferrylib import wait_until

A, B = "host-a", "host-b"
VM = "rec"
SMALL = {"memory_mib": 128, "mib": 8, "rate": 500}


@pytest.fixture
def cluster(make_cluster):
    c = make_cluster(start=False, ferryd_extra={"migration": fl.FAST_TIMEOUTS})
    if not fl.fault_points_built(c):
        pytest.skip("ferryd built without fault points (make asan builds them)")
    c.start_all()
    return c


def boot(c, host=A, name=VM, **kw):
    vm = c.define_vm(host, name, **SMALL, **kw)
    c.start_vm(host, name)
    c.wait_heartbeats(host, name, 2, after_seq=0)
    return vm["uuid"]


def last_seq(c, host, name=VM):
    hbs = c.heartbeats(host, name)
    return hbs[-1]["seq"] if hbs else 0


def settle_and_check(c, uuid, expect, mig_id=None, name=VM, timeout=90):
    """The VM settles on expect (a host, or None: nowhere), memload is sound
    there, both lists agree, nothing is left over, audit logs verify."""
    owner = fl.settled_owner(c, [A, B], name, uuid, timeout)
    assert owner == expect, f"vm {name} settled on {owner}, expected {expect}"
    if owner:
        fl.check_memload(c, owner, name)
        other = B if owner == A else A
        assert fl.vm_on(c, other, name) is None, f"{other} still lists {name}"
    fl.check_clean(c, [A, B])
    fl.check_audit(c, [A, B], mig_id)
    return owner


# ---------------------------------------------------------------- the source


def test_source_killed_after_destination_committed(cluster):
    """Split brain of issue 9: the source ferryd dies at switchover, after
    the destination resumed the VM. Restarted, the source learns the VM is
    the destination's and quits its copy; it is never resumed."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, B, "dst.committed")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, B)
    c.kill_host(A, signal.SIGKILL)
    fl.cont(c, B)
    fl.restart(c, A)
    # while resolving, the paused source copy refuses a plain resume
    status, reply = c.api(A, "POST", f"/v1/vms/{VM}/resume")
    assert status in (404, 409), (status, reply)
    settle_and_check(c, uuid, B, rec["id"])
    hist = [m for m in c.migrations(A) if m["id"] == rec["id"]]
    assert hist and hist[0]["outcome"] == "completed", hist


def test_source_killed_before_finish(cluster):
    """Outage of issue 9: the source ferryd dies at switchover before the
    destination got the finish. Restarted, it finishes the migration with
    the destination (which still holds the whole VM) instead of leaving it
    paused nowhere."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, A, "src.switchover")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, A)
    c.kill_host(A, signal.SIGKILL)
    fl.restart(c, A)
    settle_and_check(c, uuid, B, rec["id"])


def test_source_killed_before_transfer(cluster):
    """Row: source journal "prepared" (QEMU never got `migrate`): the VM
    goes on at the source and the destination's session is dropped."""
    c = cluster
    uuid = boot(c)
    seq = last_seq(c, A)
    fl.arm(c, A, "src.prepared")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, A)
    c.kill_host(A, signal.SIGKILL)
    fl.restart(c, A)
    settle_and_check(c, uuid, A, rec["id"])
    fl.check_memload(c, A, VM, after_seq=seq)


def test_source_killed_during_precopy(cluster):
    """Row: source journal "migrating", QEMU not completed: the broken
    migration ends and the VM goes on at the source."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, A, "src.precopy")
    rec = fl.start_migration(c, A, VM, B, {"bandwidth_mibps": 8})
    fl.wait_stopped(c, A)
    c.kill_host(A, signal.SIGKILL)
    fl.restart(c, A)
    settle_and_check(c, uuid, A, rec["id"])


def test_destination_lost_state_resumes_source(cluster):
    """Row: the destination never committed (its QEMU, holding the whole
    state, died at switchover) and says so: the source resumes."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, A, "src.switchover")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, A)
    fl.kill_qemu(c, B, uuid)
    fl.cont(c, A)
    done = fl.wait_outcome(c, A, rec["id"])
    assert done["outcome"] == "failed", done
    settle_and_check(c, uuid, A, rec["id"])


def test_unknown_outcome_stays_paused_until_answered(cluster):
    """Row: the destination is gone at the finish: the source keeps its copy
    paused ("unresolved", refused a plain resume) and asks again; when the
    destination comes back it answers "never committed" and the source
    resumes."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, B, "dst.loading")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, B)
    c.kill_host(B, signal.SIGKILL)
    wait_until(lambda: (fl.vm_on(c, A, VM) or {}).get("state") == "unresolved",
               60, 0.2, "the source copy to be unresolved")
    r = c.cli("vm", "list", host=A)
    assert "migrating (unresolved)" in r.stdout, r.stdout
    r = c.cli("vm", "resume", VM, host=A, check=False)
    assert r.returncode != 0 and "--force" in r.stderr, r
    assert fl.source_record(c, A, rec["id"])["outcome"] == "unresolved"
    fl.restart(c, B)
    settle_and_check(c, uuid, A, rec["id"])


def test_forced_resume_is_audited(cluster):
    """Guarded resume: an unresolved VM resumes only with --force, which is
    audited, and the resolver then leaves it to the operator."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, B, "dst.loading")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, B)
    c.kill_host(B, signal.SIGKILL)
    wait_until(lambda: (fl.vm_on(c, A, VM) or {}).get("state") == "unresolved",
               60, 0.2, "the source copy to be unresolved")
    c.cli("vm", "resume", VM, "--force", host=A)
    recs = [x for x in fl.audit_records(c, A, "vm.resume")
            if x["target"] == VM and x["detail"].get("force")]
    assert recs and recs[-1]["outcome"] == "ok", recs
    fl.restart(c, B)
    # the resolver records the end at its next attempt (backoff up to 60 s)
    wait_until(lambda: any(x["detail"].get("id") == rec["id"] for x in
                           fl.audit_records(c, A, "migration.end")),
               90, 0.5, "the source's migration.end")
    settle_and_check(c, uuid, A, rec["id"])


# ---------------------------------------------------------------- the destination


def test_destination_killed_while_committing(cluster):
    """Row: destination journal "committing" (QEMU loaded, not yet
    resumed): the restarted destination finishes the commit, and the source
    hands the VM over."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, B, "dst.committing")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, B)
    c.kill_host(B, signal.SIGKILL)
    fl.restart(c, B)
    settle_and_check(c, uuid, B, rec["id"])


def test_destination_killed_after_commit(cluster):
    """Row: destination journal "committed": adopted after the restart."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, B, "dst.committed")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, B)
    c.kill_host(B, signal.SIGKILL)
    fl.restart(c, B)
    settle_and_check(c, uuid, B, rec["id"])


def test_destination_killed_when_prepared(cluster):
    """Row: destination journal "prepared": discarded after the restart; the
    source, without an answer to its prepare, keeps the VM."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, B, "dst.prepared")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, B)
    c.kill_host(B, signal.SIGKILL)
    fl.restart(c, B)
    done = fl.wait_outcome(c, A, rec["id"])
    assert done["outcome"] == "failed", done
    settle_and_check(c, uuid, A)


def test_commit_is_never_undone(cluster):
    """Irreversible commit: once the destination resumed the VM, a failure
    to save its definition is retried and reported, never answered by
    discarding the running VM."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, B, "dst.committing")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, B)
    blocker = c.vm_dir(B, VM) / "vm.json"
    blocker.mkdir()
    (blocker / "x").write_text("keeps the rename from succeeding")
    fl.cont(c, B)
    info = wait_until(lambda: (lambda v: v if v and v["state"] == "running" and
                               "cannot save" in v.get("last_error", "") else None)(
        fl.vm_on(c, B, VM)), 60, 0.2, "the committed VM to report its save error")
    assert info["pid"] > 0, info
    os.remove(blocker / "x")
    blocker.rmdir()
    wait_until(lambda: (c.vm_dir(B, VM) / "vm.json").is_file(), 60, 0.2,
               "the definition to be saved by a retry")
    settle_and_check(c, uuid, B, rec["id"])
    c.restart_host(B)  # the saved definition is this host's VM
    settle_and_check(c, uuid, B)


def test_qemu_exits_during_finish(cluster):
    """The destination QEMU exits while a finish waits for it: the session
    ends once (no use-after-free, no double free under ASan), the source
    learns "never committed" and resumes."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, B, "dst.loading")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, B)
    fl.kill_qemu(c, B, uuid)
    fl.cont(c, B)
    done = fl.wait_outcome(c, A, rec["id"])
    assert done["outcome"] == "failed", done
    settle_and_check(c, uuid, A, rec["id"])


def test_repeated_finish_and_query_after_commit(cluster):
    """A repeated finish and a query of a committed session answer
    "committed" from the journal (no stale session is touched)."""
    c = cluster
    boot(c)
    rec = fl.start_migration(c, A, VM, B)
    done = fl.wait_outcome(c, A, rec["id"])
    assert done["outcome"] == "completed", done
    host_a = (str(c.pki / "hosts" / "host-a.crt"), str(c.pki / "hosts" / "host-a.key"))
    sess = done["session"]
    for _ in range(2):
        status, reply = c.api(B, "POST", f"/v1/incoming/{sess}/finish",
                              {"resume": True}, cert=host_a)
        assert status == 200 and reply["outcome"] == "committed", (status, reply)
        status, reply = c.api(B, "GET", f"/v1/incoming/{sess}", cert=host_a)
        assert status == 200 and reply["outcome"] == "committed", (status, reply)
    # an id it never saw: explicitly not committed
    status, reply = c.api(B, "GET", "/v1/incoming/" + "0" * 32, cert=host_a)
    assert status == 200 and reply["outcome"] == "not_committed", (status, reply)


# ---------------------------------------------------------------- post-copy

# capped, so that the faults land while post-copy still pulls pages: QEMU
# 7.2's source wedges when its stream breaks in post-copy's completion
# step (docs/reliability.md, "What the matrix does not cover")
POSTCOPY = {"mode": "postcopy", "bandwidth_mibps": 4}


def test_postcopy_source_killed(cluster):
    """The source ferryd dies while the destination runs the VM in
    post-copy (pulling its pages through the source): the restarted source
    carries the stream again (QEMU's post-copy recovery) and the VM keeps
    running on the destination, memload intact."""
    c = cluster
    uuid = boot(c, migration={"allow_postcopy": True})
    fl.arm(c, A, "src.postcopy")
    rec = fl.start_migration(c, A, VM, B, POSTCOPY)
    fl.wait_stopped(c, A)
    c.kill_host(A, signal.SIGKILL)
    fl.restart(c, A)
    done = fl.wait_outcome(c, A, rec["id"])
    assert done["outcome"] == "completed", done
    settle_and_check(c, uuid, B, rec["id"])


def test_postcopy_destination_killed(cluster):
    """The destination ferryd dies in post-copy: the source keeps asking
    until it is back, then resumes the stream."""
    c = cluster
    uuid = boot(c, migration={"allow_postcopy": True})
    fl.arm(c, A, "src.postcopy")
    rec = fl.start_migration(c, A, VM, B, POSTCOPY)
    fl.wait_stopped(c, A)
    c.kill_host(B, signal.SIGKILL)
    fl.cont(c, A)
    time.sleep(2)  # the source finds the stream broken, asks in vain
    fl.restart(c, B)
    done = fl.wait_outcome(c, A, rec["id"])
    assert done["outcome"] == "completed", done
    assert done.get("postcopy_recoveries", 0) >= 1, done
    settle_and_check(c, uuid, B, rec["id"])


def test_postcopy_recovery_handshake_fails(make_cluster, request):
    """The post-copy stream breaks (a flipped byte), then the recovery
    channel's TLS handshake fails too (another flipped byte, in the
    destination's first answer). The source dials and authenticates that
    channel before it tells its QEMU to resume, so QEMU is still
    postcopy-paused when the handshake fails: the source dials again and
    the VM keeps running on the destination (postcopy:corrupt_byte of the
    fault matrix; QEMU 7.2 wedges when told to resume over a dead
    channel)."""
    c = make_cluster(start=False)
    if not fl.fault_points_built(c):
        pytest.skip("ferryd built without fault points (make asan builds them)")
    hb = c.hosts[B]
    data = FaultProxy(hb.address, hb.port + 1, listen_host=hb.address).start()
    request.addfinalizer(data.stop)
    c.write_host_config(B, migration={**fl.FAST_TIMEOUTS,
                                      "advertise_address": hb.address,
                                      "advertise_port": data.port})
    c.start_all()
    uuid = boot(c, migration={"allow_postcopy": True})
    fl.arm(c, A, "src.postcopy")
    rec = fl.start_migration(c, A, VM, B, POSTCOPY)
    fl.wait_stopped(c, A)
    # post-copy's one stream is connection 0; the recovery's is 1
    data.corrupt(data.bytes_forwarded("up", conn=0) + 100, "up", conn=0)
    data.corrupt(60, "down", conn=1)  # inside the TLS ServerHello
    fl.cont(c, A)
    done = fl.wait_outcome(c, A, rec["id"])
    assert data.pending_corruptions == 0, data.events
    assert done["outcome"] == "completed", done
    assert done.get("postcopy_recoveries", 0) >= 1, done
    settle_and_check(c, uuid, B, rec["id"])


@contextlib.contextmanager
def main_thread_frozen(pid):
    """Hold only the main thread of process pid (ptrace-stopped; its other
    threads run on), as a vCPU that waits for a post-copy page while
    holding QEMU's global lock does: QMP's in-band commands, capability
    negotiation included, never answer, out-of-band ones do."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                            ctypes.c_void_p]
    seize, interrupt, detach, wall = 0x4206, 0x4207, 17, 0x40000000
    if libc.ptrace(seize, pid, None, None) != 0:
        raise OSError(ctypes.get_errno(), f"PTRACE_SEIZE {pid}")
    try:
        assert libc.ptrace(interrupt, pid, None, None) == 0
        os.waitpid(pid, wall)
        yield
    finally:
        libc.ptrace(detach, pid, None, None)


def test_postcopy_destination_killed_qemu_blocked(cluster):
    """The destination ferryd dies in post-copy while its QEMU's main
    thread is blocked (a vCPU waits for a page with the global lock held):
    a new monitor connection cannot even be negotiated there. The restarted
    ferryd takes back the negotiated monitor QEMU kept for it, runs the
    recovery out of band, and the VM keeps running on the destination
    (postcopy:kill_dst_ferryd of the fault matrix)."""
    c = cluster
    uuid = boot(c, migration={"allow_postcopy": True})
    fl.arm(c, A, "src.postcopy")
    rec = fl.start_migration(c, A, VM, B, POSTCOPY)
    fl.wait_stopped(c, A)
    c.kill_host(B, signal.SIGKILL)
    with main_thread_frozen(fl.qemu_pid(c, B, uuid)):
        fl.cont(c, A)
        fl.restart(c, B)
        # the stream is carried again while the main thread still waits
        wait_until(lambda: (fl.source_record(c, A, rec["id"]) or {})
                   .get("postcopy_recoveries", 0) >= 1, 90, 0.5,
                   "the source to resume post-copy")
    done = fl.wait_outcome(c, A, rec["id"])
    assert done["outcome"] == "completed", done
    settle_and_check(c, uuid, B, rec["id"])


def split_postcopy(c, victim):
    """Post-copy under way (the VM runs on B, pages still come from A),
    then victim's QEMU of the VM is killed: the VM's memory is split."""
    uuid = boot(c, migration={"allow_postcopy": True})
    fl.arm(c, A, "src.postcopy")
    rec = fl.start_migration(c, A, VM, B, POSTCOPY)
    fl.wait_stopped(c, A)
    fl.kill_qemu(c, victim, uuid)
    fl.cont(c, A)
    done = fl.wait_outcome(c, A, rec["id"])
    assert done["outcome"] == "failed", done
    return uuid, rec


def crashed_on_b(c, uuid, rec):
    """The VM settles nowhere; only B, which owns it since the switch,
    lists it: shut off, with why."""
    assert settle_and_check(c, uuid, None, rec["id"]) is None
    assert fl.vm_on(c, A, VM) is None, "the source kept its void copy"
    v = fl.vm_on(c, B, VM)
    assert v and v["state"] == "shutoff", v
    return v


def test_postcopy_source_qemu_killed(cluster):
    """The source QEMU dies in post-copy: the destination's VM waits for
    pages that will never come. The source tells it (POST
    /v1/incoming/ID/lost) and B stops the VM, recorded and audited as
    crashed, instead of leaving a hung VM that looks "running"."""
    c = cluster
    uuid, rec = split_postcopy(c, A)
    v = crashed_on_b(c, uuid, rec)
    assert "crashed" in v.get("last_error", ""), v
    assert any(r["target"] == VM for r in fl.audit_records(c, B, "vm.crashed"))


def test_postcopy_destination_qemu_killed(cluster):
    """The destination QEMU dies in post-copy: recovery is refused (the VM
    is gone there), and the source drops its void copy rather than keep a
    paused QEMU that can never run."""
    c = cluster
    uuid, rec = split_postcopy(c, B)
    crashed_on_b(c, uuid, rec)


# ---------------------------------------------------------------- answers that are not answers


def test_refusals_are_not_absence(cluster, request):
    """Guessing "absent" of issue 9: after the destination committed, the
    source's queries get 403 (its policy changed) or nothing (the link is
    cut): the source keeps its copy paused until a real answer says the VM
    is the destination's, and never resumes it."""
    c = cluster
    uuid = boot(c)
    hb = c.hosts[B]
    proxy = FaultProxy(hb.address, hb.port, listen_host=hb.address).start()
    request.addfinalizer(proxy.stop)
    fl.arm(c, B, "dst.committed")
    rec = fl.start_migration(c, A, VM, B, port=proxy.port)
    fl.wait_stopped(c, B)
    proxy.cut()  # the finish's answer is lost
    deny = c.default_policy()
    deny["roles"]["host"] = [B]  # host-a is no peer of host-b any more
    c.write_policy(B, deny)
    os.kill(hb.proc.pid, signal.SIGHUP)
    fl.cont(c, B)
    wait_until(lambda: any(x["outcome"] == "ok" for x in
                           fl.audit_records(c, B, "policy.reload")), 30, 0.2,
               "host-b to reload its policy")
    proxy.heal()
    wait_until(lambda: (fl.vm_on(c, A, VM) or {}).get("state") == "unresolved",
               60, 0.2, "the source copy to be unresolved")
    time.sleep(3)  # several refused queries: still unresolved, never resumed
    assert fl.vm_on(c, A, VM)["state"] == "unresolved"
    assert c.vm_info(B, VM)["state"] == "running"
    c.write_policy(B, c.default_policy())
    os.kill(hb.proc.pid, signal.SIGHUP)
    settle_and_check(c, uuid, B, rec["id"])


# ---------------------------------------------------------------- the loop never blocks


def test_loop_answers_while_qemu_is_stuck(cluster):
    """While a finish waits on a destination QEMU that does not answer,
    both hosts keep answering `host info` and `vm list` promptly."""
    c = cluster
    uuid = boot(c)
    fl.arm(c, B, "dst.loading")
    rec = fl.start_migration(c, A, VM, B)
    fl.wait_stopped(c, B)
    qpid = fl.qemu_pid(c, B, uuid)
    os.kill(qpid, signal.SIGSTOP)
    try:
        fl.cont(c, B)
        time.sleep(1)  # the finish now waits on the stopped QEMU
        worst = 0.0
        for _ in range(5):
            for h in (A, B):
                for args in (("host", "info"), ("vm", "list")):
                    t, _ = fl.timed(lambda: c.cli(*args, host=h))
                    worst = max(worst, t)
        assert worst < 2.0, f"a host took {worst:.2f} s to answer"
    finally:
        os.kill(qpid, signal.SIGCONT)
    done = fl.wait_outcome(c, A, rec["id"])
    owner = settle_and_check(c, uuid, B if done["outcome"] == "completed" else A,
                             rec["id"])
    assert owner in (A, B)


def test_stop_with_a_stuck_incoming_migration(cluster):
    """Stopping the destination ferryd while its incoming QEMU is frozen
    mid-transfer ends cleanly (its channel threads end before it frees what
    they use): no sanitizer report, the source keeps the VM."""
    c = cluster
    uuid = boot(c)
    rec = fl.start_migration(c, A, VM, B, {"bandwidth_mibps": 4})
    c.wait_migration(A, VM, lambda r: r.get("phase") == "precopy", 60,
                     "the transfer to run")
    qpid = fl.qemu_pid(c, B, uuid)
    os.kill(qpid, signal.SIGSTOP)
    try:
        t, rc = fl.timed(lambda: c.stop_host(B))
        assert rc == 0 and t < 20, (rc, t)
    finally:
        try:
            os.kill(qpid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    fl.restart(c, B)
    done = fl.wait_outcome(c, A, rec["id"])
    assert done["outcome"] in ("failed", "cancelled"), done
    settle_and_check(c, uuid, A)
