# Sluice: see README.md. `make demo` and `make test` install what is
# missing (scripts/deps.sh), build, and run.

SHELL := /bin/bash
CARGO ?= cargo
RELEASE_BIN := $(CURDIR)/target/release

.PHONY: all deps build demo test test-unit test-system lint bench clean

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

# Criterion benchmarks: the per-packet pipeline and the flow table
# (see docs/performance.md).
bench: deps
	$(CARGO) bench -p perf

clean:
	$(CARGO) clean
