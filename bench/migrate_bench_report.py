"""The report of bench/migrate_bench.py: the machine description, the
medians per (config, workload), markdown tables and the PASS / FAIL lines
for the targets of issue 14."""

import os
import platform
import statistics
import subprocess
from pathlib import Path

from migrate_bench_common import CONFIGS, WORKLOADS, is_ferry


# ---------------------------------------------------------------------------
# machine description


def machine_info(qemu):
    info = {}
    cpu = ""
    flags = ""
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name") and not cpu:
                cpu = ln.split(":", 1)[1].strip()
            if ln.startswith("flags") and not flags:
                flags = ln.split(":", 1)[1]
    except OSError:
        pass
    info["cpu"] = cpu or platform.processor() or "unknown"
    info["cores"] = os.cpu_count()
    info["aes_ni"] = " aes " in f" {flags} "
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemTotal:"):
                info["memory_gib"] = round(int(ln.split()[1]) / 2**20, 1)
    except OSError:
        pass
    info["kernel"] = platform.release()
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
        info["qemu"] = out.splitlines()[0].strip() if out else "unknown"
    except OSError:
        info["qemu"] = "not found"
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libgnutls30"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            info["gnutls"] = out.stdout.strip()
    except OSError:
        pass
    info["python"] = platform.python_version()
    info["loadavg_start"] = loadavg()
    return info


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ---------------------------------------------------------------------------
# report


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarize(results, configs, workloads):
    """{workload: {config: summary}} with medians over the successful runs.
    Each ferry config C also gets a row C + "-phase": the same runs timed
    like QEMU's rows, from QEMU's migrate command to the VM running on the
    destination (prepare, i.e. starting the destination QEMU, excluded)."""
    out = {}
    for wl in workloads:
        out[wl] = {}
        for c in configs:
            rs = [r for r in results if r["workload"] == wl and r["config"] == c]
            ok = [r for r in rs if r["ok"]]
            s = {"runs": len(rs), "ok": len(ok),
                 "errors": [r["error"] for r in rs if not r["ok"]],
                 "skipped": any(r.get("skipped") for r in rs)}
            if ok:
                s["total_s"] = median([r["total_ms"] / 1000 for r in ok])
                s["total_min_s"] = min(r["total_ms"] for r in ok) / 1000
                s["total_max_s"] = max(r["total_ms"] for r in ok) / 1000
                s["downtime_ms"] = median([r["downtime_ms"] for r in ok])
                s["gbps"] = median([r["ram_bytes"] * 8 / (r["total_ms"] / 1000) / 1e9
                                    for r in ok if r["total_ms"] > 0])
                s["ram_mib"] = median([r["ram_bytes"] / 2**20 for r in ok])
                s["wire_mib"] = median([r["wire_bytes"] / 2**20 for r in ok
                                        if r.get("wire_bytes")])
                s["iterations"] = median([r.get("iterations") for r in ok])
                s["ferryd_ms_per_mib"] = median([r["ferryd_cpu_s"] * 1000 / (r["ram_bytes"] / 2**20)
                                                 for r in ok if r.get("ferryd_cpu_s") is not None
                                                 and r["ram_bytes"]])
                paths = {path_label(r.get("path")) for r in ok if r.get("path")}
                s["path"] = ", ".join(sorted(paths)) if paths else None
            out[wl][c] = s
            if not is_ferry(c):
                continue
            p = dict(s)
            okp = [r for r in ok if r.get("migrate_ms")]
            if okp:
                p["total_s"] = median([r["migrate_ms"] / 1000 for r in okp])
                p["total_min_s"] = min(r["migrate_ms"] for r in okp) / 1000
                p["total_max_s"] = max(r["migrate_ms"] for r in okp) / 1000
                p["gbps"] = median([r["ram_bytes"] * 8 / (r["migrate_ms"] / 1000) / 1e9
                                    for r in okp])
            else:
                p["ok"] = 0
            out[wl][c + "-phase"] = p
    return out


def path_label(path):
    """ferry's chosen path (the record's "path") in a few words."""
    if not isinstance(path, dict):
        return "?"
    mf = path.get("multifd") or 0
    way = f"multifd {mf} ch" if mf else "1 stream"
    frames = "" if path.get("frames") else ", no frames"
    return f"{way}, compress {path.get('compress', '?')}{frames}"


def fmt(v, spec, none="–"):
    return none if v is None else format(v, spec)


def row_label(key, ch):
    if key.endswith("-phase"):
        return CONFIGS[key[:-6]][0].format(ch=ch) + ", migrate → running"
    return CONFIGS[key][0].format(ch=ch)


def report(bench, summary, machine, elapsed):
    a = bench.args
    ch = a.channels
    lines = []
    p = lines.append
    p("## Migration benchmark" + (f": link {a.link}" if a.link else ": loopback"))
    p("")
    p(f"Guest: {bench.mem_mib} MiB RAM, 1 vCPU, TCG; memload.mib={bench.fill_mib}; "
      f"workloads: " + ", ".join(f"{w} ({workload_desc(w, a)})" for w in a.workloads) + ".")
    p(f"Migration: max-bandwidth unlimited, downtime-limit {a.downtime_ms} ms, "
      f"QEMU multifd channels {ch}, ferry "
      + (f"--channels {a.ferry_channels}" if a.ferry_channels else "choosing its path")
      + f"; median of {bench.runs} run(s) per cell, configs interleaved round-robin.")
    if bench.link:
        p(f"Link: {bench.link.describe()}.")
    p("")
    base_keys = [(k, f"÷ {CONFIGS[k][0].format(ch=ch)}") for k in ("qemu-tcp", "qemu-tls")
                 if k in a.configs]
    for wl in a.workloads:
        p(f"### {wl} ({workload_desc(wl, a)})")
        p("")
        head = ["config", "runs ok", "total time (s)", "range (s)", "downtime (ms)",
                "throughput (Gbit/s)", "RAM sent (MiB)", "wire (MiB)", "iterations",
                "ferryd CPU (ms/MiB)", "ferry's path"]
        align = ["---"] + ["---:"] * (len(head) - 2) + ["---"]
        head += [h for _, h in base_keys]
        align += ["---:"] * len(base_keys)
        p("| " + " | ".join(head) + " |")
        p("|" + "|".join(align) + "|")
        rows = []
        for c in a.configs:
            rows.append(c)
        rows += [c + "-phase" for c in a.configs if is_ferry(c)]
        for c in rows:
            s = summary[wl][c]
            label = row_label(c, ch)
            if s["skipped"]:
                p(f"| {label} | skipped | " + " | ".join(["–"] * (len(head) - 2)) + " |")
                continue
            if not s["ok"]:
                p(f"| {label} | **FAILED 0/{s['runs']}** | "
                  + " | ".join(["–"] * (len(head) - 2)) + " |")
                continue
            row = [label, f"{s['ok']}/{s['runs']}" + ("" if s["ok"] == s["runs"] else " **!**"),
                   fmt(s["total_s"], ".2f"),
                   f"{s['total_min_s']:.2f}–{s['total_max_s']:.2f}",
                   fmt(s["downtime_ms"], ".0f"), fmt(s["gbps"], ".2f"),
                   fmt(s["ram_mib"], ".0f"), fmt(s.get("wire_mib"), ".0f"),
                   fmt(s["iterations"], "g"), fmt(s.get("ferryd_ms_per_mib"), ".2f"),
                   s.get("path") or ""]
            for bk, _ in base_keys:
                b = summary[wl].get(bk)
                if b and b.get("total_s"):
                    row.append(f"{s['total_s'] / b['total_s']:.2f}")
                else:
                    row.append("–")
            p("| " + " | ".join(row) + " |")
        p("")
        fails = [(c, e) for c in a.configs for e in summary[wl][c]["errors"] if e]
        for c, e in fails:
            p(f"- FAILED run: {c}: {e}")
        if fails:
            p("")
    p("### Targets")
    p("")
    for ln in target_lines(bench, summary):
        p(f"- {ln}")
    p("")
    p("### Machine")
    p("")
    p(f"- CPU: {machine['cpu']} ({machine['cores']} cores, AES-NI "
      f"{'yes' if machine.get('aes_ni') else 'no'})")
    p(f"- memory: {machine.get('memory_gib', '?')} GiB")
    p(f"- kernel: {machine['kernel']}")
    p(f"- QEMU: {machine['qemu']}" + (f"; GnuTLS {machine['gnutls']}" if machine.get("gnutls") else ""))
    if machine.get("link"):
        p(f"- link: {machine['link']}")
    p(f"- load average (1/5/15 min) at start: {machine.get('loadavg_start')}, "
      f"at end: {machine.get('loadavg_end')} (anything else running on the cores "
      f"adds noise; configs are interleaved so it hits all alike)")
    p(f"- benchmark wall time: {elapsed / 60:.1f} min")
    p("")
    return "\n".join(lines)


def workload_desc(wl, a):
    rate, content = WORKLOADS[wl]
    rate = a.rate if rate is None else rate
    return f"memload.rate={rate}" + (f", memload.content={content}" if content != "pattern" else "")


# The targets: (mode, workloads, check).  A check compares ferry's
# total time (or downtime) with a base config's, in the same run.
LOOPBACK_TARGETS = (
    ("total", "qemu-tls", 1.0),
    ("total", "qemu-tcp", 1.15),
    ("downtime", "qemu-tcp", 1.0),
)
LINK_TARGETS = {
    "text": (("total", "qemu-tcp", 0.6),),
    "idle": (("total", "ferry-nozstd", 1.05),),
    "dirty": (("total", "ferry-nozstd", 1.05),),
}


def target_lines(bench, summary):
    """One PASS / FAIL line per target, workload and timing of ferry (end
    to end, and migrate → running as QEMU's rows are timed)."""
    a = bench.args
    out = []
    if "ferry" not in a.configs:
        return ["n/a: the ferry config was not selected"]
    for wl in a.workloads:
        checks = LINK_TARGETS.get(wl, ()) if a.link else LOOPBACK_TARGETS
        for key, timing in (("ferry", "end to end"),
                            ("ferry-phase", "migrate → running")):
            for what, base, factor in checks:
                out.append(f"{wl}, ferry {timing}: "
                           + check_line(bench, summary[wl], key, what, base, factor))
    return out or ["n/a: no workload with a target"]


def check_line(bench, s, key, what, base, factor):
    f = s.get(key)
    ch = bench.args.channels
    base_label = CONFIGS[base][0].format(ch=ch) if base in CONFIGS else base
    b = s.get(base + ("-phase" if key.endswith("-phase") and is_ferry(base) else ""))
    if what == "downtime":
        name = f"downtime ≤ {base_label}'s"
    else:
        name = f"total ≤ {factor}× {base_label}"
    if f is None or f.get("skipped"):
        return f"{name}: n/a (ferry skipped: {bench.ferry_skip})"
    if not f.get("ok"):
        return f"{name}: FAIL (no successful ferry run)"
    if not b or not b.get("ok"):
        return f"{name}: n/a (no successful {base} run)"
    if what == "downtime":
        ok = f["downtime_ms"] <= b["downtime_ms"]
        return (f"{name}: {f['downtime_ms']:.0f} ms vs {b['downtime_ms']:.0f} ms → "
                f"{'PASS' if ok else 'FAIL'}")
    r = f["total_s"] / b["total_s"]
    return (f"{name}: {f['total_s']:.2f} s vs {b['total_s']:.2f} s = {r:.3f}× → "
            f"{'PASS' if r <= factor else 'FAIL'}")
