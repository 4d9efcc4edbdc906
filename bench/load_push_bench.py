#!/usr/bin/python3
"""load_push_bench.py - what it would cost etcd if every host pushed its
load report into etcd each round instead of being polled (the alternative
to polling weighed in docs/balancer.md, "Scale").

Starts 3 etcd members on loopback (tests/system/etcdlib.py), then for each
round: HOSTS puts of a load report of about 2.4 KB (10 VMs, the size ferryd's
/v1/load has) through the v3 JSON gateway from THREADS client threads with
kept connections, then one paged range read of all of them, as a controller
would. Prints the wall time of the puts and of the read, and the CPU time
the etcd members used for each.

    /usr/bin/python3 bench/load_push_bench.py [--hosts 10000] [--rounds 2]
        [--threads 8]
"""

import argparse
import base64
import http.client
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "system"))
import etcdlib  # noqa: E402


def cpu_s(pids):
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tck
    return total


def report(i):
    vms = [{"name": f"vm-{i:05d}-{k:02d}", "uuid": "0" * 36, "state": "running",
            "cpu_cores": 1.2345, "memory_mib": 4096, "dirty_mibps": 12.5,
            "labels": {"tier": "web"}, "migrating": False} for k in range(10)]
    return json.dumps({"host": f"sim-{i:05d}", "ts": int(time.time() * 1000),
                       "cpus": 32, "memory_total_mib": 262144,
                       "memory_committed_mib": 40960, "draining": False,
                       "vms": vms}).encode()


def b64(b):
    return base64.b64encode(b).decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args()
    with etcdlib.EtcdCluster(n=3) as ec:
        pids = [m.pid for m in ec.members]
        ctx = ec.ssl_context()
        size = len(report(0))
        print(f"{a.hosts} hosts, reports of {size} bytes, {a.threads} threads")
        for r in range(a.rounds):
            todo = list(range(a.hosts))
            lock = threading.Lock()

            def worker(t):
                m = ec.members[t % len(ec.members)]
                conn = http.client.HTTPSConnection(m.address, m.client_port,
                                                   context=ctx, timeout=30)
                while True:
                    with lock:
                        if not todo:
                            break
                        i = todo.pop()
                    body = json.dumps({"key": b64(f"/ferry/load/sim-{i:05d}".encode()),
                                       "value": b64(report(i))})
                    conn.request("POST", "/v3/kv/put", body=body)
                    resp = conn.getresponse()
                    resp.read()
                    assert resp.status == 200, resp.status
                conn.close()

            c0, t0 = cpu_s(pids), time.monotonic()
            ths = [threading.Thread(target=worker, args=(t,)) for t in range(a.threads)]
            for t in ths:
                t.start()
            for t in ths:
                t.join()
            c1, t1 = cpu_s(pids), time.monotonic()
            # the controller's read: every report, in pages
            m = ec.members[0]
            conn = http.client.HTTPSConnection(m.address, m.client_port,
                                               context=ctx, timeout=60)
            key, end, n = "/ferry/load/", "/ferry/load0", 0
            while True:
                conn.request("POST", "/v3/kv/range", body=json.dumps(
                    {"key": b64(key.encode()), "range_end": b64(end.encode()),
                     "limit": 2000}))
                resp = conn.getresponse()
                page = json.loads(resp.read())
                kvs = page.get("kvs", [])
                n += len(kvs)
                if not page.get("more"):
                    break
                key = base64.b64decode(kvs[-1]["key"]).decode() + "\0"
            conn.close()
            c2, t2 = cpu_s(pids), time.monotonic()
            print(f"round {r}: puts {t1 - t0:.2f} s wall, etcd CPU {c1 - c0:.2f} s; "
                  f"read of {n} reports {t2 - t1:.2f} s wall, etcd CPU {c2 - c1:.2f} s",
                  flush=True)


if __name__ == "__main__":
    main()
