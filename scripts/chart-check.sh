#!/usr/bin/env bash
# Lints, renders and validates the Helm chart (deploy/helm/shoal) and checks
# the Dockerfile; `make chart` and a step of .ci/run. Installs its own tools
# from the package registries. See --help.
#
# This file holds the settings, the usage and the order of the sections; the
# rest is in scripts/chart/:
#   tools.sh    the pinned tools (Helm built with go install, a Python venv)
#   harness.sh  check/refused (PASS or FAIL, counted), helm template renders
#   suites.sh   the sections of checks
#   check.py    the Python checks (one subcommand each; modules beside it)
#   values_doc.py  the chart README's values reference from values.yaml
# shellcheck source-path=SCRIPTDIR/..
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly CHART=deploy/helm/shoal
readonly CHART_README="$CHART/README.md"
readonly EXAMPLES_DIR=deploy/helm/examples
readonly CACHE_DIR="${SHOAL_CACHE_DIR:-$HOME/.cache/shoal}"
readonly TOOLS_DIR="$CACHE_DIR/tools"
readonly OUT_DIR="${CHART_CHECK_OUT:-target/chart-check}"
# Kubernetes versions every rendered manifest is validated against: the oldest
# the chart supports (Chart.yaml kubeVersion) and the newest the validator
# bundles.
readonly KUBE_VERSIONS=(1.30.0 1.37.0)

say() { printf 'chart-check: %s\n' "$*"; }
die() {
  printf 'chart-check: error: %s\n' "$*" >&2
  exit 2
}

# shellcheck source=scripts/chart/tools.sh
source scripts/chart/tools.sh
# shellcheck source=scripts/chart/harness.sh
source scripts/chart/harness.sh
# shellcheck source=scripts/chart/suites.sh
source scripts/chart/suites.sh

usage() {
  cat <<USAGE
Usage: scripts/chart-check.sh [--tools-only] [-h|--help]

Checks the Helm chart $CHART and the Dockerfile, printing PASS or FAIL per
check and a final line "chart: N passed, M failed":
  - Dockerfile: hadolint; the build stage runs exactly the workspace's release
    build (cargo build --release --workspace --bins --locked, the build of the
    tests and 'make bench' in release mode); the runtime stage runs as a
    non-root user; every binary the chart runs is a binary of the workspace;
  - values: every key of values.yaml is documented and in values.schema.json,
    and the values reference in $CHART_README is up to date
    (scripts/chart/values_doc.py --write regenerates it);
  - helm lint --strict with the default values and each $EXAMPLES_DIR/*.yaml;
  - helm template of each, every manifest validated against the Kubernetes
    schemas of ${KUBE_VERSIONS[*]} (kubernetes-validate, strict), and the
    custom resources (KEDA, Prometheus Operator, Strimzi) against the subsets
    of their CRD schemas in scripts/chart/schema_checks.py;
  - assertions on the rendered output (replicas, identity, probes, security
    context, grace period, secrets only by reference, rendered Shoal config);
  - bad values refused with a readable error (schema and render-time checks);
  - the Grafana dashboard ($CHART/dashboards/shoal.json): it parses, its
    panels use the templated data source, every metric its queries name is
    one the binaries register, deploy/grafana/shoal-dashboard.json is the
    same file, and the ConfigMap grafana.dashboard.enabled renders holds it
    with the sidecar's label;
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
USAGE
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

ensure_tools
[[ $TOOLS_ONLY -eq 0 ]] || exit 0

start_checks
shopt -s nullglob
EXAMPLES=("$EXAMPLES_DIR"/*.yaml)
shopt -u nullglob
[[ ${#EXAMPLES[@]} -gt 0 ]] || die "no example values in $EXAMPLES_DIR"

check_dockerfile
check_values
check_lint
check_renders
check_rendered_output
check_notes
check_refused
check_dashboard
check_binaries
summary
