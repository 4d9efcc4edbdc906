"""Controller high availability (docs/balancer.md, "High availability"):
two controllers (ferryd in controller mode) with three etcd members, all on
loopback, balancing simulated hosts (tests/sim/simhost.c, one process).

- kill -9 of the leader in the middle of a drain: the standby takes over
  within the lease TTL and a round, no migration is started twice, the
  drain goes on to its end; then kill -9 of an etcd member: rounds, drains
  and the API go on;
- a leader frozen past its lease (SIGSTOP) and thawed: it starts nothing
  with its old token, the hosts refuse that token, it becomes a standby;
- the fencing rule on a real ferryd: POST /v1/host/fence and its
  persistence across a restart.

Run with Debian's interpreter:
    /usr/bin/python3 -m pytest -q tests/system/test_controller_ha.py
"""

import json
import signal
import time

import pytest

import ctllib
from ctllib import wait_for

TTL = 3          # etcd.lease_ttl_s of the controllers
INTERVAL = 1     # balancer.interval_s
MIG_MS = 1500    # a simulated migration
DRAINED = "sim-00000"
VMS = 4          # per simulated host


def accepted(cc, **match):
    return [e for e in cc.sim_log() if e["op"] == "migrate" and e["result"] == "accepted"
            and all(e.get(k) == v for k, v in match.items())]


def drain(cc, i, host, on=True):
    st, body = cc.api(i, "POST", "/v1/balance/drain" if on else "/v1/balance/undrain",
                      {"host": host})
    assert st == 200, body


def drain_record(cc, i, host):
    st, body = cc.api(i, "GET", "/v1/balance/drains")
    assert st == 200, body
    return next((d for d in body["drains"] if d["host"] == host), None)


def assert_no_double_start(cc):
    """Each VM was migrated at most once, and never while it was migrating
    (the simulated host would refuse that; here: none was even asked)."""
    moves = {}
    for e in accepted(cc):
        moves.setdefault(e["vm"], []).append(e)
    twice = {vm: m for vm, m in moves.items() if len(m) > 1}
    assert not twice, f"migrations started twice: {twice}"
    busy = [e for e in cc.sim_log()
            if e["op"] == "migrate" and "already migrating" in e.get("reason", "")]
    assert not busy, f"a migration was asked for a VM in flight: {busy}"


@pytest.fixture
def ha(ferry_build):
    cc = ctllib.CtlCluster(controllers=2, hosts=12, vms=VMS, etcd=3, mode="recommend",
                           interval_s=INTERVAL, mig_ms=MIG_MS, lease_ttl_s=TTL,
                           params={"max_out_per_host": 1, "hold_rounds": 1},
                           build=ferry_build)
    try:
        cc.setup()
        cc.start_sim()
        cc.start_controller(0)
        leader = wait_for(lambda: cc.leader() is not None and cc.leader() + 1,
                          30, "a leader") - 1
        cc.start_controller(1)
        yield cc, leader
    finally:
        cc.close()


def test_leader_killed_mid_drain_then_an_etcd_member(ha):
    cc, old = ha
    new = 1 - old
    assert cc.status(new)["role"] == "standby"
    old_token = cc.status(old)["token"]
    assert old_token > 0
    drain(cc, new, DRAINED)  # asked of the standby: the drain is the cluster's
    # kill the leader while a migration of the drain is in flight
    wait_for(lambda: len(accepted(cc, host=DRAINED)) >= 2, 60, "the drain under way")
    t_kill = time.monotonic()
    cc.kill_controller(old)
    wait_for(lambda: cc.status(new)["role"] == "leader", 30, "the standby leading")
    took_over = time.monotonic() - t_kill
    new_token = cc.status(new)["token"]
    assert new_token > old_token
    wait_for(lambda: [e for e in accepted(cc, host=DRAINED) if e["fence"] == new_token],
             60, "a migration started by the new leader")
    first_move = time.monotonic() - t_kill
    print(f"fail-over: the standby leads {took_over:.2f} s after kill -9, "
          f"its first migration {first_move:.2f} s after (lease TTL {TTL} s, "
          f"round {INTERVAL} s)")
    assert took_over <= TTL + INTERVAL + 3, \
        f"took {took_over:.1f} s to take over (TTL {TTL} s, interval {INTERVAL} s)"
    # the drain ends, every VM moved exactly once
    d = wait_for(lambda: (r := drain_record(cc, new, DRAINED)) and r["state"] == "done" and r,
                 90, "the drain done")
    assert d["remaining"] == 0, d
    assert len(accepted(cc, host=DRAINED)) == VMS
    assert_no_double_start(cc)
    # every migration carries the token of the leader that started it
    assert {e["fence"] for e in accepted(cc)} <= {old_token, new_token}

    # an etcd member dies: rounds, the API and drains go on
    cc.etcd.kill(cc.etcd.leader())
    r0 = cc.status(new)["round"]
    wait_for(lambda: cc.status(new)["round"] >= r0 + 3, 30, "rounds after the etcd kill")
    st, body = cc.api(new, "POST", "/v1/balance/mode", {"mode": "off"})
    assert st == 200, body
    drain(cc, new, "sim-00001")
    wait_for(lambda: (r := drain_record(cc, new, "sim-00001")) and r["state"] == "done"
             and r["remaining"] == 0, 90, "a drain with one etcd member down")
    assert cc.status(new)["mode"] == "off"
    assert_no_double_start(cc)
    drain(cc, new, DRAINED, on=False)
    wait_for(lambda: drain_record(cc, new, DRAINED) is None, 30, "the undrain")
    assert [e for e in cc.sim_log() if e["op"] == "undrain" and e["host"] == DRAINED]


def test_frozen_leader_is_fenced(ha):
    cc, old = ha
    new = 1 - old
    old_token = cc.status(old)["token"]
    drain(cc, old, DRAINED)
    wait_for(lambda: accepted(cc, host=DRAINED), 60, "the drain under way")
    # freeze the leader (maybe mid-round) past its lease: the standby leads
    cc.kill_controller(old, signal.SIGSTOP)
    t0 = time.monotonic()
    wait_for(lambda: cc.status(new)["role"] == "leader", 30, "the standby leading")
    print(f"the standby leads {time.monotonic() - t0:.2f} s after SIGSTOP")
    new_token = cc.status(new)["token"]
    assert new_token > old_token
    # it announces its token to every host before it acts on any
    wait_for(lambda: len({e["host"] for e in cc.sim_log()
                          if e["op"] == "fence" and e["fence"] == new_token}) == 12,
             30, "the new token announced to every host")
    cc.kill_controller(old, signal.SIGCONT)
    wait_for(lambda: cc.status(old)["role"] == "standby", 30, "the thawed leader a standby")
    d = wait_for(lambda: (r := drain_record(cc, new, DRAINED)) and r["state"] == "done" and r,
                 90, "the drain done")
    assert d["remaining"] == 0, d
    log = cc.sim_log()
    announced = {e["host"]: e["ms"] for e in log
                 if e["op"] == "fence" and e["fence"] == new_token}
    # nothing carrying the old token was accepted by a host after the new
    # leader's announcement reached it
    late = [e for e in log if e["op"] in ("migrate", "fence") and e.get("fence") == old_token
            and e["result"] == "accepted" and e["ms"] >= announced[e["host"]]]
    assert not late, late
    refused = [e for e in log if e["op"] == "migrate" and e.get("fence") == old_token
               and e["result"] == "refused"]
    print(f"requests with the old token refused by hosts: {len(refused)}")
    assert_no_double_start(cc)


def test_host_fence_route(make_cluster):
    c = make_cluster(hosts=1)
    h = c.host()
    assert c.api(h.name, "POST", "/v1/host/fence", {"fence": 5})[:2] == (200, {"fence": 5})
    st, body = c.api(h.name, "POST", "/v1/host/fence", {"fence": 3})[:2]
    assert st == 409 and "newer controller" in body["error"]["message"], body
    assert c.api(h.name, "POST", "/v1/host/fence", {"fence": 0})[0] == 400
    assert c.api(h.name, "POST", "/v1/host/fence", {"fence": 7, "x": 1})[0] == 400
    c.restart_host(h.name)
    st, body = c.api(h.name, "POST", "/v1/host/fence", {"fence": 4})[:2]
    assert st == 409, body
    assert c.api(h.name, "POST", "/v1/host/fence", {"fence": 9})[:2] == (200, {"fence": 9})
    # a migrate request with an older token is refused before anything
    # starts, and audited
    c.define_vm(h.name, "v1", memory_mib=128, mib=8)
    c.start_vm(h.name, "v1")
    st, body = c.api(h.name, "POST", "/v1/vms/v1/migrate",
                     {"to": "host-x", "address": "127.0.0.9", "fence": 8})[:2]
    assert st == 409 and "older than 9" in body["error"]["message"], body
    assert c.vm_info(h.name, "v1")["state"] == "running"
    recs = c.api_ok(h.name, "GET", "/v1/audit?action=migration.refused")["records"]
    assert [r for r in recs if r["outcome"] == "fenced" and r["target"] == "v1"], recs
    st, body = c.api(h.name, "POST", "/v1/vms/v1/migrate",
                     {"to": "host-x", "address": "127.0.0.9", "fence": "9"})[:2]
    assert st == 400 and "migration.fence" in body["error"]["message"], body
    c.stop_vm(h.name, "v1", force=True)


def test_dead_hosts_cost_one_timeout(ferry_build):
    """Polling is concurrent: three stalled hosts (they accept TCP and never
    answer) and three refusing ones cost a round one poll timeout, not one
    each; the others stay up; the host list comes from a hosts file."""
    timeout = 2
    cc = ctllib.CtlCluster(controllers=1, hosts=30, vms=4, etcd=0, mode="recommend",
                           interval_s=1, poll_timeout_s=timeout, stalled=3, down=3,
                           build=ferry_build)
    with cc:
        cc.start_sim()
        cc.start_controller(0)
        s = wait_for(lambda: (x := cc.status(0, hosts=True))["round"] >= 3 and x,
                     60, "three rounds")
        hosts = {h["name"]: h for h in s["hosts"]}
        assert s["hosts_configured"] == 36 and s["hosts_up"] == 30, s
        for n in ("stall-000", "stall-001", "stall-002"):
            assert not hosts[n]["reachable"] and hosts[n]["error"], hosts[n]
        for n in ("down-000", "down-001", "down-002"):
            assert not hosts[n]["reachable"] and hosts[n]["error"], hosts[n]
        # serial polling would take 3 x the timeout for the stalled ones
        assert s["poll_ms"] < (timeout + 1.5) * 1000, s["poll_ms"]
        print(f"poll with 3 stalled and 3 refusing hosts: {s['poll_ms']} ms "
              f"(timeout {timeout} s)")
        # the CLI: status names the role, params change the cluster's
        r = cc.cli(0, "balance", "status")
        assert r.returncode == 0 and "controller ctl-1: leader" in r.stdout, r
        r = cc.cli(0, "balance", "params", "max_cluster=4", "high=0.7")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["max_cluster"] == 4, r.stdout
        assert cc.status(0)["params"]["high"] == 0.7
        r = cc.cli(0, "balance", "params", "bogus=1")
        assert r.returncode != 0 and "bogus" in r.stderr, r
        assert cc.cli(0, "balance", "params", "high").returncode == 2


def test_kept_connections_closed_by_hosts(ferry_build):
    """A host closes a kept connection it found idle (ferryd after 10 s;
    here the simulated hosts after 1 s, rounds every 2 s): the next round
    opens a new one, every host stays up, and the handshakes (one per host
    and round here) show the connections were reopened, not kept."""
    cc = ctllib.CtlCluster(controllers=1, hosts=5, vms=2, etcd=0, mode="off",
                           interval_s=2, idle_s=1, build=ferry_build)
    with cc:
        cc.start_sim()
        cc.start_controller(0)
        for r in range(2, 6):
            s = wait_for(lambda: (x := cc.status(0))["round"] >= r and x, 30, f"round {r}")
            assert s["hosts_up"] == 5, s
        cc.kill_controller(0, signal.SIGTERM)
        cc.sim.send_signal(signal.SIGTERM)
        cc.sim.wait(timeout=30)
        out = (cc.dir / "sim.out").read_text()
        handshakes = int(out.split("requests, ")[1].split()[0])
        assert handshakes >= 5 * 4, out
