"""etcd client figures on a 3-member loopback cluster (docs/etcd.md):
latency of a compare-and-swap acquire (one txn) and of a lease keepalive
round (median and p90 of --count each), and the time the next call takes
after the member the client uses is killed (a follower, then the leader),
--rounds times each.

    /usr/bin/python3 bench/etcd_bench.py [--count 100] [--rounds 3]

Needs build/tests/etcd/etcd_check (ninja -C build) and etcd-server.
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "system"))
import etcdlib  # noqa: E402
from test_etcd import run_check, write_config  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with etcdlib.EtcdCluster(n=3) as ec:
        cfg = write_config(ec.dir, ec.ferryd_etcd_section())
        v = run_check(cfg, "bench", str(a.count))
        print(f"cas (txn) median {v['cas_median_ms']} ms, p90 {v['cas_p90_ms']} ms, n={a.count}")
        print(f"keepalive median {v['keepalive_median_ms']} ms, p90 {v['keepalive_p90_ms']} ms, "
              f"n={a.count}")
        for role in ("follower", "leader"):
            took = []
            for _ in range(a.rounds):
                ec.move_leader(0 if role == "leader" else 1)
                took.append(int(run_check(cfg, "failover",
                                          faults={"kill 0": lambda _: ec.kill(0)})["failover_ms"]))
                ec.restart(0)
            print(f"fail-over after kill -9 of the member in use ({role}): "
                  f"{took} ms, median {statistics.median(took)} ms")


if __name__ == "__main__":
    main()
