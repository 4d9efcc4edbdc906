#!/bin/sh
# plan_bench.sh - time one planning round of the balancer's decision code
# at scale (docs/balancer.md, "Scale"). Usage: bench/plan_bench.sh [BINARY]
# (default build/ferry-balancer, an optimized build). Prints one block per
# case; each is the median of 5 rounds on one core.
set -eu
BIN=${1:-build/ferry-balancer}
if [ ! -x "$BIN" ]; then
	echo "plan_bench.sh: $BIN not found; build it with ninja -C build" >&2
	exit 2
fi
run() {
	echo "== $*"
	taskset -c 0 "$BIN" --bench-plan --runs 5 "$@" 2>/dev/null ||
		"$BIN" --bench-plan --runs 5 "$@"
}
run --hosts 1000 --vms 10000
run --hosts 10000 --vms 100000
run --hosts 10000 --vms 100000 --param max_cluster=100000
run --hosts 10000 --vms 100000 --param max_cluster=100000 \
	--param max_out_per_host=8 --param max_in_per_host=8
run --hosts 50000 --vms 500000
