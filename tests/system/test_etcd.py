"""The etcd client (src/etcd) against real 3-member etcd clusters on
loopback with mutual TLS (etcdlib). Each test runs one scenario of
tests/etcd/etcd_check.c, which checks the outcomes itself, makes the faults
it asks for ("FAULT ..." on its stdout) and reports figures as name=value.
"""

import json
import os
import queue
import subprocess
import threading
import time

import pytest

import etcdlib
import ferrylib

CHECK_TIMEOUT = 120.0


def etcd_check_bin():
    path = ferrylib.build_dir() / "tests" / "etcd" / "etcd_check"
    assert os.access(path, os.X_OK), f"{path} missing: build first"
    return path


def write_config(dirpath, etcd_section):
    """A ferryd.json whose etcd section is the client under test."""
    cfg = {
        "host": "etcd-test", "listen": {"address": "127.0.0.1"},
        "tls": {"ca": etcd_section["ca"], "cert": etcd_section["cert"],
                "key": etcd_section["key"]},
        # ferryd's own dirs are never used here; state_dir must be short
        "state_dir": "/nonexistent/state", "shared_dir": str(dirpath),
        "etcd": {"timeout_ms": 10000, "member_timeout_ms": 1000, **etcd_section},
    }
    path = dirpath / "ferryd.json"
    path.write_text(json.dumps(cfg))
    return path


def run_check(config, scenario, *args, faults=None):
    """Run etcd_check; answer its FAULT requests with faults[what](values);
    return its name=value figures. Fails the test on a non-zero exit."""
    faults = faults or {}
    proc = subprocess.Popen([str(etcd_check_bin()), str(config), scenario, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)],
                              daemon=True)
    reader.start()
    values, out = {}, []
    deadline = time.monotonic() + CHECK_TIMEOUT
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"etcd_check {scenario} timed out; output: {out}")
            if line is None:
                break
            line = line.rstrip("\n")
            out.append(line)
            if line.startswith("FAULT "):
                faults[line[6:]](values)
                proc.stdin.write("ok\n")
                proc.stdin.flush()
            elif line.startswith(("rogue_error=", "pin_error=")):
                k, v = line.split("=", 1)
                values[k] = v
            else:
                values.update(item.split("=", 1) for item in line.split() if "=" in item)
        rc = proc.wait(timeout=10)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, f"etcd_check {scenario} exit {rc}:\n{err}\noutput: {out}"
    print(f"etcd_check {scenario}: {values}")
    return values


@pytest.fixture(scope="module")
def shared_etcd():
    """One 3-member cluster for the scenarios that make no faults."""
    with etcdlib.EtcdCluster(n=3) as ec:
        yield ec


@pytest.fixture
def etcd3(make_etcd):
    """A fresh 3-member cluster for a scenario that breaks members."""
    return make_etcd(3)


def config_for(ec, tmp_path, **extra):
    return write_config(tmp_path, ec.ferryd_etcd_section(**extra))


def test_kv(shared_etcd, tmp_path):
    run_check(config_for(shared_etcd, tmp_path, prefix="/ferry/kv-test"), "kv")
    # the keys live under the prefix, as etcdctl sees them
    out = shared_etcd.etcdctl("get", "/ferry/kv-test/dirx").stdout.split()
    assert out == ["/ferry/kv-test/dirx", "x"]


def test_cas_exactly_one_winner(shared_etcd, tmp_path):
    v = run_check(config_for(shared_etcd, tmp_path, prefix="/ferry/cas-test"), "cas")
    assert int(v["wins0"]) + int(v["wins1"]) == 20


def test_lease_keepalive_and_expiry(shared_etcd, tmp_path):
    v = run_check(config_for(shared_etcd, tmp_path, prefix="/ferry/lease-test"), "lease")
    assert int(v["lease_id"]) > 0
    # expired within its TTL (2 s) plus etcd's expiry check, not later
    assert int(v["lease_expired_after_ms"]) < 7000


def test_revoke(shared_etcd, tmp_path):
    v = run_check(config_for(shared_etcd, tmp_path, prefix="/ferry/revoke-test"), "revoke")
    assert v["revoke"] == "ok"


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_watch_resumes_after_member_loss(etcd3, tmp_path, how):
    def compact(values):
        etcd3.etcdctl("compaction", values["compact_at"])

    def lose0(values):
        (etcd3.kill if how == "kill" else etcd3.stop)(0)

    v = run_check(config_for(etcd3, tmp_path), "watch", how,
                  faults={"compact": compact, f"{how} 0": lose0})
    assert int(v["watch_events"]) == 60
    assert int(v["watch_connects"]) >= 2  # it did resume elsewhere
    assert int(v["watch_stop_ms"]) < 2000


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_failover_when_member_in_use_is_killed(etcd3, tmp_path, role):
    etcd3.move_leader(0 if role == "leader" else 1)
    v = run_check(config_for(etcd3, tmp_path), "failover",
                  faults={"kill 0": lambda _: etcd3.kill(0)})
    assert int(v["failover_ms"]) < 10000  # a leader's loss includes an election


def test_deadlines_hold_with_stopped_members(etcd3, tmp_path):
    faults = {
        "stop 0": lambda _: etcd3.stop(0),
        "stop all": lambda _: (etcd3.stop(1), etcd3.stop(2)),
        "cont all": lambda _: [etcd3.cont(i) for i in range(3)],
    }
    v = run_check(config_for(etcd3, tmp_path), "stop", faults=faults)
    assert v["stop"] == "ok"


def test_foreign_ca_server_is_refused(shared_etcd, make_etcd, tmp_path):
    """The client holds the cluster CA; a member whose certificate comes
    from another CA gets no request."""
    rogue = make_etcd(1)
    section = shared_etcd.ferryd_etcd_section()
    section["endpoints"] = rogue.endpoints
    v = run_check(write_config(tmp_path, section), "rogue")
    assert "certificate" in v["rogue_error"]
    assert rogue.etcdctl("get", "--prefix", "/ferry/").stdout == ""


def test_member_of_another_cluster_is_refused(make_etcd, tmp_path):
    """Same CA, another etcd cluster: once the client has talked to its
    cluster it refuses members of any other (its revisions and leases are
    another history), before they receive a request."""
    a = make_etcd(1)
    b = make_etcd(1, pki=a.pki)
    section = a.ferryd_etcd_section()
    section["endpoints"] = a.endpoints + b.endpoints
    v = run_check(write_config(tmp_path, section), "pin",
                  faults={"kill 0": lambda _: a.kill(0)})
    assert "member of cluster" in v["pin_error"]
    assert b.etcdctl("get", "--prefix", "/ferry/").stdout == ""
