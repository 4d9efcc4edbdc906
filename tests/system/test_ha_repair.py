"""Checkpoint HA after a failover and across a migration (docs/ha.md,
"After a failover or a migration"), with real ferryd hosts, QEMU guests
and etcd on loopback: the new primary chooses another backup among its
ha_peers by itself (or says it is unprotected, and retries), and a
protected VM migrates with its protection following it."""
import os
import signal

import pytest

import ferrylib
import halib

# make check runs the re-protection after a failover; `make check-ha` all
full = pytest.mark.skipif(os.environ.get("FERRY_HA_FULL") != "1",
                          reason="FERRY_HA_FULL=1 (make check-ha)")


def enable(c, vm, primary, backup, interval="2s"):
    return c.cli("--host", primary, "ha", "enable", vm, "--backup", backup,
                 "--interval", interval)


def actions(c, host):
    return [r["action"] for r in c.api_ok(host, "GET", "/v1/audit?limit=1000")["records"]]


def records(c, host, action):
    return c.api_ok(host, "GET", f"/v1/audit?action={action}&limit=100")["records"]


def wait_protected(c, host, vm, backup, n=1, timeout=90):
    """vm on host is protected by `backup` (a host name, or a set of
    acceptable ones) with at least n checkpoints there since."""
    ok = {backup} if isinstance(backup, str) else set(backup)

    def check():
        st = halib.ha_status(c, host, vm)
        if not st or st["role"] != "primary" or st["backup"] not in ok:
            return None
        last = st.get("last_checkpoint")
        return st if st["health"] == "ok" and last and last["seq"] >= n else None
    return ferrylib.wait_until(check, timeout, 0.5,
                               f"{vm} on {host} protected by {sorted(ok)}")


def start_protected(c, primary, backup):
    c.define_vm(primary, "vm1", memory_mib=256, mib=32, rate=1000)
    c.start_vm(primary, "vm1")
    c.wait_heartbeats(primary, "vm1", n=1)
    enable(c, "vm1", primary, backup)
    halib.wait_checkpoints(c, primary, "vm1", 2)


def failover_to(c, dead, to):
    """kill -9 of vm1's QEMU on `dead`: `to` runs it, errors=0."""
    halib.kill_qemu(c, dead, "vm1")
    c.wait_vm_state(to, "vm1", "running", timeout=15)
    hbs = c.wait_heartbeats(to, "vm1", n=2, after_seq=0, timeout=60)
    assert all(h["errors"] == 0 for h in hbs), hbs
    return hbs


def test_ha_reprotect_after_failover(request, make_cluster, make_etcd):
    """kill -9 of the primary's QEMU with a third host listed in ha_peers:
    the backup (now primary) protects the VM again by itself, with host-c
    (the host the VM left comes last); checkpoints arrive there, and a
    second failover to host-c runs the VM with no error."""
    c, _ = halib.ha_cluster(make_cluster, make_etcd, hosts=3, request=request,
                            peers=True)
    start_protected(c, "host-a", "host-b")
    failover_to(c, "host-a", "host-b")
    st = wait_protected(c, "host-b", "vm1", "host-c", n=2)
    assert st["interval_s"] == 2, st  # the interval it had
    assert halib.vm_names(c, "host-c")["vm1"]["hold"] == "ha-standby"
    rec = records(c, "host-b", "ha.reprotected")
    assert rec and rec[-1]["detail"]["backup"] == "host-c", rec
    assert rec[-1]["detail"]["after"] == "failover", rec
    cst = halib.ha_status(c, "host-c", "vm1")
    assert cst["role"] == "backup" and cst["last_checkpoint"]["seq"] >= 1, cst
    # the copy on host-c is a real one: it takes over from it
    hbs = failover_to(c, "host-b", "host-c")
    print(f"re-protected by host-c; second failover resumed at seq {hbs[0]['seq']}")
    # host-c protects it in turn, with host-a or host-b
    wait_protected(c, "host-c", "vm1", {"host-a", "host-b"}, n=1)


@full
def test_ha_unprotected_until_a_host_returns(request, make_cluster, make_etcd):
    """Two hosts, and the primary host dies (ferryd and QEMU): the backup
    runs the VM and shows it unprotected, with why; when host-a is back
    (its stale copy removed), the retry picks it and protection resumes."""
    c, _ = halib.ha_cluster(make_cluster, make_etcd, request=request, peers=True)
    start_protected(c, "host-a", "host-b")
    pid = c.vm_info("host-a", "vm1")["pid"]
    c.kill_host("host-a")
    os.kill(pid, signal.SIGKILL)
    c.wait_vm_state("host-b", "vm1", "running", timeout=halib.LEASE_TTL_S + 15)

    def unprotected():
        st = halib.ha_status(c, "host-b", "vm1")
        return st if st["health"] == "unprotected" and "host-a" in st["alarm"] else None
    st = ferrylib.wait_until(unprotected, 30, 0.5, "unprotected, with the reason")
    print("unprotected:", st["alarm"])
    assert "no backup took it" in st["alarm"], st
    out = c.cli("--host", "host-b", "ha", "status", "vm1").stdout
    assert "unprotected" in out, out
    assert "ha.unprotected" in actions(c, "host-b")
    hbs = c.wait_heartbeats("host-b", "vm1", n=2, after_seq=0, timeout=60)
    assert all(h["errors"] == 0 for h in hbs), hbs
    # host-a comes back; its copy of vm1 (QEMU killed) is removed by hand
    c.start_host("host-a")
    if "vm1" in halib.vm_names(c, "host-a"):
        c.api_ok("host-a", "DELETE", "/v1/vms/vm1")
    wait_protected(c, "host-b", "vm1", "host-a", n=1, timeout=120)


@full
def test_ha_migrate_protected_vm(request, make_cluster, make_etcd):
    """A protected VM (backup host-b) migrates host-a -> host-c: the standby
    is discarded before the migration starts, host-c protects it with the
    same backup, checkpoints go on, it never ran on host-b; then kill -9 of
    the QEMU on host-c: host-b takes over with no error."""
    c, _ = halib.ha_cluster(make_cluster, make_etcd, hosts=3, request=request,
                            peers=True)
    start_protected(c, "host-a", "host-b")
    r = c.migrate("host-a", "vm1", "host-c")
    assert r.returncode == 0 and r.summary["outcome"] == "completed", r
    assert any((e.get("ha") or {}).get("protection") == "follows" for e in r.events), r.events
    st = wait_protected(c, "host-c", "vm1", "host-b", n=2)
    assert st["interval_s"] == 2, st
    assert "vm1" not in halib.vm_names(c, "host-a")
    assert halib.ha_status(c, "host-a", "vm1") is None
    # the order: protection ended on host-a (standby discarded on host-b)
    # before the migration left host-a; host-b never ran the VM
    off = records(c, "host-a", "ha.disable")
    assert off and off[-1]["detail"]["reason"] == "migration", off
    assert off[-1]["detail"]["to"] == "host-c", off
    discard = records(c, "host-b", "ha.standby_discard")
    started = [x for x in c.api_ok("host-a", "GET", "/v1/audit?limit=1000")["records"]
               if x["action"].startswith("migration.") and x["action"] != "migration.refused"]
    assert discard and started, (discard, started)
    assert discard[0]["ts"] <= started[0]["ts"], (discard[0], started[0])
    assert "ha.failover" not in actions(c, "host-b")
    assert "ha.follow" in actions(c, "host-a")
    assert "ha.adopt" in actions(c, "host-c")
    # protection really follows: host-b takes over from host-c's checkpoint
    failover_to(c, "host-c", "host-b")


@full
def test_ha_migrate_to_its_backup(request, make_cluster, make_etcd):
    """A protected VM migrates to its own backup host: the standby is
    discarded first, the VM arrives, and host-b pairs it with the host it
    left (host-a, once its copy is gone)."""
    c, _ = halib.ha_cluster(make_cluster, make_etcd, request=request, peers=True)
    start_protected(c, "host-a", "host-b")
    r = c.migrate("host-a", "vm1", "host-b")
    assert r.returncode == 0 and r.summary["outcome"] == "completed", r
    wait_protected(c, "host-b", "vm1", "host-a", n=2)
    vm = halib.vm_names(c, "host-b")["vm1"]
    assert vm["state"] == "running" and not vm.get("hold"), vm
    hbs = c.wait_heartbeats("host-b", "vm1", n=2)
    assert all(h["errors"] == 0 for h in hbs), hbs
    rec = records(c, "host-b", "ha.reprotected")
    assert rec and rec[-1]["detail"]["after"] == "migration", rec


@full
def test_ha_migrate_failure_protects_again(request, make_cluster, make_etcd):
    """The migration of a protected VM fails (its destination's ferryd is
    down): the VM stays on host-a and is protected again with the same
    backup; a failover then still works."""
    c, _ = halib.ha_cluster(make_cluster, make_etcd, hosts=3, request=request,
                            peers=True)
    start_protected(c, "host-a", "host-b")
    c.stop_host("host-c")
    r = c.migrate("host-a", "vm1", "host-c")
    assert r.returncode != 0, r
    wait_protected(c, "host-a", "vm1", "host-b", n=2)
    rec = records(c, "host-a", "ha.reprotected")
    assert rec and rec[-1]["detail"]["after"] == "failed migration", rec
    assert rec[-1]["outcome"] == "ok", rec
    assert halib.vm_names(c, "host-b")["vm1"]["hold"] == "ha-standby"
    failover_to(c, "host-a", "host-b")
