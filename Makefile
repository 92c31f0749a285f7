# Shoal developer entry points; `make` (or `make help`) lists them.
# Dependencies are installed by scripts/ensure-deps.sh (Debian packages, Rust
# toolchain) and scripts/kafka.sh (Java and Maven for the local broker).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# cargo may live in rustup's usual place without being on PATH; a script
# cannot change make's PATH, so it is added here (after PATH, so that a cargo
# already on PATH wins).
CARGO_BIN := $(if $(CARGO_HOME),$(CARGO_HOME),$(HOME)/.cargo)/bin
export PATH := $(PATH):$(CARGO_BIN)

# Broker the tests use when KAFKA_BOOTSTRAP_SERVERS is not set (the one
# scripts/kafka.sh runs).
LOCAL_KAFKA := 127.0.0.1:9092

.PHONY: help deps build test lint fmt demo chaos backtest bench bench-scaling chart docs-check arch-check kafka-up kafka-down clean-state soak fuzz deny

help: ## List the targets (this text)
	@printf 'Usage: make TARGET\n\nTargets:\n'
	@sed -n 's/^\([a-z][a-z-]*\):.*## \(.*\)$$/  \1\t\2/p' $(MAKEFILE_LIST) | expand -t 16
	@printf '\nVariables: WORKERS=N and DEMO_SECONDS=N for demo (see scripts/demo.sh --help);\n'
	@printf 'KAFKA_BOOTSTRAP_SERVERS=host:port makes test and demo use that cluster instead of a local broker.\n'

deps: ## Install missing build dependencies (Debian packages, Rust toolchain)
	@scripts/ensure-deps.sh

build: deps ## Build the workspace (debug profile: target/debug)
	cargo build --workspace

test: deps ## Start Kafka if needed, build the binaries, run every test (leaves Kafka running)
	scripts/ensure-deps.sh --browser
	scripts/kafka.sh up
	cargo build --workspace --bins
	KAFKA_BOOTSTRAP_SERVERS="$${KAFKA_BOOTSTRAP_SERVERS:-$(LOCAL_KAFKA)}" cargo test --workspace
	scripts/test_demo.sh
	@if [[ -z "$${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then \
	  echo "Kafka left running; stop it with scripts/kafka.sh down"; \
	fi

lint: deps ## Check formatting (cargo fmt --check) and run clippy with warnings as errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: deps ## Format the code (cargo fmt --all)
	cargo fmt --all

demo: ## Run the local demo: simulator, orchestrator, workers on a local Kafka (Ctrl-C stops it)
	scripts/demo.sh

# Seeds of `make chaos`, and its size; see shoal-chaos --help.
SEEDS ?= 1 2 3 4 5
CHAOS_ARGS ?= --orchestrator --seconds 60 --kills 6 --zombies 1 --orchestrator-kills 6 --partitions 3 --cluster three

chaos: deps ## Fault-injection runs of the whole pipeline on a 3-broker cluster, one per seed in SEEDS (exactly-once; MODE=at_least_once to compare)
	cargo build --workspace --bins
	@summary=$$(mktemp); \
	for seed in $(SEEDS); do \
	  target/debug/shoal-chaos $(CHAOS_ARGS) --mode $${MODE:-exactly_once} --seed $$seed | tee -a "$$summary" || exit 1; \
	done; \
	echo; grep '^chaos: mode=' "$$summary"; rm -f "$$summary"

# The bundled recording: the simulator's walk, seed 42, 20,000 ticks of 3 symbols.
BACKTEST_RECORDING ?= target/backtest/recording-seed42.jsonl

backtest: deps ## Replay the bundled recording through the trading topology (rules, skills, paper account with risk limits): summary, digest, target/backtest/equity.svg
	cargo build -p shoal-tools --bin shoal-backtest
	@test -f $(BACKTEST_RECORDING) || target/debug/shoal-backtest synth --seed 42 --ticks 20000 --out $(BACKTEST_RECORDING)
	target/debug/shoal-backtest run --recording $(BACKTEST_RECORDING) --out target/backtest $(BACKTEST_ARGS)

bench: deps ## Benchmark (release build): raw librdkafka loop vs Shoal (both modes, 500/s and 10k/s latency), full pipeline, keys and skew; JSON + SVG
	scripts/kafka.sh up
	cargo build --release --workspace --bins
	KAFKA_BOOTSTRAP_SERVERS="$${KAFKA_BOOTSTRAP_SERVERS:-$(LOCAL_KAFKA)}" target/release/shoal-bench $(BENCH_ARGS)

bench-scaling: deps ## Scaling run (release build): the raw loop, then both modes with 1, 2, 4 and 8 worker processes; table, JSON + SVG (docs/capacity.md)
	scripts/kafka.sh up
	cargo build --release --workspace --bins
	KAFKA_BOOTSTRAP_SERVERS="$${KAFKA_BOOTSTRAP_SERVERS:-$(LOCAL_KAFKA)}" target/release/shoal-bench --scaling $${SCALING:-1,2,4,8} $(BENCH_ARGS)

soak: deps ## Soak test: the demo's pipeline for SOAK_MINUTES (30) under faults; memory, fds, lag, latency (docs/soak.md)
	scripts/soak.sh

# `make fuzz`: FUZZ_RUNS executions per target (scripts/fuzz.sh --help);
# FUZZ_SECONDS caps each target's time as well when set.
FUZZ_RUNS ?= 1000000

fuzz: deps ## Fuzz the feed parsers, record decoding, commit metadata, config loader and decimals (cargo fuzz, nightly): FUZZ_RUNS (1000000) per target
	FUZZ_RUNS=$(FUZZ_RUNS) scripts/fuzz.sh $(FUZZ_TARGETS)

deny: deps ## Supply-chain checks: cargo deny (licences, bans, sources, RustSec advisories; deny.toml)
	scripts/deny.sh

chart: ## Lint, render and validate the Helm chart (installs Helm and validators on first use)
	scripts/chart-check.sh

docs-check: build ## Check the docs: every setting documented with its default, every link resolves
	python3 scripts/docs-check.py

arch-check: ## Check the architecture: no crate or module cycles, a runtime-free protocol crate, file and function sizes
	python3 scripts/arch-check.py

kafka-up: ## Start the local Kafka broker (scripts/kafka.sh up; no-op if running)
	scripts/kafka.sh up

kafka-down: ## Stop the local Kafka broker (scripts/kafka.sh down)
	scripts/kafka.sh down

clean-state: ## Stop Kafka and delete its data (.kafka) and the demo's state (.demo)
	scripts/kafka.sh down --purge
	rm -rf .demo
