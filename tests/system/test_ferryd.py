"""System tests of the foundation: ferryd, the `ferry` CLI, the REST API over
mutual TLS, the VM lifecycle with the memload test guest, and `ferry pki`.

Every test gets its own throw-away cluster (ferrylib.Cluster) of ferryd hosts
on 127.0.0.2, 127.0.0.3, ...; the bad-request tests share one per module.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/system/test_ferryd.py
"""

import json
import os
import re
import signal
import socket
import ssl
import stat
import time

import pytest

import ferrylib
from ferrylib import (EXIT_FAILED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE,
                      expect_tls_refused, parse_heartbeats, pid_alive, qemu_running,
                      wait_pid_gone)

POWER_BUTTON = "init: power button pressed, powering off"


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def assert_beating(hbs, min_count=2):
    """Heartbeats with strictly increasing seq, no errors, and verification
    making progress."""
    assert len(hbs) >= min_count, hbs
    seqs = [h["seq"] for h in hbs]
    assert seqs == sorted(set(seqs)), f"seq not strictly increasing: {seqs}"
    assert all(h["errors"] == 0 for h in hbs), hbs
    assert hbs[-1]["verified"] > hbs[0]["verified"], hbs


def one_error_line(stderr):
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: error: "), repr(stderr)
    return lines[0]


# --------------------------------------------------------------------------
# 1. hosts


def test_hosts_start_and_report_info(cluster):
    accel = "kvm" if ferrylib.kvm_expected() else "tcg"
    for h in cluster.hosts.values():
        r = cluster.cli("host", "info", host=h.name)
        kv = dict(line.split(None, 1) for line in r.stdout.splitlines())
        assert kv["name"] == h.name, r.stdout
        # /dev/kvm without vmx/svm is paravirtual and slow: auto picks TCG
        assert kv["accel"] == accel, r.stdout
        assert kv["address"] == h.address and kv["port"] == str(h.port), r.stdout

        info = json.loads(cluster.cli("--json", "host", "info", host=h.name).stdout)
        assert info["name"] == h.name and info["accel"] == accel, info
        assert info["address"] == h.address and info["port"] == h.port, info
        assert info["vms_defined"] == 0 and info["vms_active"] == 0, info
        assert info["cpus"] == os.sysconf("SC_NPROCESSORS_ONLN"), info
        assert 0 < info["memory_available_mib"] <= info["memory_total_mib"], info
    # the default host of client.json is host-a
    assert json.loads(cluster.cli("--json", "host", "info").stdout)["name"] == "host-a"


# --------------------------------------------------------------------------
# 2. VM lifecycle


def test_vm_lifecycle(cluster):
    c, H = cluster, "host-a"

    # define from a file and start through the CLI; a second VM boots alongside
    deffile = c.dir / "web.json"
    deffile.write_text(json.dumps(c.vm_definition("web", mib=32, rate=1000)))
    r = c.cli("vm", "define", str(deffile), host=H)
    assert re.fullmatch(r"vm web: defined \(uuid [0-9a-f-]{36}\)\n", r.stdout), r.stdout
    r = c.cli("vm", "start", "web", host=H)
    m = re.fullmatch(r"vm web: running \(QEMU pid (\d+)\)\n", r.stdout)
    assert m, r.stdout
    pid = int(m.group(1))
    victim = c.define_vm(H, "victim", mib=16, rate=100)
    victim_pid = c.start_vm(H, "victim")["pid"]

    # heartbeats on the serial console, read with `ferry vm console`
    c.wait_heartbeats(H, "web", n=3, after_seq=0)
    hbs = parse_heartbeats(c.cli("vm", "console", "web", host=H).stdout)
    assert_beating(hbs, 3)
    assert hbs[0]["seq"] == 1
    assert "CORRUPTION" not in c.console(H, "web")

    # list and info show it running with its QEMU pid
    rows = [l.split() for l in c.cli("vm", "list", host=H).stdout.splitlines()]
    assert rows[0] == ["NAME", "STATE", "MEMORY", "VCPUS", "PID", "UPTIME(s)"], rows
    assert rows[2][:5] == ["web", "running", "256M", "1", str(pid)], rows
    assert rows[1][:2] == ["victim", "running"], rows
    info = json.loads(c.cli("--json", "vm", "info", "web", host=H).stdout)
    assert info["state"] == "running" and info["pid"] == pid, info
    assert qemu_running(pid, info["uuid"]), info
    assert int(c.pidfile(H, info["uuid"]).read_text()) == pid
    host = c.host_info(H)
    assert host["vms_defined"] == 2 and host["vms_active"] == 2, host
    assert host["memory_committed_mib"] == 256 + 256, host

    # forced stop of the other VM: quick, no guest shutdown, web unaffected
    c.wait_heartbeats(H, "victim", n=1, after_seq=0)
    t0 = time.monotonic()
    r = c.cli("vm", "stop", "victim", "--force", host=H)
    assert r.stdout == "vm victim: shutoff\n", r.stdout
    assert time.monotonic() - t0 < 10
    assert wait_pid_gone(victim_pid, 5), f"QEMU {victim_pid} still running"
    assert POWER_BUTTON not in c.console(H, "victim")
    assert not c.pidfile(H, victim["uuid"]).exists()
    # delete it: gone from the API and from disk
    r = c.cli("vm", "delete", "victim", host=H)
    assert r.stdout == "vm victim: deleted\n", r.stdout
    r = c.cli("vm", "info", "victim", host=H, check=False)
    assert r.returncode == EXIT_NOT_FOUND, r
    one_error_line(r.stderr)
    assert not c.vm_dir(H, "victim").exists()
    assert [v["name"] for v in c.list_vms(H)] == ["web"]
    assert c.vm_info(H, "web")["state"] == "running" and qemu_running(pid, info["uuid"])
    assert_beating(c.wait_heartbeats(H, "web", n=1, timeout=15))

    # pause: heartbeats stop advancing
    r = c.cli("vm", "pause", "web", host=H)
    assert r.stdout == f"vm web: paused (QEMU pid {pid})\n", r.stdout
    assert c.vm_info(H, "web")["state"] == "paused"
    paused_seq = c.heartbeats(H, "web")[-1]["seq"]
    time.sleep(2.5)
    assert c.heartbeats(H, "web")[-1]["seq"] == paused_seq, "heartbeats while paused"
    assert pid_alive(pid)
    # resume: they advance again
    r = c.cli("vm", "resume", "web", host=H)
    assert r.stdout == f"vm web: running (QEMU pid {pid})\n", r.stdout
    assert c.vm_info(H, "web")["state"] == "running"
    hbs = c.wait_heartbeats(H, "web", n=2, after_seq=paused_seq, timeout=15)
    assert_beating(hbs)

    # graceful stop: the guest handles the ACPI power button
    t0 = time.monotonic()
    r = c.cli("vm", "stop", "web", "--timeout", "20", host=H)
    assert r.stdout == "vm web: shutoff\n", r.stdout
    assert time.monotonic() - t0 < 15, "graceful stop took the timeout path"
    assert POWER_BUTTON in c.console(H, "web")
    assert wait_pid_gone(pid, 5), f"QEMU {pid} still running"
    info = c.vm_info(H, "web")
    assert info["state"] == "shutoff" and info["pid"] == 0, info
    assert "last_error" not in info, info
    assert not c.pidfile(H, info["uuid"]).exists()

    # the definition persists (0600) across a ferryd restart
    vmjson = c.vm_dir(H, "web") / "vm.json"
    assert mode(vmjson) == 0o600 and mode(vmjson.parent) == 0o700
    assert json.loads(vmjson.read_text())["uuid"] == info["uuid"]
    assert c.restart_host(H) == 0  # SIGTERM: clean exit
    after = c.list_vms(H)
    assert after == [info], (after, info)
    assert c.list_vms("host-b") == []


# --------------------------------------------------------------------------
# 3. ferryd crash


def test_ferryd_crash_leaves_vm_running(cluster):
    c, H = cluster, "host-b"
    uuid = c.define_vm(H, "survivor", mib=32, rate=1000)["uuid"]
    pid = c.start_vm(H, "survivor")["pid"]
    c.wait_heartbeats(H, "survivor", n=2, after_seq=0)

    assert c.kill_host(H, signal.SIGKILL) == -signal.SIGKILL
    # QEMU runs on without ferryd and the guest keeps beating
    assert qemu_running(pid, uuid)
    hbs = c.wait_heartbeats(H, "survivor", n=2, timeout=15, source="file")
    assert_beating(hbs)
    r = c.cli("host", "info", host=H, check=False)
    assert r.returncode == EXIT_UNREACHABLE, r
    assert one_error_line(r.stderr).startswith("ferry: error: cannot talk to host host-b")

    # a new ferryd re-attaches to the same QEMU
    c.start_host(H)
    info = c.vm_info(H, "survivor")
    assert info["state"] == "running" and info["pid"] == pid, info
    assert re.search(rf"vm survivor: re-attached to QEMU pid {pid}\b", c.hosts[H].log.read_text())
    assert c.host_info(H)["vms_active"] == 1
    assert_beating(c.wait_heartbeats(H, "survivor", n=2, timeout=15))
    # and it controls it: pause/resume, then a clean graceful stop
    assert c.api_ok(H, "POST", "/v1/vms/survivor/pause")["state"] == "paused"
    assert c.api_ok(H, "POST", "/v1/vms/survivor/resume")["state"] == "running"
    info = c.stop_vm(H, "survivor", timeout_s=20)
    assert info["pid"] == 0 and "last_error" not in info, info
    assert wait_pid_gone(pid, 5), f"QEMU {pid} still running"
    assert POWER_BUTTON in c.console(H, "survivor")
    assert not c.pidfile(H, uuid).exists()


# --------------------------------------------------------------------------
# 4. bad requests: the right 4xx, a JSON error, and nothing changes

MAX_BODY = 64 * 1024


def _good_def(name="fresh", **kw):
    d = {"name": name, "memory_mib": 64, "kernel": "guest/vmlinuz",
         "initrd": "guest/initramfs.cpio.gz", "cmdline": "console=ttyS0"}
    d.update(kw)
    return d


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


# (id, method, path, body: dict -> JSON, str -> raw, None -> none,
#  status, error code (None: libevent answers, check the status only),
#  regex the message must contain)
BAD_REQUESTS = [
    ("malformed-json", "POST", "/v1/vms", '{"name": "fresh",', 400, "invalid_request",
     "request body: malformed JSON at line 1"),
    ("duplicate-key", "POST", "/v1/vms", '{"name": "a", "name": "b", "memory_mib": 64}', 400,
     "invalid_request", "malformed JSON"),
    ("not-an-object", "POST", "/v1/vms", "[1, 2]", 400, "invalid_request",
     "request body must be a JSON object"),
    ("empty-define", "POST", "/v1/vms", None, 400, "invalid_request",
     "needs a JSON body|definition is required"),
    ("unknown-field", "POST", "/v1/vms", _good_def(colour="red"), 400, "invalid_request",
     'vm: unknown field "colour"'),
    ("missing-memory", "POST", "/v1/vms", _without(_good_def(), "memory_mib"), 400,
     "invalid_request", "vm.memory_mib is required"),
    ("missing-name", "POST", "/v1/vms", _without(_good_def(), "name"), 400, "invalid_request",
     "vm.name is required"),
    ("wrong-type-memory", "POST", "/v1/vms", _good_def(memory_mib="64"), 400, "invalid_request",
     "vm.memory_mib must be an integer"),
    ("wrong-type-vcpus", "POST", "/v1/vms", _good_def(vcpus=True), 400, "invalid_request",
     "vm.vcpus must be an integer"),
    ("memory-too-small", "POST", "/v1/vms", _good_def(memory_mib=8), 400, "invalid_request",
     "vm.memory_mib must be between 16 and"),
    ("bad-name-in-body", "POST", "/v1/vms", _good_def(name="Fresh!"), 400, "invalid_request",
     'vm.name "Fresh!" is not valid'),
    ("unsafe-kernel-path", "POST", "/v1/vms", _good_def(kernel="../pki/ca.key"), 400,
     "invalid_request", "must be a path relative to the shared-storage dir"),
    ("oversized-body", "POST", "/v1/vms",
     '{"name": "fresh", "cmdline": "' + "x" * MAX_BODY + '"}', 413, None, None),
    ("oversized-stop", "POST", "/v1/vms/busy/stop", " " * (MAX_BODY + 1), 413, None, None),
    ("duplicate-name", "POST", "/v1/vms", _good_def(name="busy"), 409, "conflict",
     "a VM named busy is already"),
    ("duplicate-uuid", "POST", "/v1/vms", None, 409, "conflict",
     "VM busy .*already has uuid [0-9a-f-]{36}"),
    ("unknown-vm", "GET", "/v1/vms/nosuch", None, 404, "not_found",
     "no VM named nosuch on this host"),
    ("unknown-vm-start", "POST", "/v1/vms/nosuch/start", None, 404, "not_found",
     "no VM named nosuch"),
    ("unknown-route", "GET", "/v1/nothing", None, 404, "not_found", "no such route"),
    ("unknown-version", "GET", "/v2/host", None, 404, "not_found", "no such route"),
    ("unknown-verb", "POST", "/v1/vms/busy/reboot", None, 404, "not_found", "no such route"),
    ("too-deep", "GET", "/v1/vms/busy/console/x", None, 404, "not_found", "no such route"),
    ("method-put", "PUT", "/v1/vms", None, 405, "method_not_allowed",
     "method PUT is not allowed here"),
    ("method-delete-host", "DELETE", "/v1/host", None, 405, "method_not_allowed",
     "method DELETE is not allowed here"),
    ("method-get-start", "GET", "/v1/vms/busy/start", None, 405, "method_not_allowed",
     "method GET"),
    ("method-post-vm", "POST", "/v1/vms/busy", None, 405, "method_not_allowed", "method POST"),
    ("invalid-name-upper", "GET", "/v1/vms/BUSY", None, 400, "invalid_request",
     '"BUSY" is not a valid VM name'),
    ("invalid-name-dash", "DELETE", "/v1/vms/-busy", None, 400, "invalid_request",
     '"-busy" is not a valid VM name'),
    ("query-on-list", "GET", "/v1/vms?verbose=1", None, 400, "invalid_request",
     "this request takes no query parameters"),
    ("query-on-stop", "POST", "/v1/vms/busy/stop?force=1", None, 400, "invalid_request",
     "this request takes no query parameters"),
    ("query-unknown", "GET", "/v1/vms/busy/console?tail=5", None, 400, "invalid_request",
     'unknown query parameter "tail"'),
    ("query-negative", "GET", "/v1/vms/busy/console?offset=-1", None, 400, "invalid_request",
     "query parameter offset must be an integer"),
    ("query-not-number", "GET", "/v1/vms/busy/console?offset=abc", None, 400,
     "invalid_request", "query parameter offset must be an integer"),
    ("query-limit-too-big", "GET", f"/v1/vms/busy/console?limit={256 * 1024 + 1}", None, 400,
     "invalid_request", "query parameter limit must be an integer between 0 and 262144"),
    ("body-on-get", "GET", "/v1/vms", "{}", 400, "invalid_request",
     "this request takes no body"),
    ("body-on-start", "POST", "/v1/vms/idle/start", {"now": True}, 400, "invalid_request",
     'request body: unknown field "now"'),
    ("stop-bad-type", "POST", "/v1/vms/busy/stop", {"force": "yes"}, 400, "invalid_request",
     "request body.force must be true or false"),
    ("stop-timeout-zero", "POST", "/v1/vms/busy/stop", {"timeout_s": 0}, 400,
     "invalid_request", "request body.timeout_s must be between 1 and 3600"),
    ("stop-unknown-field", "POST", "/v1/vms/busy/stop", {"force": True, "now": 1}, 400,
     "invalid_request", 'request body: unknown field "now"'),
    ("stop-not-object", "POST", "/v1/vms/busy/stop", "[]", 400, "invalid_request",
     "request body must be a JSON object"),
    ("start-running", "POST", "/v1/vms/busy/start", None, 409, "conflict",
     "vm busy is running, not shutoff"),
    ("delete-running", "DELETE", "/v1/vms/busy", None, 409, "conflict",
     "vm busy is running; stop it before deleting it"),
    ("resume-running", "POST", "/v1/vms/busy/resume", None, 409, "conflict",
     "vm busy is running, not paused"),
    ("pause-shutoff", "POST", "/v1/vms/idle/pause", None, 409, "conflict",
     "vm idle is shutoff, not running"),
    ("stop-shutoff", "POST", "/v1/vms/idle/stop", None, 409, "conflict",
     "vm idle is not running"),
]


@pytest.fixture(scope="module")
def api_host(make_module_cluster):
    """One host with VM busy (running) and VM idle (shut off)."""
    c = make_module_cluster(hosts=1)
    c.define_vm("host-a", "busy", mib=16, rate=0)
    c.start_vm("host-a", "busy")
    c.define_vm("host-a", "idle", mib=16, rate=0)
    return c


def _snapshot(c):
    """What must not change: the VM list (less uptime) and the state dir."""
    vms = c.list_vms("host-a")
    for v in vms:
        v.pop("uptime_s", None)
    files = sorted(str(p.relative_to(c.hosts["host-a"].state_dir))
                   for p in c.hosts["host-a"].state_dir.rglob("*"))
    return vms, files


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request(api_host, case):
    c = api_host
    _id, method, path, body, status, code, message = case
    before = _snapshot(c)
    assert before[0][0]["state"] == "running" and before[0][1]["state"] == "shutoff"
    if _id == "duplicate-uuid":
        body = _good_def(uuid=before[0][0]["uuid"])
    kw = {"raw_body": body} if isinstance(body, str) else {"body": body}
    got_status, reply = c.api("host-a", method, path, **kw)
    assert got_status == status, reply
    if code is not None:
        assert isinstance(reply, dict) and set(reply) == {"error"}, reply
        err = reply["error"]
        assert set(err) == {"code", "message"}, reply
        assert err["code"] == code, reply
        assert re.search(message, err["message"]), reply
    assert _snapshot(c) == before, "a refused request changed something"


# --------------------------------------------------------------------------
# 5. TLS refusals


def test_tls_refusals(cluster):
    c, H = cluster, "host-a"
    foreign = c.dir / "foreign-pki"
    c.pki_run("init", "--cluster", "foreign", dir=foreign)
    c.pki_run("user", "admin", dir=foreign)  # same name, other CA
    log = c.hosts[H].log
    log_before = log.read_text()

    # a client certificate from another CA, no certificate, TLS 1.2
    for kw in ({"cert": c.user_cert("admin", pki=foreign)},
               {"cert": None},
               {"tls_version": ssl.TLSVersion.TLSv1_2}):
        expect_tls_refused(lambda: c.api(H, "GET", "/v1/host", **kw))
    # TLS 1.2 fails in the handshake itself
    ctx = c.ssl_context(tls_version=ssl.TLSVersion.TLSv1_2)
    h = c.hosts[H]
    with socket.create_connection((h.address, h.port), timeout=10) as s:
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|protocol version"):
            ctx.wrap_socket(s, server_hostname=h.address)

    # the CLI with the foreign certificate
    cfg = c.write_client_config(c.dir / "foreign.json", pki=foreign)
    r = c.cli("vm", "list", host=H, config=cfg, check=False)
    assert r.returncode == EXIT_UNREACHABLE, r
    line = one_error_line(r.stderr)
    assert line.startswith(f"ferry: error: cannot talk to host {H} ({h.address}:{h.port}): "), line
    assert r.stdout == ""
    # the CLI trusting another CA refuses the server
    cfg = c.write_client_config(c.dir / "wrong-ca.json", ca=foreign / "ca.crt")
    r = c.cli("host", "info", host=H, config=cfg, check=False)
    assert r.returncode == EXIT_UNREACHABLE, r
    assert "certificate verify failed" in one_error_line(r.stderr)

    # none of it reached the API, and the host still serves good clients
    assert "api:" not in log.read_text()[len(log_before):]
    assert c.api(H, "GET", "/v1/host")[0] == 200


# --------------------------------------------------------------------------
# 6. CLI behaviour


def test_cli_errors(cluster):
    c, H = cluster, "host-a"
    r = c.cli("frobnicate", check=False)
    assert r.returncode == EXIT_USAGE, r
    assert 'ferry: error: unknown command "frobnicate"' in r.stderr
    r = c.cli("vm", "frobnicate", "x", check=False)
    assert r.returncode == EXIT_USAGE, r
    r = c.cli("vm", "list", "--force", check=False)
    assert r.returncode == EXIT_USAGE and "option --force does not apply" in r.stderr, r

    r = c.cli("vm", "info", "nosuchvm", host=H, check=False)
    assert r.returncode == EXIT_NOT_FOUND, r
    assert one_error_line(r.stderr) == \
        "ferry: error: host-a: no VM named nosuchvm on this host"
    assert r.stdout == ""

    # start with a kernel missing from shared storage
    (c.shared / "guest" / "old-vmlinuz").write_bytes(
        (c.shared / "guest" / "vmlinuz").read_bytes())
    c.define_vm(H, "stale", kernel="guest/old-vmlinuz")
    (c.shared / "guest" / "old-vmlinuz").unlink()
    r = c.cli("vm", "start", "stale", host=H, check=False)
    assert r.returncode == EXIT_FAILED, r
    line = one_error_line(r.stderr)
    assert "kernel guest/old-vmlinuz is not a file in shared storage" in line, line
    assert line.startswith("ferry: error: host-a: "), line
    info = c.vm_info(H, "stale")
    assert info["state"] == "shutoff" and info["pid"] == 0, info

    # invalid definitions: the server's own message, word for word
    bad = c.vm_definition("tiny", memory_mib=8)
    status, reply = c.api(H, "POST", "/v1/vms", bad)
    assert status == 400, reply
    deffile = c.dir / "tiny.json"
    deffile.write_text(json.dumps(bad))
    r = c.cli("vm", "define", str(deffile), host=H, check=False)
    assert r.returncode == EXIT_FAILED, r
    assert one_error_line(r.stderr) == f"ferry: error: host-a: {reply['error']['message']}"
    assert reply["error"]["message"] == "vm.memory_mib must be between 16 and 1048576"
    deffile.write_text(json.dumps(dict(c.vm_definition("tiny"), size="XL")))
    r = c.cli("vm", "define", str(deffile), host=H, check=False)
    assert r.returncode == EXIT_FAILED, r
    assert one_error_line(r.stderr) == 'ferry: error: host-a: vm: unknown field "size"'
    # a definition over the API's 64 KiB body limit: ferryd's 413 reaches the
    # CLI (it used to be lost to a connection reset now and then)
    deffile.write_text(json.dumps(c.vm_definition("tiny", extra="x" * MAX_BODY)))
    for _ in range(5):
        r = c.cli("vm", "define", str(deffile), host=H, check=False)
        assert r.returncode == EXIT_FAILED, r
        assert one_error_line(r.stderr) == \
            "ferry: error: host-a: HTTP status 413: request too large"
    # a file that is not JSON at all fails in the CLI, naming the file
    deffile.write_text("name: tiny\n")
    r = c.cli("vm", "define", str(deffile), host=H, check=False)
    assert r.returncode == EXIT_FAILED, r
    assert one_error_line(r.stderr).startswith(f"ferry: error: {deffile}: line 1: ")
    assert [v["name"] for v in c.list_vms(H)] == ["stale"]


# --------------------------------------------------------------------------
# 7. ferry pki


def _cert_names(path):
    """(subject CN, IP SANs) of a PEM certificate."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        ips = []
    return cn, ips


def test_pki(make_cluster):
    c = make_cluster(hosts=2, start=False)
    pki = c.pki
    assert mode(pki / "ca.key") == 0o600
    for h in c.hosts.values():
        assert mode(pki / "hosts" / f"{h.name}.key") == 0o600
        cn, ips = _cert_names(pki / "hosts" / f"{h.name}.crt")
        assert cn == h.name and ips == [h.address], (cn, ips)
    assert mode(pki / "users" / "admin.key") == 0o600
    assert _cert_names(pki / "users" / "admin.crt") == ("admin", [])
    assert _cert_names(pki / "ca.crt")[0] != "admin"

    # nothing is overwritten
    ca = [(pki / f).read_bytes() for f in ("ca.crt", "ca.key")]
    r = c.pki_run("init", check=False)
    assert r.returncode != 0, r
    assert "already exists" in one_error_line(r.stderr), r.stderr
    assert [(pki / f).read_bytes() for f in ("ca.crt", "ca.key")] == ca
    key = (pki / "users" / "admin.key").read_bytes()
    r = c.pki_run("user", "admin", check=False)
    assert r.returncode != 0, r
    one_error_line(r.stderr)
    assert (pki / "users" / "admin.key").read_bytes() == key
    r = c.pki_run("host", "host-c", check=False)  # no --ip/--dns
    assert r.returncode == EXIT_USAGE, r
