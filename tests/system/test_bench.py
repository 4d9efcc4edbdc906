"""Smoke test of the migration benchmark (bench/migrate_bench.py): one
short run of each path issue 14 added, on real ferryd hosts and QEMU
guests, with no timing assertion (speed is judged by `make bench`).

- loopback: ferry's own choice (one stream, no frames: no link to save),
  ferry with multifd (--channels), beside QEMU's plain TCP and TLS;
- link mode: two network namespaces joined by a shaped veth pair, ferry
  with compression on auto, forced on and off, on memload's compressible
  text pages; the namespaces are gone afterwards.
"""

import json
import re
import subprocess
import sys

import ferrylib

BENCH = ferrylib.REPO / "bench" / "migrate_bench.py"


def run_bench(ferry_build, guest_dir, tmp_path, *args):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(BENCH), "--quick", "--ferry", str(ferry_build),
                        "--guest-dir", str(guest_dir), "--json", str(out), *args],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"benchmark failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}"
    return r.stdout, json.loads(out.read_text())


def target_lines(report):
    return [ln for ln in report.splitlines() if re.search(r"→ (PASS|FAIL)$", ln)]


def test_loopback_paths(ferry_build, guest_dir, tmp_path):
    report, data = run_bench(ferry_build, guest_dir, tmp_path,
                             "--workloads", "idle",
                             "--configs", "qemu-tcp,qemu-tls,ferry,ferry-multifd")
    paths = {r["config"]: r.get("path") for r in data["runs"]}
    assert paths["ferry"]["multifd"] == 0          # one stream on 2 cores
    assert paths["ferry"]["frames"] is False       # auto: no link on loopback
    assert paths["ferry-multifd"]["multifd"] == 2  # --channels 2
    assert all(r["ok"] and r["verified"] for r in data["runs"])
    # every loopback target gets a verdict, for both timings of ferry
    assert len(target_lines(report)) == 6, report


def test_link_mode(ferry_build, guest_dir, tmp_path):
    report, data = run_bench(ferry_build, guest_dir, tmp_path,
                             "--link", "1gbit", "--workloads", "text",
                             "--configs", "ferry,ferry-zstd,ferry-nozstd")
    runs = {r["config"]: r for r in data["runs"]}
    assert all(r["ok"] and r["verified"] for r in runs.values())
    assert runs["ferry"]["path"]["frames"] is True  # auto: frames on a link
    assert "10.213.77.1" in report and "tbf rate 1gbit" in report
    # forced on, the text pages shrink on the wire; off, they do not
    assert runs["ferry-zstd"]["wire_bytes"] * 2 < runs["ferry-zstd"]["ram_bytes"]
    assert runs["ferry-nozstd"]["wire_bytes"] >= runs["ferry-nozstd"]["ram_bytes"]
    ours = re.findall(r"ferrybench-\d+-[ab]", data["machine"]["link"])
    assert len(ours) == 2
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in netns.split() for ns in ours)
