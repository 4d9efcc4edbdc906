"""analyzer_filter.py OUT ALLOW: the bugs of scan-build's plist reports in
OUT that ALLOW does not list. Each line of ALLOW (not blank, not #) is
    FILE | CHECKER | DESCRIPTION | REASON
matching a report by its file, checker and description (not its line, so
edits elsewhere keep it). Exit 1 when a report is not allowed, or when an
allowance matches nothing (it is stale)."""
import plistlib
import sys
from pathlib import Path


def reports(out):
    for p in Path(out).rglob("*.plist"):
        d = plistlib.loads(p.read_bytes())
        files = d.get("files", [])
        for diag in d.get("diagnostics", []):
            loc = diag["location"]
            path = files[loc["file"]]
            while path.startswith("../"):  # relative to the build folder
                path = path[3:]
            if path.startswith(str(Path.cwd()) + "/"):
                path = path[len(str(Path.cwd())) + 1:]
            if path.startswith("tests/"):
                continue  # cmocka's asserts end a test: unseen by the analyzer
            yield (path, diag.get("check_name", "?"), diag["description"],
                   loc["line"])


def main(out, allow_path):
    allow = {}
    for line in Path(allow_path).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [x.strip() for x in line.split("|")]
        if len(parts) != 4 or not parts[3]:
            sys.exit(f"{allow_path}: needs FILE | CHECKER | DESCRIPTION | REASON: {line}")
        allow[tuple(parts[:3])] = parts[3]
    used, bad = set(), []
    for path, check, desc, line in sorted(set(reports(out))):
        key = (path, check, desc)
        if key in allow:
            used.add(key)
        else:
            bad.append(f"{path}:{line}: {desc} [{check}]")
    stale = [" | ".join(k) for k in allow if k not in used]
    for b in bad:
        print(f"analyzer: {b}")
    for s in stale:
        print(f"analyzer: stale allowance (nothing matches): {s}")
    print(f"analyzer: {len(bad)} report(s) not allowed, {len(used)} allowed")
    sys.exit(1 if bad or stale else 0)


if __name__ == "__main__":
    main(*sys.argv[1:])
