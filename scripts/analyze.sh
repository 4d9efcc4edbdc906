#!/usr/bin/env bash
# analyze.sh: clang's static analyzer (scan-build) over the whole build, in
# build-scan. Fails when it reports a bug that scripts/analyzer-allow.txt
# does not list with its reason. Chosen over gcc -fanalyzer by measuring
# both on this tree (docs/security.md: 8 reports against 16, of which 3
# real defects against 0; gcc's were mostly cmocka asserts it does not
# know end the test).
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
