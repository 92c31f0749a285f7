#!/usr/bin/env bash
# Fuzzes Shoal's parsers and decoders with cargo fuzz (libFuzzer): the feed
# frame parsers, record payload and header decoding, commit metadata, the
# configuration loader and decimal parsing (fuzz/, docs: fuzzing).
#
#   scripts/fuzz.sh [--short] [--list] [TARGET...]
#
# Installs what is missing (the nightly toolchain through rustup, cargo-fuzz
# from crates.io), builds every target, then runs each one (or those named)
# for FUZZ_SECONDS (default 120) or FUZZ_RUNS executions, starting from the
# committed seeds (fuzz/corpus-seeds/<target>) and the working corpus
# (fuzz/corpus/<target>, git-ignored, grows between runs). Prints libFuzzer's
# executions per target and one summary line each:
#
#   fuzz: feed_binance ok: 3512345 runs in 121 s (29029/s), corpus 812
#
# Exits 1 when a target crashed (panic, failed assertion, timeout, out of
# memory); its output names the artifact under fuzz/artifacts/<target>/,
# which replays with `cargo +nightly fuzz run TARGET ARTIFACT` (from fuzz/)
# or fuzz/target/<host>/release/TARGET ARTIFACT.
#
# --short    10 s per target (FUZZ_SECONDS), for CI; the build is the same.
# --list     print the targets and exit.
#
# Environment: FUZZ_SECONDS (per target), FUZZ_RUNS (per target, instead of
# a time; 0 = no bound on runs), FUZZ_SANITIZER (none; address for
# AddressSanitizer: slower, and the code under test is safe Rust),
# FUZZ_RSS_MB (libFuzzer's memory limit per input process, 2048),
# FUZZ_TIMEOUT (seconds one input may take before it counts as a hang, 10),
# FUZZ_JOBS (cargo build jobs), FUZZ_ARGS (more libFuzzer flags).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$PATH:$CARGO_BIN"

readonly CARGO_FUZZ_VERSION="0.13.2"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-120}"
RUNS="${FUZZ_RUNS:-}"
SANITIZER="${FUZZ_SANITIZER:-none}"
RSS_MB="${FUZZ_RSS_MB:-2048}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"
LIST=0
TARGETS=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
  case "$1" in
    --short) SECONDS_PER_TARGET="${FUZZ_SECONDS:-10}" ;;
    --list) LIST=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "fuzz: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) TARGETS+=("$1") ;;
  esac
  shift
done

say() { printf 'fuzz: %s\n' "$*"; }

ensure_tools() {
  if ! command -v rustup >/dev/null 2>&1; then
    echo "fuzz: rustup not found; install the Rust toolchain first (scripts/ensure-deps.sh)" >&2
    exit 2
  fi
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    say "installing the nightly toolchain (rustup)"
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo +nightly fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION (crates.io; a few minutes, once)"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
  fi
}

all_targets() { sed -n 's/^name = "\([a-z_]*\)"$/\1/p' "$FUZZ_DIR/Cargo.toml" | grep -v '^shoal-fuzz$' || true; }

mapfile -t KNOWN < <(all_targets)
if ((LIST)); then
  printf '%s\n' "${KNOWN[@]}"
  exit 0
fi
if ((${#TARGETS[@]} == 0)); then
  TARGETS=("${KNOWN[@]}")
fi
for t in "${TARGETS[@]}"; do
  if [[ " ${KNOWN[*]} " != *" $t "* ]]; then
    echo "fuzz: unknown target $t; targets: ${KNOWN[*]}" >&2
    exit 2
  fi
done

ensure_tools
cd "$FUZZ_DIR"
# The fuzz project is a workspace of its own; it builds the workspace's
# crates with the workspace's locked versions (its own lock file is that one
# plus libFuzzer's crates, and is not committed).
cp "$ROOT/Cargo.lock" Cargo.lock

# Same flags for build and run, so that `run` does not rebuild. Debug
# assertions (cargo fuzz's default) make an integer overflow a crash.
BUILD_FLAGS=(--sanitizer "$SANITIZER" --debug-assertions)
build_start=$SECONDS
say "building ${#KNOWN[@]} targets (sanitizer: $SANITIZER)"
cargo +nightly fuzz build "${BUILD_FLAGS[@]}" ${FUZZ_JOBS:+--jobs "$FUZZ_JOBS"}
say "built in $((SECONDS - build_start)) s"
# The targets run from the binaries just built: `cargo fuzz run` would
# rebuild first, and sources edited meanwhile would change what is fuzzed.
HOST="$(rustc +nightly -vV | sed -n 's/^host: //p')"
BIN_DIR="$FUZZ_DIR/target/$HOST/release"

if [[ -n $RUNS ]]; then
  # libFuzzer's "no bound" is -1 (-runs=0 would run nothing).
  BOUND=(-runs="$([[ $RUNS == 0 ]] && echo -1 || echo "$RUNS")")
  bound_text="$RUNS runs"
  [[ $RUNS == 0 ]] && bound_text="no run bound"
  # A run bound alone has no time limit; FUZZ_SECONDS still caps it if set.
  [[ -n ${FUZZ_SECONDS:-} ]] && BOUND+=(-max_total_time="$SECONDS_PER_TARGET")
else
  BOUND=(-max_total_time="$SECONDS_PER_TARGET")
  bound_text="${SECONDS_PER_TARGET} s"
fi

LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/shoal-fuzz.XXXXXX")"
trap 'rm -rf "$LOG_DIR"' EXIT
SUMMARY=()
FAILED=()

# run_target NAME: fuzzes one target; its output is shown and kept in a log.
run_target() {
  local t="$1" log="$LOG_DIR/$1.log" start=$SECONDS rc=0
  local corpus="corpus/$t" seeds="corpus-seeds/$t" artifacts="artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  say "running $t for $bound_text"
  # New inputs go to the first directory (the working corpus); the seeds
  # are only read.
  # shellcheck disable=SC2086
  "$BIN_DIR/$t" "$corpus" "$seeds" \
    "${BOUND[@]}" -dict="$FUZZ_DIR/dict/shoal.dict" -rss_limit_mb="$RSS_MB" -timeout="$TIMEOUT" -print_final_stats=1 \
    -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
  # libFuzzer's progress lines are many; keep the start, crashes and the end.
  grep -E '^(INFO: (Running with|Seed|Loaded|-max_len)|#[0-9]+[[:space:]]+(INITED|DONE)|Done [0-9]+ runs|stat::|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written|thread .* panicked|Base64)' "$log" || true
  local runs secs corpus_size
  runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  corpus_size=$(find "$corpus" -type f | wc -l)
  [[ -z $secs ]] && secs=$((SECONDS - start))
  local rate=$((${runs:-0} / (secs > 0 ? secs : 1)))
  if [[ $rc -eq 0 ]]; then
    SUMMARY+=("$t ok: ${runs:-?} runs in $secs s (${rate}/s), corpus $corpus_size")
  else
    local artifact
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    # A crash before any stat line: show the end of the output.
    [[ -z $artifact ]] && tail -40 "$log"
    SUMMARY+=("$t CRASHED (exit $rc) after ${runs:-?} runs: artifact $([[ -n $artifact ]] && echo "fuzz/$artifact" || echo "none (see the output above)")")
    FAILED+=("$t")
  fi
  say "${SUMMARY[-1]}"
}

for t in "${TARGETS[@]}"; do
  run_target "$t"
done

echo
say "summary ($bound_text per target, sanitizer $SANITIZER, total $((SECONDS - build_start)) s with the build):"
for line in "${SUMMARY[@]}"; do
  say "  $line"
done
if ((${#FAILED[@]})); then
  say "FAILED: ${FAILED[*]}; replay an artifact: fuzz/target/$HOST/release/TARGET ARTIFACT"
  exit 1
fi
