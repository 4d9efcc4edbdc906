"""The dashboard at scale: 50 simulated hosts with 10 VMs each
(tests/sim/simhost.py, mutual TLS with certificates from `ferry pki`), plus
one host that accepts connections and never answers and one that refuses
them. `ferry ui` must keep every healthy host fresh each round while the
bad ones show as unreachable, and the page must stay responsive: it
measures and prints the state's size and fetch time, the render time per
update, and the time to switch to the 500-VM view and to filter it.

Figures are printed (pytest -s) and written to
build/screenshots/ui-scale.json; the bounds asserted are loose, to catch
a page that stalls, not to time it.
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path

import pytest

from ferrylib import REPO, alloc_ports
from uilib import FerryUI, browser, screenshot_dir, wait_for

sys.path.insert(0, str(REPO / "tests" / "sim"))
from simhost import SimCluster  # noqa: E402

NHOSTS, NVMS = 50, 10


@pytest.fixture
def sim(tmp_path, ferry_build):
    ferry = ferry_build / "ferry"
    pki = tmp_path / "pki"
    for args in (["init", "--cluster", "sim"], ["host", "sim", "--ip", "127.0.0.1"],
                 ["user", "admin"]):
        import subprocess
        subprocess.run([str(ferry), "pki", *args, "--dir", str(pki)], check=True,
                       capture_output=True)
    base = alloc_ports(["127.0.0.1"], NHOSTS + 3)
    s = SimCluster(str(pki / "ca.crt"), str(pki / "hosts" / "sim.crt"),
                   str(pki / "hosts" / "sim.key"), NHOSTS, NVMS, base_port=base,
                   stalled=1, mig_seconds=6).start()
    cfg = s.client_config(str(tmp_path / "client.json"), str(pki / "users" / "admin.crt"),
                          str(pki / "users" / "admin.key"),
                          extra_hosts={"gone-0": {"address": "127.0.0.1", "port": base + NHOSTS + 2}})
    yield s, cfg, ferry
    s.stop()


def pct(vals, p):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(round(p / 100 * (len(vals) - 1))))]


def test_ui_scale(sim):
    s, cfg, ferry = sim
    ui = FerryUI(ferry, cfg).start()
    drv = browser()
    figures = {}
    try:
        drv.get(ui.url)
        # every healthy host answers, the two bad ones are unreachable, within
        # the first rounds plus one call's deadline (5 s)
        def settled():
            st = json.loads(ui.request("/api/state")[1])
            ok = [h for h in st["hosts"] if h["reachable"]]
            bad = [a for a in st["alarms"] if a["source"] == "unreachable"]
            return st if len(ok) == NHOSTS and len(st["vms"]) == NHOSTS * NVMS and \
                {a["host"] for a in bad} == {"stall-0", "gone-0"} else None
        t0 = time.monotonic()
        st = wait_for(settled, 30, "50 hosts up and 2 unreachable")
        figures["settle_s"] = round(time.monotonic() - t0, 2)

        # freshness: sampled over 15 s, every healthy host was answered within
        # the last 2.5 s although one host never answers
        ages = []
        fetch_ms, sizes = [], []
        end = time.monotonic() + 15
        while time.monotonic() < end:
            t = time.monotonic()
            status, text = ui.request("/api/state")
            fetch_ms.append((time.monotonic() - t) * 1000)
            sizes.append(len(text))
            st = json.loads(text)
            ages += [st["now"] - h["last_ok_ms"] for h in st["hosts"] if h["reachable"]]
            time.sleep(0.5)
        figures["host_age_ms_p50"] = pct(ages, 50)
        figures["host_age_ms_max"] = max(ages)
        figures["state_bytes"] = statistics.median(sizes)
        figures["state_fetch_ms_p50"] = round(pct(fetch_ms, 50), 1)
        figures["state_fetch_ms_p95"] = round(pct(fetch_ms, 95), 1)
        assert max(ages) < 2500, f"a healthy host went stale: {max(ages)} ms"

        # the page: overview renders each update
        wait_for(lambda: drv.execute_script("return window.ferryStats.polls") >= 5, 30,
                 "five updates of the page")
        drv.save_screenshot(os.path.join(screenshot_dir(), "dashboard-scale-overview.png"))
        # the VM view: 502 hosts' VMs rendered, then filtered
        t = time.monotonic()
        drv.get(ui.base + "/#vms")
        wait_for(lambda: drv.execute_script(
            "return document.querySelectorAll('#vms-table tbody tr[data-key]').length") == NHOSTS * NVMS,
            30, "500 VM rows")
        figures["vms_view_ms"] = round((time.monotonic() - t) * 1000)
        drv.execute_script("window.ferryStats.renders = []; window.ferryStats.maxRenderMs = 0")
        time.sleep(10)
        r = drv.execute_script("return window.ferryStats")
        figures["vms_render_ms_p50"] = round(pct(r["renders"], 50), 1)
        figures["vms_render_ms_max"] = round(r["maxRenderMs"], 1)
        figures["vms_updates_in_10s"] = len(r["renders"])
        t = drv.execute_script("""
            const f = document.querySelector('#vm-filter');
            const t0 = performance.now();
            f.value = 'vm-007-0'; f.dispatchEvent(new Event('input'));
            return performance.now() - t0;""")
        figures["filter_ms"] = round(t, 1)
        n = drv.execute_script("return document.querySelectorAll('#vms-table tbody tr[data-key]').length")
        assert n == NVMS, n
        # a migration from the page on simulated hosts shows its progress
        drv.execute_script("document.querySelector('#vm-filter').value = ''")
        status, text = ui.request("/api/hosts/sim-001/vms/vm-001-03/migrate", method="POST",
                                  headers={"Origin": ui.base, "Content-Type": "application/json"},
                                  body=json.dumps({"to": "sim-002"}).encode())
        assert status == 202, text
        drv.get(ui.base + "/#migrations")
        wait_for(lambda: drv.execute_script(
            "return document.querySelectorAll('#running-table tbody tr[data-key]').length") == 1,
            10, "the simulated migration")
        drv.save_screenshot(os.path.join(screenshot_dir(), "dashboard-scale-migration.png"))
        wait_for(lambda: any(v["host"] == "sim-002" and v["name"] == "vm-001-03"
                             for v in json.loads(ui.request("/api/state")[1])["vms"]), 30,
                 "the VM on sim-002")
        assert figures["vms_render_ms_max"] < 1000, figures
    finally:
        drv.quit()
        rc = ui.stop()
    assert rc == 0
    print("ui scale figures:", json.dumps(figures))
    Path(screenshot_dir(), "ui-scale.json").write_text(json.dumps(figures, indent=1) + "\n")
