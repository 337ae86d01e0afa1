# Sluice: see README.md. `make demo` and `make test` install what is
# missing (scripts/deps.sh), build, and run.

SHELL := /bin/bash
CARGO ?= cargo
RELEASE_BIN := $(CURDIR)/target/release

.PHONY: all deps build demo test test-unit test-system lint bench perf clean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build --release --workspace --bins

demo: build
	SLUICE_BIN_DIR=$(RELEASE_BIN) scripts/demo.sh

# Everything: formatting, lints, unit and property tests, golden pcap tests
# and end-to-end namespace tests against the release binaries.
test: deps lint
	$(CARGO) build --release --workspace --bins
	set -o pipefail; SLUICE_BIN_DIR=$(RELEASE_BIN) $(CARGO) test --release --workspace 2>&1 | tee target/test.log
	@scripts/test-summary.sh target/test.log

test-unit: deps
	$(CARGO) test --release --workspace --exclude sluice-tests

test-system: build
	SLUICE_BIN_DIR=$(RELEASE_BIN) $(CARGO) test --release -p sluice-tests

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# Criterion benchmarks: the per-packet pipeline, parser, Maglev, flow
# table and checksums (see docs/performance.md).
bench: deps
	$(CARGO) bench -p perf

# The perf suite: dpdk-testpmd (io, macswap) and sluiced (DR, NAT) side by
# side under sluice-pktgen on memif links, 1K/1M flows, 64/1518-byte frames,
# 3 repetitions; table, results.json and ratios.svg in target/perf
# (docs/performance.md). PERF_ARGS passes options (sluice-perf --help).
perf: build
	$(RELEASE_BIN)/sluice-perf --out $(CURDIR)/target/perf --bin-dir $(RELEASE_BIN) $(PERF_ARGS)

clean:
	$(CARGO) clean
