#!/usr/bin/env bash
# Runs a local Apache Kafka 4.x broker (KRaft, no ZooKeeper, no Docker) for
# Shoal's development and CI. See `scripts/kafka.sh --help`.
#
# This file holds the settings, the usage, the command line and the
# dispatch; the work is done by the files in scripts/kafka/lib/:
#   common.sh     messages, option values, processes and ports; Java, Maven
#   jars.sh       the Kafka jars (Maven, scripts/kafka/pom.xml) and the Kafka
#                 command-line classes run from them (StorageTool, probes)
#   node.sh       the local nodes: layout, ports, config, format, start, stop
#   ready.sh      waiting until the nodes answer
#   lifecycle.sh  up, down, status and logs (single node, cluster, external)
#   cluster.sh    the three-node cluster's per-node commands
#   secure.sh     the secured broker's (--secure) CA, certificate, SCRAM
#                 credentials and client configs
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT
readonly KAFKA_SUPPORT_DIR="$SCRIPT_DIR/kafka"
readonly KAFKA_LIB="$KAFKA_SUPPORT_DIR/lib"
readonly KAFKA_POM="$KAFKA_SUPPORT_DIR/pom.xml"
readonly SINGLE_TEMPLATE="$KAFKA_SUPPORT_DIR/server.properties.template"
readonly CLUSTER_TEMPLATE="$KAFKA_SUPPORT_DIR/server-cluster.properties.template"
readonly SECURE_SINGLE_TEMPLATE="$KAFKA_SUPPORT_DIR/server-secure.properties.template"
readonly SECURE_CLUSTER_TEMPLATE="$KAFKA_SUPPORT_DIR/server-secure-cluster.properties.template"
readonly BROKER_LOG4J="$KAFKA_SUPPORT_DIR/log4j2.properties"
readonly TOOLS_LOG4J="$KAFKA_SUPPORT_DIR/tools-log4j2.properties"

# shellcheck source=kafka/lib/common.sh
source "$KAFKA_LIB/common.sh"

readonly MIN_JAVA=17
readonly HOST=127.0.0.1
# Single-node mode (the default): node 1 on 9092 (broker) and 9093
# (controller). SHOAL_KAFKA_PORT moves it (controller on the next port), so
# a test can run a broker of its own, in its own SHOAL_KAFKA_DIR, and stop it
# without touching the one other tests share.
SINGLE_BROKER_PORT="$(port_setting SHOAL_KAFKA_PORT 9092 65534)"
readonly SINGLE_BROKER_PORT
readonly SINGLE_CONTROLLER_PORT=$((SINGLE_BROKER_PORT + 1))
readonly SINGLE_HEAP="-Xms256m -Xmx1g"
# Cluster mode (--brokers 3): node n listens on 19092 + 2(n-1) (broker) and
# 19093 + 2(n-1) (controller), i.e. 19092/19093, 19094/19095, 19096/19097,
# clear of the single node's ports so both modes can run side by side.
# SHOAL_KAFKA_CLUSTER_PORT moves node 1's broker port, and the others with it.
readonly CLUSTER_SIZE=3
CLUSTER_BROKER_PORT="$(port_setting SHOAL_KAFKA_CLUSTER_PORT 19092 $((65535 - 2 * CLUSTER_SIZE + 1)))"
readonly CLUSTER_BROKER_PORT
readonly CLUSTER_CONTROLLER_PORT=$((CLUSTER_BROKER_PORT + 1))
readonly CLUSTER_HEAP="-Xms256m -Xmx768m"
# Secure mode (--secure): the same single node or cluster, secured (SASL_SSL
# with SCRAM-SHA-512, ACLs), on ports of its own so that it runs beside the
# plain one: single node 9192 (SASL_SSL) and 9193 (controller), cluster
# 19292/19293, 19294/19295, 19296/19297. SHOAL_KAFKA_SECURE_PORT and
# SHOAL_KAFKA_SECURE_CLUSTER_PORT move them.
SECURE_SINGLE_BROKER_PORT="$(port_setting SHOAL_KAFKA_SECURE_PORT 9192 65534)"
readonly SECURE_SINGLE_BROKER_PORT
SECURE_CLUSTER_BROKER_PORT="$(port_setting SHOAL_KAFKA_SECURE_CLUSTER_PORT 19292 $((65535 - 2 * CLUSTER_SIZE + 1)))"
readonly SECURE_CLUSTER_BROKER_PORT

# The fault-proxy listener (opt-in, for network-fault tests): with
# SHOAL_KAFKA_PROXY_PORT=<base>, node n also listens on a PLAINTEXT listener
# named FAULTY at <base> + <nodes> + (n-1) and advertises 127.0.0.1:<base> +
# (n-1) on it, the port where a fault proxy (Toxiproxy) listens and forwards
# to that listener. A client that bootstraps through the proxy is then given
# proxied addresses for every broker; inter-broker traffic and clients of
# the PLAINTEXT listener never pass the proxy. Unset, the nodes' configs have
# no such listener.
PROXY_PORT=""
if [[ -n ${SHOAL_KAFKA_PROXY_PORT:-} ]]; then
  PROXY_PORT="$(port_setting SHOAL_KAFKA_PROXY_PORT "" $((65535 - 2 * CLUSTER_SIZE + 1)))"
fi
readonly PROXY_PORT

readonly STATE_DIR="${SHOAL_KAFKA_DIR:-$REPO_ROOT/.kafka}"
readonly CLUSTER_DIR="$STATE_DIR/cluster$CLUSTER_SIZE"
readonly SECURE_DIR="$STATE_DIR/secure"
readonly SECURE_CLUSTER_DIR="$SECURE_DIR/cluster$CLUSTER_SIZE"
readonly CACHE_ROOT="${SHOAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}"

READY_TIMEOUT="${SHOAL_KAFKA_READY_TIMEOUT:-90}"
STOP_TIMEOUT="${SHOAL_KAFKA_STOP_TIMEOUT:-30}"

# shellcheck source=kafka/lib/jars.sh
source "$KAFKA_LIB/jars.sh"
# shellcheck source=kafka/lib/node.sh
source "$KAFKA_LIB/node.sh"
# shellcheck source=kafka/lib/secure.sh
source "$KAFKA_LIB/secure.sh"
# Node n's fault-proxy ports (with SHOAL_KAFKA_PROXY_PORT): where the proxy
# listens (advertised on FAULTY), and the FAULTY listener it forwards to.
node_proxy_port() { printf '%s\n' $((PROXY_PORT + $1 - 1)); }
node_faulty_port() { printf '%s\n' $((PROXY_PORT + BROKERS + $1 - 1)); }

# node.sh's write_node_config fills the placeholders every config has; this
# wrapper fills the FAULTY listener's (@FAULTY_LISTENER@, @FAULTY_ADVERTISED@,
# @FAULTY_PROTOCOL@), empty unless SHOAL_KAFKA_PROXY_PORT is set, so that
# without it the config is what it always was. The secure nodes have no
# FAULTY listener (their templates no placeholders for it).
eval "node_sh_$(declare -f write_node_config)"
write_node_config() {
  local n="$1" listener="" advertised="" protocol=""
  if [[ -n $PROXY_PORT && $SECURE -eq 0 ]]; then
    ! port_open "$(node_faulty_port "$n")" ||
      die "port $HOST:$(node_faulty_port "$n") (node $n's FAULTY listener, from SHOAL_KAFKA_PROXY_PORT=$PROXY_PORT) is already in use"
    listener=",FAULTY://$HOST:$(node_faulty_port "$n")"
    advertised=",FAULTY://$HOST:$(node_proxy_port "$n")"
    protocol=",FAULTY:PLAINTEXT"
  fi
  node_sh_write_node_config "$n"
  sed -i -e "s|@FAULTY_LISTENER@|$listener|g" \
    -e "s|@FAULTY_ADVERTISED@|$advertised|g" \
    -e "s|@FAULTY_PROTOCOL@|$protocol|g" \
    "$(node_config "$n")"
}

# With SHOAL_KAFKA_PROXY_PORT set, 'up' leaves running nodes alone, so one
# started without that listener (or with other ports) would not get it:
# fails, saying so.
check_running_nodes_listen_for_proxy() {
  [[ -n $PROXY_PORT && $SECURE -eq 0 ]] || return 0
  local n
  for n in $(node_ids); do
    node_pid "$n" >/dev/null || continue
    grep -q "^listeners=.*,FAULTY://$HOST:$(node_faulty_port "$n")\$" "$(node_config "$n")" ||
      die "node $n runs without the FAULTY listener SHOAL_KAFKA_PROXY_PORT=$PROXY_PORT asks for; stop it first ('down'), or use 'up --fresh'"
  done
}

# shellcheck source=kafka/lib/ready.sh
source "$KAFKA_LIB/ready.sh"
# shellcheck source=kafka/lib/lifecycle.sh
source "$KAFKA_LIB/lifecycle.sh"
# shellcheck source=kafka/lib/cluster.sh
source "$KAFKA_LIB/cluster.sh"

usage() {
  cat <<EOF
Usage: scripts/kafka.sh [--brokers 1|3] [--secure] COMMAND [OPTIONS]

Runs a single-node Apache Kafka broker in KRaft mode (combined broker and
controller, node.id=1) for Shoal, without Docker:
  bootstrap   $HOST:$SINGLE_BROKER_PORT  (PLAINTEXT)
  controller  $HOST:$SINGLE_CONTROLLER_PORT  (CONTROLLER listener)
With --brokers 3 (or SHOAL_KAFKA_BROKERS=3) it runs a three-node cluster
instead; see "Three-node cluster mode" below. With --secure, the same
commands act on a secured broker (SASL_SSL, SCRAM-SHA-512, ACLs) that runs
beside the plain one; see "Secure mode" below.

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
  secure-env
        Print where the secure broker's files are, as NAME=value lines (no
        passwords; see "Secure mode").
  tool CLASS [ARGS...]
        Run a Kafka command-line class from the cached jars, e.g.
        org.apache.kafka.tools.TopicCommand or
        org.apache.kafka.tools.AclCommand (with the secure broker:
        --command-config "\$SHOAL_SECURE_ADMIN_CONFIG").
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

Secure mode (--secure, anywhere on the command line):
  up, down, status and logs (and, with --brokers 3, the node commands) act
  on a secured single node, or three-node cluster, instead of the plain one;
  both run side by side. Listeners, bound to $HOST only:
    single node   SASL_SSL $HOST:$SECURE_SINGLE_BROKER_PORT  controller $HOST:$((SECURE_SINGLE_BROKER_PORT + 1))
    --brokers 3   SASL_SSL $(SECURE=1 BROKERS=$CLUSTER_SIZE BASE_BROKER_PORT=$SECURE_CLUSTER_BROKER_PORT bootstrap_servers)
                  controllers on the port after each
  SASL_SSL: clients and inter-broker traffic; TLS with a certificate for
  localhost/$HOST signed by a local CA, SASL/SCRAM-SHA-512; the brokers
  connect as admin. Controller listener: SASL_PLAINTEXT, SASL/PLAIN, one
  static user 'controller'. Authorizer: StandardAuthorizer,
  allow.everyone.if.no.acl.found=false, super.users=User:admin;User:controller.
  SCRAM users: ${SECURE_USERS[*]}
  (admin is the super user; the others get no ACLs from this script).
  'up --secure' makes on first use, in \${SHOAL_KAFKA_DIR:-<repo>/.kafka}/secure
  (here: $SECURE_DIR):
    ca.pem                   the CA certificate (librdkafka ssl.ca.location;
                             Java: ssl.truststore.type=PEM)
    tls/                     CA key, broker key and certificate
    credentials.env          mode 0600, lines SHOAL_SCRAM_<USER>=<password>
                             (USER upper case, e.g. SHOAL_SCRAM_WORKER) and
                             SHOAL_KAFKA_CONTROLLER_PASSWORD=<password>
    clients/<user>.properties       librdkafka config (security.protocol,
                                    sasl.*, ssl.ca.location; no bootstrap)
    clients/<user>.java.properties  Java client config (--command-config)
  Passwords are random hex and never printed. The users are put into the
  cluster metadata when a log dir is formatted (StorageTool --add-scram); if
  credentials.env changes (e.g. deleted), the data is wiped and formatted
  again on the next 'up --secure'. 'up --secure' waits until the admin can
  connect over SASL_SSL, and prints the bootstrap servers as its last line
  of stdout:  bootstrap=\$(scripts/kafka.sh up --secure | tail -n1)
  'up --secure --fresh' wipes the data (topics, ACLs) but keeps the CA,
  certificate and credentials; 'down --secure --purge' deletes all of
  secure/ (keeping the files a running secure cluster uses).
  secure-env prints (with --brokers 3, the cluster's bootstrap servers):
    SHOAL_SECURE_DIR, SHOAL_SECURE_BOOTSTRAP, SHOAL_SECURE_CA,
    SHOAL_SECURE_CREDENTIALS, SHOAL_SECURE_CLIENTS_DIR,
    SHOAL_SECURE_ADMIN_CONFIG (clients/admin.java.properties),
    SHOAL_SECURE_PROTOCOL=SASL_SSL, SHOAL_SECURE_MECHANISM=SCRAM-SHA-512,
    SHOAL_SECURE_USERS (comma separated)
  For example, an ACL for the worker:
    eval "\$(scripts/kafka.sh secure-env)"
    scripts/kafka.sh tool org.apache.kafka.tools.AclCommand \\
      --bootstrap-server "\$SHOAL_SECURE_BOOTSTRAP" \\
      --command-config "\$SHOAL_SECURE_ADMIN_CONFIG" \\
      --add --allow-principal User:worker --operation Read --topic jobs
  Needs openssl (installed with apt-get when missing). KAFKA_BOOTSTRAP_SERVERS
  and SHOAL_KAFKA_PROXY_PORT do not apply to the secure broker.

Fault-proxy listener (SHOAL_KAFKA_PROXY_PORT=BASE, for network-fault tests):
  Node n (1 here, 1..3 with --brokers 3) also gets a PLAINTEXT listener
  named FAULTY on port BASE + <nodes> + (n-1), and advertises
  $HOST:<BASE + (n-1)> on it. A TCP fault proxy (Toxiproxy; see
  scripts/ensure-toxiproxy.sh and docs/reliability.md) listens on
  BASE + (n-1) and forwards to node n's FAULTY port. A client that
  bootstraps at the proxy ports gets the proxy ports for every broker in
  its metadata, so all its connections pass the proxy; the brokers' own
  traffic and clients of the PLAINTEXT listener do not. For example
    SHOAL_KAFKA_PROXY_PORT=19192 scripts/kafka.sh --brokers 3 up
  gives proxy ports 19192-19194 and FAULTY listeners on 19195-19197
  (single node: proxy port BASE, FAULTY listener BASE+1).
  Every 'up' and 'start-node' on those nodes needs the same value: a config
  is written each time a node starts, and without the variable it has no
  FAULTY listener. 'up' fails if a running node lacks the listener (use
  'down' first, or 'up --fresh'). Unset (the default), no extra listener.

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
and the secure broker's in its secure/ (cluster: secure/cluster3/node-<id>).

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
  SHOAL_KAFKA_CLUSTER_PORT  cluster node 1's broker port (default 19092;
                            node n's broker at +2(n-1), each controller on
                            the port after its broker). With its own
                            SHOAL_KAFKA_DIR, a second cluster beside the first.
  SHOAL_KAFKA_SECURE_PORT   secure single node's SASL_SSL port (default
                            9192; the controller takes the next one).
  SHOAL_KAFKA_SECURE_CLUSTER_PORT
                            secure cluster node 1's SASL_SSL port (default
                            19292; laid out as SHOAL_KAFKA_CLUSTER_PORT's).
  SHOAL_KAFKA_PROXY_PORT    first port of the fault-proxy listener's range
                            (see "Fault-proxy listener" above; unset: none).
  SHOAL_CACHE_DIR           jar cache root (see above).
  SHOAL_KAFKA_READY_TIMEOUT seconds 'up' waits for readiness (default 90).
  SHOAL_KAFKA_STOP_TIMEOUT  seconds 'down' waits before SIGKILL (default 30).
  KAFKA_HEAP_OPTS           heap per broker (default: -Xms256m -Xmx1g, or
                            -Xms256m -Xmx768m per node with --brokers 3).
  JAVA_HOME                 Java to use (default: java on PATH).
EOF
}

# The command's options (see usage) into FRESH, PURGE, FOLLOW, LOG_LINES,
# LOG_NODE, NODE and READY_TIMEOUT; an option the command does not take is
# an unknown option.
FRESH=0
PURGE=0
FOLLOW=0
LOG_LINES=100
LOG_NODE=""
NODE=""
parse_options() {
  local cmd="$1"
  shift
  while [[ $# -gt 0 ]]; do
    case "$cmd $1" in
      "up --fresh") FRESH=1 ;;
      "down --purge") PURGE=1 ;;
      "up --timeout" | "start-node --timeout")
        READY_TIMEOUT="$(number_arg "--timeout needs a number of seconds" "$@")"
        shift
        ;;
      "logs -f" | "logs --follow") FOLLOW=1 ;;
      "logs -n" | "logs --lines")
        LOG_LINES="$(number_arg "-n needs a number of lines" "$@")"
        shift
        ;;
      "logs --node")
        [[ $BROKERS -gt 1 ]] || die "logs: unknown option '$1' (see --help)"
        [[ $# -ge 2 ]] || die "--node needs a node id"
        LOG_NODE="$(check_node_id "$2")"
        shift
        ;;
      "$cmd -h" | "$cmd --help")
        usage
        exit 0
        ;;
      *)
        # The node commands' one argument: the node id.
        [[ $cmd == *-node && $1 != -* ]] || die "$cmd: unknown option '$1' (see --help)"
        [[ -z $NODE ]] || die "$cmd takes one node id"
        NODE="$(check_node_id "$1")"
        ;;
    esac
    shift
  done
}

main() {
  # --brokers N (or --brokers=N) may come anywhere; it overrides
  # SHOAL_KAFKA_BROKERS.
  local brokers="${SHOAL_KAFKA_BROKERS:-1}" secure=0 args=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --secure) secure=1 ;;
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
  [[ ${#args[@]} -eq 0 || ${args[0]} != secure-env ]] || secure=1
  set_secure "$secure"
  set_brokers "$brokers"
  set -- "${args[@]}"

  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    up)
      parse_options "$cmd" "$@"
      [[ $FRESH -eq 1 ]] || external || check_running_nodes_listen_for_proxy
      kafka_up "$FRESH"
      # Secure mode: the bootstrap servers as the last line, for scripts.
      [[ $SECURE -eq 0 ]] || bootstrap_servers
      ;;
    down)
      parse_options "$cmd" "$@"
      kafka_down "$PURGE"
      ;;
    status)
      [[ $# -eq 0 ]] || die "status takes no options"
      kafka_status
      ;;
    logs)
      parse_options "$cmd" "$@"
      kafka_logs "$FOLLOW" "$LOG_LINES" "$LOG_NODE"
      ;;
    stop-node | kill-node | start-node | pid-node)
      [[ $BROKERS -gt 1 ]] ||
        die "$cmd needs the three-node cluster: scripts/kafka.sh --brokers $CLUSTER_SIZE $cmd N"
      parse_options "$cmd" "$@"
      [[ -n $NODE ]] || die "usage: scripts/kafka.sh --brokers $BROKERS $cmd N (N = 1..$BROKERS)"
      node_command "$cmd" "$NODE"
      ;;
    secure-env)
      [[ $# -eq 0 ]] || die "secure-env takes no options"
      secure_env
      ;;
    tool)
      [[ $# -gt 0 && $1 != -* ]] || die "usage: scripts/kafka.sh tool CLASS [ARGS...]"
      ensure_runtime
      tool_cmd "$@"
      exec "${TOOL_CMD[@]}"
      ;;
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
