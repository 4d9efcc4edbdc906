"""Helpers shared by the policy, audit and flood-protection system tests
(test_policy_rules.py, test_audit_tamper.py, test_flood.py): policy files,
users' requests, the hosts' audit logs read straight from the file, JSON
errors, test-guest VMs."""

import http.client
import json

from ferrylib import qemu_running, wait_until

A, B, C = "host-a", "host-b", "host-c"
SMALL = {"memory_mib": 256, "mib": 32}


def policy(roles, rules, hosts=None, groups=None):
    p = {"version": 1, "roles": roles, "rules": rules}
    if hosts is not None:
        p["hosts"] = hosts
    if groups is not None:
        p["groups"] = groups
    return p


def host_roles(c):
    return list(c.hosts)


def client_config(c, user):
    """A client.json for user (its certificate from the cluster CA)."""
    return c.write_client_config(c.dir / f"client-{user}.json", user=user)


def as_user(c, user, host, method, path, body=None, **kw):
    """c.api() with user's certificate."""
    return c.api(host, method, path, body=body, cert=c.user_cert(user), **kw)


def audit_log_path(c, host):
    return c.hosts[host].state_dir / "audit.log"


def audit_pub_path(c, host):
    return c.hosts[host].state_dir / "audit.pub"


def audit_records(c, host):
    """Every complete record of host's audit log, read from the file."""
    text = audit_log_path(c, host).read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def find_records(c, host, since_seq=0, **fields):
    """Records of host's log after since_seq whose top-level fields equal
    `fields` (e.g. action="policy.decision", outcome="deny")."""
    return [r for r in audit_records(c, host)
            if r["seq"] > since_seq and all(r.get(k) == v for k, v in fields.items())]


def wait_records(c, host, timeout=10, n=1, **fields):
    return wait_until(lambda: (lambda rs: rs if len(rs) >= n else None)(
        find_records(c, host, **fields)), timeout, 0.2,
        f"{n} audit record(s) {fields} on {host}")


def last_seq(c, host):
    recs = audit_records(c, host)
    return recs[-1]["seq"] if recs else 0


def assert_error(status, reply, want_status, code, *needles):
    """A JSON error reply {"error": {"code", "message"}} with want_status,
    whose message contains every needle."""
    assert status == want_status, f"status {status} != {want_status}: {reply}"
    assert isinstance(reply, dict) and set(reply) == {"error"}, reply
    err = reply["error"]
    assert err["code"] == code, reply
    for n in needles:
        assert n in err["message"], f"{n!r} not in {err['message']!r}"
    return err["message"]


def boot(c, host, name, wait=True, **kw):
    """Define and start a small test-guest VM; wait for memload's heartbeats."""
    args = dict(SMALL)
    args.update(kw)
    vm = c.define_vm(host, name, **args)
    c.start_vm(host, name)
    if wait:
        c.wait_heartbeats(host, name, 2, after_seq=0)
    return vm["uuid"]


def last_hb(c, host, name):
    hbs = c.heartbeats(host, name)
    return hbs[-1]["seq"] if hbs else 0


def assert_runs_only_on(c, owner, name, uuid, others):
    """name runs on owner (its memload keeps beating) and nowhere else;
    the others have no leftovers."""
    info = c.vm_info(owner, name)
    assert info["state"] == "running" and qemu_running(info["pid"], uuid), info
    seq = last_hb(c, owner, name)
    c.wait_heartbeats(owner, name, 2, after_seq=seq, timeout=60)
    for h in others:
        status, reply = c.api(h, "GET", f"/v1/vms/{name}")
        assert status == 404, f"{h} has vm {name}: {reply}"
        assert not c.qemu_pids(h, uuid), f"{h} runs a QEMU for {uuid}"
        c.no_leftovers(h)


def migrate_body(c, to):
    h = c.hosts[to]
    return {"to": to, "address": h.address, "port": h.port}


class KeepAlive:
    """One persistent HTTPS connection with a user's certificate (so a burst
    of requests costs one handshake)."""

    def __init__(self, c, host, user, timeout=30):
        h = c.hosts[host]
        ctx = c.ssl_context(cert=c.user_cert(user))
        self.conn = http.client.HTTPSConnection(h.address, h.port, context=ctx,
                                                timeout=timeout)

    def request(self, method, path, body=None):
        data = json.dumps(body) if body is not None else None
        hdrs = {"Content-Type": "application/json"} if data else {}
        self.conn.request(method, path, body=data, headers=hdrs)
        resp = self.conn.getresponse()
        text = resp.read().decode(errors="replace")
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def close(self):
        self.conn.close()
