#!/usr/bin/python3
"""simhost.py - simulated ferryd hosts for scale tests: one asyncio process
serves many hosts, each on its own port, over mutual TLS 1.3 with a
certificate from `ferry pki`, with synthetic data.

It answers the read endpoints the dashboard and the balancer use
(GET /v1/host, /v1/vms, /v1/vms/NAME, /v1/load, /v1/migrations,
/v1/migrations/ID, /v1/audit) and the actions (POST /v1/vms/NAME/start|stop|
pause|resume|migrate, /v1/migrations/ID/cancel, /v1/host/drain|undrain). A
migration progresses over `mig_seconds` through the same record fields as
ferryd's (docs/api.md), then moves the VM to the destination host of the
same simulation. Errors use ferryd's {"error": {"code", "message"}}.

Hosts share one certificate (`ferry pki host sim --ip ADDRESS`): clients
check the IP address, so one certificate serves thousands of hosts. A
"stalled" host accepts TCP connections and never answers (to test
deadlines).

As a module:
    sim = SimCluster(ca, cert, key, nhosts=50, vms_per_host=10).start()
    sim.hosts -> [SimHost(name, address, port)], sim.stop()
As a program:
    simhost.py --ca CA --cert CRT --key KEY --hosts 50 --vms 10 \
        --base-port 30000 [--stalled 1] [--client-config OUT.json ...]
"""

import argparse
import asyncio
import json
import math
import random
import ssl
import threading
import time
import uuid as uuidlib

MiB = 1 << 20
HEADER_MAX = 16 * 1024
BODY_MAX = 64 * 1024


def now_ms():
    return int(time.time() * 1000)


class SimVM:
    def __init__(self, name, memory_mib, vcpus, labels, rnd):
        self.name = name
        self.uuid = str(uuidlib.UUID(int=rnd.getrandbits(128), version=4))
        self.memory_mib = memory_mib
        self.vcpus = vcpus
        self.labels = labels
        self.state = "running"
        self.started = now_ms() - rnd.randrange(0, 86400_000)
        self.cpu = rnd.uniform(0.05, 0.9) * vcpus
        self.dirty = rnd.uniform(0.5, 40.0)
        self.migration = None  # id of an active migration

    def json(self):
        o = {"name": self.name, "uuid": self.uuid, "memory_mib": self.memory_mib,
             "vcpus": self.vcpus, "labels": self.labels, "state": self.state,
             "pid": 0 if self.state == "shutoff" else 1000 + hash(self.name) % 30000}
        if self.state != "shutoff":
            o["uptime_s"] = (now_ms() - self.started) // 1000
        if self.migration:
            o["active_migration"] = self.migration
        return o


class SimHost:
    def __init__(self, cluster, index, name, address, port, stalled=False):
        self.cluster = cluster
        self.index = index
        self.name = name
        self.address = address
        self.port = port
        self.stalled = stalled
        self.vms = {}
        self.migrations = {}   # id -> record (source and destination roles)
        self.draining = False
        self.cpus = 32
        self.memory_total_mib = 256 * 1024
        self.requests = 0

    # ------------------------------------------------------------ data

    def committed(self):
        return sum(v.memory_mib for v in self.vms.values() if v.state != "shutoff")

    def cpu_util(self):
        t = time.time() / 20.0 + self.index
        busy = sum(v.cpu for v in self.vms.values() if v.state == "running")
        return max(0.0, min(1.0, busy / self.cpus * (0.8 + 0.2 * math.sin(t))))

    def host_json(self):
        running = sum(1 for v in self.vms.values() if v.state != "shutoff")
        return {"name": self.name, "version": "sim", "accel": "sim",
                "address": self.address, "port": self.port, "cpus": self.cpus,
                "memory_total_mib": self.memory_total_mib,
                "memory_available_mib": self.memory_total_mib - self.committed(),
                "memory_committed_mib": self.committed(),
                "vms_defined": len(self.vms), "vms_active": running}

    def load_json(self):
        rnd = random.random
        vms = []
        for v in sorted(self.vms.values(), key=lambda v: v.name):
            run = v.state == "running"
            vms.append({"name": v.name, "uuid": v.uuid, "state": v.state,
                        "cpu_cores": v.cpu * (0.9 + 0.2 * rnd()) if run else None,
                        "memory_mib": v.memory_mib,
                        "dirty_mibps": v.dirty * (0.8 + 0.4 * rnd()) if run else None,
                        "labels": v.labels, "migrating": bool(v.migration)})
        return {"host": self.name, "ts": now_ms(), "cpus": self.cpus,
                "cpu_util": self.cpu_util(),
                "vm_cpu_cores": sum(x["cpu_cores"] or 0 for x in vms),
                "memory_total_mib": self.memory_total_mib,
                "memory_committed_mib": self.committed(),
                "memory_free_mib": self.memory_total_mib - self.committed(),
                "draining": self.draining, "vms": vms}

    # ------------------------------------------------------------ routes

    def handle(self, method, path, body):
        """-> (status, reply dict)."""
        self.requests += 1
        self.cluster.advance()
        parts = path.split("?", 1)[0].strip("/").split("/")
        if parts[:1] != ["v1"]:
            return err(404, "not_found", "no such route")
        p = parts[1:]
        if method == "GET":
            if p == ["host"]:
                return 200, self.host_json()
            if p == ["vms"]:
                return 200, {"vms": [v.json() for v in sorted(self.vms.values(), key=lambda v: v.name)]}
            if len(p) == 2 and p[0] == "vms":
                v = self.vms.get(p[1])
                return (200, v.json()) if v else err(404, "not_found", f"no VM named {p[1]} on this host")
            if p == ["load"]:
                return 200, self.load_json()
            if p == ["migrations"]:
                recs = sorted(self.migrations.values(), key=lambda r: -r["started_at"])
                return 200, {"migrations": [r for r in recs if r["outcome"] == "running"] +
                             [r for r in recs if r["outcome"] != "running"]}
            if len(p) == 2 and p[0] == "migrations":
                r = self.migrations.get(p[1])
                return (200, r) if r else err(404, "not_found", "no such migration")
            if p == ["audit"]:
                return 200, {"records": [], "head": {"seq": 0, "hash": "0" * 64}}
            return err(404, "not_found", "no such route")
        if method != "POST":
            return err(405, "method_not_allowed", "method not allowed")
        if p in (["host", "drain"], ["host", "undrain"]):
            self.draining = p[1] == "drain"
            return 200, {"host": self.name, "draining": self.draining}
        if len(p) == 3 and p[0] == "migrations" and p[2] == "cancel":
            r = self.migrations.get(p[1])
            if not r or r["outcome"] != "running":
                return err(409, "conflict", "the migration is not running")
            self.cluster.end_migration(r["id"], "cancelled", "cancelled by request")
            return 202, self.migrations[p[1]]
        if len(p) == 3 and p[0] == "vms":
            v = self.vms.get(p[1])
            if not v:
                return err(404, "not_found", f"no VM named {p[1]} on this host")
            if v.migration:
                return err(409, "conflict", f"vm {v.name} is migrating")
            verb = p[2]
            want = {"start": ("shutoff", "running"), "stop": (None, "shutoff"),
                    "pause": ("running", "paused"), "resume": ("paused", "running")}
            if verb in want:
                need, new = want[verb]
                if (need and v.state != need) or (verb == "stop" and v.state == "shutoff"):
                    return err(409, "conflict", f"vm {v.name} is {v.state}")
                v.state = new
                if verb == "start":
                    v.started = now_ms()
                return (202 if verb == "stop" else 200), v.json()
            if verb == "migrate":
                return self.cluster.start_migration(self, v, body or {})
        return err(404, "not_found", "no such route")


def err(status, code, message):
    return status, {"error": {"code": code, "message": message}}


class SimCluster:
    """nhosts simulated hosts named sim-000, ... on address, ports from
    base_port, each with vms_per_host VMs (vm-HHH-NN); stalled extra hosts
    (named stall-0, ...) accept TCP and never answer."""

    def __init__(self, ca, cert, key, nhosts=50, vms_per_host=10, address="127.0.0.1",
                 base_port=30000, stalled=0, mig_seconds=8.0, seed=1):
        self.ca, self.cert, self.key = ca, cert, key
        self.address = address
        self.mig_seconds = mig_seconds
        self.rnd = random.Random(seed)
        self.hosts = []
        for i in range(nhosts):
            h = SimHost(self, i, f"sim-{i:03d}", address, base_port + i)
            for k in range(vms_per_host):
                name = f"vm-{i:03d}-{k:02d}"
                h.vms[name] = SimVM(name, self.rnd.choice([512, 1024, 2048, 4096]),
                                    self.rnd.choice([1, 2, 4]),
                                    {"tier": self.rnd.choice(["web", "db", "batch"])}, self.rnd)
            self.hosts.append(h)
        for j in range(stalled):
            self.hosts.append(SimHost(self, nhosts + j, f"stall-{j}", address,
                                      base_port + nhosts + j, stalled=True))
        self.by_name = {h.name: h for h in self.hosts}
        self.loop = None
        self.thread = None
        self.servers = []
        self.stall_conns = []
        self.lock = threading.Lock()

    # ------------------------------------------------------------ migrations

    def start_migration(self, src, vm, body):
        to = body.get("to")
        dst = self.by_name.get(to)
        if not isinstance(to, str) or dst is None or dst is src or dst.stalled:
            return err(400, "invalid_request", f"no destination host {to!r}")
        if dst.draining:
            return err(409, "conflict", f"host {to} is draining")
        mid = str(uuidlib.uuid4())
        t = now_ms()
        rec = {"id": mid, "role": "source", "vm": vm.name, "uuid": vm.uuid,
               "source": src.name, "destination": dst.name, "requester": "sim",
               "mode": body.get("mode", "live"), "insecure": False, "channels": 1,
               "max_downtime_ms": 300, "bandwidth_mibps": 0, "max_time_s": 300,
               "started_at": t, "phase": "precopy", "outcome": "running",
               "progress": {}, "escalation": []}
        src.migrations[mid] = rec
        dst.migrations[mid] = dict(rec, role="destination", progress={})
        vm.migration = mid
        self.progress(rec, vm)
        return 202, rec

    def progress(self, rec, vm):
        el = now_ms() - rec["started_at"]
        frac = min(1.0, el / (self.mig_seconds * 1000.0))
        total = vm.memory_mib * MiB
        rec["progress"] = {
            "status": "active", "elapsed_ms": el, "ram_total": total,
            "ram_transferred": int(total * frac * 1.1),
            "ram_remaining": int(total * (1 - frac)), "percent": round(100 * frac, 1),
            "mbps": 8.0 * total / MiB * 1.048576 / self.mig_seconds,
            "dirty_pages_rate": int(vm.dirty * 256), "iteration": 1 + int(frac * 4),
            "expected_downtime_ms": 40, "throttle_pct": 0,
            "wire_bytes": int(total * frac * 1.1)}
        rec["phase"] = "precopy" if frac < 0.97 else "switchover"

    def end_migration(self, mid, outcome, error=None):
        for h in self.hosts:
            rec = h.migrations.get(mid)
            if not rec or rec["outcome"] != "running":
                continue
            t = now_ms()
            rec.update(outcome=outcome, ended_at=t, total_ms=t - rec["started_at"],
                       phase="done")
            if outcome == "completed":
                rec.update(downtime_ms=42, qemu_downtime_ms=30,
                           ram_bytes=rec["progress"].get("ram_total", 0),
                           wire_bytes=rec["progress"].get("wire_bytes", 0),
                           mean_mbps=rec["progress"].get("mbps", 0), iterations=4)
            if error:
                rec["error"] = error
        for h in self.hosts:
            for v in list(h.vms.values()):
                if v.migration == mid:
                    v.migration = None
                    rec = h.migrations[mid]
                    if outcome == "completed" and rec["role"] == "source":
                        del h.vms[v.name]
                        self.by_name[rec["destination"]].vms[v.name] = v

    def advance(self):
        """Move running migrations along (called on every request)."""
        for h in self.hosts:
            for rec in list(h.migrations.values()):
                if rec["role"] != "source" or rec["outcome"] != "running":
                    continue
                vm = h.vms.get(rec["vm"])
                if vm is None:
                    continue
                self.progress(rec, vm)
                if rec["progress"]["percent"] >= 100:
                    self.end_migration(rec["id"], "completed")

    # ------------------------------------------------------------ serving

    def ssl_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(self.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def serve_conn(self, host, reader, writer):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if len(head) > HEADER_MAX:
                raise ValueError("headers too large")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for ln in lines[1:]:
                if ln.lower().startswith("content-length:"):
                    length = int(ln.split(":", 1)[1])
            if length > BODY_MAX:
                raise ValueError("body too large")
            body = None
            if length:
                raw = await asyncio.wait_for(reader.readexactly(length), 10)
                body = json.loads(raw) if raw.strip() else None
            with self.lock:
                status, reply = host.handle(method, path, body)
            data = json.dumps(reply).encode()
            writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (status, len(data)) + data)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError,
                ssl.SSLError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def stall_conn(self, reader, writer):
        self.stall_conns.append(writer)  # never answered; closed at stop

    async def _start(self):
        ctx = self.ssl_context()
        for h in self.hosts:
            if h.stalled:
                srv = await asyncio.start_server(self.stall_conn, h.address, h.port)
            else:
                srv = await asyncio.start_server(
                    lambda r, w, h=h: self.serve_conn(h, r, w), h.address, h.port,
                    ssl=ctx, ssl_handshake_timeout=10, backlog=256)
            self.servers.append(srv)

    def start(self):
        """Serve every host from a background thread; returns self once
        every port listens."""
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure = []

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self._start())
            except Exception as e:  # noqa: BLE001 - reported to start()
                failure.append(e)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not ready.wait(60):
            raise RuntimeError("simulated hosts did not start within 60 s")
        if failure:
            raise failure[0]
        return self

    def stop(self):
        if not self.loop:
            return

        async def close():
            for s in self.servers:
                s.close()
            for w in self.stall_conns:
                w.close()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop = None

    def client_config(self, path, cert, key, extra_hosts=None):
        """Write a ferry client config naming every simulated host (plus
        extra_hosts {name: {"address", "port"}})."""
        hosts = {h.name: {"address": h.address, "port": h.port} for h in self.hosts}
        hosts.update(extra_hosts or {})
        with open(path, "w") as f:
            json.dump({"ca": self.ca, "cert": cert, "key": key, "hosts": hosts,
                       "default_host": self.hosts[0].name}, f, indent=1)
        return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert", required=True, help="host certificate for ADDRESS")
    ap.add_argument("--key", required=True)
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--vms", type=int, default=10, help="VMs per host")
    ap.add_argument("--stalled", type=int, default=0)
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--base-port", type=int, default=30000)
    ap.add_argument("--mig-seconds", type=float, default=8.0)
    ap.add_argument("--client-config", help="write a client config here")
    ap.add_argument("--user-cert", help="for --client-config")
    ap.add_argument("--user-key", help="for --client-config")
    a = ap.parse_args()
    sim = SimCluster(a.ca, a.cert, a.key, a.hosts, a.vms, a.address, a.base_port,
                     a.stalled, a.mig_seconds).start()
    if a.client_config:
        sim.client_config(a.client_config, a.user_cert, a.user_key)
    print(f"simhost: {a.hosts} hosts on {a.address}:{a.base_port}..", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        sim.stop()


if __name__ == "__main__":
    main()
