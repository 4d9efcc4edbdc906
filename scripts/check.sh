#!/usr/bin/env bash
# check.sh: every test. Run by `make check` after the builds and the guest.
#   1. unit tests (cmocka) of the normal build, of the ASan/UBSan build and
#      of the ThreadSanitizer build;
#   2. clang's static analyzer (scripts/analyze.sh);
#   3. each libFuzzer target for a short while (make fuzz runs longer);
#   4. system tests (pytest) with real ferryd hosts and QEMU guests, run
#      against the sanitizer build so memory errors in ferryd fail them;
#   5. one trial of a few cells of the fault matrix (make faults runs all);
#   6. the core migration system tests against the ThreadSanitizer build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=66}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=66}
# a report fails a unit test at once; in ferryd it is caught in its log
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:exitcode=66:second_deadlock_stack=1}

echo "== unit tests (build)"
meson test -C build --print-errorlogs --suite unit
echo "== unit tests (build-asan: ASan + UBSan)"
meson test -C build-asan --print-errorlogs --suite unit

echo "== unit tests (build-tsan: ThreadSanitizer)"
meson test -C build-tsan --print-errorlogs --suite unit

echo "== static analysis (scan-build)"
bash scripts/analyze.sh

echo "== fuzz targets, briefly (libFuzzer, clang, ASan + UBSan)"
bash scripts/fuzz.sh "${FERRY_FUZZ_SECONDS:-5}"

echo "== system tests (ferryd from build-asan)"
FERRY_BUILD="$ROOT/build-asan" FERRY_GUEST_DIR="$ROOT/build/guest" \
  /usr/bin/python3 -m pytest -q -ra --durations=25 tests/system "$@"

echo "== fault matrix, smoke (one trial of a few cells; make faults runs all)"
FAULT_CELLS=smoke FAULT_TRIALS=1 FAULT_RESULTS="$ROOT/build-asan/faults-smoke.jsonl" \
  FERRY_BUILD="$ROOT/build-asan" FERRY_GUEST_DIR="$ROOT/build/guest" \
  /usr/bin/python3 -m pytest -q -ra tests/faults

echo "== core migration system tests (ferryd from build-tsan)"
TSAN_OPTIONS=halt_on_error=0:second_deadlock_stack=1 \
  FERRY_BUILD="$ROOT/build-tsan" FERRY_GUEST_DIR="$ROOT/build/guest" \
  /usr/bin/python3 -m pytest -q -ra tests/system/test_migrate.py \
  -k "live_migration or postcopy_migration or cancel_mid_stream or kill_destination_ferryd or tampering"
