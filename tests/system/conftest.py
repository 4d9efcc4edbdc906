"""Fixtures shared by ferry's system tests (see ferrylib.py).

Environment:
  FERRY_BUILD      folder holding ferryd and ferry (default <repo>/build)
  FERRY_GUEST_DIR  test guest (vmlinuz, initramfs.cpio.gz); default
                   <repo>/build/guest, (re)built with guest/build.sh first
  FERRY_KEEP=1     keep each cluster's temp dir after the test

When a test fails, the tail of every ferryd log (and QEMU log) of the
clusters alive during it is added to the failure report.

Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/system
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import etcdlib  # noqa: E402
import ferrylib  # noqa: E402


UFFD_SYSCTL = Path("/proc/sys/vm/unprivileged_userfaultfd")


@pytest.fixture(scope="session", autouse=True)
def userfaultfd_for_qemu():
    """Post-copy needs userfaultfd in QEMU, which runs unprivileged
    (qemu_user): QEMU 7.2 only has the syscall, which an unprivileged
    process may use for kernel faults only with this sysctl
    (docs/security.md). Set for the session, then restored."""
    old = UFFD_SYSCTL.read_text() if UFFD_SYSCTL.exists() else None
    if old is not None and old.strip() == "0" and os.geteuid() == 0:
        UFFD_SYSCTL.write_text("1\n")
    yield
    if old is not None and os.geteuid() == 0:
        UFFD_SYSCTL.write_text(old)


@pytest.fixture(scope="session")
def guest_dir():
    env = os.environ.get("FERRY_GUEST_DIR")
    if env:
        path = Path(env)
    else:
        path = ferrylib.REPO / "build" / "guest"
        subprocess.run(["bash", str(ferrylib.REPO / "guest" / "build.sh"), str(path)],
                       check=True)
    for name in ("vmlinuz", "initramfs.cpio.gz"):
        assert (path / name).is_file(), f"{path / name} missing (run guest/build.sh {path})"
    assert shutil.which("qemu-system-x86_64"), "qemu-system-x86_64 not installed"
    return path


@pytest.fixture(scope="session")
def ferry_build():
    path = ferrylib.build_dir()
    for name in ("ferryd", "ferry"):
        assert os.access(path / name, os.X_OK), \
            f"{path / name} missing: run `ninja -C build` or set FERRY_BUILD"
    return path


def _cluster_factory(request, build, guest):
    def make(hosts=2, start=True, **kw):
        c = ferrylib.Cluster(build, guest, nhosts=hosts, **kw)
        # registered before setup, so a failing setup is cleaned up too
        request.addfinalizer(c.close)
        c.setup()
        if start:
            c.start_all()
        return c

    return make


@pytest.fixture
def make_cluster(request, ferry_build, guest_dir):
    """Factory: make_cluster(hosts=2, start=True, accel="auto", ...) ->
    Cluster with its PKI and configs written and (by default) every ferryd
    up. Everything is torn down after the test."""
    return _cluster_factory(request, ferry_build, guest_dir)


@pytest.fixture(scope="module")
def make_module_cluster(request, ferry_build, guest_dir):
    """Like make_cluster, for a cluster shared by the tests of a module."""
    return _cluster_factory(request, ferry_build, guest_dir)


@pytest.fixture
def cluster(make_cluster):
    """Two running hosts, host-a (127.0.0.2) and host-b (127.0.0.3)."""
    return make_cluster(hosts=2)


@pytest.fixture
def make_etcd(request, ferry_build):
    """Factory: make_etcd(n=3, pki=None) -> etcdlib.EtcdCluster of n
    members on loopback with TLS, started and healthy (pki: an existing
    ferry PKI dir, e.g. a Cluster's, to issue the members' certificates
    from). Every member is killed and its dir removed after the test."""
    def make(n=3, pki=None):
        ec = etcdlib.EtcdCluster(n=n, ferry_build=ferry_build, pki=pki)
        request.addfinalizer(ec.close)
        return ec.start()

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for c in ferrylib.live_clusters():
            rep.sections.append((f"ferry cluster {c.dir} ({rep.when})", c.diagnostics()))
