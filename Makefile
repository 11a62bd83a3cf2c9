# cograft: every target installs what it needs first, idempotently.
CARGO ?= cargo
JOBS ?= 2
BIN := target/debug/cograft

.PHONY: all deps build demo test lint unit cluster-tests bench clean-demo

all: build

# System packages the build needs (a C compiler for zstd-sys). Installs only what is missing.
deps:
	@command -v cc >/dev/null 2>&1 || { \
		echo "installing a C toolchain (build-essential)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential; }
	@command -v cargo >/dev/null 2>&1 || { echo "cargo is required (rustup)"; exit 1; }

build: deps
	$(CARGO) build -j$(JOBS)

# A local 3-node cluster with a sample knowledge graph, queried and stopped.
demo: build
	./$(BIN) demo --dir .demo

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy -j$(JOBS) --workspace --all-targets -- -D warnings

unit: deps
	$(CARGO) test -j$(JOBS) --workspace --lib --bins

# Real cograft processes on loopback ports, one cluster at a time.
cluster-tests: deps
	$(CARGO) test -j$(JOBS) --test cluster -- --test-threads=1

test: lint unit cluster-tests

# Criterion benches (each with a reference measured in the same run), then the cluster figures.
bench: deps
	$(CARGO) bench -j$(JOBS) -p cograft --bench storage
	$(CARGO) build -j$(JOBS) --release -p cograft
	./target/release/cograft bench

clean-demo:
	rm -rf .demo
