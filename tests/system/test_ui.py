"""Browser tests of the dashboard (`ferry ui`, src/ui, docs/dashboard.md):
two real ferryd hosts, a real guest, `ferry ui` with the operator's client
config, and Debian's headless Chromium driven by python3-selenium.

The scenario: open the page with its token; see both hosts and the VM;
start a migration from the page; watch its progress to 100% and the VM
appear on the other host; find it in the history and its records in the
audit view (with each host's verification); an identity without the
permission sees the host's refusal verbatim. Security: no token, a wrong
Host or a foreign Origin is refused. The screenshots land in
build/screenshots ($FERRY_SCREENSHOTS); docs/dashboard.md shows one.
"""

import json
import os
import shutil
import time
import urllib.request

import pytest

from uilib import FerryUI, browser, screenshot_dir, wait_for

A, B = "host-a", "host-b"
VM = "web1"
By = None


@pytest.fixture(scope="module", autouse=True)
def _selenium():
    global By
    if not shutil.which("chromedriver") and not os.path.exists("/usr/bin/chromedriver"):
        pytest.fail("chromium-driver is not installed: run scripts/deps.sh")
    from selenium.webdriver.common.by import By as by
    By = by


def policy(c):
    """admin may do anything; viewer is an auditor (reads, acts on nothing)."""
    p = c.default_policy()
    p["roles"] = {"admin": ["admin"], "auditor": ["viewer"], "host": list(c.hosts)}
    return p


@pytest.fixture
def ui_cluster(make_cluster):
    c = make_cluster(start=False, users=("admin", "viewer"))
    for h in c.hosts:
        c.write_policy(h, policy(c))
    c.start_all()
    return c


@pytest.fixture
def start_ui(request, ui_cluster):
    def start(user="admin"):
        cfg = ui_cluster.client_config if user == "admin" else \
            ui_cluster.write_client_config(ui_cluster.dir / f"{user}.json", user=user)
        ui = FerryUI(ui_cluster.ferry_bin, cfg).start()
        request.addfinalizer(lambda: ui.proc and ui.stop())
        return ui
    return start


@pytest.fixture
def chrome(request):
    drivers = []

    def make():
        d = browser()
        drivers.append(d)
        return d
    yield make
    for d in drivers:
        d.quit()


def texts(drv, css):
    return [e.text for e in drv.find_elements(By.CSS_SELECTOR, css)]


def row(drv, table, key):
    """The row of table (CSS id) whose data-key is key, or None."""
    rows = drv.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr[data-key='{key}']")
    return rows[0] if rows else None


def cells(tr):
    return [td.text for td in tr.find_elements(By.TAG_NAME, "td")]


def table(drv, table_id):
    """Every keyed row of a table as lists of cell texts, read in one go
    (the page replaces rows while it updates)."""
    return drv.execute_script(
        "return [...document.querySelectorAll('#' + arguments[0] + ' tbody tr[data-key]')]"
        ".map((tr) => [...tr.cells].map((td) => td.textContent))", table_id)


def show(drv, ui, view):
    drv.get(f"{ui.base}/#{view}")


def test_ui_security(ui_cluster, start_ui):
    """Without the token, from a foreign origin or under another Host
    name, nothing is served; replies carry the CSP and no CORS header."""
    ui = start_ui()
    for path in ("/", "/app.js", "/api/state"):
        status, text = ui.request(path, token=False)
        assert status == 403, (path, status, text)
        assert "token" in json.loads(text)["error"]["message"]
    status, _ = ui.request("/?token=" + "0" * 64, token=False)
    assert status == 403
    status, text = ui.request("/api/state")
    assert status == 200 and {h["name"] for h in json.loads(text)["hosts"]} == {A, B}
    # DNS rebinding: a name that resolves to 127.0.0.1 is still refused
    status, _ = ui.request("/api/state", headers={"Host": f"evil.example:{ui.port}"})
    assert status == 403
    post = f"/api/hosts/{A}/drain"
    for origin in ("http://evil.example", f"http://127.0.0.1:{ui.port + 1}", "null"):
        status, text = ui.request(post, method="POST", headers={"Origin": origin})
        assert status == 403 and "cross-origin" in text, (origin, status, text)
        status, _ = ui.request("/api/state", headers={"Origin": origin})
        assert status == 403
    status, text = ui.request(post, method="POST")  # no Origin at all
    assert status == 403, text
    assert not ui_cluster.host_info(A).get("draining")
    with urllib.request.urlopen(urllib.request.Request(
            ui.base + "/", headers={"Authorization": f"Bearer {ui.token}"}), timeout=10) as r:
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers.get("Access-Control-Allow-Origin") is None
    # bad names and parameters never reach a host
    for path in (f"/api/hosts/{A}/vms/..%2f/console", f"/api/hosts/{A}/audit?limit=0",
                 f"/api/hosts/{A}/audit?bogus=1"):
        status, _ = ui.request(path)
        assert status in (400, 404), path
    assert ui.stop() == 0


def test_ui_migration_scenario(ui_cluster, start_ui, chrome):
    c = ui_cluster
    c.define_vm(A, VM, memory_mib=128, mib=16, labels={"tier": "web"})
    c.start_vm(A, VM)
    c.wait_heartbeats(A, VM, 1, after_seq=0)
    ui = start_ui()
    shots = screenshot_dir()
    drv = chrome()
    drv.get(ui.url)  # the token sets a cookie and leaves the address bar
    wait_for(lambda: "token" not in drv.current_url, 10, "the redirect")

    # both hosts up, the VM running on host-a
    wait_for(lambda: all(row(drv, "hosts-table", h) and cells(row(drv, "hosts-table", h))[1] == "up"
                         for h in (A, B)), 20, "both hosts up")
    assert len(drv.find_elements(By.CSS_SELECTOR, "#alarms .alarm")) == 0
    show(drv, ui, "vms")
    wait_for(lambda: row(drv, "vms-table", f"{A}/{VM}") and
             "running" in cells(row(drv, "vms-table", f"{A}/{VM}"))[2], 20, "the VM on host-a")
    assert "tier=web" in cells(row(drv, "vms-table", f"{A}/{VM}"))[8]

    # the VM's page shows its serial console, live
    drv.find_element(By.LINK_TEXT, VM).click()
    wait_for(lambda: "memload: hb" in drv.find_element(By.ID, "console").text, 30,
             "memload heartbeats on the console")
    show(drv, ui, "vms")

    # migrate from the page (a bandwidth cap keeps it long enough to watch)
    wait_for(lambda: row(drv, "vms-table", f"{A}/{VM}").find_element(
        By.CSS_SELECTOR, "button[data-action=migrate]"), 10, "the migrate button").click()
    wait_for(lambda: drv.find_element(By.ID, "modal").is_displayed(), 5, "the dialog")
    from selenium.webdriver.support.ui import Select
    Select(drv.find_element(By.ID, "migrate-to")).select_by_value(B)
    drv.find_element(By.ID, "migrate-bandwidth").send_keys("16")
    drv.find_element(By.ID, "modal-ok").click()
    wait_for(lambda: drv.current_url.endswith("#migrations"), 10, "the migrations view")

    def running_row():
        rows = drv.find_elements(By.CSS_SELECTOR, "#running-table tbody tr[data-key]")
        return cells(rows[0]) if rows else None

    seen, shot = [], False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        r = running_row()
        if r:
            pct = float(r[3].rstrip("%"))
            seen.append((r[2], pct))
            if 10 <= pct < 95 and r[2] not in ("completed", "failed") and not shot:
                drv.save_screenshot(os.path.join(shots, "dashboard-migration.png"))
                shot = True
            if r[2] == "completed":
                break
            assert r[2] not in ("failed", "cancelled"), r
        time.sleep(0.3)
    assert seen and seen[-1] == ("completed", 100.0), seen
    assert any(0 < p < 100 for _, p in seen), f"no progress seen in between: {seen}"
    assert shot, f"no screenshot in progress: {seen}"
    # the same numbers as the API's record: throughput, iteration and so on
    assert r[1] == f"{A} → {B}" and r[0] == VM

    # history: outcome, total time, downtime
    hist = wait_for(lambda: table(drv, "history-table"), 10, "the history")
    assert hist[0][2] == VM and hist[0][5] == "completed", hist
    assert hist[0][6].endswith(" s") and hist[0][7].endswith(" ms"), hist[0]
    rec = c.migrations(A)[0]
    assert hist[0][7] == f"{rec['downtime_ms']} ms"

    # the VM is now on host-b
    show(drv, ui, "vms")
    wait_for(lambda: row(drv, "vms-table", f"{B}/{VM}") and
             "running" in cells(row(drv, "vms-table", f"{B}/{VM}"))[2] and
             row(drv, "vms-table", f"{A}/{VM}") is None, 20, "the VM on host-b only")
    c.wait_heartbeats(B, VM, 1)
    drv.save_screenshot(os.path.join(shots, "dashboard-vms.png"))

    # audit: the migration's records and each host's verification
    show(drv, ui, "audit")
    wait_for(lambda: len([t for t in texts(drv, "#verify-table tbody tr") if "verified" in t]) == 2,
             30, "both audit logs verified")
    for h in (A, B):
        v = cells(row(drv, "verify-table", h))
        assert int(v[3]) >= 1 and v[2] == v[3], v
    drv.find_element(By.ID, "audit-vm").send_keys(VM)
    drv.find_element(By.ID, "audit-load").click()
    want = {(A, "migration.request"), (A, "migration.end"), (B, "migration.end")}
    seen = set()

    def audit_rows():
        seen.clear()
        seen.update((t[1], t[4]) for t in table(drv, "audit-table") if t[5] == VM)
        return want <= seen
    try:
        wait_for(audit_rows, 20, "the migration's audit records")
    except AssertionError as e:
        raise AssertionError(f"{e}; seen {sorted(seen)}") from None
    drv.save_screenshot(os.path.join(shots, "dashboard-audit.png"))

    # overview after: host-b has the VM
    show(drv, ui, "overview")
    wait_for(lambda: "1 / 1" in cells(row(drv, "hosts-table", B))[7], 20, "host-b counting the VM")
    drv.save_screenshot(os.path.join(shots, "dashboard-overview.png"))
    assert not [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def test_ui_refusal_is_shown(ui_cluster, start_ui, chrome):
    """An identity without vm.migrate tries it from the page: the dialog
    shows the host's refusal text, verbatim, and nothing moves."""
    c = ui_cluster
    c.define_vm(A, VM, memory_mib=128, mib=16)
    c.start_vm(A, VM)
    status, reply = c.api(A, "POST", f"/v1/vms/{VM}/migrate",
                          {"to": B, "address": c.hosts[B].address, "port": c.hosts[B].port},
                          cert=c.user_cert("viewer"))
    assert status == 403
    expected = reply["error"]["message"]
    ui = start_ui("viewer")
    drv = chrome()
    drv.get(ui.url)
    show(drv, ui, "vms")
    btn = wait_for(lambda: row(drv, "vms-table", f"{A}/{VM}").find_element(
        By.CSS_SELECTOR, "button[data-action=migrate]"), 30, "the migrate button")
    btn.click()
    drv.find_element(By.ID, "modal-ok").click()
    msg = wait_for(lambda: drv.find_element(By.CSS_SELECTOR, "#modal-body .refusal").text, 20,
                   "the refusal")
    assert msg == expected, (msg, expected)
    drv.save_screenshot(os.path.join(screenshot_dir(), "dashboard-refusal.png"))
    drv.find_element(By.ID, "modal-cancel").click()
    # a non-disruptive action shows its refusal in the notice bar
    c.api_ok(A, "POST", f"/v1/vms/{VM}/pause")
    wait_for(lambda: row(drv, "vms-table", f"{A}/{VM}").find_element(
        By.CSS_SELECTOR, "button[data-action=resume]"), 20, "the resume button").click()
    note = wait_for(lambda: drv.find_element(By.CSS_SELECTOR, "#notice .refusal").text, 20,
                    "the notice")
    assert "viewer lacks vm.write" in note, note
    assert c.vm_info(A, VM)["state"] == "paused"
    assert not c.migrations(A)
