"""System tests of QEMU's confinement (src/vm/confine.c): QEMU runs as the
unprivileged qemu_user, opens no file by name, ignores the backing file an
image names, and cannot be pointed out of the shared dir by a symlink.

    FERRY_BUILD=build-asan /usr/bin/python3 -m pytest tests/system/test_confine.py
"""
import json
import os
import pwd
import socket
import stat
import subprocess

from ferrylib import QEMU_USER

A = "host-a"


def qemu_uids(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Uid line")


def open_files(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def qmp(path, *commands):
    """Run commands on a QMP socket (the migration monitor, free when no
    migration runs) -> their returns."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(path))
    f = s.makefile("rwb")
    json.loads(f.readline())
    out = []
    for cmd in ("qmp_capabilities",) + commands:
        f.write(json.dumps({"execute": cmd}).encode() + b"\n")
        f.flush()
        while True:
            msg = json.loads(f.readline())
            if "return" in msg or "error" in msg:
                break
        out.append(msg.get("return", msg.get("error")))
    s.close()
    return out[1:]


def qemu_img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def test_qemu_runs_unprivileged(make_cluster):
    c = make_cluster(hosts=1)
    c.define_vm(A, "v", memory_mib=128, mib=8)
    vm = c.start_vm(A, "v")
    pid, uuid = vm["pid"], vm["uuid"]
    user = pwd.getpwnam(QEMU_USER)
    assert qemu_uids(pid) == [user.pw_uid] * 4
    # the files it holds were opened by ferryd: none by a shared-dir name
    # (the kernel and initrd are reopened through /proc/self/fd)
    run = c.hosts[A].state_dir / "run"
    st = run.stat()
    assert stat.S_IMODE(st.st_mode) == 0o3770 and st.st_gid == user.pw_gid, oct(st.st_mode)
    for name in (f"{uuid}.qmp", f"{uuid}.mqmp", f"{uuid}.pid"):
        st = (run / name).stat()
        assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o600, name
    assert int((run / f"{uuid}.pid").read_text()) == pid
    assert os.readlink(f"/proc/{pid}/cwd") == str(run)
    # ferryd still drives it: pause, resume, stop
    c.api_ok(A, "POST", "/v1/vms/v/pause")
    c.api_ok(A, "POST", "/v1/vms/v/resume")
    c.stop_vm(A, "v", force=True)


def test_backing_file_is_not_opened(make_cluster):
    """An image in shared storage that names a host file as its backing
    file: QEMU (as root, with -drive) used to open and serve it to the
    guest; now its backing is null."""
    c = make_cluster(hosts=1)
    secret = c.dir / "secret.raw"
    secret.write_bytes(b"host secret\n" * 1000)
    secret.chmod(0o644)  # even a file QEMU's user could read
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", str(secret),
             str(c.shared / "evil.qcow2"), "1M")
    c.define_vm(A, "v", memory_mib=128, mib=8,
                disk={"path": "evil.qcow2", "format": "qcow2"})
    vm = c.start_vm(A, "v")
    assert str(secret) not in open_files(vm["pid"])
    nodes, = qmp(c.hosts[A].state_dir / "run" / f"{vm['uuid']}.mqmp",
                 "query-named-block-nodes")
    files = [n["image"]["filename"] for n in nodes]
    assert not any(str(secret) in f for f in files), files
    disk = [n for n in nodes if n["node-name"] == "disk0"][0]
    assert "backing-image" not in disk["image"] and disk["backing_file_depth"] == 0, disk
    c.stop_vm(A, "v", force=True)

    # a backing image the definition names (below the shared dir) is used
    qemu_img("create", "-f", "raw", str(c.shared / "base.raw"), "1M")
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", "base.raw",
             str(c.shared / "top.qcow2"), "1M")
    c.define_vm(A, "w", memory_mib=128, mib=8,
                disk={"path": "top.qcow2", "format": "qcow2",
                      "backing": "base.raw", "backing_format": "raw"})
    vm = c.start_vm(A, "w")
    nodes, = qmp(c.hosts[A].state_dir / "run" / f"{vm['uuid']}.mqmp",
                 "query-named-block-nodes")
    disk = [n for n in nodes if n["node-name"] == "disk0"][0]
    assert disk["backing_file_depth"] == 1, disk
    c.stop_vm(A, "w", force=True)


def test_symlink_out_of_shared_dir_refused(make_cluster):
    c = make_cluster(hosts=1)
    outside = c.dir / "outside.raw"
    outside.write_bytes(b"\0" * 4096)
    (c.shared / "link.raw").symlink_to(outside)          # absolute
    (c.shared / "rel.raw").symlink_to("../outside.raw")  # relative
    (c.shared / "guest" / "k").symlink_to("../../outside.raw")
    for name, fields in (("d1", {"disk": {"path": "link.raw"}}),
                         ("d2", {"disk": {"path": "rel.raw"}}),
                         ("k1", {"kernel": "guest/k", "initrd": None})):
        d = c.vm_definition(name, memory_mib=128, mib=8, **fields)
        d = {k: v for k, v in d.items() if v is not None}
        c.api_ok(A, "POST", "/v1/vms", d, expect=(201,))
        status, reply = c.api(A, "POST", f"/v1/vms/{name}/start")
        assert status == 409, (name, status, reply)
        assert "leads out of the shared dir" in reply["error"]["message"], reply
        assert c.vm_info(A, name)["state"] == "shutoff"
    # a symlink that stays inside is fine
    (c.shared / "guest" / "vmlinuz.link").symlink_to("vmlinuz")
    c.define_vm(A, "ok", memory_mib=128, mib=8, kernel="guest/vmlinuz.link")
    c.start_vm(A, "ok")
    c.stop_vm(A, "ok", force=True)


def test_external_data_file_refused(make_cluster):
    c = make_cluster(hosts=1)
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={c.dir / 'data.raw'}",
             str(c.shared / "ext.qcow2"), "1M")
    c.define_vm(A, "v", memory_mib=128, mib=8,
                disk={"path": "ext.qcow2", "format": "qcow2"})
    status, reply = c.api(A, "POST", "/v1/vms/v/start")
    assert status == 400, (status, reply)
    assert "external data file" in reply["error"]["message"], reply
