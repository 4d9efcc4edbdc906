#!/usr/bin/python3
"""migrate_bench.py: live-migration benchmark, QEMU's own transports vs ferry.

One run compares, on the same test guest (guest/README.md: Debian cloud
kernel + busybox initramfs + memload), side by side:

  qemu-tcp           QEMU direct, plain TCP, one channel
  qemu-multifd       QEMU plain multifd (--channels channels)
  qemu-multifd-zstd  QEMU plain multifd with multifd-compression=zstd
  qemu-tls           QEMU's own TLS (tls-creds-x509), one channel
  qemu-tls-multifd   QEMU's own TLS with multifd
  ferry              ferry's encrypted migration (ferryd x2 + `ferry
                     migrate`), ferry choosing its path
  ferry-multifd      the same with --channels (multifd)
  ferry-zstd         the same with --compress on
  ferry-nozstd       the same with --compress off

for each workload: `idle` (memload.rate=0, after the fill), `dirty`
(memload.rate=20000 pages/s) and `text` (idle, memload.content=text, which
compresses about 3:1).  Every (config, workload) pair is repeated --runs
times, round-robin, and the median is reported as a markdown table,
followed by PASS / FAIL lines for the targets of issue 14 and the machine
description.

Two modes: loopback (default: the hosts are 127.0.0.2 and 127.0.0.3), and
--link RATE: the two hosts run in network namespaces that the benchmark
creates, joined by a veth pair shaped with tbf to RATE, and removed at the
end (also after a failure or Ctrl-C; a later run removes those a killed run
left).  Everything (QEMU processes, ferryd hosts, temp dirs, namespaces) is
cleaned up at the end.  Guests run with TCG only.  Standard library only;
see bench/README.md.

This file is the runner (options, the run loop, main); beside it:
migrate_bench_common.py (configs, processes, QMP, heartbeats, the link),
migrate_bench_qemu.py (QEMU-direct runs), migrate_bench_ferry.py (ferry's
runs) and migrate_bench_report.py (the machine, the tables, the targets).
"""

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from migrate_bench_common import (BenchError, CONFIGS, Interrupted, LINK_CONFIGS,
                                  LOOPBACK_CONFIGS, Link, ProcTable, QMPError, REPO,
                                  UNLIMITED_BW, WORKLOADS, free_port, is_ferry, log,
                                  parse_rate)
from migrate_bench_qemu import make_qemu_certs, run_qemu
from migrate_bench_ferry import FerryCluster, run_ferry
from migrate_bench_report import loadavg, machine_info, report, summarize


# ---------------------------------------------------------------------------
# main


class Bench:
    def __init__(self, args):
        self.args = args
        self.procs = ProcTable()
        self.tmp = None
        self.ferry = None
        self.ferry_skip = None
        self.certdir = None
        self.link = Link(args.link) if args.link else None
        self.port_seq = 0
        self.run_t0 = 0.0
        self.mem_mib = args.mem_mib or (256 if args.quick else 1024)
        self.fill_mib = args.fill_mib or (128 if args.quick else 512)
        self.runs = args.runs if args.runs is not None else (1 if args.quick else 3)
        self.kernel = Path(args.guest_dir) / "vmlinuz"
        self.initrd = Path(args.guest_dir) / "initramfs.cpio.gz"
        self.workload = None

    def qemu_mem_arg(self):
        """-m for the QEMU configs.  With --tcg-dirty-workaround the RAM is
        8 KiB short of a 256 KiB multiple (QEMU rounds -m up to 8 KiB), so
        QEMU 7.2's 64-pages-at-a-time dirty-bitmap fast path, which forgets
        to reset the TCG TLB (fixed upstream in 9.0 by commit 03bfc2188f,
        "physmem: Fix migration dirty bitmap coherency with TCG memory
        access"), never applies: the slow path resets the TLB."""
        if self.args.tcg_dirty_workaround:
            return f"{self.mem_mib * 1024 - 8}K"
        return str(self.mem_mib)

    def cmdline(self):
        """Kernel command line, identical for every config.  clocksource=hpet
        and no_timer_check as in ferry's demo and tests (guest/README.md:
        under QEMU 7.2 TCG a TSC guest stalls after an incoming migration
        resumed with `cont`, which is how ferry's destination starts; a
        loaded host makes the boot-time timer check panic)."""
        rate, content = WORKLOADS[self.workload]
        rate = self.args.rate if rate is None else rate
        extra = f" {self.args.guest_append}" if self.args.guest_append else ""
        text = f" memload.content={content}" if content != "pattern" else ""
        return (f"console=ttyS0 quiet{extra} memload.mib={self.fill_mib} "
                f"memload.rate={rate}{text}")

    def netns_prefix(self, side):
        """argv prefix that runs a command on host side ("a", "b")."""
        return self.link.prefix(side) if self.link else []

    def host_addr(self, side):
        """The address of host side: in the link's namespace, or on
        loopback (127.0.0.2 / 127.0.0.3, for QEMU's and ferry's runs)."""
        if self.link:
            return Link.ADDR[side]
        return "127.0.0.2" if side == "a" else "127.0.0.3"

    def qemu_port(self):
        """A free port for QEMU's migrate-incoming on host b."""
        if not self.link:
            return free_port(self.host_addr("b"))
        self.port_seq += 1
        return 48000 + self.port_seq  # a fresh namespace: nothing else there


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Live-migration benchmark: QEMU plain/multifd/TLS vs ferry "
                    "(see bench/README.md).")
    ap.add_argument("--runs", type=int, default=None,
                    help="runs per (config, workload); median reported (default 3, 1 with --quick)")
    ap.add_argument("--workloads", default=None,
                    help="comma list of " + ",".join(WORKLOADS) + " (default idle,dirty; "
                         "with --link text,idle)")
    ap.add_argument("--configs", default=None,
                    help="comma list of " + ",".join(CONFIGS) + " (default "
                         + ",".join(LOOPBACK_CONFIGS) + "; with --link "
                         + ",".join(LINK_CONFIGS) + ")")
    ap.add_argument("--channels", type=int, default=2,
                    help="multifd channels of the QEMU multifd configs and ferry-multifd "
                         "(default 2)")
    ap.add_argument("--ferry-channels", type=int, default=None, metavar="N",
                    help="pass --channels N to ferry migrate (default: not passed, "
                         "ferry chooses)")
    ap.add_argument("--link", metavar="RATE", default=None,
                    help="run both hosts in network namespaces joined by a veth pair "
                         "shaped to RATE (e.g. 1gbit) instead of loopback")
    ap.add_argument("--downtime-ms", type=int, default=300,
                    help="downtime limit for every config (default 300)")
    ap.add_argument("--rate", type=int, default=20000,
                    help="memload.rate of the dirty workload, pages/s (default 20000)")
    ap.add_argument("--mem-mib", type=int, default=None, help="guest RAM (default 1024, 256 with --quick)")
    ap.add_argument("--fill-mib", type=int, default=None, help="memload.mib (default 512, 128 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 256 MiB guest, 128 MiB fill, 1 run")
    ap.add_argument("--json", metavar="OUT", help="write raw results as JSON to OUT")
    ap.add_argument("--ferry", metavar="BUILD_DIR", default=str(REPO / "build"),
                    help="dir holding ferryd and ferry (default <repo>/build)")
    ap.add_argument("--ferry-bandwidth", type=int, default=None, metavar="MIBPS",
                    help="pass --bandwidth MIBPS to ferry migrate (default: not passed)")
    ap.add_argument("--guest-dir", default=str(REPO / "build" / "guest"),
                    help="dir with vmlinuz and initramfs.cpio.gz (default <repo>/build/guest)")
    ap.add_argument("--accel", default="tcg",
                    help="QEMU -accel value for the QEMU configs, e.g. tcg,thread=single "
                         "(default tcg, as ferryd uses; never kvm here)")
    ap.add_argument("--guest-append", default="clocksource=hpet no_timer_check",
                    help="extra kernel parameters for every config (default "
                         "'clocksource=hpet no_timer_check', as ferry's tests "
                         "use; '' for none)")
    ap.add_argument("--no-tcg-dirty-workaround", dest="tcg_dirty_workaround",
                    action="store_false",
                    help="QEMU configs: give the guest the full RAM size instead of 8 KiB "
                         "less (ferryd always applies the workaround for QEMU 7.2's TCG "
                         "dirty-tracking bug under TCG, so the default compares like with like)")
    ap.add_argument("--qemu", default="qemu-system-x86_64", help="QEMU binary")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to wait after the first heartbeat before migrating (default 1)")
    ap.add_argument("--boot-timeout", type=float, default=90.0)
    ap.add_argument("--migrate-timeout", type=float, default=300.0,
                    help="give up (migrate_cancel) after this many seconds (default 300)")
    ap.add_argument("--verify-timeout", type=float, default=20.0,
                    help="seconds to wait for 2 destination heartbeats (default 20)")
    ap.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs)")
    a = ap.parse_args(argv)
    if a.workloads is None:
        a.workloads = "text,idle" if a.link else "idle,dirty"
    if a.configs is None:
        a.configs = ",".join(LINK_CONFIGS if a.link else LOOPBACK_CONFIGS)
    a.workloads = [w for w in a.workloads.split(",") if w]
    a.configs = [c for c in a.configs.split(",") if c]
    if a.link:
        try:
            parse_rate(a.link)
        except ValueError as e:
            ap.error(f"--link: {e}")
    for w in a.workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r} (choose from {', '.join(WORKLOADS)})")
    for c in a.configs:
        if c not in CONFIGS:
            ap.error(f"unknown config {c!r} (choose from {', '.join(CONFIGS)})")
    a.configs = [c for c in CONFIGS if c in a.configs]  # table order
    if "kvm" in a.accel:
        ap.error("--accel: TCG only (/dev/kvm here is paravirtual and far slower)")
    if a.channels < 1 or a.channels > 255:
        ap.error("--channels must be 1..255")
    if a.runs is not None and a.runs < 1:
        ap.error("--runs must be ≥ 1")
    return a


def on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    bench = Bench(args)
    for f in (bench.kernel, bench.initrd):
        if not f.exists():
            print(f"migrate_bench: {f} missing; build the guest with "
                  f"`bash guest/build.sh build/guest`", file=sys.stderr)
            return 2
    if shutil.which(args.qemu) is None:
        print(f"migrate_bench: {args.qemu} not found", file=sys.stderr)
        return 2
    if any(CONFIGS[c][3] for c in args.configs) and shutil.which("openssl") is None:
        print("migrate_bench: openssl not found (needed for the QEMU TLS configs)",
              file=sys.stderr)
        return 2
    # (a shell starts background jobs with SIGINT ignored: take it back)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    t_start = time.monotonic()
    machine = machine_info(args.qemu)
    results = []
    rc = 0
    bench.tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    try:
        if bench.link:
            bench.link.setup()
            log(f"link: {bench.link.describe()}")
            machine["link"] = bench.link.describe()
        if any(CONFIGS[c][3] for c in args.configs):
            bench.certdir = bench.tmp / "pki"
            make_qemu_certs(bench.certdir, bench.host_addr("b"))
        if any(is_ferry(c) for c in args.configs):
            bindir = Path(args.ferry).resolve()
            bench.ferry_skip = FerryCluster.probe(bindir)
            if bench.ferry_skip:
                log(f"ferry row skipped: {bench.ferry_skip}")
            else:
                bench.ferry = FerryCluster(bench, bindir)
                bench.ferry.start()
                log(f"ferry: two ferryd hosts up ({bindir})")

        active = [c for c in args.configs if not (is_ferry(c) and bench.ferry_skip)]
        total = bench.runs * len(args.workloads) * len(active)
        n = 0
        log(f"{total} migrations: {bench.runs} run(s) x {len(args.workloads)} workload(s) "
            f"x {len(active)} config(s); guest {bench.mem_mib} MiB, fill {bench.fill_mib} MiB; "
            f"temp dir {bench.tmp}")
        for c in args.configs:
            if is_ferry(c) and bench.ferry_skip:
                for wl in args.workloads:
                    results.append({"config": c, "workload": wl, "run": 0, "ok": False,
                                    "skipped": True, "error": None})
        for run_idx in range(1, bench.runs + 1):
            for wl in args.workloads:
                # rotate the order each run so no config always goes first
                k = (run_idx - 1) % len(active) if active else 0
                order = active[k:] + active[:k]
                for c in order:
                    n += 1
                    bench.workload = wl
                    rundir = bench.tmp / f"r{run_idx}-{wl}-{c}"
                    rundir.mkdir()
                    bench.run_t0 = time.monotonic()
                    rec = {"config": c, "workload": wl, "run": run_idx}
                    try:
                        if CONFIGS[c][1] == "qemu":
                            run_qemu(bench, c, wl, run_idx, rundir, rec)
                        else:
                            run_ferry(bench, c, wl, run_idx, rundir, rec)
                        rec["ok"] = True
                        rec["error"] = None
                        log(f"[{n}/{total}] {wl:5} {c:16} run {run_idx}: "
                            f"{rec['total_ms'] / 1000:.2f} s (wall {rec['wall_ms'] / 1000:.2f}), downtime {rec['downtime_ms']:.0f} ms, "
                            f"{rec['ram_bytes'] / 2**20:.0f} MiB, "
                            f"{rec.get('iterations')} iter, guest OK")
                    except (BenchError, QMPError, OSError, ValueError, KeyError,
                            subprocess.SubprocessError) as e:
                        rec["ok"] = False
                        rec["error"] = f"run {run_idx}: {e}"
                        rc = 1
                        log(f"[{n}/{total}] {wl:5} {c:16} run {run_idx}: FAILED: {e}")
                    rec["wall_s"] = round(time.monotonic() - bench.run_t0, 2)
                    results.append(rec)
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"interrupted ({str(e) or 'SIGINT'}); cleaning up")
        rc = 130
    except BenchError as e:
        log(f"error: {e}")
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if bench.ferry is not None:
                bench.ferry.close()
        finally:
            bench.procs.stop_all()
            if bench.link:
                bench.link.close()
            if args.keep_temp:
                log(f"temp dir kept: {bench.tmp}")
            else:
                shutil.rmtree(bench.tmp, ignore_errors=True)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    elapsed = time.monotonic() - t_start
    machine["loadavg_end"] = loadavg()
    if rc == 130:
        return rc
    summary = summarize(results, args.configs, args.workloads)
    print(report(bench, summary, machine, elapsed))
    if args.json:
        out = {"machine": machine,
               "params": {"mem_mib": bench.mem_mib, "fill_mib": bench.fill_mib,
                          "rate": args.rate, "downtime_ms": args.downtime_ms,
                          "channels": args.channels, "runs": bench.runs,
                          "ferry_channels": args.ferry_channels, "link": args.link,
                          "workloads": args.workloads, "configs": args.configs,
                          "max_bandwidth": UNLIMITED_BW, "settle_s": args.settle,
                          "ferry_skipped": bench.ferry_skip},
               "elapsed_s": round(elapsed, 1),
               "summary": summary, "runs": results}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
        log(f"raw results: {args.json}")
    log(f"total runtime {elapsed:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
