#!/usr/bin/env bash
# Provides the demo's tracing backend once and caches it: Zipkin's server
# (with its UI) from Maven Central, and an OpenTelemetry Collector built from
# its Go modules that turns Shoal's OTLP into Zipkin spans. See --help.
set -euo pipefail

readonly ZIPKIN_VERSION="${SHOAL_ZIPKIN_VERSION:-3.5.1}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
readonly TOOLS_DIR="${SHOAL_CACHE_DIR:-$HOME/.cache/shoal}/tools"
# The collector's directory is named for its module's content, so a change of
# scripts/otelcol rebuilds it.
COLLECTOR_KEY="$(cat "$HERE/otelcol/go.mod" "$HERE/otelcol/go.sum" "$HERE/otelcol/main.go" | sha256sum | cut -c1-12)"
readonly COLLECTOR_KEY
readonly COLLECTOR="$TOOLS_DIR/otelcol-$COLLECTOR_KEY/shoal-otelcol"
readonly ZIPKIN_JAR="$TOOLS_DIR/zipkin-$ZIPKIN_VERSION/zipkin-server-$ZIPKIN_VERSION-exec.jar"

usage() {
  cat <<EOF
Usage: scripts/ensure-trace-backend.sh [-h|--help]

Prints two lines, the paths of the demo's tracing backend, fetching or
building each the first time into \$SHOAL_CACHE_DIR/tools (default
~/.cache/shoal/tools):

  collector=PATH   shoal-otelcol, an OpenTelemetry Collector with the OTLP
                   receiver, the batch processor and the Zipkin exporter,
                   built with 'go build' from scripts/otelcol (its go.mod
                   pins the Collector's modules; about a minute on 2 cores);
                   run it with --config scripts/otelcol/config.yaml
  zipkin=PATH      Zipkin's server $ZIPKIN_VERSION (io.zipkin:zipkin-server,
                   exec jar with the UI, ~130 MB), fetched with Maven;
                   run it with 'java -jar PATH'

Installs Debian's golang-go when there is no Go toolchain, and maven and a
Java 17 runtime when they are missing (scripts/kafka.sh needs both too).
Progress goes to stderr, the paths alone to stdout.

Environment: SHOAL_ZIPKIN_VERSION (default 3.5.1), SHOAL_CACHE_DIR.
EOF
}

case "${1:-}" in
  -h | --help | help)
    usage
    exit 0
    ;;
  "") ;;
  *)
    printf 'ensure-trace-backend: unknown argument %s (see --help)\n' "$1" >&2
    exit 2
    ;;
esac

say() { printf 'ensure-trace-backend: %s\n' "$*" >&2; }

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    say "$* missing; install it (needs root)"
    exit 1
  fi
  say "installing Debian's $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

build_collector() {
  local tmp start
  for dir in /usr/local/go/bin /usr/lib/go/bin "$HOME/go/bin"; do
    if [[ -x $dir/go ]]; then PATH="$PATH:$dir"; fi
  done
  command -v go >/dev/null 2>&1 || apt_install golang-go
  say "building shoal-otelcol with $(go version) (about a minute, once)"
  start=$SECONDS
  tmp="$(dirname "$COLLECTOR").tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # -mod=readonly: go.sum must already hold every module (no silent upgrade).
  if ! (cd "$HERE/otelcol" && CGO_ENABLED=0 go build -mod=readonly -trimpath -o "$tmp/shoal-otelcol" .) >&2; then
    rm -rf "$tmp"
    say "go build of scripts/otelcol failed (output above)"
    exit 1
  fi
  rm -rf "$(dirname "$COLLECTOR")"
  mv -T "$tmp" "$(dirname "$COLLECTOR")"
  say "built $COLLECTOR in $((SECONDS - start))s"
}

fetch_zipkin() {
  local tmp start
  command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null 2>&1 || apt_install maven
  say "fetching io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec from Maven Central (once)"
  start=$SECONDS
  tmp="$(dirname "$ZIPKIN_JAR").tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! mvn -q -B dependency:copy "-Dartifact=io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec" \
    "-DoutputDirectory=$tmp" </dev/null >"$tmp/mvn.log" 2>&1; then
    tail -n 30 "$tmp/mvn.log" | sed 's/^/  | /' >&2
    rm -rf "$tmp"
    say "mvn could not fetch Zipkin's server (output above)"
    exit 1
  fi
  rm -f "$tmp/mvn.log"
  rm -rf "$(dirname "$ZIPKIN_JAR")"
  mv -T "$tmp" "$(dirname "$ZIPKIN_JAR")"
  say "fetched $ZIPKIN_JAR in $((SECONDS - start))s"
}

[[ -x $COLLECTOR ]] || build_collector
[[ -f $ZIPKIN_JAR ]] || fetch_zipkin
printf 'collector=%s\nzipkin=%s\n' "$COLLECTOR" "$ZIPKIN_JAR"
