# shellcheck shell=bash
# Sourced by scripts/kafka.sh: the local nodes. In single-node mode node 1
# keeps its files directly in the mode's dir; in cluster mode node n gets its
# own dir (cluster3/node-n) and ports. Per node: its config, formatting,
# start, stop and kill.

# How many nodes this invocation manages: 1 (a combined broker+controller,
# the default) or CLUSTER_SIZE (--brokers 3 or SHOAL_KAFKA_BROKERS=3; each
# node a combined broker+controller). SECURE is 1 with --secure: the secured
# broker(s) (SASL_SSL, SCRAM, ACLs; lib/secure.sh), with their own ports and
# state under SECURE_DIR, beside the plain ones. The functions below take the
# node id; set_brokers fills in the mode's ports, template, heap and dir.
BROKERS=1
SECURE=0
BASE_BROKER_PORT=$SINGLE_BROKER_PORT
SERVER_TEMPLATE=$SINGLE_TEMPLATE
DEFAULT_HEAP=$SINGLE_HEAP
MODE_DIR=$STATE_DIR

# Switches to the secure (1) or plain (0) nodes; set_brokers then picks
# the mode's ports, template and dir.
set_secure() { SECURE="$1"; }

# Switches this invocation to single-node (1) or cluster (3) mode, plain or
# secure (SECURE).
set_brokers() {
  case "$1" in
    1)
      BROKERS=1
      DEFAULT_HEAP=$SINGLE_HEAP
      if [[ $SECURE -eq 1 ]]; then
        BASE_BROKER_PORT=$SECURE_SINGLE_BROKER_PORT
        SERVER_TEMPLATE=$SECURE_SINGLE_TEMPLATE
        MODE_DIR=$SECURE_DIR
      else
        BASE_BROKER_PORT=$SINGLE_BROKER_PORT
        SERVER_TEMPLATE=$SINGLE_TEMPLATE
        MODE_DIR=$STATE_DIR
      fi
      ;;
    "$CLUSTER_SIZE")
      BROKERS=$CLUSTER_SIZE
      DEFAULT_HEAP=$CLUSTER_HEAP
      if [[ $SECURE -eq 1 ]]; then
        BASE_BROKER_PORT=$SECURE_CLUSTER_BROKER_PORT
        SERVER_TEMPLATE=$SECURE_CLUSTER_TEMPLATE
        MODE_DIR=$SECURE_CLUSTER_DIR
      else
        BASE_BROKER_PORT=$CLUSTER_BROKER_PORT
        SERVER_TEMPLATE=$CLUSTER_TEMPLATE
        MODE_DIR=$CLUSTER_DIR
      fi
      ;;
    *) die "--brokers (or SHOAL_KAFKA_BROKERS) must be 1 or $CLUSTER_SIZE, not '$1'" ;;
  esac
}

node_ids() { seq 1 "$BROKERS"; }

# The dir that holds the mode's state: the state dir, cluster3/, secure/ or
# secure/cluster3/.
nodes_dir() { printf '%s\n' "$MODE_DIR"; }

node_dir() {
  if [[ $BROKERS -eq 1 ]]; then
    printf '%s\n' "$MODE_DIR"
  else
    printf '%s\n' "$MODE_DIR/node-$1"
  fi
}
# Node n listens on the mode's base port + 2(n-1) (broker) and the port
# after it (controller).
node_broker_port() { printf '%s\n' $((BASE_BROKER_PORT + 2 * ($1 - 1))); }
node_controller_port() { printf '%s\n' $((BASE_BROKER_PORT + 2 * ($1 - 1) + 1)); }
node_config() { printf '%s\n' "$(node_dir "$1")/server.properties"; }
node_data_dir() { printf '%s\n' "$(node_dir "$1")/data"; }
node_log() { printf '%s\n' "$(node_dir "$1")/broker.log"; }
node_pid_file() { printf '%s\n' "$(node_dir "$1")/broker.pid"; }

# node_addresses broker|controller|voter: every node's address, comma
# separated: host:port of its broker or controller listener, or the static
# voter id@host:port.
node_addresses() {
  local kind="$1" n address out=""
  for n in $(node_ids); do
    case "$kind" in
      broker) address="$HOST:$(node_broker_port "$n")" ;;
      controller) address="$HOST:$(node_controller_port "$n")" ;;
      voter) address="$n@$HOST:$(node_controller_port "$n")" ;;
    esac
    out="${out:+$out,}$address"
  done
  printf '%s\n' "$out"
}
bootstrap_servers() { node_addresses broker; }

# Prints $1 if it is a node id of this mode, else dies.
check_node_id() {
  if [[ ! $1 =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > BROKERS)); then
    die "node id must be 1..$BROKERS, not '$1'"
  fi
  printf '%s\n' "$1"
}

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

# Sets PID to node n's pid; when it is not running, removes its stale pid
# file, says so and fails.
node_running() {
  PID="$(node_pid "$1")" && return 0
  rm -f "$(node_pid_file "$1")"
  log "node $1: not running"
  return 1
}

# Fails if something else already listens on one of node n's ports.
check_node_ports_free() {
  local port
  for port in "$(node_broker_port "$1")" "$(node_controller_port "$1")"; do
    if port_open "$port"; then
      if [[ $BROKERS -gt 1 ]]; then
        die "port $HOST:$port (node $1) is already in use by another process (not a node started from $MODE_DIR).
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
    -e "s|@QUORUM_BOOTSTRAP@|$(node_addresses controller)|g" \
    -e "s|@QUORUM_VOTERS@|$(node_addresses voter)|g" \
    -e "s|@LOG_DIRS@|$(node_data_dir "$n")|g" \
    "$SERVER_TEMPLATE" >"$tmp"
  # The secure config holds passwords: readable by its owner only.
  [[ $SECURE -eq 0 ]] || fill_secure_config "$tmp"
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
  # Secure mode: the SCRAM users go into the bootstrap metadata
  # (--add-scram, one per user), and the output is shown without passwords.
  local out scram_opts=()
  [[ $SECURE -eq 0 ]] || mapfile -t scram_opts < <(scram_format_args)
  if ! out="$(kafka_tool kafka.tools.StorageTool format "${quorum_opts[@]}" "${scram_opts[@]}" \
    --cluster-id "$cluster_id" --config "$(node_config "$n")" </dev/null 2>&1)"; then
    err "StorageTool format failed:"
    printf '%s\n' "$out" | sed -e 's/password=[^],]*/password=***/g' -e 's/^/  | /' >&2
    exit 1
  fi
  [[ $SECURE -eq 0 ]] || record_scram_users "$n"
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

# Stops the given nodes together: SIGTERM to all (each broker then shuts
# down in a controlled way while the quorum is still there), SIGKILL to
# those still running after STOP_TIMEOUT.
stop_nodes() {
  local n PID pid ids=() pids=() waited=0 alive label
  for n in "$@"; do
    if node_running "$n"; then
      ids+=("$n")
      pids+=("$PID")
      log "node $n: stopping pid $PID"
    fi
  done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  label="node ${ids[*]}"
  [[ ${#ids[@]} -eq 1 ]] || label="node(s) ${ids[*]}"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  while :; do
    alive=()
    for pid in "${pids[@]}"; do
      if pid_alive "$pid"; then alive+=("$pid"); fi
    done
    [[ ${#alive[@]} -gt 0 ]] || break
    if ((waited >= STOP_TIMEOUT * 10)); then
      log "$label: pid(s) ${alive[*]} still running after ${STOP_TIMEOUT}s; sending SIGKILL"
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
  log "$label: stopped after $((waited / 10)).$((waited % 10))s"
}

# SIGKILLs node n (a crash: no controlled shutdown, no log flush) and waits
# until the process is gone.
kill_node() {
  local n="$1" PID tries=100
  node_running "$n" || return 0
  kill -KILL "$PID" 2>/dev/null || true
  while pid_alive "$PID" && ((tries-- > 0)); do sleep 0.1; done
  pid_alive "$PID" && die "node $n: pid $PID still alive 10s after SIGKILL"
  rm -f "$(node_pid_file "$n")"
  log "node $n: killed pid $PID (SIGKILL)"
}
