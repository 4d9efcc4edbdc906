#!/usr/bin/python3
"""attest_prepare_bench.py - the latency attestation adds to a migration's
prepare, side by side in one run (docs/attestation.md, "Cost").

Two hosts on loopback, each with its own swtpm, attestation "optional", both
enrolled. Two VMs differ only in a label: the policy's rule for "attest=on"
requires the destination's attestation, the rule for "attest=off" does
not. The bench migrates them in turn, back and forth (on, off, on, off, ...)
and reads each source record's prepare_ms: from the prepare request to the
prepare's answer checked (with attestation: the quote on the destination
and its verification on the source included). Also the quote's and the
check's own times (the record's attestation.quote_ms and verify_ms).

Usage: /usr/bin/python3 bench/attest_prepare_bench.py [--runs 10]
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "system"))
import ferrylib  # noqa: E402
import tpmlib  # noqa: E402

A, B = "host-a", "host-b"


def policy(c):
    p = c.default_policy()
    p["hosts"] = {h: {"labels": {"site": "bench"}} for h in c.hosts}
    rule = p["rules"][0]
    p["rules"] = [dict(rule, name=f"attest-{v}", vms={"labels": {"attest": v}})
                  for v in ("on", "off")]
    p["rules"][0]["attest"] = "required"
    path = c.dir / "digest.json"
    path.write_text(json.dumps(p))
    p["attestation"] = {"reference": [{
        "hosts": {"all": True},
        "ferryd": [tpmlib.file_sha256(c.ferryd_bin)],
        "qemu": [tpmlib.file_sha256("/usr/bin/qemu-system-x86_64")],
        "policy": [tpmlib.policy_digest(c, path)]}]}
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    if not tpmlib.available():
        sys.exit("attest_prepare_bench: swtpm is not installed (scripts/deps.sh)")
    guest = ROOT / "build" / "guest"
    if not (guest / "vmlinuz").exists():
        sys.exit("attest_prepare_bench: build the guest first (bash guest/build.sh build/guest)")
    c = ferrylib.Cluster(ferrylib.build_dir(), guest, nhosts=2, log_level="info")
    tpms = None
    try:
        c.setup()
        tpms = tpmlib.TpmSet(c)
        p = policy(c)
        for h in c.hosts:
            tpms.add(h)
            c.write_policy(h, p)
            c.write_host_config(h, attestation=tpms.config(h, "optional", False))
        c.start_all()
        for h in c.hosts:
            c.cli("host", "enroll", h, "--dir", str(c.pki))
        where = {}
        for v in ("on", "off"):
            name = f"vm-{v}"
            c.define_vm(A, name, memory_mib=128, mib=8, labels={"attest": v})
            c.start_vm(A, name)
            where[name] = A
        for name in where:
            c.wait_heartbeats(A, name, 1, after_seq=0)
        res = {"on": [], "off": []}
        quote, check = [], []
        for i in range(a.runs):
            for v in ("on", "off"):
                name = f"vm-{v}"
                src = where[name]
                dst = B if src == A else A
                r = c.migrate(src, name, dst)
                rec = r.summary
                if rec.get("outcome") != "completed":
                    sys.exit(f"attest_prepare_bench: migration failed: {rec} {r.stderr}")
                res[v].append(rec["prepare_ms"])
                if v == "on":
                    assert rec["attestation"]["verified"] is True
                    quote.append(rec["attestation"]["quote_ms"])
                    check.append(rec["attestation"]["verify_ms"])
                else:
                    assert "attestation" not in rec
                where[name] = dst
            print(f"run {i + 1}: prepare with attestation {res['on'][-1]} ms "
                  f"(quote {quote[-1]} ms, check {check[-1]} ms), without "
                  f"{res['off'][-1]} ms", flush=True)
        on, off = statistics.median(res["on"]), statistics.median(res["off"])
        print(json.dumps({"runs": a.runs, "prepare_ms_attested": res["on"],
                          "prepare_ms_plain": res["off"]}))
        print(f"prepare, median of {a.runs}: with attestation {on:.1f} ms, without "
              f"{off:.1f} ms, added {on - off:.1f} ms; the quote on the "
              f"destination {statistics.median(quote):.1f} ms, its check on the "
              f"source {statistics.median(check):.1f} ms (medians)")
    finally:
        c.close()
        if tpms:
            tpms.close()


if __name__ == "__main__":
    main()
