"""Checkpoint HA across ferryd restarts (docs/ha.md, "Restarts"): the
primary keeps an HA record per protected VM; a restarted ferryd asks etcd
who owns each VM before it touches it, then resumes protection, thaws its
frozen copy under a retaken lease, or removes the copy. Real ferryd hosts,
QEMU guests and etcd on loopback (make check-ha)."""
import json
import os
import time

import pytest

import ferrylib
import halib
from test_ha import enable, fence_agents, proc_state

pytestmark = pytest.mark.skipif(os.environ.get("FERRY_HA_FULL") != "1",
                                reason="FERRY_HA_FULL=1 (make check-ha)")


def protected(request, make_cluster, make_etcd):
    """host-a runs vm1 (memload), protected by host-b every 2 s, 2
    checkpoints taken. -> (cluster, QEMU pid on host-a, vm1's uuid)."""
    c, _, pid = halib.protected_vm(request, make_cluster, make_etcd)
    return c, pid, c.vm_info("host-a", "vm1")["uuid"]


def record_path(c, host, uuid):
    return c.hosts[host].state_dir / "ha" / f"{uuid}.json"


def audit_actions(c, host):
    return [r["action"] for r in c.api_ok(host, "GET", "/v1/audit?limit=500")["records"]]


def wait_frozen(pid):
    ferrylib.wait_until(lambda: proc_state(pid) == "T", 10, 0.05,
                        f"QEMU {pid} to be frozen")


def test_ha_restart_graceful_resumes(request, make_cluster, make_etcd):
    """SIGTERM of the primary's ferryd, started again: the VM runs on
    throughout (never frozen, the same QEMU), protection resumes by itself
    with a new standby, checkpoints go on, and a failover afterwards gets
    an intact VM; the backup never ran it before."""
    c, pid, uuid = protected(request, make_cluster, make_etcd)
    console_b = c.vm_dir("host-b", "vm1") / "console.log"
    before = c.heartbeats("host-a", "vm1")[-1]["seq"]
    c.stop_host("host-a")
    assert proc_state(pid) not in (None, "T"), proc_state(pid)
    c.start_host("host-a")
    # protection resumes: a new standby on host-b, checkpoints from 1 again
    st = halib.wait_checkpoints(c, "host-a", "vm1", 2, timeout=60)
    assert st["health"] == "ok" and st["lease_holder"] == "host-a", st
    assert st["backup"] == "host-b", st
    vm = c.vm_info("host-a", "vm1")
    assert vm["pid"] == pid and vm["state"] == "running", vm
    assert proc_state(pid) not in (None, "T")
    assert halib.vm_names(c, "host-b")["vm1"]["hold"] == "ha-standby"
    hbs = c.wait_heartbeats("host-a", "vm1", n=3, after_seq=before)
    assert all(h["errors"] == 0 for h in hbs), hbs
    assert "ha.resumed" in audit_actions(c, "host-a")
    assert not console_b.exists() or console_b.stat().st_size == 0, "ran on host-b"
    rec = json.loads(record_path(c, "host-a", uuid).read_text())
    assert rec["backup"] == "host-b" and rec["interval_s"] == 2 and rec["version"] == 1, rec
    # the checkpoints after the restart are whole: the backup resumes from one
    n = halib.ha_status(c, "host-a", "vm1")["last_checkpoint"]["seq"]
    halib.wait_checkpoints(c, "host-a", "vm1", n + 1)
    halib.kill_qemu(c, "host-a", "vm1")
    c.wait_vm_state("host-b", "vm1", "running", timeout=10)
    hbs = c.wait_heartbeats("host-b", "vm1", n=2, after_seq=0, timeout=60)
    assert all(h["errors"] == 0 for h in hbs), hbs
    ferrylib.wait_until(lambda: "vm1" not in halib.vm_names(c, "host-a"), 20, 0.2,
                        "host-a to drop vm1")
    assert not record_path(c, "host-a", uuid).exists()


def test_ha_restart_before_ttl_thaws(request, make_cluster, make_etcd):
    """The backup's ferryd stopped (it cannot take over), then kill -9 of
    the primary's ferryd: the fence agent freezes QEMU; ferryd started
    again retakes the owner lease, arms a new agent and only then thaws the
    same QEMU, which goes on without error. The backup's ferryd started
    again: the primary pairs anew (degraded, then ok)."""
    c, pid, uuid = protected(request, make_cluster, make_etcd)
    c.stop_host("host-b")
    before = c.heartbeats("host-a", "vm1")[-1]["seq"]
    c.kill_host("host-a")
    wait_frozen(pid)
    c.start_host("host-a")
    ferrylib.wait_until(lambda: proc_state(pid) not in (None, "T"), 30, 0.1,
                        "the VM to be thawed")
    ferrylib.wait_until(lambda: c.vm_info("host-a", "vm1")["state"] == "running", 30,
                        0.2, "vm1 attached and running")
    assert c.vm_info("host-a", "vm1")["pid"] == pid
    st = halib.ha_status(c, "host-a", "vm1")
    assert st["lease_holder"] == "host-a" and st["lease"] != 0, st
    hbs = c.wait_heartbeats("host-a", "vm1", n=3, after_seq=before)
    assert all(h["errors"] == 0 for h in hbs), hbs
    assert len(fence_agents("vm1", c, "host-a")) == 1  # armed again
    acts = audit_actions(c, "host-a")
    assert "ha.unfenced" in acts, acts

    def degraded():
        s = halib.ha_status(c, "host-a", "vm1")
        return s if s["health"] == "degraded" and s["alarm"] else None
    st = ferrylib.wait_until(degraded, 60, 0.5, "degraded without the backup")
    print("degraded:", st["alarm"])
    # the lease is held by renewals, past the TTL: the VM is not frozen
    time.sleep(halib.LEASE_TTL_S + 1)
    assert proc_state(pid) not in (None, "T")
    # the backup is back: a new standby (the old one was dropped at its
    # restart), checkpoints again
    c.start_host("host-b")
    st = halib.wait_checkpoints(c, "host-a", "vm1", 1, timeout=90)
    ferrylib.wait_until(lambda: halib.ha_status(c, "host-a", "vm1")["health"] == "ok",
                        30, 0.5, "ok again")
    assert halib.vm_names(c, "host-b")["vm1"]["hold"] == "ha-standby"
    hbs = c.wait_heartbeats("host-a", "vm1", n=2)
    assert all(h["errors"] == 0 for h in hbs), hbs


def test_ha_restart_bad_record_stays_frozen(request, make_cluster, make_etcd):
    """A corrupt HA record: the restarted ferryd logs a precise error,
    audits the refusal and leaves the frozen VM frozen (nothing resumes on
    a guess)."""
    c, pid, uuid = protected(request, make_cluster, make_etcd)
    c.stop_host("host-b")
    c.kill_host("host-a")
    wait_frozen(pid)
    path = record_path(c, "host-a", uuid)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # torn
    c.start_host("host-a")
    log = c.hosts["host-a"].log
    line = ferrylib.wait_until(
        lambda: next((l for l in log.read_text(errors="replace").splitlines()
                      if f"ha: record {uuid}.json refused: ha record:" in l), None),
        20, 0.2, "the refusal in the log")
    print(line)
    assert "frozen QEMU stays frozen" in line, line
    recs = c.api_ok("host-a", "GET", "/v1/audit?action=ha.record_refused")["records"]
    assert recs and recs[0]["target"] == f"{uuid}.json", recs
    time.sleep(halib.LEASE_TTL_S + 1)
    assert proc_state(pid) == "T"
    vm = halib.vm_names(c, "host-a")["vm1"]
    assert vm["state"] == "unknown" and "frozen" in vm.get("last_error", ""), vm
    assert c.api("host-a", "GET", "/v1/vms/vm1/ha")[0] == 404
    assert path.exists()  # left for the operator


def test_ha_restart_etcd_unreachable_stays_frozen(request, make_cluster, make_etcd):
    """kill -9 of the primary's ferryd, which starts again while it cannot
    reach etcd: the VM stays frozen, shown as fenced with no known owner,
    past the lease's TTL; once etcd is back, the lease is taken and the VM
    thawed."""
    c, proxy, pid = halib.protected_vm(request, make_cluster, make_etcd,
                                            etcd_proxy=True)
    c.stop_host("host-b")
    before = c.heartbeats("host-a", "vm1")[-1]["seq"]
    c.kill_host("host-a")
    wait_frozen(pid)
    proxy.cut()
    c.start_host("host-a")
    t_end = time.monotonic() + halib.LEASE_TTL_S + 1
    while time.monotonic() < t_end:
        assert proc_state(pid) == "T", "thawed without etcd"
        time.sleep(0.05)
    st = halib.ha_status(c, "host-a", "vm1")
    assert st["health"] == "fenced" and st["lease_holder"] == "", st
    vm = halib.vm_names(c, "host-a")["vm1"]
    assert vm["state"] == "unknown" and vm["ha"]["health"] == "fenced", vm
    proxy.heal()
    ferrylib.wait_until(lambda: proc_state(pid) not in (None, "T"), 30, 0.1,
                        "the VM to be thawed once etcd is back")
    ferrylib.wait_until(lambda: c.vm_info("host-a", "vm1")["state"] == "running", 30,
                        0.2, "vm1 attached and running")
    assert halib.ha_status(c, "host-a", "vm1")["lease_holder"] == "host-a"
    hbs = c.wait_heartbeats("host-a", "vm1", n=2, after_seq=before)
    assert all(h["errors"] == 0 for h in hbs), hbs


def test_ha_restart_after_host_death_drops_copy(request, make_cluster, make_etcd):
    """The primary host dies (ferryd and QEMU killed); the backup takes
    over after the TTL. The primary's ferryd, started again, finds no QEMU
    and host-b holding the VM: it removes its definition and record."""
    c, pid, uuid = protected(request, make_cluster, make_etcd)
    c.kill_host("host-a")
    os.kill(pid, 9)
    c.wait_vm_state("host-b", "vm1", "running", timeout=halib.LEASE_TTL_S + 10)
    c.start_host("host-a")
    ferrylib.wait_until(lambda: "vm1" not in halib.vm_names(c, "host-a"), 30, 0.2,
                        "host-a to drop vm1")
    assert not record_path(c, "host-a", uuid).exists()
    assert "ha.moved" in audit_actions(c, "host-a")
    hbs = c.wait_heartbeats("host-b", "vm1", n=2, after_seq=0, timeout=60)
    assert all(h["errors"] == 0 for h in hbs), hbs


def test_ha_backup_restart_repairs(request, make_cluster, make_etcd):
    """The backup's ferryd restarts (its standby is not kept): the primary
    reports degraded, then pairs anew with a new standby and is ok again;
    the old standby QEMU is gone. (This was the behaviour before HA records
    too; the test keeps it so.)"""
    c, pid, uuid = protected(request, make_cluster, make_etcd)
    old = c.vm_info("host-b", "vm1")["pid"]
    c.stop_host("host-b")

    def degraded():
        s = halib.ha_status(c, "host-a", "vm1")
        return s if s["health"] == "degraded" and s["alarm"] else None
    ferrylib.wait_until(degraded, 60, 0.5, "degraded without the backup")
    c.start_host("host-b")
    ferrylib.wait_pid_gone(old, timeout=30)
    n = halib.ha_status(c, "host-a", "vm1")["checkpoints"]
    ferrylib.wait_until(lambda: halib.ha_status(c, "host-a", "vm1")["checkpoints"] >= n + 2,
                        90, 0.5, "checkpoints to the new standby")
    assert halib.ha_status(c, "host-a", "vm1")["health"] == "ok"
    vm = halib.vm_names(c, "host-b")["vm1"]
    assert vm["hold"] == "ha-standby" and vm["pid"] != old, vm
    assert c.vm_info("host-a", "vm1")["pid"] == pid
    hbs = c.wait_heartbeats("host-a", "vm1", n=2)
    assert all(h["errors"] == 0 for h in hbs), hbs


def test_ha_restart_failed_over_vm_thawed(request, make_cluster, make_etcd):
    """A VM that failed over to host-b runs there unprotected, under
    host-b's lease and fence agent, with an HA record without a backup.
    kill -9 of host-b's ferryd freezes it; started again, host-b retakes
    the lease and thaws it; `ha enable` protects it again from there."""
    c, pid, uuid = protected(request, make_cluster, make_etcd)
    halib.kill_qemu(c, "host-a", "vm1")
    c.wait_vm_state("host-b", "vm1", "running", timeout=10)
    ferrylib.wait_until(lambda: "vm1" not in halib.vm_names(c, "host-a"), 20, 0.2,
                        "host-a to drop vm1")
    pid_b = c.vm_info("host-b", "vm1")["pid"]
    rec = ferrylib.wait_until(
        lambda: record_path(c, "host-b", uuid).exists() and
        json.loads(record_path(c, "host-b", uuid).read_text()), 10, 0.2, "host-b's record")
    assert rec["backup"] == "" and rec["port"] == 0, rec
    c.wait_heartbeats("host-b", "vm1", n=1, after_seq=0, timeout=60)
    before = c.heartbeats("host-b", "vm1")[-1]["seq"]
    c.kill_host("host-b")
    wait_frozen(pid_b)
    c.start_host("host-b")
    ferrylib.wait_until(lambda: proc_state(pid_b) not in (None, "T"), 30, 0.1,
                        "the VM to be thawed")
    ferrylib.wait_until(lambda: c.vm_info("host-b", "vm1")["state"] == "running", 30,
                        0.2, "vm1 attached and running")
    st = ferrylib.wait_until(
        lambda: (s := halib.ha_status(c, "host-b", "vm1"))["health"] == "unprotected" and s,
        10, 0.1, "unprotected again")
    assert st["role"] == "primary" and st["lease_holder"] == "host-b", st
    assert len(fence_agents("vm1", c, "host-b")) == 1
    hbs = c.wait_heartbeats("host-b", "vm1", n=2, after_seq=before)
    assert all(h["errors"] == 0 for h in hbs), hbs
    enable(c, "vm1", "host-b", "host-a")
    st = halib.wait_checkpoints(c, "host-b", "vm1", 2)
    assert st["health"] == "ok" and st["backup"] == "host-a", st
    assert json.loads(record_path(c, "host-b", uuid).read_text())["backup"] == "host-a"
