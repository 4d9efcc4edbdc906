"""ferryd under systemd's Type=notify, without systemd: a fake NOTIFY_SOCKET
(a unix datagram socket this test listens on) receives what sd_notify
sends. READY=1 must come once the API listens; SIGHUP (what `systemctl
reload` sends, dist/systemd/ferryd.service) brackets the policy reload
with RELOADING=1 and READY=1; SIGTERM announces STOPPING=1.

Run: /usr/bin/python3 -m pytest -q tests/system/test_notify.py
"""

import signal
import socket
import time

import pytest

A = "host-a"


def receive(sock, timeout=20.0):
    """The next notification as a dict of its KEY=VALUE lines."""
    sock.settimeout(timeout)
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines() if line)


def api_accepts(h):
    with socket.create_connection((h.address, h.port), timeout=2):
        return True


@pytest.fixture
def notified(make_cluster):
    """A one-host cluster whose ferryd reports to a socket we hold ->
    (cluster, host, socket)."""
    c = make_cluster(hosts=1, start=False)
    path = str(c.dir / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    c.start_host(A, wait=False, env={"NOTIFY_SOCKET": path})
    yield c, c.hosts[A], sock
    sock.close()


def test_ready_after_listen_reload_stop(notified):
    c, h, sock = notified
    msg = receive(sock)
    # the first word ferryd says is READY=1, and by then the API listens
    assert msg.get("READY") == "1", msg
    assert api_accepts(h)
    assert f"port {h.port}" in msg["STATUS"]
    c.wait_host(A)

    before = time.clock_gettime(time.CLOCK_MONOTONIC)
    h.proc.send_signal(signal.SIGHUP)
    msg = receive(sock)
    assert msg.get("RELOADING") == "1", msg
    usec = int(msg["MONOTONIC_USEC"])
    assert before * 1e6 <= usec <= time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
    msg = receive(sock)
    assert msg.get("READY") == "1" and msg["STATUS"] == "policy reloaded", msg
    audit = c.api_ok(A, "GET", "/v1/audit?action=policy.reload")["records"]
    assert [r["outcome"] for r in audit] == ["ok"]

    # a broken policy: the reload is refused, ferryd stays ready
    c.write_policy(A, "{not json")
    h.proc.send_signal(signal.SIGHUP)
    assert receive(sock).get("RELOADING") == "1"
    msg = receive(sock)
    assert msg.get("READY") == "1" and "refused" in msg["STATUS"], msg
    assert c.cli("host", "info", host=A, check=False).returncode == 0

    h.proc.send_signal(signal.SIGTERM)
    msg = receive(sock)
    assert msg.get("STOPPING") == "1", msg
    # one SIGTERM, as systemd sends: ferryd ends its work and exits 0
    assert h.proc.wait(timeout=60) == 0
    c.kill_host(A)  # the bookkeeping of a host that has exited

