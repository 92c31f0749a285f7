# shellcheck shell=bash
# Sourced by scripts/kafka.sh: the commands up, down, status and logs, for
# the single node and the three-node cluster alike (node.sh's functions take
# the mode from set_brokers), and for an external cluster
# (KAFKA_BOOTSTRAP_SERVERS, plain single-node mode only).

# Succeeds when the commands act on KAFKA_BOOTSTRAP_SERVERS instead of local
# nodes.
external() { [[ $BROKERS -eq 1 && $SECURE -eq 0 && -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; }

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
    die "the nodes in $(nodes_dir) were formatted with different cluster ids ($found).
  Run 'scripts/kafka.sh --brokers $BROKERS up --fresh' (or 'down --purge') to start over."
  fi
  [[ -z $found ]] || printf '%s\n' "$found"
}

# up: starts every node that is not running (all of them, on fresh data,
# when $1 is 1) and waits until the cluster answers.
kafka_up() {
  local fresh="$1" n pid running="" running_ids=() stopped=()
  # Secure mode: the CA, certificates, credentials and client configs first
  # (made on first use; the readiness probe needs the admin's).
  [[ $SECURE -eq 0 ]] || secure_setup
  if external; then
    ensure_runtime
    log "KAFKA_BOOTSTRAP_SERVERS is set: using the cluster at $KAFKA_BOOTSTRAP_SERVERS, starting nothing"
    probe_cluster "$KAFKA_BOOTSTRAP_SERVERS" 30 ||
      die "cluster at $KAFKA_BOOTSTRAP_SERVERS does not answer a metadata request"
    log "cluster at $KAFKA_BOOTSTRAP_SERVERS answers"
    return 0
  fi
  for n in $(node_ids); do
    if pid="$(node_pid "$n")"; then
      running="${running:+$running, }$n: $pid"
      running_ids+=("$n")
    else
      stopped+=("$n")
    fi
  done
  if [[ ${#stopped[@]} -eq 0 && $fresh -eq 0 ]]; then
    ensure_runtime
    if port_open "$BASE_BROKER_PORT" && cluster_answers; then
      if [[ $BROKERS -eq 1 ]]; then
        log "already running (pid ${running#1: }): bootstrap servers $(bootstrap_servers)"
      else
        log "already running (pids $running): bootstrap servers $(bootstrap_servers)"
      fi
      return 0
    fi
    if [[ $BROKERS -eq 1 ]]; then
      log "broker process is alive but not answering yet"
    else
      log "all $BROKERS nodes are alive but not all brokers answer yet"
    fi
    wait_ready
    return 0
  fi

  if [[ $fresh -eq 1 ]]; then
    stop_nodes "${running_ids[@]}"
    [[ ! -d "$(nodes_dir)" ]] || log "--fresh: deleting data in $(nodes_dir)"
    mapfile -t stopped < <(node_ids)
    for n in "${stopped[@]}"; do rm -rf "$(node_data_dir "$n")"; done
  elif [[ -n $running ]]; then
    log "already running (node $running); starting node(s) ${stopped[*]}"
  fi

  for n in "${stopped[@]}"; do
    rm -f "$(node_pid_file "$n")"
    check_node_ports_free "$n"
  done
  ensure_runtime
  mkdir -p "$(nodes_dir)"
  if [[ $SECURE -eq 1 ]]; then
    for n in "${stopped[@]}"; do check_scram_users "$n"; done
  fi
  local cluster_id existing_id
  existing_id="$(existing_cluster_id)"
  cluster_id="$existing_id"
  [[ -n $cluster_id ]] || cluster_id="$(new_cluster_id)"
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

# Deletes DIR, or says there is nothing to delete.
purge_dir() {
  if [[ -d $1 ]]; then
    rm -rf "$1"
    log "purged $1"
  else
    log "nothing to purge at $1"
  fi
}

# down: stops every node; with $1 = 1 also deletes the mode's state.
kafka_down() {
  local purge="$1"
  if external; then
    log "KAFKA_BOOTSTRAP_SERVERS is set ($KAFKA_BOOTSTRAP_SERVERS): nothing was started here, nothing to stop"
    return 0
  fi
  # shellcheck disable=SC2046 # node ids are plain numbers
  stop_nodes $(node_ids)
  [[ $purge -eq 1 ]] || return 0
  local dir keep=() name find_args=()
  dir="$(nodes_dir)"
  if [[ $BROKERS -eq 1 && -d $dir ]]; then
    # The single node's dir holds the --brokers 3 cluster's (cluster3/) and,
    # plain, the secure broker's (secure/); do not pull them from under
    # running nodes. A running secure cluster also keeps the secure dir's
    # CA, certificates, credentials and client configs.
    if cluster_running; then
      keep+=("${CLUSTER_DIR##*/}")
      [[ $SECURE -eq 0 ]] || keep+=("${SECURE_SHARED_FILES[@]}")
    fi
    [[ $SECURE -eq 1 ]] || ! secure_running || keep+=("${SECURE_DIR##*/}")
  fi
  if [[ ${#keep[@]} -gt 0 ]]; then
    for name in "${keep[@]}"; do find_args+=(! -name "$name"); done
    find "$dir" -mindepth 1 -maxdepth 1 "${find_args[@]}" -exec rm -rf {} +
    log "purged $dir except ${keep[*]} (used by nodes still running)"
  else
    purge_dir "$dir"
  fi
}

# status: one line per node and a summary. Exits 0 if every node runs, 4 if
# some of the cluster's do, 3 if none.
kafka_status() {
  if external; then
    ensure_runtime
    if probe_cluster "$KAFKA_BOOTSTRAP_SERVERS" 30; then
      log "running (external, KAFKA_BOOTSTRAP_SERVERS): bootstrap servers $KAFKA_BOOTSTRAP_SERVERS"
      exit 0
    fi
    log "not running: external cluster at $KAFKA_BOOTSTRAP_SERVERS does not answer"
    exit 3
  fi
  local n pid port up=0
  for n in $(node_ids); do
    port="$(node_broker_port "$n")"
    if ! pid="$(node_pid "$n")"; then
      log "node $n: not running"
    elif ! port_open "$port"; then
      log "node $n: process alive (pid $pid) but $HOST:$port not open yet"
    else
      up=$((up + 1))
      if [[ $BROKERS -eq 1 ]]; then
        log "node $n: running, pid $pid, listening on $HOST:$port"
      else
        log "node $n: running, pid $pid, broker $HOST:$port, controller $HOST:$(node_controller_port "$n")"
      fi
    fi
  done
  if ((up == BROKERS)); then
    log "running: bootstrap servers $(bootstrap_servers) (state in $(nodes_dir))"
    exit 0
  elif [[ $BROKERS -eq 1 ]]; then
    log "not running"
  elif ((up > 0)); then
    log "degraded: $up of $BROKERS nodes running; bootstrap servers $(bootstrap_servers)"
    exit 4
  else
    log "not running (bootstrap servers would be $(bootstrap_servers))"
  fi
  exit 3
}

# logs FOLLOW LINES [NODE]: the end of every node's log (or of NODE's);
# FOLLOW 1 follows them.
kafka_logs() {
  local follow=() lines="$2" node="${3:-}" n f files=()
  [[ $1 -eq 0 ]] || follow=(-F)
  if external; then
    log "KAFKA_BOOTSTRAP_SERVERS is set: the cluster's logs are not kept here"
    return 0
  fi
  for n in ${node:-$(node_ids)}; do
    f="$(node_log "$n")"
    [[ -f $f ]] && files+=("$f")
  done
  if [[ ${#files[@]} -eq 0 ]]; then
    [[ $BROKERS -gt 1 ]] || die "no broker log at $(node_log 1) (has 'up' run?)"
    die "no broker log in $(nodes_dir) (has '--brokers $BROKERS up' run?)"
  fi
  exec tail -n "$lines" "${follow[@]}" "${files[@]}"
}
