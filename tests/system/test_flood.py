"""System tests of flood protection (src/guard and its use by ferryd):
floods of bogus handshakes, idle sockets and slow-loris clients, clean
stops with connections in flight, and the request rate per identity.

Every test builds its own cluster (host-a 127.0.0.2, host-b 127.0.0.3,
host-c 127.0.0.4) with its own policy files instead of the permissive
default one, and checks both what a client sees (HTTP status, JSON error,
`ferry` exit code) and what the hosts recorded in their audit logs
(<state_dir>/audit.log, read straight from the file). Shared helpers:
policylib.py.

Run with Debian's interpreter against the ASan build:
    FERRY_BUILD=build-asan /usr/bin/python3 -m pytest tests/system/test_flood.py
"""

import os
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from ferrylib import EXIT_OK, client_hello, expect_tls_refused, wait_until
from policylib import (A, B, KeepAlive, assert_error, assert_runs_only_on,
                       audit_records, boot, find_records, host_roles, last_seq,
                       policy, wait_records)


# --------------------------------------------------------------------------
# helpers


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# --------------------------------------------------------------------------
# flood


FLOOD_SRC = "127.0.0.9"  # the attacker's address; the operator's CLI is 127.0.0.1
SLOW_SRC = "127.0.0.10"  # the slow-loris clients' address


class Flood:
    """Bogus connections from FLOOD_SRC to (address, port) targets, paced to
    about `rate` new connections per second per kind:
      nocert   a TLS 1.3 handshake without a client certificate
      foreign  a TLS 1.3 handshake with a certificate from another CA
      idle     a TCP connection that never sends a byte (held `hold` s)
    Counts what was attempted and how it ended."""

    KINDS = ("nocert", "foreign", "idle")

    def __init__(self, c, targets, foreign_cert, rate=100, hold=3.0, threads_per_kind=3):
        self.targets = targets
        self.rate = rate
        self.hold = hold
        self.tpk = threads_per_kind
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.stats = {k: {"attempted": 0, "connected": 0, "refused": 0} for k in self.KINDS}
        self.ctx = {"nocert": c.ssl_context(cert=None),
                    "foreign": c.ssl_context(cert=foreign_cert)}
        for ctx in self.ctx.values():
            ctx.check_hostname = False
        self.idle = []  # (deadline, socket)
        self.threads = []
        self.started = self.stopped = None

    def _count(self, kind, what):
        with self.lock:
            self.stats[kind][what] += 1

    def _one(self, kind, target):
        self._count(kind, "attempted")
        try:
            s = socket.create_connection(target, timeout=2,
                                         source_address=(FLOOD_SRC, 0))
        except OSError:
            self._count(kind, "refused")
            return
        self._count(kind, "connected")
        if kind == "idle":
            with self.lock:
                self.idle.append((time.monotonic() + self.hold, s))
            return
        try:
            with self.ctx[kind].wrap_socket(s, server_hostname=target[0]) as t:
                t.settimeout(1)
                t.recv(1)  # TLS 1.3: the server's alert arrives after Finished
        except (OSError, ssl.SSLError):
            pass
        finally:
            s.close()

    def _run(self, kind, i):
        period = self.tpk / self.rate
        n = i
        next_t = time.monotonic()
        while not self.stop_ev.is_set():
            self._one(kind, self.targets[n % len(self.targets)])
            n += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()

    def _reaper(self):
        while not self.stop_ev.is_set():
            now = time.monotonic()
            with self.lock:
                old = [s for d, s in self.idle if d <= now]
                self.idle = [(d, s) for d, s in self.idle if d > now]
            for s in old:
                s.close()
            time.sleep(0.1)

    def start(self):
        self.started = time.monotonic()
        for kind in self.KINDS:
            for i in range(self.tpk):
                self.threads.append(threading.Thread(target=self._run, args=(kind, i),
                                                     daemon=True))
        self.threads.append(threading.Thread(target=self._reaper, daemon=True))
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(10)
        self.stopped = time.monotonic()
        with self.lock:
            for _, s in self.idle:
                s.close()
            self.idle = []

    def rates(self):
        secs = (self.stopped or time.monotonic()) - self.started
        with self.lock:
            return {k: round(v["attempted"] / secs) for k, v in self.stats.items()}, secs


class SlowLoris:
    """Clients from SLOW_SRC that send a TLS ClientHello one byte every
    `every` s and never finish it, opened at about `rate` per second against
    the targets in turn. Counts what was attempted, closed by ferryd, and
    how long the longest-lived one was held."""

    def __init__(self, targets, hello, rate=50, every=1.0):
        self.targets, self.hello = targets, hello
        self.rate, self.every = rate, every
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.open = []  # [socket, bytes sent, opened at, next send]
        self.stats = {"attempted": 0, "closed": 0, "max_open": 0, "longest_s": 0.0}
        self.threads = [threading.Thread(target=self._opener, daemon=True),
                        threading.Thread(target=self._trickler, daemon=True)]

    def _opener(self):
        n, next_t = 0, time.monotonic()
        while not self.stop_ev.is_set():
            with self.lock:
                self.stats["attempted"] += 1
            try:
                s = socket.create_connection(self.targets[n % len(self.targets)],
                                             timeout=2, source_address=(SLOW_SRC, 0))
                s.setblocking(False)
                now = time.monotonic()
                with self.lock:
                    self.open.append([s, 0, now, now])
                    self.stats["max_open"] = max(self.stats["max_open"], len(self.open))
            except OSError:
                with self.lock:
                    self.stats["closed"] += 1
            n += 1
            next_t += 1 / self.rate
            time.sleep(max(0.0, next_t - time.monotonic()))

    def _alive(self, conn):
        s, sent, _, due = conn
        try:
            if s.recv(1, socket.MSG_DONTWAIT) == b"":
                return False
        except BlockingIOError:
            pass
        except OSError:
            return False
        if time.monotonic() >= due:
            try:
                s.send(self.hello[sent % len(self.hello):][:1])
            except BlockingIOError:
                pass
            except OSError:
                return False
            conn[1] += 1
            conn[3] = due + self.every
        return True

    def _trickler(self):
        while not self.stop_ev.is_set():
            with self.lock:
                conns = list(self.open)
            gone = [x for x in conns if not self._alive(x)]
            now = time.monotonic()
            with self.lock:
                for x in gone:
                    self.open.remove(x)
                    x[0].close()
                    self.stats["closed"] += 1
                    self.stats["longest_s"] = max(self.stats["longest_s"], now - x[2])
            self.stop_ev.wait(0.05)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(10)
        with self.lock:
            now = time.monotonic()
            for s, _, opened, _ in self.open:
                self.stats["longest_s"] = max(self.stats["longest_s"], now - opened)
                s.close()
            self.open = []


class Sampler:
    """VmRSS (KiB) and open descriptors of pid every `every` seconds in a
    thread."""

    def __init__(self, pid, every=0.2):
        self.pid, self.every = pid, every
        self.samples = []
        self.fds = []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_ev.is_set():
            self.samples.append(rss_kib(self.pid))
            self.fds.append(fd_count(self.pid))
            self.stop_ev.wait(self.every)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.t.join(5)


REFUSALS = ("conn.limited", "auth.failed", "rate.limited", "request.refused",
            "migration.channel_refused", "conn.timeout")
DEADLINE_S = 10  # limits.deadline_s by default
MiB_KIB = 1024
MIG_FIGURES = ("total_ms", "downtime_ms", "iterations", "ram_bytes", "mean_mbps")


def test_flood(make_cluster):
    c = make_cluster(start=False)
    foreign = c.dir / "foreign-pki"
    c.pki_run("init", "--cluster", "foreign", dir=foreign)
    c.pki_run("user", "admin", dir=foreign)
    c.start_host(A)
    # ASan keeps up to 256 MiB of freed memory in quarantine, which would
    # read as growth: a small one keeps RSS close to what ferryd holds
    c.start_host(B, env={"ASAN_OPTIONS": "quarantine_size_mb=8:"
                         "allocator_release_to_os_interval_ms=500"}
                 if c.is_asan_build() else None)
    hb = c.hosts[B]
    api, data = (hb.address, hb.port), (hb.address, hb.port + 1)
    uuid = boot(c, A, "vm1")

    # the unloaded reference: the same VM between the same hosts, there and
    # back, after a first round trip that warms up (the first migration
    # after boot is the slowest); the mean of the two, as one run alone
    # varies a lot on a busy TCG host
    unloaded = []
    with Sampler(hb.pid) as quiet:
        for i, (src, dst) in enumerate(((A, B), (B, A)) * 2):
            r = c.migrate(src, "vm1", dst)
            assert r.returncode == EXIT_OK, r.stderr
            print("\nflood: unloaded", {k: r.summary.get(k) for k in MIG_FIGURES})
            if i >= 2:
                unloaded.append(r.summary["total_ms"])
    t_unloaded = sum(unloaded) / len(unloaded)
    # one bogus handshake of each kind first: audited with its reason
    for cert, reason in ((None, "TLS handshake failed: certificate required"),
                         (c.user_cert("admin", pki=foreign),
                          "TLS handshake failed: unknown CA")):
        seq = last_seq(c, B)
        expect_tls_refused(lambda: c.api(B, "GET", "/v1/host", cert=cert))
        x = wait_records(c, B, since_seq=seq, action="auth.failed")[0]
        assert (x["target"], x["detail"]["count"], x["detail"]["sources"]) == \
            ("127.0.0.1", 1, {"127.0.0.1": 1}), x
        assert x["detail"]["first_reason"].startswith(reason), x
    pid = hb.pid
    time.sleep(1)
    rss_before, fds_before = rss_kib(pid), fd_count(pid)
    seq0 = last_seq(c, B)

    # two idle sockets from before the flood: ferryd must close them itself
    idle = [socket.create_connection(t, timeout=30, source_address=(FLOOD_SRC, 0))
            for t in (api, data)]
    idle_t0 = time.monotonic()
    fl = Flood(c, [api, data], c.user_cert("admin", pki=foreign), rate=100, hold=3.0)
    # and slow-loris clients, 50 new ones a second from their own address
    # (without a deadline each would be held for ever: 3,000 of them once
    # held 3,000 descriptors and 150 MB)
    hello_ctx = c.ssl_context(cert=None)
    hello_ctx.check_hostname = False
    slow = SlowLoris([api, data], client_hello(hello_ctx), rate=50)
    # into the flooded host twice (and back between), timed like the
    # unloaded reference: the mean of two
    flooded = []
    with Sampler(pid) as during:
        fl.start()
        slow.start()
        try:
            time.sleep(3)
            for src, dst in ((A, B), (B, A), (A, B)):
                r = c.migrate(src, "vm1", dst, timeout=120)
                assert r.returncode == EXIT_OK, r.stderr
                print("\nflood: flooded", src, "->", dst,
                      {k: r.summary.get(k) for k in MIG_FIGURES})
                if dst == B:
                    flooded.append(r.summary["total_ms"])
            # long enough for slow-loris clients to meet the deadline twice
            t_end = fl.started + 2 * DEADLINE_S + 3
            time.sleep(max(2.0, t_end - time.monotonic()))
        finally:
            fl.stop()
            slow.stop()
    rates, secs = fl.rates()
    slow_rate = round(slow.stats["attempted"] / secs)
    t_flood = sum(flooded) / len(flooded)
    # idle connections are dropped at the deadline (limits.deadline_s)
    for s in idle:
        s.settimeout(max(1.0, 15 - (time.monotonic() - idle_t0)))
        try:
            got = s.recv(1)
        except ConnectionResetError:
            got = b""
        except socket.timeout:
            got = None
        s.close()
        assert got == b"", f"ferryd kept an idle connection open for 15 s ({got!r})"
    # the flood's idle sockets time out too; then look at memory again
    wait_until(lambda: fd_count(pid) <= fds_before + 4, 20, 0.5,
               "host-b's connections of the flood to be closed")
    time.sleep(1)
    rss_after, fds_after = rss_kib(pid), fd_count(pid)
    rss_peak, fds_peak = max(during.samples), max(during.fds)
    figures = (f"unloaded {unloaded} ms (mean {t_unloaded:.0f}), flooded {flooded} ms "
               f"(mean {t_flood:.0f}) "
               f"({t_flood / t_unloaded:.2f}x); host-b VmRSS peak during the unloaded "
               f"migrations {max(quiet.samples)} KiB, before {rss_before} KiB, "
               f"peak during {rss_peak} KiB, after {rss_after} KiB; host-b fds "
               f"peak during the unloaded migrations {max(quiet.fds)}, before "
               f"{fds_before}, peak during {fds_peak}, after {fds_after}; "
               f"flood {sum(rates.values())}/s {rates} for {secs:.1f} s, "
               f"{fl.stats}; slow-loris {slow_rate}/s {slow.stats}")
    print("\nflood:", figures)

    # the flood really was a flood, and the migration did not suffer from it
    assert sum(rates.values()) >= 150, figures
    assert all(v["attempted"] >= 100 for v in fl.stats.values()), figures
    assert slow.stats["attempted"] >= 500, figures
    assert t_flood <= 2 * t_unloaded, figures
    assert rss_peak - rss_before < 64 * MiB_KIB, figures
    assert rss_after - rss_before < 64 * MiB_KIB, figures
    # descriptors: bounded by the unauthenticated connections held at once
    # (conns_total, 256; two sources hold conns_per_addr each) and the
    # refused ones on their way out, not one per slow client (without the
    # deadline: 800 after 23 s, growing)
    assert fds_peak - max(quiet.fds) <= 256, figures
    # no slow-loris client outlived the deadline (give or take a loaded
    # machine's lag)
    assert slow.stats["longest_s"] <= DEADLINE_S + 5, figures
    assert_runs_only_on(c, B, "vm1", uuid, [A])

    # the refusals were audited, coalesced, and none hit the real source
    # (host-a) or the operator (the CLI, 127.0.0.1)
    refusals = [x for x in audit_records(c, B)[seq0:] if x["action"] in REFUSALS]
    by_action, slow_by = {}, {}
    for x in refusals:
        d = x["detail"]
        assert (x["outcome"], x["actor"]) == ("refused", "-"), x
        assert d["count"] >= 1 and sum(d["sources"].values()) + d.get("other_sources", 0) \
            <= d["count"], x
        assert set(d["sources"]) <= {FLOOD_SRC, SLOW_SRC}, x
        by_action[x["action"]] = by_action.get(x["action"], 0) + d["count"]
        if SLOW_SRC in d["sources"]:
            slow_by[x["action"]] = slow_by.get(x["action"], 0) + d["sources"][SLOW_SRC]
    print("flood: refusals audited:", by_action, "in", len(refusals), "records;",
          "of the slow-loris clients:", slow_by)
    assert by_action.get("conn.limited", 0) > 0, by_action
    assert by_action.get("auth.failed", 0) > 0, by_action
    # the slow-loris clients were counted (over the cap: refused) and cut
    # at the deadline (audited as such); only those still open when the
    # flood stopped closed in the middle of their handshake
    assert slow_by.get("conn.limited", 0) > 0 and slow_by.get("conn.timeout", 0) > 0, slow_by
    gave_up = slow_by.get("auth.failed", 0) + slow_by.get("migration.channel_refused", 0)
    assert gave_up <= slow.stats["max_open"], (slow_by, slow.stats)
    attempted = sum(v["attempted"] for v in fl.stats.values()) + slow.stats["attempted"]
    assert sum(by_action.values()) <= attempted + 2, (by_action, attempted)
    # coalesced: a handful of records per second, not one per connection
    assert len(refusals) <= len(REFUSALS) * (secs + 4), len(refusals)
    assert len(refusals) < sum(by_action.values()) / 5, (len(refusals), by_action)


def test_clients_closing_without_close_notify_are_not_failures(make_cluster):
    """An authenticated client that just closes its socket (Python's
    http.client does; OpenSSL 3 then raises "unexpected EOF" on the server)
    is not a failed authentication; a client without a certificate is."""
    c = make_cluster(hosts=1)
    for _ in range(3):
        c.api_ok(A, "GET", "/v1/host")
    time.sleep(2.5)  # refusals are flushed once a second
    assert not find_records(c, A, action="auth.failed"), \
        find_records(c, A, action="auth.failed")
    expect_tls_refused(lambda: c.api(A, "GET", "/v1/host", cert=None))
    (x,) = wait_records(c, A, action="auth.failed")
    assert x["detail"]["count"] == 1, x


def test_stop_wakes_pending_data_plane_connections(make_cluster):
    """SIGTERM while unauthenticated data-plane connections wait for their
    handshake: ferryd shuts them and exits at once, instead of waiting out
    the handshake timeout (5 s) with threads that still use what it frees.
    The sanitizer build reports any such use at the cluster's teardown."""
    c = make_cluster(hosts=1)
    h = c.hosts[A]
    data = (h.address, h.port + 1)
    socks = [socket.create_connection(data, timeout=10) for _ in range(8)]
    half = socket.create_connection(data, timeout=10)
    half.sendall(b"\x16\x03\x01")  # the start of a TLS record, never finished
    time.sleep(0.5)
    t0 = time.monotonic()
    assert c.stop_host(A) == 0
    took = time.monotonic() - t0
    for s in socks + [half]:
        s.close()
    assert took < 4.0, f"ferryd took {took:.1f} s to stop"


def test_stop_with_api_handshakes_in_flight(make_cluster):
    """SIGTERM while API clients sit between their ClientHello and the end
    of the handshake (counted by the guard): ferryd exits cleanly; the
    sanitizer build reports any use of freed state at the teardown."""
    c = make_cluster(hosts=1)
    h = c.hosts[A]
    socks = []
    for _ in range(4):
        ctx = c.ssl_context(cert=None)
        ctx.check_hostname = False
        out = ssl.MemoryBIO()
        obj = ctx.wrap_bio(ssl.MemoryBIO(), out)
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()  # writes the ClientHello to `out`
        hello = out.read()
        assert hello[:1] == b"\x16", hello[:8]
        s = socket.create_connection((h.address, h.port), timeout=10)
        s.sendall(hello)
        socks.append((s, obj))
    time.sleep(1)  # the server has answered the ClientHellos
    assert c.stop_host(A) == 0
    for s, _ in socks:
        s.close()


# --------------------------------------------------------------------------
# request rate per identity


def test_request_rate_limit(make_cluster):
    rate, burst = 5, 10
    c = make_cluster(hosts=1, start=False, users=("admin", "ops", "viewer"),
                     ferryd_extra={"limits": {"requests_per_s": rate,
                                              "request_burst": burst}})
    c.write_policy(A, policy({"admin": ["admin"], "operator": ["ops"],
                              "auditor": ["viewer"], "host": host_roles(c)}, []))
    c.start_all()
    seq0 = last_seq(c, A)
    ops, viewer = KeepAlive(c, A, "ops"), KeepAlive(c, A, "viewer")
    try:
        got, viewer_got = [], []
        t0 = time.monotonic()
        for i in range(40):
            got.append(ops.request("GET", "/v1/vms"))
            if i % 4 == 0:
                viewer_got.append(viewer.request("GET", "/v1/host"))
        elapsed = time.monotonic() - t0
        ok = [s for s, _ in got if s == 200]
        limited = [(s, r) for s, r in got if s == 429]
        assert len(ok) + len(limited) == len(got), got
        # the burst, plus what refilled meanwhile
        assert burst <= len(ok) <= burst + rate * elapsed + 1, (len(ok), elapsed)
        assert len(limited) >= 40 - burst - rate * elapsed - 1, (len(limited), elapsed)
        for s, r in limited:
            assert_error(s, r, 429, "rate_limited", f"ops sends more than {rate} requests/s")
        # the first refusal comes after the burst, not before
        assert [s for s, _ in got[:burst]] == [200] * burst, got[:burst]
        # the viewer (another identity) is not affected
        assert [s for s, _ in viewer_got] == [200] * len(viewer_got), viewer_got
        # the connection survives a 429, and the bucket refills
        time.sleep(1.5)
        assert ops.request("GET", "/v1/vms")[0] == 200
        # a denied request is still limited first (no policy work for it)
    finally:
        ops.close()
        viewer.close()
    recs = wait_records(c, A, since_seq=seq0, action="rate.limited")
    assert sum(x["detail"]["count"] for x in recs) == len(limited), recs
    for x in recs:
        assert x["detail"]["sources"] == {"ops": x["detail"]["count"]}, x
        assert f"ops sends more than {rate} requests/s" in x["detail"]["first_reason"], x
    assert not find_records(c, A, seq0, action="rate.limited", target="viewer")
