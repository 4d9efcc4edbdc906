#!/usr/bin/python3
"""detect_plot.py OUT [PNG]: the figure of docs/detection.md from a
bench/detect_bench.py run in OUT: RTT over time around one migration of
each load, remote (the observer pinging the VM) and local (the guest's own
probes), the paper's four panels. Lost probes are the red marks at the
bottom. Lines: the migration's start (QEMU's first MIGRATION event), its switchover (the source's QMP STOP)
and its end (ground truth, grey); the event ferry-detect reported (the
full detector: start and switchover, blue; ICMP alone: orange).

Default PNG: docs/detection-rtt.png. Needs Debian's python3-matplotlib.
"""

import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BEFORE_S, AFTER_S = 3.0, 4.0


def load_series(path):
    rows = {"remote": [], "local": []}
    with open(path) as f:
        for r in csv.DictReader(f):
            rows.setdefault(r["source"], []).append(
                (int(r["t_ms"]), float(r["rtt_ms"]), r["lost"] == "1"))
    for v in rows.values():
        v.sort()
    return rows


def load_events(path):
    evs = {}
    if path.exists():
        for line in path.read_text().splitlines():
            e = json.loads(line)
            if e.get("type") in ("detected", "closed") and e.get("detected_ms"):
                evs[(e["source"], e["detected_ms"])] = e
    return list(evs.values())


def pick(migrations, load):
    ms = [m for m in migrations if m["load"] == load and m.get("stop_ms")]
    return ms[len(ms) // 2] if ms else None  # a middle one, not the first


def panel(ax, series, events, m, source, title):
    t0 = m.get("qemu_start_ms", m["started_at"])
    pts = [(t, r, lost) for t, r, lost in series[source]
           if t0 - BEFORE_S * 1000 <= t <= m["ended_at"] + AFTER_S * 1000]
    xs = [(t - t0) / 1000 for t, r, lost in pts if not lost]
    ys = [max(r, 0.05) for t, r, lost in pts if not lost]
    ax.plot(xs, ys, ".-", ms=2, lw=0.6, color="black", label="RTT")
    lx = [(t - t0) / 1000 for t, r, lost in pts if lost]
    ax.plot(lx, [0.06] * len(lx), "|", color="red", ms=10, label="lost")
    ax.set_yscale("log")
    for x, style in ((0, "-"), ((m["stop_ms"] - t0) / 1000, "--"),
                     ((m["ended_at"] - t0) / 1000, ":")):
        ax.axvline(x, color="grey", ls=style, lw=1)
    for name, color in (("full", "tab:blue"), ("icmp", "tab:orange")):
        for e in events[name]:
            if e["source"] != source or not (e["start_ms"] <= m["ended_at"] + 3000 and
                                             (e.get("end_ms") or 0) >= t0 - 1000):
                continue
            ax.axvspan((e["start_ms"] - t0) / 1000,
                       ((e.get("end_ms") or e["detected_ms"]) - t0) / 1000,
                       color=color, alpha=0.12)
            if e.get("switchover_ms"):
                ax.axvline((e["switchover_ms"] - t0) / 1000, color=color, lw=1.5,
                           label=f"{name}: switchover")
            ax.axvline((e["detected_ms"] - t0) / 1000, color=color, lw=1, ls="-.",
                       label=f"{name}: reported")
            break
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-BEFORE_S, (m["ended_at"] - t0) / 1000 + AFTER_S)
    ax.set_ylim(0.04, 2000)
    ax.grid(alpha=0.3)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    png = Path(sys.argv[2]) if len(sys.argv) == 3 else \
        Path(__file__).resolve().parent.parent / "docs" / "detection-rtt.png"
    res = json.loads((out / "results.json").read_text())
    series = load_series(out / "icmp" / "series.csv")
    events = {n: load_events(out / n / "events.jsonl") for n in ("full", "icmp")}
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharey=True)
    for row, load in enumerate(("low", "high")):
        m = pick(res["migrations"], load)
        if not m:
            continue
        for col, source in enumerate(("remote", "local")):
            panel(axes[row][col], series, events, m, source,
                  f"{source} detection, {load} guest load: {m['from']} -> {m['to']}, "
                  f"downtime {m['downtime_ms']} ms")
    for ax in axes[1]:
        ax.set_xlabel("s since QEMU's migration started (grey: start, switchover --, end ..)")
    for ax in axes[:, 0]:
        ax.set_ylabel("RTT (ms, log)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    fig.legend(uniq.values(), uniq.keys(), loc="upper center", ncol=6, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(png)


if __name__ == "__main__":
    main()
