"""What `meson install` puts on a host (docs/install.md), checked in a
DESTDIR tree: the files, the systemd units (`systemd-analyze verify`, and
ferryd run the way the unit confines it), the sysusers.d and tmpfiles.d
entries (applied to a scratch root), the commented default ferryd.json, the
man pages against each program's --help, and the bash completion.

No systemd runs here: what needs PID 1 is emulated (setpriv for the unit's
NoNewPrivileges, CapabilityBoundingSet and UMask; signalling ferryd alone
for KillMode=process). tests/system/test_notify.py covers sd_notify and
tests/package/test_package.py the Debian packages.

Run: /usr/bin/python3 -m pytest -q tests/system/test_install.py
"""

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from ferrylib import REPO, build_dir, qemu_running, wait_until

A = "host-a"
PAGES = ("ferry.1", "ferry-balancer.1", "ferryd.8", "ferryd.json.5", "ferry-detect.1")


def run(argv, **kw):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=120, **kw)


class Tree:
    """A DESTDIR install of the build: root, and where each file went,
    by its source (relative to the build folder or to the repository:
    "ferry", "docs/man/ferry.1", "dist/bash-completion/ferry")."""

    def __init__(self, build, root):
        self.build, self.root = build, root
        out = run(["meson", "introspect", str(build), "--installed"])
        assert out.returncode == 0, out.stderr
        self.dest = {}
        for src, dst in json.loads(out.stdout).items():
            src = Path(src)
            base = build if src.is_relative_to(build) else REPO
            self.dest[str(src.relative_to(base))] = Path(dst)

    def host_path(self, name):
        """Where source `name` lands on a real host."""
        return self.dest[name]

    def path(self, name):
        """The installed file of source `name`, in the tree."""
        return self.root / self.dest[name].relative_to("/")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    build = build_dir()
    root = tmp_path_factory.mktemp("destdir")
    r = run(["meson", "install", "-C", build, "--destdir", root, "--no-rebuild"])
    assert r.returncode == 0, r.stdout + r.stderr
    return Tree(build, root)


# ------------------------------------------------------------------ files


def test_installed_files(tree):
    files = {p.relative_to(tree.root) for p in tree.root.rglob("*") if p.is_file()}
    assert files == {d.relative_to("/") for d in tree.dest.values()}
    want = {
        "ferry": r"/bin/ferry$", "ferryd": r"/bin/ferryd$",
        "ferry-balancer": r"/bin/ferry-balancer$", "ferry-detect": r"/bin/ferry-detect$",
        "dist/ferryd.service": r"^/(usr/)?lib/systemd/system/ferryd\.service$",
        "dist/ferry-detect.service": r"^/(usr/)?lib/systemd/system/ferry-detect\.service$",
        "dist/default/ferry-detect": r"/etc/default/ferry-detect$",
        "dist/sysusers.d/ferryd.conf": r"^/usr/lib/sysusers\.d/ferryd\.conf$",
        "dist/tmpfiles.d/ferryd.conf": r"^/usr/lib/tmpfiles\.d/ferryd\.conf$",
        "dist/ferryd.json": r"/etc/ferry/ferryd\.json$",
        "dist/bash-completion/ferry": r"/share/bash-completion/completions/ferry$",
        "dist/bash-completion/ferry-detect":
            r"/share/bash-completion/completions/ferry-detect$",
        "docs/man/ferry.1": r"/man/man1/ferry\.1$",
        "docs/man/ferry-balancer.1": r"/man/man1/ferry-balancer\.1$",
        "docs/man/ferryd.8": r"/man/man8/ferryd\.8$",
        "docs/man/ferryd.json.5": r"/man/man5/ferryd\.json\.5$",
        "docs/man/ferry-detect.1": r"/man/man1/ferry-detect\.1$",
    }
    assert set(tree.dest) == set(want)
    for name, pattern in want.items():
        assert re.search(pattern, str(tree.host_path(name))), (name, tree.host_path(name))
    for b in ("ferry", "ferryd", "ferry-balancer", "ferry-detect"):
        assert stat.S_IMODE(tree.path(b).stat().st_mode) == 0o755
    for f in ("dist/ferryd.json", "dist/default/ferry-detect"):
        assert stat.S_IMODE(tree.path(f).stat().st_mode) == 0o644


# ------------------------------------------------------------------ units


def unit_keys(text):
    """{(section, key): [values]} of a unit file."""
    keys, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, v = line.split("=", 1)
        keys.setdefault((section, k), []).append(v)
    return keys


def verify(unit_text, name, tmp, manpath):
    """systemd-analyze verify of unit_text (as `name`): rc 0 and not a word
    on stderr (it only warns about unknown keys and bad values)."""
    f = tmp / name
    f.write_text(unit_text)
    r = run(["systemd-analyze", "verify", f], env={**os.environ, "MANPATH": str(manpath),
                                                   "SYSTEMD_LOG_LEVEL": "notice"})
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    return r


def test_units_verify(tree, tmp_path):
    """systemd-analyze accepts the units. The installed ExecStart names
    the binary where a real install puts it; here it is in the DESTDIR
    tree, so the unit is verified with that prefix (nothing else changes)."""
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze missing: scripts/deps.sh installs systemd")
    manpath = tree.path("docs/man/ferry.1").parents[1]
    unit = tree.path("dist/ferryd.service").read_text()
    bindir = str(tree.host_path("ferryd").parent)
    assert f"ExecStart={bindir}/ferryd --config " in unit
    verify(unit.replace(f"={bindir}/", f"={tree.root}{bindir}/"), "ferryd.service",
           tmp_path, manpath)
    # a broken unit is refused, so the check can fail
    with pytest.raises(AssertionError):
        verify(unit.replace("KillMode=process", "KillMod=process")
               .replace(f"={bindir}/", f"={tree.root}{bindir}/"), "bad.service",
               tmp_path, manpath)
    detect = tree.path("dist/ferry-detect.service").read_text()
    assert f"ExecStart={bindir}/ferry-detect run " in detect
    verify(detect.replace(f"={bindir}/", f"={tree.root}{bindir}/"), "ferry-detect.service",
           tmp_path, manpath)


def test_unit_contract(tree):
    """What the issue asks of the unit, as systemd will read it."""
    k = unit_keys(tree.path("dist/ferryd.service").read_text())
    s = lambda key: k.get(("Service", key))  # noqa: E731
    assert s("Type") == ["notify"]
    assert s("Restart") == ["on-failure"]
    assert s("KillMode") == ["process"]  # the QEMUs outlive ferryd
    assert s("ExecReload") == ["/bin/kill -HUP $MAINPID"]  # the policy reload
    assert s("OOMPolicy") == ["continue"]
    for key, want in (("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"),
                      ("ProtectSystem", "full")):
        assert s(key) == [want], key
    for cannot in ("MemoryDenyWriteExecute", "PrivateDevices", "PrivateNetwork",
                   "DynamicUser", "User", "PrivateUsers", "SystemCallFilter"):
        assert s(cannot) is None, cannot
    assert k[("Install", "WantedBy")] == ["multi-user.target"]


def test_sysusers_and_tmpfiles(tree, tmp_path):
    """Applied to a scratch root: the QEMU user and the state dir."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    sysusers = tree.path("dist/sysusers.d/ferryd.conf")
    r = run(["systemd-sysusers", f"--root={root}", sysusers])
    assert r.returncode == 0, r.stderr
    passwd = {l.split(":")[0]: l.split(":") for l in (root / "etc/passwd").read_text().splitlines()}
    groups = {l.split(":")[0]: l.split(":") for l in (root / "etc/group").read_text().splitlines()}
    user = passwd["ferry-qemu"]
    assert int(user[2]) < 1000 and user[6] == "/usr/sbin/nologin"  # a system user
    assert groups["ferry-qemu"][2] == user[3]
    assert "ferry-qemu" in groups["kvm"][3].split(",")
    tmpfiles = tree.path("dist/tmpfiles.d/ferryd.conf")
    r = run(["systemd-tmpfiles", f"--root={root}", "--create", tmpfiles])
    assert r.returncode == 0, r.stderr
    st = (root / "var/lib/ferry").stat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700


# ------------------------------------------------------------------ config


def test_default_config(tree, make_cluster, tmp_path):
    """The shipped ferryd.json is valid JSON, its # members are comments,
    ferryd refuses it until host is set, and with only the host's own
    facts filled in (name, address, ports, folders) it serves: the rest,
    the relative pki/ and policy paths included, works as shipped."""
    shipped = tree.path("dist/ferryd.json")
    cfg = json.loads(shipped.read_text())
    assert cfg["host"] == "" and cfg["listen"]["address"] == ""
    r = run([tree.path("ferryd"), "--config", shipped])
    assert r.returncode == 1 and "host" in r.stderr, r.stderr

    c = make_cluster(hosts=1, start=False)
    h = c.hosts[A]
    etc = tmp_path / "etc-ferry"  # beside a copy: the tree stays as installed
    (etc / "pki").mkdir(parents=True)
    for src, dst in (("ca.crt", "ca.crt"), (f"hosts/{A}.crt", "host.crt"),
                     (f"hosts/{A}.key", "host.key")):
        shutil.copy(c.pki / src, etc / "pki" / dst)
    shutil.copy(c.policy_path(A), etc / "policy.json")
    cfg.update(host=A, state_dir=str(h.state_dir), shared_dir=str(c.shared))
    cfg["listen"].update(address=h.address, port=h.port)
    cfg["migration"]["port"] = h.port + 1
    (etc / "ferryd.json").write_text(json.dumps(cfg))
    h.config.unlink()
    h.config.symlink_to(etc / "ferryd.json")
    c.ferryd_bin = tree.path("ferryd")
    c.start_host(A)
    assert c.host_info(A)["name"] == A
    assert c.stop_host(A) == 0


# ------------------------------------------------------------------ confinement


# linux/capability.h
CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2,
               "CAP_FOWNER": 3, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7,
               "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
               "CAP_SYS_ADMIN": 21}


def confined(tree, tmp):
    """A ferryd wrapper that applies the unit's NoNewPrivileges,
    CapabilityBoundingSet and UMask the way systemd would, then execs the
    installed ferryd (the PID stays ferryd's)."""
    k = unit_keys(tree.path("dist/ferryd.service").read_text())
    caps = k[("Service", "CapabilityBoundingSet")][0].split()
    umask = k[("Service", "UMask")][0]
    assert k[("Service", "NoNewPrivileges")] == ["yes"]
    bounding = ",".join(["-all"] + ["+" + c.lower().removeprefix("cap_") for c in caps])
    w = tmp / "ferryd-confined"
    w.write_text(f"#!/bin/sh\numask {umask}\nexec setpriv --no-new-privs "
                 f"--bounding-set={bounding} --inh-caps=-all "
                 f"{tree.path('ferryd')} \"$@\"\n")
    w.chmod(0o755)
    return w


def test_confined_ferryd_runs_vms(tree, make_cluster, tmp_path):
    """Under the unit's confinement ferryd starts a VM; stopping ferryd
    (KillMode=process: the signal reaches ferryd alone) leaves the QEMU
    running, and the next ferryd, confined alike, re-attaches to it."""
    c = make_cluster(hosts=1, start=False)
    c.ferryd_bin = confined(tree, tmp_path)
    c.start_host(A)
    pid = c.hosts[A].pid
    status = Path(f"/proc/{pid}/status").read_text()
    caps = unit_keys(tree.path("dist/ferryd.service").read_text())[
        ("Service", "CapabilityBoundingSet")][0].split()
    want = sum(1 << CAP_NUMBERS[cap] for cap in caps)
    for field in ("CapBnd", "CapEff"):
        assert int(re.search(rf"^{field}:\s*(\w+)", status, re.M).group(1), 16) == want
    assert re.search(r"^NoNewPrivs:\s*1", status, re.M)
    vm = c.define_vm(A, "conf", mib=16)
    qpid = c.start_vm(A, "conf")["pid"]
    c.wait_heartbeats(A, "conf", 1)
    assert c.stop_host(A) == 0
    assert qemu_running(qpid, vm["uuid"])
    c.start_host(A)
    info = c.vm_info(A, "conf")
    assert info["state"] == "running" and info["pid"] == qpid
    seq = c.heartbeats(A, "conf")[-1]["seq"]
    c.wait_heartbeats(A, "conf", 1, after_seq=seq)
    c.stop_vm(A, "conf", force=True)


# ------------------------------------------------------------------ man pages


def roff_text(path):
    """The words of a man page's roff source: no macros, no font changes,
    whitespace collapsed (no rendering, so no hyphenation)."""
    lines = [l for l in Path(path).read_text().splitlines() if not l.startswith(".")]
    text = re.sub(r"\\f[BIRP]", "", " ".join(lines))
    text = text.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")
    return re.sub(r"\s+", " ", text)


def options_of(help_text):
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", help_text))


def mentions(text, phrase):
    return re.search(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])", text) is not None


def ferry_commands(ferry):
    """{group: {subcommands}} from `ferry --help` (groups: the first word
    of each command line) and each group's own usage (`ferry GROUP`)."""
    text = run([ferry, "--help"]).stdout
    body = text.split("commands:\n", 1)[1].split("\nsee ", 1)[0]
    groups = {m.group(1) for m in re.finditer(r"^  ([a-z]+)\b", body, re.M)}
    assert {"vm", "migrate", "host", "pki"} <= groups, groups
    subs = {g: set() for g in groups}
    env = {**os.environ, "HOME": tempfile.gettempdir(), "FERRY_CONFIG": "/nonexistent"}
    for g in groups - {"ui"}:  # `ferry ui` serves the dashboard; it has no subcommands
        usage = run([ferry, g], env=env, stdin=subprocess.DEVNULL).stderr
        for m in re.finditer(r"ferry ([a-z]+) ([a-z][a-z|-]*)(?=\s|$)", usage):
            if m.group(1) in subs:
                subs[m.group(1)] |= set(m.group(2).split("|"))
    return subs


def test_man_ferry(tree):
    ferry = tree.path("ferry")
    man = roff_text(tree.path("docs/man/ferry.1"))
    help_text = run([ferry, "--help"]).stdout
    opts = options_of(help_text)
    assert len(opts) > 30  # the whole table of opts.c
    missing = [o for o in sorted(opts | {"--help", "--version"}) if not mentions(man, o)]
    assert not missing, f"ferry(1) lacks options {missing}"
    cmds = ferry_commands(ferry)
    missing = [f"{g} {s}".strip() for g, subs in cmds.items()
               for s in (subs or {""}) if not mentions(man, f"{g} {s}".strip())]
    assert not missing, f"ferry(1) lacks commands {missing}"


def test_man_ferryd_balancer_detect(tree):
    for prog, page in (("ferryd", "ferryd.8"), ("ferry-balancer", "ferry-balancer.1"),
                       ("ferry-detect", "ferry-detect.1")):
        help_text = run([tree.path(prog), "--help"]).stdout
        opts = options_of(help_text) | {"--help"}
        assert len(opts) > 2, help_text
        man = roff_text(tree.path("docs/man/" + page))
        missing = [o for o in sorted(opts) if not mentions(man, o)]
        assert not missing, f"{page} lacks {missing}"
    man = roff_text(tree.path("docs/man/ferry-detect.1"))
    usage = run([tree.path("ferry-detect"), "--help"]).stdout
    cmds = set(re.findall(r"ferry-detect ([a-z|]+)", usage))
    cmds = {c for w in cmds for c in w.split("|")}
    assert cmds == {"run", "watch", "alarms", "replay"}, usage
    missing = [f"ferry-detect {c}" for c in sorted(cmds)
               if not re.search(rf"^\s*\*?{c}\*?\s*$", page_src(tree, "ferry-detect.1"), re.M)]
    assert not missing, f"ferry-detect(1) has no entry for {missing}"


def page_src(tree, page):
    return (REPO / "docs/man" / (page + ".scd")).read_text()


def test_man_ferryd_json(tree):
    """ferryd.json(5) names every member ferryd accepts: the field lists
    its parser checks against (src/config/config.c)."""
    src = (REPO / "src/config/config.c").read_text()
    fields = set()
    for m in re.finditer(r"fields\[\] = \{(.*?)\};", src, re.S):
        fields |= set(re.findall(r'"([a-z_]+)"', m.group(1)))
    assert {"host", "listen", "etcd", "conns_total", "stall_timeout_s"} <= fields
    man = roff_text(tree.path("docs/man/ferryd.json.5")).replace("\\_", "_")
    missing = sorted(f for f in fields if not mentions(man, f))
    assert not missing, f"ferryd.json(5) lacks {missing}"


def test_man_pages_render(tree):
    if not shutil.which("man"):
        pytest.skip("man-db is not installed")
    for page in PAGES:
        r = run(["man", "--warnings", "-l", tree.path("docs/man/" + page)],
                env={**os.environ, "MANWIDTH": "80"})
        assert r.returncode == 0 and r.stderr == "", (page, r.stderr)
        assert page.split(".")[0] in r.stdout


# ------------------------------------------------------------------ completion


def complete(tree, words):
    """COMPREPLY of the installed completion of words[0] (ferry or
    ferry-detect) for the command line `words` (the last one is being
    completed), with the installed programs first on PATH."""
    prog = words[0]
    script = (f'source "{tree.path("dist/bash-completion/" + prog)}"; '
              f'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _{prog.replace("-", "_")}; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    path = f"{tree.path('ferry').parent}:{os.environ['PATH']}"
    r = run(["bash", "-c", script, prog, *words], env={**os.environ, "PATH": path})
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def test_completion_commands(tree):
    t = tree
    cmds = ferry_commands(t.path("ferry"))
    assert complete(t, ["ferry", ""]) == set(cmds)
    for g, subs in cmds.items():
        got = complete(t, ["ferry", g, ""])
        assert subs <= got, (g, subs - got)
    opts = options_of(run([t.path("ferry"), "--help"]).stdout)
    assert complete(t, ["ferry", "--"]) == opts | {"--help", "--version"}
    assert complete(t, ["ferry", "vm", "stop", "x", "--forc"]) == {"--force"}
    assert complete(t, ["ferry", "balance", "mode", ""]) == {"off", "recommend", "auto"}
    # a value is not completed as a command
    assert complete(t, ["ferry", "--timeout", ""]) == set()


def test_completion_names(tree, make_cluster):
    """Host names from the client config, VM names from the chosen host."""
    t = tree
    c = make_cluster(hosts=2)
    c.define_vm(A, "alpha", mib=16)
    c.define_vm(A, "beta", mib=16)
    conf = ["--config", str(c.client_config)]
    assert complete(t, ["ferry", *conf, "migrate", "alpha", "--to", ""]) == \
        {"host-a", "host-b"}
    assert complete(t, ["ferry", *conf, "host", "drain", "host-"]) == \
        {"host-a", "host-b"}
    assert complete(t, ["ferry", *conf, "vm", "start", ""]) == {"alpha", "beta"}
    assert complete(t, ["ferry", *conf, "vm", "info", "b"]) == {"beta"}
    assert complete(t, ["ferry", *conf, "--host", "host-b", "vm", "info", ""]) == set()
    assert {"alpha", "beta", "history"} <= complete(t, ["ferry", *conf, "migrate", ""])


def test_completion_detect(tree):
    t = tree
    opts = options_of(run([t.path("ferry-detect"), "--help"]).stdout)
    assert len(opts) > 20
    assert complete(t, ["ferry-detect", ""]) == \
        {"run", "watch", "alarms", "replay", "--help", "--version"}
    assert complete(t, ["ferry-detect", "run", "--"]) == opts - {"--version"}
    assert complete(t, ["ferry-detect", "run", "--no-s"]) == {"--no-series"}
    assert complete(t, ["ferry-detect", "replay", "--source", ""]) == {"remote", "local"}
    assert complete(t, ["ferry-detect", "run", "--log-level", "d"]) == {"debug"}
    assert "lo" in complete(t, ["ferry-detect", "run", "--iface", ""])
    # a value is not completed as an option or a command
    assert complete(t, ["ferry-detect", "run", "--interval", ""]) == set()
    assert complete(t, ["ferry-detect", "run", "--target", ""]) == set()


# ------------------------------------------------------------------ the detector


def detect_json_example(text):
    """The detect.json of a document: the fenced block that names the
    unit's credentials."""
    block = None
    for line in text.splitlines():
        if line.strip().startswith("```"):
            if block is not None and "/run/credentials/ferry-detect.service/" in block:
                return json.loads(block)
            block = "" if block is None else None
        elif block is not None:
            block += line + "\n"
    raise AssertionError("no detect.json example")


def test_detector_refuses(tree, tmp_path):
    """A missing configuration is a message and exit 1 (it crashed), and
    leaves no state dir; a bad option value names the option."""
    det = tree.path("ferry-detect")
    sd = tmp_path / "state"
    r = run([det, "run", "--config", tmp_path / "none.json", "--state-dir", sd,
             "--from-hosts"])
    assert r.returncode == 1, r
    assert "cannot open client config" in r.stderr and not sd.exists(), r.stderr
    for bad in (["--interval", "1"], ["--interval=1"]):
        r = run([det, "run", *bad])
        assert r.returncode == 2 and r.stderr == "ferry-detect: bad value for --interval\n", r


NOBODY = 65534


def test_confined_detector(tree, make_cluster):
    """ferry-detect as its unit runs it: the unit's command line (with the
    shipped environment file's options), the example detect.json of
    docs/install.md with the credentials where LoadCredential puts them,
    a user without rights (DynamicUser), the unit's NoNewPrivileges,
    capabilities and umask (setpriv). It starts with no VM to watch,
    watches a bridged VM defined afterwards (its ferry.ip= on loopback: the
    probes stay on this machine), and stops cleanly on SIGTERM; --netns
    cannot work under the unit."""
    k = unit_keys(tree.path("dist/ferry-detect.service").read_text())
    s = lambda key: k.get(("Service", key))  # noqa: E731
    assert s("DynamicUser") == ["yes"] and s("NoNewPrivileges") == ["yes"]
    assert s("User") is None
    caps = s("AmbientCapabilities")[0].split()
    assert caps == ["CAP_NET_RAW"] and s("CapabilityBoundingSet") == [" ".join(caps)]
    assert k[("Install", "WantedBy")] == ["multi-user.target"]
    envfile = tree.host_path("dist/default/ferry-detect")
    assert s("EnvironmentFile") == [f"-{envfile}"]
    env_opts = re.search(r"^FERRY_DETECT_OPTS=(.*)$", tree.path("dist/default/ferry-detect")
                         .read_text(), re.M).group(1)
    argv = shlex.split(s("ExecStart")[0])
    assert argv[0] == str(tree.host_path("ferry-detect")) and argv[1] == "run"
    assert {"--from-hosts", "--no-series", "$FERRY_DETECT_OPTS"} <= set(argv), argv
    assert argv[argv.index("--config") + 1] == str(envfile.parents[1] / "ferry/detect.json")
    assert argv[argv.index("--state-dir") + 1] == "/var/lib/" + s("StateDirectory")[0]
    creds = dict(c.split(":", 1) for c in s("LoadCredential"))

    c = make_cluster(hosts=1, start=False, users=("admin", "detect"))
    pol = c.default_policy()
    pol["roles"] = {"admin": ["admin"], "auditor": ["detect"], "host": [A]}
    c.write_policy(A, pol)
    c.start_all()

    # the files as the service sees them, in a folder it may reach
    base = Path(tempfile.mkdtemp(prefix="ferry-detect-", dir="/tmp"))
    try:
        base.chmod(0o711)
        det = base / "ferry-detect"
        shutil.copy(tree.path("ferry-detect"), det)
        cred = base / "credentials" / "ferry-detect.service"
        cred.mkdir(parents=True)
        pki = {"ca.crt": c.pki / "ca.crt", "detect.crt": c.pki / "users/detect.crt",
               "detect.key": c.pki / "users/detect.key"}
        for cid, src in creds.items():
            assert src == f"{envfile.parents[1]}/ferry/pki/{cid}", (cid, src)
            shutil.copy(pki[cid], cred / cid)
            os.chown(cred / cid, NOBODY, NOBODY)
            (cred / cid).chmod(0o400)
        os.chown(cred, NOBODY, NOBODY)
        cred.chmod(0o500)
        (base / "credentials").chmod(0o755)
        example = detect_json_example((REPO / "docs/install.md").read_text())
        assert detect_json_example(page_src(tree, "ferry-detect.1")) == example
        conf = json.loads(json.dumps(example).replace(
            "/run/credentials/ferry-detect.service/", f"{cred}/"))
        conf["hosts"] = {A: {"address": c.hosts[A].address, "port": c.hosts[A].port}}
        (base / "detect.json").write_text(json.dumps(conf))
        (base / "detect.json").chmod(0o644)
        sd = base / "state"
        sd.mkdir(mode=0o755)
        os.chown(sd, NOBODY, NOBODY)
        argv[0] = str(det)
        argv[argv.index("--config") + 1] = str(base / "detect.json")
        argv[argv.index("--state-dir") + 1] = str(sd)
        i = argv.index("$FERRY_DETECT_OPTS")
        argv[i:i + 1] = shlex.split(shlex.split(env_opts)[0] if env_opts else "")
        set_caps = ",".join(["-all"] + ["+" + c.lower().removeprefix("cap_") for c in caps])
        confine = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                   "--no-new-privs", f"--bounding-set={set_caps}", f"--inh-caps={set_caps}",
                   f"--ambient-caps={set_caps}"]
        umask = int(s("UMask")[0], 8)
        err = open(base / "stderr", "w+")
        p = subprocess.Popen(confine + argv, stdout=subprocess.DEVNULL, stderr=err,
                             preexec_fn=lambda: os.umask(umask))
        try:
            def state():
                assert p.poll() is None, (base / "stderr").read_text()
                try:
                    return json.loads((sd / "state.json").read_text())
                except (OSError, ValueError):
                    return None
            st = wait_until(state, 30, 0.2, "the detector's first state")
            assert st["targets"] == []  # no VM yet: it runs on
            assert [(h["host"], h["reached"], h["audit_ok"]) for h in st["hosts"]] == \
                [(A, True, True)], st["hosts"]
            status = Path(f"/proc/{p.pid}/status").read_text()
            assert re.search(rf"^Uid:\s+{NOBODY}\s", status, re.M)
            assert re.search(r"^NoNewPrivs:\s*1", status, re.M)
            want = sum(1 << CAP_NUMBERS[cap] for cap in caps)
            for field in ("CapBnd", "CapEff", "CapAmb"):
                assert int(re.search(rf"^{field}:\s*(\w+)", status, re.M).group(1), 16) == want

            c.define_vm(A, "dv", mib=16, extra="ferry.ip=127.0.0.9/8",
                        network={"bridge": "lan", "mac": "52:54:00:aa:00:09"})
            t = wait_until(lambda: [t for t in state()["targets"]
                                    if t["target"] == "127.0.0.9" and t["rtt_ms"] > 0],
                           30, 0.2, "the detector to ping the new VM")[0]
            assert (t["vm"], t["mac"]) == ("dv", "52:54:00:aa:00:09"), t
            assert "watching dv at 127.0.0.9" in (base / "stderr").read_text()
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=20) == 0, (base / "stderr").read_text()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert not (sd / "series.csv").exists()  # --no-series
        assert stat.S_IMODE((sd / "events.jsonl").stat().st_mode) == 0o600  # UMask
        r = run([c.ferry_bin, "audit", "verify", "--log", sd / "audit/audit.log",
                 "--key", sd / "audit/audit.pub"])
        assert r.returncode == 0, r.stdout + r.stderr

        # --netns needs CAP_SYS_ADMIN, which the unit does not grant
        ns = f"fyi{os.getpid()}"
        assert run(["ip", "netns", "add", ns]).returncode == 0
        try:
            r = run(confine + argv + ["--netns", ns, "--duration", "1"],
                    preexec_fn=lambda: os.umask(umask))
        finally:
            run(["ip", "netns", "del", ns])
        assert r.returncode == 1, r
        assert f"cannot enter network namespace {ns}: Operation not permitted" in r.stderr
    finally:
        shutil.rmtree(base)
