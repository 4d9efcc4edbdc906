"""Attestation in every migration, with a software TPM per host
(docs/attestation.md, "In a migration"): the source sends a fresh challenge
in prepare, the destination answers with a quote bound to the migration id
and the TLS session, and the source checks it before a single data-plane
byte moves. Also the VM's own signed constraints, enforced at the
destination.

A refused migration must leave the data plane untouched: the source's
record and the destination's history show wire_bytes 0, and the
destination's migration port accepted no connection
(/v1/host migrations.data_conns_accepted).

The replay and relay tests put a fake host-b in front of the source: a TLS
server with host-b's own certificate and key (a compromised host-b) that
answers prepare with a quote it did not make for this migration.
"""

import http.server
import json
import os
import secrets
import socket
import ssl
import threading

import pytest

import tpmlib
from test_attest import QEMU, make_tpm_cluster  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not tpmlib.available(),
                                reason="swtpm is not installed (scripts/deps.sh)")

A, B, C = "host-a", "host-b", "host-c"
VM = "mig"
NONCE = "host host-b: the quote's nonce is not this attestation's"


def admin(c, *args, check=True):
    return c.cli(*args, "--dir", str(c.pki), check=check)


def boot(c, host=A, name=VM, **kw):
    c.define_vm(host, name, mib=16, **kw)
    c.start_vm(host, name)
    return c.wait_heartbeats(host, name, 2, after_seq=0)[-1]["seq"]


def conns(c, host):
    return c.host_info(host)["migrations"]["data_conns_accepted"]


def audit(c, host, action):
    return c.api_ok(host, "GET", f"/v1/audit?action={action}")["records"]


def migrate_api(c, to, address, port, src=A, vm=VM):
    """Start a migration through the API (any address: a fake host) and
    wait for its end -> the source's final record."""
    rec = c.api_ok(src, "POST", f"/v1/vms/{vm}/migrate",
                   {"to": to, "address": address, "port": port}, expect=(202,))
    return c.wait_migration_done(src, rec["id"])


def assert_refused_untouched(c, rec, dest, before, seq, reason):
    """The migration rec was refused by attestation before any data-plane
    byte, and the source VM runs on, untouched."""
    assert rec["outcome"] == "failed", rec
    assert reason in rec["error"], rec["error"]
    assert rec["attestation"]["verified"] is False
    assert rec.get("wire_bytes", 0) == 0, rec
    if dest is not None:
        assert conns(c, dest) == before
    assert c.vm_info(A, VM)["state"] == "running"
    c.wait_heartbeats(A, VM, 1, after_seq=seq)
    refused = [r for r in audit(c, A, "migration.attest")
               if r["detail"]["id"] == rec["id"]]
    assert refused and refused[-1]["outcome"] == "refused"
    assert reason in refused[-1]["detail"]["reason"]


def test_attested_migration_not_enrolled_and_tampered(make_tpm_cluster):
    c, tpms = make_tpm_cluster(hosts=2, seal=False)
    # host-b runs a QEMU that is not in the allowlist (a wrapper: a copy of
    # the binary elsewhere would not find its modules)
    # (in a folder the unprivileged QEMU user may enter and read)
    os.chmod(c.dir, 0o711)
    (c.dir / "bin").mkdir(mode=0o755)
    bad_qemu = c.dir / "bin" / "qemu-system-x86_64"
    bad_qemu.write_text(f'#!/bin/sh\nexec {QEMU} "$@"\n')
    bad_qemu.chmod(0o755)
    c.stop_host(B)
    c.write_host_config(B, attestation=tpms.config(B, "required", False),
                        qemu=str(bad_qemu))
    c.start_host(B)
    admin(c, "host", "enroll", A)
    seq = boot(c)

    # not enrolled: refused, nothing sent
    before = conns(c, B)
    rec = c.migrate(A, VM, B).summary
    assert_refused_untouched(c, rec, B, before, seq, "host-b is not enrolled")

    # tampered: its QEMU's digest is not in the allowlist for site=eu
    admin(c, "host", "enroll", B)
    rec = c.migrate(A, VM, B).summary
    digest = tpmlib.file_sha256(bad_qemu)
    assert_refused_untouched(
        c, rec, B, before, seq,
        f"qemu digest {digest[:16]}\u2026 ({bad_qemu}) is not in the allowlist "
        "for site=eu")
    assert rec["error"].startswith("attestation of host-b refused: ")
    # audited on both hosts: the destination learnt the reason with the abort
    hist = [m for m in c.migrations(B) if m["id"] == rec["id"]]
    assert hist and hist[0]["wire_bytes"] == 0
    assert "aborted by the source: attestation of host-b refused" in hist[0]["error"]
    ends = [r for r in audit(c, B, "migration.end") if r["detail"]["id"] == rec["id"]]
    assert ends and "not in the allowlist" in ends[-1]["detail"]["error"]
    assert not [r for r in audit(c, B, "migration.channel*")]
    assert c.vm_info(A, VM)["state"] == "running"
    assert VM not in [v["name"] for v in c.list_vms(B)]

    # the approved QEMU after a reboot (the TPM is reset: the log forgets
    # the other one): the migration runs, after a verified quote
    c.stop_host(B)
    tpms.reset(B)
    c.write_host_config(B, attestation=tpms.config(B, "required", False))
    c.start_host(B)
    r = c.migrate(A, VM, B)
    rec = r.summary
    assert rec["outcome"] == "completed", (rec, r.stderr)
    att = rec["attestation"]
    assert att["verified"] is True and att["host"] == B
    assert {e["kind"] for e in att["events"]} == {"ferryd", "qemu", "policy"}
    assert all(e["verdict"] == "allowed" for e in att["events"])
    assert att["quote_ms"] >= 0 and att["verify_ms"] >= 0
    assert rec["wire_bytes"] > 0 and conns(c, B) > before
    ok = [r for r in audit(c, A, "migration.attest") if r["detail"]["id"] == rec["id"]]
    assert ok[-1]["outcome"] == "verified"
    c.wait_heartbeats(B, VM, 1, after_seq=seq)


class FakeHost:
    """A TLS server with host-b's certificate: answers prepare from
    self.answer(body) -> (status, reply), records abort reasons, and
    counts connections to its data port."""

    def __init__(self, c, name, answer):
        h = c.hosts[name]
        self.address, self.port, self.data_port = h.address, h.port + 2, h.port + 3
        self.aborts = []
        self.data_conns = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"null")
                if self.path == "/v1/incoming":
                    status, reply = answer(body)
                else:
                    outer.aborts.append((self.path, body))
                    status, reply = 200, {"outcome": "not_committed"}
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(c.pki / "hosts" / f"{name}.crt", c.pki / "hosts" / f"{name}.key")
        ctx.load_verify_locations(c.pki / "ca.crt")
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.http = http.server.ThreadingHTTPServer((self.address, self.port), Handler)
        self.http.socket = ctx.wrap_socket(self.http.socket, server_side=True)
        self.data = socket.create_server((self.address, self.data_port))
        self.data.settimeout(0.2)
        self.stop = False
        self.threads = [threading.Thread(target=self.http.serve_forever, daemon=True),
                        threading.Thread(target=self._count, daemon=True)]
        for t in self.threads:
            t.start()

    def _count(self):
        while not self.stop:
            try:
                s, _ = self.data.accept()
                self.data_conns += 1
                s.close()
            except OSError:
                pass

    def session(self, attestation):
        return {"id": secrets.token_hex(16), "key": secrets.token_hex(32),
                "data_address": self.address, "data_port": self.data_port,
                "attestation": attestation}

    def close(self):
        if self.stop:
            return
        self.stop = True
        self.http.shutdown()
        self.http.server_close()
        for t in self.threads:
            t.join(5)
        self.data.close()


def call_as(c, src_name, dst, method, path, body):
    """A request to the real host dst with host src_name's certificate (what
    a compromised host holds) -> (status, reply)."""
    return c.api(dst, method, path, body=body,
                 cert=(c.pki / "hosts" / f"{src_name}.crt",
                       c.pki / "hosts" / f"{src_name}.key"))


def test_replayed_and_relayed_quotes_refused(make_tpm_cluster, request):
    c, tpms = make_tpm_cluster(hosts=3, seal=False)
    for h in (A, B, C):
        admin(c, "host", "enroll", h)
    seq = boot(c)
    recorded = {}

    def relay_from(real):
        """Forward the source's prepare to the real host `real` (as host-a,
        whose key the attacker holds) and relay its answer: that quote is
        made in another TLS session, and by host-c's TPM for host-c."""
        def answer(body):
            status, reply = call_as(c, A, real, "POST", "/v1/incoming", body)
            if status == 201:
                recorded.setdefault("quote", reply["attestation"])
                call_as(c, A, real, "POST", f"/v1/incoming/{reply['id']}/abort", None)
            return status, fake.session(reply.get("attestation"))
        return answer

    # relay: host-c's quote, relayed by "host-b": not host-b's AK
    fakes = []
    request.addfinalizer(lambda: [f.close() for f in fakes])
    fake = FakeHost(c, B, relay_from(C))
    fakes.append(fake)
    rec = migrate_api(c, B, fake.address, fake.port)
    assert_refused_untouched(c, rec, None, 0, seq,
                             "signature does not verify with its enrolled AK")
    assert fake.data_conns == 0
    assert fake.aborts and "attestation of host-b refused" in fake.aborts[-1][1]["reason"]
    fake.close()

    # host-b's own quote, relayed from another TLS session: not this nonce
    recorded.clear()
    fake = FakeHost(c, B, relay_from(B))
    fakes.append(fake)
    rec = migrate_api(c, B, fake.address, fake.port)
    assert_refused_untouched(c, rec, None, 0, seq, NONCE)
    assert fake.data_conns == 0

    # replay: the quote host-b made for that earlier migration, answered
    # again in a later one
    old = recorded["quote"]
    fake.close()
    fake = FakeHost(c, B, lambda body: (201, fake.session(old)))
    fakes.append(fake)
    rec = migrate_api(c, B, fake.address, fake.port)
    assert_refused_untouched(c, rec, None, 0, seq, NONCE)
    assert fake.data_conns == 0


def constrained(c, tmp, cons, uuid):
    """A VM definition with constraints, signed by `ferry vm sign`."""
    d = c.vm_definition(VM, mib=16)
    d["uuid"] = uuid
    d["constraints"] = cons
    f = tmp / "vm.json"
    f.write_text(json.dumps(d))
    return json.loads(admin(c, "vm", "sign", str(f)).stdout)


def prepare_body(c, d, attest=True):
    """A prepare body as host-a's ferryd would send it for definition d."""
    body = {"version": "1.1", "migration": secrets.token_hex(16), "vm": d,
            "source": A, "requester": "admin", "multifd": 0, "postcopy": False,
            "insecure": False, "files": {}}
    if attest:
        body["attest"] = {"challenge": secrets.token_hex(32)}
    return body


def test_vm_constraints_enforced_at_destination(make_tpm_cluster, tmp_path):
    c, tpms = make_tpm_cluster(hosts=2, seal=False, start=False)
    # host-b keeps what it receives sealed
    c.write_host_config(B, attestation=tpms.config(B, "required", True))
    c.start_all()
    for h in (A, B):
        admin(c, "host", "enroll", h, "--policy", str(c.policy_path(A)))
    uuid = "5f0c3c1e-8d1a-4c47-9a55-0c6f1e0b7a21"

    # what host-b refuses although its policy ("anything-goes") allows it
    def refused(cons, reason, attest=True, tamper=None):
        d = constrained(c, tmp_path, cons, uuid)
        if tamper:
            tamper(d["constraints"])
        status, reply = call_as(c, A, B, "POST", "/v1/incoming",
                                prepare_body(c, d, attest))
        assert status == 403, reply
        assert reason in reply["error"]["message"]
    refused({"destinations": {"site": ["us", "asia"]}},
            "vm mig's constraints refuse host host-b: its label site is eu, "
            "not one the VM allows")
    refused({"roles": ["operator"]},
            "vm mig's constraints refuse requester admin: it holds none of the "
            "VM's allowed roles")
    refused({"attest": "required"},
            "vm mig's constraints require the destination's attestation",
            attest=False)
    refused({"destinations": {"site": ["us"]}},
            "vm mig's constraints are not signed by the attestation authority",
            tamper=lambda k: k.update(destinations={"site": ["eu"]}))
    deny = [r for r in audit(c, B, "policy.decision")
            if r["detail"].get("check") == "vm_constraints"]
    assert len(deny) == 3 and all(r["outcome"] == "deny" for r in deny)

    # end to end: the source's cluster policy allows the move, the VM's
    # constraints (site=us) do not, and host-b refuses before any channel
    d = constrained(c, tmp_path, {"destinations": {"site": ["us"]}}, uuid)
    c.api_ok(A, "POST", "/v1/vms", d, expect=(201,))
    c.start_vm(A, VM)
    seq = c.wait_heartbeats(A, VM, 2, after_seq=0)[-1]["seq"]
    before = conns(c, B)
    rec = c.migrate(A, VM, B).summary
    assert rec["outcome"] == "failed"
    assert "its label site is eu, not one the VM allows" in rec["error"]
    assert rec.get("wire_bytes", 0) == 0 and conns(c, B) == before
    c.wait_heartbeats(A, VM, 1, after_seq=seq)

    # site=eu, attestation and the admin role: it moves; the constraints
    # travel with it and are kept sealed at host-b
    c.stop_vm(A, VM)
    c.api_ok(A, "DELETE", f"/v1/vms/{VM}")
    cons = {"destinations": {"site": ["eu"]}, "attest": "required", "roles": ["admin"]}
    d = constrained(c, tmp_path, cons, uuid)
    c.api_ok(A, "POST", "/v1/vms", d, expect=(201,))
    c.start_vm(A, VM)
    seq = c.wait_heartbeats(A, VM, 2, after_seq=0)[-1]["seq"]
    r = c.migrate(A, VM, B)
    assert r.summary["outcome"] == "completed", (r.summary, r.stderr)
    assert r.summary["attestation"]["verified"] is True
    assert (c.hosts[B].state_dir / "attest" / f"constraints-{uuid}.sealed").exists()
    assert c.vm_info(B, VM)["constraints"]["signature"] == d["constraints"]["signature"]
    c.wait_heartbeats(B, VM, 1, after_seq=seq)
