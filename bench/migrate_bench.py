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
"""

import argparse
import ctypes
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Unlimited in practice: QEMU's default max-bandwidth is 128 MiB/s, which
# would cap every configuration.  1 TiB/s never throttles anything here.
UNLIMITED_BW = 1 << 40

# key -> (label template, kind, multifd, tls, compression); order is the
# table's order.  ferry configs: compression is --compress's value.
CONFIGS = {
    "qemu-tcp": ("QEMU plain TCP (1 ch)", "qemu", False, False, None),
    "qemu-multifd": ("QEMU plain multifd ({ch} ch)", "qemu", True, False, None),
    "qemu-multifd-zstd": ("QEMU plain multifd zstd ({ch} ch)", "qemu", True, False, "zstd"),
    "qemu-tls": ("QEMU TLS (1 ch)", "qemu", False, True, None),
    "qemu-tls-multifd": ("QEMU TLS multifd ({ch} ch)", "qemu", True, True, None),
    "ferry": ("ferry", "ferry", None, None, None),
    "ferry-multifd": ("ferry --channels {ch}", "ferry", True, None, None),
    "ferry-zstd": ("ferry --compress on", "ferry", None, None, "on"),
    "ferry-nozstd": ("ferry --compress off", "ferry", None, None, "off"),
}
# Default configs per mode (--configs overrides).
LOOPBACK_CONFIGS = ("qemu-tcp", "qemu-multifd", "qemu-tls", "qemu-tls-multifd", "ferry",
                    "ferry-multifd")
LINK_CONFIGS = ("qemu-tcp", "qemu-multifd-zstd", "qemu-tls", "ferry", "ferry-zstd",
                "ferry-nozstd")
# workload -> (memload.rate: None = --rate, memload.content)
WORKLOADS = {
    "idle": (0, "pattern"),
    "dirty": (None, "pattern"),
    "text": (0, "text"),
}

HB_RE = re.compile(
    r"memload: hb seq=(\d+) verified=(\d+) dirtied=(\d+) errors=(\d+) passes=(\d+)"
)
HB_FIELDS = ("seq", "verified", "dirtied", "errors", "passes")


def is_ferry(config):
    return CONFIGS[config][1] == "ferry"


class BenchError(Exception):
    """A run failed; the message goes into the failure row."""


class Interrupted(BaseException):
    """SIGTERM/SIGHUP: unwind like Ctrl-C so every finally block runs."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


def qemu_metrics(info):
    """QEMU's query-migrate answer -> the benchmark's metrics."""
    ram = info.get("ram", {})
    return {
        "status": info.get("status"),
        "total_ms": float(info.get("total-time", 0)),
        "downtime_ms": float(info.get("downtime", 0)),
        "ram_bytes": int(ram.get("transferred", 0)),
        "wire_bytes": None,
        "mbps": ram.get("mbps"),
        "iterations": ram.get("dirty-sync-count"),
        "setup_ms": info.get("setup-time"),
        "multifd_bytes": ram.get("multifd-bytes"),
        "normal_pages": ram.get("normal"),
        "duplicate_pages": ram.get("duplicate"),
        "dirty_pages_rate": ram.get("dirty-pages-rate"),
    }


# ---------------------------------------------------------------------------
# processes


def _die_with_parent():
    """preexec_fn: SIGKILL the child if the benchmark itself dies (even by
    SIGKILL), so no QEMU or ferryd of ours outlives it.  (The QEMUs that a
    ferryd started are killed by FerryCluster.close(), which a SIGKILL of
    the benchmark skips.)"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ProcTable:
    """Every process the benchmark started, killed (by pid) at cleanup."""

    def __init__(self):
        self.procs = []

    def spawn(self, argv, logpath, cwd=None, die_with_parent=True):
        out = open(logpath, "ab")
        try:
            p = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=cwd, start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None)
        finally:
            out.close()
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p, grace=3.0, sig=signal.SIGTERM):
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            except ProcessLookupError:
                pass

    def stop_all(self):
        for p in reversed(self.procs):
            try:
                self.stop(p)
            except Exception:
                pass
        self.procs = [p for p in self.procs if p.poll() is None]


def tail(path, n=15):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def free_port(addr="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# QMP


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path, proc, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise BenchError(f"QEMU exited (status {proc.returncode}) before QMP came up")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(path))
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise BenchError(f"QMP socket {path} did not come up")
                time.sleep(0.05)
        self.sock = s
        self.sock.settimeout(30.0)
        self.buf = b""
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QMPError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise QMPError(f"{name}: {r['error'].get('desc', r['error'])}")
            # events are ignored

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# memload heartbeats


def parse_console(text):
    """(heartbeats, corruption lines, error lines) from complete lines only."""
    text = text[: text.rfind("\n") + 1]
    hbs = [dict(zip(HB_FIELDS, map(int, m.groups()))) for m in HB_RE.finditer(text)]
    corrupt = [ln for ln in text.splitlines() if "memload: CORRUPTION" in ln]
    errors = [ln for ln in text.splitlines() if "memload: error:" in ln]
    return hbs, corrupt, errors


PANIC_RE = re.compile(r"Kernel panic|BUG: |Oops|general protection fault|"
                      r"stack-protector|segfault at|Kernel stack is corrupted")


def check_console(text, where):
    hbs, corrupt, errors = parse_console(text)
    m = PANIC_RE.search(text)
    if m:
        line = text[text.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0].strip()
        raise BenchError(f"{where}: guest crashed: {line}")
    if errors:
        raise BenchError(f"{where}: {errors[0].strip()}")
    m = re.search(r"init: memload exited with status \d+", text)
    if m:
        raise BenchError(f"{where}: {m.group(0)} (guest powered off)")
    if corrupt:
        raise BenchError(f"{where}: {len(corrupt)} CORRUPTION line(s), first: {corrupt[0].strip()}")
    bad = [h for h in hbs if h["errors"] != 0]
    if bad:
        raise BenchError(f"{where}: heartbeat seq={bad[0]['seq']} has errors={bad[0]['errors']}")
    return hbs


def wait_heartbeats(read_text, where, count=1, after_seq=0, timeout=60.0, alive=None):
    """Wait for `count` heartbeats with seq > after_seq (checking errors=0
    and no CORRUPTION on the way); return all heartbeats seen."""
    deadline = time.monotonic() + timeout
    while True:
        hbs = check_console(read_text(), where)
        if len([h for h in hbs if h["seq"] > after_seq]) >= count:
            return hbs
        if alive is not None and not alive():
            text = read_text()
            check_console(text, where)
            last = [ln.strip() for ln in text.splitlines() if ln.strip()][-2:]
            raise BenchError(f"{where}: QEMU exited; console ends: {' / '.join(last)}")
        if time.monotonic() > deadline:
            last = hbs[-1]["seq"] if hbs else None
            lines = [ln.strip() for ln in read_text().splitlines() if ln.strip()][-2:]
            raise BenchError(f"{where}: no {count} heartbeat(s) with seq > {after_seq} "
                             f"within {timeout:.0f}s (last seq {last}; console ends: "
                             f"{' / '.join(lines) or 'nothing'})")
        time.sleep(0.1)


def read_file(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# TLS certificates for QEMU (GnuTLS-compatible PEM via the openssl CLI)


def make_qemu_certs(d, ip="127.0.0.1"):
    """ca-cert.pem, server-cert.pem/-key.pem, client-cert.pem/-key.pem in d
    (RSA-2048, CN and SAN ip).  QEMU checks key usages strictly, so
    the CA gets CA:TRUE + keyCertSign and the leaves digitalSignature +
    keyEncipherment + the matching extendedKeyUsage."""
    d.mkdir(parents=True, exist_ok=True)

    def ossl(*args):
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"openssl {args[0]} failed: {r.stderr.strip()}")

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem",
         "-out", "ca-cert.pem", "-days", "3", "-subj", "/CN=ferry-bench CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for role, eku, serial in (("server", "serverAuth", "2"), ("client", "clientAuth", "3")):
        (d / f"{role}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={eku}\n"
            f"subjectAltName=IP:{ip},DNS:localhost\n")
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{role}-key.pem",
             "-out", f"{role}.csr", "-subj", f"/CN={ip}")
        ossl("x509", "-req", "-in", f"{role}.csr", "-CA", "ca-cert.pem",
             "-CAkey", "ca-key.pem", "-set_serial", serial, "-days", "3",
             "-extfile", f"{role}.ext", "-out", f"{role}-cert.pem")
    for f in list(d.iterdir()):
        if f.suffix in (".csr", ".ext") or f.name == "ca-key.pem":
            f.unlink()
        else:
            f.chmod(0o600 if "key" in f.name else 0o644)


# ---------------------------------------------------------------------------
# the link (--link): two network namespaces joined by a shaped veth pair


class Link:
    """Hosts "a" (source) and "b" (destination) in network namespaces of
    their own, joined by a veth pair whose egress is shaped with tbf to
    RATE in both directions.  Only the addresses inside these namespaces
    are used.  close() removes both namespaces (which removes the veth
    pair); sweep() removes those left by a benchmark that was killed."""

    PREFIX = "ferrybench-"
    ADDR = {"a": "10.213.77.1", "b": "10.213.77.2"}

    def __init__(self, rate):
        self.rate = rate
        self.ns = {side: f"{self.PREFIX}{os.getpid()}-{side}" for side in "ab"}
        self.created = []

    @staticmethod
    def _ip(*args, check=True):
        r = subprocess.run(["ip", *args], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise BenchError(f"ip {' '.join(args)}: {r.stderr.strip()}")
        return r

    @classmethod
    def sweep(cls):
        """Remove our namespaces whose benchmark process is gone."""
        out = cls._ip("netns", "list", check=False).stdout
        for line in out.splitlines():
            name = line.split()[0] if line.split() else ""
            m = re.fullmatch(re.escape(cls.PREFIX) + r"(\d+)-[ab]", name)
            if m and not Path(f"/proc/{m.group(1)}").exists():
                cls._ip("netns", "del", name, check=False)

    def setup(self):
        self.sweep()
        for side in "ab":
            self._ip("netns", "add", self.ns[side])
            self.created.append(self.ns[side])
            self._ip("-n", self.ns[side], "link", "set", "lo", "up")
        self._ip("link", "add", "fb0", "netns", self.ns["a"], "type", "veth",
                 "peer", "name", "fb0", "netns", self.ns["b"])
        # burst: at least a 64 KiB GSO packet and 2 ms at the rate
        burst = max(65536 * 2, parse_rate(self.rate) // 8 // 500)
        for side in "ab":
            ns = self.ns[side]
            self._ip("-n", ns, "addr", "add", f"{self.ADDR[side]}/30", "dev", "fb0")
            self._ip("-n", ns, "link", "set", "fb0", "up")
            r = subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", "fb0", "root",
                                "tbf", "rate", self.rate, "burst", str(burst),
                                "latency", "20ms"], capture_output=True, text=True)
            if r.returncode != 0:
                raise BenchError(f"tc tbf on {ns}: {r.stderr.strip()}")

    def prefix(self, side):
        return ["ip", "netns", "exec", self.ns[side]]

    def describe(self):
        return (f"veth pair between network namespaces {self.ns['a']} ({self.ADDR['a']}) "
                f"and {self.ns['b']} ({self.ADDR['b']}), tbf rate {self.rate} each way; "
                f"no added delay (this kernel has no sch_netem)")

    def close(self):
        for ns in reversed(self.created):
            self._ip("netns", "del", ns, check=False)
        self.created = []


def parse_rate(text):
    """'1gbit' -> bits/s (tc's decimal units)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)bit", text.strip().lower())
    if not m:
        raise ValueError(f"bad rate {text!r} (e.g. 1gbit, 500mbit)")
    return int(float(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2)])


# ---------------------------------------------------------------------------
# QEMU runs


class QemuVM:
    def __init__(self, bench, rundir, role, incoming=False, tls=None):
        self.dir = rundir / role
        self.dir.mkdir(parents=True)
        self.serial = self.dir / "serial.log"
        self.qmp_path = self.dir / "qmp.sock"
        self.log = self.dir / "qemu.log"
        a = bench.args
        argv = bench.netns_prefix("a" if role == "src" else "b")
        argv += [a.qemu, "-name", f"guest=bench-{role},debug-threads=on",
                "-machine", "pc", "-accel", a.accel,
                "-m", bench.qemu_mem_arg(), "-smp", "1",
                "-nodefaults", "-no-user-config", "-display", "none",
                "-chardev", f"socket,id=qmp,path={self.qmp_path},server=on,wait=off",
                "-mon", "chardev=qmp,mode=control",
                "-chardev", f"file,id=serial0,path={self.serial}",
                "-serial", "chardev:serial0",
                "-kernel", str(bench.kernel), "-initrd", str(bench.initrd),
                "-append", bench.cmdline()]
        if tls:
            argv += ["-object", f"tls-creds-x509,id=tls0,dir={bench.certdir},"
                     f"endpoint={tls},verify-peer=on"]
        if incoming:
            argv += ["-incoming", "defer"]
        self.proc = bench.procs.spawn(argv, self.log)
        try:
            self.qmp = QMP(self.qmp_path, self.proc)
        except BaseException as e:
            ProcTable.stop(self.proc, grace=1.0)
            if isinstance(e, BenchError):
                raise BenchError(f"{e}: {tail(self.log, 3)}") from None
            raise

    def alive(self):
        return self.proc.poll() is None

    def console(self):
        return read_file(self.serial)

    def close(self):
        try:
            if self.alive():
                self.qmp.cmd("quit")
        except Exception:
            pass
        self.qmp.close()
        ProcTable.stop(self.proc, grace=2.0)


def run_qemu(bench, config, workload, run_idx, rundir, res):
    """One QEMU migration; fills res (also partly, when it raises)."""
    _, _, multifd, tls, compression = CONFIGS[config]
    a = bench.args
    src = dst = None
    try:
        src = QemuVM(bench, rundir, "src", tls="client" if tls else None)
        wait_heartbeats(src.console, "source boot", count=1,
                        timeout=a.boot_timeout, alive=src.alive)
        res["boot_s"] = round(time.monotonic() - bench.run_t0, 2)
        time.sleep(a.settle)

        dst = QemuVM(bench, rundir, "dst", incoming=True, tls="server" if tls else None)
        for vm in (src, dst):
            if multifd:
                vm.qmp.cmd("migrate-set-capabilities",
                           capabilities=[{"capability": "multifd", "state": True}])
            p = {}
            if multifd:
                p["multifd-channels"] = a.channels
            if compression:
                p["multifd-compression"] = compression
            if tls:
                p["tls-creds"] = "tls0"
            if vm is src:
                p["max-bandwidth"] = UNLIMITED_BW
                p["downtime-limit"] = a.downtime_ms
            if p:
                vm.qmp.cmd("migrate-set-parameters", **p)
        port = bench.qemu_port()
        uri = f"tcp:{bench.host_addr('b')}:{port}"
        dst.qmp.cmd("migrate-incoming", uri=uri)
        t_mig = time.monotonic()
        src.qmp.cmd("migrate", uri=uri)

        deadline = time.monotonic() + a.migrate_timeout
        while True:
            info = src.qmp.cmd("query-migrate")
            st = info.get("status")
            if st in ("completed", "failed", "cancelled"):
                break
            if not dst.alive():
                raise BenchError(f"destination QEMU exited: {tail(dst.log, 3)}")
            if time.monotonic() > deadline:
                try:
                    src.qmp.cmd("migrate_cancel")
                except QMPError:
                    pass
                m = qemu_metrics(info)
                raise BenchError(f"not converged after {a.migrate_timeout:.0f}s "
                                 f"(status {st}, {m['iterations']} iterations, "
                                 f"{m['ram_bytes'] / 2**20:.0f} MiB sent)")
            time.sleep(0.05)
        res["wall_ms"] = round((time.monotonic() - t_mig) * 1000)
        res.update(qemu_metrics(info))
        res["raw"] = info
        if st != "completed":
            raise BenchError(f"migration {st}: {info.get('error-desc', '')}".strip())

        src_hbs = check_console(src.console(), "source")
        last = src_hbs[-1]["seq"] if src_hbs else 0
        # The source reports completed once everything is sent; the
        # destination may still be loading the last section ("inmigrate").
        deadline = time.monotonic() + a.verify_timeout
        while True:
            dst_status = dst.qmp.cmd("query-status").get("status")
            if dst_status == "running":
                break
            if time.monotonic() > deadline or dst_status not in ("inmigrate", "paused"):
                raise BenchError(f"destination not running after migration ({dst_status}): "
                                 f"{tail(dst.log, 3)}")
            time.sleep(0.05)
        res["dst_running_ms"] = round((time.monotonic() - t_mig) * 1000)
        dhb = wait_heartbeats(dst.console, "destination", count=2, after_seq=last,
                              timeout=a.verify_timeout, alive=dst.alive)
        res["src_last_seq"] = last
        res["dst_seq"] = [h["seq"] for h in dhb]
        res["verified"] = True
    except BaseException:
        if dst is not None:
            res["dst_console_tail"] = tail(dst.serial, 8)
        raise
    finally:
        for vm in (dst, src):
            if vm is not None:
                vm.close()


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
