"""The Debian packages (debian/, docs/install.md), as `make package` built
them into $FERRY_DEB_DIR: each .deb unpacked into a clean tree (dpkg -x)
and its files, metadata and maintainer scripts checked; the unit verified
by systemd-analyze; lintian over the upload, which must report nothing but
the tags debian/ferryd.lintian-overrides and
debian/ferry-detect.lintian-overrides explain.

Run: make package   (or FERRY_DEB_DIR=build-deb /usr/bin/python3 -m pytest -q tests/package)
"""

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = re.search(r"version : '([^']+)'", (REPO / "meson.build").read_text()).group(1)

FILES = {
    "ferryd": {
        "etc/ferry/ferryd.json",
        "lib/systemd/system/ferryd.service",
        "usr/bin/ferryd",
        "usr/lib/sysusers.d/ferryd.conf",
        "usr/lib/tmpfiles.d/ferryd.conf",
        "usr/share/doc/ferryd/changelog.gz",
        "usr/share/doc/ferryd/copyright",
        "usr/share/lintian/overrides/ferryd",
        "usr/share/man/man5/ferryd.json.5.gz",
        "usr/share/man/man8/ferryd.8.gz",
    },
    "ferry": {
        "usr/bin/ferry",
        "usr/bin/ferry-balancer",
        "usr/share/bash-completion/completions/ferry",
        "usr/share/doc/ferry/changelog.gz",
        "usr/share/doc/ferry/copyright",
        "usr/share/man/man1/ferry-balancer.1.gz",
        "usr/share/man/man1/ferry.1.gz",
    },
    "ferry-detect": {
        "etc/default/ferry-detect",
        "lib/systemd/system/ferry-detect.service",
        "usr/bin/ferry-detect",
        "usr/share/bash-completion/completions/ferry-detect",
        "usr/share/doc/ferry-detect/changelog.gz",
        "usr/share/doc/ferry-detect/copyright",
        "usr/share/lintian/overrides/ferry-detect",
        "usr/share/man/man1/ferry-detect.1.gz",
    },
}
UNITS = {"ferryd": "ferryd.service", "ferry-detect": "ferry-detect.service"}


def run(argv, **kw):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def debs():
    d = Path(os.environ.get("FERRY_DEB_DIR", REPO / "build-deb"))
    found = {p: d / f"{p}_{VERSION}_amd64.deb" for p in FILES}
    for p, f in found.items():
        assert f.is_file(), f"{f} missing: run `make package`"
    return found


@pytest.fixture(scope="module")
def unpacked(debs, tmp_path_factory):
    """Each package unpacked into a clean tree of its own."""
    trees = {}
    for p, deb in debs.items():
        root = tmp_path_factory.mktemp(p)
        r = run(["dpkg-deb", "-x", deb, root])
        assert r.returncode == 0, r.stderr
        ctl = tmp_path_factory.mktemp(p + "-control")
        assert run(["dpkg-deb", "-e", deb, ctl]).returncode == 0
        trees[p] = (root, ctl)
    return trees


def field(deb, name):
    return run(["dpkg-deb", "-f", deb, name]).stdout.strip()


def test_files(unpacked):
    for p, (root, _) in unpacked.items():
        files = {str(f.relative_to(root)) for f in root.rglob("*") if not f.is_dir()}
        assert files == FILES[p], p
    root = unpacked["ferryd"][0]
    for b in ("usr/bin/ferryd",):
        assert stat.S_IMODE((root / b).stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "etc/ferry/ferryd.json").stat().st_mode) == 0o644
    unit = (root / "lib/systemd/system/ferryd.service").read_text()
    assert "\nExecStart=/usr/bin/ferryd --config /etc/ferry/ferryd.json\n" in unit
    root = unpacked["ferry-detect"][0]
    assert stat.S_IMODE((root / "usr/bin/ferry-detect").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "etc/default/ferry-detect").stat().st_mode) == 0o644
    unit = (root / "lib/systemd/system/ferry-detect.service").read_text()
    assert "\nEnvironmentFile=-/etc/default/ferry-detect\n" in unit
    assert ("\nExecStart=/usr/bin/ferry-detect run --config /etc/ferry/detect.json "
            "--state-dir /var/lib/ferry-detect --from-hosts --no-series $FERRY_DETECT_OPTS\n"
            ) in unit
    assert "\nLoadCredential=detect.key:/etc/ferry/pki/detect.key\n" in unit


def test_binaries_run(unpacked):
    for p, prog in (("ferry", "ferry"), ("ferryd", "ferryd"),
                    ("ferry-detect", "ferry-detect")):
        r = run([unpacked[p][0] / "usr/bin" / prog, "--version"])
        assert r.returncode == 0 and r.stdout.strip() == f"{prog} {VERSION}", r


def test_metadata(debs, unpacked):
    assert field(debs["ferryd"], "Version") == VERSION
    depends = field(debs["ferryd"], "Depends")
    assert "qemu-system-x86" in depends and "libsystemd0" in depends
    assert field(debs["ferryd"], "Recommends") == "ferry"
    ctl = unpacked["ferryd"][1]
    assert (ctl / "conffiles").read_text().split() == ["/etc/ferry/ferryd.json"]
    postinst = (ctl / "postinst").read_text()
    assert "systemd-sysusers" in postinst and "ferryd.conf" in postinst
    assert "systemd-tmpfiles" in postinst
    # installed disabled (enabled again only where it was: the guard of
    # dh_installsystemd --no-enable), never started by the package; an
    # upgrade restarts a running ferryd (try-restart), without stopping it
    # first
    assert "deb-systemd-helper debian-installed 'ferryd.service'" in postinst
    assert "try-restart" in postinst and "deb-systemd-invoke start" not in postinst
    assert not (ctl / "preinst").exists() or "stop" not in (ctl / "preinst").read_text()
    prerm = (ctl / "prerm").read_text()
    assert re.search(r'"\$1" = remove .*\n\s*deb-systemd-invoke stop ferryd.service', prerm)
    # the detector: the same life cycle; its options file is a conffile
    depends = field(debs["ferry-detect"], "Depends")
    assert "libssl3" in depends and "qemu" not in depends, depends
    ctl = unpacked["ferry-detect"][1]
    assert (ctl / "conffiles").read_text().split() == ["/etc/default/ferry-detect"]
    postinst = (ctl / "postinst").read_text()
    assert "deb-systemd-helper debian-installed 'ferry-detect.service'" in postinst
    assert "try-restart" in postinst and "deb-systemd-invoke start" not in postinst
    prerm = (ctl / "prerm").read_text()
    assert re.search(r'"\$1" = remove .*\n\s*deb-systemd-invoke stop ferry-detect.service',
                     prerm)


@pytest.mark.parametrize("package", sorted(UNITS))
def test_unit_verifies(unpacked, tmp_path, package):
    """systemd-analyze verify of each packaged unit, its ExecStart pointed
    into the unpacked tree (nothing else changes), its man pages found
    there."""
    root = unpacked[package][0]
    unit = (root / "lib/systemd/system" / UNITS[package]).read_text()
    f = tmp_path / UNITS[package]
    f.write_text(unit.replace("=/usr/bin/", f"={root}/usr/bin/"))
    r = run(["systemd-analyze", "verify", f],
            env={**os.environ, "MANPATH": str(root / "usr/share/man")})
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_lintian(debs):
    changes = debs["ferry"].with_name(f"ferry_{VERSION}_amd64.changes")
    r = run(["lintian", "--pedantic", "--display-info", "--show-overrides", changes])
    tags = [l for l in r.stdout.splitlines() if re.match(r"^[EWIPXCO]: ", l)]
    assert sorted(tags) == [
        f"O: {p}: package-supports-alternative-init-but-no-init.d-script "
        f"[lib/systemd/system/{UNITS[p]}]" for p in sorted(UNITS)], r.stdout + r.stderr
