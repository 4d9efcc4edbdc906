"""System tests for ferry's test guest (guest/): kernel + initramfs + memload.

Each test boots the guest directly with qemu-system-x86_64 under TCG, with
a QMP unix socket and the serial console written to a file, and checks the
memload output contract documented in guest/README.md.

Guest location: the guest_dir fixture (conftest.py): $FERRY_GUEST_DIR if
set, otherwise <repo>/build/guest, (re)built with guest/build.sh first.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/system/test_guest.py
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ferrylib import HB_FIELDS, HB_RE

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 20.0  # QEMU start -> first heartbeat
POWERDOWN_TIMEOUT = 15.0
READY_RE = re.compile(
    r"^memload: ready mib=(\d+) pages=(\d+) rate=(\d+|max) seed=(\d+)\s*$", re.M
)
GPA_RE = re.compile(r"^memload: page0 gpa=0x([0-9a-f]+)\s*$", re.M)
SECRET_RE = re.compile(r"^memload: secret placed copies=(\d+)\s*$", re.M)
ERROR_RE = re.compile(r"^memload: error: (.+?)\s*$", re.M)
CORRUPTION_RE = re.compile(
    r"^memload: CORRUPTION page=(\d+) gen=(\d+) offset=(\d+) "
    r"expected=([0-9a-f]{16}) got=([0-9a-f]{16})\s*$",
    re.M,
)


def parse_hb(match):
    return dict(zip(HB_FIELDS, map(int, match.groups())))


class Qmp:
    """Minimal synchronous QMP client."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        greeting = self._read()
        assert "QMP" in greeting, greeting
        self.execute("qmp_capabilities")

    def _read(self):
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def execute(self, command, **arguments):
        req = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        self.file.write(json.dumps(req).encode() + b"\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"QMP {command} failed: {reply['error']}")
        return reply["return"]

    def hmp(self, command_line):
        return self.execute("human-monitor-command", **{"command-line": command_line})

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


class Guest:
    """One QEMU process running the test guest."""

    def __init__(self, guest_dir, log_dir, append, mem_mib=256):
        self.sockdir = tempfile.mkdtemp(prefix="ferry-guest-")  # short path for AF_UNIX
        self.qmp_path = Path(self.sockdir) / "qmp.sock"
        self.serial_path = Path(log_dir) / "serial.log"
        self.stderr_path = Path(log_dir) / "qemu.stderr"
        self.qmp = None
        cmd = [
            QEMU, "-accel", "tcg", "-M", "pc", "-m", str(mem_mib),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", f"file:{self.serial_path}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-kernel", str(guest_dir / "vmlinuz"),
            "-initrd", str(guest_dir / "initramfs.cpio.gz"),
            "-append", f"console=ttyS0 quiet {append}",
        ]
        self.stderr = open(self.stderr_path, "wb")
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)

    def log(self):
        try:
            return self.serial_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, n=30):
        return "\n".join(self.log().splitlines()[-n:])

    def wait_for(self, regex, timeout, pos=0):
        """Wait until regex matches the serial log at or after pos; return the match."""
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.log(), pos)
            if m:
                return m
            if self.proc.poll() is not None:
                # One last look: output may have landed just before exit.
                m = regex.search(self.log(), pos)
                if m:
                    return m
                pytest.fail(f"QEMU exited (rc={self.proc.returncode}) before "
                            f"{regex.pattern!r}; serial tail:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"timeout ({timeout}s) waiting for {regex.pattern!r}; "
                            f"serial tail:\n{self.tail()}")
            time.sleep(0.05)

    def heartbeats(self, count, timeout):
        """Wait for `count` more heartbeats than already logged; return all parsed."""
        have = len(HB_RE.findall(self.log()))
        deadline = time.monotonic() + timeout
        while True:
            hbs = [parse_hb(m) for m in HB_RE.finditer(self.log())]
            if len(hbs) >= have + count:
                return hbs
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"got {len(hbs) - have}/{count} new heartbeats "
                            f"(rc={self.proc.poll()}); serial tail:\n{self.tail()}")
            time.sleep(0.05)

    def connect_qmp(self):
        deadline = time.monotonic() + 10
        while self.qmp is None:
            try:
                self.qmp = Qmp(self.qmp_path)
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)
        return self.qmp

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def cpu_seconds(self):
        """User+system CPU time consumed so far by the QEMU process."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def kill(self):
        if self.qmp is not None:
            self.qmp.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)


@pytest.fixture
def boot(guest_dir, tmp_path):
    """Factory: boot(append, mem_mib=256) -> Guest; every guest is killed at teardown."""
    guests = []

    def _boot(append, mem_mib=256):
        log_dir = tmp_path / f"guest{len(guests)}"
        log_dir.mkdir()
        g = Guest(guest_dir, log_dir, append, mem_mib)
        guests.append(g)
        return g

    yield _boot
    for g in guests:
        g.kill()


def test_boot_heartbeats_and_dirtying(boot):
    g = boot("memload.mib=64 memload.rate=1000 memload.seed=42")
    ready = g.wait_for(READY_RE, BOOT_TIMEOUT)
    assert ready.groups() == ("64", "16384", "1000", "42")
    g.wait_for(HB_RE, BOOT_TIMEOUT - (time.monotonic() - g.start))
    first_hb_s = time.monotonic() - g.start
    print(f"QEMU start -> first heartbeat: {first_hb_s:.2f}s")
    assert first_hb_s < BOOT_TIMEOUT

    hbs = g.heartbeats(4, timeout=10)
    assert [h["seq"] for h in hbs] == list(range(1, len(hbs) + 1)), hbs
    assert all(h["errors"] == 0 for h in hbs), hbs
    assert "CORRUPTION" not in g.log()
    for prev, cur in zip(hbs, hbs[1:]):
        assert cur["verified"] > prev["verified"], hbs
        assert cur["passes"] >= prev["passes"], hbs
        # rate=1000 pages/s, spread evenly: every second dirties ~1000 pages.
        assert cur["dirtied"] - prev["dirtied"] >= 500, hbs
    mean = (hbs[-1]["dirtied"] - hbs[0]["dirtied"]) / (len(hbs) - 1)
    assert mean <= 1500, hbs  # (a heartbeat skipped after a >1 s stall doubles one step)
    assert hbs[-1]["passes"] >= 1, "verifier never completed a full pass"


def test_corruption_detected(boot):
    g = boot("memload.mib=16 memload.rate=0")
    gpa = int(g.wait_for(GPA_RE, BOOT_TIMEOUT).group(1), 16)
    g.wait_for(HB_RE, BOOT_TIMEOUT)
    before = g.heartbeats(1, timeout=5)[-1]
    assert before["errors"] == 0 and before["passes"] >= 1, before

    qmp = g.connect_qmp()
    out = qmp.hmp(f"gpa2hva 0x{gpa:x}")
    m = re.search(r"is (0x[0-9a-f]+)", out)
    assert m, f"unexpected gpa2hva output: {out!r}"
    hva = int(m.group(1), 16)
    offset = 256
    garbage = 0xDEADBEEFCAFEF00D
    pos = len(g.log())
    with open(f"/proc/{g.proc.pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(hva + offset)
        mem.write(struct.pack("<Q", garbage))

    c = g.wait_for(CORRUPTION_RE, 10, pos)
    page, _gen, off, expected, got = c.groups()
    assert int(page) == 0 and int(off) == offset, c.group(0)
    assert int(got, 16) == garbage and int(expected, 16) != garbage, c.group(0)
    hbs = g.heartbeats(2, timeout=5)
    # Counted once, then the page was rewritten: the count stays at 1 while
    # verification keeps making full passes.
    assert hbs[-1]["errors"] == 1 and hbs[-2]["errors"] == 1, hbs
    assert hbs[-1]["passes"] > hbs[-2]["passes"], hbs


@pytest.mark.parametrize("append,reason", [
    ("memload.mib=abc", r"memload\.mib='abc' is not a non-negative decimal integer"),
    ("memload.secret=bad!marker", r"memload\.secret contains invalid character"),
    ("memload.disk=vda", r"memload\.disk must be a /dev/ path"),
])
def test_bad_parameter(boot, append, reason):
    g = boot(append)
    err = g.wait_for(ERROR_RE, BOOT_TIMEOUT)
    assert re.search(reason, err.group(1)), err.group(0)
    assert not HB_RE.search(g.log()) and not READY_RE.search(g.log())
    # /init reports the exit and powers the guest off, which ends QEMU.
    rc = g.wait_exit(POWERDOWN_TIMEOUT)
    assert rc == 0, f"QEMU still running or failed (rc={rc}); tail:\n{g.tail()}"
    assert "init: memload exited with status 1" in g.log()


def test_secret_in_guest_memory(boot):
    secret = "FerrySecret_7f3a-Q"
    mem_mib = 256
    g = boot(f"memload.mib=8 memload.secret={secret}", mem_mib=mem_mib)
    copies = int(g.wait_for(SECRET_RE, BOOT_TIMEOUT).group(1))
    assert copies == 64 * 1024 // len(secret)
    g.wait_for(HB_RE, BOOT_TIMEOUT)
    qmp = g.connect_qmp()
    dump = Path(g.sockdir) / "mem.raw"
    qmp.execute("pmemsave", val=0, size=mem_mib * 1024 * 1024, filename=str(dump))
    data = dump.read_bytes()
    dump.unlink()
    assert len(data) == mem_mib * 1024 * 1024
    # The kernel command line holds a few copies too; memload's region
    # must account for (at least) all the copies it reported.
    assert data.count(secret.encode()) >= copies


def test_duty_limits_cpu(boot):
    g = boot("memload.mib=16 memload.duty=20")
    g.wait_for(HB_RE, BOOT_TIMEOUT)
    hbs0 = g.heartbeats(1, timeout=5)
    cpu0, t0 = g.cpu_seconds(), time.monotonic()
    hbs = g.heartbeats(3, timeout=8)
    cpu = (g.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    print(f"duty=20: QEMU CPU use {cpu:.0%} of one core")
    assert all(h["errors"] == 0 for h in hbs)
    assert hbs[-1]["verified"] > hbs0[-1]["verified"]
    # A 100% duty guest keeps QEMU's vCPU thread at ~100% of a core.
    assert cpu < 0.6, f"duty=20 guest used {cpu:.0%} of a core"


def test_system_powerdown(boot):
    g = boot("memload.mib=16 memload.rate=100")
    g.wait_for(HB_RE, BOOT_TIMEOUT)
    g.connect_qmp().execute("system_powerdown")
    t0 = time.monotonic()
    rc = g.wait_exit(POWERDOWN_TIMEOUT)
    assert rc == 0, f"QEMU did not power off within {POWERDOWN_TIMEOUT}s (rc={rc}); tail:\n{g.tail()}"
    print(f"system_powerdown -> QEMU exit: {time.monotonic() - t0:.2f}s")
    assert "init: power button pressed, powering off" in g.log()
