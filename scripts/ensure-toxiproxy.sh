#!/usr/bin/env bash
# Provides Toxiproxy's server (Shopify's TCP fault proxy) once and caches it:
# built from its Go module with 'go install', for the network-fault tests.
# See --help.
set -euo pipefail

readonly TOXIPROXY_VERSION="${SHOAL_TOXIPROXY_VERSION:-v2.12.0}"
readonly TOOLS_DIR="${SHOAL_CACHE_DIR:-$HOME/.cache/shoal}/tools"
readonly SERVER="$TOOLS_DIR/toxiproxy-$TOXIPROXY_VERSION/toxiproxy-server"

usage() {
  cat <<EOF
Usage: scripts/ensure-toxiproxy.sh [-h|--help]

Prints the path of Toxiproxy's server, building it the first time into
\$SHOAL_CACHE_DIR/tools (default ~/.cache/shoal/tools):

  go install github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION

(from the Go module proxy; a minute or less on 2 cores, once). Run it with
'-host 127.0.0.1 -port PORT'; its HTTP API creates proxies and toxics
(docs/reliability.md, "Network faults").

Installs Debian's golang-go when there is no Go toolchain (on PATH, in
/usr/local/go/bin, /usr/lib/go/bin or ~/go/bin). Toxiproxy needs Go 1.23;
Go 1.21 or newer fetches that toolchain itself through the Go module
proxy; with an older Go (Debian 12's golang-go is 1.19) this fails.
Progress goes to stderr, the path alone to stdout. Concurrent callers wait
for one build.

Environment: SHOAL_TOXIPROXY_VERSION (default v2.12.0), SHOAL_CACHE_DIR.
EOF
}

case "${1:-}" in
  -h | --help | help)
    usage
    exit 0
    ;;
  "") ;;
  *)
    printf 'ensure-toxiproxy: unknown argument %s (see --help)\n' "$1" >&2
    exit 2
    ;;
esac

say() { printf 'ensure-toxiproxy: %s\n' "$*" >&2; }

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    say "$* missing; install it (needs root)"
    exit 1
  fi
  say "installing Debian's $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

build_server() {
  local tmp start
  for dir in /usr/local/go/bin /usr/lib/go/bin "$HOME/go/bin"; do
    if [[ -x $dir/go ]]; then PATH="$PATH:$dir"; fi
  done
  command -v go >/dev/null 2>&1 || apt_install golang-go
  # Toxiproxy's go.mod asks for Go 1.23. Go 1.21 and newer fetch that
  # toolchain through the module proxy by themselves (GOTOOLCHAIN=auto);
  # older ones, such as Debian 12's golang-go (1.19), cannot build it.
  local minor
  minor="$(go env GOVERSION | sed -n 's/^go1\.\([0-9][0-9]*\).*/\1/p')"
  if [[ -z $minor || $minor -lt 21 ]]; then
    say "$(go version) cannot build toxiproxy $TOXIPROXY_VERSION (it needs Go 1.23, or Go 1.21+ to fetch that); put a newer go on PATH"
    exit 1
  fi
  say "building toxiproxy-server $TOXIPROXY_VERSION with $(go version) (a minute or less, once)"
  start=$SECONDS
  tmp="$(dirname "$SERVER").tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # GOBIN: the binary lands in the cache, nowhere else. GOFLAGS is cleared
  # so that a caller's settings do not change the build; -X stamps the
  # version that 'toxiproxy-server -version' and GET /version report.
  if ! (cd "$tmp" && GOBIN="$tmp" GOFLAGS="" GOTOOLCHAIN=auto CGO_ENABLED=0 \
    go install -trimpath -ldflags="-s -w -X github.com/Shopify/toxiproxy/v2.Version=$TOXIPROXY_VERSION" \
      "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION") >&2; then
    rm -rf "$tmp"
    say "go install of toxiproxy's server failed (output above)"
    exit 1
  fi
  mv "$tmp/server" "$tmp/toxiproxy-server"
  rm -rf "$(dirname "$SERVER")"
  mv -T "$tmp" "$(dirname "$SERVER")"
  say "built $SERVER in $((SECONDS - start))s"
}

if [[ ! -x $SERVER ]]; then
  # Tests running side by side call this at once: one builds, the others
  # wait for it and then find the binary.
  mkdir -p "$TOOLS_DIR"
  exec 9>"$TOOLS_DIR/.toxiproxy.lock"
  flock 9
  [[ -x $SERVER ]] || build_server
  flock -u 9
fi
printf '%s\n' "$SERVER"
