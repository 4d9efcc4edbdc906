#!/usr/bin/env bash
# analyze.sh: clang's static analyzer (scan-build) over the whole build, in
# build-scan. Fails when it reports a bug that scripts/analyzer-allow.txt
# does not list with its reason. Chosen over gcc 12's -fanalyzer by running
# both on this tree: 8 reports (7 in product code) against 16 (5 in
# product code, 11 in tests, cmocka asserts it does not know end a test);
# none of either was a defect, but scan-build's cover more kinds
# (uninitialized values, use after free) and fewer are noise.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
B=build-scan
OUT=$B/reports
if [ ! -f $B/build.ninja ]; then
  CC=clang scan-build meson setup $B -Dbuildtype=debug -Dwerror=false \
    >/dev/null
fi
ninja -C $B clean >/dev/null
rm -rf "$OUT"
scan-build -plist -o "$OUT" ninja -C $B >"$B/scan.log" 2>&1 || {
  tail -20 "$B/scan.log" >&2
  exit 1
}
/usr/bin/python3 scripts/analyzer_filter.py "$OUT" scripts/analyzer-allow.txt
