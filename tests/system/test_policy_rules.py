"""System tests of the policy (src/policy and its use by the API and
migrations): roles, the destination's own policy, labels in both
directions, reloading the policy, and queued outgoing migrations.

Every test builds its own cluster (host-a 127.0.0.2, host-b 127.0.0.3,
host-c 127.0.0.4) with its own policy files instead of the permissive
default one, and checks both what a client sees (HTTP status, JSON error,
`ferry` exit code) and what the hosts recorded in their audit logs
(<state_dir>/audit.log, read straight from the file). Shared helpers:
policylib.py.

Run with Debian's interpreter against the ASan build:
    FERRY_BUILD=build-asan /usr/bin/python3 -m pytest tests/system/test_policy_rules.py
"""

import json
import signal

from ferrylib import EXIT_FAILED, EXIT_OK, qemu_running
from policylib import (A, B, C, SMALL, as_user, assert_error,
                       assert_runs_only_on, boot, client_config, find_records,
                       host_roles, last_seq, migrate_body, policy, wait_records)


# --------------------------------------------------------------------------
# roles


def roles_policy(c):
    return policy(
        roles={"admin": ["admin"], "operator": ["ops"], "auditor": ["viewer"],
               "host": host_roles(c)},
        groups={"web": ["web1"]},
        rules=[
            {"name": "ops-moves-web", "vms": {"groups": ["web"]},
             "migrate_out": {"roles": ["operator"]}, "to": {"hosts": [B]},
             "accept_from": {"hosts": [A]}, "migrate_in": {"roles": ["operator"]}},
            {"name": "admin-moves-all", "vms": {"all": True},
             "migrate_out": {"roles": ["admin"]}, "to": {"all": True},
             "accept_from": {"all": True}, "migrate_in": {"roles": ["admin"]}},
        ])


def test_roles(make_cluster):
    c = make_cluster(start=False, users=("admin", "viewer", "ops", "stranger"))
    for h in c.hosts:
        c.write_policy(h, roles_policy(c))
    c.start_all()
    web_uuid = boot(c, A, "web1", wait=False)
    db_uuid = boot(c, A, "db1", wait=False)
    seq0 = {h: last_seq(c, h) for h in c.hosts}
    denials = []  # (host, actor, permission; None for a migration rule)

    # -- the auditor reads but changes nothing
    for path in ("/v1/host", "/v1/vms", "/v1/vms/web1", "/v1/audit?limit=5",
                 "/v1/migrations"):
        status, reply = as_user(c, "viewer", A, "GET", path)
        assert status == 200, (path, reply)
    viewer = client_config(c, "viewer")
    r = c.cli("audit", "show", "--limit", "5", host=A, config=viewer)
    assert "ACTION" in r.stdout, r.stdout
    c.cli("vm", "list", host=A, config=viewer)
    for method, path, body in (
            ("POST", "/v1/vms", c.vm_definition("sneaky", **SMALL)),
            ("POST", "/v1/vms/web1/stop", {"force": True}),
            ("POST", "/v1/vms/db1/pause", None),
            ("DELETE", "/v1/vms/db1", None)):
        status, reply = as_user(c, "viewer", A, method, path, body)
        assert_error(status, reply, 403, "forbidden", "viewer lacks vm.write")
        denials.append((A, "viewer", "vm.write"))
    status, reply = as_user(c, "viewer", A, "POST", "/v1/vms/web1/migrate",
                            migrate_body(c, B))
    assert_error(status, reply, 403, "forbidden", "viewer lacks vm.migrate")
    denials.append((A, "viewer", "vm.migrate"))
    r = c.cli("migrate", "web1", "--to", B, host=A, config=viewer, check=False)
    assert r.returncode != EXIT_OK and "viewer lacks vm.migrate" in r.stderr, r
    denials.append((A, "viewer", "vm.migrate"))
    status, reply = as_user(c, "viewer", A, "POST", "/v1/policy/reload")
    assert_error(status, reply, 403, "forbidden", "viewer lacks policy.reload")
    denials.append((A, "viewer", "policy.reload"))
    # nothing changed
    assert {v["name"]: v["state"] for v in c.list_vms(A)} == \
        {"web1": "running", "db1": "running"}

    # -- an identity the policy does not know is refused everywhere
    stranger = client_config(c, "stranger")
    for method, path, body, perm in (
            ("GET", "/v1/host", None, "host.read"),
            ("GET", "/v1/vms", None, "vm.read"),
            ("GET", "/v1/vms/web1/console", None, "vm.read"),
            ("GET", "/v1/audit", None, "audit.read"),
            ("GET", "/v1/audit/log", None, "audit.read"),
            ("GET", "/v1/migrations", None, "migration.read"),
            ("POST", "/v1/vms/web1/stop", None, "vm.write"),
            ("POST", "/v1/vms/web1/migrate", migrate_body(c, B), "vm.migrate"),
            ("POST", "/v1/incoming", {"id": "00" * 16, "source": A}, "migration.peer"),
            ("POST", "/v1/policy/reload", None, "policy.reload")):
        status, reply = as_user(c, "stranger", A, method, path, body)
        assert_error(status, reply, 403, "forbidden", f"stranger lacks {perm}")
        denials.append((A, "stranger", perm))
    r = c.cli("host", "info", host=B, config=stranger, check=False)
    assert r.returncode != EXIT_OK and "stranger lacks host.read" in r.stderr, r
    denials.append((B, "stranger", "host.read"))

    # -- the operator migrates only what the rules allow
    ops = client_config(c, "ops")
    status, reply = as_user(c, "ops", A, "GET", "/v1/audit")
    assert_error(status, reply, 403, "forbidden", "ops lacks audit.read")
    denials.append((A, "ops", "audit.read"))
    status, reply = as_user(c, "ops", A, "POST", "/v1/vms/db1/migrate",
                            migrate_body(c, B))
    assert_error(status, reply, 403, "forbidden", "no rule lets ops migrate vm db1 out")
    denials.append((A, "ops", None))
    r = c.migrate(A, "db1", B, config=ops)
    assert r.returncode == EXIT_FAILED, r
    assert "no rule lets ops migrate vm db1 out" in r.stderr, r.stderr
    denials.append((A, "ops", None))
    r = c.migrate(A, "web1", B, config=ops)
    assert r.returncode == EXIT_OK and r.summary["outcome"] == "completed", r
    assert r.summary["requester"] == "ops", r.summary
    r = c.migrate(A, "db1", B)  # the admin may move any VM anywhere
    assert r.returncode == EXIT_OK and r.summary["outcome"] == "completed", r
    assert {v["name"] for v in c.list_vms(B)} == {"web1", "db1"}
    assert c.list_vms(A) == []
    # ops may not take web1 back: the rule only goes to host-b
    status, reply = as_user(c, "ops", B, "POST", "/v1/vms/web1/migrate",
                            migrate_body(c, A))
    assert_error(status, reply, 403, "forbidden", "no rule lets vm web1 go to host host-a")
    denials.append((B, "ops", None))
    for vm, uuid in (("web1", web_uuid), ("db1", db_uuid)):
        info = c.vm_info(B, vm)
        assert info["state"] == "running" and qemu_running(info["pid"], uuid), info

    # -- every denial is in the audit log of the host that refused, with
    # the rule that decided: "roles" for a missing permission, the rule
    # walk's "default-deny" for a migration no rule allows
    got, want = [], []
    for h in (A, B):
        for r in find_records(c, h, seq0[h], action="policy.decision", outcome="deny"):
            d = r["detail"]
            assert d["reason"].startswith(f"{r['actor']} lacks {d['permission']}"
                                          if "permission" in d else "no rule lets"), r
            got.append((h, r["actor"], d.get("permission"), d["rule"]))
    want = [(h, who, perm, "roles" if perm else "default-deny")
            for h, who, perm in denials]
    assert sorted(got, key=str) == sorted(want, key=str), \
        f"audited denials {got} != denials seen {want}"
    # the allowed migrations name their rules on both sides
    allow_a = find_records(c, A, seq0[A], action="policy.decision", outcome="allow")
    allow_b = find_records(c, B, seq0[B], action="policy.decision", outcome="allow")
    assert {(r["actor"], r["target"], r["detail"]["rule"]) for r in allow_a} == \
        {("admin", "db1", "admin-moves-all"), ("ops", "web1", "ops-moves-web")}, allow_a
    assert {(r["actor"], r["target"], r["detail"]["rule"], r["detail"]["check"])
            for r in allow_b} == \
        {(A, "db1", "admin-moves-all", "migrate_in"),
         (A, "web1", "ops-moves-web", "migrate_in")}, allow_b


# --------------------------------------------------------------------------
# the destination's own policy


def test_destination_refuses_untrusted_source(make_cluster):
    c = make_cluster(start=False)
    roles = {"admin": ["admin"], "host": host_roles(c)}
    # host-a is willing to send anything to host-b ...
    c.write_policy(A, policy(roles, [
        {"name": "a-sends-to-b", "vms": {"all": True},
         "migrate_out": {"roles": ["admin"]}, "to": {"hosts": [B]}}]))
    # ... but host-b accepts only from a host that does not exist here, and
    # may itself send to host-a: no rule of its accepts host-a
    c.write_policy(B, policy(roles, [
        {"name": "b-trusts-z", "vms": {"all": True},
         "accept_from": {"hosts": ["host-z"]}, "migrate_in": {"roles": ["admin"]}},
        {"name": "b-sends-to-a", "vms": {"all": True},
         "migrate_out": {"roles": ["admin"]}, "to": {"hosts": [A]}}]))
    c.start_all()
    uuid = boot(c, A, "vm1")
    seq0 = {h: last_seq(c, h) for h in c.hosts}

    r = c.migrate(A, "vm1", B)
    assert r.returncode == EXIT_FAILED, r
    s = r.summary
    assert s["outcome"] == "failed", s
    want = "host host-b refuses: no rule lets vm vm1 go in from host host-a"
    assert want in s["error"], s
    assert want in r.stderr, r.stderr

    # the VM still runs on host-a, host-b has nothing of it
    assert_runs_only_on(c, A, "vm1", uuid, [B])
    c.no_leftovers(A)

    # the source allowed, the destination denied, both recorded it
    allow = find_records(c, A, seq0[A], action="policy.decision", target="vm1")
    assert [(r["outcome"], r["detail"]["rule"], r["detail"]["check"], r["detail"]["host"])
            for r in allow] == [("allow", "a-sends-to-b", "migrate_out", B)], allow
    deny = find_records(c, B, seq0[B], action="policy.decision", target="vm1")
    assert len(deny) == 1, deny
    d = deny[0]
    assert (d["outcome"], d["actor"], d["detail"]["check"], d["detail"]["from"],
            d["detail"]["requester"], d["detail"]["rule"]) == \
        ("deny", A, "migrate_in", A, "admin", "default-deny"), d
    assert "no rule lets vm vm1 go in from host host-a" in d["detail"]["reason"], d
    end = find_records(c, A, seq0[A], action="migration.end", target="vm1")
    assert [e["outcome"] for e in end] == ["failed"], end
    # host-b never prepared anything
    assert not find_records(c, B, seq0[B], action="migration.prepare", outcome="ok")


# --------------------------------------------------------------------------
# labels, in both directions


def label_policy(c, rules):
    return policy(
        roles={"admin": ["admin"], "host": host_roles(c)},
        hosts={A: {"labels": {"region": "eu"}}, B: {"labels": {"region": "eu"}},
               C: {"labels": {"region": "us"}}},
        rules=rules)


EU_RULE = {"name": "eu-stays-in-eu", "vms": {"labels": {"region": "eu"}},
           "migrate_out": {"roles": ["admin"]}, "to": {"labels": {"region": "eu"}},
           "accept_from": {"labels": {"region": "eu"}}, "migrate_in": {"roles": ["admin"]}}


def test_labels_both_directions(make_cluster):
    c = make_cluster(hosts=3, start=False)
    for h in (A, B):
        c.write_policy(h, label_policy(c, [EU_RULE]))
    # host-c (us) takes VMs only from us hosts
    c.write_policy(C, label_policy(c, [
        {"name": "us-from-us", "vms": {"all": True},
         "accept_from": {"labels": {"region": "us"}}, "migrate_in": {"roles": ["admin"]}}]))
    c.start_all()
    uuid = boot(c, A, "euvm", labels={"region": "eu"})
    assert c.vm_info(A, "euvm")["labels"] == {"region": "eu"}
    seq0 = {h: last_seq(c, h) for h in c.hosts}

    # -- out: host-a refuses to send an eu VM to a us host
    status, reply = c.api(A, "POST", "/v1/vms/euvm/migrate", migrate_body(c, C))
    assert_error(status, reply, 403, "forbidden", "no rule lets vm euvm go to host host-c")
    r = c.migrate(A, "euvm", C)
    assert r.returncode == EXIT_FAILED and "no rule lets vm euvm go to host host-c" in r.stderr, r
    deny = find_records(c, A, seq0[A], action="policy.decision", target="euvm")
    assert [(d["outcome"], d["detail"]["check"], d["detail"]["host"], d["detail"]["rule"])
            for d in deny] == [("deny", "migrate_out", C, "default-deny")] * 2, deny
    # host-c never heard of it
    assert not find_records(c, C, seq0[C], target="euvm")

    # -- in: with a source policy that (wrongly) lets it go anywhere, host-c
    # refuses a source whose labels its accept_from does not match
    c.write_policy(A, label_policy(c, [
        {"name": "wrongly-anywhere", "vms": {"all": True},
         "migrate_out": {"roles": ["admin"]}, "to": {"all": True}}]))
    c.cli("policy", "reload", host=A)
    seq1 = {h: last_seq(c, h) for h in c.hosts}
    r = c.migrate(A, "euvm", C)
    assert r.returncode == EXIT_FAILED, r
    assert "host host-c refuses: no rule lets vm euvm go in from host host-a" in \
        r.summary["error"], r.summary
    allow = find_records(c, A, seq1[A], action="policy.decision", target="euvm")
    assert [(d["outcome"], d["detail"]["rule"]) for d in allow] == \
        [("allow", "wrongly-anywhere")], allow
    deny = find_records(c, C, seq1[C], action="policy.decision", target="euvm")
    assert [(d["outcome"], d["detail"]["check"], d["detail"]["from"], d["detail"]["rule"])
            for d in deny] == [("deny", "migrate_in", A, "default-deny")], deny
    assert_runs_only_on(c, A, "euvm", uuid, [B, C])

    # -- the control: eu -> eu is allowed by both sides' label rules
    c.write_policy(A, label_policy(c, [EU_RULE]))
    c.cli("policy", "reload", host=A)
    seq2 = {h: last_seq(c, h) for h in c.hosts}
    r = c.migrate(A, "euvm", B)
    assert r.returncode == EXIT_OK and r.summary["outcome"] == "completed", r
    assert [d["detail"]["rule"] for d in
            find_records(c, A, seq2[A], action="policy.decision", outcome="allow")] == \
        ["eu-stays-in-eu"]
    assert [d["detail"]["rule"] for d in
            find_records(c, B, seq2[B], action="policy.decision", outcome="allow")] == \
        ["eu-stays-in-eu"]
    assert_runs_only_on(c, B, "euvm", uuid, [A, C])


# --------------------------------------------------------------------------
# policy reload


def reload_policy(c, ops_role):
    roles = {"admin": ["admin"], "auditor": ["viewer"], "host": host_roles(c)}
    if ops_role:
        roles[ops_role] = roles.get(ops_role, []) + ["ops"]
    return policy(roles, [
        {"name": "admin-moves-all", "vms": {"all": True},
         "migrate_out": {"roles": ["admin"]}, "to": {"all": True}}])


def test_policy_reload(make_cluster):
    c = make_cluster(hosts=1, start=False, users=("admin", "ops", "viewer"))
    c.write_policy(A, reload_policy(c, "operator"))
    c.start_all()
    path = str(c.policy_path(A))
    h = c.hosts[A]
    n = [0]

    def ops_defines():
        n[0] += 1
        return as_user(c, "ops", A, "POST", "/v1/vms",
                       c.vm_definition(f"r{n[0]}", **SMALL))

    def reload_records(since, outcome):
        return find_records(c, A, since, action="policy.reload", outcome=outcome)

    assert ops_defines()[0] == 201
    broken = {
        "syntax": ('{"roles": {"admin": ["admin"],\n  "operator": ["ops"]\n',
                   [path, "malformed JSON at line"]),
        "semantic": (json.dumps(policy({"admin": ["admin"], "superuser": ["ops"]}, [])),
                     [path, "roles.superuser", "unknown role"]),
        "semantic-rule": (json.dumps(policy({"admin": ["admin"]}, [
            {"name": "r", "vms": {"all": True}, "migrate_out": {"roles": ["root"]},
             "to": {"all": True}}])),
            [path, "rules[0] (r).migrate_out.roles[0]", 'unknown role "root"']),
    }
    for name, (text, needles) in broken.items():
        # via the API (`ferry policy reload`)
        c.write_policy(A, text)
        seq = last_seq(c, A)
        r = c.cli("policy", "reload", host=A, check=False)
        assert r.returncode != EXIT_OK, (name, r)
        for nd in needles:
            assert nd in r.stderr, (name, nd, r.stderr)
        recs = reload_records(seq, "error")
        assert recs and recs[0]["actor"] == "admin", (name, recs)
        assert all(nd in recs[0]["detail"]["error"] for nd in needles), (name, recs)
        status, reply = ops_defines()
        assert status == 201, (name, "the old policy must stay in force", reply)
        # via SIGHUP
        seq = last_seq(c, A)
        h.proc.send_signal(signal.SIGHUP)
        recs = wait_records(c, A, since_seq=seq, action="policy.reload", outcome="error")
        assert recs[0]["actor"] == "-" and recs[0]["target"] == path, recs
        assert all(nd in recs[0]["detail"]["error"] for nd in needles), (name, recs)
        assert "policy: reload refused, the old policy stays" in h.log.read_text()
        status, reply = ops_defines()
        assert status == 201, (name, "the old policy must stay in force", reply)
        assert as_user(c, "viewer", A, "GET", "/v1/host")[0] == 200

    # a valid policy takes effect at once: ops becomes an auditor
    c.write_policy(A, reload_policy(c, "auditor"))
    seq = last_seq(c, A)
    r = c.cli("policy", "reload", host=A)
    assert f"policy {path} reloaded (1 rules)" in r.stdout, r.stdout
    assert [x["detail"]["rules"] for x in reload_records(seq, "ok")
            if x["target"] == path] == [1]
    status, reply = ops_defines()
    assert_error(status, reply, 403, "forbidden", "ops lacks vm.write")
    assert as_user(c, "ops", A, "GET", "/v1/audit?limit=1")[0] == 200  # now it may

    # and by SIGHUP: ops is an operator again, the viewer is gone
    p = reload_policy(c, "operator")
    del p["roles"]["auditor"]
    p["rules"] = []
    c.write_policy(A, p)
    seq = last_seq(c, A)
    h.proc.send_signal(signal.SIGHUP)
    recs = wait_records(c, A, since_seq=seq, action="policy.reload", outcome="ok")
    assert recs[0]["actor"] == "-" and recs[0]["detail"]["rules"] == 0, recs
    assert ops_defines()[0] == 201
    status, reply = as_user(c, "viewer", A, "GET", "/v1/host")
    assert_error(status, reply, 403, "forbidden", "viewer lacks host.read")
    assert h.running()


# --------------------------------------------------------------------------
# concurrent outgoing migrations


def test_max_outgoing_queues(make_cluster):
    """Over migration.max_outgoing a request is queued, not refused: FIFO,
    its position shown, cancellable, started when a slot frees."""
    c = make_cluster(ferryd_extra={"migration": {"max_outgoing": 1}})
    u1 = boot(c, A, "vm1")
    u2 = boot(c, A, "vm2", wait=False)
    boot(c, A, "vm3", wait=False)
    p = c.migrate_start(A, "vm1", B, "--bandwidth", "1")
    try:
        c.wait_migration(A, "vm1", lambda rec: rec.get("phase") not in (None, "queued"),
                         30, "the first migration to run", proc=p)
        status, q2 = c.api(A, "POST", "/v1/vms/vm2/migrate", migrate_body(c, B))
        assert status == 202 and q2["phase"] == "queued", (status, q2)
        assert q2["queue_position"] == 1, q2
        status, q3 = c.api(A, "POST", "/v1/vms/vm3/migrate", migrate_body(c, B))
        assert status == 202 and q3["queue_position"] == 2, (status, q3)
        # the VM shows its migration; a queued one cannot be changed
        assert c.vm_info(A, "vm2")["active_migration"] == q2["id"]
        status, reply = c.api(A, "POST", "/v1/vms/vm2/pause")
        assert_error(status, reply, 409, "conflict", "is migrating")
        # cancelling the first queued one moves the next up
        c.api_ok(A, "POST", f"/v1/migrations/{q2['id']}/cancel", expect=(202,))
        assert c.migration(A, q2["id"])["outcome"] == "cancelled"
        assert c.migration(A, q3["id"])["queue_position"] == 1
        assert c.vm_info(A, "vm2")["state"] == "running"
        assert "active_migration" not in c.vm_info(A, "vm2")
        assert c.active_migration(A, "vm1") is not None  # unaffected
    finally:
        c.cli("migrate", "--cancel", "vm1", host=A, check=False)
    res = c.migrate_result(p, timeout=60)
    assert res.summary["outcome"] == "cancelled", res.summary
    # vm1's slot freed: vm3 runs now and completes
    done = c.wait_migration_done(A, q3["id"], timeout=180)
    assert done["outcome"] == "completed", done
    assert_runs_only_on(c, A, "vm1", u1, [])
    assert_runs_only_on(c, A, "vm2", u2, [])
    assert c.vm_info(B, "vm3")["state"] == "running"
