#!/usr/bin/env bash
# Runs a local Apache Kafka 4.x broker (KRaft, no ZooKeeper, no Docker) for
# Shoal's development and CI. See `scripts/kafka.sh --help`.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly KAFKA_SUPPORT_DIR="$SCRIPT_DIR/kafka"
readonly KAFKA_POM="$KAFKA_SUPPORT_DIR/pom.xml"
readonly SINGLE_TEMPLATE="$KAFKA_SUPPORT_DIR/server.properties.template"
readonly CLUSTER_TEMPLATE="$KAFKA_SUPPORT_DIR/server-cluster.properties.template"
readonly BROKER_LOG4J="$KAFKA_SUPPORT_DIR/log4j2.properties"
readonly TOOLS_LOG4J="$KAFKA_SUPPORT_DIR/tools-log4j2.properties"

readonly MIN_JAVA=17
readonly HOST=127.0.0.1
# Single-node mode (the default): node 1 on 9092 (broker) and 9093
# (controller). SHOAL_KAFKA_PORT moves it (controller on the next port), so
# a test can run a broker of its own, in its own SHOAL_KAFKA_DIR, and stop it
# without touching the one other tests share.
SINGLE_BROKER_PORT="${SHOAL_KAFKA_PORT:-9092}"
if [[ ! $SINGLE_BROKER_PORT =~ ^[0-9]+$ ]] || ((SINGLE_BROKER_PORT < 1024 || SINGLE_BROKER_PORT > 65534)); then
  echo "kafka.sh: SHOAL_KAFKA_PORT must be a port number from 1024 to 65534, got '$SINGLE_BROKER_PORT'" >&2
  exit 2
fi
readonly SINGLE_BROKER_PORT
readonly SINGLE_CONTROLLER_PORT=$((SINGLE_BROKER_PORT + 1))
readonly SINGLE_HEAP="-Xms256m -Xmx1g"
# Cluster mode (--brokers 3): node n listens on 19092 + 2(n-1) (broker) and
# 19093 + 2(n-1) (controller), i.e. 19092/19093, 19094/19095, 19096/19097,
# clear of the single node's ports so both modes can run side by side.
readonly CLUSTER_SIZE=3
readonly CLUSTER_BROKER_PORT=19092
readonly CLUSTER_CONTROLLER_PORT=19093
readonly CLUSTER_HEAP="-Xms256m -Xmx768m"

readonly STATE_DIR="${SHOAL_KAFKA_DIR:-$REPO_ROOT/.kafka}"
readonly CLUSTER_DIR="$STATE_DIR/cluster$CLUSTER_SIZE"
readonly CACHE_ROOT="${SHOAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}"

# How many nodes this invocation manages: 1 (a combined broker+controller,
# the default) or CLUSTER_SIZE (--brokers 3 or SHOAL_KAFKA_BROKERS=3; each
# node a combined broker+controller). The per-node functions below take the
# node id; set_brokers fills in the mode's ports, template and heap.
BROKERS=1
BASE_BROKER_PORT=$SINGLE_BROKER_PORT
BASE_CONTROLLER_PORT=$SINGLE_CONTROLLER_PORT
SERVER_TEMPLATE=$SINGLE_TEMPLATE
DEFAULT_HEAP=$SINGLE_HEAP

READY_TIMEOUT="${SHOAL_KAFKA_READY_TIMEOUT:-90}"
STOP_TIMEOUT="${SHOAL_KAFKA_STOP_TIMEOUT:-30}"
JAVA=""
APT_UPDATED=0

usage() {
  cat <<EOF
Usage: scripts/kafka.sh [--brokers 1|3] COMMAND [OPTIONS]

Runs a single-node Apache Kafka broker in KRaft mode (combined broker and
controller, node.id=1) for Shoal, without Docker:
  bootstrap   $HOST:$SINGLE_BROKER_PORT  (PLAINTEXT)
  controller  $HOST:$SINGLE_CONTROLLER_PORT  (CONTROLLER listener)
With --brokers 3 (or SHOAL_KAFKA_BROKERS=3) it runs a three-node cluster
instead; see "Three-node cluster mode" below.

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

Three-node cluster mode (--brokers 3, or SHOAL_KAFKA_BROKERS=3):
  Three Kafka nodes on loopback, node ids 1..3, each a combined broker and
  controller (process.roles=broker,controller); the three controllers form
  one static KRaft quorum of 3 voters, so the cluster keeps working (and
  keeps acks=all writes going) with any one node down.
    node  broker (PLAINTEXT)  controller
    1     $HOST:$((CLUSTER_BROKER_PORT + 0))     $HOST:$((CLUSTER_CONTROLLER_PORT + 0))
    2     $HOST:$((CLUSTER_BROKER_PORT + 2))     $HOST:$((CLUSTER_CONTROLLER_PORT + 2))
    3     $HOST:$((CLUSTER_BROKER_PORT + 4))     $HOST:$((CLUSTER_CONTROLLER_PORT + 4))
  bootstrap servers: $(BROKERS=$CLUSTER_SIZE BASE_BROKER_PORT=$CLUSTER_BROKER_PORT bootstrap_servers)
  Cluster defaults: default.replication.factor=3, min.insync.replicas=2,
  internal topics (offsets, transactions, share state) with 3 replicas and
  min ISR 2, unclean.leader.election.enable=false,
  auto.create.topics.enable=false, group.initial.rebalance.delay.ms=0.
  Heap per node: -Xms256m -Xmx768m unless KAFKA_HEAP_OPTS is set.
  State: \${SHOAL_KAFKA_DIR:-<repo>/.kafka}/cluster3/node-<id>/ with
  server.properties, data/, broker.pid and broker.log per node
  (here: $CLUSTER_DIR).
  up, down, status and logs work on all three nodes:
    up [--fresh] [--timeout SECS]
        Start every node that is not running (formatting empty log dirs
        with the cluster's id) and wait until all 3 brokers are registered
        and answer. Running nodes are left alone; --fresh stops all, wipes
        their data and formats a new cluster.
    down [--purge]
        Stop all nodes (SIGTERM to all at once, SIGKILL after ${STOP_TIMEOUT}s).
        --purge also deletes the cluster3 state dir (not the single node's).
    status
        One line per node (running with pid, or not) and the bootstrap
        servers; exit 0 if all nodes run, 4 if some, 3 if none.
    logs [--node N] [-f] [-n LINES]
        The end of every node's log (or of node N's only); -f follows.
  Per-node fault injection (node N = 1, 2 or 3):
    stop-node N      SIGTERM node N (a clean, controlled shutdown) and wait
                     until it has exited (SIGKILL after ${STOP_TIMEOUT}s). The
                     last running node cannot finish a controlled shutdown
                     (no quorum) and always waits for the SIGKILL.
    kill-node N      SIGKILL node N (a crash) and wait until it is gone.
    start-node N [--timeout SECS]
                     Start node N again with its existing data and wait until
                     its port answers and it is registered in the cluster
                     (needs 2 live controllers, i.e. another running node).
                     Does nothing but wait if it is already running.
    pid-node N       Print node N's pid; exit 3 if it is not running.
  A killed node is fenced, and dropped from the ISRs of its partitions, once
  its broker session times out (broker.session.timeout.ms, 9s by default);
  started again before that, it registers only once the old session ends.
  KAFKA_BOOTSTRAP_SERVERS is ignored in this mode.

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
                            request, 'down' and 'logs' do nothing
                            (single-node mode only).
  SHOAL_KAFKA_BROKERS       1 (default) or 3: as --brokers.
  SHOAL_KAFKA_DIR           state dir (see above).
  SHOAL_KAFKA_PORT          single node's broker port (default 9092; the
                            controller takes the next one). With its own
                            SHOAL_KAFKA_DIR, a second broker beside the first.
  SHOAL_CACHE_DIR           jar cache root (see above).
  SHOAL_KAFKA_READY_TIMEOUT seconds 'up' waits for readiness (default 90).
  SHOAL_KAFKA_STOP_TIMEOUT  seconds 'down' waits before SIGKILL (default 30).
  KAFKA_HEAP_OPTS           heap per broker (default: -Xms256m -Xmx1g, or
                            -Xms256m -Xmx768m per node with --brokers 3).
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
  probe_output "$@" >/dev/null
}

# As probe_cluster, printing BrokerApiVersionsCommand's output: one entry
# per broker in the cluster's metadata, "host:port (id: N rack: ...) -> ("
# followed by its API versions, or "-> ERROR" when it did not answer.
probe_output() {
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
  timeout --kill-after=5 "$timeout_s" "${TOOL_CMD[@]}" </dev/null 2>/dev/null
}

# Node ids, one a line, of the brokers that the cluster at $1 lists in its
# metadata (registered and unfenced) and that answered an ApiVersions
# request, within $2 seconds.
registered_brokers() {
  local out
  out="$(probe_output "$1" "${2:-20}")" || true
  printf '%s\n' "$out" | grep -v 'isFenced: true' |
    sed -n 's/^[^ ]* (id: \([0-9][0-9]*\) rack: .*) -> ($/\1/p' | sort -un
}

# ---------------------------------------------------------------------------
# Nodes. In cluster mode node n gets its own dir (cluster3/node-n) and
# ports; the single node keeps its files directly in the state dir.
# ---------------------------------------------------------------------------

# Switches this invocation to single-node (1) or cluster (3) mode.
set_brokers() {
  case "$1" in
    1)
      BROKERS=1
      BASE_BROKER_PORT=$SINGLE_BROKER_PORT
      BASE_CONTROLLER_PORT=$SINGLE_CONTROLLER_PORT
      SERVER_TEMPLATE=$SINGLE_TEMPLATE
      DEFAULT_HEAP=$SINGLE_HEAP
      ;;
    "$CLUSTER_SIZE")
      BROKERS=$CLUSTER_SIZE
      BASE_BROKER_PORT=$CLUSTER_BROKER_PORT
      BASE_CONTROLLER_PORT=$CLUSTER_CONTROLLER_PORT
      SERVER_TEMPLATE=$CLUSTER_TEMPLATE
      DEFAULT_HEAP=$CLUSTER_HEAP
      ;;
    *) die "--brokers (or SHOAL_KAFKA_BROKERS) must be 1 or $CLUSTER_SIZE, not '$1'" ;;
  esac
}

node_ids() { seq 1 "$BROKERS"; }

node_dir() {
  if [[ $BROKERS -eq 1 ]]; then
    printf '%s\n' "$STATE_DIR"
  else
    printf '%s\n' "$CLUSTER_DIR/node-$1"
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

# Static voter set for cluster mode: 1@host:port,2@host:port,...
quorum_voters() {
  local n out=""
  for n in $(node_ids); do
    out="${out:+$out,}$n@$HOST:$(node_controller_port "$n")"
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
      if [[ $BROKERS -gt 1 ]]; then
        die "port $HOST:$port (node $1) is already in use by another process (not a node started from $CLUSTER_DIR).
  Stop it, or run the cluster with another SHOAL_KAFKA_DIR's nodes stopped first."
      fi
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
    -e "s|@QUORUM_VOTERS@|$(quorum_voters)|g" \
    -e "s|@LOG_DIRS@|$(node_data_dir "$n")|g" \
    "$SERVER_TEMPLATE" >"$tmp"
  mv "$tmp" "$config"
}

# Formats node n's log dir unless it already is. A single node forms its
# own dynamic quorum (--standalone); cluster nodes list the static voter set
# (controller.quorum.voters) in their config, and StorageTool wants no quorum
# option then.
format_node() {
  local n="$1" cluster_id="$2" data quorum_opts=(--standalone)
  [[ $BROKERS -eq 1 ]] || quorum_opts=()
  data="$(node_data_dir "$n")"
  if [[ -f $data/meta.properties ]]; then
    log "node $n: reusing data in $data (cluster id $(sed -n 's/^cluster.id=//p' "$data/meta.properties"))"
    return 0
  fi
  log "node $n: formatting $data (cluster id $cluster_id)"
  local out
  if ! out="$(kafka_tool kafka.tools.StorageTool format "${quorum_opts[@]}" \
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
  local heap=(${KAFKA_HEAP_OPTS:-$DEFAULT_HEAP})
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

# Succeeds when the local cluster is ready: for the single node, when it
# answers a metadata request; in cluster mode, when all nodes are registered
# (unfenced) brokers that answer.
cluster_answers() {
  if [[ $BROKERS -eq 1 ]]; then
    probe_cluster "$(bootstrap_servers)" 15
  else
    [[ "$(registered_brokers "$(bootstrap_servers)" 15 | wc -l)" -eq $BROKERS ]]
  fi
}

# Waits until every node's process is alive and the cluster answers a
# metadata request. The listener port is polled cheaply first; the JVM-based
# probe runs only once it accepts connections.
wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT)) start=$SECONDS n last_dot=$SECONDS
  local what
  what="$(bootstrap_servers)"
  [[ $BROKERS -eq 1 ]] || what="all $BROKERS brokers at $what"
  printf 'kafka.sh: waiting for %s to answer (up to %ss) ' "$what" "$READY_TIMEOUT"
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
      if cluster_answers; then
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
# Cluster mode (--brokers 3)
# ---------------------------------------------------------------------------

# Succeeds while the pid is a live process (a zombie, killed but not yet
# reaped by its parent, counts as gone).
pid_alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ ${stat%% *} != Z ]]
}

# Stops the given nodes together: SIGTERM to all (each broker then shuts
# down in a controlled way while the quorum is still there), SIGKILL to
# those still running after STOP_TIMEOUT.
stop_nodes() {
  local n pid ids=() pids=() waited=0 alive
  for n in "$@"; do
    if pid="$(node_pid "$n")"; then
      ids+=("$n")
      pids+=("$pid")
      log "node $n: stopping pid $pid"
    else
      rm -f "$(node_pid_file "$n")"
      log "node $n: not running"
    fi
  done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  while :; do
    alive=()
    for pid in "${pids[@]}"; do
      if pid_alive "$pid"; then alive+=("$pid"); fi
    done
    [[ ${#alive[@]} -gt 0 ]] || break
    if ((waited >= STOP_TIMEOUT * 10)); then
      log "pid(s) ${alive[*]} still running after ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      for pid in "${alive[@]}"; do
        while pid_alive "$pid"; do sleep 0.1; done
      done
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  for n in "${ids[@]}"; do rm -f "$(node_pid_file "$n")"; done
  log "node(s) ${ids[*]}: stopped after $((waited / 10)).$((waited % 10))s"
}

# SIGKILLs node n (a crash: no controlled shutdown, no log flush) and waits
# until the process is gone.
kill_node() {
  local n="$1" pid tries=100
  if ! pid="$(node_pid "$n")"; then
    rm -f "$(node_pid_file "$n")"
    log "node $n: not running"
    return 0
  fi
  kill -KILL "$pid" 2>/dev/null || true
  while pid_alive "$pid" && ((tries-- > 0)); do sleep 0.1; done
  pid_alive "$pid" && die "node $n: pid $pid still alive 10s after SIGKILL"
  rm -f "$(node_pid_file "$n")"
  log "node $n: killed pid $pid (SIGKILL)"
}

# Prints the cluster id that the formatted nodes share (nothing if none is
# formatted); dies if they disagree.
existing_cluster_id() {
  local n meta id found=""
  for n in $(node_ids); do
    meta="$(node_data_dir "$n")/meta.properties"
    [[ -f $meta ]] || continue
    id="$(sed -n 's/^cluster.id=//p' "$meta")"
    [[ " $found " == *" $id "* ]] || found="${found:+$found }$id"
  done
  if [[ $found == *" "* ]]; then
    die "the nodes in $CLUSTER_DIR were formatted with different cluster ids ($found).
  Run 'scripts/kafka.sh --brokers $BROKERS up --fresh' (or 'down --purge') to start over."
  fi
  [[ -z $found ]] || printf '%s\n' "$found"
}

# Waits until node n's process is alive, its broker port accepts
# connections and it is a registered broker that answers requests.
wait_node_ready() {
  local n="$1" deadline=$((SECONDS + READY_TIMEOUT)) start=$SECONDS last_dot=$SECONDS port
  port="$(node_broker_port "$n")"
  printf 'kafka.sh: waiting for node %s (%s) to answer and register (up to %ss) ' \
    "$n" "$HOST:$port" "$READY_TIMEOUT"
  while ((SECONDS < deadline)); do
    if ! node_pid "$n" >/dev/null; then
      printf '\n'
      err "node $n exited during start-up"
      print_log_tail "$(node_log "$n")"
      rm -f "$(node_pid_file "$n")"
      exit 1
    fi
    if port_open "$port"; then
      if registered_brokers "$HOST:$port" 15 | grep -qx "$n"; then
        printf '\n'
        log "node $n: ready after $((SECONDS - start))s (pid $(node_pid "$n"), $HOST:$port)"
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
  err "node $n did not answer and register within ${READY_TIMEOUT}s (a node needs another running node: the quorum needs 2 of 3 controllers)"
  print_log_tail "$(node_log "$n")"
  exit 1
}

cluster_up() {
  local fresh="$1" n running="" stopped=()
  for n in $(node_ids); do
    if node_pid "$n" >/dev/null; then
      running="${running:+$running, }$n: $(node_pid "$n")"
    else
      stopped+=("$n")
    fi
  done
  if [[ ${#stopped[@]} -eq 0 && $fresh -eq 0 ]]; then
    ensure_java
    ensure_libs
    if port_open "$BASE_BROKER_PORT" && cluster_answers; then
      log "already running (pids $running): bootstrap servers $(bootstrap_servers)"
      return 0
    fi
    log "all $BROKERS nodes are alive but not all brokers answer yet"
    wait_ready
    return 0
  fi

  if [[ $fresh -eq 1 ]]; then
    # shellcheck disable=SC2046 # node ids are plain numbers
    stop_nodes $(node_ids)
    log "--fresh: deleting data in $CLUSTER_DIR"
    stopped=()
    for n in $(node_ids); do
      rm -rf "$(node_data_dir "$n")"
      stopped+=("$n")
    done
  elif [[ -n $running ]]; then
    log "already running (node $running); starting node(s) ${stopped[*]}"
  fi

  for n in "${stopped[@]}"; do
    rm -f "$(node_pid_file "$n")"
    check_node_ports_free "$n"
  done
  ensure_java
  ensure_libs
  mkdir -p "$CLUSTER_DIR"
  local cluster_id existing_id
  existing_id="$(existing_cluster_id)"
  cluster_id="$existing_id"
  if [[ -z $cluster_id ]]; then
    cluster_id="$(kafka_tool kafka.tools.StorageTool random-uuid </dev/null 2>/dev/null | tail -n1)"
    [[ $cluster_id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "StorageTool random-uuid printed '$cluster_id'"
  fi
  for n in "${stopped[@]}"; do
    write_node_config "$n"
    if [[ -n $existing_id && ! -f "$(node_data_dir "$n")/meta.properties" ]]; then
      log "node $n: warning: its log dir is empty; it joins cluster $cluster_id without data and catches up from the others"
    fi
    format_node "$n" "$cluster_id"
  done
  for n in "${stopped[@]}"; do start_node "$n"; done
  wait_ready
}

cluster_down() {
  local purge="$1"
  # shellcheck disable=SC2046 # node ids are plain numbers
  stop_nodes $(node_ids)
  if [[ $purge -eq 1 ]]; then
    if [[ -d $CLUSTER_DIR ]]; then
      rm -rf "$CLUSTER_DIR"
      log "purged $CLUSTER_DIR"
    else
      log "nothing to purge at $CLUSTER_DIR"
    fi
  fi
}

cluster_status() {
  local n pid up=0 port
  for n in $(node_ids); do
    port="$(node_broker_port "$n")"
    if pid="$(node_pid "$n")"; then
      if port_open "$port"; then
        log "node $n: running, pid $pid, broker $HOST:$port, controller $HOST:$(node_controller_port "$n")"
        up=$((up + 1))
      else
        log "node $n: process alive (pid $pid) but $HOST:$port not open yet"
      fi
    else
      log "node $n: not running"
    fi
  done
  if ((up == BROKERS)); then
    log "running: bootstrap servers $(bootstrap_servers) (state in $CLUSTER_DIR)"
    exit 0
  elif ((up > 0)); then
    log "degraded: $up of $BROKERS nodes running; bootstrap servers $(bootstrap_servers)"
    exit 4
  fi
  log "not running (bootstrap servers would be $(bootstrap_servers))"
  exit 3
}

cluster_logs() {
  local follow=() lines=100 node=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -f | --follow) follow=(-F) ;;
      -n | --lines)
        [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || die "-n needs a number of lines"
        lines="$2"
        shift
        ;;
      --node)
        [[ $# -ge 2 ]] || die "--node needs a node id"
        node="$(check_node_id "$2")"
        shift
        ;;
      -h | --help) usage; exit 0 ;;
      *) die "logs: unknown option '$1' (see --help)" ;;
    esac
    shift
  done
  local n f files=()
  for n in ${node:-$(node_ids)}; do
    f="$(node_log "$n")"
    [[ -f $f ]] && files+=("$f")
  done
  [[ ${#files[@]} -gt 0 ]] || die "no broker log in $CLUSTER_DIR (has '--brokers $BROKERS up' run?)"
  exec tail -n "$lines" "${follow[@]}" "${files[@]}"
}

# Prints $1 if it is a node id of this cluster, else dies.
check_node_id() {
  if [[ ! $1 =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > BROKERS)); then
    die "node id must be 1..$BROKERS, not '$1'"
  fi
  printf '%s\n' "$1"
}

# The per-node commands: stop-node, kill-node, start-node, pid-node.
cmd_node() {
  local cmd="$1" n="" arg
  shift
  [[ $BROKERS -gt 1 ]] ||
    die "$cmd needs the three-node cluster: scripts/kafka.sh --brokers $CLUSTER_SIZE $cmd N"
  while [[ $# -gt 0 ]]; do
    arg="$1"
    case "$arg" in
      --timeout)
        [[ $cmd == start-node ]] || die "$cmd: unknown option '$arg' (see --help)"
        [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || die "--timeout needs a number of seconds"
        READY_TIMEOUT="$2"
        shift
        ;;
      -h | --help) usage; exit 0 ;;
      -*) die "$cmd: unknown option '$arg' (see --help)" ;;
      *)
        [[ -z $n ]] || die "$cmd takes one node id"
        n="$(check_node_id "$arg")"
        ;;
    esac
    shift
  done
  [[ -n $n ]] || die "usage: scripts/kafka.sh --brokers $BROKERS $cmd N (N = 1..$BROKERS)"
  case "$cmd" in
    stop-node) stop_nodes "$n" ;;
    kill-node) kill_node "$n" ;;
    pid-node)
      local pid
      if pid="$(node_pid "$n")"; then
        printf '%s\n' "$pid"
      else
        err "node $n: not running"
        exit 3
      fi
      ;;
    start-node)
      if node_pid "$n" >/dev/null; then
        log "node $n: already running, pid $(node_pid "$n")"
        ensure_java
        ensure_libs
      else
        [[ -f "$(node_data_dir "$n")/meta.properties" ]] ||
          die "node $n has no formatted data in $(node_data_dir "$n"); run 'scripts/kafka.sh --brokers $BROKERS up' first"
        rm -f "$(node_pid_file "$n")"
        check_node_ports_free "$n"
        ensure_java
        ensure_libs
        write_node_config "$n"
        start_node "$n"
      fi
      wait_node_ready "$n"
      ;;
  esac
}

# Succeeds if a node of the three-node cluster is running.
cluster_running() (
  set_brokers "$CLUSTER_SIZE"
  for n in $(node_ids); do
    if node_pid "$n" >/dev/null; then exit 0; fi
  done
  exit 1
)

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

  if [[ $BROKERS -gt 1 ]]; then
    cluster_up "$fresh"
    return 0
  fi

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
  if [[ $BROKERS -gt 1 ]]; then
    cluster_down "$purge"
    return 0
  fi
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    log "KAFKA_BOOTSTRAP_SERVERS is set ($KAFKA_BOOTSTRAP_SERVERS): nothing was started here, nothing to stop"
    return 0
  fi
  local n
  for n in $(node_ids); do stop_node "$n"; done
  if [[ $purge -eq 1 ]]; then
    if [[ -d $STATE_DIR ]] && cluster_running; then
      # The --brokers 3 cluster keeps its state in a subdirectory; do not
      # pull it from under its running nodes.
      find "$STATE_DIR" -mindepth 1 -maxdepth 1 ! -name "${CLUSTER_DIR##*/}" -exec rm -rf {} +
      log "purged $STATE_DIR except $CLUSTER_DIR (the --brokers $CLUSTER_SIZE cluster is running)"
    elif [[ -d $STATE_DIR ]]; then
      rm -rf "$STATE_DIR"
      log "purged $STATE_DIR"
    else
      log "nothing to purge at $STATE_DIR"
    fi
  fi
}

cmd_status() {
  [[ $# -eq 0 ]] || die "status takes no options"
  [[ $BROKERS -eq 1 ]] || cluster_status
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
  [[ $BROKERS -eq 1 ]] || cluster_logs "$@"
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
  # --brokers N (or --brokers=N) may come anywhere; it overrides
  # SHOAL_KAFKA_BROKERS.
  local brokers="${SHOAL_KAFKA_BROKERS:-1}" args=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --brokers)
        [[ $# -ge 2 ]] || die "--brokers needs a number (1 or $CLUSTER_SIZE)"
        brokers="$2"
        shift
        ;;
      --brokers=*) brokers="${1#--brokers=}" ;;
      *) args+=("$1") ;;
    esac
    shift
  done
  set_brokers "$brokers"
  set -- "${args[@]}"

  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    logs) cmd_logs "$@" ;;
    stop-node | kill-node | start-node | pid-node) cmd_node "$cmd" "$@" ;;
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
