"""A fault-injecting TCP proxy for ferry's system tests (pure stdlib).

FaultProxy listens on a loopback address and forwards every accepted
connection to one target (another loopback address), so that it can sit on
the data path of a live migration between two ferryd daemons:

    with FaultProxy("127.0.0.3", dst_port) as p:
        ...point the migration at ("127.0.0.1", p.port)...
        p.cut(after_bytes=64 << 20)          # RST everything after 64 MiB up
        p.wait_event("cut fired", timeout=60)
        p.heal()

Directions: "up" is client -> target, "down" is target -> client.

Byte offsets (cut/stall after_bytes, corrupt at_byte)
-----------------------------------------------------
Every direction has one cumulative stream over all connections: bytes are
numbered from 0 in the order the proxy hands them to its sockets, counting
since the proxy was created (across connections, and across cut/heal). With
one connection at a time this is simply "the Nth byte the client sent
(up) / received (down) through this proxy". With several concurrent
connections, the streams interleave chunk by chunk (up to 1 MiB per chunk,
whichever connection's recv() returned first), so a given global offset falls
in an unpredictable connection; pass `conn=INDEX` to corrupt() to address
the INDEX-th accepted connection's own stream instead (0-based, in accept
order, counting every accepted connection, including refused ones).

Cut and stall thresholds are exact in the direction they watch: the proxy
splits a received chunk at the threshold, so exactly `after_bytes` bytes are
handed to send() in that direction before the fault fires (a peer may read
fewer on a cut: bytes still in the proxy's socket buffer when the RST goes out
are discarded by the kernel). While the send that reaches the threshold is in
flight, nothing new is admitted in either direction on any connection (for
at most 0.5 s), so e.g. an echo of those bytes cannot slip through first;
chunks other connections admitted before that may still complete. Data the
proxy has received but not forwarded is dropped on cut and held on stall.

A threshold already reached when cut()/stall() is called fires at once (so
cut() with no arguments cuts immediately). relative=True means "after N more
bytes", counted from the bytes admitted so far (bytes_forwarded() can lag a
send() that has just returned by one chunk; it counts bytes handed to the
kernel, not bytes the peer has read).

Faults
------
cut      RST (SO_LINGER 0) every current connection on both sides, then reset
         every new connection right after accept() until heal().
stall    stop forwarding in both directions on every connection (including
         new ones; their FINs are held too) but keep the sockets open; heal()
         resumes and delivers everything held.
corrupt  XOR one byte at an offset (once); several may be pending. The byte is
         changed in the proxy's buffer before send(), so a capture shows it.
heal()   clears an active cut/stall and disarms cut/stall faults that have not
         fired yet; pending corruptions stay armed.

Capture
-------
capture(True) keeps, per connection and direction, a copy of every byte
forwarded (after corruption) until capture_limit bytes are held in total
(then capture_truncated is set). captured(direction) concatenates the
connections' streams in accept order; contains(needle) searches each
connection's whole stream, so needles spanning recv() chunks are found but a
needle spanning two connections is not.

Errors
------
A connection that ends abnormally (reset by a peer, target refused the
connection, ...) is aborted as a pair (RST on both sides) and recorded in
`errors` as (time, text). Unexpected exceptions (bugs in the proxy) are also
recorded in `crashes` with their traceback; they never kill the proxy.
"""

import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
import traceback

__all__ = ["FaultProxy", "DIRECTIONS"]

log = logging.getLogger("faultproxy")

DIRECTIONS = ("up", "down")
BUFSIZE = 1 << 20
_LINGER0 = struct.pack("ii", 1, 0)
_POLL_IN = select.POLLIN | select.POLLPRI
_WAIT_SLICE = 0.5  # condition waits re-check state at least this often
# While the send that reaches a cut/stall threshold is in flight, no other
# data is admitted (so that e.g. an echo of it cannot slip through before the
# fault fires) -- but for at most this long, lest a peer that only reads once
# it could write deadlock against us.
_HOLD_MAX = 0.5


def _check_direction(direction):
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
    return direction


def _is_loopback(host):
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


class _Trigger:
    __slots__ = ("kind", "direction", "after")

    def __init__(self, kind, direction, after):
        self.kind, self.direction, self.after = kind, direction, after

    def __repr__(self):
        return f"{self.kind}({self.direction} after {self.after})"


class _Corruption:
    __slots__ = ("at", "direction", "xor", "conn")

    def __init__(self, at, direction, xor, conn):
        self.at, self.direction, self.xor, self.conn = at, direction, xor, conn


class _Conn:
    """One proxied client connection and its upstream connection."""

    def __init__(self, idx, client, peer):
        self.idx = idx
        self.peer = peer
        self.client = client
        self.upstream = None
        self.aborted = False
        self.closed = False
        self.running = 0  # pump threads still running
        self.offset = {"up": 0, "down": 0}  # bytes admitted per direction
        self.forwarded = {"up": 0, "down": 0}  # bytes actually sent
        self.capture = {"up": bytearray(), "down": bytearray()}
        self.threads = []
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def socks(self):
        return [s for s in (self.client, self.upstream) if s is not None]


class FaultProxy:
    """Fault-injecting TCP proxy: listen_host:listen_port -> target_host:target_port.

    Constructor fault kwargs (applied before start):
      cut=N | (N, direction) | {"after_bytes": N, ...}
      stall=same forms
      corrupt=at | (at, direction[, xor]) | {"at_byte": at, ...} | list of those
      capture=True, capture_limit=bytes (default 2 GiB)
    """

    def __init__(self, target_host, target_port, listen_host="127.0.0.1", listen_port=0, *,
                 cut=None, stall=None, corrupt=None, capture=False, capture_limit=2 << 30,
                 connect_timeout=10.0, allow_nonlocal=False):
        if not allow_nonlocal:
            for h in (target_host, listen_host):
                if not _is_loopback(h):
                    raise ValueError(f"{h!r} is not a loopback address "
                                     "(pass allow_nonlocal=True to override)")
        self.target = (target_host, int(target_port))
        self.listen_addr = (listen_host, int(listen_port))
        self.connect_timeout = connect_timeout
        self.capture_limit = int(capture_limit)

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._reserved = {"up": 0, "down": 0}  # global stream offsets admitted
        self._forwarded = {"up": 0, "down": 0}  # bytes actually sent
        self._lost = {"up": 0, "down": 0}  # admitted, never sent (connection died)
        self._hold = False  # a cut/stall threshold is admitted, its send in flight
        self._hold_since = 0.0
        self._hold_expired = False
        self._triggers = []  # armed cut/stall faults not yet fired
        self._corrupts = []  # pending corruptions
        self._cut_active = False
        self._stalled = False
        self._capturing = bool(capture)
        self._captured_total = 0
        self.capture_truncated = False
        self._stopping = False
        self._started = False
        self._conns = []  # active connections
        self._all_conns = []  # every proxied connection, accept order (for captures)
        self._listener = None
        self._accept_thread = None
        self._wake_r = self._wake_w = None

        self.port = None
        self.connections_accepted = 0  # every accept(), refused ones included
        self.connections_refused = 0  # reset right after accept() during a cut
        self.events = []  # (time.time(), text): faults fired, refusals, ...
        self.errors = []  # (time.time(), text): connections ended abnormally
        self.crashes = []  # (time.time(), traceback text): unexpected exceptions

        for spec, fn in ((cut, self.cut), (stall, self.stall)):
            if spec is not None:
                self._apply_spec(fn, spec)
        if corrupt is not None:
            specs = corrupt if isinstance(corrupt, list) else [corrupt]
            for spec in specs:
                self._apply_spec(self.corrupt, spec)

    @staticmethod
    def _apply_spec(fn, spec):
        if isinstance(spec, dict):
            fn(**spec)
        elif isinstance(spec, (tuple, list)):
            fn(*spec)
        else:
            fn(spec)

    # ------------------------------------------------------------ lifecycle

    def start(self):
        if self._started:
            raise RuntimeError("FaultProxy already started")
        self._started = True
        host, port = self.listen_addr
        ls = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((host, port))
            ls.listen(64)
            ls.setblocking(False)
        except BaseException:
            ls.close()
            raise
        self._listener = ls
        self.port = ls.getsockname()[1]
        self._wake_r, self._wake_w = os.pipe()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-accept-{self.port}", daemon=True)
        self._accept_thread.start()
        return self

    @property
    def address(self):
        """(host, port) clients should connect to."""
        return (self.listen_addr[0], self.port)

    def stop(self, timeout=5.0):
        """Close the listener and every connection (RST), join all threads."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            for conn in list(self._conns):
                self._abort_locked(conn)
            self._cond.notify_all()
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [t for c in self._all_conns for t in c.threads]
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for t in threads:
            if t.is_alive():
                self._crash(f"thread {t.name} did not stop within {timeout}s")
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._wake_r = self._wake_w = None

    close = stop

    def __enter__(self):
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return (f"<FaultProxy {self.listen_addr[0]}:{self.port} -> "
                f"{self.target[0]}:{self.target[1]} up={self._forwarded['up']} "
                f"down={self._forwarded['down']} cut={self._cut_active} "
                f"stalled={self._stalled}>")

    # --------------------------------------------------------------- faults

    def _threshold(self, after_bytes, direction, relative):
        _check_direction(direction)
        after = int(after_bytes)
        if after < 0:
            raise ValueError("after_bytes must be >= 0")
        if relative:
            after += self._reserved[direction]
        return after

    def cut(self, after_bytes=0, direction="up", relative=False):
        """Reset every connection once `direction` has forwarded after_bytes
        in total; reset new connections until heal()."""
        with self._lock:
            t = _Trigger("cut", direction, self._threshold(after_bytes, direction, relative))
            self._arm_locked(t)

    def stall(self, after_bytes=0, direction="up", relative=False):
        """Stop forwarding in both directions on every connection once
        `direction` has forwarded after_bytes in total, until heal()."""
        with self._lock:
            t = _Trigger("stall", direction, self._threshold(after_bytes, direction, relative))
            self._arm_locked(t)

    def _arm_locked(self, t):
        self._triggers.append(t)
        self.events.append((time.time(), f"armed {t!r}"))
        self._check_triggers_locked()
        self._update_hold_locked()
        self._cond.notify_all()

    def corrupt(self, at_byte, direction="up", xor=0xFF, conn=None, relative=False):
        """XOR the byte at offset at_byte of `direction`'s cumulative stream
        (of connection number `conn` if given) with xor, once. relative (not
        with conn): at_byte counts from what has been forwarded when it is
        armed, taken under the proxy's lock (bytes still in flight keep
        arriving while a caller reads bytes_forwarded)."""
        _check_direction(direction)
        at, xor = int(at_byte), int(xor)
        if not 1 <= xor <= 0xFF:
            raise ValueError("xor must be in 1..255")
        if at < 0:
            raise ValueError("at_byte must be >= 0")
        if relative and conn is not None:
            raise ValueError("relative offsets count the whole stream, not one connection")
        with self._lock:
            if relative:
                at += self._reserved[direction]
            if conn is None and at < self._reserved[direction]:
                raise ValueError(f"offset {at} of {direction} already forwarded "
                                 f"({self._reserved[direction]} bytes so far)")
            self._corrupts.append(_Corruption(at, direction, xor, conn))

    def heal(self):
        """End an active cut or stall and disarm cut/stall faults not yet fired."""
        with self._lock:
            was = []
            if self._cut_active:
                was.append("cut")
            if self._stalled:
                was.append("stall")
            if self._triggers:
                was.append(f"disarmed {self._triggers!r}")
            self._cut_active = False
            self._stalled = False
            self._triggers.clear()
            self._hold = False
            self.events.append((time.time(), "heal" + (f" ({', '.join(was)})" if was else "")))
            self._cond.notify_all()

    @property
    def is_cut(self):
        return self._cut_active

    @property
    def is_stalled(self):
        return self._stalled

    def disarm_corruptions(self):
        """Drop corruptions not yet fired; returns how many."""
        with self._lock:
            n = len(self._corrupts)
            self._corrupts.clear()
            return n

    @property
    def pending_corruptions(self):
        with self._lock:
            return len(self._corrupts)

    def _update_hold_locked(self):
        hold = any(self._reserved[t.direction] >= t.after for t in self._triggers)
        if hold and not self._hold:
            self._hold_since = time.monotonic()
            self._hold_expired = False
        self._hold = hold

    def _check_triggers_locked(self):
        fired = [t for t in self._triggers
                 if self._forwarded[t.direction] + self._lost[t.direction] >= t.after]
        for t in fired:
            self._triggers.remove(t)
            if t.kind == "cut":
                conns = list(self._conns)
                self._cut_active = True
                for conn in conns:
                    self._abort_locked(conn)
                text = (f"cut fired: {t.direction} reached {self._forwarded[t.direction]} "
                        f"bytes (threshold {t.after}); reset {len(conns)} connection(s)")
            else:
                self._stalled = True
                text = (f"stall fired: {t.direction} reached {self._forwarded[t.direction]} "
                        f"bytes (threshold {t.after})")
            self.events.append((time.time(), text))
            log.info("%s", text)
        if fired:
            self._update_hold_locked()
            self._cond.notify_all()

    # -------------------------------------------------------------- capture

    def capture(self, enabled=True):
        """Start (or stop) keeping a copy of everything forwarded."""
        with self._lock:
            self._capturing = bool(enabled)

    def clear_capture(self):
        with self._lock:
            for c in self._all_conns:
                c.capture = {"up": bytearray(), "down": bytearray()}
            self._captured_total = 0
            self.capture_truncated = False

    def captured(self, direction, conn=None):
        """Captured bytes of `direction`: the streams of every connection
        concatenated in accept order (or only connection number `conn`)."""
        _check_direction(direction)
        with self._lock:
            conns = [c for c in self._all_conns if conn is None or c.idx == conn]
            return b"".join(bytes(c.capture[direction]) for c in conns)

    def contains(self, needle, direction=None):
        """Does any connection's captured stream (both directions unless one
        is given) contain needle? Each connection's stream is searched whole,
        so needles spanning recv() boundaries are found."""
        needle = bytes(needle)
        dirs = DIRECTIONS if direction is None else (_check_direction(direction),)
        with self._lock:  # appends would fail while find() holds the buffer
            return any(c.capture[d].find(needle) >= 0 for c in self._all_conns for d in dirs)

    # ------------------------------------------------------------- counters

    def bytes_forwarded(self, direction, conn=None):
        _check_direction(direction)
        if conn is None:
            return self._forwarded[direction]
        with self._lock:
            return sum(c.forwarded[direction] for c in self._all_conns if c.idx == conn)

    @property
    def active_connections(self):
        with self._lock:
            return len(self._conns)

    def wait_for(self, pred, timeout=10.0, interval=0.005):
        """Poll pred() until true; return its last value (falsy on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v or time.monotonic() >= deadline:
                return v
            time.sleep(interval)

    def wait_bytes(self, direction, n, timeout=10.0):
        return self.wait_for(lambda: self.bytes_forwarded(direction) >= n, timeout)

    def wait_event(self, substring, timeout=10.0):
        """Wait for an event whose text contains substring; return it or None."""
        def find():
            for ev in list(self.events):
                if substring in ev[1]:
                    return ev
            return None
        return self.wait_for(find, timeout)

    # ------------------------------------------------------------ internals

    def _error(self, text):
        self.errors.append((time.time(), text))
        log.info("%s", text)

    def _crash(self, text):
        self.crashes.append((time.time(), text))
        self.errors.append((time.time(), text.strip().splitlines()[-1] if text.strip() else text))
        log.error("%s", text)

    def _abort_locked(self, conn):
        """RST both sockets of conn as soon as its threads let go of them."""
        if conn.aborted or conn.closed:
            return
        conn.aborted = True
        for s in conn.socks():
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
            except OSError:
                pass
        try:
            os.write(conn.wake_w, b"x")
        except OSError:
            pass
        self._cond.notify_all()

    def _finish(self, conn):
        with self._lock:
            if conn.closed:
                return
            conn.closed = True
            if conn in self._conns:
                self._conns.remove(conn)
            socks = conn.socks()
            conn.client = conn.upstream = None
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        os.close(conn.wake_r)
        os.close(conn.wake_w)

    def _accept_loop(self):
        p = select.poll()
        p.register(self._listener, _POLL_IN)
        p.register(self._wake_r, _POLL_IN)
        while not self._stopping:
            try:
                p.poll()
                if self._stopping:
                    break
                try:
                    cs, addr = self._listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    self._error(f"accept failed: {e!r}")
                    time.sleep(0.05)
                    continue
                with self._lock:
                    idx = self.connections_accepted
                    self.connections_accepted += 1
                    if self._cut_active or self._stopping:
                        self.connections_refused += 1
                        self.events.append((time.time(), f"conn {idx} from {addr} reset (cut active)"))
                        try:
                            cs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
                        except OSError:
                            pass
                        cs.close()
                        continue
                    conn = _Conn(idx, cs, addr)
                    self._conns.append(conn)
                    self._all_conns.append(conn)
                    t = threading.Thread(target=self._conn_main, args=(conn,),
                                         name=f"faultproxy-{self.port}-{idx}-up", daemon=True)
                    conn.threads.append(t)
                t.start()
            except Exception:
                self._crash(f"accept loop: {traceback.format_exc()}")
                time.sleep(0.05)

    def _conn_main(self, conn):
        try:
            try:
                up = socket.create_connection(self.target, timeout=self.connect_timeout)
            except OSError as e:
                self._error(f"conn {conn.idx}: connect to {self.target} failed: {e!r}")
                with self._lock:
                    self._abort_locked(conn)
                self._finish(conn)
                return
            for s in (up, conn.client):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setblocking(False)
            with self._lock:
                conn.upstream = up
                if conn.aborted:
                    up.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
                    start = False
                else:
                    conn.running = 2
                    start = True
                    t = threading.Thread(target=self._pump, args=(conn, "down", up, conn.client),
                                         name=f"faultproxy-{self.port}-{conn.idx}-down",
                                         daemon=True)
                    conn.threads.append(t)
            if not start:
                self._finish(conn)
                return
            t.start()
        except Exception:
            self._crash(f"conn {conn.idx} setup: {traceback.format_exc()}")
            with self._lock:
                self._abort_locked(conn)
            self._finish(conn)
            return
        self._pump(conn, "up", conn.client, up)

    def _admit(self, conn, d, buf, off, length):
        """How many bytes of buf[off:off+length] may be sent now (applying
        corruptions to them); 0 for length 0 (EOF) when allowed; -1 to abort."""
        with self._lock:
            while True:
                if conn.aborted or self._stopping:
                    return -1
                if self._stalled:
                    self._cond.wait(_WAIT_SLICE)
                    continue
                if self._hold:
                    left = self._hold_since + _HOLD_MAX - time.monotonic()
                    if left > 0:
                        self._cond.wait(min(left, _WAIT_SLICE))
                        continue
                    if not self._hold_expired:
                        self._hold_expired = True
                        self.events.append((time.time(), f"hold expired after {_HOLD_MAX}s: "
                                            "the send reaching a threshold is blocked"))
                base = self._reserved[d]
                limit = length
                for t in self._triggers:
                    if t.direction == d and t.after - base < limit:
                        limit = t.after - base
                if length and limit <= 0:
                    # this direction's threshold is admitted, not yet sent
                    self._cond.wait(_WAIT_SLICE)
                    continue
                break
            if self._corrupts and limit:
                cbase = conn.offset[d]
                for c in list(self._corrupts):
                    if c.direction != d:
                        continue
                    if c.conn is None:
                        pos = c.at - base
                    elif c.conn == conn.idx:
                        pos = c.at - cbase
                    else:
                        continue
                    if 0 <= pos < limit:
                        old = buf[off + pos]
                        buf[off + pos] = old ^ c.xor
                        self._corrupts.remove(c)
                        where = f"conn {conn.idx} offset {c.at}" if c.conn is not None else \
                            f"offset {c.at} (conn {conn.idx} offset {cbase + pos})"
                        text = (f"corrupt fired: {d} {where}: "
                                f"0x{old:02x} -> 0x{old ^ c.xor:02x}")
                        self.events.append((time.time(), text))
                        log.info("%s", text)
            self._reserved[d] = base + limit
            conn.offset[d] += limit
            if limit and self._triggers:
                # a threshold reached by this range: admit nothing more, in
                # either direction, until its send is accounted (and it fires)
                self._update_hold_locked()
            return limit

    def _account(self, conn, d, mv, off, n):
        with self._lock:
            self._forwarded[d] += n
            conn.forwarded[d] += n
            if self._capturing:
                room = self.capture_limit - self._captured_total
                if room > 0:
                    k = n if n <= room else room
                    conn.capture[d] += mv[off:off + k]
                    self._captured_total += k
                if room < n and not self.capture_truncated:
                    self.capture_truncated = True
                    self.events.append((time.time(), f"capture limit {self.capture_limit} reached"))
            if self._triggers:
                self._check_triggers_locked()

    def _wait_unstalled(self, conn):
        with self._lock:
            while self._stalled and not conn.aborted and not self._stopping:
                self._cond.wait(_WAIT_SLICE)
            return not (conn.aborted or self._stopping)

    def _pump(self, conn, d, src, dst):
        buf = bytearray(BUFSIZE)
        mv = memoryview(buf)
        pin = select.poll()
        pin.register(src, _POLL_IN)
        pin.register(conn.wake_r, _POLL_IN)
        pout = select.poll()
        pout.register(dst, select.POLLOUT)
        pout.register(conn.wake_r, _POLL_IN)
        try:
            while not conn.aborted:
                try:
                    n = src.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    pin.poll()
                    continue
                if n == 0:  # EOF: pass the half-close on (held while stalled)
                    if self._admit(conn, d, buf, 0, 0) < 0:
                        return
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                off = 0
                while off < n:
                    k = self._admit(conn, d, buf, off, n - off)
                    if k < 0:
                        return
                    end = off + k
                    while off < end:
                        if self._stalled and not self._wait_unstalled(conn):
                            return
                        try:
                            s = dst.send(mv[off:end])
                        except (BlockingIOError, InterruptedError):
                            pout.poll()
                            if conn.aborted:
                                return
                            continue
                        self._account(conn, d, mv, off, s)
                        off += s
                        if conn.aborted:
                            return
        except OSError as e:
            with self._lock:
                quiet = conn.aborted or self._stopping
                self._abort_locked(conn)
            if not quiet:
                self._error(f"conn {conn.idx} {d}: {e!r}; connection pair reset")
        except Exception:
            with self._lock:
                self._abort_locked(conn)
            self._crash(f"conn {conn.idx} {d}: {traceback.format_exc()}")
        finally:
            with self._lock:
                lost = conn.offset[d] - conn.forwarded[d]
                if lost:
                    self._lost[d] += lost
                    if self._triggers:
                        self._check_triggers_locked()
                conn.running -= 1
                last = conn.running == 0
            if last:
                self._finish(conn)
