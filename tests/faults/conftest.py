"""The fault matrix (docs/reliability.md): every fault at every phase of a
migration, FAULT_TRIALS times per cell, with the invariants checked after
each trial. `make faults` runs the whole matrix; `make check` one trial of
a few cells (FAULT_CELLS=smoke).

Environment:
  FAULT_TRIALS   trials per cell (default 3)
  FAULT_CELLS    "all" (default), "smoke", or a comma list of PHASE:FAULT
  FAULT_RESULTS  where each trial's result is appended (JSON lines;
                 default build-asan/faults.jsonl), for report.py
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

SYSTEM = Path(__file__).resolve().parents[1] / "system"
sys.path.insert(0, str(SYSTEM))
# the system tests' fixtures and failure reports, under another name
_spec = importlib.util.spec_from_file_location("ferry_system_conftest",
                                               SYSTEM / "conftest.py")
_sc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sc)
guest_dir = _sc.guest_dir
ferry_build = _sc.ferry_build
make_cluster = _sc.make_cluster
userfaultfd_for_qemu = _sc.userfaultfd_for_qemu  # autouse: post-copy cells
pytest_runtest_makereport = _sc.pytest_runtest_makereport

import ferrylib  # noqa: E402

RESULTS = Path(os.environ.get("FAULT_RESULTS",
                              ferrylib.REPO / "build-asan" / "faults.jsonl"))


@pytest.fixture(scope="session")
def results():
    """Append one trial's result to FAULT_RESULTS."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)

    def add(rec):
        with open(RESULTS, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    return add


def pytest_terminal_summary(terminalreporter):
    """Print the matrix of this run (report.py does it for a file)."""
    if not RESULTS.exists():
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import report
    recs = [json.loads(line) for line in RESULTS.read_text().splitlines() if line]
    run = os.environ.get("FAULT_RUN")
    if run:
        recs = [r for r in recs if r.get("run") == run]
    if recs:
        terminalreporter.write_line("")
        terminalreporter.write_line(report.table(recs))
