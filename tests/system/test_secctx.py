"""A VM's security context (docs/security.md, "Security context"): its
firewall on its tap, and the migration of its rules and its tracked flows.

Each test builds its own LAN of network namespaces (netlib.Lan: host-a,
host-b, a switch and an observer) and removes it; every packet the tests
send goes from the observer's namespace to the VM's address there. The
test guest listens on two TCP ports (ferry.serve): 5000, which the VM's
rules allow, and 5001, which they do not.
"""

import json
import os
import select
import socket
import threading
import time

import pytest

import netlib
from ferrylib import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

A, B = "host-a", "host-b"
VM = "fw1"
MAC = "52:54:00:aa:00:07"
OPEN, SHUT = 5000, 5001
RULES = {"default": "drop",
         "rules": [{"dir": "in", "proto": "tcp", "port": OPEN},
                   {"dir": "in", "proto": "icmp"}]}


# --------------------------------------------------------------------------
# the LAN and the cluster


@pytest.fixture
def lan(request):
    return netlib.checked_lan(request)


def fw_cluster(lan, make_cluster, firewall=RULES, policy_fw=None, start_vm=True):
    """Two hosts whose VM bridge and data plane live in lan's namespaces,
    users admin and ops (operator); VM fw1 on host-a with firewall (None:
    no rules of its own), serving OPEN and SHUT."""
    c = make_cluster(start=False, users=("admin", "ops"))
    pol = c.default_policy()
    pol["roles"]["admin"] = ["admin"]
    pol["roles"]["operator"] = ["ops"]
    if policy_fw is not None:
        pol["firewall"] = policy_fw
    for h in c.hosts:
        c.write_policy(h, pol)
        c.write_host_config(h, **lan.host_config(h))
    c.write_client_config(c.dir / "ops.json", user="ops")
    c.start_all()
    fields = {"network": {"bridge": "lan", "mac": MAC}}
    if firewall is not None:
        fields["firewall"] = firewall
    c.define_vm(A, VM, memory_mib=128, mib=16, rate=100,
                extra=lan.vm_cmdline(0) + f" ferry.serve={OPEN},{SHUT}", **fields)
    if start_vm:
        c.start_vm(A, VM)
        wait_until(lambda: f"serving tcp/{SHUT}" in c.console(A, VM), 90, 0.5,
                   "the guest's servers")
        wait_until(lambda: echo(lan, OPEN), 60, 0.5, "the VM's open port")
    return c


# --------------------------------------------------------------------------
# traffic from the observer


def ns_thread(ns, fn, *args):
    """Run fn(*args) in a daemon thread inside namespace ns."""
    def body():
        netlib.in_netns(ns, fn, *args)
    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


def echo(lan, port, timeout=2.0):
    """One TCP exchange with the VM's echo server on port: True if it
    answered."""
    def once():
        try:
            with socket.create_connection((lan.vm_address(0), port), timeout=timeout) as s:
                s.sendall(b"ping\n")
                return s.recv(16) == b"ping\n"
        except OSError:
            return False
    return netlib.in_netns(lan.observer, once)


class Prober:
    """Non-blocking connects to the VM's port at a high rate (rate_hz SYNs
    per second, each given 1 s), from the observer: `through` counts
    connects that got any answer (accepted or refused), `sent` all."""

    def __init__(self, lan, port, rate_hz=400):
        self.addr = (lan.vm_address(0), port)
        self.rate = rate_hz
        self.sent = self.through = 0
        self.first_through = None
        self.stop = threading.Event()
        self.thread = ns_thread(lan.observer, self.run)

    def run(self):
        pending = {}  # fd -> (socket, sent at)
        period = 1.0 / self.rate
        nxt = time.monotonic()
        while not self.stop.is_set() or pending:
            now = time.monotonic()
            if not self.stop.is_set() and now >= nxt:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(self.addr)
                pending[s.fileno()] = (s, now)
                self.sent += 1
                nxt += period
            _, w, _ = select.select([], [p[0] for p in pending.values()], [], 0.002)
            for s in w:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in (0, 111):
                    self.through += 1
                    self.first_through = self.first_through or time.time()
                pending.pop(s.fileno())[0].close()
            for fd, (s, t) in list(pending.items()):
                if now - t > 1.0:  # before its SYN is sent again
                    pending.pop(fd)[0].close()

    def finish(self):
        self.stop.set()
        self.thread.join(10)
        return self.through


class Stream:
    """A long-lived TCP connection from the observer to the VM's echo
    server: a numbered line every interval, each echo checked."""

    def __init__(self, lan, port, interval=0.05):
        self.sock = netlib.in_netns(
            lan.observer, lambda: socket.create_connection((lan.vm_address(0), port),
                                                           timeout=5))
        self.sock.settimeout(0.2)
        self.interval = interval
        self.sent = self.echoed = 0
        self.error = None
        self.last_echo = time.monotonic()
        self.longest_gap = 0.0
        self.stop = threading.Event()
        self.buf = b""
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            while not self.stop.is_set():
                self.sock.sendall(b"%d\n" % self.sent)
                self.sent += 1
                deadline = time.monotonic() + self.interval
                while time.monotonic() < deadline:
                    try:
                        data = self.sock.recv(4096)
                    except socket.timeout:
                        continue
                    if not data:
                        raise ConnectionError("the VM closed the stream")
                    self.buf += data
                    *lines, self.buf = self.buf.split(b"\n")
                    for ln in lines:
                        assert int(ln) == self.echoed, (ln, self.echoed)
                        self.echoed += 1
                        now = time.monotonic()
                        self.longest_gap = max(self.longest_gap, now - self.last_echo)
                        self.last_echo = now
        except (OSError, AssertionError, ValueError) as e:
            self.error = e

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


# --------------------------------------------------------------------------
# what the hosts hold


def nft_table(lan, host, family="bridge"):
    """host's ferry table of family as `nft -j` objects (rules with handles),
    or [] when it has none."""
    r = netlib.ns_run(lan.netns[host], "nft", "-j", "-a", "list", "table", family,
                      f"ferry-{host}", check=False)
    return json.loads(r.stdout)["nftables"] if r.returncode == 0 else []


def vm_chains(lan, host, uuid):
    """The VM's chains on host: {name: [(handle, comment, packets)]}."""
    out = {}
    for o in nft_table(lan, host):
        if "chain" in o and uuid in o["chain"]["name"]:
            out.setdefault(o["chain"]["name"], [])
        if "rule" in o and uuid in o["rule"]["chain"]:
            pk = [e["counter"]["packets"] for e in o["rule"]["expr"] if "counter" in e]
            out.setdefault(o["rule"]["chain"], []).append(
                (o["rule"]["handle"], o["rule"].get("comment"), pk[0] if pk else None))
    return out


def rule_ids(lan, host, uuid):
    """The VM's rules on host as (chain, handle, comment): what a change
    replaces (their counters move with the traffic)."""
    return sorted((ch, h, cm) for ch, rules in vm_chains(lan, host, uuid).items()
                  for h, cm, _ in rules)


def elements(lan, host, name, family="bridge"):
    for o in nft_table(lan, host, family):
        for k in ("map", "set"):
            if k in o and o[k]["name"] == name:
                return o[k].get("elem", [])
    return []


def tracked(lan, host, mark):
    """Conntrack entries on host tagged mark (conntrack -L output lines)."""
    r = netlib.ns_run(lan.netns[host], "conntrack", "-L", "-m", str(mark), check=False)
    return [ln for ln in r.stdout.splitlines() if ln.strip()]


def tag(uuid):
    return int(uuid[:8], 16) & 0x1fffffff or 1


def counter(c, host, direction, rule):
    fw = c.api_ok(host, "GET", f"/v1/vms/{VM}/firewall")
    for e in fw["installed"]["counters"][direction]:
        if e["rule"] == rule:
            return e["packets"]
    raise AssertionError(f"no counter {rule} in {fw}")


# --------------------------------------------------------------------------
# tests


def test_rules_follow_the_vm_and_a_blocked_port_stays_blocked(lan, make_cluster):
    """The open port answers on both hosts; SYNs to the shut port at 400/s
    from before the migration to after it never get an answer."""
    c = fw_cluster(lan, make_cluster)
    uuid = c.vm_info(A, VM)["uuid"]
    info = c.vm_info(A, VM)
    assert set(vm_chains(lan, A, uuid)) == {f"vm-{uuid}-in", f"vm-{uuid}-out"}
    assert elements(lan, A, "to_vm") == [[info["tap"], {"jump": {"target": f"vm-{uuid}-in"}}]]
    assert echo(lan, OPEN) and not echo(lan, SHUT, timeout=1)
    probe = Prober(lan, SHUT)
    time.sleep(1)
    r = c.migrate(A, VM, B)
    assert r.returncode == 0, r.stderr
    assert r.summary["context"]["ok"], r.summary
    wait_until(lambda: echo(lan, OPEN), 20, 0.2, "the open port on host-b")
    time.sleep(1)
    through = probe.finish()
    assert probe.sent > 1000, probe.sent
    assert through == 0, f"{through} of {probe.sent} SYNs to port {SHUT} got an answer"
    # the rules left with the VM: on host-b now, gone from host-a
    info = c.vm_info(B, VM)
    assert set(vm_chains(lan, B, uuid)) == {f"vm-{uuid}-in", f"vm-{uuid}-out"}
    assert elements(lan, B, "to_vm") == [[info["tap"], {"jump": {"target": f"vm-{uuid}-in"}}]]
    wait_until(lambda: not vm_chains(lan, A, uuid) and not tracked(lan, A, tag(uuid)),
               20, 0.2, "host-a to forget the VM's rules and flows")
    assert elements(lan, A, "to_vm") == [] and elements(lan, A, "vm_tags", "inet") == []
    # the probes that reached host-b were dropped by the default rule
    assert counter(c, B, "in", "default") > 0
    assert echo(lan, OPEN) and not echo(lan, SHUT, timeout=1)
    c.no_leftovers(A)
    c.no_leftovers(B)


def test_established_connection_survives_migration(lan, make_cluster):
    """Under "default": "drop", a stream opened on host-a keeps flowing
    after the switchover: its tracked state went to host-b before the VM
    resumed there (a segment of a flow host-b does not track is not a new
    connection, so without it the stream would stall)."""
    c = fw_cluster(lan, make_cluster)
    uuid = c.vm_info(A, VM)["uuid"]
    s = Stream(lan, OPEN)
    try:
        wait_until(lambda: s.echoed >= 20, 20, 0.1, "the stream to flow")
        r = c.migrate(A, VM, B)
        assert r.returncode == 0, r.stderr
        ctx = r.summary["context"]
        assert ctx["ok"] and ctx["flows"] >= 1, ctx
        before = s.echoed
        wait_until(lambda: s.echoed >= before + 40 or s.error, 30, 0.1,
                   "the stream to flow on host-b")
        assert s.error is None, s.error
        assert s.echoed >= before + 40
        # the open flow is tracked on host-b with the VM's tag, and host-a
        # forgot it
        assert any(f"dport={OPEN}" in ln and "ESTABLISHED" in ln
                   for ln in tracked(lan, B, tag(uuid))), tracked(lan, B, tag(uuid))
        wait_until(lambda: not tracked(lan, A, tag(uuid)), 20, 0.2,
                   "host-a to forget the flow")
    finally:
        s.close()


def test_no_context_no_switchover(lan, make_cluster):
    """The destination cannot install the VM's rules (its table was changed
    behind ferry's back): the migration fails before the switchover, and
    the source keeps the VM running with its rules."""
    c = fw_cluster(lan, make_cluster)
    uuid = c.vm_info(A, VM)["uuid"]
    rules = rule_ids(lan, A, uuid)
    ns = lan.netns[B]
    netlib.ns_run(ns, "nft", "add", "table", "bridge", f"ferry-{B}")
    netlib.ns_run(ns, "nft", "add", "set", "bridge", f"ferry-{B}", "to_vm",
                  "{ type ipv4_addr; }")
    r = c.migrate(A, VM, B)
    assert r.returncode != 0
    assert "not as ferry made them" in r.summary["error"], r.summary
    info = c.vm_info(A, VM)
    assert info["state"] == "running", info
    assert rule_ids(lan, A, uuid) == rules
    assert echo(lan, OPEN) and not echo(lan, SHUT, timeout=1)
    assert not vm_chains(lan, B, uuid)
    assert all(v["name"] != VM for v in c.list_vms(B))
    netlib.ns_run(ns, "nft", "delete", "table", "bridge", f"ferry-{B}")
    c.no_leftovers(A)
    c.no_leftovers(B)


def test_restart_keeps_rules_intact_and_single(lan, make_cluster):
    """A restarted ferryd finds the VM's rules as they were (same rule
    handles, counters kept), once; it removes those of a VM that no longer
    runs, and puts back what is missing."""
    c = fw_cluster(lan, make_cluster)
    uuid = c.vm_info(A, VM)["uuid"]
    tap = c.vm_info(A, VM)["tap"]
    assert echo(lan, OPEN)
    before = vm_chains(lan, A, uuid)
    ghost = "0badc0de-0000-4000-8000-000000000000"
    netlib.ns_run(lan.netns[A], "nft", "add", "chain", "bridge", f"ferry-{A}",
                  f"vm-{ghost}-in")
    netlib.ns_run(lan.netns[A], "nft", "add", "element", "bridge", f"ferry-{A}", "to_vm",
                  f'{{ "ghost0" : jump vm-{ghost}-in }}')
    c.restart_host(A)
    assert c.vm_info(A, VM)["tap"] == tap
    after = vm_chains(lan, A, uuid)
    assert [(h, cm) for v in after.values() for h, cm, _ in v] == \
        [(h, cm) for v in before.values() for h, cm, _ in v]
    assert [p for v in after.values() for *_, p in v] >= [p for v in before.values() for *_, p in v]
    chains = [o["chain"]["name"] for o in nft_table(lan, A) if "chain" in o]
    assert sorted(ch for ch in chains if ch.startswith("vm-")) == \
        [f"vm-{uuid}-in", f"vm-{uuid}-out"]
    assert elements(lan, A, "to_vm") == [[tap, {"jump": {"target": f"vm-{uuid}-in"}}]]
    # something lost while ferryd was down comes back
    netlib.ns_run(lan.netns[A], "nft", "delete", "element", "bridge", f"ferry-{A}",
                  "from_vm", f'{{ "{tap}" }}')
    c.restart_host(A)
    assert elements(lan, A, "from_vm") == [[tap, {"jump": {"target": f"vm-{uuid}-out"}}]]
    assert len(vm_chains(lan, A, uuid)) == 2
    assert echo(lan, OPEN) and not echo(lan, SHUT, timeout=1)


def test_firewall_commands_permissions_audit_and_default(lan, make_cluster):
    """`ferry vm firewall`: an operator may only look; a bad rule is refused
    with a precise error and changes nothing; a good one applies at once
    (the prober sees the port open) and is audited; clearing the VM's rules
    puts the cluster default on its tap."""
    default = {"default": "drop", "rules": [{"dir": "in", "proto": "tcp", "port": SHUT}]}
    c = fw_cluster(lan, make_cluster, policy_fw={"default": default})
    uuid = c.vm_info(A, VM)["uuid"]
    rules = c.dir / "rules.json"
    # an operator reads, but may not change
    assert json.loads(c.cli("--json", "vm", "firewall", "show", VM, host=A,
                            config=c.dir / "ops.json").stdout)["origin"] == "vm"
    rules.write_text(json.dumps({"default": "accept"}))
    r = c.cli("vm", "firewall", "set", VM, str(rules), host=A, config=c.dir / "ops.json",
              check=False)
    assert r.returncode != 0 and "vm.firewall" in r.stderr, r.stderr
    # a bad rule: a precise error, nothing changes
    handles = rule_ids(lan, A, uuid)
    rules.write_text(json.dumps({"default": "drop", "rules": [
        {"dir": "in", "proto": "tcp", "port": 22, "from": "10.0.0.1/8"}]}))
    r = c.cli("vm", "firewall", "set", VM, str(rules), host=A, check=False)
    assert r.returncode != 0
    assert "firewall.rules[0].from \"10.0.0.1/8\" has host bits set" in r.stderr, r.stderr
    assert rule_ids(lan, A, uuid) == handles
    # a good one applies at once
    probe = Prober(lan, SHUT, rate_hz=50)
    time.sleep(0.5)
    assert probe.through == 0
    opened = {"default": "drop", "rules": RULES["rules"] + [
        {"dir": "in", "proto": "tcp", "port": SHUT, "from": lan.observer_address}]}
    rules.write_text(json.dumps(opened))
    c.cli("vm", "firewall", "set", VM, str(rules), host=A)
    wait_until(lambda: probe.through > 0, 10, 0.1, "the newly allowed port to answer")
    probe.finish()
    assert echo(lan, SHUT)
    show = c.cli_json("vm", "firewall", "show", VM, host=A)
    assert show["firewall"]["rules"][2]["from"] == f"{lan.observer_address}/32"
    assert counter(c, A, "in", 2) > 0
    text = c.cli("vm", "info", VM, host=A).stdout
    assert "firewall: default drop (origin: vm)" in text and f"{SHUT}" in text, text
    # the definition on disk has them too
    assert json.loads((c.vm_dir(A, VM) / "vm.json").read_text())["firewall"] == show["firewall"]
    # audited: who, and the rules now
    recs = c.cli_json("audit", "show", "--action", "vm.firewall", host=A)
    recs = recs.get("records", recs) if isinstance(recs, dict) else recs
    assert [(r["actor"], r["outcome"]) for r in recs] == \
        [("admin", "error"), ("admin", "ok")], recs
    assert "has host bits set" in recs[0]["detail"]["error"]
    assert recs[1]["detail"]["firewall"] == show["firewall"]
    # the operator's attempt: refused by the policy, audited as its decision
    recs = c.cli_json("audit", "show", "--action", "policy.decision", host=A)
    recs = recs.get("records", recs) if isinstance(recs, dict) else recs
    assert [(r["actor"], r["outcome"], r["detail"]["request"]) for r in recs] == \
        [("ops", "deny", "vm.firewall")], recs
    # no rules of its own: the cluster default (which opens SHUT only)
    c.cli("vm", "firewall", "clear", VM, host=A)
    show = c.cli_json("vm", "firewall", "show", VM, host=A)
    assert show["origin"] == "default" and show["firewall"] is None
    assert show["rules"]["rules"][0]["port"] == SHUT
    wait_until(lambda: echo(lan, SHUT) and not echo(lan, OPEN, timeout=1), 10, 0.2,
               "the default's ports")


ONLY_OPEN = {"default": "drop", "rules": [{"dir": "in", "proto": "tcp", "port": OPEN}]}
ONLY_SHUT = {"default": "drop", "rules": [{"dir": "in", "proto": "tcp", "port": SHUT}]}


def test_new_default_reaches_a_migrated_vm(lan, make_cluster):
    """A VM that arrived on the cluster default (carried by its migration)
    gets the destination's new default at a policy reload, as a VM started
    there would."""
    c = fw_cluster(lan, make_cluster, firewall=None, policy_fw={"default": ONLY_OPEN})
    r = c.migrate(A, VM, B)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: echo(lan, OPEN), 20, 0.2, "the open port on host-b")
    pol = json.loads(c.policy_path(B).read_text())
    pol["firewall"] = {"default": ONLY_SHUT}
    c.write_policy(B, pol)
    c.api_ok(B, "POST", "/v1/policy/reload")
    # a VM started on host-b would have it at once (queued operation)
    wait_until(lambda: c.api_ok(B, "GET", f"/v1/vms/{VM}/firewall")["rules"]["rules"][0]
               ["port"] == SHUT, 10, 0.2, "the new default on host-b's VM")
    show = c.api_ok(B, "GET", f"/v1/vms/{VM}/firewall")
    assert show["origin"] == "default" and show["firewall"] is None, show
    wait_until(lambda: echo(lan, SHUT) and not echo(lan, OPEN, timeout=1), 10, 0.2,
               "the new default's ports")
