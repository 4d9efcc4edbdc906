"""The balancer's simulator end to end (docs/balancer.md, "Simulator").

Runs $FERRY_BUILD/ferry-balancer (default <repo>/build, like the other
system tests; ferrylib.build_dir()) as a user would: generate each synthetic
trace with a fixed seed into a CSV file, simulate it, and compare our
controller with the two baselines from the --json output. Needs no QEMU and
no guest; about a second under ASan.

Run with Debian's interpreter:
  /usr/bin/python3 -m pytest tests/system/test_simulator.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ferrylib  # noqa: E402

TRACES = ("diurnal", "bursty", "steady")
SEED = 1  # the generator's default; docs/balancer.md "Results" uses it too
OURS = "balancer"
NAIVE = "naive-least-loaded"
STATIC = "static-threshold"
NONE = "none"

# SLATAH is a fraction of active host time. Ours must not be worse than a
# baseline's by more than 1e-4 (0.01 percentage point): room for float
# summation noise only. On the steady trace the three policies tie exactly.
SLATAH_EPS = 1e-4


@pytest.fixture(scope="module")
def balancer_bin():
    path = ferrylib.build_dir() / "ferry-balancer"
    assert os.access(path, os.X_OK), \
        f"{path} missing: run `ninja -C build` or set FERRY_BUILD"
    return path


def run(binary, *args, check=True):
    p = subprocess.run([str(binary), *map(str, args)], capture_output=True,
                       text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"ferry-balancer {' '.join(map(str, args))}: "
                             f"exit {p.returncode}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def results(balancer_bin, tmp_path_factory):
    """trace kind -> {policy name: metrics} from --simulate --json."""
    d = tmp_path_factory.mktemp("traces")
    out = {}
    for kind in TRACES:
        csv = d / f"{kind}.csv"
        gen = run(balancer_bin, "--generate", kind, "--seed", SEED)
        csv.write_text(gen.stdout)
        sim = json.loads(run(balancer_bin, "--simulate", csv, "--json").stdout)
        assert sim["trace"]["vms"] == 200
        assert sim["trace"]["intervals"] == 288
        pols = {p["policy"]: p for p in sim["policies"]}
        assert set(pols) == {OURS, NAIVE, STATIC, NONE}
        out[kind] = pols
    return out


@pytest.mark.parametrize("kind", TRACES)
def test_fewer_oscillations_than_baselines(results, kind):
    m = results[kind]
    assert m[OURS]["oscillations"] <= m[NAIVE]["oscillations"], m
    assert m[OURS]["oscillations"] <= m[STATIC]["oscillations"], m
    assert m[OURS]["oscillations"] < m[NAIVE]["oscillations"], m


def test_fewer_oscillations_in_total(results):
    ours = sum(results[k][OURS]["oscillations"] for k in TRACES)
    for base in (NAIVE, STATIC):
        assert ours < sum(results[k][base]["oscillations"] for k in TRACES), \
            {k: {p: results[k][p]["oscillations"] for p in results[k]}
             for k in TRACES}


@pytest.mark.parametrize("kind", TRACES)
def test_no_worse_overload_time(results, kind):
    m = results[kind]
    for base in (NAIVE, STATIC):
        assert m[OURS]["slatah"] <= m[base]["slatah"] + SLATAH_EPS, \
            (base, m[OURS]["slatah"], m[base]["slatah"])
    # and balancing at all is worth it
    assert m[OURS]["slatah"] < m[NONE]["slatah"], m


def test_balancer_acts(results):
    """A balancer that never moves anything would pass the comparisons on
    oscillations; it must move VMs on the diurnal trace (and the bursty
    one), and 'none' never does."""
    assert results["diurnal"][OURS]["migrations"] > 0
    assert results["bursty"][OURS]["migrations"] > 0
    for kind in TRACES:
        assert results[kind][NONE]["migrations"] == 0
        assert results[kind][NONE]["oscillations"] == 0


def test_deterministic(balancer_bin, tmp_path):
    a = run(balancer_bin, "--generate", "bursty", "--seed", 7, "--vms", 30,
            "--intervals", 40).stdout
    b = run(balancer_bin, "--generate", "bursty", "--seed", 7, "--vms", 30,
            "--intervals", 40).stdout
    assert a == b
    assert a.splitlines()[0] == "interval,vm,cpu,mem_mib,dirty_mibps"
    assert len(a.splitlines()) == 1 + 30 * 40
    csv = tmp_path / "t.csv"
    csv.write_text(a)
    s1 = run(balancer_bin, "--simulate", csv, "--hosts", 8, "--json").stdout
    s2 = run(balancer_bin, "--simulate", csv, "--hosts", 8, "--json").stdout
    assert s1 == s2


HEADER = "interval,vm,cpu,mem_mib\n"
MALFORMED = [
    # (file content, line, message after "LINE: ")
    (HEADER + "0,vm-a,1.5,1024\n0,vm-b,x,1024\n", 3,
     "cpu: not a decimal number of cores between 0 and 4096"),
    ("interval,vm,cpu\n0,vm-a,1,1024\n", 1,
     'header must be "interval,vm,cpu,mem_mib" or '
     '"interval,vm,cpu,mem_mib,dirty_mibps"'),
    (HEADER + "0,vm-a,1,1024\n0,vm-a,2,1024\n", 3,
     "vm vm-a listed twice in interval 0"),
    (HEADER + "0,vm-a,1,1024,7\n", 2,
     "wrong number of fields, the header has 4"),
    (HEADER + "0,vm-a,1,1024\n0,vm-b,1,1024\n1,vm-a,1,1024\n2,vm-a,1,1024\n",
     5, "interval 1 has 1 of 2 VMs (missing: vm-b)"),
    (HEADER + "0,vm-a,1,1024\n2,vm-a,1,1024\n", 3,
     "interval 2 skips interval 1"),
    (HEADER + "0,vm-a,1,1024\n1,vm-z,1,1024\n", 3,
     "vm vm-z is not in interval 0"),
    (HEADER + "1,vm-a,1,1024\n", 2,
     "interval 0 has no rows (a trace starts at interval 0)"),
    (HEADER + "0,Bad Name,1,1024\n", 2,
     "vm: not a valid name ([a-z0-9][a-z0-9._-]*, at most 63)"),
    (HEADER + "0,vm-a,-1,1024\n", 2,
     "cpu: not a decimal number of cores between 0 and 4096"),
    (HEADER, 1, "no data rows"),
]


@pytest.mark.parametrize("content,line,why", MALFORMED,
                         ids=[f"line{m[1]}-{i}" for i, m in enumerate(MALFORMED)])
def test_malformed_trace(balancer_bin, tmp_path, content, line, why):
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    p = run(balancer_bin, "--simulate", csv, check=False)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert p.stdout == ""
    assert p.stderr == f"ferry-balancer: error: {csv}:{line}: {why}\n"


def test_trace_errors_without_line(balancer_bin, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    p = run(balancer_bin, "--simulate", empty, check=False)
    assert p.returncode == 1
    assert p.stderr == f"ferry-balancer: error: {empty}: empty file (no header)\n"
    missing = tmp_path / "missing.csv"
    p = run(balancer_bin, "--simulate", missing, check=False)
    assert p.returncode == 1
    assert p.stderr == (f"ferry-balancer: error: {missing}: "
                        f"No such file or directory\n")


def test_usage_errors(balancer_bin, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text(HEADER + "0,vm-a,1,1024\n")
    p = run(balancer_bin, "--simulate", csv, "--param", "nope=1", check=False)
    assert p.returncode == 2
    assert p.stderr == ('ferry-balancer: error: unknown balancer parameter '
                        '"nope"\n')
    p = run(balancer_bin, "--simulate", csv, "--param", "headroom=0.9",
            check=False)
    assert p.returncode == 2
    assert "headroom (0.9) must be below high (0.8)" in p.stderr
