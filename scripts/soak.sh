#!/usr/bin/env bash
# Soak test (`make soak`): the demo's pipeline (simulator, orchestrator,
# workers) on the local broker for a long time under periodic faults,
# sampling memory, file descriptors, consumer lag and end-to-end latency;
# fails when memory grows or lag is unbounded. See --help.
#
# The processes, their faults and their clean-up are here; the sampler and
# the report (with its plot) are in scripts/soak/ (Python, standard library
# only).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
cd "$REPO_ROOT"

usage() {
  cat <<'EOF'
Usage: scripts/soak.sh [options]   (or: make soak, SOAK_MINUTES=N make soak)

Runs Shoal's demo pipeline on this machine for a long time, at a steady rate,
under periodic faults, and checks that it stays flat:
  shoal-sim            simulated trades over WebSocket (8 symbols, --rate
                       trades/s each, as the demo)
  shoal-orchestrator   feed -> ticks -> decisions -> commands; records the
                       outcomes in OUT/outcomes.jsonl
  shoal-worker x N     worker-1 .. worker-N, one consumer group
with topics, groups and transactional ids of their own
(shoal-soak-<run>.commands, ...), so that the run shares the broker with
nothing else; its topics are deleted at the end (--keep-topics keeps them).

Faults, none in the final 3 minutes (so that the lag check sees recovery):
  every --kill-every seconds, SIGKILL one of worker-2 .. worker-N in turn
  and restart it with the same id (worker-1 is never killed, so one
  worker's memory is followed over the whole run);
  every --orchestrator-every seconds, SIGTERM the orchestrator, wait for it
  to stop, and start it again.

The orchestrator's state is bounded (alerts, bars, command retention), but
at the defaults those bounds fill over hours at this rate, and filling them
would read as growth. The soak sets them so that they fill within the
warm-up: state.max_alerts=100, state.max_closed_bars=1,
state.command_retention_secs=120 (SHOAL__STATE__MAX_ALERTS, ...
override them).

Every --interval seconds scripts/soak/sample.py writes a row of OUT/soak.csv:
each process's resident memory (VmRSS, /proc/<pid>/status), open file
descriptors (/proc/<pid>/fd) and threads; the consumer lag of the workers'
group and of the orchestrator's two groups (shoal_consumer_lag on each
process's /metrics); the commands pending; the end-to-end latency
(end_to_end_ms of the outcomes recorded since the previous row).

At the end scripts/soak/report.py prints memory growth per process after the
warm-up, lag and latency per window, writes the plot OUT/soak.svg, and a line
  soak: minutes=30 rss_growth_max=3.1% (orchestrator) lag_max=120 (worker)
        fd_growth=0 p50_ms=... p99_ms=... outcomes=... verdict=flat
The exit status is 1 when a Shoal process's memory grew by more than
--max-rss-growth percent after its warm-up, when a stage's lag did not come
down to --lag-limit in the final 2 minutes, or when a process exited on its
own; 0 otherwise (130/143 when interrupted).

Options (environment variable in brackets):
  -m, --minutes N            duration (default 30) [SOAK_MINUTES]
  -w, --warmup N             minutes left out of the memory growth, from the
                             start and from each restart (default 5)
                             [SOAK_WARMUP_MINUTES]
  -n, --workers N            workers, at least 2 (default 3) [SOAK_WORKERS]
      --rate R               trades per second per symbol (default 5)
                             [SOAK_RATE]
      --interval S           seconds between samples (default 10)
                             [SOAK_INTERVAL_SECS]
      --kill-every S         seconds between worker SIGKILLs; 0: none
                             (default 180) [SOAK_KILL_EVERY_SECS]
      --orchestrator-every S seconds between orchestrator restarts; 0: none
                             (default 900) [SOAK_ORCHESTRATOR_EVERY_SECS]
      --max-rss-growth P     percent (default 10) [SOAK_MAX_RSS_GROWTH]
      --lag-limit N          messages (default 1000) [SOAK_LAG_LIMIT]
      --port-base P          ports used: P+1 simulator, P+64 orchestrator's
                             /metrics, P+64+i worker-i's (default 29400)
                             [SOAK_PORT_BASE]
      --out DIR              output directory (default target/soak/<run>)
                             [SOAK_OUT]
      --release              build and run the release profile (default:
                             debug, as the demo)
      --no-build             use the binaries already built
      --own-broker           run on a broker of the run's own, started with
                             scripts/kafka.sh (state in OUT/kafka, port P+92,
                             controller P+93) and stopped at the end, instead
                             of the shared local broker [SOAK_OWN_BROKER=1]
      --keep-topics          do not delete the run's topics at the end
  -h, --help                 this text

Also read: KAFKA_BOOTSTRAP_SERVERS (a cluster instead of the local broker,
which is started with scripts/kafka.sh up when it is not running and left
running), RUST_LOG, and any SHOAL__SECTION__KEY setting (passed on, except
the topics, groups, ids and ports this script sets).
EOF
}

say() { printf 'soak: %s\n' "$*"; }
warn() { printf 'soak: %s\n' "$*" >&2; }
die_usage() {
  warn "$* (see --help)"
  exit 2
}

MINUTES="${SOAK_MINUTES:-30}"
WARMUP="${SOAK_WARMUP_MINUTES:-5}"
WORKERS="${SOAK_WORKERS:-3}"
RATE="${SOAK_RATE:-5}"
INTERVAL="${SOAK_INTERVAL_SECS:-10}"
KILL_EVERY="${SOAK_KILL_EVERY_SECS:-180}"
ORCH_EVERY="${SOAK_ORCHESTRATOR_EVERY_SECS:-900}"
MAX_RSS_GROWTH="${SOAK_MAX_RSS_GROWTH:-10}"
LAG_LIMIT="${SOAK_LAG_LIMIT:-1000}"
PORT_BASE="${SOAK_PORT_BASE:-29400}"
OUT="${SOAK_OUT:-}"
PROFILE=debug
BUILD=1
KEEP_TOPICS=0
OWN_BROKER="${SOAK_OWN_BROKER:-0}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help | help)
      usage
      exit 0
      ;;
    --release) PROFILE=release ;;
    --no-build) BUILD=0 ;;
    --keep-topics) KEEP_TOPICS=1 ;;
    --own-broker) OWN_BROKER=1 ;;
    -m | --minutes | -w | --warmup | -n | --workers | --rate | --interval | --kill-every | \
      --orchestrator-every | --max-rss-growth | --lag-limit | --port-base | --out)
      [[ $# -ge 2 ]] || die_usage "$1 needs a value"
      case "$1" in
        -m | --minutes) MINUTES="$2" ;;
        -w | --warmup) WARMUP="$2" ;;
        -n | --workers) WORKERS="$2" ;;
        --rate) RATE="$2" ;;
        --interval) INTERVAL="$2" ;;
        --kill-every) KILL_EVERY="$2" ;;
        --orchestrator-every) ORCH_EVERY="$2" ;;
        --max-rss-growth) MAX_RSS_GROWTH="$2" ;;
        --lag-limit) LAG_LIMIT="$2" ;;
        --port-base) PORT_BASE="$2" ;;
        --out) OUT="$2" ;;
      esac
      shift
      ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
  shift
done
for pair in "MINUTES=$MINUTES" "WARMUP=$WARMUP" "WORKERS=$WORKERS" "INTERVAL=$INTERVAL" \
  "KILL_EVERY=$KILL_EVERY" "ORCH_EVERY=$ORCH_EVERY" "LAG_LIMIT=$LAG_LIMIT" "PORT_BASE=$PORT_BASE"; do
  [[ ${pair#*=} =~ ^[0-9]+$ ]] || die_usage "${pair%%=*} must be a whole number, not '${pair#*=}'"
done
[[ $RATE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die_usage "the rate must be a number, not '$RATE'"
[[ $MAX_RSS_GROWTH =~ ^[0-9]+(\.[0-9]+)?$ ]] || die_usage "--max-rss-growth must be a number, not '$MAX_RSS_GROWTH'"
((WORKERS >= 2)) || die_usage "at least 2 workers (worker-1 is never killed)"
((MINUTES >= 1 && INTERVAL >= 1)) || die_usage "--minutes and --interval must be at least 1"
((WARMUP < MINUTES)) || die_usage "the warm-up ($WARMUP min) must be shorter than the run ($MINUTES min)"
((PORT_BASE >= 1024 && PORT_BASE + 64 + WORKERS < 65536)) || die_usage "--port-base out of range"

readonly DURATION=$((MINUTES * 60))
readonly QUIET_SECS=180 # no faults in the final 3 minutes
readonly FINAL_SECS=120 # the lag check's window
readonly STOP_TIMEOUT=30
readonly SIM_PORT=$((PORT_BASE + 1)) ORCH_PORT=$((PORT_BASE + 64))
readonly SYMBOLS="SIM-AAA,SIM-DDD,SIM-EEE,SIM-HHH,SIM-III,SIM-LLL,SIM-NNN,SIM-OOO"
RUN="$(date -u +%Y%m%dT%H%M%SZ)-$$"
readonly RUN
readonly PREFIX="shoal-soak-$RUN"
OUT="${OUT:-target/soak/$RUN}"
readonly OUT LOG_DIR="$OUT/logs"
readonly BUILD_DIR="${CARGO_TARGET_DIR:-target}/$PROFILE"
# The binaries are copied here, so that a rebuild during the run does not
# change what a restart runs.
readonly BIN_DIR="$OUT/bin"
readonly OWN_KAFKA_PORT=$((PORT_BASE + 92)) OWN_KAFKA_DIR="$REPO_ROOT/${OUT#"$REPO_ROOT"/}/kafka"
if [[ $OWN_BROKER == 1 ]]; then
  readonly BOOTSTRAP="127.0.0.1:$OWN_KAFKA_PORT"
else
  readonly BOOTSTRAP="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
fi

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

NAMES=(sim orchestrator)
for ((i = 1; i <= WORKERS; i++)); do NAMES+=("worker-$i"); done
declare -A PID=()
SAMPLER=""
START=""
STOP_REASON=""
PHASE=setup

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
now() { echo $((EPOCHSECONDS - START)); }
alive() { [[ -n ${PID[$1]:-} ]] && kill -0 "${PID[$1]}" 2>/dev/null; }

# event NAME PROCESS DETAIL: a line of OUT/events.csv (and of our output).
event() {
  local t=0
  [[ -z $START ]] || t=$(now)
  printf '%s,%s,%s,%s\n' "$t" "$1" "$2" "${3//,/;}" >>"$OUT/events.csv"
  say "$(printf '%4d:%02d' $((t / 60)) $((t % 60))) $1 $2${3:+ ($3)}"
}

# Settings every Shoal process of the run gets: its own topics, groups and
# transactional ids, its own ports, and a quieter status line.
COMMON_ENV=(
  "RUST_LOG=${RUST_LOG:-info,librdkafka=warn,rdkafka=warn}"
  "NO_COLOR=1"
  "SHOAL__LOG__STATUS_INTERVAL_SECS=60"
  "SHOAL__KAFKA__BOOTSTRAP_SERVERS=$BOOTSTRAP"
  "SHOAL__TOPICS__COMMANDS__NAME=$PREFIX.commands"
  "SHOAL__TOPICS__RESULTS__NAME=$PREFIX.results"
  "SHOAL__TOPICS__TICKS__NAME=$PREFIX.ticks"
  "SHOAL__TOPICS__EVENTS__NAME=$PREFIX.events"
  "SHOAL__TOPICS__DLQ__NAME=$PREFIX.dlq"
  "SHOAL__STATE__MEMBERS_TOPIC=$PREFIX.state.members"
  "SHOAL__WORKER__GROUP_ID=$PREFIX-workers"
  "SHOAL__ORCHESTRATOR__DECISIONS_GROUP=$PREFIX-decisions"
  "SHOAL__ORCHESTRATOR__RESULTS_GROUP=$PREFIX-results"
  "SHOAL__ORCHESTRATOR__ID=$PREFIX-orchestrator"
  "SHOAL__DELIVERY__TRANSACTIONAL_ID_PREFIX=$PREFIX"
)

# start_proc NAME PORT VAR=VALUE... -- PROGRAM ARGS...: PROGRAM in its own
# session (a Ctrl-C reaches only this script, which stops it), its output
# appended to OUT/logs/NAME.log, its pid in OUT/pids/NAME for the sampler.
start_proc() {
  local name=$1 port=$2 env=()
  shift 2
  while [[ $1 != -- ]]; do
    env+=("$1")
    shift
  done
  shift
  setsid env "${COMMON_ENV[@]}" "${env[@]}" "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
  PID[$name]=$!
  printf '%s\n' "${PID[$name]}" >"$OUT/pids/$name"
  [[ -z $port ]] || printf '%s\n' "$port" >"$OUT/ports/$name"
}

start_sim() {
  # Trade ids go on upwards across runs, as the demo's (ingest deduplicates
  # by trade id).
  start_proc sim "" -- "$BIN_DIR/shoal-sim" --listen "127.0.0.1:$SIM_PORT" --rate "$RATE" --seed 7 \
    --symbols "$SYMBOLS" --first-trade-id "$(date +%s%3N)"
  local deadline=$((SECONDS + 15))
  until grep -q 'shoal-sim listening on' "$LOG_DIR/sim.log" 2>/dev/null; do
    alive sim || {
      warn "the simulator exited during start-up; see $LOG_DIR/sim.log"
      exit 1
    }
    ((SECONDS < deadline)) || {
      warn "the simulator did not open 127.0.0.1:$SIM_PORT within 15 s"
      exit 1
    }
    sleep 0.1
  done
}

start_worker() {
  local i=$1
  start_proc "worker-$i" $((ORCH_PORT + i)) "SHOAL__WORKER__ID=$PREFIX-worker-$i" \
    "SHOAL__OBSERVABILITY__LISTEN=127.0.0.1:$((ORCH_PORT + i))" -- "$BIN_DIR/shoal-worker"
}

# The state's bounded parts fill within the warm-up, so that what grows after
# it is not the state reaching its bounds: at the defaults and this rate the
# alerts (1,000 per shard) fill in about 25 minutes, the 1-minute bars (60
# per symbol) in an hour, the 5-minute bars in five hours. Each can be set.
readonly STATE_ENV=(
  "SHOAL__STATE__MAX_ALERTS=${SHOAL__STATE__MAX_ALERTS:-100}"
  "SHOAL__STATE__MAX_CLOSED_BARS=${SHOAL__STATE__MAX_CLOSED_BARS:-1}"
  "SHOAL__STATE__COMMAND_RETENTION_SECS=${SHOAL__STATE__COMMAND_RETENTION_SECS:-120}"
)

start_orchestrator() {
  start_proc orchestrator "$ORCH_PORT" "${STATE_ENV[@]}" "SHOAL__FEED__URL=ws://127.0.0.1:$SIM_PORT" \
    "SHOAL__RESULTS__RECORD_PATH=$OUT/outcomes.jsonl" "SHOAL__API__LISTEN=" \
    "SHOAL__OBSERVABILITY__LISTEN=127.0.0.1:$ORCH_PORT" -- "$BIN_DIR/shoal-orchestrator"
}

start_named() {
  case "$1" in
    sim) start_sim ;;
    orchestrator) start_orchestrator ;;
    worker-*) start_worker "${1#worker-}" ;;
  esac
}

# stop NAME...: one SIGTERM each, then SIGKILL whatever is left after
# STOP_TIMEOUT seconds; STOPPED says "NAME exit N in Ss" per process. (Not in
# a subshell: only this shell can wait for its children.)
STOPPED=""
stop() {
  local name deadline=$((SECONDS + STOP_TIMEOUT)) rc start=$SECONDS
  STOPPED=""
  for name in "$@"; do
    alive "$name" && kill -TERM "${PID[$name]}" 2>/dev/null || true
  done
  for name in "$@"; do
    while alive "$name" && ((SECONDS < deadline)); do sleep 0.2; done
    if alive "$name"; then
      kill -KILL "${PID[$name]}" 2>/dev/null || true
      STOPPED+="$name SIGKILLed after ${STOP_TIMEOUT}s; "
    fi
    rc=0
    [[ -z ${PID[$name]:-} ]] || wait "${PID[$name]}" 2>/dev/null || rc=$?
    STOPPED+="$name exit $rc in $((SECONDS - start))s; "
    PID[$name]=""
  done
  STOPPED=${STOPPED%; }
}

kill_worker() {
  local name=$1 pid=${PID[$1]} rc=0
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || rc=$?
  start_named "$name"
  event kill_worker "$name" "SIGKILL pid $pid (exit $rc); restarted as pid ${PID[$name]}"
}

restart_orchestrator() {
  local pid=${PID[orchestrator]}
  stop orchestrator
  start_orchestrator
  event restart_orchestrator orchestrator "SIGTERM pid $pid: $STOPPED; restarted as pid ${PID[orchestrator]}"
}

stop_sampler() {
  if [[ -n $SAMPLER ]]; then
    kill -TERM "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=""
  fi
}

# Deletes the run's topics (best effort: Kafka's TopicCommand from the jars
# scripts/kafka.sh fetched, when they and java are here).
delete_topics() {
  local libs
  libs=$(printf '%s\n' "${SHOAL_CACHE_DIR:-$HOME/.cache/shoal}"/kafka-*/libs | sort -V | tail -n 1)
  [[ -d $libs ]] || libs=""
  if [[ -z $libs ]] || ! command -v java >/dev/null 2>&1; then
    say "topics $PREFIX.* left on the broker (no Kafka tools here to delete them)"
    return 0
  fi
  if timeout 90 java -cp "$libs/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --delete --topic "${PREFIX//./\\.}\\..*" >"$LOG_DIR/delete-topics.log" 2>&1; then
    say "deleted the run's topics ($PREFIX.*)"
  else
    say "could not delete the topics $PREFIX.* (see $LOG_DIR/delete-topics.log)"
  fi
}

# Stops everything this script started: the sampler, then the orchestrator
# and workers together, then the simulator.
stop_all() {
  local name shoal=()
  stop_sampler
  for name in orchestrator "${NAMES[@]:2}"; do
    [[ -z ${PID[$name]:-} ]] || shoal+=("$name")
  done
  if [[ ${#shoal[@]} -gt 0 ]]; then
    stop "${shoal[@]}"
    say "stopped: $STOPPED"
  fi
  [[ -z ${PID[sim]:-} ]] || stop sim
  stop_own_broker
}

# The run's own broker (--own-broker): started by scripts/kafka.sh with its
# own state dir and ports; stopped here by the pid it recorded, then its
# data deleted (its log is kept).
start_own_broker() {
  say "starting the run's own broker on 127.0.0.1:$OWN_KAFKA_PORT (state in $OWN_KAFKA_DIR)"
  mkdir -p "$OWN_KAFKA_DIR"
  OWN_BROKER_STARTED=1
  SHOAL_KAFKA_DIR="$OWN_KAFKA_DIR" SHOAL_KAFKA_PORT="$OWN_KAFKA_PORT" SHOAL_KAFKA_BROKERS=1 \
    scripts/kafka.sh up >"$LOG_DIR/kafka-up.log" 2>&1 || {
    warn "could not start the run's own broker; see $LOG_DIR/kafka-up.log"
    exit 1
  }
}

OWN_BROKER_STARTED=0
stop_own_broker() {
  local pid deadline
  [[ $OWN_BROKER_STARTED == 1 ]] || return 0
  OWN_BROKER_STARTED=0
  pid=$(cat "$OWN_KAFKA_DIR/broker.pid" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -rf "$OWN_KAFKA_DIR/data"
  say "stopped the run's own broker (pid ${pid:-?}); its log is $OWN_KAFKA_DIR/broker.log"
}

# shellcheck disable=SC2317,SC2329 # run by traps
on_signal() {
  case "$PHASE" in
    running) STOP_REASON="SIG$1" ;;
    *)
      warn "SIG$1 during $PHASE"
      PHASE="interrupted"
      if [[ $1 == INT ]]; then exit 130; fi
      exit 143
      ;;
  esac
}

# shellcheck disable=SC2317,SC2329
on_exit() {
  local rc=$?
  set +e
  if [[ $PHASE != finished ]]; then
    stop_all
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

ports=("$SIM_PORT" "$ORCH_PORT")
for ((i = 1; i <= WORKERS; i++)); do ports+=($((ORCH_PORT + i))); done
[[ $OWN_BROKER == 0 ]] || ports+=("$OWN_KAFKA_PORT" $((OWN_KAFKA_PORT + 1)))
for port in "${ports[@]}"; do
  ! port_open "$port" || {
    warn "127.0.0.1:$port is in use (another soak?); pick other ports with --port-base"
    exit 1
  }
done

if ! command -v cargo >/dev/null 2>&1; then
  export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
fi
if [[ $OWN_BROKER == 1 ]]; then
  : # started below, once OUT exists
elif [[ -z ${KAFKA_BOOTSTRAP_SERVERS:-} ]] && ! scripts/kafka.sh status >/dev/null 2>&1; then
  say "starting Kafka (scripts/kafka.sh up); it is left running"
  scripts/kafka.sh up
fi
if [[ $BUILD == 1 ]]; then
  profile_flag=()
  [[ $PROFILE == debug ]] || profile_flag=(--release)
  say "building: cargo build ${profile_flag[*]} -p shoal-sim -p shoal-orchestrator -p shoal-worker --bins"
  cargo build "${profile_flag[@]}" -p shoal-sim -p shoal-orchestrator -p shoal-worker --bins
fi
mkdir -p "$LOG_DIR" "$OUT/pids" "$OUT/ports" "$BIN_DIR"
for bin in shoal-sim shoal-orchestrator shoal-worker; do
  [[ -x $BUILD_DIR/$bin ]] || {
    warn "$BUILD_DIR/$bin is missing (build it, or drop --no-build)"
    exit 1
  }
  cp "$BUILD_DIR/$bin" "$BIN_DIR/$bin"
done
printf 't_s,event,process,detail\n' >"$OUT/events.csv"
[[ $OWN_BROKER == 0 ]] || start_own_broker
{
  printf 'run=%s\ncommit=%s\nprofile=%s\n' "$RUN" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$PROFILE"
  printf 'binaries=%s\n' "$(cd "$BIN_DIR" && sha256sum shoal-* | cut -c1-12 | tr '\n' ' ')"
  printf 'minutes=%s warmup=%s workers=%s rate=%s interval=%s kill_every=%s orchestrator_every=%s\n' \
    "$MINUTES" "$WARMUP" "$WORKERS" "$RATE" "$INTERVAL" "$KILL_EVERY" "$ORCH_EVERY"
  printf 'bootstrap=%s topics=%s.*\n' "$BOOTSTRAP" "$PREFIX"
  printf 'state=%s\n' "${STATE_ENV[*]}"
} >"$OUT/run.txt"

say "run $RUN: $MINUTES min, warm-up $WARMUP min, $WORKERS workers, $RATE trades/s x 8 symbols, sample every ${INTERVAL}s"
say "faults: worker SIGKILL every ${KILL_EVERY}s (worker-2..worker-$WORKERS in turn), orchestrator SIGTERM+restart every ${ORCH_EVERY}s, none in the final ${QUIET_SECS}s"
say "output: $OUT (soak.csv, events.csv, outcomes.jsonl, soak.svg, report.txt, logs/, bin/); metrics: 127.0.0.1:$ORCH_PORT (orchestrator), :$((ORCH_PORT + 1))..:$((ORCH_PORT + WORKERS)) (workers)"

START=$EPOCHSECONDS
start_sim
for ((i = 1; i <= WORKERS; i++)); do start_worker "$i"; done
start_orchestrator
event start all "$(for n in "${NAMES[@]}"; do printf '%s=%s ' "$n" "${PID[$n]}"; done)"
setsid python3 scripts/soak/sample.py --out "$OUT" --interval "$INTERVAL" --start "$START" \
  --names "$(
    IFS=,
    echo "${NAMES[*]}"
  )" </dev/null >"$LOG_DIR/sampler.log" 2>&1 &
SAMPLER=$!

PHASE=running
next_kill=$KILL_EVERY
next_orch=$ORCH_EVERY
victim=2
last_progress=0
while [[ -z $STOP_REASON ]] && (($(now) < DURATION)); do
  sleep 1 &
  wait $! 2>/dev/null || true
  [[ -z $STOP_REASON ]] || break
  t=$(now)
  for name in "${NAMES[@]}"; do
    if ! alive "$name"; then
      rc=0
      wait "${PID[$name]}" 2>/dev/null || rc=$?
      event unexpected_exit "$name" "pid ${PID[$name]} exit $rc; restarting it"
      start_named "$name"
    fi
  done
  if ((t < DURATION - QUIET_SECS)); then
    if ((KILL_EVERY > 0 && t >= next_kill)); then
      kill_worker "worker-$victim"
      victim=$((victim % WORKERS + 1))
      ((victim > 1)) || victim=2
      next_kill=$((next_kill + KILL_EVERY))
      # Never two faults at once.
      ((next_orch > t + 30)) || next_orch=$((t + 30))
    elif ((ORCH_EVERY > 0 && t >= next_orch)); then
      restart_orchestrator
      next_orch=$((next_orch + ORCH_EVERY))
      ((next_kill > t + 30)) || next_kill=$((t + 30))
    fi
  fi
  if ((t - last_progress >= 60)); then
    last_progress=$t
    say "$(printf '%4d:%02d' $((t / 60)) $((t % 60))) running; $(wc -l <"$OUT/outcomes.jsonl" 2>/dev/null || echo 0) outcomes recorded"
  fi
done

PHASE=stopping
interrupted=()
if [[ -n $STOP_REASON ]]; then
  say "$STOP_REASON: stopping after $(now)s of ${DURATION}s"
  interrupted=(--interrupted)
fi
stop_all
PHASE=finished
[[ $KEEP_TOPICS == 1 || $OWN_BROKER == 1 ]] || delete_topics

rc=0
python3 scripts/soak/report.py --out "$OUT" --warmup-min "$WARMUP" --max-rss-growth "$MAX_RSS_GROWTH" \
  --lag-limit "$LAG_LIMIT" --final-secs "$FINAL_SECS" "${interrupted[@]}" | tee "$OUT/report.txt" || rc=$?
if [[ -n $STOP_REASON ]]; then
  [[ $STOP_REASON == SIGINT ]] && exit 130
  exit 143
fi
exit "$rc"
