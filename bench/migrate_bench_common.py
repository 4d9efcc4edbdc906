"""The test bed of bench/migrate_bench.py: configs and workloads, child
processes, QMP, memload's heartbeats on a console, and the shaped link
between two network namespaces (--link). Standard library only."""

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
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
