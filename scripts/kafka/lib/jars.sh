# shellcheck shell=bash
# Sourced by scripts/kafka.sh: the Kafka jars, resolved from Maven Central
# with scripts/kafka/pom.xml and cached, and Kafka's command-line classes run
# from them (StorageTool, the readiness probe).

# shellcheck disable=SC2153 # KAFKA_POM is set by scripts/kafka.sh
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

# Java and the jars: what every command that runs Kafka needs first.
ensure_runtime() {
  ensure_java
  ensure_libs
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

# A new cluster id from StorageTool.
new_cluster_id() {
  local id
  id="$(kafka_tool kafka.tools.StorageTool random-uuid </dev/null 2>/dev/null | tail -n1)"
  [[ $id =~ ^[A-Za-z0-9_-]{22}$ ]] || die "StorageTool random-uuid printed '$id'"
  printf '%s\n' "$id"
}

# Succeeds when the cluster at $1 answers a metadata (ApiVersions) request
# within $2 seconds.
probe_cluster() {
  probe_output "$@" >/dev/null
}

# As probe_cluster, printing BrokerApiVersionsCommand's output: one entry
# per broker in the cluster's metadata, "host:port (id: N rack: ...) -> ("
# followed by its API versions, or "-> ERROR" when it did not answer.
# PROBE_CONFIG (default: in the jar cache) is the probe's client config
# file; the settings in the file PROBE_CLIENT_CONFIG, if set (secure mode:
# the admin's SASL_SSL settings), are added to it.
PROBE_CONFIG=""
PROBE_CLIENT_CONFIG=""
probe_output() {
  local bootstrap="$1" timeout_s="${2:-20}" config="${PROBE_CONFIG:-$KAFKA_HOME/probe.properties}"
  {
    cat <<'PROPERTIES'
# Client settings for scripts/kafka.sh's readiness probe: give up quickly.
request.timeout.ms=5000
default.api.timeout.ms=8000
socket.connection.setup.timeout.ms=2000
socket.connection.setup.timeout.max.ms=2000
reconnect.backoff.max.ms=1000
PROPERTIES
    [[ -z $PROBE_CLIENT_CONFIG ]] || cat "$PROBE_CLIENT_CONFIG"
  } >"$config.$$"
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
