"""Bridged VM networking and ferry-detect (docs/detection.md), on a LAN of
network namespaces that each test builds and removes (netlib.Lan).

The smoke version of `make bench-detect`: one ferry migration detected and
explained by the audit logs, one migration behind ferry's back (QMP driven
by rogue_migrate.py) that raises an alarm within 5 s, and a tampered audit
log that the cross-check refuses to trust.
"""

import json
import os
import signal
import subprocess
import time

import pytest

import netlib
from ferrylib import wait_until
from rogue_migrate import rogue_migrate

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

VM = "v1"
MAC = "52:54:00:aa:00:01"
ALARM_WITHIN_S = 5.0


@pytest.fixture
def lan(request):
    return netlib.checked_lan(request, rate="400mbit")


@pytest.fixture
def lan_cluster(lan, make_cluster):
    """Two hosts whose VM bridge and data plane live in lan's namespaces,
    an admin and an auditor ("audit"); a bridged VM v1 running on host-a.
    (The cluster's finalizer, registered after lan's, runs first: QEMU is
    gone before the namespaces.)"""
    c = make_cluster(start=False, users=("admin", "audit"))
    pol = c.default_policy()
    pol["roles"]["admin"] = ["admin"]
    pol["roles"]["auditor"] = ["audit"]
    for h in c.hosts:
        c.write_policy(h, pol)
        c.write_host_config(h, **lan.host_config(h))
    c.write_client_config(c.dir / "audit.json", user="audit")
    c.start_all()
    c.define_vm("host-a", VM, memory_mib=128, mib=16, rate=100, extra=lan.vm_cmdline(0),
                network={"bridge": "lan", "mac": MAC})
    c.start_vm("host-a", VM)
    c.wait_heartbeats("host-a", VM, 1)
    wait_until(lambda: lan.ping(lan.vm_address(0)), 60, 0.5, "the VM to answer pings")
    return c


def test_bridged_vm_keeps_mac_and_address_across_migration(lan, lan_cluster):
    """There, back and there again: a host that saw the VM leave takes it
    again (its tap is a new one each time)."""
    c = lan_cluster
    info = c.vm_info("host-a", VM)
    assert info["network"] == {"bridge": "lan", "mac": MAC}
    assert lan.taps("host-a") == [info["tap"]] and lan.taps("host-b") == []
    for src, dst in (("host-a", "host-b"), ("host-b", "host-a"), ("host-a", "host-b")):
        rx = lan.rx_bytes(dst)
        r = c.migrate(src, VM, dst)
        assert r.returncode == 0, r.stderr
        info = c.vm_info(dst, VM)
        assert info["network"] == {"bridge": "lan", "mac": MAC}
        # the source's tap went with its QEMU; the destination's joined br0
        wait_until(lambda: lan.taps(src) == [], 10, what=f"{src}'s tap to go")
        assert lan.taps(dst) == [info["tap"]]
        assert lan.ping(lan.vm_address(0)), f"the VM does not answer on {dst}"
        # the data plane crossed the LAN: the destination's uplink got the RAM
        assert lan.rx_bytes(dst) - rx > r.summary["ram_bytes"], r.summary
    c.no_leftovers("host-a")
    c.no_leftovers("host-b")
    # no fd closed that ferryd does not own (a tap fd field left at 0 once
    # closed stdin, and the numbers' next owners: API sockets and taps)
    for h in c.hosts.values():
        assert os.readlink(f"/proc/{h.pid}/fd/0") == "/dev/null", h.name


def test_host_without_the_bridge_refuses_the_vm(lan, make_cluster):
    c = make_cluster()
    c.define_vm("host-a", "v2", memory_mib=128, network={"bridge": "lan"})
    status, reply = c.api("host-a", "POST", "/v1/vms/v2/start")
    assert status == 409, reply
    assert 'no bridge "lan"' in reply["error"]["message"]
    c.no_leftovers("host-a")


def _detector(c, lan, *extra):
    sd = c.dir / "detect"
    out = open(c.dir / "detect.out", "w")
    p = subprocess.Popen(
        [c.build / "ferry-detect", "run", "--json", "--config", c.dir / "audit.json",
         "--state-dir", sd, "--netns", lan.observer, "--iface", lan.observer_if,
         "--target", lan.vm_address(0), "--duration", "300", *extra],
        stdout=out, stderr=open(c.dir / "detect.err", "w"))
    out.close()
    return p, sd


def _state(sd):
    try:
        return json.loads((sd / "state.json").read_text())
    except (OSError, ValueError):
        return None


def test_detect_smoke(lan, lan_cluster):
    c = lan_cluster
    det, sd = _detector(c, lan)
    rogue = None
    try:
        wait_until(lambda: (_state(sd) or {}).get("targets"), 30, what="the detector")
        time.sleep(3)  # a baseline
        # 1. a ferry migration: detected, explained, no alarm
        r = c.migrate("host-a", VM, "host-b")
        assert r.returncode == 0, r.stderr
        st = wait_until(lambda: (lambda s: s if s and any(
            e["check"] == "explained" for e in s["events"]) else None)(_state(sd)),
            20, what="the migration to be detected and explained")
        ev = [e for e in st["events"] if e["check"] == "explained"][0]
        assert ev["vm"] == VM and ev["mac"] == MAC
        assert ev["start_ms"] <= r.summary["ended_at"]
        assert ev["switchover_ms"] >= r.summary["started_at"]
        assert not st["alarms"], st["alarms"]
        st = wait_until(lambda: (lambda s: s if all(e["closed"] for e in s["events"]) and
                                 s["coverage"]["recorded"] else None)(_state(sd)),
                        20, what="the event to end")
        assert st["coverage"]["recorded"] == st["coverage"]["detected"] == 1, st["coverage"]
        # 2. behind ferry's back: an alarm within 5 s of the switchover
        info = c.vm_info("host-b", VM)
        rogue = rogue_migrate(info["pid"],
                              c.hosts["host-b"].state_dir / "run" / f"{info['uuid']}.mqmp",
                              c.dir / "rogue", lan.netns["host-b"], lan.netns["host-a"],
                              lan.address["host-a"])
        done = time.monotonic()
        st = wait_until(lambda: (lambda s: s if s and s["alarms"] else None)(_state(sd)),
                        ALARM_WITHIN_S, 0.1, "an unexplained-migration alarm")
        assert time.monotonic() - done <= ALARM_WITHIN_S
        al = st["alarms"][0]
        assert al["kind"] == "unexplained_migration" and al["vm"] == VM, al
        assert lan.ping(lan.vm_address(0)), "the rogue copy does not answer"
        # 3. a tampered audit log: the cross-check says so
        log = c.hosts["host-b"].state_dir / "audit.log"
        text = log.read_text()
        assert '"outcome":"ok"' in text
        log.write_text(text.replace('"outcome":"ok"', '"outcome":"no"', 1))
        st = wait_until(lambda: (lambda s: s if s and any(
            a["kind"] == "audit_tampered" for a in s["alarms"]) else None)(_state(sd)),
            10, what="the tampered log to be reported")
        hb = [h for h in st["hosts"] if h["host"] == "host-b"][0]
        assert not hb["audit_ok"] and "fails verification" in hb["message"], hb
        # the CLI shows the alarms, and the detector audited them
        out = subprocess.run([c.build / "ferry-detect", "alarms", "--json", "--state-dir", sd],
                             capture_output=True, text=True, check=True).stdout
        kinds = {a["kind"] for a in json.loads(out)}
        assert kinds == {"unexplained_migration", "audit_tampered"}, kinds
        audit = (sd / "audit" / "audit.log").read_text()
        assert audit.count('"detect.alarm"') == 2
    finally:
        det.send_signal(signal.SIGTERM)
        det.wait(30)
        if rogue:
            os.kill(rogue, signal.SIGKILL)
    assert det.returncode == 0, (c.dir / "detect.err").read_text()
