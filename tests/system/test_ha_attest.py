"""Checkpoint HA's backup is attested like a migration's destination
(docs/ha.md, "Attestation of the backup"; docs/attestation.md, "In HA
pairing"), with a software TPM per host and etcd: the primary sends a fresh
challenge with POST /v1/standby, the backup answers with a quote bound to
it, its standby session and the TLS session, and the primary checks it
before a checkpoint is sent. A refusal names its reason (403 from the
primary's check, audited there as ha.attest; 409 from a backup whose
attestation is off) and leaves no standby on the backup."""
import json
import os

import pytest

import ferrylib
import halib
import tpmlib
from test_attest import QEMU, reference_policy

pytestmark = [
    pytest.mark.skipif(not tpmlib.available(),
                       reason="swtpm is not installed (scripts/deps.sh)"),
    pytest.mark.skipif(os.environ.get("FERRY_HA_FULL") != "1",
                       reason="FERRY_HA_FULL=1 (make check-ha)"),
]

A, B, VM = "host-a", "host-b", "vm1"


def admin(c, *args):
    return c.cli(*args, "--dir", str(c.pki))


def enable(c):
    b = c.hosts[B]
    return c.api(A, "POST", f"/v1/vms/{VM}/ha",
                 {"backup": B, "address": b.address, "port": b.port,
                  "interval_s": 2})


def no_standby(c):
    """No standby left on the backup, the VM runs on unprotected."""
    assert VM not in halib.vm_names(c, B)
    assert c.api_ok(B, "GET", "/v1/ha")["ha"] == []
    assert halib.ha_status(c, A, VM) is None or \
        halib.ha_status(c, A, VM).get("backup") is None
    assert c.vm_info(A, VM)["state"] == "running"


def refused(c, code, body, reason):
    """ha enable was refused for reason by the primary's check: audited on
    the primary, no standby left."""
    assert code == 403, (code, body)
    msg = body["error"]["message"]
    assert "attestation of host-b refused: " in msg and reason in msg, msg
    recs = c.api_ok(A, "GET", "/v1/audit?action=ha.attest")["records"]
    assert recs and recs[-1]["outcome"] == "refused", recs
    assert reason in recs[-1]["detail"]["reason"]
    assert recs[-1]["detail"]["host"] == B
    no_standby(c)


def restart_b(c, edit, reset=None):
    """Restart host-b with edit(its ferryd.json as a dict); reset(B) while
    it is stopped."""
    c.stop_host(B)
    if reset:
        reset(B)
    path = c.hosts[B].config
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    c.start_host(B)


def test_ha_backup_attested(request, make_cluster, make_etcd):
    tpms = {}

    def tpm_cluster(hosts, start):
        c = make_cluster(hosts=hosts, start=False)
        tpms["set"] = t = tpmlib.TpmSet(c)
        request.addfinalizer(t.close)
        policy = reference_policy(c)
        # host-b runs a QEMU that is not in the allowlist (a wrapper, in a
        # folder the unprivileged QEMU user may enter), as in
        # test_attest_migrate
        os.chmod(c.dir, 0o711)
        (c.dir / "bin").mkdir(mode=0o755)
        bad = c.dir / "bin" / "qemu-system-x86_64"
        bad.write_text(f'#!/bin/sh\nexec {QEMU} "$@"\n')
        bad.chmod(0o755)
        c.bad_qemu = bad
        for h in c.hosts:
            c.write_policy(h, policy)
            t.add(h)
        write = c.write_host_config

        def write_with_tpm(name, **kw):
            kw.setdefault("attestation", t.config(name, "required", False))
            if name == B:
                kw.setdefault("qemu", str(bad))
            return write(name, **kw)
        c.write_host_config = write_with_tpm
        return c

    c, _ = halib.ha_cluster(tpm_cluster, make_etcd, request=request)
    tpms = tpms["set"]
    c.define_vm(A, VM, memory_mib=256, mib=32, rate=1000)
    c.start_vm(A, VM)
    c.wait_heartbeats(A, VM, n=2)
    admin(c, "host", "enroll", A)

    # a backup whose attestation is off cannot quote: it refuses (409)
    attestation = json.loads(c.hosts[B].config.read_text())["attestation"]
    restart_b(c, lambda cfg: cfg.pop("attestation"))
    code, body = enable(c)
    assert code == 409, (code, body)
    assert "host host-b cannot be attested: its attestation is off" in \
        body["error"]["message"], body
    no_standby(c)
    restart_b(c, lambda cfg: cfg.update(attestation=attestation))

    # not enrolled: refused before any checkpoint
    code, body = enable(c)
    refused(c, code, body, "host-b is not enrolled")

    # tampered: its QEMU is not in the allowlist
    admin(c, "host", "enroll", B)
    code, body = enable(c)
    digest = tpmlib.file_sha256(c.bad_qemu)
    refused(c, code, body, f"qemu digest {digest[:16]}\u2026 ({c.bad_qemu}) is "
            "not in the allowlist for site=eu")

    # the approved QEMU after a reboot (the TPM reset forgets the other):
    # paired after a verified quote, checkpoints arrive
    restart_b(c, lambda cfg: cfg.pop("qemu"), reset=tpms.reset)
    code, body = enable(c)
    assert code in (200, 201), (code, body)
    st = halib.wait_checkpoints(c, A, VM, 2, timeout=60)
    assert st["health"] == "ok" and st["backup"] == B, st
    recs = c.api_ok(A, "GET", "/v1/audit?action=ha.attest")["records"]
    assert recs[-1]["outcome"] == "verified", recs
    assert recs[-1]["detail"]["host"] == B
    assert recs[-1]["detail"]["scope"]
    assert halib.vm_names(c, B)[VM]["hold"] == "ha-standby"
    ferrylib.wait_until(lambda: c.api_ok(B, "GET", "/v1/ha")["ha"], 10, 0.2,
                        "the standby listed on host-b")
