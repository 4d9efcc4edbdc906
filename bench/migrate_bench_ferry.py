"""ferry's side of bench/migrate_bench.py: the CLI and JSON summary it
reads, two ferryd hosts, and one `ferry migrate` run."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from migrate_bench_common import (BenchError, CONFIGS, ProcTable, check_console,
                                  free_port, read_file, tail, wait_heartbeats)


# ---------------------------------------------------------------------------
# ferry's interface: adapt the CLI arguments and JSON field names here only.


def ferry_migrate_argv(name, src_host, dst_host, channels, max_downtime_ms,
                       bandwidth_mibps, compress=None):
    """Arguments after `ferry --config C --host SRC` for one migration
    (channels None: ferry chooses)."""
    argv = ["migrate", name, "--to", dst_host, "--json",
            "--max-downtime", str(max_downtime_ms)]
    if channels is not None:
        argv += ["--channels", str(channels)]
    if bandwidth_mibps is not None:
        argv += ["--bandwidth", str(bandwidth_mibps)]
    if compress is not None:
        argv += ["--compress", compress]
    return argv


def ferry_is_summary(obj):
    """Is this JSON line ferry's end-of-migration summary?"""
    return isinstance(obj, dict) and obj.get("event") == "summary"


def ferry_metrics(summary):
    """ferry's summary object -> the benchmark's metrics (same keys as
    qemu_metrics).  The only place that knows ferry's field names."""
    outcome = summary.get("outcome")
    return {
        "status": "completed" if outcome == "completed" else str(outcome),
        "total_ms": float(summary["total_ms"]),
        "downtime_ms": float(summary["downtime_ms"]),
        "ram_bytes": int(summary["ram_bytes"]),
        "wire_bytes": summary.get("wire_bytes"),
        "mbps": summary.get("mean_mbps"),
        "iterations": summary.get("iterations"),
        "setup_ms": summary.get("setup_ms"),
        "migrate_ms": summary.get("migrate_ms"),
        "qemu_downtime_ms": summary.get("qemu_downtime_ms"),
        "escalation": summary.get("escalation"),
        "path": summary.get("path"),
    }


# ---------------------------------------------------------------------------
# ferry runs


class FerryCluster:
    """Two ferryd hosts on 127.0.0.2 / 127.0.0.3 (free ports), or on the
    link's two namespaces, a cluster PKI and a client config, as in
    scripts/demo.sh, with accel tcg.  With a link, the CLI runs in the
    source's namespace."""

    def __init__(self, bench, bindir):
        self.bench = bench
        self.bin = bindir
        self.dir = bench.tmp / "ferry"
        self.dir.mkdir()
        self.client = self.dir / "client.json"
        self.hosts = {}
        self.HOSTS = (("host-a", bench.host_addr("a")), ("host-b", bench.host_addr("b")))
        self.side = {"host-a": "a", "host-b": "b"}

    @staticmethod
    def probe(bindir):
        """None if `ferry migrate` exists, else why the row is skipped."""
        ferry = bindir / "ferry"
        if not (bindir / "ferryd").exists() or not ferry.exists():
            return f"no ferry/ferryd in {bindir} (build ferry first)"
        r = subprocess.run([str(ferry), "migrate"], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL,
                           env={**os.environ, "FERRY_CONFIG": "/nonexistent"})
        if r.returncode == 2 and "unknown command" in (r.stderr + r.stdout):
            return "`ferry migrate` not available yet (the CLI says: unknown command)"
        return None

    def run(self, argv, timeout=120, check=True):
        argv = self.bench.netns_prefix("a") + argv
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                               cwd=self.dir, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            if check:
                raise BenchError(f"{' '.join(map(str, argv[:6]))}...: {e}")
            r = subprocess.CompletedProcess(argv, 127, "", str(e))
        if check and r.returncode != 0:
            raise BenchError(f"{' '.join(map(str, argv[:6]))}... exit {r.returncode}: "
                             f"{(r.stderr or r.stdout).strip()[-300:]}")
        return r

    def cli(self, host, *args, timeout=120, check=True):
        return self.run([str(self.bin / "ferry"), "--config", str(self.client),
                         "--host", host, *args], timeout=timeout, check=check)

    def start(self):
        ferry = str(self.bin / "ferry")
        pki = self.dir / "pki"
        self.run([ferry, "pki", "init", "--dir", str(pki), "--cluster", "bench"])
        for name, addr in self.HOSTS:
            self.run([ferry, "pki", "host", name, "--dir", str(pki), "--ip", addr])
        self.run([ferry, "pki", "user", "admin", "--dir", str(pki)])
        shared = self.dir / "shared"
        (shared / "guest").mkdir(parents=True)
        shutil.copy(self.bench.kernel, shared / "guest" / "vmlinuz")
        shutil.copy(self.bench.initrd, shared / "guest" / "initramfs.cpio.gz")
        # admin may do anything, the hosts are peers (docs/policy.md)
        (self.dir / "policy.json").write_text(json.dumps({
            "roles": {"admin": ["admin"], "host": [n for n, _ in self.HOSTS]},
            "rules": [{"name": "bench", "vms": {"all": True},
                       "migrate_out": {"roles": ["admin"]}, "to": {"all": True},
                       "accept_from": {"all": True},
                       "migrate_in": {"roles": ["admin"]}}],
        }, indent=2))
        hosts_cfg = {}
        for name, addr in self.HOSTS:
            port = free_port(addr) if not self.bench.link else 47001
            hd = self.dir / name
            hd.mkdir()
            (hd / "ferryd.json").write_text(json.dumps({
                "host": name,
                "listen": {"address": addr, "port": port},
                "tls": {"ca": "../pki/ca.crt", "cert": f"../pki/hosts/{name}.crt",
                        "key": f"../pki/hosts/{name}.key"},
                "state_dir": "state", "shared_dir": "../shared", "accel": "tcg",
                "qemu_user": "ferry-qemu",
                "policy": "../policy.json",
            }, indent=2))
            hosts_cfg[name] = {"address": addr, "port": port}
            self.hosts[name] = self.bench.procs.spawn(
                self.bench.netns_prefix(self.side[name])
                + [str(self.bin / "ferryd"), "--config", str(hd / "ferryd.json")],
                hd / "ferryd.log")
        self.client.write_text(json.dumps({
            "ca": "pki/ca.crt", "cert": "pki/users/admin.crt", "key": "pki/users/admin.key",
            "hosts": hosts_cfg, "default_host": "host-a"}, indent=2))
        for name, _ in self.HOSTS:
            deadline = time.monotonic() + 20
            while self.cli(name, "host", "info", check=False, timeout=10).returncode != 0:
                if self.hosts[name].poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"ferryd {name} did not come up: "
                                     f"{tail(self.dir / name / 'ferryd.log', 5)}")
                time.sleep(0.2)

    def cpu_s(self):
        """CPU seconds (user + system) both ferryd processes have used:
        during a migration, mostly their relays."""
        total = 0.0
        for p in self.hosts.values():
            try:
                f = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return total

    def console(self, host, name):
        r = self.cli(host, "vm", "console", name, check=False, timeout=30)
        return r.stdout if r.returncode == 0 else ""

    def remove_vm(self, name):
        for host, _ in self.HOSTS:
            self.cli(host, "vm", "stop", name, "--force", check=False, timeout=60)
            self.cli(host, "vm", "delete", name, check=False, timeout=60)

    def close(self):
        for host, _ in self.HOSTS:
            p = self.hosts.get(host)
            if p is not None:
                try:
                    self.cli(host, "vm", "list", check=False, timeout=10)
                except Exception:
                    pass
        for host, _ in self.HOSTS:
            p = self.hosts.get(host)
            if p is not None:
                ProcTable.stop(p, grace=5.0)
        # QEMUs that ferryd started (ferryd leaves VMs running on exit).
        for pidfile in self.dir.glob("host-*/state/**/*.pid"):
            try:
                pid = int(pidfile.read_text().split()[0])
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if b"qemu" in cmd and str(self.dir).encode() in cmd:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def run_ferry(bench, config, workload, run_idx, rundir, res):
    """One ferry migration; fills res (also partly, when it raises)."""
    a = bench.args
    fc = bench.ferry
    name = f"bench-{workload}-{run_idx}-{int(time.time() * 1000) % 100000}"
    vmfile = rundir / "vm.json"
    vmfile.parent.mkdir(parents=True, exist_ok=True)
    vmfile.write_text(json.dumps({
        "name": name, "memory_mib": bench.mem_mib, "vcpus": 1,
        "kernel": "guest/vmlinuz", "initrd": "guest/initramfs.cpio.gz",
        "cmdline": bench.cmdline()}))
    migrated = False
    follower = None
    try:
        fc.cli("host-a", "vm", "define", str(vmfile))
        fc.cli("host-a", "vm", "start", name)
        wait_heartbeats(lambda: fc.console("host-a", name), "source boot", count=1,
                        timeout=a.boot_timeout)
        res["boot_s"] = round(time.monotonic() - bench.run_t0, 2)
        time.sleep(a.settle)
        # Follow the source console during the migration, to know the last
        # heartbeat the source printed (the VM leaves host-a afterwards).
        follow_log = rundir / "src-console.log"
        follower = bench.procs.spawn(
            bench.netns_prefix("a")
            + [str(fc.bin / "ferry"), "--config", str(fc.client), "--host", "host-a",
               "vm", "console", name, "--follow"], follow_log, cwd=fc.dir)
        pre_hbs = check_console(fc.console("host-a", name), "source")
        argv = bench.netns_prefix("a") + [
            str(fc.bin / "ferry"), "--config", str(fc.client), "--host", "host-a",
            *ferry_migrate_argv(name, "host-a", "host-b",
                                a.channels if CONFIGS[config][2] else a.ferry_channels,
                                a.downtime_ms, a.ferry_bandwidth, CONFIGS[config][4])]
        t_mig = time.monotonic()
        cpu0 = fc.cpu_s()
        try:
            r = subprocess.run(argv, capture_output=True, text=True, cwd=fc.dir,
                               stdin=subprocess.DEVNULL, timeout=a.migrate_timeout + 30)
        except subprocess.TimeoutExpired:
            raise BenchError(f"ferry migrate did not finish within {a.migrate_timeout + 30:.0f}s")
        res["wall_ms"] = round((time.monotonic() - t_mig) * 1000)
        res["ferryd_cpu_s"] = round(fc.cpu_s() - cpu0, 3)
        time.sleep(0.3)
        ProcTable.stop(follower, grace=1.0)
        (rundir / "ferry-migrate.out").write_text(r.stdout + "\n--- stderr\n" + r.stderr)
        summary = None
        events = 0
        for line in r.stdout.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            events += 1
            if ferry_is_summary(obj):
                summary = obj
        if summary is not None:
            res.update(ferry_metrics(summary))
            res["raw"] = summary
        res["events"] = events
        if r.returncode != 0 or summary is None or res.get("status") != "completed":
            raise BenchError(f"ferry migrate exit {r.returncode}, "
                             f"outcome {res.get('status')}: {r.stderr.strip()[-300:]}")
        migrated = True
        src_hbs = check_console(read_file(follow_log), "source") or pre_hbs
        last = max([h["seq"] for h in src_hbs + pre_hbs] or [0])
        dhb = wait_heartbeats(lambda: fc.console("host-b", name), "destination", count=2,
                              after_seq=last, timeout=a.verify_timeout)
        res["src_last_seq"] = last
        res["dst_seq"] = [h["seq"] for h in dhb]
        res["verified"] = True
    except BaseException:
        if migrated:
            text = fc.console("host-b", name)
            res["dst_console_tail"] = "\n".join(text.splitlines()[-8:])
        raise
    finally:
        if follower is not None:
            ProcTable.stop(follower, grace=1.0)
        fc.remove_vm(name)
