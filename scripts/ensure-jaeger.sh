#!/usr/bin/env bash
# Builds the Jaeger all-in-one binary (Jaeger v2, OTLP receiver + UI + query
# API) from its Go module once and caches it; prints its path. See --help.
set -euo pipefail

readonly JAEGER_VERSION="${SHOAL_JAEGER_VERSION:-v1.76.0}"
readonly TOOLS_DIR="${SHOAL_CACHE_DIR:-$HOME/.cache/shoal}/tools"
readonly DEST="$TOOLS_DIR/jaeger-$JAEGER_VERSION"

usage() {
  cat <<EOF
Usage: scripts/ensure-jaeger.sh [-h|--help]

Prints the path of a Jaeger all-in-one binary (Jaeger v2: an OTLP receiver
on 127.0.0.1:4317 (gRPC) and :4318 (HTTP), the UI and query API on :16686),
building it the first time from its Go module with
  go install github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION
into \$SHOAL_CACHE_DIR/tools (default ~/.cache/shoal/tools). The build takes
several minutes on 2 cores; later calls return at once. Installs Debian's
golang-go when there is no Go toolchain. Progress goes to stderr, the path
alone to stdout.

Environment: SHOAL_JAEGER_VERSION (default v1.76.0), SHOAL_CACHE_DIR.
EOF
}

case "${1:-}" in
  -h | --help | help)
    usage
    exit 0
    ;;
  "") ;;
  *)
    printf 'ensure-jaeger: unknown argument %s (see --help)\n' "$1" >&2
    exit 2
    ;;
esac

say() { printf 'ensure-jaeger: %s\n' "$*" >&2; }

if [[ -x $DEST/jaeger ]]; then
  printf '%s\n' "$DEST/jaeger"
  exit 0
fi

for dir in /usr/local/go/bin /usr/lib/go/bin "$HOME/go/bin"; do
  if [[ -x $dir/go ]]; then PATH="$PATH:$dir"; fi
done
if ! command -v go >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    say "no Go toolchain; install golang-go (needs root)"
    exit 1
  fi
  say "installing Debian's golang-go"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go </dev/null >/dev/null
fi

say "building jaeger $JAEGER_VERSION with $(go version) (several minutes, once)"
start=$SECONDS
tmp="$DEST.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/module"
trap 'rm -rf "$tmp"' EXIT
# Jaeger's go.mod has replace directives, which `go install pkg@version`
# refuses; a throw-away module that requires it as a tool builds it with the
# versions its go.mod asks for (minus the replacements).
(
  cd "$tmp/module"
  go mod init shoal.local/jaeger-build >/dev/null 2>&1
  go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" >&2
  CGO_ENABLED=0 go build -trimpath -o "$tmp/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger >&2
)
rm -rf "$tmp/module"
mv -T "$tmp" "$DEST"
trap - EXIT
say "built $DEST/jaeger in $((SECONDS - start))s"
printf '%s\n' "$DEST/jaeger"
