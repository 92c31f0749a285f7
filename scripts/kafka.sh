#!/usr/bin/env bash
# Runs a local Apache Kafka 4.x broker (KRaft, no ZooKeeper, no Docker) for
# Shoal's development and CI. See `scripts/kafka.sh --help`.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly KAFKA_SUPPORT_DIR="$SCRIPT_DIR/kafka"
readonly KAFKA_POM="$KAFKA_SUPPORT_DIR/pom.xml"
readonly SERVER_TEMPLATE="$KAFKA_SUPPORT_DIR/server.properties.template"
readonly BROKER_LOG4J="$KAFKA_SUPPORT_DIR/log4j2.properties"
readonly TOOLS_LOG4J="$KAFKA_SUPPORT_DIR/tools-log4j2.properties"

readonly MIN_JAVA=17
readonly HOST=127.0.0.1
readonly BASE_BROKER_PORT=9092
readonly BASE_CONTROLLER_PORT=9093

readonly STATE_DIR="${SHOAL_KAFKA_DIR:-$REPO_ROOT/.kafka}"
readonly CACHE_ROOT="${SHOAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}"

# How many nodes this invocation manages. Only 1 (a combined
# broker+controller) is implemented; the per-node functions below take the
# node id so that a multi-broker mode can loop over node_ids.
BROKERS=1

READY_TIMEOUT="${SHOAL_KAFKA_READY_TIMEOUT:-90}"
STOP_TIMEOUT="${SHOAL_KAFKA_STOP_TIMEOUT:-30}"
JAVA=""
APT_UPDATED=0

usage() {
  cat <<EOF
Usage: scripts/kafka.sh COMMAND [OPTIONS]

Runs a single-node Apache Kafka broker in KRaft mode (combined broker and
controller, node.id=1) for Shoal, without Docker:
  bootstrap   $HOST:$BASE_BROKER_PORT  (PLAINTEXT)
  controller  $HOST:$BASE_CONTROLLER_PORT  (CONTROLLER listener)

Commands:
  up [--fresh] [--timeout SECS]
        Start the broker in the background and wait (default ${READY_TIMEOUT}s)
        until it answers a metadata request. Does nothing if it is already
        running. Data from an earlier run is reused; --fresh wipes the data
        and formats the log dir with a new cluster id.
  down [--purge]
        Stop the broker (SIGTERM, then SIGKILL after ${STOP_TIMEOUT}s). Does
        nothing if it is not running. --purge also deletes the state dir.
  status
        Say whether the broker is running; exit 0 if it is, 3 if not.
  logs [-f] [-n LINES]
        Print the end of the broker log; -f follows it.
  -h, --help
        Show this help.

The broker's jars (version from scripts/kafka/pom.xml, kafka.version) are
resolved from Maven Central with 'mvn dependency:copy-dependencies' once and
cached outside the work tree in
  \${SHOAL_CACHE_DIR:-\${XDG_CACHE_HOME:-\$HOME/.cache}/shoal}/kafka-<version>/libs
  (here: $CACHE_ROOT)
Java $MIN_JAVA+ and Maven are needed; when missing they are installed with
apt-get (openjdk-17-jre-headless, maven) if running as root or with
password-less sudo, otherwise the script says what to install.

Runtime state (server.properties, data, broker.log, broker.pid) lives in
  \${SHOAL_KAFKA_DIR:-<repo>/.kafka}   (here: $STATE_DIR)

Environment:
  KAFKA_BOOTSTRAP_SERVERS   use this existing cluster instead: 'up' and
                            'status' only check that it answers a metadata
                            request, 'down' and 'logs' do nothing.
  SHOAL_KAFKA_DIR           state dir (see above).
  SHOAL_CACHE_DIR           jar cache root (see above).
  SHOAL_KAFKA_READY_TIMEOUT seconds 'up' waits for readiness (default 90).
  SHOAL_KAFKA_STOP_TIMEOUT  seconds 'down' waits before SIGKILL (default 30).
  KAFKA_HEAP_OPTS           broker heap (default: -Xms256m -Xmx1g).
  JAVA_HOME                 Java to use (default: java on PATH).
EOF
}

log() { printf 'kafka.sh: %s\n' "$*"; }
err() { printf 'kafka.sh: error: %s\n' "$*" >&2; }
die() {
  err "$*"
  exit 1
}

# ---------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------

# Succeeds if apt-get can be run as root: directly, or through
# password-less sudo.
can_apt() {
  command -v apt-get >/dev/null 2>&1 || return 1
  [[ $(id -u) -eq 0 ]] && return 0
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null
}

apt_get() {
  local as_root=()
  [[ $(id -u) -eq 0 ]] || as_root=(sudo -n)
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" </dev/null
}

apt_install() {
  can_apt || return 1
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "running apt-get update"
    apt_get update -qq >/dev/null || return 1
    APT_UPDATED=1
  fi
  log "installing with apt-get: $*"
  apt_get install -y -qq --no-install-recommends "$@" >/dev/null || return 1
}

# Major version of the given java binary ("1.8.0_x" -> 8, "17.0.1" -> 17),
# or nothing if it does not run.
java_major() {
  local line version
  line="$("$1" -version 2>&1 | grep -m1 -E 'version "' || true)"
  version="${line#*version \"}"
  version="${version%%\"*}"
  [[ -n $line && -n $version ]] || return 0
  if [[ $version == 1.* ]]; then
    version="${version#1.}"
  fi
  printf '%s\n' "${version%%[.+-]*}"
}

# A Java >= MIN_JAVA: JAVA_HOME, then PATH, then the JVMs Debian installs in
# /usr/lib/jvm (an update-alternatives default may still point elsewhere).
find_java() {
  local candidate major
  for candidate in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" \
    /usr/lib/jvm/*/bin/java; do
    [[ -n $candidate && -x $candidate ]] || continue
    major="$(java_major "$candidate")"
    if [[ -n $major && $major -ge $MIN_JAVA ]]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_java() {
  [[ -z $JAVA ]] || return 0
  if JAVA="$(find_java)"; then
    if [[ -z ${JAVA_HOME:-} && $JAVA != "$(command -v java || true)" ]]; then
      log "java on PATH is missing or older than $MIN_JAVA; using $JAVA"
    fi
    return 0
  fi
  local current
  if command -v java >/dev/null 2>&1; then
    current="$(java_major "$(command -v java)")"
    log "java on PATH is version ${current:-unknown}; Kafka needs Java $MIN_JAVA+"
  else
    log "java not found; Kafka needs Java $MIN_JAVA+"
  fi
  if can_apt && apt_install openjdk-17-jre-headless && JAVA="$(find_java)"; then
    log "using $JAVA"
    return 0
  fi
  die "no Java $MIN_JAVA+ and could not install one (needs apt-get and root).
  Install it, e.g. 'sudo apt-get install openjdk-17-jre-headless',
  or point JAVA_HOME at a Java $MIN_JAVA+ installation, then run this again."
}

ensure_maven() {
  command -v mvn >/dev/null 2>&1 && return 0
  log "mvn not found; it is needed once to fetch the Kafka jars from Maven Central"
  if can_apt && apt_install maven && command -v mvn >/dev/null 2>&1; then
    return 0
  fi
  die "mvn is missing and could not be installed (needs apt-get and root).
  Install Maven 3.6+, e.g. 'sudo apt-get install maven', then run this again."
}

# ---------------------------------------------------------------------------
# Kafka jars
# ---------------------------------------------------------------------------

kafka_version() {
  local v
  v="$(sed -n 's:.*<kafka\.version>[[:space:]]*\([^<[:space:]]*\)[[:space:]]*</kafka\.version>.*:\1:p' \
    "$KAFKA_POM")"
  v="${v%%$'\n'*}"
  [[ -n $v ]] || die "cannot read <kafka.version> from $KAFKA_POM"
  printf '%s\n' "$v"
}

KAFKA_VERSION="$(kafka_version)"
readonly KAFKA_VERSION
readonly KAFKA_HOME="$CACHE_ROOT/kafka-$KAFKA_VERSION"
readonly LIBS_DIR="$KAFKA_HOME/libs"
# Written after a successful copy; holds the pom's checksum so that editing
# the pom (another dependency, same Kafka version) re-resolves.
readonly LIBS_MARKER="$KAFKA_HOME/libs.complete"

pom_checksum() { sha256sum "$KAFKA_POM" | cut -d' ' -f1; }

libs_ready() {
  [[ -f $LIBS_MARKER && -d $LIBS_DIR ]] || return 1
  [[ "$(cat "$LIBS_MARKER")" == "$(pom_checksum)" ]] || return 1
  compgen -G "$LIBS_DIR/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null
}

ensure_libs() {
  libs_ready && return 0
  ensure_maven
  local tmp mvn_log start
  start=$SECONDS
  mkdir -p "$KAFKA_HOME"
  tmp="$(mktemp -d "$KAFKA_HOME/libs.tmp.XXXXXX")"
  mvn_log="$KAFKA_HOME/mvn.log"
  log "resolving Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR"
  if ! mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies \
    -DoutputDirectory="$tmp" -DincludeScope=runtime </dev/null >"$mvn_log" 2>&1; then
    rm -rf "$tmp"
    err "mvn dependency:copy-dependencies failed; end of $mvn_log:"
    tail -n 40 "$mvn_log" | sed 's/^/  | /' >&2
    exit 1
  fi
  if ! compgen -G "$tmp/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null; then
    rm -rf "$tmp"
    die "mvn succeeded but kafka_2.13-$KAFKA_VERSION.jar is missing; see $mvn_log"
  fi
  rm -rf "$LIBS_DIR" "$LIBS_MARKER"
  mv "$tmp" "$LIBS_DIR"
  pom_checksum >"$LIBS_MARKER"
  log "resolved $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars in $((SECONDS - start))s"
}

# The java command line for a Kafka command-line class, with the cached jars
# and warnings-only logging, in the array TOOL_CMD.
tool_cmd() {
  TOOL_CMD=("$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$TOOLS_LOG4J"
    -cp "$LIBS_DIR/*" "$@")
}

kafka_tool() {
  local TOOL_CMD
  tool_cmd "$@"
  "${TOOL_CMD[@]}"
}

# Succeeds when the cluster at $1 answers a metadata (ApiVersions) request
# within $2 seconds.
probe_cluster() {
  local bootstrap="$1" timeout_s="${2:-20}" config="$KAFKA_HOME/probe.properties"
  cat >"$config.$$" <<'EOF'
# Client settings for scripts/kafka.sh's readiness probe: give up quickly.
request.timeout.ms=5000
default.api.timeout.ms=8000
socket.connection.setup.timeout.ms=2000
socket.connection.setup.timeout.max.ms=2000
reconnect.backoff.max.ms=1000
EOF
  mv -f "$config.$$" "$config"
  local TOOL_CMD
  tool_cmd org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "$bootstrap" --command-config "$config"
  timeout --kill-after=5 "$timeout_s" "${TOOL_CMD[@]}" </dev/null >/dev/null 2>&1
}

# ---------------------------------------------------------------------------
# Nodes. Node n of a (future) multi-broker mode would get its own dir and
# ports; the single node keeps its files directly in the state dir.
# ---------------------------------------------------------------------------

node_ids() { seq 1 "$BROKERS"; }

node_dir() {
  if [[ $BROKERS -eq 1 ]]; then
    printf '%s\n' "$STATE_DIR"
  else
    printf '%s\n' "$STATE_DIR/node-$1"
  fi
}
node_broker_port() { printf '%s\n' $((BASE_BROKER_PORT + 2 * ($1 - 1))); }
node_controller_port() { printf '%s\n' $((BASE_CONTROLLER_PORT + 2 * ($1 - 1))); }
node_config() { printf '%s\n' "$(node_dir "$1")/server.properties"; }
node_data_dir() { printf '%s\n' "$(node_dir "$1")/data"; }
node_log() { printf '%s\n' "$(node_dir "$1")/broker.log"; }
node_pid_file() { printf '%s\n' "$(node_dir "$1")/broker.pid"; }

bootstrap_servers() {
  local n out=""
  for n in $(node_ids); do
    out="${out:+$out,}$HOST:$(node_broker_port "$n")"
  done
  printf '%s\n' "$out"
}

quorum_bootstrap() {
  local n out=""
  for n in $(node_ids); do
    out="${out:+$out,}$HOST:$(node_controller_port "$n")"
  done
  printf '%s\n' "$out"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Pid of node n's broker if it is alive (and really is that broker, not a
# recycled pid), else fails.
node_pid() {
  local pid_file pid
  pid_file="$(node_pid_file "$1")"
  [[ -f $pid_file ]] || return 1
  pid="$(cat "$pid_file" 2>/dev/null || true)"
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ $cmdline == *" $(node_config "$1")"* ]] || return 1
  printf '%s\n' "$pid"
}

# Fails if something else already listens on one of node n's ports.
check_node_ports_free() {
  local port
  for port in "$(node_broker_port "$1")" "$(node_controller_port "$1")"; do
    if port_open "$port"; then
      die "port $HOST:$port is already in use by another process (not a broker started here).
  Stop it, or set KAFKA_BOOTSTRAP_SERVERS to use that cluster instead."
    fi
  done
}

write_node_config() {
  local n="$1" config tmp
  config="$(node_config "$n")"
  mkdir -p "$(node_dir "$n")" "$(node_data_dir "$n")"
  tmp="$config.tmp"
  sed -e "s|@NODE_ID@|$n|g" \
    -e "s|@HOST@|$HOST|g" \
    -e "s|@BROKER_PORT@|$(node_broker_port "$n")|g" \
    -e "s|@CONTROLLER_PORT@|$(node_controller_port "$n")|g" \
    -e "s|@QUORUM_BOOTSTRAP@|$(quorum_bootstrap)|g" \
    -e "s|@LOG_DIRS@|$(node_data_dir "$n")|g" \
    "$SERVER_TEMPLATE" >"$tmp"
  mv "$tmp" "$config"
}

# Formats node n's log dir unless it already is. A single node forms its
# own dynamic quorum (--standalone).
format_node() {
  local n="$1" cluster_id="$2" data
  data="$(node_data_dir "$n")"
  if [[ -f $data/meta.properties ]]; then
    log "node $n: reusing data in $data (cluster id $(sed -n 's/^cluster.id=//p' "$data/meta.properties"))"
    return 0
  fi
  log "node $n: formatting $data (cluster id $cluster_id)"
  local out
  if ! out="$(kafka_tool kafka.tools.StorageTool format --standalone \
    --cluster-id "$cluster_id" --config "$(node_config "$n")" </dev/null 2>&1)"; then
    err "StorageTool format failed:"
    printf '%s\n' "$out" | sed 's/^/  | /' >&2
    exit 1
  fi
}

start_node() {
  local n="$1" config node_log_file pid_file
  config="$(node_config "$n")"
  node_log_file="$(node_log "$n")"
  pid_file="$(node_pid_file "$n")"
  # shellcheck disable=SC2206 # word splitting of the heap options is wanted
  local heap=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g})
  {
    echo "===== $(date -u +%Y-%m-%dT%H:%M:%SZ) kafka.sh: starting node $n (Kafka $KAFKA_VERSION) ====="
  } >>"$node_log_file"
  rm -f "$pid_file"
  # setsid: own session, so the broker survives the caller's terminal and
  # is not hit by its Ctrl-C. The inner shell records its own pid and then
  # becomes java, so the pid file holds the JVM's pid.
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  PID_FILE="$pid_file" nohup setsid bash -c 'echo $$ >"$PID_FILE"; exec "$@"' kafka-node-"$n" \
    "$JAVA" "${heap[@]}" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$BROKER_LOG4J" \
    -cp "$LIBS_DIR/*" kafka.Kafka "$config" \
    </dev/null >>"$node_log_file" 2>&1 &
  local tries=50
  while [[ ! -s $pid_file ]] && ((tries-- > 0)); do sleep 0.1; done
  [[ -s $pid_file ]] || die "node $n did not start; see $node_log_file"
  log "node $n: started, pid $(cat "$pid_file"), log $node_log_file"
}

# Prints the end of a node's log, from the latest start marker on.
print_log_tail() {
  local f="$1" lines="${2:-60}" from
  [[ -f $f ]] || return 0
  from="$(grep -n '^===== .* kafka.sh: starting' "$f" | tail -n1 | cut -d: -f1 || true)"
  err "end of $f (this start, at most $lines lines):"
  tail -n +"${from:-1}" "$f" | tail -n "$lines" | sed 's/^/  | /' >&2
}

# Waits until every node's process is alive and the cluster answers a
# metadata request. The listener port is polled cheaply first; the JVM-based
# probe runs only once it accepts connections.
wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT)) start=$SECONDS n last_dot=$SECONDS
  printf 'kafka.sh: waiting for %s to answer (up to %ss) ' "$(bootstrap_servers)" "$READY_TIMEOUT"
  while ((SECONDS < deadline)); do
    for n in $(node_ids); do
      if ! node_pid "$n" >/dev/null; then
        printf '\n'
        err "node $n exited during start-up"
        print_log_tail "$(node_log "$n")"
        rm -f "$(node_pid_file "$n")"
        exit 1
      fi
    done
    if port_open "$BASE_BROKER_PORT"; then
      if probe_cluster "$(bootstrap_servers)" 15; then
        printf '\n'
        log "ready after $((SECONDS - start))s: bootstrap servers $(bootstrap_servers)"
        return 0
      fi
      printf '.'
      last_dot=$SECONDS
      sleep 0.5
    else
      if ((SECONDS > last_dot)); then
        printf '.'
        last_dot=$SECONDS
      fi
      sleep 0.2
    fi
  done
  printf '\n'
  err "broker did not answer within ${READY_TIMEOUT}s"
  for n in $(node_ids); do print_log_tail "$(node_log "$n")"; done
  exit 1
}

stop_node() {
  local n="$1" pid pid_file waited=0
  pid_file="$(node_pid_file "$n")"
  if ! pid="$(node_pid "$n")"; then
    rm -f "$pid_file"
    log "node $n: not running"
    return 0
  fi
  log "node $n: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && ((waited < STOP_TIMEOUT * 10)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "node $n: still running after ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$pid_file"
  log "node $n: stopped after $((waited / 10)).$((waited % 10))s"
}

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

cmd_up() {
  local fresh=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --fresh) fresh=1 ;;
      --timeout)
        [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || die "--timeout needs a number of seconds"
        READY_TIMEOUT="$2"
        shift
        ;;
      -h | --help) usage; exit 0 ;;
      *) die "up: unknown option '$1' (see --help)" ;;
    esac
    shift
  done

  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    ensure_java
    ensure_libs
    log "KAFKA_BOOTSTRAP_SERVERS is set: using the cluster at $KAFKA_BOOTSTRAP_SERVERS, starting nothing"
    if probe_cluster "$KAFKA_BOOTSTRAP_SERVERS" 30; then
      log "cluster at $KAFKA_BOOTSTRAP_SERVERS answers"
      return 0
    fi
    die "cluster at $KAFKA_BOOTSTRAP_SERVERS does not answer a metadata request"
  fi

  local n running=1
  for n in $(node_ids); do
    node_pid "$n" >/dev/null || running=0
  done
  if [[ $running -eq 1 && $fresh -eq 0 ]]; then
    ensure_java
    ensure_libs
    if port_open "$BASE_BROKER_PORT" && probe_cluster "$(bootstrap_servers)" 15; then
      log "already running (pid $(node_pid 1)): bootstrap servers $(bootstrap_servers)"
      return 0
    fi
    log "broker process is alive but not answering yet"
    wait_ready
    return 0
  fi

  # Nodes left half-up (or all of them, for --fresh) are stopped first.
  for n in $(node_ids); do
    if node_pid "$n" >/dev/null; then stop_node "$n"; fi
    rm -f "$(node_pid_file "$n")"
  done
  if [[ $fresh -eq 1 && -d $STATE_DIR ]]; then
    log "--fresh: deleting data in $STATE_DIR"
    for n in $(node_ids); do rm -rf "$(node_data_dir "$n")"; done
  fi

  for n in $(node_ids); do check_node_ports_free "$n"; done
  ensure_java
  ensure_libs
  mkdir -p "$STATE_DIR"
  local cluster_id=""
  for n in $(node_ids); do
    write_node_config "$n"
    if [[ ! -f "$(node_data_dir "$n")/meta.properties" && -z $cluster_id ]]; then
      cluster_id="$(kafka_tool kafka.tools.StorageTool random-uuid </dev/null 2>/dev/null | tail -n1)"
      [[ $cluster_id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "StorageTool random-uuid printed '$cluster_id'"
    fi
    format_node "$n" "$cluster_id"
  done
  for n in $(node_ids); do start_node "$n"; done
  wait_ready
}

cmd_down() {
  local purge=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --purge) purge=1 ;;
      -h | --help) usage; exit 0 ;;
      *) die "down: unknown option '$1' (see --help)" ;;
    esac
    shift
  done
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    log "KAFKA_BOOTSTRAP_SERVERS is set ($KAFKA_BOOTSTRAP_SERVERS): nothing was started here, nothing to stop"
    return 0
  fi
  local n
  for n in $(node_ids); do stop_node "$n"; done
  if [[ $purge -eq 1 ]]; then
    if [[ -d $STATE_DIR ]]; then
      rm -rf "$STATE_DIR"
      log "purged $STATE_DIR"
    else
      log "nothing to purge at $STATE_DIR"
    fi
  fi
}

cmd_status() {
  [[ $# -eq 0 ]] || die "status takes no options"
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    ensure_java
    ensure_libs
    if probe_cluster "$KAFKA_BOOTSTRAP_SERVERS" 30; then
      log "running (external, KAFKA_BOOTSTRAP_SERVERS): bootstrap servers $KAFKA_BOOTSTRAP_SERVERS"
      exit 0
    fi
    log "not running: external cluster at $KAFKA_BOOTSTRAP_SERVERS does not answer"
    exit 3
  fi
  local n pid all=0
  for n in $(node_ids); do
    if pid="$(node_pid "$n")"; then
      if port_open "$(node_broker_port "$n")"; then
        log "node $n: running, pid $pid, listening on $HOST:$(node_broker_port "$n")"
      else
        log "node $n: process alive (pid $pid) but $HOST:$(node_broker_port "$n") not open yet"
        all=1
      fi
    else
      log "node $n: not running"
      all=1
    fi
  done
  if [[ $all -eq 0 ]]; then
    log "running: bootstrap servers $(bootstrap_servers) (state in $STATE_DIR)"
    exit 0
  fi
  log "not running"
  exit 3
}

cmd_logs() {
  local follow=() lines=100
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -f | --follow) follow=(-F) ;;
      -n | --lines)
        [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || die "-n needs a number of lines"
        lines="$2"
        shift
        ;;
      -h | --help) usage; exit 0 ;;
      *) die "logs: unknown option '$1' (see --help)" ;;
    esac
    shift
  done
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    log "KAFKA_BOOTSTRAP_SERVERS is set: the cluster's logs are not kept here"
    return 0
  fi
  local f
  f="$(node_log 1)"
  [[ -f $f ]] || die "no broker log at $f (has 'up' run?)"
  exec tail -n "$lines" "${follow[@]}" "$f"
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    logs) cmd_logs "$@" ;;
    -h | --help | help) usage ;;
    "")
      usage >&2
      exit 2
      ;;
    *)
      err "unknown command '$cmd'"
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
