# shellcheck shell=bash
# Sourced by scripts/chart-check.sh: the checks, one function a section, in
# the order chart-check.sh runs them. The renders of the later sections are
# named in RENDERS: default, one per example values file, and two variants.

RENDERS=()
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

check_dockerfile() {
  printf '\n== Dockerfile\n'
  check "hadolint Dockerfile" "$HADOLINT" --failure-threshold warning Dockerfile
  check "Dockerfile builds what the tests run (cargo build --release --workspace --bins --locked)" \
    pycheck dockerfile-build Dockerfile Makefile
  check "Dockerfile runtime stage: debian:bookworm-slim, non-root USER 10001, no shell entrypoint" \
    pycheck dockerfile-runtime Dockerfile
  check "every binary the chart runs is in the image and a binary of the workspace" \
    pycheck binaries Dockerfile "$CHART"
}

check_values() {
  printf '\n== values\n'
  check "values.yaml: every key documented, every key in values.schema.json and back" \
    pycheck values-consistency "$CHART"
  check "values reference in $CHART_README up to date (scripts/chart/values_doc.py --check)" \
    "$PY" scripts/chart/values_doc.py --check "$CHART_README"
}

check_lint() {
  local example
  printf '\n== helm lint --strict\n'
  check "helm lint --strict (default values)" "$HELM" lint --strict --kube-version "${KUBE_VERSIONS[-1]}" "$CHART"
  for example in "${EXAMPLES[@]}"; do
    check "helm lint --strict -f $example" \
      "$HELM" lint --strict --kube-version "${KUBE_VERSIONS[-1]}" "$CHART" -f "$example"
  done
}

check_renders() {
  local example name
  printf '\n== helm template + schema validation (Kubernetes %s)\n' "${KUBE_VERSIONS[*]}"
  RENDERS=(default)
  check "helm template (default values)" render default
  for example in "${EXAMPLES[@]}"; do
    name=$(basename "$example" .yaml)
    RENDERS+=("$name")
    check "helm template -f $example" render "$name" -f "$example"
  done
  check "helm template (variant-a: ${VARIANT_A[*]})" render variant-a "${VARIANT_A[@]}"
  check "helm template (variant-b: ${VARIANT_B[*]})" render variant-b "${VARIANT_B[@]}"
  RENDERS+=(variant-a variant-b)
  for name in "${RENDERS[@]}"; do
    check "kubernetes schemas: $name" pycheck validate "$OUT_DIR/$name.yaml" "${KUBE_VERSIONS[@]}"
  done
}

# rendered_replicas NAME KIND N ARGS...: render with ARGS, then the worker
# workload must be a KIND with N replicas.
rendered_replicas() { render "$1" "${@:4}" && pycheck replicas "$OUT_DIR/$1.yaml" "$2" "$3"; }
rendered_grace() { render grace --set shutdown.timeoutMs=60500 --set shutdown.graceMarginSeconds=5 && pycheck grace "$OUT_DIR/grace.yaml" 66; }

check_rendered_output() {
  local name
  printf '\n== rendered output\n'
  for name in "${RENDERS[@]}"; do
    check "conventions ($name): labels, securityContext, probes, grace period, identity, no literal secrets" \
      pycheck conventions "$OUT_DIR/$name.yaml"
  done
  check "--set workers.replicas=7 gives a worker StatefulSet with replicas: 7" \
    rendered_replicas replicas7 StatefulSet 7 --set workers.replicas=7
  check "--set workers.replicas=7 --set workers.kind=Deployment gives a worker Deployment with replicas: 7" \
    rendered_replicas replicas7-deployment Deployment 7 --set workers.replicas=7 --set workers.kind=Deployment
  check "terminationGracePeriodSeconds follows shutdown.timeoutMs (60500 ms + 5 s margin = 66 s)" rendered_grace
  for name in "${RENDERS[@]}"; do
    check "example expectations ($name)" pycheck expect "$name" "$OUT_DIR/$name.yaml"
  done
}

notes_idle() { notes idle --set workers.replicas=14 && grep -q "2 workers will sit idle" "$OUT_DIR/idle.notes.txt"; }

check_notes() {
  local example
  printf '\n== NOTES.txt\n'
  check "NOTES.txt renders (default values)" notes default
  for example in "${EXAMPLES[@]}"; do
    check "NOTES.txt renders (-f $example)" notes "$(basename "$example" .yaml)" -f "$example"
  done
  check "NOTES.txt warns when the orchestrator has no feed (default values)" \
    grep -q "WARNING: orchestrator.feed.url is empty" "$OUT_DIR/default.notes.txt"
  check "NOTES.txt warns about idle workers (workers.replicas=14 > 12 partitions)" notes_idle
  check "NOTES.txt names the KEDA ScaledObject and its HPA (keda example)" \
    grep -q "keda-hpa-shoal-worker" "$OUT_DIR/keda.notes.txt"
  check "NOTES.txt warns that the orchestrator has no API token (default values)" \
    grep -q "WARNING: api.tokens.existingSecret is empty" "$OUT_DIR/default.notes.txt"
  check "NOTES.txt warns that the state API asks for no token (simulator example: api.auth=none)" \
    grep -q "WARNING: api.auth=none" "$OUT_DIR/simulator.notes.txt"
}

check_refused() {
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
  refused "schema: enum (api.auth=open)" 'api.*auth' --set api.auth=open
  refused "API tokens given but api.auth=none" 'api.tokens.existingSecret.*api.auth is none' \
    --set api.auth=none --set api.tokens.existingSecret=shoal-api-tokens
  refused "the state API on the metrics port" 'api.port \(9464\) is observability.port' --set api.port=9464
  refused "the LLM skill without a model" 'workers.llm.model' --set workers.llm.enabled=true
  refused "the LLM skill with a handler time-out below a model call's" 'handlerTimeoutMs \(5000\) must be at least workers.llm.callTimeoutMs' \
    --set workers.llm.enabled=true --set workers.llm.model=m
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
}

readonly DASHBOARD="$CHART/dashboards/shoal.json" DASHBOARD_COPY=deploy/grafana/shoal-dashboard.json
DASHBOARD_VALUES=(--set grafana.dashboard.enabled=true --set grafana.dashboard.namespace=monitoring
  --set grafana.dashboard.annotations.grafana_folder=Shoal --set-string grafana.dashboard.labels.team=markets)

# The Grafana dashboard: the file itself, and the ConfigMap the chart offers
# it in (off by default).
check_dashboard() {
  printf '\n== Grafana dashboard\n'
  check "$DASHBOARD parses, uses the templated data source, names only metrics the binaries register; $DASHBOARD_COPY is the same file" \
    pycheck dashboard "$DASHBOARD" "$DASHBOARD_COPY" .
  check "no dashboard ConfigMap by default" pycheck dashboard-configmap "$OUT_DIR/default.yaml" "$DASHBOARD" absent
  check "helm template (dashboard: ${DASHBOARD_VALUES[*]})" render dashboard "${DASHBOARD_VALUES[@]}"
  check "kubernetes schemas: dashboard" pycheck validate "$OUT_DIR/dashboard.yaml" "${KUBE_VERSIONS[@]}"
  check "conventions (dashboard)" pycheck conventions "$OUT_DIR/dashboard.yaml"
  check "the dashboard ConfigMap: in grafana.dashboard.namespace, the sidecar's label, extra labels and annotations, the JSON intact" \
    pycheck dashboard-configmap "$OUT_DIR/dashboard.yaml" "$DASHBOARD" present monitoring \
    label:grafana_dashboard=1 label:team=markets annotation:grafana_folder=Shoal
  check "the dashboard ConfigMap defaults to the release's namespace" dashboard_in_release_namespace
  refused "schema: grafana.dashboard.enabled must be a boolean" 'grafana.*dashboard.*enabled' --set grafana.dashboard.enabled=yes
  refused "schema: unknown key (grafana.dashboard.folder)" "folder" --set grafana.dashboard.folder=Shoal
}

dashboard_in_release_namespace() {
  render dashboard-default-ns --set grafana.dashboard.enabled=true &&
    pycheck dashboard-configmap "$OUT_DIR/dashboard-default-ns.yaml" "$DASHBOARD" present shoal label:grafana_dashboard=1
}

# The rendered config through the real binaries, as CHART_CHECK_BINARIES
# says: auto (when cargo is here), yes (cargo required) or no.
check_binaries() {
  printf '\n== Shoal accepts the rendered config\n'
  local binaries_mode="${CHART_CHECK_BINARIES:-auto}" cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
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
}
