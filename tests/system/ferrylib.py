"""Shared helpers for ferry's system tests: a throw-away cluster of ferryd
hosts on loopback, the `ferry` CLI, the raw REST API over mutual TLS and the
test guest's memload output. Split in three modules, every public name
re-exported here (`from ferrylib import X` works for all of them):
proclib.py (processes, polling, ports) and vmops.py (memload's output, the
Cluster's VM and migration methods, MigrateResult).

A Cluster lives in a short temp dir (/tmp/ferry-XXXXXXXX; state dirs must
stay under 60 characters for the QMP unix-socket paths):

    DIR/pki/                    cluster CA, hosts/host-a.{crt,key}, users/admin.{crt,key}
    DIR/shared/guest/           vmlinuz and initramfs.cpio.gz (the shared storage)
    DIR/host-a/ferryd.json      host-a's config; state in DIR/host-a/state
    DIR/host-a/ferryd.log       ferryd's stderr (appended across restarts)
    DIR/client.json             CLI config naming every host (default: host-a)

Hosts are host-a, host-b, ... on 127.0.0.2, 127.0.0.3, ..., each with its
own port from a block picked per cluster. close() kills every ferryd and
QEMU of the cluster, checks that they are gone and removes DIR.
"""

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from proclib import (PORT_MAX, PORT_MIN, port_free, alloc_ports, pid_alive,
                     proc_cmdline, proc_state, qemu_running, tail, wait_pid_gone,
                     wait_until)
from vmops import (CORRUPTION_RE, HB_FIELDS, HB_RE, VM_BOOT_TIMEOUT, MigrateResult,
                   VmOps, parse_heartbeats)

REPO = Path(__file__).resolve().parents[2]

# `ferry` exit codes (src/cli/cli.h)
QEMU_USER = "ferry-qemu"  # scripts/deps.sh creates it
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4

PORTS_PER_HOST = 10  # the API port plus room for later listeners (migration)
HOST_START_TIMEOUT = 20.0

# the public names, with those of proclib and vmops
__all__ = [
    "PORT_MAX", "PORT_MIN", "port_free", "alloc_ports", "pid_alive",
    "proc_cmdline", "proc_state", "qemu_running", "tail", "wait_pid_gone",
    "wait_until", "CORRUPTION_RE", "HB_FIELDS", "HB_RE", "VM_BOOT_TIMEOUT",
    "MigrateResult", "VmOps", "parse_heartbeats", "REPO", "QEMU_USER", "EXIT_OK",
    "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_NOT_FOUND",
    "PORTS_PER_HOST", "HOST_START_TIMEOUT", "build_dir", "TLSRefused", "Host",
    "Cluster", "live_clusters", "expect_tls_refused", "client_hello", "kvm_expected",
]

_DEFAULT = object()  # "use the cluster's admin credentials"
_live_clusters = []  # clusters not yet closed, for failure diagnostics


def build_dir():
    """Folder holding the ferryd and ferry binaries ($FERRY_BUILD)."""
    return Path(os.environ.get("FERRY_BUILD", REPO / "build")).resolve()


class TLSRefused(Exception):
    """The server refused the connection at the TLS layer or closed it
    without an HTTP answer."""


@dataclass
class Host:
    name: str
    address: str
    port: int
    dir: Path
    proc: Optional[subprocess.Popen] = None
    log_file: object = None
    starts: int = 0

    @property
    def config(self):
        return self.dir / "ferryd.json"

    @property
    def state_dir(self):
        return self.dir / "state"

    @property
    def log(self):
        return self.dir / "ferryd.log"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def spare_ports(self):
        """Ports of this host's block after the API port, free for other
        listeners (e.g. migration)."""
        return range(self.port + 1, self.port + PORTS_PER_HOST)

    def running(self):
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster(VmOps):
    """A PKI, shared storage and n ferryd hosts on loopback (see module doc)."""

    build: Path
    guest: Path
    nhosts: int = 2
    accel: str = "auto"
    log_level: str = "debug"
    users: tuple = ("admin",)
    ferryd_extra: dict = field(default_factory=dict)  # merged into every ferryd.json
    dir: Path = None
    hosts: dict = field(default_factory=dict)
    closed: bool = False

    # ---------------------------------------------------------------- setup

    def __post_init__(self):
        self.build = Path(self.build)
        self.guest = Path(self.guest)
        self.ferry_bin = self.build / "ferry"
        self.ferryd_bin = self.build / "ferryd"
        for b in (self.ferry_bin, self.ferryd_bin):
            if not os.access(b, os.X_OK):
                raise RuntimeError(f"{b} missing: build with `ninja -C build` "
                                   f"or set FERRY_BUILD")
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-", dir="/tmp"))
        _live_clusters.append(self)
        names = [f"host-{chr(ord('a') + i)}" for i in range(self.nhosts)]
        addrs = [f"127.0.0.{i + 2}" for i in range(self.nhosts)]
        base = alloc_ports(addrs, PORTS_PER_HOST * self.nhosts)
        for i, (name, addr) in enumerate(zip(names, addrs)):
            self.hosts[name] = Host(name, addr, base + PORTS_PER_HOST * i, self.dir / name)
        self.pki = self.dir / "pki"
        self.shared = self.dir / "shared"
        self.client_config = self.dir / "client.json"

    def setup(self):
        """Create the PKI, shared storage and every config file."""
        self.pki_run("init", "--cluster", "test")
        for h in self.hosts.values():
            self.pki_run("host", h.name, "--ip", h.address)
        for u in self.users:
            self.pki_run("user", u)
        (self.shared / "guest").mkdir(parents=True)
        for f in ("vmlinuz", "initramfs.cpio.gz"):
            shutil.copy(self.guest / f, self.shared / "guest" / f)
        for h in self.hosts.values():
            h.dir.mkdir()
            assert len(str(h.state_dir)) <= 60, h.state_dir
            self.write_policy(h.name, self.default_policy())
            self.write_host_config(h.name)
        self.write_client_config(self.client_config)
        return self

    def host_config(self, name):
        """The ferryd.json content of host name (relative paths resolve
        against the host's folder)."""
        h = self.hosts[name]
        cfg = {
            "host": h.name,
            "listen": {"address": h.address, "port": h.port},
            "tls": {"ca": "../pki/ca.crt", "cert": f"../pki/hosts/{h.name}.crt",
                    "key": f"../pki/hosts/{h.name}.key"},
            "state_dir": "state",
            "shared_dir": "../shared",
            "accel": self.accel,
            "policy": "policy.json",
            "qemu_user": QEMU_USER,
        }
        cfg.update(self.ferryd_extra)
        return cfg

    def default_policy(self):
        """Every user is an admin, every host a peer, and any VM may move
        between any hosts: tests of other features are not about policy."""
        return {
            "roles": {"admin": list(self.users),
                      "host": list(self.hosts)},
            "rules": [{
                "name": "anything-goes",
                "vms": {"all": True},
                "migrate_out": {"roles": ["admin", "operator", "controller"]},
                "to": {"all": True},
                "accept_from": {"all": True},
                "migrate_in": {"roles": ["admin", "operator", "controller"]},
            }],
        }

    def policy_path(self, name):
        return self.hosts[name].dir / "policy.json"

    def write_policy(self, name, policy):
        """Write host name's policy file (a dict, or raw text); a running
        ferryd reads it at its next reload (SIGHUP or the API)."""
        text = policy if isinstance(policy, str) else json.dumps(policy, indent=2)
        self.policy_path(name).write_text(text + "\n")

    def write_host_config(self, name, **overrides):
        """(Re)write host name's ferryd.json: host_config() plus overrides
        (takes effect at the next start)."""
        cfg = self.host_config(name)
        cfg.update(overrides)
        self.hosts[name].config.write_text(json.dumps(cfg, indent=2) + "\n")
        return cfg

    def write_client_config(self, path, user="admin", pki=None, ca=None):
        """A client.json for user's certificate from pki (default: the
        cluster's), trusting ca (default: the cluster CA), naming every host."""
        pki = Path(pki or self.pki)
        Path(path).write_text(json.dumps({
            "ca": str(ca or self.pki / "ca.crt"),
            "cert": str(pki / "users" / f"{user}.crt"),
            "key": str(pki / "users" / f"{user}.key"),
            "hosts": {h.name: {"address": h.address, "port": h.port}
                      for h in self.hosts.values()},
            "default_host": next(iter(self.hosts)),
        }, indent=2) + "\n")
        return Path(path)

    def pki_run(self, *args, dir=None, check=True):
        """`ferry pki ARGS --dir DIR` (default: the cluster's PKI)."""
        return self.run([self.ferry_bin, "pki", *args, "--dir", str(dir or self.pki)],
                        check=check)

    def user_cert(self, user="admin", pki=None):
        pki = Path(pki or self.pki)
        return (str(pki / "users" / f"{user}.crt"), str(pki / "users" / f"{user}.key"))

    # ---------------------------------------------------------------- hosts

    def host(self, name=None):
        return self.hosts[name or next(iter(self.hosts))]

    def start_host(self, name, wait=True, timeout=HOST_START_TIMEOUT, env=None):
        """Start ferryd for host name (stderr appended to its ferryd.log) and
        wait until `ferry host info` answers. env: variables added to this
        ferryd's environment (e.g. ASAN_OPTIONS)."""
        h = self.hosts[name]
        assert not h.running(), f"{name} is already running"
        h.starts += 1
        h.log_file = open(h.log, "ab")
        h.log_file.write(f"=== test: ferryd start #{h.starts} ===\n".encode())
        h.log_file.flush()
        h.proc = subprocess.Popen(
            [self.ferryd_bin, "--config", str(h.config), "--log-level", self.log_level],
            stdin=subprocess.DEVNULL, stdout=h.log_file, stderr=h.log_file,
            env={**os.environ, **env} if env else None)
        if wait:
            self.wait_host(name, timeout)
        return h

    def wait_host(self, name, timeout=HOST_START_TIMEOUT):
        h = self.hosts[name]
        deadline = time.monotonic() + timeout
        while True:
            r = self.cli("host", "info", host=name, check=False)
            if r.returncode == 0:
                return
            if h.proc.poll() is not None:
                raise AssertionError(f"ferryd {name} exited with {h.proc.returncode}; "
                                     f"log:\n{tail(h.log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"ferryd {name} did not answer within {timeout}s: "
                                     f"{r.stderr.strip()}; log:\n{tail(h.log)}")
            time.sleep(0.1)

    def start_all(self):
        for name in self.hosts:
            self.start_host(name, wait=False)
        for name in self.hosts:
            self.wait_host(name)
        return self

    def is_asan_build(self):
        """Is ferryd built with AddressSanitizer?"""
        return b"__asan_init" in self.ferryd_bin.read_bytes()

    def kill_host(self, name, sig=signal.SIGKILL, timeout=10.0):
        """Send sig to host name's ferryd and wait for it to exit; returns
        its exit status (negative: the signal)."""
        h = self.hosts[name]
        if h.proc is None:
            return None
        if h.proc.poll() is None:
            h.proc.send_signal(sig)
        try:
            rc = h.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            h.proc.kill()
            h.proc.wait()
            raise AssertionError(f"ferryd {name} did not exit within {timeout}s "
                                 f"of signal {sig}")
        h.log_file.close()
        h.proc = None
        return rc

    def stop_host(self, name):
        """Graceful stop (SIGTERM): ferryd exits 0 and leaves its VMs running."""
        return self.kill_host(name, signal.SIGTERM)

    def restart_host(self, name, sig=signal.SIGTERM):
        rc = self.kill_host(name, sig)
        self.start_host(name)
        return rc

    # ---------------------------------------------------------------- CLI

    def run(self, argv, check=True, input=None, timeout=120):
        r = subprocess.run([str(a) for a in argv], input=input, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, argv))} exited {r.returncode}\n"
                                 f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def cli(self, *args, host=None, check=True, config=None, input=None, timeout=120):
        """Run `ferry --config CONFIG [--host HOST] ARGS` -> CompletedProcess
        (text). check=True asserts exit code 0."""
        argv = [self.ferry_bin, "--config", config or self.client_config]
        if host:
            argv += ["--host", host]
        return self.run(argv + list(args), check=check, input=input, timeout=timeout)

    def cli_json(self, *args, host=None):
        """`ferry --json ARGS`, parsed."""
        return json.loads(self.cli("--json", *args, host=host).stdout)

    # ---------------------------------------------------------------- raw API

    def ssl_context(self, cert=_DEFAULT, ca=None, tls_version=ssl.TLSVersion.TLSv1_3):
        """Client context: only tls_version, trusting ca (default: the cluster
        CA), presenting cert=(crt, key) (default: admin; None: no cert)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ctx.maximum_version = tls_version
        ctx.load_verify_locations(str(ca or self.pki / "ca.crt"))
        if cert is _DEFAULT:
            cert = self.user_cert()
        if cert:
            ctx.load_cert_chain(*cert)
        return ctx

    def api(self, host, method, path, body=None, raw_body=None, cert=_DEFAULT, ca=None,
            headers=None, timeout=30, tls_version=ssl.TLSVersion.TLSv1_3):
        """One HTTPS request -> (status, parsed JSON or text). body is
        JSON-encoded; raw_body (str/bytes) is sent as is. A TLS refusal or a
        connection closed without an answer raises TLSRefused."""
        h = self.hosts[host]
        ctx = self.ssl_context(cert, ca, tls_version)
        conn = http.client.HTTPSConnection(h.address, h.port, context=ctx, timeout=timeout)
        hdrs = dict(headers or {})
        data = raw_body
        if body is not None:
            data = json.dumps(body)
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.connect()  # the TLS handshake
            try:
                conn.request(method, path, body=data, headers=hdrs)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
                pass  # the server may answer (e.g. 413) before reading it all
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected,
                http.client.BadStatusLine) as e:
            raise TLSRefused(f"{type(e).__name__}: {e}") from e
        finally:
            conn.close()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def api_ok(self, host, method, path, body=None, expect=(200,)):
        """api() that asserts a status in expect and returns the JSON reply."""
        status, reply = self.api(host, method, path, body=body)
        assert status in expect, f"{method} {path} -> {status}: {reply}"
        return reply

    def host_info(self, host):
        return self.api_ok(host, "GET", "/v1/host")

    def qemu_pids(self, host, uuid=None):
        """Live QEMU processes of host (they work in its run folder),
        optionally only those of the VM with this uuid."""
        run = str(self.hosts[host].state_dir / "run")
        pids = set()
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            pid = int(p.name)
            args = proc_cmdline(pid)
            if not args or b"qemu-system" not in args[0]:
                continue
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cwd == run and pid_alive(pid) and \
                    (uuid is None or qemu_running(pid, uuid)):
                pids.add(pid)
        return pids

    def leftovers(self, host):
        """What host has that its VM list does not account for: migration
        sockets (*.in, *.out) or runtime files of no VM with a live QEMU in
        state/run, pidfiles of dead processes, vms/ folders of no VM, VMs
        still "incoming", and QEMU processes that no VM owns. Needs host's
        ferryd to answer. Returns a list of problems (empty: clean)."""
        h = self.hosts[host]
        problems = []
        vms = self.list_vms(host)
        names = {v["name"] for v in vms}
        live = {v["uuid"]: v["pid"] for v in vms if v.get("pid")}
        for v in vms:
            if v["state"] == "incoming":
                problems.append(f"vm {v['name']} is still incoming")
        run = h.state_dir / "run"
        for f in sorted(run.iterdir()) if run.is_dir() else []:
            stem, _, ext = f.name.rpartition(".")
            if ext in ("in", "out"):
                problems.append(f"migration socket {f}")
            elif stem not in live:
                problems.append(f"runtime file {f} of no VM with a QEMU")
            elif ext == "pid":
                try:
                    pid = int(f.read_text().strip())
                except (OSError, ValueError):
                    pid = 0
                if pid != live[stem] or not qemu_running(pid, stem):
                    problems.append(f"stale pidfile {f} (pid {pid})")
        vdir = h.state_dir / "vms"
        for d in sorted(vdir.iterdir()) if vdir.is_dir() else []:
            if d.name not in names:
                problems.append(f"folder {d} of no VM")
            elif (d / "incoming.json").exists():
                problems.append(f"{d / 'incoming.json'} left behind")
        extra = self.qemu_pids(host) - set(live.values())
        if extra:
            problems.append(f"QEMU processes no VM owns: {sorted(extra)}")
        return problems

    def no_leftovers(self, host, timeout=20):
        """Assert (waiting up to timeout seconds for clean-ups in flight) that
        leftovers(host) is empty."""
        last = []

        def clean():
            last[:] = self.leftovers(host)
            return not last
        try:
            wait_until(clean, timeout, 0.25, f"{host} to have no leftovers")
        except AssertionError:
            raise AssertionError(f"{host} has leftovers: {last}") from None

    # ---------------------------------------------------------------- teardown

    def our_pids(self):
        """Live processes of this cluster: QEMUs named by pidfiles under
        the state dirs, and anything whose command line names the cluster dir
        or that works in it (every ferryd and QEMU, even one whose pidfile
        is gone)."""
        pids = set()
        for h in self.hosts.values():
            for pf in (h.state_dir / "run").glob("*.pid"):
                try:
                    pid = int(pf.read_text().strip())
                except (OSError, ValueError):
                    continue
                if pid_alive(pid) and (pid in self.qemu_pids(h.name) or any(
                        str(self.dir).encode() in a for a in proc_cmdline(pid))):
                    pids.add(pid)
        needle = str(self.dir).encode() + b"/"
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and int(p.name) != os.getpid():
                if any(needle in a for a in proc_cmdline(int(p.name))) and pid_alive(int(p.name)):
                    pids.add(int(p.name))
        for h in self.hosts.values():
            pids |= self.qemu_pids(h.name)
        return pids

    def diagnostics(self, lines=40):
        """Tails of every ferryd log and QEMU log, for failure reports."""
        parts = []
        for h in self.hosts.values():
            parts.append(f"--- {h.log} (last {lines} lines) ---\n{tail(h.log, lines)}")
            for q in sorted((h.state_dir / "vms").glob("*/qemu.log")):
                parts.append(f"--- {q} ---\n{tail(q, 10)}")
        return "\n".join(parts)

    def close(self, keep=None):
        """Kill every ferryd and QEMU of the cluster, check they are gone and
        remove the cluster dir (kept when $FERRY_KEEP=1)."""
        if self.closed:
            return
        self.closed = True
        _live_clusters.remove(self)
        stuck = []
        for name, h in self.hosts.items():
            if h.proc is not None:
                # SIGTERM, so a sanitizer build runs its leak check
                try:
                    self.kill_host(name, signal.SIGTERM, timeout=30)
                except AssertionError:
                    stuck.append(name)
        sanitizer = self.sanitizer_reports()
        leftover = []
        for _ in range(3):
            pids = self.our_pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            leftover = [p for p in pids if not wait_pid_gone(p, 10)]
            if not pids:
                break
        if keep is None:
            keep = os.environ.get("FERRY_KEEP") == "1"
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        assert not leftover, f"processes of {self.dir} still alive: {leftover}"
        assert keep or not self.dir.exists(), f"{self.dir} not removed"
        assert not sanitizer, "sanitizer reports in ferryd logs:\n" + "\n".join(sanitizer)
        assert not stuck, f"ferryd {stuck} did not exit within 30 s of SIGTERM"

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                       "runtime error:", "WARNING: ThreadSanitizer")

    def sanitizer_reports(self):
        """Excerpts of ASan/LSan/UBSan/TSan reports in every ferryd log."""
        found = []
        for h in self.hosts.values():
            try:
                text = h.log.read_text(errors="replace")
            except FileNotFoundError:
                continue
            lines = text.splitlines()
            for i, line in enumerate(lines):
                if any(m in line for m in self.SANITIZER_MARKS):
                    found.append(f"{h.name}: " + "\n".join(lines[i:i + 12]))
                    break
        return found


def live_clusters():
    return list(_live_clusters)


def expect_tls_refused(fn):
    """Run fn(); return the TLSRefused it raised, or fail if it got an answer."""
    try:
        r = fn()
    except TLSRefused as e:
        return e
    raise AssertionError(f"expected a TLS refusal, got an HTTP answer: {r}")


def client_hello(ctx):
    """The first flight of a TLS client with ctx (its ClientHello), made by an
    in-memory handshake: bytes to send slowly, or not at all."""
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[:1] == b"\x16", hello[:8]
    return hello


def kvm_expected():
    """What accel=auto should resolve to here: KVM only with a usable
    /dev/kvm and vmx or svm in the CPU flags (see accel_resolve)."""
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    return os.access("/dev/kvm", os.R_OK | os.W_OK) and ("vmx" in flags or "svm" in flags)
