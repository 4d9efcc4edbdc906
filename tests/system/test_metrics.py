"""GET /v1/metrics (docs/metrics.md): the strict parser (promparse.py)
against good and bad texts, then real hosts scraped before and after a
migration, and who may scrape.

Run: /usr/bin/python3 -m pytest -q tests/system/test_metrics.py
"""

import http.client
import json
import math

import pytest

from promparse import PromError, parse

A, B = "host-a", "host-b"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# every family ferryd serves, with its type (docs/metrics.md)
FAMILIES = {
    "ferry_build_info": "gauge",
    "ferry_vms": "gauge",
    "ferry_migrations_total": "counter",
    "ferry_migration_duration_seconds": "histogram",
    "ferry_migration_downtime_seconds": "histogram",
    "ferry_migration_ram_bytes_total": "counter",
    "ferry_migration_wire_bytes_total": "counter",
    "ferry_migrations_active": "gauge",
    "ferry_refusals_total": "counter",
    "ferry_audit_records_total": "counter",
    "ferry_host_cpus": "gauge",
    "ferry_host_cpu_utilization": "gauge",
    "ferry_host_vm_cpu_cores": "gauge",
    "ferry_host_memory_bytes": "gauge",
    "ferry_host_draining": "gauge",
}

# ------------------------------------------------------------------ parser

GOOD = """\
# a comment
# HELP x_total Things, with a \\\\ and a \\n.
# TYPE x_total counter
x_total{a="1",b="q\\"uote\\\\d\\n"} 3
x_total{a="2",} 0 1700000000000

# HELP h Durations.
# TYPE h histogram
h_bucket{le="0.5"} 1
h_bucket{le="1"} 1
h_bucket{le="+Inf"} 2
h_sum 2.5
h_count 2
# HELP g A gauge.
# TYPE g gauge
g -1.5e-3
g{k="v"} NaN
g{k="w"} -Inf
"""


def test_parser_accepts_the_format():
    fams = parse(GOOD)
    assert fams["x_total"].help == "Things, with a \\ and a \n."
    assert fams["x_total"].value(a="1", b='q"uote\\d\n') == 3
    assert fams["x_total"].value(a="2") == 0
    assert fams["h"].type == "histogram"
    assert fams["h"].value("_count") == 2
    assert fams["g"].value() == -1.5e-3
    assert math.isnan(fams["g"].value(k="v"))
    assert fams["g"].value(k="w") == -math.inf


BAD = {
    "no final newline": "# HELP a x\n# TYPE a gauge\na 1",
    "bad metric name": "# HELP 1a x\n# TYPE 1a gauge\n1a 1\n",
    "bad label name": "# HELP a x\n# TYPE a gauge\na{1b=\"x\"} 1\n",
    "reserved label": "# HELP a x\n# TYPE a gauge\na{__x=\"x\"} 1\n",
    "label twice": "# HELP a x\n# TYPE a gauge\na{b=\"1\",b=\"2\"} 1\n",
    "bad escape": "# HELP a x\n# TYPE a gauge\na{b=\"\\t\"} 1\n",
    "bad help escape": "# HELP a x\\ty\n# TYPE a gauge\na 1\n",
    "unterminated": "# HELP a x\n# TYPE a gauge\na{b=\"1} 1\n",
    "bad value": "# HELP a x\n# TYPE a gauge\na 0x10\n",
    "no value": "# HELP a x\n# TYPE a gauge\na\n",
    "bad timestamp": "# HELP a x\n# TYPE a gauge\na 1 1.5\n",
    "two TYPEs": "# HELP a x\n# TYPE a gauge\n# TYPE a gauge\na 1\n",
    "two HELPs": "# HELP a x\n# HELP a x\n# TYPE a gauge\na 1\n",
    "TYPE after samples": "# HELP a x\na 1\n# TYPE a gauge\n",
    "unknown type": "# HELP a x\n# TYPE a meter\na 1\n",
    "missing TYPE": "# HELP a x\na 1\n",
    "missing HELP": "# TYPE a gauge\na 1\n",
    "interleaved": ("# HELP a x\n# TYPE a gauge\na 1\n# HELP b x\n# TYPE b gauge\n"
                    "b 1\na{c=\"d\"} 1\n"),
    "duplicate series": "# HELP a x\n# TYPE a gauge\na{b=\"1\"} 1\na{b=\"1\"} 2\n",
    "negative counter": "# HELP a x\n# TYPE a counter\na -1\n",
    "histogram without +Inf": ("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
                               "h_sum 1\nh_count 1\n"),
    "histogram le descending": ("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"2\"} 0\n"
                                "h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\n"
                                "h_sum 0\nh_count 0\n"),
    "histogram not cumulative": ("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                                 "h_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n"),
    "histogram count mismatch": ("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\n"
                                 "h_sum 0\nh_count 3\n"),
    "histogram without _sum": ("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\n"
                               "h_count 2\n"),
    "histogram bare sample": "# HELP h x\n# TYPE h histogram\nh 1\n",
    "histogram bad le": ("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"one\"} 1\n"
                         "h_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n"),
    "not UTF-8": b"# HELP a x\xff\n# TYPE a gauge\na 1\n",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_parser_refuses(case):
    with pytest.raises(PromError):
        parse(BAD[case])


# ------------------------------------------------------------------ ferryd


def scrape(c, host, user="prom"):
    """GET /v1/metrics as user -> (status, Content-Type, body text)."""
    h = c.hosts[host]
    ctx = c.ssl_context(cert=c.user_cert(user))
    conn = http.client.HTTPSConnection(h.address, h.port, context=ctx, timeout=30)
    try:
        conn.request("GET", "/v1/metrics")
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        conn.close()


def metrics(c, host):
    status, ctype, text = scrape(c, host)
    assert status == 200, text
    assert ctype == CONTENT_TYPE
    fams = parse(text)
    assert {n: f.type for n, f in fams.items()} == FAMILIES, sorted(fams)
    return fams


@pytest.fixture(scope="module")
def mcluster(make_module_cluster):
    """Two hosts; users admin (admin), prom (monitor), nobody (no role)."""
    c = make_module_cluster(start=False, users=("admin", "prom", "nobody"))
    for name in c.hosts:
        policy = c.default_policy()
        policy["roles"] = {"admin": ["admin"], "monitor": ["prom"],
                           "host": list(c.hosts)}
        c.write_policy(name, policy)
    return c.start_all()


def test_who_may_scrape(mcluster):
    c = mcluster
    assert scrape(c, A, "admin")[0] == 200
    status, ctype, text = scrape(c, A, "nobody")
    assert status == 403 and "lacks metrics" in json.loads(text)["error"]["message"]
    # the monitor role reads metrics, nothing else
    assert c.api(A, "GET", "/v1/vms", cert=c.user_cert("prom"))[0] == 403
    assert c.api(A, "POST", "/v1/metrics", cert=c.user_cert("prom"))[0] == 405


def test_refusals_and_audit_counted(mcluster):
    c = mcluster
    before = metrics(c, A)
    seq0 = before["ferry_audit_records_total"].value()
    assert seq0 > 0  # ferryd.start at least
    for _ in range(3):
        assert c.api(A, "GET", "/v1/no-such-route")[0] == 404
    c.cli("vm", "list", host=A)  # a read, not audited
    c.api_ok(A, "POST", "/v1/vms", c.vm_definition("counted"), expect=(201,))
    after = metrics(c, A)
    refused = after["ferry_refusals_total"]
    prev = {tuple(l.items()): v for _, l, v in before["ferry_refusals_total"].samples}
    assert refused.value(kind="request.refused") >= \
        prev.get((("kind", "request.refused"),), 0) + 3
    # vm.define was audited (and the coalesced refusals, once flushed)
    assert after["ferry_audit_records_total"].value() >= seq0 + 1
    assert after["ferry_vms"].value(state="shutoff") == \
        before["ferry_vms"].value(state="shutoff") + 1
    c.api_ok(A, "DELETE", "/v1/vms/counted")


def test_migration_counted(mcluster):
    """One migration A -> B moves the figures on both hosts: outcomes,
    durations, downtime, bytes, VMs by state."""
    c = mcluster
    a0, b0 = metrics(c, A), metrics(c, B)
    c.define_vm(A, "mvm", mib=16)
    c.start_vm(A, "mvm")
    c.wait_heartbeats(A, "mvm", 1)
    mid = metrics(c, A)
    assert mid["ferry_vms"].value(state="running") == \
        a0["ferry_vms"].value(state="running") + 1
    assert mid["ferry_host_memory_bytes"].value(kind="committed") > \
        a0["ferry_host_memory_bytes"].value(kind="committed")
    r = c.migrate(A, "mvm", B)
    assert r.returncode == 0, r.stderr
    a1, b1 = metrics(c, A), metrics(c, B)

    def delta(f0, f1, name, suffix="", **labels):
        return f1[name].value(suffix, **labels) - f0[name].value(suffix, **labels)

    assert delta(a0, a1, "ferry_migrations_total", role="source", outcome="completed") == 1
    assert delta(b0, b1, "ferry_migrations_total", role="destination",
                 outcome="completed") == 1
    assert delta(a0, a1, "ferry_migrations_total", role="source", outcome="failed") == 0
    assert delta(a0, a1, "ferry_migration_duration_seconds", "_count", role="source") == 1
    assert delta(b0, b1, "ferry_migration_duration_seconds", "_count",
                 role="destination") == 1
    assert delta(a0, a1, "ferry_migration_downtime_seconds", "_count") == 1
    down = delta(a0, a1, "ferry_migration_downtime_seconds", "_sum")
    summary = r.summary
    assert down == pytest.approx(summary["downtime_ms"] / 1000, abs=1e-6)
    assert delta(a0, a1, "ferry_migration_ram_bytes_total") == summary["ram_bytes"] > 0
    assert delta(a0, a1, "ferry_migration_wire_bytes_total", role="source") > 16 << 20
    assert delta(b0, b1, "ferry_migration_wire_bytes_total", role="destination") > 16 << 20
    assert a1["ferry_vms"].value(state="running") == a0["ferry_vms"].value(state="running")
    assert b1["ferry_vms"].value(state="running") == b0["ferry_vms"].value(state="running") + 1
    for f in (a1, b1):
        for role, state in (("source", "running"), ("source", "queued"),
                            ("source", "unresolved"), ("destination", "running")):
            assert f["ferry_migrations_active"].value(role=role, state=state) == 0
    c.stop_vm(B, "mvm", force=True)

