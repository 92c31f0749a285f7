# shellcheck shell=bash
# Sourced by scripts/kafka.sh: waiting until the local nodes answer, and
# their logs when they do not.

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

# Succeeds when node n is a registered broker that answers requests.
node_registered() {
  registered_brokers "$HOST:$(node_broker_port "$1")" 15 | grep -qx "$1"
}

# poll_ready "NODES" PORT READY_COMMAND...: polls until READY_COMMAND
# succeeds, printing a dot now and then; fails after READY_TIMEOUT seconds.
# The port is polled cheaply first; the JVM-based READY_COMMAND runs only
# once it accepts connections. Exits when a node's process is gone.
poll_ready() {
  local nodes="$1" port="$2" deadline=$((SECONDS + READY_TIMEOUT)) last_dot=$SECONDS n
  shift 2
  while ((SECONDS < deadline)); do
    for n in $nodes; do
      if ! node_pid "$n" >/dev/null; then
        printf '\n'
        err "node $n exited during start-up"
        print_log_tail "$(node_log "$n")"
        rm -f "$(node_pid_file "$n")"
        exit 1
      fi
    done
    if port_open "$port"; then
      if "$@"; then
        printf '\n'
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
  return 1
}

# Waits until every node's process is alive and the cluster answers (see
# cluster_answers).
wait_ready() {
  local start=$SECONDS what n
  what="$(bootstrap_servers)"
  [[ $BROKERS -eq 1 ]] || what="all $BROKERS brokers at $what"
  printf 'kafka.sh: waiting for %s to answer (up to %ss) ' "$what" "$READY_TIMEOUT"
  if poll_ready "$(node_ids)" "$BASE_BROKER_PORT" cluster_answers; then
    log "ready after $((SECONDS - start))s: bootstrap servers $(bootstrap_servers)"
    return 0
  fi
  err "broker did not answer within ${READY_TIMEOUT}s"
  for n in $(node_ids); do print_log_tail "$(node_log "$n")"; done
  exit 1
}

# Waits until node n's process is alive, its broker port accepts
# connections and it is a registered broker that answers requests.
wait_node_ready() {
  local n="$1" start=$SECONDS port
  port="$(node_broker_port "$n")"
  printf 'kafka.sh: waiting for node %s (%s) to answer and register (up to %ss) ' \
    "$n" "$HOST:$port" "$READY_TIMEOUT"
  if poll_ready "$n" "$port" node_registered "$n"; then
    log "node $n: ready after $((SECONDS - start))s (pid $(node_pid "$n"), $HOST:$port)"
    return 0
  fi
  err "node $n did not answer and register within ${READY_TIMEOUT}s (a node needs another running node: the quorum needs 2 of 3 controllers)"
  print_log_tail "$(node_log "$n")"
  exit 1
}
