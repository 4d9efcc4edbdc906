"""Attestation and sealed host secrets with a software TPM per host
(docs/attestation.md): enrolment, `ferry host attest`, refusals by the
verifier, sealed TLS and audit keys, ferryd refusing to start after a
change of the measured software, and `ferry host reseal`.

The migration side (the quote in prepare, the check before the data
plane, the VM's own constraints) is in test_attest_migrate.py.
"""

import json
import shutil

import pytest

import ferrylib
import tpmlib

pytestmark = pytest.mark.skipif(not tpmlib.available(),
                                reason="swtpm is not installed (scripts/deps.sh)")

QEMU = "/usr/bin/qemu-system-x86_64"


def with_references(c, p, ferryd=None, qemu=None):
    """Policy p with reference values for the build's ferryd (or the
    digests in ferryd), QEMU (or qemu) and p itself."""
    p = {k: v for k, v in p.items() if k != "attestation"}
    path = c.dir / "policy-digest.json"
    path.write_text(json.dumps(p))
    p["attestation"] = {"reference": [{
        "hosts": {"labels": {"site": "eu"}},
        "ferryd": ferryd or [tpmlib.file_sha256(c.ferryd_bin)],
        "qemu": qemu or [tpmlib.file_sha256(QEMU)],
        "policy": [tpmlib.policy_digest(c, path)],
    }]}
    return p


def reference_policy(c, ferryd=None, qemu=None):
    """The default policy with host labels, rules requiring attestation and
    reference values (with_references)."""
    p = c.default_policy()
    p["hosts"] = {h: {"labels": {"site": "eu"}} for h in c.hosts}
    for r in p["rules"]:
        r["attest"] = "required"
    return with_references(c, p, ferryd, qemu)


@pytest.fixture
def make_tpm_cluster(make_cluster, request):
    """make_tpm_cluster(hosts=2, seal=True, mode="required") -> (cluster,
    tpms): every host with its own swtpm, the reference policy, started."""
    def make(hosts=2, seal=True, mode="required", start=True):
        c = make_cluster(hosts=hosts, start=False)
        tpms = tpmlib.TpmSet(c)
        request.addfinalizer(tpms.close)
        policy = reference_policy(c)
        for h in c.hosts:
            c.write_policy(h, policy)
            tpms.add(h)
            c.write_host_config(h, attestation=tpms.config(h, mode, seal))
        if start:
            c.start_all()
        return c, tpms
    return make


def admin(c, *args, check=True):
    """`ferry ARGS --dir PKI` with the cluster's client config."""
    return c.cli(*args, "--dir", str(c.pki), check=check)


def policy_file(c):
    return str(c.policy_path("host-a"))


def test_enroll_attest_and_sealed_keys(make_tpm_cluster):
    c, tpms = make_tpm_cluster(hosts=2)
    b = c.hosts["host-b"]
    # sealed at the first start: no private key is left in a file
    assert not (c.pki / "hosts" / "host-b.key").exists()
    assert not (b.state_dir / "audit.key").exists()
    assert (b.state_dir / "attest" / "tls-key.sealed").exists()
    assert (b.state_dir / "attest" / "audit-key.sealed").exists()

    # not enrolled yet: nothing to verify its quotes with
    r = admin(c, "host", "attest", "host-b", "--policy", policy_file(c), check=False)
    assert r.returncode == ferrylib.EXIT_FAILED
    assert "host-b is not enrolled" in r.stderr

    r = admin(c, "host", "enroll", "host-b", "--policy", policy_file(c))
    assert "enrolled host-b: AK bound to its EK (issuer /CN=swtpm-localca)" in r.stdout
    assert "quote verified" in r.stdout
    assert "approved the software of host-b" in r.stdout
    rec = json.loads((c.pki / "attest" / "hosts" / "host-b.json").read_text())
    assert rec["host"] == "host-b" and rec["pcr"] == 15 and rec["policy_pcr"] == 13

    r = admin(c, "host", "attest", "host-b", "--policy", policy_file(c))
    assert "host host-b: quote verified" in r.stdout
    assert "PCR 15" in r.stdout and "PCR 13" in r.stdout
    rep = json.loads(admin(c, "--json", "host", "attest", "host-b", "--policy",
                           policy_file(c)).stdout)
    assert rep["verified"] is True
    kinds = {e["kind"]: e for e in rep["events"]}
    assert kinds["ferryd"]["sha256"] == tpmlib.file_sha256(c.ferryd_bin)
    assert kinds["qemu"]["path"] == QEMU
    assert all(e["verdict"] == "allowed" for e in rep["events"])

    # the approval lets the sealed keys open at the next start; the TLS
    # key and the audit key are the same as before
    pub = (b.state_dir / "audit.pub").read_text()
    c.restart_host("host-b")
    assert (b.state_dir / "audit.pub").read_text() == pub
    c.cli("audit", "verify", "--key", str(b.state_dir / "audit.pub"), host="host-b")
    # a restart measures nothing twice: the log is what it was
    rep2 = json.loads(admin(c, "--json", "host", "attest", "host-b", "--policy",
                            policy_file(c)).stdout)
    assert rep2["events"] == rep["events"]
    assert rep2["pcrs"] == rep["pcrs"]


def test_verifier_refusals(make_tpm_cluster):
    c, tpms = make_tpm_cluster(hosts=2, seal=False, mode="optional")
    admin(c, "host", "enroll", "host-b")
    # QEMU not in the allowlist of the verifier's policy
    p = reference_policy(c, qemu=["00" * 32])
    bad = c.dir / "no-qemu.json"
    bad.write_text(json.dumps(p))
    r = admin(c, "host", "attest", "host-b", "--policy", str(bad), check=False)
    assert r.returncode == ferrylib.EXIT_FAILED
    assert (f"host host-b: qemu digest {tpmlib.file_sha256(QEMU)[:16]}\u2026 ({QEMU}) "
            "is not in the allowlist for site=eu") in r.stderr
    assert "quote NOT verified" in r.stdout
    assert "not allowed" in r.stdout
    # host-a is another TPM: host-b's record does not verify its quotes
    rec = c.pki / "attest" / "hosts"
    shutil.copy(rec / "host-b.json", c.dir / "b.json")
    admin(c, "host", "enroll", "host-a")
    b = json.loads((c.dir / "b.json").read_text())
    b["host"] = "host-a"
    (rec / "host-a.json").write_text(json.dumps(b))
    r = admin(c, "host", "attest", "host-a", "--policy", policy_file(c), check=False)
    assert r.returncode == ferrylib.EXIT_FAILED
    assert "signature does not verify with its enrolled AK" in r.stderr


def test_attestation_off_and_required_without_tpm(make_tpm_cluster):
    c, tpms = make_tpm_cluster(hosts=1, seal=False, mode="optional", start=False)
    c.write_host_config("host-a")  # no attestation
    c.start_host("host-a")
    r = admin(c, "host", "enroll", "host-a", check=False)
    assert r.returncode == ferrylib.EXIT_FAILED
    assert "attestation is off on this host" in r.stderr
    c.stop_host("host-a")
    # required, and the TPM is down: ferryd does not start
    tpms.tpms["host-a"].stop()
    c.write_host_config("host-a", attestation=tpms.config("host-a", "required", False))
    h = c.start_host("host-a", wait=False)
    assert tpmlib.wait_gone(h.proc) == 1
    assert "TPM" in ferrylib.tail(h.log, 5)
    c.kill_host("host-a")


def test_changed_software_refuses_start_until_reseal(make_tpm_cluster):
    c, tpms = make_tpm_cluster(hosts=1)
    a = c.hosts["host-a"]
    admin(c, "host", "enroll", "host-a", "--policy", policy_file(c))
    c.stop_host("host-a")

    # an "upgrade": another ferryd executable (one byte more)
    new = c.dir / "ferryd-new"
    shutil.copy(c.ferryd_bin, new)
    with open(new, "ab") as f:
        f.write(b"\0")
    old_bin, c.ferryd_bin = c.ferryd_bin, new
    h = c.start_host("host-a", wait=False)
    assert tpmlib.wait_gone(h.proc) == 1
    log = ferrylib.tail(a.log, 3)
    assert "sealed storage: the ferryd executable changed since the seal was approved" in log
    assert f"approved {tpmlib.file_sha256(old_bin)[:16]}" in log
    assert f"now {tpmlib.file_sha256(new)[:16]}" in log
    c.kill_host("host-a")

    # not approved: reseal refuses while the new digest is not allowed
    r = admin(c, "host", "reseal", "--ferryd", str(a.config), check=False)
    assert r.returncode == ferrylib.EXIT_FAILED
    assert f"ferryd digest {tpmlib.file_sha256(new)[:16]}" in r.stderr
    assert not (a.state_dir / "attest" / "approvals.json").read_text().count(
        tpmlib.file_sha256(new))

    # approved: the reference values list it (and keep the old one, which
    # ran since the TPM was reset)
    p = reference_policy(c, ferryd=[tpmlib.file_sha256(old_bin), tpmlib.file_sha256(new)])
    ref = c.dir / "upgrade.json"
    ref.write_text(json.dumps(p))
    r = admin(c, "host", "reseal", "--ferryd", str(a.config), "--policy", str(ref))
    assert "resealed host-a" in r.stdout
    c.start_host("host-a")
    # after a reboot (the TPM is reset) it starts as well
    c.stop_host("host-a")
    tpms.reset("host-a")
    c.start_host("host-a")


def test_policy_changed_offline_refuses_start(make_tpm_cluster):
    c, tpms = make_tpm_cluster(hosts=1)
    a = c.hosts["host-a"]
    admin(c, "host", "enroll", "host-a", "--policy", policy_file(c))
    # a reload through the API is an accepted change
    p = json.loads(c.policy_path("host-a").read_text())
    p["roles"]["auditor"] = ["admin"]
    p = with_references(c, p)
    c.write_policy("host-a", p)
    c.cli("policy", "reload", host="host-a")
    c.restart_host("host-a")
    # an edit while ferryd is down is not
    c.stop_host("host-a")
    p["roles"]["operator"] = ["admin"]
    p = with_references(c, p)
    c.write_policy("host-a", p)
    h = c.start_host("host-a", wait=False)
    assert tpmlib.wait_gone(h.proc) == 1
    assert "the policy file" in ferrylib.tail(a.log, 3)
    assert "changed since it was accepted" in ferrylib.tail(a.log, 3)
    c.kill_host("host-a")
    r = admin(c, "host", "reseal", "--ferryd", str(a.config))
    assert "resealed host-a" in r.stdout
    c.start_host("host-a")
    # removing the accepted policy's MAC does not make an edit pass
    c.stop_host("host-a")
    (a.state_dir / "attest" / "policy.mac").unlink()
    p["roles"]["auditor"] = ["admin", "x"]
    c.write_policy("host-a", with_references(c, p))
    h = c.start_host("host-a", wait=False)
    assert tpmlib.wait_gone(h.proc) == 1
    assert "changed since it was accepted" in ferrylib.tail(a.log, 3)
    c.kill_host("host-a")
