#!/usr/bin/env bash
# Shoal's local demo (`make demo`): the market simulator, the orchestrator
# and N workers on a local Kafka broker, their logs interleaved with
# prefixes, stopped cleanly with Ctrl-C. See --help.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
cd "$REPO_ROOT"

usage() {
  cat <<'EOF'
Usage: scripts/demo.sh [--workers N] [--seconds N] [--traces] [--flat]   (or: make demo)

Runs Shoal locally, end to end, on this machine:
  shoal-sim            simulated market trades over WebSocket
                       (127.0.0.1:9001, 8 symbols, 5 trades/s each, seed 7)
  shoal-orchestrator   feed -> Kafka -> decisions -> commands; records results
                       in .demo/outcomes.jsonl
  shoal-worker x N     worker-1 .. worker-N in one consumer group: the
                       strategy level of the trading topology (docs/levels.md);
                       their buy and sell signals become paper orders on the
                       shoal.orders topic
  shoal-worker paper-1 the risk and paper-execution level (group shoal-paper):
                       fills or rejects each order against the risk limits;
                       its results go to the shared results topic, so the
                       console shows the paper ledger
Their output is interleaved, each line prefixed with [sim], [orchestrator],
[worker-1], ...; full logs are kept in .demo/logs/. Ctrl-C (or SIGTERM) stops
the orchestrator and workers gracefully, then the simulator, and prints a
summary of the outcomes recorded.

First, as needed: installs missing build dependencies (scripts/ensure-deps.sh),
starts the local Kafka broker (scripts/kafka.sh up) unless it is already
running -- a broker started by the demo is stopped at the end, one that was
already running is left alone -- and builds the binaries
(cargo build --workspace --bins, debug profile, shared with the tests).

Options:
  -n, --workers N   number of workers (at least 2; default 3, or $WORKERS)
  -s, --seconds N   stop by itself after N seconds, as if Ctrl-C were pressed
                    (default: run until Ctrl-C, or $DEMO_SECONDS)
  -t, --traces      also run a tracing backend, with every process exporting
                    its spans over OTLP to it: an OpenTelemetry Collector
                    (OTLP on 127.0.0.1:4317 and :4318) forwarding to Zipkin,
                    whose UI shows each decision's trace at
                    http://127.0.0.1:9411/zipkin/ while the demo runs. Both
                    come from scripts/ensure-trace-backend.sh (built or
                    fetched once into ~/.cache/shoal/tools, about two
                    minutes). At the end the last recorded decision's trace
                    is saved to .demo/trace.json (or DEMO_TRACES=1)
  -f, --flat        one worker level only (no orders, no paper level), or
                    DEMO_FLAT=1
  -h, --help        show this help

Environment:
  WORKERS                   number of workers (default 3)
  DEMO_SECONDS              run for this many seconds, then stop
  DEMO_TRACES               1: same as --traces
  SHOAL_DEMO_SIM_PORT       simulator port (default 9001)
  SHOAL_DEMO_HTTP_PORT      orchestrator's /metrics, /healthz, /readyz port
                            (default 9464; worker-N uses the port + N)
  SHOAL_DEMO_SYMBOLS        simulated symbols (default SIM-AAA,SIM-DDD,SIM-EEE,SIM-HHH,SIM-III,SIM-LLL,SIM-NNN,SIM-OOO)
  SHOAL_DEMO_STOP_TIMEOUT   seconds to wait for a graceful stop before SIGKILL
                            (default 20)
  RUST_LOG                  log filter (default info,librdkafka=warn,rdkafka=warn)
  KAFKA_BOOTSTRAP_SERVERS   use this Kafka cluster instead of the local broker
  SHOAL__SECTION__KEY       any Shoal setting, passed on to the orchestrator and
                            workers (e.g. SHOAL__RULES__MOVE_THRESHOLD_BPS=20)

Exit status: 0 when every process started and then stopped cleanly (exit 0)
when asked to; 1 when one failed or died on its own; 130/143 when interrupted
before the demo was running.
EOF
}

# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

die_usage() {
  printf 'demo.sh: %s (see --help)\n' "$*" >&2
  exit 2
}

WORKERS="${WORKERS:-3}"
DEMO_SECONDS="${DEMO_SECONDS:-}"
TRACES="${DEMO_TRACES:-0}"
FLAT="${DEMO_FLAT:-0}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n | --workers)
      [[ $# -ge 2 ]] || die_usage "$1 needs a number"
      WORKERS="$2"
      shift
      ;;
    -s | --seconds)
      [[ $# -ge 2 ]] || die_usage "$1 needs a number of seconds"
      DEMO_SECONDS="$2"
      shift
      ;;
    -t | --traces) TRACES=1 ;;
    -f | --flat) FLAT=1 ;;
    -h | --help | help)
      usage
      exit 0
      ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
  shift
done
if ! [[ $WORKERS =~ ^[0-9]+$ ]] || ((WORKERS < 2)); then
  die_usage "WORKERS must be a number >= 2, not '$WORKERS'"
fi
[[ -z $DEMO_SECONDS || $DEMO_SECONDS =~ ^[0-9]+$ ]] || die_usage "DEMO_SECONDS must be a number of seconds, not '$DEMO_SECONDS'"

readonly SIM_PORT="${SHOAL_DEMO_SIM_PORT:-9001}"
# /metrics, /healthz, /readyz: the orchestrator on this port, worker-N on +N.
readonly HTTP_PORT="${SHOAL_DEMO_HTTP_PORT:-9464}"
# Eight symbols whose keys hash to eight different partitions of the
# 12-partition commands topic, so every worker of the demo gets work.
readonly SYMBOLS="${SHOAL_DEMO_SYMBOLS:-SIM-AAA,SIM-DDD,SIM-EEE,SIM-HHH,SIM-III,SIM-LLL,SIM-NNN,SIM-OOO}"
readonly STOP_TIMEOUT="${SHOAL_DEMO_STOP_TIMEOUT:-20}"
# The orchestrator's state query API.
readonly API_PORT="${SHOAL_DEMO_API_PORT:-8780}"
readonly SIM_STOP_TIMEOUT=5
readonly DEMO_DIR=.demo
readonly LOG_DIR="$DEMO_DIR/logs"
readonly OUTCOMES="$DEMO_DIR/outcomes.jsonl"
readonly BIN_DIR="${CARGO_TARGET_DIR:-target}/debug"
[[ $SIM_PORT =~ ^[0-9]+$ ]] || die_usage "SHOAL_DEMO_SIM_PORT must be a port number"
[[ $STOP_TIMEOUT =~ ^[0-9]+$ ]] || die_usage "SHOAL_DEMO_STOP_TIMEOUT must be a number of seconds"

# Marks every process the demo starts, so that the final check finds exactly
# this run's processes (never another demo's, nor the tests').
readonly RUN_ID="$$-$EPOCHSECONDS"

# Prints one symbol's state as the API serves it: price, spread, VWAP,
# volatility, and how fresh it is.
show_state() {
  local symbol=$1 body
  if ! command -v curl >/dev/null 2>&1; then
    say "(curl not installed: not showing a state answer)"
    return
  fi
  body="$(curl -sf -H "Authorization: Bearer $(cat "$API_READ_TOKEN_FILE")" \
    "http://127.0.0.1:$API_PORT/v1/state/symbol/$symbol" 2>/dev/null)" || {
    say "state API: no answer for $symbol yet"
    return
  }
  say "state of $symbol, as GET /v1/state/symbol/$symbol answers it:"
  python3 - "$body" <<'PY' | while IFS= read -r line; do say "  $line"; done
import json, sys
d = json.loads(sys.argv[1]); s = d["state"]; t = (s.get("last_trade") or {})
book = s.get("book") or {}
print(f"last trade {t.get('price')} x {t.get('size')} at {t.get('exchange_ts')}  (from {t.get('provenance', {}).get('topic')}/{t.get('provenance', {}).get('partition')}@{t.get('provenance', {}).get('offset')})")
print(f"spread {book.get('spread')}  rolling VWAP {s.get('rolling', {}).get('vwap')}  volatility {s.get('rolling', {}).get('volatility')}  trades {s.get('trades')}")
w = d["freshness"]["watermarks"][0]
print(f"fresh as of event time {d['freshness'].get('event_time')}, input offset {w['offset']} of {w['topic']}/{w['partition']}")
PY
}

# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

if [[ -t 1 && -z ${NO_COLOR:-} ]]; then
  C_RESET=$'\e[0m' C_BOLD=$'\e[1m' C_RED=$'\e[1;31m'
  SIM_COLOR=$'\e[36m' ORCH_COLOR=$'\e[1;35m'
  WORKER_COLORS=($'\e[32m' $'\e[33m' $'\e[34m' $'\e[92m' $'\e[93m' $'\e[94m' $'\e[96m' $'\e[95m')
else
  C_RESET='' C_BOLD='' C_RED='' SIM_COLOR='' ORCH_COLOR=''
  WORKER_COLORS=('')
fi
readonly C_RESET C_BOLD C_RED SIM_COLOR ORCH_COLOR WORKER_COLORS
readonly PREFIX_WIDTH=14 # "[orchestrator]"

# The demo's own lines go to stdout, or to stderr once stdout is closed (for
# example `make demo | tee demo.log` after tee was interrupted), or nowhere:
# a closed output never stops the script before it has stopped its programs.
emit() { printf '%s\n' "$1" 2>/dev/null || printf '%s\n' "$1" >&2 2>/dev/null || true; }
say() { emit "$(printf '%s%-*s%s %s' "$C_BOLD" "$PREFIX_WIDTH" "[demo]" "$C_RESET" "$*")"; }
warn() { emit "$(printf '%s%-*s %s%s' "$C_RED" "$PREFIX_WIDTH" "[demo]" "$*" "$C_RESET")"; }

banner() {
  local stop_how="Press Ctrl-C to stop everything (gracefully) and see a summary."
  [[ -z $DEMO_SECONDS ]] || stop_how="It stops by itself after ${DEMO_SECONDS}s (or on Ctrl-C) and prints a summary."
  cat <<EOF
${C_BOLD}Shoal local demo${C_RESET}: simulator -> orchestrator -> Kafka -> $WORKERS workers -> results
  [sim]           simulated trades for $SYMBOLS on ws://127.0.0.1:$SIM_PORT
  [orchestrator]  ingests the trades into Kafka and, when a price moves enough,
                  logs 'command issued' (kind, key, seq) as it sends a command;
                  when a worker's answer comes back it logs 'result recorded'
                  (status, worker_id, end_to_end_ms, output) and appends it to
                  $OUTCOMES
  [worker-N]      logs 'command handled' for each command it runs; Kafka spreads
                  the commands over the $WORKERS workers by key
  Every 10s the orchestrator and each worker log a status line with their counters.
  $stop_how
  Full logs: $LOG_DIR/

EOF
}

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

NAMES=()          # in start order
declare -A PID=() # name -> pid
declare -A RC=()  # name -> exit status, once reaped
PHASE=setup       # setup -> running -> stopping -> finished
STOP_REASON=""
FAILED=0 # 1 when a process failed or died on its own
FORCE_KILL=0
KAFKA_STARTED=0
SLEEPER=""
RUN_START=""

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_proc NAME VAR=VALUE... -- PROGRAM ARGS...
# Starts PROGRAM in the background with the given environment, its stdout
# and stderr prefixed with [NAME] on ours and copied (without colours) to
# $LOG_DIR/NAME.log. PROGRAM runs in its own session (setsid execs it in
# place, so $! is its pid): a Ctrl-C in the terminal reaches only this
# script, which then stops each program with exactly one SIGTERM (a second
# signal would make them exit at once). The prefixers ignore INT, TERM and
# HUP so that they outlive the programs and pass on their last lines; when
# our output is closed, tee goes on writing the log and the prefixer tells
# this script (SIGUSR1), which then stops the demo.
start_proc() {
  local name="$1" color prefix log env=()
  shift
  while [[ $1 != -- ]]; do
    env+=("$1")
    shift
  done
  shift
  case "$name" in
    sim) color="$SIM_COLOR" ;;
    orchestrator) color="$ORCH_COLOR" ;;
    *) color="${WORKER_COLORS[(${name##*-} - 1) % ${#WORKER_COLORS[@]}]}" ;;
  esac
  prefix="$(printf '%s%-*s%s ' "$color" "$PREFIX_WIDTH" "[$name]" "$C_RESET")"
  log="$LOG_DIR/$name.log"
  : >"$log"
  setsid env "${COMMON_ENV[@]}" "${env[@]}" "$@" </dev/null \
    > >(
      trap '' INT TERM HUP
      tee -p >(sed -u 's/\x1b\[[0-9;]*m//g' >"$log") | { sed -u "s/^/$prefix/" || kill -USR1 $$ 2>/dev/null; }
    ) 2>&1 &
  PID[$name]=$!
  NAMES+=("$name")
}

alive() { [[ -n ${PID[$1]:-} && -z ${RC[$1]:-} ]] && kill -0 "${PID[$1]}" 2>/dev/null; }

# Records the exit status of NAME, which must have exited.
reap() {
  local rc=0
  [[ -n ${RC[$1]:-} ]] && return 0
  wait "${PID[$1]}" 2>/dev/null || rc=$?
  RC[$1]=$rc
}

describe_rc() {
  local rc="$1"
  if ((rc == 0)); then
    printf 'exit 0'
  elif ((rc > 128)); then
    printf 'killed by SIG%s' "$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"
  else
    printf 'exit %d' "$rc"
  fi
}

# stop_group TIMEOUT NAME...: one SIGTERM to each running NAME, then waits up
# to TIMEOUT seconds for all of them (SIGKILL for those still running).
stop_group() {
  local timeout="$1" name deadline pending polls=0
  shift
  for name in "$@"; do
    if alive "$name"; then kill -TERM "${PID[$name]}" 2>/dev/null || true; fi
  done
  deadline=$((SECONDS + timeout))
  while :; do
    pending=()
    for name in "$@"; do
      if alive "$name"; then pending+=("$name"); else [[ -z ${PID[$name]:-} ]] || reap "$name"; fi
    done
    [[ ${#pending[@]} -gt 0 ]] || break
    # After a second signal, only what does not stop promptly is killed.
    if ((SECONDS >= deadline || (FORCE_KILL && polls >= 3))); then
      for name in "${pending[@]}"; do
        if ((FORCE_KILL)); then
          warn "$name (pid ${PID[$name]}): killing at once (second signal)"
        else
          warn "$name (pid ${PID[$name]}) did not stop within ${timeout}s; sending SIGKILL"
        fi
        kill -KILL "${PID[$name]}" 2>/dev/null || true
      done
      for name in "${pending[@]}"; do
        while kill -0 "${PID[$name]}" 2>/dev/null; do sleep 0.1; done
        reap "$name"
      done
      break
    fi
    sleep 0.2
    polls=$((polls + 1))
  done
}

# Stops everything the demo started, prints the summary, and sets the exit
# status. Safe to call more than once.
stop_all() {
  local reason="$1" name workers=() started_any=0 line
  [[ $PHASE != stopping && $PHASE != finished ]] || return 0
  # Best effort from here on: nothing (a closed output, a failed command)
  # may end the script before every program is stopped.
  set +e
  PHASE=stopping
  [[ -z $SLEEPER ]] || kill "$SLEEPER" 2>/dev/null || true
  for name in "${NAMES[@]}"; do
    [[ $name == worker-* || $name == paper-* ]] && workers+=("$name")
    started_any=1
  done
  if ((started_any)); then
    emit ''
    say "stopping ($reason): SIGTERM to the orchestrator and the workers, waiting up to ${STOP_TIMEOUT}s"
    stop_group "$STOP_TIMEOUT" orchestrator "${workers[@]}"
    say "stopping the simulator"
    stop_group "$SIM_STOP_TIMEOUT" sim
    sleep 0.3 # let the prefixers pass on the last lines
  fi
  stop_trace_backend
  if ((KAFKA_STARTED)); then
    say "stopping the Kafka broker the demo started"
    scripts/kafka.sh down || warn "scripts/kafka.sh down failed"
  elif [[ -z ${KAFKA_BOOTSTRAP_SERVERS:-} ]] && ((started_any)); then
    say "Kafka was already running before the demo; left running (stop it with scripts/kafka.sh down)"
  fi
  if ((started_any)); then
    # Kept in a file too; printed through emit (our output may be closed).
    summary >"$DEMO_DIR/summary.txt"
    while IFS= read -r line; do emit "$line"; done <"$DEMO_DIR/summary.txt"
  fi
  check_leftovers
  PHASE=finished
}

summary() {
  local name rc n total line
  printf '\n%s==== demo summary ====%s\n' "$C_BOLD" "$C_RESET"
  [[ -z $RUN_START ]] || printf 'ran for %ds\n' $((SECONDS - RUN_START))
  total=0
  [[ -f $OUTCOMES ]] && total=$(grep -c . "$OUTCOMES" || true)
  printf 'outcomes recorded in %s: %d\n' "$OUTCOMES" "$total"
  if ((total > 0)); then
    if command -v jq >/dev/null 2>&1; then
      jq -rR 'fromjson? | .status // "unknown"' "$OUTCOMES" | sort | uniq -c | sort -rn |
        while read -r n line; do printf '  %-12s %d\n' "$line" "$n"; done
    else
      for line in succeeded failed expired unsupported; do
        n=$(grep -c "\"status\":\"$line\"" "$OUTCOMES" || true)
        ((n == 0)) || printf '  %-12s %d\n' "$line" "$n"
      done
    fi
  fi
  if [[ -f $LOG_DIR/orchestrator.log ]]; then
    local issued recorded
    issued=$(grep -c 'command issued' "$LOG_DIR/orchestrator.log" || true)
    recorded=$(grep -c 'result recorded' "$LOG_DIR/orchestrator.log" || true)
    printf 'commands issued (orchestrator log): %d\n' "$issued"
    if ((issued > recorded)); then
      # Everything stops at once, so the last commands may be in Kafka
      # without a result yet: they are handled on the next run.
      printf '  %d issued in the last moments before Ctrl-C are still in Kafka, handled on the next run\n' \
        $((issued - recorded))
    fi
  fi
  local handled=() statuses=()
  for name in "${NAMES[@]}"; do
    [[ $name == worker-* || $name == paper-* ]] || continue
    handled+=("$name $(grep -c 'command handled' "$LOG_DIR/$name.log" || true)")
  done
  join ', ' 'commands handled (worker logs): ' "${handled[@]}"
  for name in "${NAMES[@]}"; do
    rc="${RC[$name]:-}"
    if [[ -z $rc ]]; then
      statuses+=("$name ?")
      FAILED=1
    else
      statuses+=("$name $(describe_rc "$rc")")
      [[ $rc == 0 ]] || FAILED=1
    fi
  done
  join ', ' 'exit statuses: ' "${statuses[@]}"
}

# join SEPARATOR LEAD ITEM...: prints LEAD and the items separated.
join() {
  local sep="$1" out="$2"
  shift 2
  [[ $# -gt 0 ]] || return 0
  out+="$1"
  shift
  while [[ $# -gt 0 ]]; do
    out+="$sep$1"
    shift
  done
  printf '%s\n' "$out"
}

# Any process of this run still alive (found by the marker in its
# environment) is reported and killed.
check_leftovers() {
  local f pid left=()
  for f in /proc/[0-9]*/environ; do
    if grep -qzx "SHOAL_DEMO_RUN=$RUN_ID" "$f" 2>/dev/null; then
      pid="${f#/proc/}"
      left+=("${pid%/environ}")
    fi
  done
  if [[ ${#left[@]} -eq 0 ]]; then
    ((${#NAMES[@]} == 0)) || emit 'processes left running: none'
    return 0
  fi
  FAILED=1
  for pid in "${left[@]}"; do
    warn "left running, killing: pid $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# Tracing backend (--traces): Zipkin's server (storage in memory, the UI and
# API on :9411) behind an OpenTelemetry Collector (OTLP on :4317 and :4318,
# forwarding to Zipkin); their output goes to their logs only.
ZIPKIN_PID=""
COLLECTOR_PID=""
readonly ZIPKIN_PORT=9411
readonly ZIPKIN_UI="http://127.0.0.1:$ZIPKIN_PORT/zipkin"

# wait_port PID NAME SECONDS PORT...: until every PORT is open, or PID exits.
wait_port() {
  local pid="$1" name="$2" deadline=$((SECONDS + $3)) port
  shift 3
  for port in "$@"; do
    until port_open "$port"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        warn "$name exited during start-up; see $LOG_DIR/$name.log"
        exit 1
      fi
      if ((SECONDS >= deadline)); then
        warn "$name did not open 127.0.0.1:$port in time; see $LOG_DIR/$name.log"
        exit 1
      fi
      sleep 0.2
    done
  done
}

start_trace_backend() {
  local paths collector zipkin
  paths="$(scripts/ensure-trace-backend.sh)"
  collector="$(sed -n 's/^collector=//p' <<<"$paths")"
  zipkin="$(sed -n 's/^zipkin=//p' <<<"$paths")"
  if port_open 4317 || port_open 4318 || port_open "$ZIPKIN_PORT"; then
    warn "127.0.0.1:4317, :4318 or :$ZIPKIN_PORT is already in use (another tracing backend?); the demo exports there"
    return 0
  fi
  # Loopback only: the demo's traces are nobody else's business.
  setsid java -Xms128m -Xmx512m -jar "$zipkin" \
    "--armeria.ports[0].ip=127.0.0.1" "--armeria.ports[0].port=$ZIPKIN_PORT" \
    </dev/null >"$LOG_DIR/zipkin.log" 2>&1 &
  ZIPKIN_PID=$!
  wait_port "$ZIPKIN_PID" zipkin 90 "$ZIPKIN_PORT"
  setsid "$collector" --config scripts/otelcol/config.yaml </dev/null >"$LOG_DIR/otelcol.log" 2>&1 &
  COLLECTOR_PID=$!
  wait_port "$COLLECTOR_PID" otelcol 30 4317 4318
  say "tracing: collector (pid $COLLECTOR_PID) takes OTLP on 127.0.0.1:4317 and :4318; Zipkin (pid $ZIPKIN_PID) shows the traces at $ZIPKIN_UI/"
}

# Saves the last recorded decision's trace to .demo/trace.json (Zipkin's
# storage is in memory: the traces go with it; the file opens in any Zipkin
# UI with "Upload JSON"), then stops the collector (which flushes what it
# holds) and Zipkin.
stop_trace_backend() {
  local trace_id
  [[ -n $ZIPKIN_PID || -n $COLLECTOR_PID ]] || return 0
  trace_id="$(grep -o 'result recorded.*trace_id=[0-9a-f]*' "$LOG_DIR/orchestrator.log" 2>/dev/null | tail -1 | sed 's/.*trace_id=//' || true)"
  if [[ -n $COLLECTOR_PID ]]; then
    kill -TERM "$COLLECTOR_PID" 2>/dev/null || true
    wait "$COLLECTOR_PID" 2>/dev/null || true
    COLLECTOR_PID=""
  fi
  if [[ -n $trace_id && -n $ZIPKIN_PID ]] && command -v curl >/dev/null 2>&1; then
    if curl -fsS --max-time 10 -o "$DEMO_DIR/trace.json" "http://127.0.0.1:$ZIPKIN_PORT/api/v2/trace/$trace_id"; then
      say "one decision's trace ($trace_id): $DEMO_DIR/trace.json (it was at $ZIPKIN_UI/traces/$trace_id)"
    else
      warn "could not read trace $trace_id from Zipkin"
    fi
  fi
  if [[ -n $ZIPKIN_PID ]]; then
    say "stopping Zipkin"
    kill -TERM "$ZIPKIN_PID" 2>/dev/null || true
    wait "$ZIPKIN_PID" 2>/dev/null || true
    ZIPKIN_PID=""
  fi
}

describe_signal() { if [[ $1 == PIPE ]]; then printf 'output closed'; else printf 'SIG%s' "$1"; fi; }

# shellcheck disable=SC2317 # on_signal and on_exit are run by traps
on_signal() {
  local sig="$1"
  case "$PHASE" in
    setup)
      emit ''
      say "$(describe_signal "$sig") during start-up"
      stop_all "$(describe_signal "$sig")"
      trap - EXIT
      case "$sig" in
        INT) exit 130 ;;
        PIPE) exit 141 ;;
        *) exit 143 ;;
      esac
      ;;
    running)
      STOP_REASON="$(describe_signal "$sig")"
      [[ -z $SLEEPER ]] || kill "$SLEEPER" 2>/dev/null || true
      ;;
    stopping)
      FORCE_KILL=1
      ;;
  esac
}

# shellcheck disable=SC2317
on_exit() {
  local rc=$?
  set +e
  if [[ $PHASE != finished ]]; then
    stop_all "the demo script failed (exit $rc)"
    ((rc != 0)) || rc=1
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

trap on_exit EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP
# A closed output pipe must not kill the script before it stops its
# programs: writes fail instead, and the prefixers report it (SIGUSR1).
trap '' PIPE
trap 'on_signal PIPE' USR1

banner

if port_open "$SIM_PORT"; then
  warn "127.0.0.1:$SIM_PORT is already in use (another demo?); pick another port with SHOAL_DEMO_SIM_PORT"
  exit 1
fi

scripts/ensure-deps.sh
# ensure-deps.sh cannot change our PATH: cargo may be in rustup's usual place.
if ! command -v cargo >/dev/null 2>&1; then
  export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
fi

if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
  say "using the Kafka cluster at $KAFKA_BOOTSTRAP_SERVERS (KAFKA_BOOTSTRAP_SERVERS)"
  scripts/kafka.sh up
else
  kafka_status=0
  kafka_out="$(scripts/kafka.sh status 2>&1)" || kafka_status=$?
  if [[ $kafka_status -eq 0 || $kafka_out == *"process alive"* ]]; then
    say "Kafka is already running on 127.0.0.1:9092; the demo uses it and leaves it running"
    [[ $kafka_status -eq 0 ]] || scripts/kafka.sh up # wait until it answers
  else
    say "starting Kafka (scripts/kafka.sh up); the demo stops it at the end"
    KAFKA_STARTED=1
    scripts/kafka.sh up
  fi
fi

say "building: cargo build --workspace --bins"
cargo build --workspace --bins
for bin in shoal-sim shoal-orchestrator shoal-worker; do
  [[ -x $BIN_DIR/$bin ]] || {
    warn "$BIN_DIR/$bin is missing after the build"
    exit 1
  }
done

mkdir -p "$LOG_DIR"
rm -f "$OUTCOMES" "$LOG_DIR"/*.log

# Tokens of the state API for this run: random, in files only the user can
# read (never on a command line, never in the logs).
readonly API_TOKENS="$DEMO_DIR/api-tokens" API_READ_TOKEN_FILE="$DEMO_DIR/api-read-token"
(
  umask 077
  read_token="read-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  admin_token="admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  printf 'read:%s\nadmin:%s\n' "$read_token" "$admin_token" >"$API_TOKENS"
  printf '%s\n' "$read_token" >"$API_READ_TOKEN_FILE"
)

COMMON_ENV=(
  "SHOAL_DEMO_RUN=$RUN_ID"
  "RUST_LOG=${RUST_LOG:-info,librdkafka=warn,rdkafka=warn}"
  "SHOAL__LOG__STATUS_INTERVAL_SECS=${SHOAL__LOG__STATUS_INTERVAL_SECS:-10}"
)
if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} && -z ${SHOAL__KAFKA__BOOTSTRAP_SERVERS:-} ]]; then
  COMMON_ENV+=("SHOAL__KAFKA__BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS")
fi
if [[ $TRACES == 1 ]]; then
  start_trace_backend
  COMMON_ENV+=(
    "SHOAL__OBSERVABILITY__OTLP_ENABLED=true"
    "OTEL_EXPORTER_OTLP_ENDPOINT=${OTEL_EXPORTER_OTLP_ENDPOINT:-http://127.0.0.1:4317}"
    "OTEL_EXPORTER_OTLP_PROTOCOL=${OTEL_EXPORTER_OTLP_PROTOCOL:-grpc}"
  )
fi
# Not a terminal: keep the programs' log lines free of colour codes.
[[ -t 1 ]] || COMMON_ENV+=("NO_COLOR=1")

# Trade ids continue upwards across runs, as an exchange's do: ingest
# deduplicates by trade id against what the ticks topic already holds, so a
# restarted simulator counting from 1 again would see its first minutes of
# trades dropped as repeats of the last run's. Milliseconds since the epoch
# stay ahead of any earlier run at 5 trades a second per symbol.
FIRST_TRADE_ID="$(date +%s%3N)"
start_proc sim -- "$BIN_DIR/shoal-sim" --listen "127.0.0.1:$SIM_PORT" --rate 5 --seed 7 --symbols "$SYMBOLS" \
  --first-trade-id "$FIRST_TRADE_ID"
# The simulator prints its "listening" line once its port is open (a probe
# connection would only make it log a failed handshake).
deadline=$((SECONDS + 15))
until grep -q 'shoal-sim listening on' "$LOG_DIR/sim.log" 2>/dev/null; do
  if ! alive sim; then
    reap sim
    warn "the simulator exited during start-up ($(describe_rc "${RC[sim]}"))"
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    warn "the simulator did not open 127.0.0.1:$SIM_PORT within 15s"
    exit 1
  fi
  sleep 0.1
done

# The trading topology's levels above the orchestrator: the strategy
# workers order for paper-1 on shoal.orders; the paper level (started first,
# so that it creates its commands topic) fills or rejects under the risk
# limits of [worker.paper].
LEVEL_ENV=()
if [[ $FLAT != 1 ]]; then
  start_proc paper-1 "SHOAL__WORKER__ID=paper-1" "SHOAL__WORKER__GROUP_ID=shoal-paper" \
    "SHOAL__WORKER__PAPER__ENABLED=true" "SHOAL__TOPICS__COMMANDS__NAME=shoal.orders" \
    "SHOAL__OBSERVABILITY__LISTEN=127.0.0.1:$((HTTP_PORT + WORKERS + 1))" -- "$BIN_DIR/shoal-worker"
  LEVEL_ENV=("SHOAL__WORKER__STRATEGY__ORDER_ACCOUNT=paper-1" "SHOAL__WORKER__NEXT_TOPIC=shoal.orders")
fi
for ((i = 1; i <= WORKERS; i++)); do
  start_proc "worker-$i" "SHOAL__WORKER__ID=worker-$i" ${LEVEL_ENV[@]+"${LEVEL_ENV[@]}"} \
    "SHOAL__OBSERVABILITY__LISTEN=127.0.0.1:$((HTTP_PORT + i))" -- "$BIN_DIR/shoal-worker"
done
start_proc orchestrator \
  "SHOAL__FEED__URL=ws://127.0.0.1:$SIM_PORT" "SHOAL__RESULTS__RECORD_PATH=$OUTCOMES" \
  "SHOAL__API__LISTEN=127.0.0.1:$API_PORT" "SHOAL__API__TOKENS_FILE=$API_TOKENS" \
  "SHOAL__OBSERVABILITY__LISTEN=127.0.0.1:$HTTP_PORT" -- "$BIN_DIR/shoal-orchestrator"

RUN_START=$SECONDS
STATE_SHOWN=""
PHASE=running
pids=""
for name in "${NAMES[@]}"; do pids+=" $name=${PID[$name]}"; done
say "started:$pids"
say "metrics and health: http://127.0.0.1:$HTTP_PORT/{metrics,healthz,readyz} (orchestrator), ports $((HTTP_PORT + 1))..$((HTTP_PORT + WORKERS)) (workers)"
FIRST_SYMBOL="${SYMBOLS%%,*}"
say "state API: http://127.0.0.1:$API_PORT (OpenAPI document at /v1/openapi.json; docs/state.md), for example:"
say "  curl -s -H \"Authorization: Bearer \$(cat $API_READ_TOKEN_FILE)\" http://127.0.0.1:$API_PORT/v1/state/symbol/$FIRST_SYMBOL"
if [[ $FLAT != 1 ]]; then
  say "trading topology: orchestrator -> strategy workers (worker-1..$WORKERS) -> shoal.orders -> paper-1 (risk, fills); docs/levels.md"
fi
say "console: http://127.0.0.1:$API_PORT/console (docs/console.md; paste a token from $API_TOKENS, admin: to approve)"
if [[ $TRACES == 1 ]]; then
  say "traces: $ZIPKIN_UI/ (Run Query), or $ZIPKIN_UI/traces/<trace_id> with the trace_id that ends each 'result recorded' line"
fi
if [[ -n $DEMO_SECONDS ]]; then
  say "running for ${DEMO_SECONDS}s (DEMO_SECONDS); Ctrl-C stops it earlier"
else
  say "running; press Ctrl-C to stop"
fi

while [[ -z $STOP_REASON ]]; do
  sleep 1 &
  SLEEPER=$!
  wait "$SLEEPER" 2>/dev/null || true
  SLEEPER=""
  [[ -z $STOP_REASON ]] || break
  for name in "${NAMES[@]}"; do
    if ! alive "$name"; then
      reap "$name"
      warn "$name (pid ${PID[$name]}) exited on its own ($(describe_rc "${RC[$name]}")); stopping the demo"
      FAILED=1
      STOP_REASON="$name exited"
    fi
  done
  if [[ -z $STATE_SHOWN ]] && ((SECONDS - RUN_START >= 15)); then
    STATE_SHOWN=1
    show_state "$FIRST_SYMBOL"
  fi
  if [[ -z $STOP_REASON && -n $DEMO_SECONDS ]] && ((SECONDS - RUN_START >= DEMO_SECONDS)); then
    STOP_REASON="DEMO_SECONDS=$DEMO_SECONDS elapsed"
  fi
done

stop_all "$STOP_REASON"
trap - EXIT
if ((FAILED)); then
  warn "the demo did not run cleanly (see above and $LOG_DIR/)"
  exit 1
fi
exit 0
