# Thin wrapper around Meson/Ninja for the README's commands. Every target
# installs what it needs first (scripts/deps.sh is idempotent).
BUILD ?= build
ASAN_BUILD ?= build-asan
GUEST ?= $(BUILD)/guest

.PHONY: all deps build asan guest demo check bench bench-controller fuzz package clean

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

guest: deps
	bash guest/build.sh $(GUEST)

demo: build guest
	bash scripts/demo.sh

check: build asan guest
	bash scripts/check.sh

# Migration benchmark: QEMU's own transports against ferry, side by side
# (bench/README.md). BENCH_ARGS="--runs 5 --json out.json" to tune.
bench: build guest
	/usr/bin/python3 bench/migrate_bench.py $(BENCH_ARGS)

# The controller against 1,000, 5,000 and 10,000 simulated hosts with three
# etcd members (docs/balancer.md, "Scale"); run on a quiet machine.
# CTL_BENCH_ARGS="--hosts 1000 --rounds 3" to tune.
bench-controller: build
	/usr/bin/python3 bench/controller_bench.py $(CTL_BENCH_ARGS)

# libFuzzer targets (clang, ASan + UBSan) for FUZZ_SECONDS each; `make check`
# runs them briefly.
FUZZ_SECONDS ?= 600
fuzz: deps
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

# Debian packages ferryd and ferry (debian/, docs/install.md) built with
# dpkg-buildpackage from a copy of the tree into $(DEB_OUT), then unpacked,
# verified and checked by lintian (tests/package). Slow: not in `make check`.
DEB_OUT ?= build-deb
package: deps
	bash scripts/package.sh $(DEB_OUT)
	FERRY_DEB_DIR=$(DEB_OUT) /usr/bin/python3 -m pytest -q tests/package

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz $(DEB_OUT)
