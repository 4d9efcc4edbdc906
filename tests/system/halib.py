"""Helpers for checkpoint-HA tests (test_ha.py, bench/ha_bench.py): a
cluster whose hosts use etcd and keep their VMs' RAM in shared files."""
import os
import shutil
import signal
import time
from pathlib import Path

import ferrylib

LEASE_TTL_S = 5


def ha_cluster(make_cluster, make_etcd, hosts=2, etcd_members=1, ttl=LEASE_TTL_S,
               request=None, endpoints=None, overrides=None, ec=None, peers=False):
    """A started cluster with HA set up on every host (etcd, ram_dir in
    /dev/shm, removed afterwards) and its etcd cluster. endpoints: {host:
    [urls]} in place of the members' (e.g. through a proxy); overrides:
    {host: {field: value}} for ferryd.json; peers: every host lists the
    others in ha_peers (re-protection, docs/ha.md)."""
    ec = ec or make_etcd(n=etcd_members)
    c = make_cluster(hosts=hosts, start=False)
    ram_root = Path(f"/dev/shm/{c.dir.name}")
    ram_root.mkdir()
    if request is not None:
        request.addfinalizer(lambda: shutil.rmtree(ram_root, ignore_errors=True))
    for name in c.hosts:
        etcd = ec.ferryd_etcd_section(lease_ttl_s=ttl, timeout_ms=3000,
                                      member_timeout_ms=1000)
        if endpoints and name in endpoints:
            etcd["endpoints"] = endpoints[name]
        extra = dict((overrides or {}).get(name, {}))
        if peers:
            extra.setdefault("ha_peers", [
                {"host": h.name, "address": h.address, "port": h.port}
                for h in c.hosts.values() if h.name != name])
        c.write_host_config(name, ram_dir=str(ram_root / name), etcd=etcd, **extra)
    c.start_all()
    c.ram_root = ram_root
    return c, ec


def protected_vm(request, make_cluster, make_etcd, etcd_proxy=False):
    """Two hosts and one etcd member; vm1 running on host-a, protected by
    host-b every 2 s, two checkpoints taken. etcd_proxy: host-a reaches
    etcd through a FaultProxy (to cut). Returns (cluster, the proxy or
    None, vm1's QEMU pid)."""
    from faultproxy import FaultProxy
    ec = make_etcd(n=1)
    proxy, endpoints = None, None
    if etcd_proxy:
        m = ec.members[0]
        proxy = FaultProxy(m.address, m.client_port, listen_host="127.0.0.1")
        proxy.start()
        request.addfinalizer(proxy.stop)
        endpoints = {"host-a": [f"https://127.0.0.1:{proxy.port}"]}
    c, _ = ha_cluster(make_cluster, make_etcd, request=request, ec=ec,
                      endpoints=endpoints)
    c.define_vm("host-a", "vm1", memory_mib=256, mib=32, rate=1000)
    pid = c.start_vm("host-a", "vm1")["pid"]
    c.wait_heartbeats("host-a", "vm1", n=2)
    c.cli("--host", "host-a", "ha", "enable", "vm1", "--backup", "host-b",
          "--interval", "2s")
    wait_checkpoints(c, "host-a", "vm1", 2)
    return c, proxy, pid


def ha_status(c, host, vm):
    code, body = c.api(host, "GET", f"/v1/vms/{vm}/ha")
    return body if code == 200 else None


def wait_checkpoints(c, host, vm, n, timeout=120):
    def check():
        st = ha_status(c, host, vm)
        last = (st or {}).get("last_checkpoint")
        return st if last and last["seq"] >= n else None
    return ferrylib.wait_until(check, timeout, 1.0, f"{n} checkpoints of {vm}")


def vm_names(c, host):
    return {v["name"]: v for v in c.list_vms(host)}


def kill_qemu(c, host, vm):
    pid = c.vm_info(host, vm)["pid"]
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()
