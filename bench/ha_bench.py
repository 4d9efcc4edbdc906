"""Checkpoint-HA figures (docs/ha.md), on two ferryd hosts and one etcd
member on loopback, run side by side so that the shared machine's load
hits both arms alike:

  overhead   memload's verify throughput (pages verified per wall-clock
             second, read off the console as heartbeats arrive) of a 1 GiB
             guest with HA off, on, and off again, for each --intervals;
             the "on" window is compared with the mean of the two around it
  pause      the pause of every checkpoint (median, p99, max) and the
             bytes each checkpoint sent, from `ferry ha status`; and the
             time of one 1 GiB memory copy, the pause's floor here
  failover   --trials kills of the primary's QEMU (a 256 MiB guest,
             interval 1 s, the VM going back and forth): kill -> the VM
             running on the backup, and kill -> its first heartbeat there
  partition  --partitions cuts of the primary's etcd traffic: does the VM
             ever run on both hosts at once (a 10 ms probe of the primary's
             QEMU state and the backup's console)?

    /usr/bin/python3 bench/ha_bench.py [--intervals 10,2,90] [--trials 20]
        [--partitions 20] [--skip overhead,failover,partition]

Needs `ninja -C build`, the test guest in build/guest, etcd-server.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "system"))
import etcdlib  # noqa: E402
import ferrylib  # noqa: E402
import halib  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

TTL = halib.LEASE_TTL_S


def setup(proxied=False):
    """Two hosts with HA, one etcd member; with proxied, each host reaches
    etcd through its own FaultProxy (to cut)."""
    ec = etcdlib.EtcdCluster(n=1).start()
    c = ferrylib.Cluster(ROOT / "build", os.environ.get("FERRY_GUEST_DIR",
                                                         ROOT / "build" / "guest"),
                         nhosts=2, log_level="info")
    c.setup()
    ram = Path(f"/dev/shm/{c.dir.name}")
    ram.mkdir()
    proxies = {}
    m = ec.members[0]
    for name in c.hosts:
        etcd = ec.ferryd_etcd_section(lease_ttl_s=TTL, timeout_ms=3000,
                                      member_timeout_ms=1000)
        if proxied:
            p = FaultProxy(m.address, m.client_port, listen_host="127.0.0.1")
            p.start()
            proxies[name] = p
            etcd["endpoints"] = [f"https://127.0.0.1:{p.port}"]
        c.write_host_config(name, ram_dir=str(ram / name), etcd=etcd)
    c.start_all()

    def close():
        c.close()
        for p in proxies.values():
            p.stop()
        ec.close()
        shutil.rmtree(ram, ignore_errors=True)
    return c, proxies, close


def enable(c, vm, primary, backup, interval):
    c.cli("--host", primary, "ha", "enable", vm, "--backup", backup,
          "--interval", f"{interval}s")


def disable(c, vm, host):
    c.cli("--host", host, "ha", "disable", vm)


def throughput(c, host, vm, seconds):
    """Pages verified per wall-clock second over `seconds`, from the
    heartbeats' cumulative `verified` as they appear on the console."""
    path = c.vm_dir(host, vm) / "console.log"
    first = last = None
    seen = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end or first is None or last is first:
        hbs = ferrylib.parse_heartbeats(path.read_text(errors="replace"))
        if len(hbs) > seen:
            seen = len(hbs)
            point = (time.monotonic(), hbs[-1]["verified"], hbs[-1]["errors"])
            if first is None:
                first = point
            last = point
        time.sleep(0.05)
    assert last[2] == 0, f"memload errors: {last}"
    return (last[1] - first[1]) / (last[0] - first[0])


def overhead(c, intervals, window):
    vm = "big"
    c.define_vm("host-a", vm, memory_mib=1024, mib=768, rate=2000)
    c.start_vm("host-a", vm)
    c.wait_heartbeats("host-a", vm, n=5, timeout=120)
    rows = []
    for iv in intervals:
        w = max(window, 2 * iv + 10)
        off = throughput(c, "host-a", vm, w)
        enable(c, vm, "host-a", "host-b", iv)
        halib.wait_checkpoints(c, "host-a", vm, 1, timeout=300)  # the full copy
        on = throughput(c, "host-a", vm, w)
        st = halib.ha_status(c, "host-a", vm)
        disable(c, vm, "host-a")
        # off again after: the machine's drift is averaged out
        off = (off + throughput(c, "host-a", vm, w)) / 2
        pause = st.get("pause_ms", {})
        pauses_note = (f"pause median {pause.get('median', 0):.1f} ms, "
                       f"p99 {pause.get('p99', 0):.1f} ms (n={pause.get('samples', 0)})")
        rows.append({"interval_s": iv, "window_s": w, "off": off, "on": on,
                     "overhead_pct": 100.0 * (off - on) / off,
                     "pause": pause, "last_bytes": st["last_checkpoint"]["bytes"],
                     "last_pages": st["last_checkpoint"]["pages"],
                     "checkpoints": st["checkpoints"]})
        print(f"interval {iv:>3} s, window {w} s: verify {off:,.0f} pages/s off (mean), "
              f"{on:,.0f} on -> overhead {rows[-1]['overhead_pct']:.2f} %; "
              f"{pauses_note}; last checkpoint {st['last_checkpoint']['bytes']:,} bytes "
              f"({st['last_checkpoint']['pages']} pages), {st['checkpoints']} checkpoints",
              flush=True)
    c.stop_vm("host-a", vm, force=True)
    c.api_ok("host-a", "DELETE", f"/v1/vms/{vm}")
    return rows


def copy_floor(nbytes=1 << 30, runs=5):
    """The pause's floor on this machine: one copy of nbytes of memory
    (what the pause must do without a dirty log), median of runs, in ms.
    A memoryview assignment is one memcpy; both buffers are touched first."""
    src, dst = bytearray(b"\x01") * nbytes, bytearray(nbytes)
    dst[:] = src
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        memoryview(dst)[:] = memoryview(src)
        times.append((time.perf_counter() - t0) * 1000.0)
    del src, dst
    return statistics.median(times)


def pauses(c, interval, count):
    """Pause and bytes of `count` checkpoints of the 1 GiB guest."""
    vm = "big"
    c.define_vm("host-a", vm, memory_mib=1024, mib=768, rate=2000)
    c.start_vm("host-a", vm)
    c.wait_heartbeats("host-a", vm, n=5, timeout=120)
    enable(c, vm, "host-a", "host-b", interval)
    seen, bytes_, pause = 0, [], []
    while len(pause) < count:
        st = halib.ha_status(c, "host-a", vm)
        last = st.get("last_checkpoint")
        if last and last["seq"] > seen:
            if last["seq"] > 1:  # the first is the full copy
                bytes_.append(last["bytes"])
                pause.append(last["pause_ms"])
            seen = last["seq"]
        time.sleep(0.2)
    disable(c, vm, "host-a")
    c.stop_vm("host-a", vm, force=True)
    c.api_ok("host-a", "DELETE", f"/v1/vms/{vm}")
    pause.sort()
    r = {"interval_s": interval, "n": len(pause),
         "pause_median_ms": statistics.median(pause),
         "pause_p99_ms": pause[min(len(pause) - 1, int(len(pause) * 0.99))],
         "pause_max_ms": pause[-1],
         "bytes_median": statistics.median(bytes_), "bytes_max": max(bytes_),
         "copy_1gib_ms": copy_floor()}
    print(f"pause at {interval} s, n={r['n']}: median {r['pause_median_ms']:.1f} ms, "
          f"p99 {r['pause_p99_ms']:.1f} ms, max {r['pause_max_ms']:.1f} ms; bytes per "
          f"checkpoint median {r['bytes_median']:,.0f}, max {r['bytes_max']:,}; "
          f"a 1 GiB memory copy alone: {r['copy_1gib_ms']:.1f} ms (median of 5)", flush=True)
    return r


def first_hb_time(path, t_kill, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if "memload: hb" in path.read_text(errors="replace"):
                return time.monotonic() - t_kill
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise AssertionError("no heartbeat on the backup")


def failovers(c, trials):
    vm = "fo"
    c.define_vm("host-a", vm, memory_mib=256, mib=64, rate=1000)
    c.start_vm("host-a", vm)
    c.wait_heartbeats("host-a", vm, n=2)
    prim, back = "host-a", "host-b"
    running, first_hb = [], []
    for i in range(trials):
        enable(c, vm, prim, back, 1)
        halib.wait_checkpoints(c, prim, vm, 2)
        console = c.vm_dir(back, vm) / "console.log"
        pid = c.vm_info(prim, vm)["pid"]
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        while c.vm_info(back, vm)["state"] != "running":
            time.sleep(0.01)
        running.append(time.monotonic() - t0)
        first_hb.append(first_hb_time(console, t0))
        hbs = c.heartbeats(back, vm)
        assert hbs and all(h["errors"] == 0 for h in hbs), hbs
        ferrylib.wait_until(lambda: vm not in halib.vm_names(c, prim), 20, 0.1,
                            "the old primary to drop the VM")
        print(f"failover {i + 1}: running after {running[-1] * 1000:.0f} ms, first "
              f"heartbeat after {first_hb[-1] * 1000:.0f} ms", flush=True)
        prim, back = back, prim
    r = {"trials": trials,
         "running_ms": sorted(round(x * 1000) for x in running),
         "first_hb_ms": sorted(round(x * 1000) for x in first_hb)}
    print(f"failover x{trials}: to running median {statistics.median(r['running_ms'])} ms, "
          f"max {max(r['running_ms'])} ms; to first heartbeat median "
          f"{statistics.median(r['first_hb_ms'])} ms, max {max(r['first_hb_ms'])} ms",
          flush=True)
    return r


def proc_state(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def partitions(c, proxies, trials):
    vm = "pt"
    c.define_vm("host-a", vm, memory_mib=256, mib=32, rate=1000)
    c.start_vm("host-a", vm)
    c.wait_heartbeats("host-a", vm, n=2)
    prim, back = "host-a", "host-b"
    twice = 0
    gaps = []
    for i in range(trials):
        enable(c, vm, prim, back, 1)
        halib.wait_checkpoints(c, prim, vm, 2)
        pid = c.vm_info(prim, vm)["pid"]
        console = c.vm_dir(back, vm) / "console.log"
        last_prim = first_back = None
        t0 = time.monotonic()
        proxies[prim].cut()
        while time.monotonic() - t0 < 40:
            now = time.monotonic()
            st = proc_state(pid)
            if st is not None and st != "T":
                last_prim = now
            if first_back is None and console.exists() and console.stat().st_size > 0:
                first_back = now
            if first_back is not None and now - first_back > 2:
                break
            time.sleep(0.01)
        assert first_back is not None, "the backup never ran the VM"
        if last_prim is not None and last_prim >= first_back:
            twice += 1
        gaps.append(first_back - (last_prim or t0))
        proxies[prim].heal()
        ferrylib.wait_until(lambda: vm not in halib.vm_names(c, prim), 30, 0.2,
                            "the fenced primary to drop its copy")
        print(f"partition {i + 1}: primary frozen {(last_prim or t0) - t0:.2f} s after the "
              f"cut, backup ran {first_back - t0:.2f} s after it; runs twice so far: {twice}",
              flush=True)
        prim, back = back, prim
    r = {"trials": trials, "runs_twice": twice,
         "gap_min_s": round(min(gaps), 2), "gap_median_s": round(statistics.median(gaps), 2)}
    print(f"partition x{trials}: runs twice {twice}; time between the primary's last "
          f"running sample and the backup's first output: min {r['gap_min_s']} s, "
          f"median {r['gap_median_s']} s", flush=True)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--intervals", default="10,2,90")
    ap.add_argument("--window", type=int, default=60)
    ap.add_argument("--pauses", type=int, default=30)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--partitions", type=int, default=20)
    ap.add_argument("--skip", default="")
    ap.add_argument("--json")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    out = {"load_before": os.getloadavg()}
    print(f"load average before: {out['load_before']}", flush=True)
    c, proxies, close = setup(proxied="partition" not in skip)
    try:
        if "overhead" not in skip:
            out["overhead"] = overhead(c, [int(x) for x in a.intervals.split(",")],
                                       a.window)
        if "pause" not in skip:
            out["pause"] = pauses(c, 10, a.pauses)
        if "failover" not in skip:
            out["failover"] = failovers(c, a.trials)
        if "partition" not in skip:
            out["partition"] = partitions(c, proxies, a.partitions)
    finally:
        close()
    out["load_after"] = os.getloadavg()
    print(f"load average after: {out['load_after']}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
