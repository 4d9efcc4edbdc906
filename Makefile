# Thin wrapper around Meson/Ninja for the README's commands. Every target
# installs what it needs first (scripts/deps.sh is idempotent).
BUILD ?= build
ASAN_BUILD ?= build-asan
GUEST ?= $(BUILD)/guest

.PHONY: all deps build asan guest demo check bench fuzz clean

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
		-Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false
	ninja -C $(ASAN_BUILD)

guest: deps
	bash guest/build.sh $(GUEST)

demo: build guest
	bash scripts/demo.sh

check: build asan guest
	bash scripts/check.sh

# Migration benchmark: QEMU's own transports against ferry, side by side
# (bench/README.md): on loopback, then over a link of BENCH_LINK between two
# network namespaces. BENCH_ARGS="--runs 5" to tune both.
BENCH_LINK ?= 1gbit
bench: build guest
	/usr/bin/python3 bench/migrate_bench.py $(BENCH_ARGS)
	/usr/bin/python3 bench/migrate_bench.py --link $(BENCH_LINK) $(BENCH_ARGS)

# libFuzzer targets (clang, ASan + UBSan) for FUZZ_SECONDS each; `make check`
# runs them briefly.
FUZZ_SECONDS ?= 600
fuzz: deps
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
