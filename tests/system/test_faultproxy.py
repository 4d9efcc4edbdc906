"""Tests of the fault-injecting proxy itself (faultproxy.py), against small
local servers on 127.0.0.1; no ferryd, no QEMU.

Run: /usr/bin/python3 -m pytest tests/system/test_faultproxy.py -s
"""

import hashlib
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import FaultProxy  # noqa: E402

MiB = 1 << 20
IO_TIMEOUT = 15.0
RESET_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class _Rec:
    """What a test server saw on one connection."""

    def __init__(self, sock, store):
        self.sock = sock
        self.store = store
        self.data = bytearray()
        self.total = 0
        self.outcome = None  # "eof" or the exception's class name
        self.done = threading.Event()
        self.last_recv = time.monotonic()


class Server:
    """Threaded TCP server on 127.0.0.1.

    mode "echo": send back what arrives, half-close on EOF;
    mode "sink": read until EOF;
    mode "source": send `payload` then close.
    store=True keeps every received byte in rec.data.
    """

    def __init__(self, mode, store=False, payload=b""):
        self.mode, self.store, self.payload = mode, store, payload
        self.ls = socket.create_server(("127.0.0.1", 0))
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.recs = []
        self._stop = False
        self._threads = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self):
        while not self._stop:
            try:
                s, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(IO_TIMEOUT)
            rec = _Rec(s, self.store)
            self.recs.append(rec)
            t = threading.Thread(target=self._serve, args=(rec,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, rec):
        s = rec.sock
        buf = bytearray(MiB)
        mv = memoryview(buf)
        try:
            if self.mode == "source":
                s.sendall(self.payload)
                rec.outcome = "sent"
                return
            while True:
                n = s.recv_into(buf)
                if n == 0:
                    rec.outcome = "eof"
                    if self.mode == "echo":
                        s.shutdown(socket.SHUT_WR)
                    return
                rec.last_recv = time.monotonic()
                if rec.store:
                    rec.data += mv[:n]
                rec.total += n
                if self.mode == "echo":
                    s.sendall(mv[:n])
        except Exception as e:  # noqa: BLE001 - recorded for the test
            rec.outcome = type(e).__name__
        finally:
            rec.done.set()
            s.close()

    def wait_conns(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.recs) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(self.recs) >= n, f"server saw {len(self.recs)} connections, wanted {n}"
        return self.recs

    def close(self):
        self._stop = True
        self.ls.close()
        self._t.join(2)
        for t in self._threads:
            t.join(2)


@pytest.fixture
def servers():
    made = []

    def make(*a, **kw):
        s = Server(*a, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def proxies():
    made = []

    def make(server, **kw):
        p = FaultProxy("127.0.0.1", server.port, **kw).start()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
        assert not p.crashes, p.crashes


def connect(p):
    s = socket.create_connection(("127.0.0.1", p.port), timeout=IO_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def refused(p):
    """Connect to p and return how the connection ended without any data:
    a reset may already come out of connect() itself."""
    try:
        c = connect(p)
    except ConnectionResetError:
        return "ConnectionResetError"
    with c:
        data, outcome = recv_all(c)
    assert data == b""
    return outcome


def recv_all(s, expect=None):
    """Read until EOF, or until `expect` bytes; returns (data, outcome) with
    outcome "complete", "eof" or the reset exception's class name."""
    if expect is None:
        out = bytearray()
        try:
            while True:
                chunk = s.recv(MiB)
                if not chunk:
                    return bytes(out), "eof"
                out += chunk
        except RESET_ERRORS as e:
            return bytes(out), type(e).__name__
    out = bytearray(expect)
    mv = memoryview(out)
    got = 0
    try:
        while got < expect:
            n = s.recv_into(mv[got:])
            if n == 0:
                return bytes(mv[:got]), "eof"
            got += n
        return bytes(out), "complete"
    except RESET_ERRORS as e:
        return bytes(mv[:got]), type(e).__name__


def send_in_thread(s, data, half_close=True):
    """sendall(data) (then SHUT_WR) in a thread; returns (thread, result dict)."""
    res = {}

    def run():
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            res["outcome"] = "sent"
        except OSError as e:
            res["outcome"] = type(e).__name__
        res["t"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, res


def diff_positions(a, b):
    assert len(a) == len(b)
    # compare in 64 KiB blocks, then bytes only inside differing blocks
    out = []
    step = 1 << 16
    for i in range(0, len(a), step):
        if a[i:i + step] != b[i:i + step]:
            out += [i + j for j, (x, y) in enumerate(zip(a[i:i + step], b[i:i + step])) if x != y]
    return out


# ----------------------------------------------------------------------------


def test_passthrough_integrity_and_throughput(servers, proxies):
    size = 50 * 10**6
    data = os.urandom(size)
    want = hashlib.sha256(data).hexdigest()

    # both directions at once through an echo server
    echo = servers("echo")
    p = proxies(echo)
    c = connect(p)
    t0 = time.monotonic()
    t, res = send_in_thread(c, data)
    got, outcome = recv_all(c, size)
    dt = time.monotonic() - t0
    t.join(IO_TIMEOUT)
    assert res["outcome"] == "sent" and outcome == "complete"
    assert hashlib.sha256(got).hexdigest() == want
    assert c.recv(1) == b""  # the half-close went through both ways
    c.close()
    assert p.bytes_forwarded("up") == size and p.bytes_forwarded("down") == size
    assert p.connections_accepted == 1 and not p.errors
    echo_rate = size / dt / 1e6

    # one direction only, into a sink
    sink = servers("sink")
    p2 = proxies(sink)
    c = connect(p2)
    t0 = time.monotonic()
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    assert c.recv(1) == b""  # the sink saw EOF and closed: everything arrived
    dt = time.monotonic() - t0
    c.close()
    rec = sink.wait_conns(1)[0]
    assert rec.done.wait(5) and rec.total == size and rec.outcome == "eof"
    sink_rate = size / dt / 1e6

    # The echo figure shares this process's 2 cores and GIL between 5 busy
    # threads (client sender and receiver, echo server, both proxy pumps), so
    # the floor applies to the bytes the proxy moved per second, both ways.
    print(f"\nfaultproxy throughput: one-way {sink_rate:.0f} MB/s; echo "
          f"{2 * echo_rate:.0f} MB/s through the proxy ({echo_rate:.0f} MB/s each way)")
    assert sink_rate > 100 and 2 * echo_rate > 100


def test_cut_up_resets_both_sides_and_refuses_until_heal(servers, proxies):
    n = MiB + 12345
    sink = servers("sink", store=True)
    p = proxies(sink, cut=(n, "up"))  # armed through the constructor
    c = connect(p)
    data = os.urandom(8 * MiB)
    t, res = send_in_thread(c, data, half_close=False)
    assert p.wait_event("cut fired", 5)
    t.join(3)
    assert not t.is_alive(), "client's send did not fail after the cut"
    assert res["outcome"] in ("ConnectionResetError", "BrokenPipeError")
    rec = sink.wait_conns(1)[0]
    assert rec.done.wait(3)
    assert rec.outcome in ("ConnectionResetError", "eof")
    assert rec.total <= n and bytes(rec.data) == data[:rec.total]
    assert p.bytes_forwarded("up") == n
    print(f"\ncut at {n}: sink received {rec.total} bytes then {rec.outcome}; "
          f"client: {res['outcome']}")
    c.close()

    # while cut: new connections are reset right after accept
    assert refused(p) in ("ConnectionResetError", "eof")
    assert p.wait_for(lambda: p.connections_refused == 1, 2)
    assert len(sink.recs) == 1

    p.heal()
    assert not p.is_cut
    c3 = connect(p)
    c3.sendall(b"after heal")
    c3.shutdown(socket.SHUT_WR)
    c3.close()
    rec3 = sink.wait_conns(2)[1]
    assert rec3.done.wait(3) and bytes(rec3.data) == b"after heal"


def test_cut_down_immediately_and_after_bytes(servers, proxies):
    n = 3 * MiB + 7
    payload = os.urandom(16 * MiB)
    src = servers("source", payload=payload)
    p = proxies(src)
    p.cut(n, "down")
    c = connect(p)
    t0 = time.monotonic()
    got, outcome = recv_all(c)
    assert time.monotonic() - t0 < 5
    assert outcome in ("ConnectionResetError", "eof")
    assert len(got) <= n and got == payload[:len(got)]
    assert p.bytes_forwarded("down") == n
    print(f"\ncut down at {n}: client received {len(got)} bytes then {outcome}")
    c.close()

    # cut() with no threshold fires at once, on an idle connection too
    p.heal()
    c = connect(p)
    c.settimeout(IO_TIMEOUT)
    assert c.recv(1)  # flowing again
    p.cut()
    got, outcome = recv_all(c)
    assert outcome in ("ConnectionResetError", "eof")
    assert p.wait_for(lambda: p.active_connections == 0, 2)
    c.close()


def test_stall_holds_then_heal_delivers_everything(servers, proxies):
    n = 2 * MiB + 99
    echo = servers("echo", store=True)
    p = proxies(echo)
    p.stall(n, "up")
    data = os.urandom(6 * MiB)
    c = connect(p)
    t, res = send_in_thread(c, data)
    got = {}
    rt = threading.Thread(target=lambda: got.update(r=recv_all(c, len(data))), daemon=True)
    rt.start()
    assert p.wait_event("stall fired", 5)
    rec = echo.wait_conns(1)[0]
    assert p.wait_for(lambda: rec.total == n, 2), rec.total
    time.sleep(0.1)  # let the echo of the last bytes reach the proxy
    up, down, seen = p.bytes_forwarded("up"), p.bytes_forwarded("down"), rec.total
    time.sleep(1.0)
    assert (p.bytes_forwarded("up"), p.bytes_forwarded("down"), rec.total) == (up, down, seen)
    assert up == n and seen == n and down < n  # echo traffic held too
    assert rt.is_alive() and rec.outcome is None  # sockets stay open
    assert p.is_stalled

    p.heal()
    rt.join(IO_TIMEOUT)
    t.join(IO_TIMEOUT)
    assert got["r"] == (data, "complete")
    assert res["outcome"] == "sent"
    assert bytes(rec.data) == data
    assert c.recv(1) == b""
    c.close()
    assert not p.errors


def test_stall_holds_new_connections(servers, proxies):
    echo = servers("echo")
    p = proxies(echo)
    p.stall()  # at once
    c = connect(p)
    c.sendall(b"ping")
    c.settimeout(1.0)
    with pytest.raises(socket.timeout):
        c.recv(4)
    c.settimeout(IO_TIMEOUT)
    p.heal()
    assert recv_all(c, 4) == (b"ping", "complete")
    c.close()


def test_corrupt_flips_one_byte_at_the_offset(servers, proxies):
    echo = servers("echo", store=True)
    p = proxies(echo)
    size = 5 * MiB
    up_at, down_at = 3 * MiB + 17, 1234567
    p.corrupt(up_at, "up", xor=0x5A)
    p.corrupt(down_at, "down")
    data = os.urandom(size)
    c = connect(p)
    t, res = send_in_thread(c, data)
    got, outcome = recv_all(c, size)
    t.join(IO_TIMEOUT)
    c.close()
    rec = echo.wait_conns(1)[0]
    assert rec.done.wait(5)
    server_saw = bytes(rec.data)
    assert diff_positions(data, server_saw) == [up_at]
    assert server_saw[up_at] == data[up_at] ^ 0x5A
    assert diff_positions(data, got) == sorted([up_at, down_at])
    assert got[down_at] == server_saw[down_at] ^ 0xFF
    assert p.pending_corruptions == 0
    assert sum("corrupt fired" in e for _, e in p.events) == 2

    # global offsets keep counting on the next connection; per-connection ones
    # count from that connection's start; offset 0 works
    p.corrupt(size, "up")  # first byte of connection 1 in the global stream
    p.corrupt(100, "up", conn=1)
    c = connect(p)
    c.sendall(data[:MiB])
    c.shutdown(socket.SHUT_WR)
    got2, _ = recv_all(c, MiB)
    c.close()
    assert diff_positions(data[:MiB], got2) == [0, 100]
    with pytest.raises(ValueError):
        p.corrupt(10, "up")  # already forwarded

    # relative: from what has been forwarded when armed (size + MiB so far)
    p.corrupt(7, "up", relative=True)
    with pytest.raises(ValueError):
        p.corrupt(7, "up", conn=2, relative=True)
    c = connect(p)
    c.sendall(data[:MiB])
    c.shutdown(socket.SHUT_WR)
    got3, _ = recv_all(c, MiB)
    c.close()
    assert diff_positions(data[:MiB], got3) == [7]


def test_capture_and_contains_across_recv_boundaries(servers, proxies):
    echo = servers("echo")
    p = proxies(echo, capture=True)
    first, second = b"x" * 5000 + b"hello SECRET-", b"NEEDLE world" + b"y" * 3000
    c = connect(p)
    c.sendall(first)
    # the proxy has forwarded (so recv'd) all of `first` before `second` exists
    assert p.wait_bytes("up", len(first), 5)
    c.sendall(second)
    c.shutdown(socket.SHUT_WR)
    got, outcome = recv_all(c)
    c.close()
    assert got == first + second and outcome == "eof"
    assert p.captured("up") == first + second
    assert p.captured("down") == first + second
    assert p.contains(b"SECRET-NEEDLE")
    assert p.contains(b"SECRET-NEEDLE", "down")
    assert not p.contains(b"SECRET-NEEDLE!")
    assert not p.contains(b"not in there")

    # a second connection's capture is kept apart and concatenated in order
    c = connect(p)
    c.sendall(b"two")
    c.shutdown(socket.SHUT_WR)
    assert recv_all(c) == (b"two", "eof")
    c.close()
    assert p.captured("up", conn=1) == b"two"
    assert p.captured("up") == first + second + b"two"
    assert not p.contains(b"yyytwo")  # connections are searched one by one
    assert p.wait_for(lambda: p.active_connections == 0, 2)

    p.clear_capture()
    assert p.captured("up") == b""
    p.capture(False)
    c = connect(p)
    c.sendall(b"unseen")
    c.shutdown(socket.SHUT_WR)
    assert recv_all(c) == (b"unseen", "eof")
    c.close()
    assert not p.contains(b"unseen")


def test_capture_limit(servers, proxies):
    sink = servers("sink")
    p = proxies(sink, capture=True, capture_limit=1000)
    c = connect(p)
    data = os.urandom(1500)
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    assert recv_all(c) == (b"", "eof")
    c.close()
    assert p.bytes_forwarded("up") == 1500
    assert p.captured("up") == data[:1000] and p.captured("down") == b""
    assert p.capture_truncated
    assert p.wait_event("capture limit", 1)


def test_concurrent_connections(servers, proxies):
    echo = servers("echo")
    p = proxies(echo)
    k, size = 4, 8 * MiB
    datas = [os.urandom(size) for _ in range(k)]
    results = [None] * k

    def client(i):
        c = connect(p)
        t, res = send_in_thread(c, datas[i])
        got, outcome = recv_all(c, size)
        t.join(IO_TIMEOUT)
        results[i] = (hashlib.sha256(got).digest() == hashlib.sha256(datas[i]).digest(),
                      outcome, res.get("outcome"))
        c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [(True, "complete", "sent")] * k
    assert p.connections_accepted == k
    assert p.bytes_forwarded("up") == k * size == p.bytes_forwarded("down")
    assert sorted(p.bytes_forwarded("up", conn=i) for i in range(k)) == [size] * k
    assert p.wait_for(lambda: p.active_connections == 0, 2)
    assert not p.errors


def test_cut_resets_every_connection(servers, proxies):
    echo = servers("echo")
    p = proxies(echo)
    conns = [connect(p) for _ in range(3)]
    for c in conns:
        c.sendall(b"hi")
        assert recv_all(c, 2) == (b"hi", "complete")
    # relative: counted from the bytes admitted so far (bytes_forwarded() may
    # lag a send() that has just returned)
    p.cut(10, "up", relative=True)
    conns[1].sendall(b"0123456789abcdef")
    for c in conns:
        got, outcome = recv_all(c)
        assert outcome in ("ConnectionResetError", "eof")
        c.close()
    assert p.bytes_forwarded("up") == 6 + 10
    for rec in echo.wait_conns(3):
        assert rec.done.wait(3) and rec.outcome in ("ConnectionResetError", "eof")


def test_target_down_is_logged_not_fatal(proxies):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # a port nobody listens on
    port = s.getsockname()[1]

    class Dead:
        pass

    dead = Dead()
    dead.port = port
    p = proxies(dead)
    assert refused(p) in ("ConnectionResetError", "eof")
    s.close()
    assert p.wait_for(lambda: p.errors, 2)
    assert "connect to" in p.errors[0][1]
    assert not p.crashes


def test_stop_closes_connections_and_context_manager(servers):
    echo = servers("echo")
    with FaultProxy("127.0.0.1", echo.port) as p:
        c = connect(p)
        c.sendall(b"x")
        assert recv_all(c, 1) == (b"x", "complete")
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 2
    assert recv_all(c)[1] in ("ConnectionResetError", "eof")
    c.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p.port), timeout=1).close()
    assert not p.crashes


def test_refuses_non_loopback_and_bad_arguments():
    with pytest.raises(ValueError):
        FaultProxy("192.0.2.1", 80)
    p = FaultProxy("127.0.0.2", 1)
    with pytest.raises(ValueError):
        p.cut(10, "sideways")
    with pytest.raises(ValueError):
        p.corrupt(5, xor=0)
