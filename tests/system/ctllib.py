"""Controllers against simulated hosts, for the controller's fail-over test
(test_controller_ha.py) and its scale benchmark (bench/controller_bench.py).

    with ctllib.CtlCluster(controllers=2, hosts=20, etcd=3) as cc:
        cc.start_sim(); cc.start_controller(0); cc.start_controller(1)
        cc.status(0)             # GET /v1/balance on controller 0
        cc.leader()              # index of the leading controller, or None
        cc.kill_controller(0)    # kill -9
        cc.sim_log()             # the simulated hosts' request log

Controllers are ferryd in controller mode (ctl-1, ctl-2, ... on 127.0.2.1,
127.0.2.2, ...), with a PKI of their own (ferry pki), polling the hosts of
one ferry-simhost process on 127.0.3.1 (tests/sim/simhost.c), with an etcd
cluster of `etcd` members (tests/system/etcdlib.py) issued from the same
CA, or none (etcd=0: one controller alone). DIR is a temp dir; close()
kills everything it started (by pid) and removes DIR unless FERRY_KEEP=1.
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
from pathlib import Path

import etcdlib
import ferrylib

SIM_ADDRESS = "127.0.3.1"


def proc_cpu_s(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class CtlCluster:
    def __init__(self, controllers=1, hosts=20, vms=10, etcd=0, mode="auto",
                 interval_s=2, params=None, poll_timeout_s=4, mig_ms=3000,
                 stalled=0, down=0, build=None, lease_ttl_s=None, idle_s=None):
        self.build = Path(build) if build else ferrylib.build_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-ctl-", dir="/tmp"))
        self.pki = self.dir / "pki"
        self.nhosts, self.vms = hosts, vms
        self.stalled, self.down = stalled, down
        self.mode, self.interval_s = mode, interval_s
        self.params = params or {}
        self.poll_timeout_s = poll_timeout_s
        self.mig_ms = mig_ms
        self.lease_ttl_s = lease_ttl_s
        self.idle_s = idle_s
        self.netcd = etcd
        self.etcd = None
        self.sim = None
        self.sim_out = None
        self.names = [f"ctl-{i + 1}" for i in range(controllers)]
        self.addrs = [f"127.0.2.{i + 1}" for i in range(controllers)]
        base = ferrylib.alloc_ports(self.addrs + [SIM_ADDRESS], 2 * controllers + 3)
        self.ports = [base + 2 * i for i in range(controllers)]
        self.sim_port = base + 2 * controllers
        self.stalled_port = self.sim_port + 1
        self.down_port = self.sim_port + 2   # nothing listens there
        self.procs = [None] * controllers
        self._ctx = None

    # -- set-up ------------------------------------------------------------

    def ferry(self, *args):
        subprocess.run([str(self.build / "ferry"), *args], check=True,
                       stdout=subprocess.DEVNULL)

    def setup(self):
        self.ferry("pki", "init", "--dir", str(self.pki), "--cluster", "ctl-test")
        for name, addr in zip(self.names, self.addrs):
            self.ferry("pki", "host", name, "--dir", str(self.pki), "--ip", addr,
                       "--ip", "127.0.0.1")
        for u in ("admin", "controller"):
            self.ferry("pki", "user", u, "--dir", str(self.pki))
        (self.dir / "shared").mkdir()
        if self.netcd:
            (self.dir / "etcd").mkdir()
            self.etcd = etcdlib.EtcdCluster(n=self.netcd, ferry_build=self.build,
                                            pki=self.pki,
                                            base_dir=self.dir / "etcd")
            self.etcd.start()
        for i in range(len(self.names)):
            self.write_config(i)
        return self

    def write_config(self, i, **balancer):
        d = self.dir / self.names[i]
        (d / "state").mkdir(parents=True, exist_ok=True)
        (d / "policy.json").write_text(json.dumps({
            "roles": {"admin": ["admin"], "controller": ["controller"]},
            "rules": [{"name": "anything", "vms": {"all": True},
                       "migrate_out": {"roles": ["controller"]},
                       "to": {"all": True}, "accept_from": {"all": True},
                       "migrate_in": {"roles": ["controller"]}}],
        }))
        cfg = {
            "host": self.names[i],
            "listen": {"address": self.addrs[i], "port": self.ports[i]},
            "tls": {"ca": "../pki/ca.crt", "cert": f"../pki/hosts/{self.names[i]}.crt",
                    "key": f"../pki/hosts/{self.names[i]}.key"},
            "state_dir": "state", "shared_dir": "../shared", "accel": "tcg",
            "policy": "policy.json", "qemu_user": ferrylib.QEMU_USER,
            "balancer": {"mode": self.mode, "interval_s": self.interval_s,
                         "cert": "../pki/users/controller.crt",
                         "key": "../pki/users/controller.key",
                         "hosts_file": "../hosts.json",
                         "poll_timeout_s": self.poll_timeout_s,
                         "params": self.params, **balancer},
        }
        if self.etcd:
            cfg["etcd"] = {"endpoints": self.etcd.endpoints,
                           "ca": "../pki/ca.crt",
                           "cert": f"../pki/hosts/{self.names[i]}.crt",
                           "key": f"../pki/hosts/{self.names[i]}.key"}
            if self.lease_ttl_s:
                cfg["etcd"]["lease_ttl_s"] = self.lease_ttl_s
        (d / "ferryd.json").write_text(json.dumps(cfg, indent=1))

    def start_sim(self, timeout=120):
        """Start ferry-simhost; returns once it listens and wrote the
        hosts file."""
        self.sim_out = open(self.dir / "sim.out", "ab")
        argv = [str(self.build / "tests" / "sim" / "ferry-simhost"),
                "--pki", str(self.pki), "--address", SIM_ADDRESS,
                "--port", str(self.sim_port), "--hosts", str(self.nhosts),
                "--vms", str(self.vms), "--mig-ms", str(self.mig_ms),
                "--hosts-file", str(self.dir / "hosts.json"),
                "--log", str(self.dir / "sim.log")]
        if self.stalled:
            argv += ["--stalled", str(self.stalled), "--stalled-port",
                     str(self.stalled_port)]
        if self.down:
            argv += ["--down", str(self.down), "--down-port", str(self.down_port)]
        if self.idle_s:
            argv += ["--idle-s", str(self.idle_s)]
        self.sim = subprocess.Popen(argv, stdout=self.sim_out,
                                    stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        ferrylib.wait_until(lambda: b"ready" in (self.dir / "sim.out").read_bytes()
                            or self.sim.poll() is not None, timeout, 0.1,
                            "ferry-simhost ready")
        assert self.sim.poll() is None, (self.dir / "sim.out").read_text()

    def start_controller(self, i, wait=True):
        log = open(self.dir / f"{self.names[i]}.log", "ab")
        self.procs[i] = subprocess.Popen(
            [str(self.build / "ferryd"), "--config",
             str(self.dir / self.names[i] / "ferryd.json"), "--log-level", "info"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        if wait:
            ferrylib.wait_until(lambda: self._answers(i), 60, 0.1,
                                f"{self.names[i]} answering")

    def _answers(self, i):
        assert self.procs[i].poll() is None, self.log(i)
        try:
            return self.api(i, "GET", "/v1/balance")[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def kill_controller(self, i, sig=signal.SIGKILL):
        p = self.procs[i]
        p.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            p.wait(timeout=60)
            self.procs[i] = None

    # -- what tests ask ----------------------------------------------------

    def ssl_context(self):
        if self._ctx is None:
            ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
            ctx.load_cert_chain(str(self.pki / "users" / "admin.crt"),
                                str(self.pki / "users" / "admin.key"))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            self._ctx = ctx
        return self._ctx

    def api(self, i, method, path, body=None, timeout=30):
        conn = http.client.HTTPSConnection(self.addrs[i], self.ports[i],
                                           context=self.ssl_context(),
                                           timeout=timeout)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            conn.close()

    def status(self, i, hosts=False):
        st, body = self.api(i, "GET", "/v1/balance" + ("" if hosts else "?hosts=0"))
        assert st == 200, body
        return body

    def leader(self):
        """Index of the controller that says it leads (None if none)."""
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                try:
                    if self.status(i).get("role") == "leader":
                        return i
                except (OSError, http.client.HTTPException):
                    pass
        return None

    def cli(self, i, *args):
        """`ferry ARGS` against controller i as admin -> CompletedProcess."""
        cfg = self.dir / "client.json"
        cfg.write_text(json.dumps({
            "ca": str(self.pki / "ca.crt"),
            "cert": str(self.pki / "users" / "admin.crt"),
            "key": str(self.pki / "users" / "admin.key"),
            "hosts": {self.names[i]: {"address": self.addrs[i], "port": self.ports[i]}},
            "default_host": self.names[i], "controller": self.names[i]}))
        return subprocess.run([str(self.build / "ferry"), "--config", str(cfg), *args],
                              capture_output=True, text=True, timeout=60)

    def sim_log(self):
        path = self.dir / "sim.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def log(self, i):
        return ferrylib.tail(self.dir / f"{self.names[i]}.log", 60)

    # -- tear-down ---------------------------------------------------------

    def sanitizer_reports(self):
        """Excerpts of ASan/LSan/UBSan reports in the controllers' logs."""
        found = []
        for name in self.names:
            path = self.dir / f"{name}.log"
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            for i, line in enumerate(lines):
                if any(m in line for m in ferrylib.Cluster.SANITIZER_MARKS):
                    found.append(f"{name}: " + "\n".join(lines[i:i + 12]))
                    break
        return found

    def close(self):
        """Stop every controller with SIGTERM (a sanitizer build runs its
        leak check), kill what remains, and fail on sanitizer reports or a
        controller that does not stop."""
        stuck = []
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    stuck.append(self.names[i])
                    p.kill()
                    p.wait(timeout=30)
        sanitizer = self.sanitizer_reports()
        if self.sim is not None and self.sim.poll() is None:
            self.sim.kill()
            self.sim.wait(timeout=30)
        if self.sim_out:
            self.sim_out.close()
        if self.etcd:
            self.etcd.close()
        if os.environ.get("FERRY_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        assert not sanitizer, "sanitizer reports:\n" + "\n".join(sanitizer)
        assert not stuck, f"controllers {stuck} did not stop within 30 s of SIGTERM"

    def __enter__(self):
        try:
            return self.setup()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()


def wait_for(pred, timeout, what, interval=0.2):
    """ferrylib.wait_until returning the predicate's value."""
    out = []

    def check():
        v = pred()
        if v:
            out.append(v)
        return bool(v)
    ferrylib.wait_until(check, timeout, interval, what)
    return out[0]


def now():
    return time.monotonic()
