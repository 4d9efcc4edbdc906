#!/usr/bin/python3
"""controller_bench.py - the controller at scale (docs/balancer.md, "Scale").

For each host count: one ferry-simhost process with that many simulated
hosts (10 VMs each, one host in ten overloaded), 3 etcd members and one
controller (ferryd, mode auto) on loopback. After the warm-up rounds (the
first opens every TLS connection) it records ROUNDS rounds: the round's
duration as the controller measured it (round_ms: poll, follow-ups, plan,
starts, etcd writes; poll_ms: the poll alone), the controller's CPU time per
round and its RSS, and the same for etcd (the three members together).

    /usr/bin/python3 bench/controller_bench.py [--hosts 1000,5000,10000]
        [--rounds 5] [--interval-s 5] [--etcd 3] [--stalled 0]

Prints one line per host count, and a Markdown table at the end. Run it on
a quiet machine (it prints the load average before each case).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "system"))
import ctllib  # noqa: E402
from ctllib import proc_cpu_s, proc_rss_kib  # noqa: E402


def wait_round(cc, after, timeout):
    """Wait until controller 0 finished a round after `after`; its status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = cc.status(0)
        if s.get("round", 0) > after:
            return s
        time.sleep(0.5)
    raise TimeoutError(f"no round after {after} within {timeout} s")


def one_case(hosts, a):
    load = os.getloadavg()
    cc = ctllib.CtlCluster(controllers=1, hosts=hosts, etcd=a.etcd, mode="auto",
                           interval_s=a.interval_s, stalled=a.stalled)
    with cc:
        t0 = time.monotonic()
        cc.start_sim(timeout=600)
        sim_ready = time.monotonic() - t0
        cc.start_controller(0)
        pid = cc.procs[0].pid
        etcd_pids = [m.pid for m in cc.etcd.members] if cc.etcd else []
        # warm-up: every connection open, every host up
        first = wait_round(cc, 0, 600)
        s = first
        while s["hosts_up"] < hosts:
            s = wait_round(cc, s["round"], 600)
        s = wait_round(cc, s["round"], 600)
        rounds, polls, up = [], [], []
        c0, e0, r0 = proc_cpu_s(pid), sum(map(proc_cpu_s, etcd_pids)), s["round"]
        s0 = proc_cpu_s(cc.sim.pid)
        rss, erss = [], []
        for _ in range(a.rounds):
            s = wait_round(cc, s["round"], 600)
            rounds.append(s["round_ms"])
            polls.append(s["poll_ms"])
            up.append(s["hosts_up"])
            rss.append(proc_rss_kib(pid))
            erss.append(sum(map(proc_rss_kib, etcd_pids)))
        n = s["round"] - r0
        cpu = (proc_cpu_s(pid) - c0) / n
        ecpu = (sum(map(proc_cpu_s, etcd_pids)) - e0) / n
        scpu = (proc_cpu_s(cc.sim.pid) - s0) / n
        row = {
            "hosts": hosts, "vms": s["vms"], "load": load[0],
            "first_round_ms": first["round_ms"],
            "round_ms": statistics.median(rounds), "round_max_ms": max(rounds),
            "poll_ms": statistics.median(polls),
            "cpu_s": cpu, "rss_mib": max(rss) / 1024,
            "etcd_cpu_s": ecpu, "etcd_rss_mib": max(erss) / 1024,
            "moves": s.get("moves_total", 0), "sim_ready_s": sim_ready,
            "hosts_up_min": min(up), "sim_cpu_s": scpu,
        }
        print(f"{hosts} hosts: round median {row['round_ms']} ms (max "
              f"{row['round_max_ms']}, poll {row['poll_ms']} ms, first round "
              f"{row['first_round_ms']} ms), controller {cpu:.3f} s CPU per "
              f"round, RSS {row['rss_mib']:.0f} MiB; etcd {ecpu:.3f} s CPU per "
              f"round, RSS {row['etcd_rss_mib']:.0f} MiB; {s['vms']} VMs, "
              f"{row['moves']} moves; hosts up at least {min(up)}; simulated "
              f"hosts {scpu:.3f} s CPU per round; load average {load[0]:.2f}",
              flush=True)
        return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", default="1000,5000,10000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--interval-s", type=int, default=5)
    ap.add_argument("--etcd", type=int, default=3)
    ap.add_argument("--stalled", type=int, default=0)
    a = ap.parse_args()
    rows = [one_case(int(h), a) for h in a.hosts.split(",")]
    print("\n| hosts | VMs | round (median / max) | poll | first round | "
          "controller CPU per round | controller RSS | etcd CPU per round | "
          "etcd RSS (3 members) | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['hosts']:,} | {r['vms']:,} | {r['round_ms']} / "
              f"{r['round_max_ms']} ms | {r['poll_ms']} ms | "
              f"{r['first_round_ms'] / 1000:.1f} s | {r['cpu_s']:.2f} s | "
              f"{r['rss_mib']:.0f} MiB | {r['etcd_cpu_s']:.3f} s | "
              f"{r['etcd_rss_mib']:.0f} MiB | {r['load']:.1f} |")


if __name__ == "__main__":
    main()
