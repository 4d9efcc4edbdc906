#!/usr/bin/python3
"""attest_bench.py - the cost of attestation with a software TPM, side by
side in one run (docs/attestation.md, "Cost"):

  - `ferry host attest` end to end (CLI start, TLS handshake, challenge,
    TPM2_Quote on the host, verification), against `ferry host info` (CLI
    start, TLS handshake, a read) on the same host: their difference is
    the quote and its verification through the API;
  - Esys_Quote and the verifier alone come from the unit test
    (build/tests/unit/test_attest_tpm prints their medians of 10).

One host on loopback with its own swtpm (tests/system/tpmlib.py).
Usage: /usr/bin/python3 bench/attest_bench.py [--runs 10]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "system"))
import ferrylib  # noqa: E402
import tpmlib  # noqa: E402


def timed(c, runs, *args):
    out = []
    for _ in range(runs):
        t0 = time.monotonic()
        c.cli(*args)
        out.append((time.monotonic() - t0) * 1000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    if not tpmlib.available():
        sys.exit("attest_bench: swtpm is not installed (scripts/deps.sh)")
    guest = ROOT / "build" / "guest"
    c = ferrylib.Cluster(ferrylib.build_dir(), guest, nhosts=1)
    tpms = None
    try:
        # the guest is only copied into shared storage: no VM runs here
        if not (guest / "vmlinuz").exists():
            sys.exit("attest_bench: build the guest first (bash guest/build.sh build/guest)")
        c.setup()
        tpms = tpmlib.TpmSet(c)
        tpms.add("host-a")
        p = c.default_policy()
        p["hosts"] = {"host-a": {"labels": {"site": "bench"}}}
        path = c.dir / "digest.json"
        path.write_text(json.dumps(p))
        p["attestation"] = {"reference": [{
            "hosts": {"all": True},
            "ferryd": [tpmlib.file_sha256(c.ferryd_bin)],
            "qemu": [tpmlib.file_sha256("/usr/bin/qemu-system-x86_64")],
            "policy": [tpmlib.policy_digest(c, path)]}]}
        c.write_policy("host-a", p)
        c.write_host_config("host-a", attestation=tpms.config("host-a", "optional", False))
        c.start_all()
        pki = ["--dir", str(c.pki)]
        pol = ["--policy", str(c.policy_path("host-a"))]
        c.cli("host", "enroll", "host-a", *pki)
        info, att = [], []
        for _ in range(a.runs):  # interleaved: both see the same load
            info += timed(c, 1, "host", "info")
            att += timed(c, 1, "--json", "host", "attest", "host-a", *pki, *pol)
        mi, ma = statistics.median(info), statistics.median(att)
        print(f"runs: {a.runs} each, interleaved, one host, swtpm")
        print(f"ferry host info    median {mi:7.1f} ms")
        print(f"ferry host attest  median {ma:7.1f} ms")
        print(f"difference (quote + verify through the API): {ma - mi:.1f} ms")
        unit = ferrylib.build_dir() / "tests" / "unit" / "test_attest_tpm"
        if unit.exists():
            r = subprocess.run([str(unit)], capture_output=True, text=True)
            for line in r.stdout.splitlines():
                if "attest timing" in line:
                    print(line)
    finally:
        c.close()
        if tpms:
            tpms.close()


if __name__ == "__main__":
    main()
