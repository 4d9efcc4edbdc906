#!/usr/bin/python3
"""detect_bench.py: how well ferry-detect sees migrations from outside the
hypervisor (docs/detection.md, "Evaluation").

On the shared-link topology of tests/system/netlib.py (two hosts, each a
network namespace with its bridge, uplinks to a switch shaped with tc tbf,
an observer on the switch; ferryd's data plane and the VM's tap in the
hosts' namespaces), one bridged test guest runs netprobe (pinging the
observer from inside) while two detectors watch it:

  full   ferry-detect as deployed: ICMP (remote: pinging the VM; local: the
         guest's own probes read from its console) and the RARP/ARP
         listener; a migration needs an announcement
  icmp   the same without the listener: round-trip times and losses only
         (the paper's method)

Scenarios (the paper's four): remote and local detection, each under low
guest CPU load (memload.rate=100, duty=10) and high load (memload flat out:
duty=100, rate=2000 pages/s), --runs ferry migrations each, alternating
between the hosts. Negatives, which must not raise detections: guest CPU
bursts (ferry.burst), host CPU load (two busy loops), background traffic on
the link (a TCP flood from the VM's host to the other), and pausing and
resuming the VM.

Ground truth, from the source ferryd's log and `ferry migrate`'s summary:
the migration's start is QEMU's (its first MIGRATION event, after ferry's
prepare), its switchover the source's QMP STOP event, its end the summary's.
Delays: "start seen" is when the event's first sign was seen, "reported"
when it became a migration, "switchover" when its switchover time (within
1 s of the true one) was known and reported, all after the true instant.
Prints a markdown table (precision, recall, delays per scenario) and
writes --out DIR/results.json plus the detectors' series and events (for
bench/detect_plot.py). Everything (namespaces, QEMU, ferryd) is removed at
the end, also on failure.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "system"))
import ferrylib  # noqa: E402
import netlib  # noqa: E402

VM = "v1"
MAC = "52:54:00:aa:00:01"
LOADS = {
    "low": "memload.rate=100 memload.duty=10",
    "high": "memload.rate=2000 memload.duty=100",
}
SETTLE_S = 8          # quiet time between migrations
CLI_ERRORS = []       # `ferry migrate` failures of completed migrations
MATCH_BEFORE_MS = 1000
MATCH_AFTER_MS = 3000
EVENT_RE = re.compile(r"^(\S+Z) debug: vm (\S+): QMP event (STOP|MIGRATION)$", re.M)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wall_ms():
    return int(time.time() * 1000)


def parse_log_ts(s):
    return int(datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")
               .replace(tzinfo=timezone.utc).timestamp() * 1000)


def qmp_events(host, name):
    """Wall-clock ms of every QMP event `name` of VM in host's ferryd log."""
    text = host.log.read_text(errors="replace")
    return [parse_log_ts(m.group(1)) for m in EVENT_RE.finditer(text)
            if m.group(2) == VM and m.group(3) == name]


class Detector:
    def __init__(self, c, lan, name, listen, outdir):
        self.name = name
        self.dir = outdir / name
        argv = [c.build / "ferry-detect", "run", "--json", "--config", c.dir / "audit.json",
                "--state-dir", self.dir, "--netns", lan.observer,
                "--target", f"{lan.vm_address(0)}={VM}", "--local", VM]
        if listen:
            argv += ["--iface", lan.observer_if]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "stderr.log", "w"))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def events(self):
        """Reported migrations (the last record of each), per source."""
        evs = {}
        path = self.dir / "events.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            e = json.loads(line)
            if e.get("type") in ("detected", "closed") and e.get("detected_ms"):
                evs[(e["source"], e["detected_ms"])] = e
        return list(evs.values())

    def state(self):
        try:
            return json.loads((self.dir / "state.json").read_text())
        except (OSError, ValueError):
            return None


def busy_host(seconds):
    """Two busy loops on the host (its two cores) for seconds."""
    return [subprocess.Popen(["timeout", str(seconds), "sh", "-c", "while :; do :; done"])
            for _ in range(2)]


def flood(lan, src, dst, seconds):
    """A TCP flood from host src's namespace to host dst's for seconds."""
    port = 5001

    def server():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((lan.address[dst], port))
        s.listen(1)
        s.settimeout(10)
        return s
    srv = netlib.in_netns(lan.netns[dst], server)
    stop = time.monotonic() + seconds

    def sink():
        try:
            conn, _ = srv.accept()
            conn.settimeout(5)
            while conn.recv(1 << 16):
                pass
        except OSError:
            pass
        srv.close()

    def source():
        s = netlib.in_netns(lan.netns[src], socket.create_connection,
                            (lan.address[dst], port), 10)
        buf = b"x" * (1 << 16)
        while time.monotonic() < stop:
            s.sendall(buf)
        s.close()
    threads = [threading.Thread(target=sink, daemon=True),
               threading.Thread(target=source, daemon=True)]
    for t in threads:
        t.start()
    return threads


def completed_record(c, src, r):
    """The source's record of VM's last migration when `ferry migrate`
    failed on its own connection (not the migration): seen under heavy
    load as a TLS error while polling; anything else is fatal."""
    recs = [m for m in c.migrations(src) if m.get("vm") == VM and m.get("role") == "source"]
    rec = recs[0] if recs else {}
    if rec.get("outcome") != "completed":
        raise RuntimeError(f"migration failed: {r.stderr}; record: {rec}")
    log(f"ferry migrate failed ({r.stderr.strip()}) but the migration completed")
    CLI_ERRORS.append(r.stderr.strip())
    return rec


def boot(c, lan, host, extra):
    c.define_vm(host, VM, memory_mib=128, mib=16, rate=0,
                extra=f"{lan.vm_cmdline(0, probe=True)} {extra}",
                network={"bridge": "lan", "mac": MAC})
    c.start_vm(host, VM)
    c.wait_heartbeats(host, VM, 2)
    ferrylib.wait_until(lambda: lan.ping(lan.vm_address(0)), 60, 0.5, "the VM's address")


def settle(dets, seconds=SETTLE_S):
    """Wait for every open event to end, then seconds of quiet."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(all(e["closed"] for e in (d.state() or {}).get("events", [])) for d in dets):
            break
        time.sleep(0.5)
    time.sleep(seconds)


def run(args):
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    build = ferrylib.build_dir()
    guest = Path(os.environ.get("FERRY_GUEST_DIR", REPO / "build" / "guest"))
    lan = netlib.Lan(rate=args.rate)
    c = ferrylib.Cluster(build, guest, nhosts=2, users=("admin", "audit"))
    dets, busy = [], []
    migrations, negatives = [], []
    t_begin = time.monotonic()
    try:
        c.setup()
        pol = c.default_policy()
        pol["roles"]["admin"] = ["admin"]
        pol["roles"]["auditor"] = ["audit"]
        for h in c.hosts:
            c.write_policy(h, pol)
            c.write_host_config(h, **lan.host_config(h))
        c.write_client_config(c.dir / "audit.json", user="audit")
        c.start_all()
        dets = [Detector(c, lan, "full", True, out), Detector(c, lan, "icmp", False, out)]
        hosts = ["host-a", "host-b"]
        for load, params in LOADS.items():
            log(f"load {load}: booting the VM")
            boot(c, lan, "host-a", params)
            settle(dets, 10)
            where = 0
            for i in range(args.runs):
                src, dst = hosts[where], hosts[1 - where]
                r = c.migrate(src, VM, dst)
                s = r.summary if r.returncode == 0 else completed_record(c, src, r)
                window = lambda ts: [t for t in ts if s["started_at"] <= t <= s["ended_at"]]  # noqa: E731
                stops = window(qmp_events(c.hosts[src], "STOP"))
                # QEMU's migration starts (its first MIGRATION event) after
                # ferry's prepare: the guest sees nothing before
                qstart = window(qmp_events(c.hosts[src], "MIGRATION"))
                migrations.append({"load": load, "n": i, "from": src, "to": dst,
                                   "started_at": s["started_at"], "ended_at": s["ended_at"],
                                   "qemu_start_ms": qstart[0] if qstart else s["started_at"],
                                   "stop_ms": stops[-1] if stops else None,
                                   "downtime_ms": s["downtime_ms"], "total_ms": s["total_ms"]})
                log(f"load {load}: migration {i + 1}/{args.runs} {src} -> {dst}: "
                    f"{s['total_ms']} ms, downtime {s['downtime_ms']} ms")
                where = 1 - where
                settle(dets)
            if load == "low":
                vm_host = hosts[where]
                other = hosts[1 - where]
                log("negatives: host CPU load")
                t0 = wall_ms()
                busy = busy_host(args.negative_s)
                for p in busy:
                    p.wait()
                busy = []
                negatives.append({"name": "host CPU load", "t0": t0, "t1": wall_ms()})
                settle(dets, 3)
                log("negatives: background traffic on the link")
                t0 = wall_ms()
                for t in flood(lan, vm_host, other, args.negative_s):
                    t.join(args.negative_s + 20)
                negatives.append({"name": "background traffic", "t0": t0, "t1": wall_ms()})
                settle(dets, 3)
                log("negatives: pause and resume")
                t0 = wall_ms()
                for _ in range(3):
                    c.api_ok(vm_host, "POST", f"/v1/vms/{VM}/pause")
                    time.sleep(args.pause_s)
                    c.api_ok(vm_host, "POST", f"/v1/vms/{VM}/resume")
                    time.sleep(8)
                negatives.append({"name": f"pause {args.pause_s}s and resume (x3)",
                                  "t0": t0, "t1": wall_ms()})
                settle(dets, 3)
            c.stop_vm(hosts[where], VM, force=True)
            c.api_ok(hosts[where], "DELETE", f"/v1/vms/{VM}", expect=(200, 204))
        log("negatives: guest CPU bursts")
        boot(c, lan, "host-a", LOADS["low"] + " ferry.burst=5:10")
        settle(dets, 3)
        t0 = wall_ms()
        time.sleep(args.negative_s * 2)
        negatives.append({"name": "guest CPU bursts (5 s every 15 s)", "t0": t0,
                          "t1": wall_ms()})
        settle(dets, 3)
    finally:
        for p in busy:
            p.kill()
        for d in dets:
            d.stop()
        for h in c.hosts.values():  # the ground truth, for later analysis
            if h.log.exists():
                shutil.copy(h.log, out / f"{h.name}-ferryd.log")
        try:
            c.close()
        finally:
            lan.close()
    elapsed = time.monotonic() - t_begin
    results = evaluate(dets, migrations, negatives)
    # every migration here went through ferry: none may raise an alarm
    st = dets[0].state() or {}
    results["alarms"] = st.get("alarms", [])
    results["coverage"] = st.get("coverage", {})
    results.update({"elapsed_s": round(elapsed), "runs": args.runs, "rate": args.rate,
                    "cli_errors": CLI_ERRORS,
                    "migrations": migrations, "negatives": negatives})
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    return 0


def overlaps(e, t0, t1):
    end = e.get("end_ms") or e["detected_ms"]
    return e["start_ms"] <= t1 and end >= t0


def evaluate(dets, migrations, negatives):
    rows = []
    for d in dets:
        events = d.events()
        for source in ("remote", "local"):
            evs = [e for e in events if e["source"] == source]
            for load in LOADS:
                ms = [m for m in migrations if m["load"] == load]
                lo = min(m["started_at"] for m in ms) - MATCH_BEFORE_MS
                hi = max(m["ended_at"] for m in ms) + MATCH_AFTER_MS
                window = [e for e in evs if overlaps(e, lo, hi)]
                hit, seen_d, conf_d, sw_d, used = 0, [], [], [], set()
                for m in ms:
                    match = [e for e in window if overlaps(
                        e, m["started_at"] - MATCH_BEFORE_MS, m["ended_at"] + MATCH_AFTER_MS)]
                    if not match:
                        continue
                    hit += 1
                    e = match[0]
                    used.update(id(x) for x in match)
                    q0 = m["qemu_start_ms"]
                    seen_d.append(max(0, e.get("opened_ms", e["detected_ms"]) - q0))
                    conf_d.append(max(0, e["detected_ms"] - q0))
                    if m["stop_ms"] and e.get("switchover_ms") and \
                            abs(e["switchover_ms"] - m["stop_ms"]) <= 1000:
                        # known = set and reported as a migration
                        known = max(e["switchover_known_ms"], e["detected_ms"])
                        sw_d.append(max(0, known - m["stop_ms"]))
                false = [e for e in window if id(e) not in used]
                tp_events = len(window) - len(false)
                rows.append({
                    "detector": d.name, "source": source, "load": load,
                    "migrations": len(ms), "detected": hit,
                    "recall": hit / len(ms) if ms else None,
                    "precision": tp_events / len(window) if window else None,
                    "false_events": len(false),
                    "start_seen_ms": statistics.median(seen_d) if seen_d else None,
                    "start_seen_max_ms": max(seen_d) if seen_d else None,
                    "confirmed_ms": statistics.median(conf_d) if conf_d else None,
                    "confirmed_max_ms": max(conf_d) if conf_d else None,
                    "switchover_found": len(sw_d),
                    "switchover_delay_ms": statistics.median(sw_d) if sw_d else None,
                    "switchover_delay_max_ms": max(sw_d) if sw_d else None,
                })
        for n in negatives:
            fp = [e for e in events if overlaps(e, n["t0"], n["t1"])]
            n.setdefault("detections", {})[d.name] = [
                {"source": e["source"], "signals": e["signals"],
                 "confidence": e["confidence"]} for e in fp]
    return {"rows": rows}


def fmt(v, pct=False):
    if v is None:
        return "–"
    return f"{100 * v:.0f}%" if pct else f"{v:.0f}"


def table(res):
    lines = ["| detector | scenario | migrations | recall | precision | start seen after, "
             "median / max (ms) | reported as a migration after (ms) | switchover found | "
             "switchover delay median / max (ms) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['detector']} | {r['source']}, {r['load']} load | {r['migrations']} | "
            f"{fmt(r['recall'], True)} | {fmt(r['precision'], True)} | "
            f"{fmt(r['start_seen_ms'])} / {fmt(r['start_seen_max_ms'])} | "
            f"{fmt(r['confirmed_ms'])} / {fmt(r['confirmed_max_ms'])} | "
            f"{r['switchover_found']}/{r['detected']} | {fmt(r['switchover_delay_ms'])} / "
            f"{fmt(r['switchover_delay_max_ms'])} |")
    lines += ["", "| negative | detections (full) | detections (icmp) |", "|---|---|---|"]
    for n in res["negatives"]:
        d = n.get("detections", {})
        cell = lambda k: ", ".join(f"{x['source']}: {x['signals']}" for x in d.get(k, [])) or "none"  # noqa: E731
        lines.append(f"| {n['name']} | {cell('full')} | {cell('icmp')} |")
    cov = res.get("coverage", {})
    lines.append(f"\n{len(res['migrations'])} migrations through ferry, {res['elapsed_s']} s in "
                 f"all, link {res['rate']}; alarms raised by the full detector: "
                 f"{len(res.get('alarms', []))}; its coverage of the audit logs' migrations: "
                 f"{cov.get('detected', '?')}/{cov.get('recorded', '?')}")
    if res.get("cli_errors"):
        lines.append(f"`ferry migrate` lost its connection on {len(res['cli_errors'])} "
                     f"completed migration(s): {res['cli_errors'][0]}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="migrations per load (10)")
    ap.add_argument("--rate", default="400mbit", help="the uplinks' tbf rate (400mbit)")
    ap.add_argument("--negative-s", type=int, default=20, help="length of each negative (20)")
    ap.add_argument("--pause-s", type=float, default=2.0, help="pause length (2)")
    ap.add_argument("--out", default="build/detect-bench", help="results folder")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("detect_bench.py: needs root (network namespaces)")
    # SIGTERM cleans up like Ctrl-C: namespaces, hosts, QEMU
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
