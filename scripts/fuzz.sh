#!/usr/bin/env bash
# fuzz.sh SECONDS: build the libFuzzer targets with clang (build-fuzz, ASan +
# UBSan) and run each for SECONDS, starting from the seeds and the crash
# regressions kept in tests/fuzz/corpus/<target>/. New corpus entries go to
# build-fuzz/corpus/<target>/; a crash leaves its input in build-fuzz/ and
# fails the run (copy it into tests/fuzz/corpus/<target>/ once fixed).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECS=${1:-30}
B=build-fuzz
if [ ! -f $B/build.ninja ]; then
  CC=clang meson setup $B -Dfuzz=true -Dbuildtype=debugoptimized \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C $B >/dev/null
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
status=0
for t in $(ls $B/tests/fuzz/ | grep '^fuzz_' | grep -v '\.p$'); do
  mkdir -p "$B/corpus/$t" "tests/fuzz/corpus/$t"
  echo "== $t (${SECS}s)"
  rc=0
  (cd $B && "./tests/fuzz/$t" -max_total_time="$SECS" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -dict="$ROOT/tests/fuzz/json.dict" \
      "corpus/$t" "$ROOT/tests/fuzz/corpus/$t") > "$B/$t.log" 2>&1 || rc=$?
  grep -E 'DONE|stat::number_of_executed_units|ERROR|SUMMARY' "$B/$t.log" || true
  if [ "$rc" -ne 0 ]; then
    echo "fuzz: $t failed (exit $rc); see $B/$t.log and the crash-* input in $B/" >&2
    status=1
  fi
done
exit $status
