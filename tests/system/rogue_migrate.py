"""TEST ONLY: migrate a VM behind ferry's back, as an attacker holding
QEMU's monitor would (docs/detection.md, "unexplained migration").

It drives both QEMUs over QMP itself and never talks to ferryd:
  1. starts a destination QEMU inside the destination host's namespace with
     the source's own command line (same machine, memory, devices, MAC and
     uuid), a tap of its own on that host's bridge, and -incoming tcp:ADDR:PORT;
  2. turns off the source's migration capabilities (one plain stream) and
     relays its `migrate unix:...` stream into a TCP
     connection made inside the source host's namespace, so the stream
     crosses the shared link like a real migration;
  3. waits until the source reports "completed": the VM then runs on the
     destination, and the source QEMU stays paused (postmigrate).

    pid = rogue_migrate(src_pid, src_mqmp, workdir, src_ns, dst_ns, dst_addr)

The caller kills the returned QEMU (and its console/log files live in
workdir). Used by tests/system/test_detect.py and bench/detect_bench.py.
"""

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from netlib import in_netns, sh

QMP_TIMEOUT = 10.0
MIGRATE_TIMEOUT = 120.0
ROGUE_TAP = "rogue0"
ROGUE_PORT = 4444


class Qmp:
    """A minimal synchronous QMP client over a unix socket."""

    def __init__(self, path, timeout=QMP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.settimeout(timeout)
                self.s.connect(str(path))
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.f = self.s.makefile("rwb")
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while True:
            line = self.f.readline()
            if not line:
                raise ConnectionError("QMP closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.f.flush()
        r = self._read()
        if "error" in r:
            raise RuntimeError(f"QMP {name}: {r['error']}")
        return r.get("return")

    def close(self):
        self.s.close()


def destination_argv(src_pid, workdir, dst_addr):
    """The source QEMU's argv, turned into a compatible destination."""
    args = [a.decode() for a in Path(f"/proc/{src_pid}/cmdline").read_bytes().split(b"\0")[:-1]]

    def real_path(v):
        """A file QEMU got as a descriptor (/proc/self/fd/N) by its name."""
        if v.startswith("/proc/self/fd/"):
            return os.readlink(f"/proc/{src_pid}/fd/{v.rsplit('/', 1)[1]}")
        return v
    out, i = [], 0
    repl = {
        "-chardev": lambda v: (
            f"socket,id=qmp,path={workdir}/rogue.qmp,server=on,wait=off" if v.startswith("socket,id=qmp,")
            else f"socket,id=mqmp,path={workdir}/rogue.mqmp,server=on,wait=off" if v.startswith("socket,id=mqmp,")
            else f"file,id=serial0,path={workdir}/rogue-console.log,append=on" if v.startswith("file,id=serial0,")
            else v),
        "-pidfile": lambda v: f"{workdir}/rogue.pid",
        "-kernel": real_path,
        "-initrd": real_path,
        "-netdev": lambda v: (f"tap,id=net0,ifname={ROGUE_TAP},script=no,downscript=no"
                              if v.startswith("tap,") else v),
    }
    while i < len(args):
        a = args[i]
        if a == "-S":  # a ferry destination's: ours runs at once
            i += 1
            continue
        if a in ("-incoming", "-add-fd", "-pidfile"):  # fd sets are ferryd's
            i += 2
            continue
        if a in repl and i + 1 < len(args):
            out += [a, repl[a](args[i + 1])]
            i += 2
            continue
        out.append(a)
        i += 1
    return out + ["-pidfile", f"{workdir}/rogue.pid",
                  "-incoming", f"tcp:{dst_addr}:{ROGUE_PORT}"]


def _relay(listener, src_ns, dst_addr, done):
    """Accept the source QEMU's stream and pump it to the destination over
    a TCP connection made in the source host's namespace."""
    try:
        conn, _ = listener.accept()
        up = in_netns(src_ns, socket.create_connection, (dst_addr, ROGUE_PORT), 10)

        def pump(a, b):
            try:
                while True:
                    d = a.recv(1 << 16)
                    if not d:
                        break
                    b.sendall(d)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        t = threading.Thread(target=pump, args=(up, conn), daemon=True)
        t.start()
        pump(conn, up)
        t.join(MIGRATE_TIMEOUT)
        conn.close()
        up.close()
    finally:
        done.set()


def rogue_migrate(src_pid, src_mqmp, workdir, src_ns, dst_ns, dst_addr,
                  timeout=MIGRATE_TIMEOUT):
    """Migrate the VM of QEMU src_pid (its free QMP monitor at src_mqmp)
    into a new QEMU in dst_ns listening on dst_addr. Returns the new
    QEMU's pid once the migration completed (raises otherwise)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    argv = destination_argv(src_pid, workdir, dst_addr)
    log = open(workdir / "rogue-qemu.log", "wb")
    dst = subprocess.Popen(["ip", "netns", "exec", dst_ns, *argv], stdin=subprocess.DEVNULL,
                           stdout=log, stderr=log, start_new_session=True)
    log.close()
    try:
        dq = Qmp(workdir / "rogue.qmp")
        sh("ip", "-n", dst_ns, "link", "set", ROGUE_TAP, "master", "br0")
        sh("ip", "-n", dst_ns, "link", "set", ROGUE_TAP, "up")
        # beside the source's monitor: QEMU may run as its own user,
        # confined to that folder
        relay_path = Path(src_mqmp).parent / "rogue-relay.sock"
        if relay_path.exists():
            relay_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(relay_path))
        os.chmod(relay_path, 0o666)
        listener.listen(1)
        listener.settimeout(QMP_TIMEOUT)
        done = threading.Event()
        threading.Thread(target=_relay, args=(listener, src_ns, dst_addr, done),
                         daemon=True).start()
        sq = Qmp(src_mqmp)
        # one plain stream: turn off what ferry may have left on (multifd,
        # return-path, ...), since the destination does not expect it
        on = [c["capability"] for c in sq.cmd("query-migrate-capabilities") if c["state"]]
        if on:
            sq.cmd("migrate-set-capabilities",
                   capabilities=[{"capability": c, "state": False} for c in on])
        # relative: a confined QEMU runs in that folder and may not reach
        # it by its full path
        sq.cmd("migrate", uri=f"unix:{relay_path.name}")
        deadline = time.monotonic() + timeout
        while True:
            st = sq.cmd("query-migrate").get("status")
            if st == "completed":
                break
            if st in ("failed", "cancelled") or time.monotonic() > deadline:
                raise RuntimeError(f"rogue migration ended {st}")
            time.sleep(0.05)
        sq.close()
        done.wait(QMP_TIMEOUT)
        listener.close()
        relay_path.unlink()
        # the destination runs on its own after the stream (no -S)
        deadline = time.monotonic() + QMP_TIMEOUT
        while dq.cmd("query-status").get("status") != "running":
            if time.monotonic() > deadline:
                raise RuntimeError("the rogue destination does not run: "
                                   + str(dq.cmd("query-status")))
            time.sleep(0.05)
        dq.close()
        return int((workdir / "rogue.pid").read_text().strip())
    except BaseException:
        dst.kill()
        dst.wait()
        raise
