"""Process, polling and port helpers for ferry's system tests (re-exported
by ferrylib): /proc lookups, waiting on a condition with a deadline, and
blocks of free loopback ports."""

import random
import socket
import time
from pathlib import Path

PORT_MIN, PORT_MAX = 20000, 60000


def proc_state(pid):
    """State letter of pid from /proc (R, S, Z, ...), or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def pid_alive(pid):
    """Is pid a live process (not gone, not a zombie)?"""
    return bool(pid) and proc_state(pid) not in (None, "Z", "X")


def proc_cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def qemu_running(pid, uuid):
    """Is pid a live QEMU started for the VM with this uuid?"""
    args = proc_cmdline(pid)
    return pid_alive(pid) and any(
        a == b"-uuid" and b == uuid.encode() for a, b in zip(args, args[1:])
    )


def wait_pid_gone(pid, timeout=10.0):
    """Wait until pid has exited (a zombie counts as exited). True if it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_until(pred, timeout, interval=0.1, what="condition"):
    """Poll pred() until it returns a true value, which is returned; raise
    AssertionError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def tail(path, n=40):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as e:
        return f"({path}: {e.strerror})"
    return "\n".join(lines[-n:])


def port_free(addr, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


_next_port = random.randrange(PORT_MIN, PORT_MAX)


def alloc_ports(addrs, count):
    """A block of `count` consecutive ports that are free on every address,
    never handed out before in this process (so consecutive tests never
    reuse one while an old socket lingers)."""
    global _next_port
    for _ in range(1000):
        base = _next_port
        if base + count > PORT_MAX:
            base = PORT_MIN
        _next_port = base + count
        if all(port_free(a, p) for a in addrs for p in range(base, base + count)):
            return base
    raise RuntimeError("no free port block found")
