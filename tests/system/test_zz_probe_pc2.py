"""temporary probe (not committed): is QEMU's main thread blocked after
the destination ferryd dies in post-copy?"""
import json, os, signal, socket, subprocess, time
import faultlib as fl
from test_recovery import cluster, boot, A, B, VM, POSTCOPY  # noqa

def qmp_try(path, cmds, timeout=8):
    s = socket.socket(socket.AF_UNIX); s.settimeout(timeout)
    s.connect(path)
    out = []
    f = s.makefile("rwb")
    out.append(f.readline()[:200])
    for c in cmds:
        f.write((json.dumps(c) + "\n").encode()); f.flush()
        try:
            while True:
                l = f.readline()
                out.append(l[:300])
                if b'"event"' not in l:
                    break
        except socket.timeout:
            out.append(b"TIMEOUT on %r" % c)
            break
    s.close()
    return out

def test_probe(cluster):
    c = cluster
    uuid = boot(c, migration={"allow_postcopy": True})
    fl.arm(c, A, "src.postcopy")
    rec = fl.start_migration(c, A, VM, B, POSTCOPY)
    fl.wait_stopped(c, A)
    c.kill_host(B, signal.SIGKILL)
    fl.cont(c, A)
    time.sleep(4)
    pid = fl.qemu_pid(c, B, uuid)
    run = c.hosts[B].state_dir / "run"
    print("run", sorted(os.listdir(run)))
    for sock in ("qmp", "mqmp"):
        p = str(run / f"{uuid}.{sock}")
        print(sock, qmp_try(p, [{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}},
                               {"exec-oob": "x-oob-test", "arguments": {"lock": False}, "id": 1},
                               {"execute": "query-status"}]))
    bt = subprocess.run(["gdb", "-batch", "-p", str(pid), "-ex", "thread apply all bt 12"],
                        capture_output=True, text=True, timeout=120).stdout
    open("/tmp/pc2-gdb.txt", "w").write(bt)
    fl.restart(c, B)
    done = fl.wait_outcome(c, A, rec["id"], timeout=90)
    print("outcome", done.get("outcome"), done.get("error"))
    print("B vm", fl.vm_on(c, B, VM))
