#!/usr/bin/env bash
# package.sh OUT: build the Debian packages ferryd, ferry and ferry-detect
# (`dpkg-buildpackage -us -uc -b`, debian/) from a copy of this tree, so
# that the build leaves nothing in it, and put the .deb files (and the
# .buildinfo/.changes) in OUT. `make package` runs it; docs/install.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
WORK=$(mktemp -d /tmp/ferry-pkg-XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# the tree without build folders and caches (what a fresh clone holds, plus
# uncommitted changes)
mkdir "$WORK/ferry"
tar -C "$ROOT" --exclude=./.git --exclude='./build*' --exclude=./.pytest_cache \
    --exclude='__pycache__' -cf - . | tar -C "$WORK/ferry" -xf -
(cd "$WORK/ferry" && dpkg-buildpackage -us -uc -b)
rm -f "$OUT"/*.deb "$OUT"/*.buildinfo "$OUT"/*.changes
cp "$WORK"/*.deb "$WORK"/*.buildinfo "$WORK"/*.changes "$OUT"/
ls -l "$OUT"
