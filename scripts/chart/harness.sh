# shellcheck shell=bash
# Sourced by scripts/chart-check.sh: running checks and counting them, and
# rendering the chart into $OUT_DIR.

PASSED=0
FAILED=0
FAILED_NAMES=()
LOG=""

# A fresh $OUT_DIR, and the file that holds each check's output.
start_checks() {
  rm -rf "$OUT_DIR"
  mkdir -p "$OUT_DIR"
  LOG=$(mktemp)
  trap 'rm -f "$LOG"' EXIT
}

passed() {
  PASSED=$((PASSED + 1))
  printf 'PASS  %s\n' "$1"
}

failed() {
  FAILED=$((FAILED + 1))
  FAILED_NAMES+=("$1")
  printf 'FAIL  %s\n' "$1"
}

# check NAME COMMAND...: runs COMMAND; PASS or FAIL. On failure its output is
# shown; on success only its lines starting with "note:" or "skip:".
check() {
  local name=$1 rc=0
  shift
  "$@" >"$LOG" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then
    passed "$name"
    grep -E '^(note|skip):' "$LOG" | sed 's/^/      /' || true
  else
    failed "$name"
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
    passed "$name"
    for pattern in "${pattern_list[@]}"; do
      grep -E -- "$pattern" <<<"$out" | head -n 1 | sed -e 's/^[[:space:]-]*//' -e 's/^Error: execution error at ([^)]*): //' | cut -c1-240 | sed 's/^/      refused: /'
    done
  else
    failed "$name"
    if [[ $rc -eq 0 ]]; then
      printf '      | helm template accepted: %s\n' "$*"
    else
      printf '      | exit %d, but the error does not match: %s\n' "$rc" "${missing[*]}"
      printf '      | %s\n' "${out//$'\n'/$'\n'      | }"
    fi
  fi
}

# Prints the failed checks and the final count; fails if a check failed.
summary() {
  printf '\n'
  if [[ $FAILED -gt 0 ]]; then
    say "failed checks:"
    printf '  - %s\n' "${FAILED_NAMES[@]}"
  fi
  printf 'chart: %d passed, %d failed\n' "$PASSED" "$FAILED"
  [[ $FAILED -eq 0 ]]
}

pycheck() { "$PY" scripts/chart/check.py "$@"; }

# helm_template CHART_DIR ARGS...: helm template in namespace shoal against
# the newest Kubernetes version checked.
helm_template() {
  local chart_dir=$1
  shift
  "$HELM" template shoal "$chart_dir" --namespace shoal --kube-version "${KUBE_VERSIONS[-1]}" "$@"
}

# render NAME ARGS...: helm template into $OUT_DIR/NAME.yaml.
render() {
  local name=$1
  shift
  helm_template "$CHART" "$@" >"$OUT_DIR/$name.yaml"
}

# notes NAME ARGS...: the chart's NOTES.txt as `helm install` would print it,
# into $OUT_DIR/NAME.notes.txt. helm template does not render NOTES.txt, and
# a dry-run install needs a cluster, so a copy of the chart renders it through
# tpl into a ConfigMap.
notes() {
  local name=$1 notes_chart="$OUT_DIR/notes-chart"
  shift
  if [[ ! -d $notes_chart ]]; then
    cp -r "$CHART" "$notes_chart"
    cp "$CHART/templates/NOTES.txt" "$notes_chart/notes.txt"
    printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata:' '  name: notes' 'data:' '  notes: |' \
      '{{ tpl (.Files.Get "notes.txt") . | indent 4 }}' >"$notes_chart/templates/zz-notes.yaml"
  fi
  helm_template "$notes_chart" --show-only templates/zz-notes.yaml "$@" >"$OUT_DIR/$name.notes.yaml"
  "$PY" -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(open(sys.argv[1]))["data"]["notes"])' \
    "$OUT_DIR/$name.notes.yaml" >"$OUT_DIR/$name.notes.txt"
  grep -q "^Shoal .* is deployed" "$OUT_DIR/$name.notes.txt"
}
