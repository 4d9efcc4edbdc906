"""Print the fault matrix from trial results (JSON lines, conftest.py).

    /usr/bin/python3 tests/faults/report.py [FILE] [--run ID] [--markdown]
"""

import json
import sys
from collections import OrderedDict
from pathlib import Path

COLS = ["trials", "ok", "crashed", "lost", "twice", "corrupt", "leaked",
        "audit", "harness"]


def matrix(recs):
    rows = OrderedDict()
    for r in recs:
        key = (r["phase"], r["fault"])
        row = rows.setdefault(key, {k: 0 for k in COLS})
        row["trials"] += 1
        row[r["outcome"] if r["outcome"] in row else "harness"] += 1
    return rows


def table(recs, markdown=False):
    rows = matrix(recs)
    head = ["phase", "fault"] + COLS
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for (p, f), row in rows.items():
            label = f"{f} (crash cell)" if any(
                r["crash_cell"] for r in recs
                if (r["phase"], r["fault"]) == (p, f)) else f
            lines.append("| " + " | ".join([p, label] +
                                          [str(row[k]) for k in COLS]) + " |")
    else:
        lines.append(f"{'phase':<11} {'fault':<16} " +
                     " ".join(f"{k:>7}" for k in COLS))
        for (p, f), row in rows.items():
            lines.append(f"{p:<11} {f:<16} " +
                         " ".join(f"{row[k]:>7}" for k in COLS))
    tot = {k: sum(r[k] for r in rows.values()) for k in COLS}
    lines.append(("| total | | " + " | ".join(str(tot[k]) for k in COLS) + " |")
                 if markdown else
                 f"{'total':<28} " + " ".join(f"{tot[k]:>7}" for k in COLS))
    return "\n".join(lines)


def main(argv):
    path = Path("build-asan/faults.jsonl")
    run, md = None, False
    args = iter(argv)
    for a in args:
        if a == "--run":
            run = next(args)
        elif a == "--markdown":
            md = True
        else:
            path = Path(a)
    recs = [json.loads(line) for line in path.read_text().splitlines() if line]
    if run:
        recs = [r for r in recs if r.get("run") == run]
    print(table(recs, md))
    secs = sum(r.get("seconds", 0) for r in recs)
    print(f"\n{len(recs)} trials, {secs / 60:.1f} min of trials")


if __name__ == "__main__":
    main(sys.argv[1:])
