# shellcheck shell=bash
# Sourced by scripts/kafka.sh: what only the three-node cluster has, the
# per-node fault injection (stop-node, kill-node, start-node, pid-node).

# Succeeds if a node of the three-node cluster is running.
cluster_running() (
  set_brokers "$CLUSTER_SIZE"
  for n in $(node_ids); do
    if node_pid "$n" >/dev/null; then exit 0; fi
  done
  exit 1
)

# Starts node n again with its existing data (unless it runs) and waits
# until it answers and is registered.
restart_node() {
  local n="$1"
  if node_pid "$n" >/dev/null; then
    log "node $n: already running, pid $(node_pid "$n")"
    ensure_runtime
  else
    [[ -f "$(node_data_dir "$n")/meta.properties" ]] ||
      die "node $n has no formatted data in $(node_data_dir "$n"); run 'scripts/kafka.sh --brokers $BROKERS up' first"
    rm -f "$(node_pid_file "$n")"
    check_node_ports_free "$n"
    ensure_runtime
    write_node_config "$n"
    start_node "$n"
  fi
  wait_node_ready "$n"
}

# node_command COMMAND N: stop-node, kill-node, start-node or pid-node.
node_command() {
  local cmd="$1" n="$2" pid
  # Secure mode: the readiness probe connects as admin over SASL_SSL.
  [[ $cmd != start-node || $SECURE -eq 0 ]] || secure_setup
  case "$cmd" in
    stop-node) stop_nodes "$n" ;;
    kill-node) kill_node "$n" ;;
    start-node) restart_node "$n" ;;
    pid-node)
      if pid="$(node_pid "$n")"; then
        printf '%s\n' "$pid"
      else
        err "node $n: not running"
        exit 3
      fi
      ;;
  esac
}
