#!/usr/bin/env bash
# Tests that the demo (scripts/demo.sh) stops everything it started whatever
# happens to its terminal: its output pipe closed (`make demo | head`, or
# `| tee` interrupted), SIGHUP (terminal closed), SIGTERM and SIGINT
# (Ctrl-C). Each case runs the real demo on the local broker and then looks
# for any process still carrying the run's marker. Run by `make test`; needs
# the binaries built (cargo build --workspace --bins) and Kafka running.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly STARTUP_TIMEOUT="${DEMO_TEST_STARTUP_TIMEOUT:-180}" STOP_TIMEOUT=60
WORK="$(mktemp -d)"
readonly WORK
trap 'rm -rf "$WORK"' EXIT
# Ports of their own, so that a demo someone is running is not disturbed.
export SHOAL_DEMO_SIM_PORT=19001 SHOAL_DEMO_HTTP_PORT=19464 SHOAL_DEMO_API_PORT=18780
FAILURES=0

say() { printf 'test_demo: %s\n' "$*"; }
fail() {
  say "FAIL: $*"
  FAILURES=$((FAILURES + 1))
}

# The processes of the demo run whose script has pid $1 (the demo marks its
# programs with SHOAL_DEMO_RUN=<its pid>-<start time>).
leftovers() {
  local f pid out=()
  for f in /proc/[0-9]*/environ; do
    if grep -qz "^SHOAL_DEMO_RUN=$1-" "$f" 2>/dev/null; then
      pid="${f#/proc/}"
      out+=("${pid%/environ}")
    fi
  done
  printf '%s\n' "${out[@]}"
}

# wait_exit PID LOG: waits up to STOP_TIMEOUT for PID to exit; on time out
# kills it and whatever it started so that the next case starts clean.
wait_exit() {
  local pid="$1" log="$2" deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      fail "the demo (pid $pid) did not exit within ${STOP_TIMEOUT}s; its log: $log"
      kill -KILL "$pid" $(leftovers "$pid") 2>/dev/null || true
      return 1
    fi
    sleep 0.5
  done
  wait "$pid" 2>/dev/null || true
}

# wait_running LOG: waits until the demo's log says that everything runs.
wait_running() {
  local log="$1" deadline=$((SECONDS + STARTUP_TIMEOUT))
  until grep -q 'running.*Ctrl-C' "$log" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      fail "the demo did not start within ${STARTUP_TIMEOUT}s; its log: $log"
      return 1
    fi
    sleep 0.5
  done
}

# check CASE PID LOG REASON: the demo stopped for REASON and left nothing.
check() {
  local name="$1" pid="$2" log="$3" reason="$4" left
  left="$(leftovers "$pid")"
  if [[ -n $left ]]; then
    fail "$name: processes left running: $(echo "$left" | tr '\n' ' ')"
    # shellcheck disable=SC2086 # one pid a word
    kill -KILL $left 2>/dev/null || true
  fi
  grep -q "stopping ($reason)" "$log" || fail "$name: no 'stopping ($reason)' in $log"
  grep -q 'processes left running: none' "$log" || fail "$name: the demo's own check found leftovers ($log)"
  [[ -n $left ]] || say "$name: stopped ($reason), no process left"
}

# The output pipe closes while the demo runs: a reader that stops reading
# (as `head` does) once the demo says it is running.
case_pipe() {
  local log="$WORK/pipe.log" pid
  scripts/demo.sh --workers 2 --seconds 600 2>"$WORK/pipe.err" > >(
    while IFS= read -r line; do
      printf '%s\n' "$line" >>"$log"
      [[ $line != *running*Ctrl-C* ]] || break
    done
  ) &
  pid=$!
  wait_running "$log" || return 0
  wait_exit "$pid" "$WORK/pipe.err" || return 0
  # Everything after the pipe closed went to stderr.
  cat "$WORK/pipe.err" >>"$log"
  check "closed output pipe" "$pid" "$log" "output closed"
}

# A signal while the demo runs in the background, its output in a file.
case_signal() {
  local sig="$1" log="$WORK/$1.log" pid
  set -m # a background job of a non-interactive shell would ignore SIGINT
  scripts/demo.sh --workers 2 --seconds 600 >"$log" 2>&1 &
  pid=$!
  set +m
  wait_running "$log" || return 0
  kill "-$sig" "$pid"
  wait_exit "$pid" "$log" || return 0
  check "SIG$sig" "$pid" "$log" "SIG$sig"
}

case_pipe
case_signal HUP
case_signal TERM
case_signal INT
if ((FAILURES)); then
  say "$FAILURES failure(s)"
  exit 1
fi
say "all cases passed"
