# Thin wrapper around Meson/Ninja for the README's commands. Every target
# installs what it needs first (scripts/deps.sh is idempotent).
BUILD ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
GUEST ?= $(BUILD)/guest

.PHONY: all deps build asan tsan analyze guest demo check check-ha bench bench-ha bench-controller bench-detect faults fuzz package clean

all: build

deps:
	bash scripts/deps.sh

build: deps
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD)
	ninja -C $(BUILD)

# AddressSanitizer + UndefinedBehaviorSanitizer build; `make check` runs
# the unit tests and the system tests against it.
asan: deps
	@[ -f $(ASAN_BUILD)/build.ninja ] || meson setup $(ASAN_BUILD) \
		-Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
		-Dfault_points=true
	ninja -C $(ASAN_BUILD)

# ThreadSanitizer build; `make check` runs the unit tests and the migration
# system tests against it.
tsan: deps
	@[ -f $(TSAN_BUILD)/build.ninja ] || meson setup $(TSAN_BUILD) \
		-Dbuildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false
	ninja -C $(TSAN_BUILD)

# clang's static analyzer (scan-build) over the tree; `make check` runs it.
analyze: deps
	bash scripts/analyze.sh

guest: deps
	bash guest/build.sh $(GUEST)

demo: build guest
	bash scripts/demo.sh

check: build asan tsan guest
	bash scripts/check.sh

# Migration benchmark: QEMU's own transports against ferry, side by side
# (bench/README.md): on loopback, then over a link of BENCH_LINK between two
# network namespaces. BENCH_ARGS="--runs 5" to tune both.
BENCH_LINK ?= 1gbit
bench: build guest
	/usr/bin/python3 bench/migrate_bench.py $(BENCH_ARGS)
	/usr/bin/python3 bench/migrate_bench.py --link $(BENCH_LINK) $(BENCH_ARGS)

# The controller against 1,000, 5,000 and 10,000 simulated hosts with three
# etcd members (docs/balancer.md, "Scale"); run on a quiet machine.
# CTL_BENCH_ARGS="--hosts 1000 --rounds 3" to tune.
bench-controller: build
	/usr/bin/python3 bench/controller_bench.py $(CTL_BENCH_ARGS)

# The fault matrix (docs/reliability.md): every fault at every phase of a
# migration, FAULT_TRIALS times per cell, against the sanitizer build; the
# table is printed at the end. `make check` runs one trial of a few cells.
FAULT_TRIALS ?= 3
faults: asan guest
	rm -f $(ASAN_BUILD)/faults.jsonl
	FAULT_TRIALS=$(FAULT_TRIALS) FERRY_BUILD=$(CURDIR)/$(ASAN_BUILD) \
	  FERRY_GUEST_DIR=$(CURDIR)/$(BUILD)/guest \
	  /usr/bin/python3 -m pytest -q -ra tests/faults $(FAULT_ARGS); \
	  rc=$$?; /usr/bin/python3 tests/faults/report.py $(ASAN_BUILD)/faults.jsonl; exit $$rc
# ferry-detect's evaluation (docs/detection.md): ferry migrations on a
# shared link between network namespaces, remote and local detection under
# low and high guest load, and the negatives. Needs root. The figure:
# bench/detect_plot.py. BENCH_DETECT_ARGS="--runs 10" to tune.
bench-detect: build guest
	/usr/bin/python3 bench/detect_bench.py $(BENCH_DETECT_ARGS)
	/usr/bin/python3 bench/detect_plot.py build/detect-bench

# Checkpoint HA's long scenarios (partition, backup death, tampering, host
# death with 3 etcd members); `make check` runs the smoke of test_ha.py.
check-ha: build guest
	FERRY_HA_FULL=1 /usr/bin/python3 -m pytest -q -ra tests/system/test_ha.py \
	  tests/system/test_ha_repair.py tests/system/test_ha_restart.py \
	  tests/system/test_ha_attest.py

# Checkpoint-HA figures (docs/ha.md): overhead, pause, bytes, failover
# time, split brain. BENCH_ARGS="--trials 5 --partitions 5" to shorten.
bench-ha: build guest
	/usr/bin/python3 bench/ha_bench.py $(BENCH_ARGS)

# What carrying a VM's tracked flows adds to a migration's switchover
# (docs/security.md, "Security context"): 0, 10 and 10,000 flows, 5
# migrations each, on a LAN of network namespaces. Needs root.
# BENCH_SECCTX_ARGS="--flows 0,10,10000 --runs 5" to tune.
.PHONY: bench-secctx
bench-secctx: build guest
	/usr/bin/python3 bench/secctx_bench.py $(BENCH_SECCTX_ARGS)

# libFuzzer targets (clang, ASan + UBSan) for FUZZ_SECONDS each; `make check`
# runs them briefly.
FUZZ_SECONDS ?= 600
fuzz: deps
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

# Debian packages ferryd, ferry and ferry-detect (debian/, docs/install.md)
# built with dpkg-buildpackage from a copy of the tree into $(DEB_OUT), then
# unpacked, verified and checked by lintian (tests/package). Slow: not in
# `make check`.
DEB_OUT ?= build-deb
package: deps
	bash scripts/package.sh $(DEB_OUT)
	FERRY_DEB_DIR=$(DEB_OUT) /usr/bin/python3 -m pytest -q tests/package

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) build-fuzz build-scan $(DEB_OUT)
