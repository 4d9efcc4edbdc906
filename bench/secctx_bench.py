#!/usr/bin/python3
"""secctx_bench.py: what carrying a VM's tracked flows costs a migration's
switchover (docs/security.md, "Security context").

On the LAN of tests/system/netlib.py (two hosts, each a network namespace
with its bridge, a switch and an observer; ferryd's VM bridge and data plane
in the hosts' namespaces), one bridged test guest with a firewall
("default": "drop", one open TCP port) migrates between host-a and host-b,
--runs times for each flow count of --flows. Before each migration the
source's bridge namespace gets exactly N tracked flows tagged with the VM's
tag (the ct mark src/firewall/ct.c exports by: its tag in the low 29 bits),
loaded in one batch with `conntrack -R`: established TCP flows from the
observer to the VM's open port, one source port each, as the VM's real
flows would be. The migration's summary gives the context record (flows
carried, bytes, export_ms, import_ms, ms: from the export's start to the
destination's answer, all inside the switchover) and the downtime.

Prints one markdown table (medians over the runs; "extra" is the median
context time minus that of 0 flows) and writes --out (JSON, every run).
Everything it made (namespaces, QEMU, ferryd) is removed at the end, also
on failure; traffic stays inside its namespaces and on loopback.
"""

import argparse
import json
import os
import statistics
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "system"))
import ferrylib  # noqa: E402
import netlib  # noqa: E402

VM = "fw1"
MAC = "52:54:00:aa:00:17"
PORT = 5000
RULES = {"default": "drop",
         "rules": [{"dir": "in", "proto": "tcp", "port": PORT}]}
MARK_MASK = 0x1fffffff  # src/firewall/fw_int.h, FW_MARK_TAG


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tag(uuid):
    """The VM's flow tag (src/firewall/nft.c, fw_tag)."""
    return int(uuid[:8], 16) & MARK_MASK or 1


def tracked(lan, host, t):
    """How many flows host's bridge namespace tracks with tag t."""
    r = netlib.ns_run(lan.netns[host], "conntrack", "-L", "-m", f"{t}/{MARK_MASK}",
                      check=False)
    return sum(1 for ln in r.stdout.splitlines() if ln.strip())


def load_flows(lan, host, t, n, workdir):
    """Make host track exactly n flows tagged t: delete those it has, then
    insert n established TCP flows observer:P -> VM:PORT in one batch."""
    ns = lan.netns[host]
    netlib.ns_run(ns, "conntrack", "-D", "-m", f"{t}/{MARK_MASK}", check=False)
    if n:
        path = workdir / "flows.ct"
        base, last = lan.observer_address.rsplit(".", 1)
        with open(path, "w") as f:
            for i in range(n):
                # 50,000 source ports per source address: the observer's,
                # then the addresses below it (tracked, never used)
                src = f"{base}.{int(last) - i // 50000}"
                f.write(f"-I -p tcp -s {src} -d {lan.vm_address(0)} "
                        f"--sport {10000 + i % 50000} --dport {PORT} "
                        f"--state ESTABLISHED -t 3600 -u SEEN_REPLY,ASSURED -m {t}\n")
        netlib.ns_run(ns, "conntrack", "-R", str(path))
    got = tracked(lan, host, t)
    if got != n:
        raise RuntimeError(f"{host} tracks {got} flows tagged {t:#x}, not {n}")


def run(args):
    flows = [int(x) for x in args.flows.split(",")]
    build = ferrylib.build_dir()
    guest = Path(os.environ.get("FERRY_GUEST_DIR", REPO / "build" / "guest"))
    lan = netlib.Lan()
    c = ferrylib.Cluster(build, guest, nhosts=2)
    results = []
    try:
        c.setup()
        pol = c.default_policy()
        for h in c.hosts:
            c.write_policy(h, pol)
            c.write_host_config(h, **lan.host_config(h))
        c.start_all()
        c.define_vm("host-a", VM, memory_mib=128, mib=16, rate=100,
                    extra=lan.vm_cmdline(0) + f" ferry.serve={PORT}",
                    network={"bridge": "lan", "mac": MAC}, firewall=RULES)
        c.start_vm("host-a", VM)
        ferrylib.wait_until(lambda: f"serving tcp/{PORT}" in c.console("host-a", VM),
                            120, 0.5, "the guest's server")
        t = tag(c.vm_info("host-a", VM)["uuid"])
        hosts = ["host-a", "host-b"]
        where = 0
        # one migration not counted: the first of a ferryd pair pays for
        # connections and caches the others do not
        order = [0] + [n for _ in range(args.runs) for n in flows]
        for k, n in enumerate(order):
            src, dst = hosts[where], hosts[1 - where]
            load_flows(lan, src, t, n, c.dir)
            r = c.migrate(src, VM, dst)
            if r.returncode != 0:
                raise RuntimeError(f"migration {src} -> {dst} with {n} flows failed: "
                                   f"{r.stderr.strip()}")
            s = r.summary
            ctx = s.get("context")
            if not ctx or not ctx.get("ok"):
                raise RuntimeError(f"no context record in the summary: {s}")
            arrived = tracked(lan, dst, t)
            row = {"flows_loaded": n, "from": src, "to": dst,
                   "flows": ctx["flows"], "skipped": ctx["skipped"],
                   "bytes": ctx["bytes"], "export_ms": ctx["export_ms"],
                   "import_ms": ctx["import_ms"], "ctx_ms": ctx["ms"],
                   "downtime_ms": s["downtime_ms"], "total_ms": s["total_ms"],
                   "tracked_at_destination": arrived, "warmup": k == 0}
            log(f"{src} -> {dst}, {n} flows: context {ctx['ms']} ms "
                f"(export {ctx['export_ms']}, import {ctx['import_ms']}), "
                f"{ctx['flows']} carried, {arrived} at {dst}; downtime "
                f"{s['downtime_ms']} ms")
            if ctx["flows"] < n or arrived < n:
                raise RuntimeError(f"{n} flows loaded, {ctx['flows']} carried, "
                                   f"{arrived} tracked at {dst}")
            results.append(row)
            where = 1 - where
            time.sleep(args.settle)
    finally:
        try:
            c.close()
        finally:
            lan.close()
    return flows, results


def table(flows, results, runs):
    def med(n, key):
        return statistics.median(r[key] for r in results
                                 if r["flows_loaded"] == n and not r["warmup"])

    base = med(flows[0], "ctx_ms") if flows[0] == 0 else None
    lines = ["| flows | bytes | export ms | import ms | context ms | extra ms | "
             "downtime ms |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in flows:
        extra = f"{med(n, 'ctx_ms') - base:.0f}" if base is not None else "-"
        lines.append(f"| {n} | {med(n, 'bytes'):.0f} | {med(n, 'export_ms'):.0f} | "
                     f"{med(n, 'import_ms'):.0f} | {med(n, 'ctx_ms'):.0f} | {extra} | "
                     f"{med(n, 'downtime_ms'):.0f} |")
    lines.append(f"\nmedians of {runs} migrations per row (alternating host-a/host-b); "
                 f"extra: context ms minus that of {flows[0]} flows")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", default="0,10,10000",
                    help="comma-separated flow counts, the first the baseline (default "
                         "0,10,10000)")
    ap.add_argument("--runs", type=int, default=5, help="migrations per flow count")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds between migrations")
    ap.add_argument("--out", default=str(REPO / "build" / "secctx-bench.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("secctx_bench: needs root (network namespaces, conntrack)")
    for tool in ("conntrack", "nft"):
        if not shutil.which(tool):
            sys.exit(f"secctx_bench: {tool} missing (scripts/deps.sh)")
    t0 = time.monotonic()
    flows, results = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(table(flows, results, args.runs))
    log(f"done in {time.monotonic() - t0:.0f} s; every run in {args.out}")


if __name__ == "__main__":
    main()
