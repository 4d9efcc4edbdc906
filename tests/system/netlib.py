"""Simulated hosts on a LAN, built from network namespaces, for system
tests and benchmarks that need real VM networking (docs/detection.md).

    with Lan(hosts=("host-a", "host-b"), rate="400mbit") as lan:
        lan.netns["host-a"]        # the namespace of host-a's LAN side
        lan.address["host-a"]      # host-a's address on the LAN (data plane)
        lan.vm_address(0)          # an address for a VM
        lan.observer, lan.observer_address, lan.observer_if

Topology (all names are per Lan; nothing but the namespaces appears in
the caller's namespace):

    ns <tag>-host-a              ns <tag>-sw                ns <tag>-host-b
    br0 10.231.0.1 ── up0 ══ shaped veth ══ pa ┐      ┌ pb ══ shaped veth ══ up0 ── br0 10.231.0.2
     └ taps of host-a's VMs                    br0 (switch)                       └ taps of host-b's VMs
                                                 └ po ── obs0 10.231.0.250  ns <tag>-obs (observer)

Each host is one namespace holding its bridge (br0, with the host's LAN
address) and its uplink to the switch; ferryd stays in the caller's
namespace on loopback, and creates its VMs' taps and its migration data
plane inside the host's namespace (ferryd.json "bridges" and
"migration.netns", see host_config()). The uplinks are shaped with tc tbf
at both ends when rate is given, so a migration leaving a host shares its
uplink with that host's VMs' traffic. The observer (ferry-detect, pingers)
sits on the switch.

Addresses (10.231.0.0/24) exist only inside these namespaces. close()
deletes every namespace (and with them every veth, bridge and tap in them);
namespaces left by a process that died are removed by the next Lan.
"""

import ctypes
import json
import os
import re
import subprocess
import threading
from pathlib import Path

NETNS_DIR = Path("/run/netns")
SUBNET = "10.231.0"
PREFIX_LEN = 24
OBSERVER_HOST = 250
VM_HOST_BASE = 100
CLONE_NEWNET = 0x40000000
_TAG_RE = re.compile(r"^fyl(\d+)x\d+-")

_libc = ctypes.CDLL(None, use_errno=True)
_count = 0


def sh(*argv, check=True):
    """Run a command (argv), return its CompletedProcess; raise with its
    stderr when check and it fails."""
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def ns_run(ns, *argv, check=True):
    """Run argv inside namespace ns (`ip netns exec`)."""
    return sh("ip", "netns", "exec", ns, *argv, check=check)


def in_netns(ns, fn, *args):
    """Call fn(*args) in a thread that entered namespace ns, and return its
    result: a socket made there stays in ns. Exceptions are re-raised."""
    out = {}

    def body():
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            out["v"] = fn(*args)
        except BaseException as e:  # re-raised in the caller
            out["e"] = e
    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out["v"]


def sweep_stale():
    """Delete namespaces of earlier Lans whose process is gone."""
    if not NETNS_DIR.is_dir():
        return
    for p in NETNS_DIR.iterdir():
        m = _TAG_RE.match(p.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            sh("ip", "netns", "del", p.name, check=False)


class Lan:
    def __init__(self, hosts=("host-a", "host-b"), rate=None, burst="64kb",
                 latency="20ms"):
        global _count
        sweep_stale()
        _count += 1
        self.tag = f"fyl{os.getpid()}x{_count}"
        self.hosts = list(hosts)
        self.rate = rate
        self.switch = f"{self.tag}-sw"
        self.observer = f"{self.tag}-obs"
        self.observer_if = "obs0"
        self.observer_address = f"{SUBNET}.{OBSERVER_HOST}"
        self.netns = {h: f"{self.tag}-{h}" for h in self.hosts}
        self.address = {h: f"{SUBNET}.{i + 1}" for i, h in enumerate(self.hosts)}
        self.created = []
        try:
            self._build(burst, latency)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ set-up

    def _ns(self, name):
        sh("ip", "netns", "add", name)
        self.created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _shape(self, ns, dev, burst, latency):
        if self.rate:
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root",
               "tbf", "rate", self.rate, "burst", burst, "latency", latency)

    def _build(self, burst, latency):
        self._ns(self.switch)
        self._bridge(self.switch, None)
        self._ns(self.observer)
        sh("ip", "-n", self.observer, "link", "add", self.observer_if, "type", "veth",
           "peer", "name", "po", "netns", self.switch)
        self._port(self.switch, "po")
        sh("ip", "-n", self.observer, "addr", "add",
           f"{self.observer_address}/{PREFIX_LEN}", "dev", self.observer_if)
        sh("ip", "-n", self.observer, "link", "set", self.observer_if, "up")
        for i, h in enumerate(self.hosts):
            ns, peer = self.netns[h], f"p{i}"
            self._ns(ns)
            self._bridge(ns, f"{self.address[h]}/{PREFIX_LEN}", self.host_mac(i))
            sh("ip", "-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", peer,
               "netns", self.switch)
            self._port(ns, "up0")
            self._port(self.switch, peer)
            self._shape(ns, "up0", burst, latency)
            self._shape(self.switch, peer, burst, latency)
        # hosts know each other's MACs, as with a static ARP table: a
        # migration saturating an uplink would otherwise starve the ARP
        # probes of the data plane's next connection (seen: "No route to
        # host"). VMs' addresses are learnt as usual: migrations move them.
        for i, h in enumerate(self.hosts):
            for j, other in enumerate(self.hosts):
                if i != j:
                    sh("ip", "-n", self.netns[h], "neigh", "replace", self.address[other],
                       "lladdr", self.host_mac(j), "dev", "br0", "nud", "permanent")

    @staticmethod
    def host_mac(i):
        """The fixed MAC of host i's bridge (so ports never change it)."""
        return f"02:66:72:00:00:{i + 1:02x}"

    def _bridge(self, ns, addr, mac=None):
        # forward at once (no STP listening/learning delay)
        sh("ip", "-n", ns, "link", "add", "br0", "type", "bridge", "forward_delay", "0",
           "stp_state", "0")
        if mac:
            sh("ip", "-n", ns, "link", "set", "br0", "address", mac)
        if addr:
            sh("ip", "-n", ns, "addr", "add", addr, "dev", "br0")
        sh("ip", "-n", ns, "link", "set", "br0", "up")

    def _port(self, ns, dev):
        sh("ip", "-n", ns, "link", "set", dev, "master", "br0")
        sh("ip", "-n", ns, "link", "set", dev, "up")

    # ------------------------------------------------------------ use

    def vm_address(self, k):
        """The LAN address of the k-th VM (k from 0)."""
        return f"{SUBNET}.{VM_HOST_BASE + k}"

    def vm_cmdline(self, k, probe=False, interval_ms=50):
        """Kernel parameters giving the test guest the k-th VM address (and,
        with probe, netprobe pinging the observer every interval_ms)."""
        s = f"ferry.ip={self.vm_address(k)}/{PREFIX_LEN}"
        if probe:
            s += f" ferry.probe={self.observer_address}:{interval_ms}"
        return s

    def host_config(self, host, bridge="lan"):
        """ferryd.json fields for host: its VM bridge and data plane in its
        namespace."""
        return {
            "bridges": {bridge: {"device": "br0", "netns": self.netns[host]}},
            "migration": {"netns": self.netns[host],
                          "advertise_address": self.address[host]},
        }

    def ping(self, addr, count=1, timeout=2, ns=None):
        """One `ping` from the observer (or ns); True if answered."""
        r = ns_run(ns or self.observer, "busybox", "ping", "-c", str(count), "-W", str(timeout),
                   "-q", addr, check=False)
        return r.returncode == 0

    def taps(self, host):
        """Names of the taps on host's bridge."""
        out = sh("ip", "-n", self.netns[host], "-o", "link", "show", "master", "br0").stdout
        return [m for m in re.findall(r"^\d+: ([^:@]+)", out, re.M) if m != "up0"]

    def rx_bytes(self, host):
        """Bytes host's uplink has received."""
        out = sh("ip", "-n", self.netns[host], "-j", "-s", "link", "show", "up0").stdout
        return json.loads(out)[0]["stats64"]["rx"]["bytes"]

    def close(self):
        """Delete every namespace this Lan created (their devices go with
        them). Safe to call twice."""
        for ns in reversed(self.created):
            sh("ip", "netns", "del", ns, check=False)
        self.created = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def checked_lan(request, **kw):
    """A Lan(**kw) for one test (request: pytest's), removed after it with
    a check that it left no namespace behind."""
    lan = Lan(**kw)

    def close():
        lan.close()
        # only this Lan's: other processes may make and remove their own
        left = {n for n in namespaces() if n.startswith(lan.tag + "-")}
        assert not left, f"namespaces left behind: {left}"
    request.addfinalizer(close)
    return lan


def namespaces():
    """Names of the namespaces in /run/netns."""
    return sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []
