"""A throw-away etcd cluster on loopback with mutual TLS, for the tests of
the etcd client and of everything built on it (HA, controller, demo).

    with etcdlib.EtcdCluster(n=3) as ec:      # started and healthy
        ec.endpoints                         # ["https://127.0.1.1:PORT", ...]
        ec.client_cert                       # (ca, cert, key) for clients
        ec.kill(0)                           # kill -9 member 0
        ec.restart(0)                        # start it again, wait healthy
        ec.stop(1); ec.cont(1)               # SIGSTOP / SIGCONT
        ec.leader()                          # index of the raft leader
        ec.move_leader(2)                    # make member 2 the leader
        ec.etcdctl("get", "/ferry", "--prefix")

In pytest, conftest's `make_etcd(n=3, pki=None)` fixture gives a started
cluster that is closed after the test.

Members are etcd-0, etcd-1, ... on 127.0.1.1, 127.0.1.2, ... (distinct
loopback hosts), each with a client and a peer port from one block picked
like ferrylib's. Their certificates come from `ferry pki` (a CA of their
own in DIR/pki unless `pki=` names an existing one, e.g. a ferrylib
Cluster's): `ferry pki host etcd-N --ip ADDR` per member (serverAuth and
clientAuth, used for the client and the peer URLs), and one client
certificate `etcd-client`. Member certificates also carry 127.0.0.1, the
source address of their peer connections on loopback. DIR is a temp dir; close() kills every member,
checks it is gone and removes DIR (unless FERRY_KEEP=1).
"""

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
from pathlib import Path

import ferrylib

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
START_TIMEOUT = 30.0  # member start -> healthy, generous on a loaded host


class Member:
    def __init__(self, cluster, index, address, client_port, peer_port):
        self.cluster = cluster
        self.index = index
        self.name = f"etcd-{index}"
        self.address = address
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = cluster.dir / self.name
        self.log = cluster.dir / f"{self.name}.log"
        self.proc = None

    @property
    def client_url(self):
        return f"https://{self.address}:{self.client_port}"

    @property
    def peer_url(self):
        return f"https://{self.address}:{self.peer_port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def argv(self, state):
        pki = self.cluster.pki
        cert, key = pki / "hosts" / f"{self.name}.crt", pki / "hosts" / f"{self.name}.key"
        return [
            ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.cluster.initial_cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.cluster.token,
            "--cert-file", str(cert), "--key-file", str(key),
            "--trusted-ca-file", str(pki / "ca.crt"), "--client-cert-auth",
            "--peer-cert-file", str(cert), "--peer-key-file", str(key),
            "--peer-trusted-ca-file", str(pki / "ca.crt"),
            "--peer-client-cert-auth",
        ]

    def start(self, state):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(state), stdout=log,
                                         stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    def request(self, path, body=None, timeout=2.0):
        """POST (or GET without body) to this member's gateway with the
        client certificate; (status, parsed JSON or None)."""
        conn = http.client.HTTPSConnection(self.address, self.client_port,
                                           context=self.cluster.ssl_context(),
                                           timeout=timeout)
        try:
            if body is None:
                conn.request("GET", path)
            else:
                conn.request("POST", path, body=json.dumps(body),
                             headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            try:
                return resp.status, json.loads(data)
            except ValueError:
                return resp.status, None
        finally:
            conn.close()

    def healthy(self):
        """Does the member answer /health with a quorum behind it?"""
        if not self.running():
            return False
        try:
            status, body = self.request("/health", timeout=1.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200 and bool(body) and body.get("health") == "true"


class EtcdCluster:
    """n etcd members on loopback with mutual TLS (see module doc)."""

    def __init__(self, n=3, ferry_build=None, pki=None, base_dir=None):
        self.n = n
        self.build = Path(ferry_build) if ferry_build else ferrylib.build_dir()
        self.dir = Path(base_dir or tempfile.mkdtemp(prefix="ferry-etcd-"))
        self.pki = Path(pki) if pki else self.dir / "pki"
        self.token = self.dir.name
        addrs = [f"127.0.1.{i + 1}" for i in range(n)]
        base = ferrylib.alloc_ports(addrs, 2 * n)
        self.members = [Member(self, i, a, base + 2 * i, base + 2 * i + 1)
                        for i, a in enumerate(addrs)]
        self.initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        self._ctx = None

    # -- set-up and tear-down --------------------------------------------

    def ferry(self, *args):
        subprocess.run([str(self.build / "ferry"), *args], check=True,
                       stdout=subprocess.DEVNULL)

    def make_pki(self):
        if not (self.pki / "ca.crt").exists():
            self.ferry("pki", "init", "--dir", str(self.pki), "--cluster", "etcd-test")
        for m in self.members:
            # etcd checks a peer's certificate against the address the peer
            # connects from, which on loopback is 127.0.0.1 (the kernel's
            # source address for 127.0.1.N); without it etcd would also try
            # to resolve the DNS name through the system's resolver
            if not (self.pki / "hosts" / f"{m.name}.crt").exists():
                self.ferry("pki", "host", m.name, "--dir", str(self.pki),
                           "--ip", m.address, "--ip", "127.0.0.1")
        if not (self.pki / "hosts" / "etcd-client.crt").exists():
            self.ferry("pki", "host", "etcd-client", "--dir", str(self.pki),
                       "--ip", "127.0.0.1")

    def start(self):
        """Make the PKI, start every member, wait until all are healthy."""
        self.make_pki()
        for m in self.members:
            m.start("new")
        self.wait_healthy()
        return self

    def close(self):
        for m in self.members:
            if m.proc is not None:
                if m.proc.poll() is None:
                    m.proc.send_signal(signal.SIGCONT)
                    m.proc.kill()
                m.proc.wait(timeout=10)
                assert not ferrylib.pid_alive(m.proc.pid), f"{m.name} survived"
        if os.environ.get("FERRY_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()

    # -- what clients need -----------------------------------------------

    @property
    def endpoints(self):
        return [m.client_url for m in self.members]

    @property
    def client_cert(self):
        """(ca, cert, key) paths of the client identity etcd-client."""
        h = self.pki / "hosts"
        return (str(self.pki / "ca.crt"), str(h / "etcd-client.crt"),
                str(h / "etcd-client.key"))

    def ssl_context(self):
        if self._ctx is None:
            ca, cert, key = self.client_cert
            ctx = ssl.create_default_context(cafile=ca)
            ctx.load_cert_chain(cert, key)
            self._ctx = ctx
        return self._ctx

    def ferryd_etcd_section(self, **extra):
        """The "etcd" object of a ferryd.json for this cluster."""
        ca, cert, key = self.client_cert
        return {"endpoints": self.endpoints, "ca": ca, "cert": cert,
                "key": key, **extra}

    # -- faults ----------------------------------------------------------

    def kill(self, i, sig=signal.SIGKILL):
        """Send sig (default SIGKILL) to member i; for SIGKILL wait until it
        is gone."""
        m = self.members[i]
        m.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            m.proc.wait(timeout=10)

    def stop(self, i):
        """Freeze member i (SIGSTOP): its sockets stay open, it answers
        nothing."""
        self.kill(i, signal.SIGSTOP)
        ferrylib.wait_until(lambda: ferrylib.proc_state(self.members[i].pid) == "T",
                            5, 0.01, f"{self.members[i].name} stopped")

    def cont(self, i):
        self.kill(i, signal.SIGCONT)

    def restart(self, i):
        """Start member i again on its data dir (after kill) and wait until
        every running member is healthy."""
        m = self.members[i]
        assert not m.running(), f"{m.name} is still running"
        m.start("existing")
        self.wait_healthy()

    def wait_healthy(self, timeout=START_TIMEOUT):
        """Wait until every running member answers /health with a leader."""
        try:
            ferrylib.wait_until(
                lambda: all(m.healthy() for m in self.members if m.proc is not None
                            and m.running()),
                timeout, 0.1, "etcd members healthy")
        except AssertionError:
            for m in self.members:
                print(f"--- {m.name} log:\n{ferrylib.tail(m.log)}")
            raise

    def leader(self):
        """Index of the member that is the raft leader (asked of any
        running member)."""
        ids = {}
        leader = None
        for m in self.members:
            if not m.running():
                continue
            status, body = m.request("/v3/maintenance/status", {})
            if status != 200:
                continue
            ids[body["header"]["member_id"]] = m.index
            leader = body.get("leader", leader)
        assert leader in ids, "no member knows a leader"
        return ids[leader]

    def member_id(self, i):
        """Member i's raft id (decimal string, as the gateway sends it)."""
        status, body = self.members[i].request("/v3/maintenance/status", {})
        assert status == 200, body
        return body["header"]["member_id"]

    def move_leader(self, i):
        """Make member i the raft leader (no-op if it is) and wait until
        every running member agrees."""
        lead = self.leader()
        if lead != i:
            self.etcdctl("move-leader", format(int(self.member_id(i)), "x"),
                         member=lead)
        ferrylib.wait_until(lambda: self.leader() == i, 10, 0.05,
                            f"etcd-{i} leading")

    def etcdctl(self, *args, member=None, check=True):
        """Run etcdctl (API v3) against every member (or one) with the
        client certificate; returns the CompletedProcess."""
        ca, cert, key = self.client_cert
        eps = [self.members[member].client_url] if member is not None else self.endpoints
        return subprocess.run(
            [ETCDCTL, "--endpoints", ",".join(eps), "--cacert", ca, "--cert", cert,
             "--key", key, "--dial-timeout", "2s", "--command-timeout", "5s", *args],
            env={**os.environ, "ETCDCTL_API": "3"}, check=check,
            capture_output=True, text=True)
