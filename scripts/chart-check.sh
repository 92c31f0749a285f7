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

# The ACL Job and per-component Kafka users, on top of the sasl-tls example
# (whose orchestrator has its own user, and a shoal-dlq principal): the Job
# on, the workers' own user with its name read from their Secret, and a
# shoal-state principal.
ACL_VALUES=(-f "$EXAMPLES_DIR/sasl-tls.yaml" --set acls.enabled=true
  --set workers.kafkaSasl.existingSecret=shoal-worker --set acls.principals.state=User:shoal-state)

# acl_expect MANIFESTS [BIN_DIR]: what the ACL Job of ACL_VALUES must run; with
# BIN_DIR, shoal-acl from there must accept its config and arguments.
acl_expect() {
  "$PY" - "$@" <<'EOF_PY'
import json, os, re, subprocess, sys, tempfile
sys.dont_write_bytecode = True
sys.path.insert(0, "scripts/chart")
from manifests import Failures, env_of, load_docs  # noqa: E402

f = Failures()
docs = load_docs(sys.argv[1])
def of(kind, component):
    return [d for d in docs if d["kind"] == kind and d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
def pod(d):
    return d["spec"]["template"]["spec"]
def ref(env, var):
    return tuple(env.get(var, {}).get("valueFrom", {}).get("secretKeyRef", {}).values())
jobs, cms, topics = of("Job", "acls"), of("ConfigMap", "acls"), of("Job", "topics")
if not f.check(len(jobs) == 1 and len(cms) == 1 and len(topics) == 1, "one ACL Job, its ConfigMap and the topics Job"):
    sys.exit(f.finish())
job, cm, tjob = jobs[0], cms[0], topics[0]
weights = []
for d in (tjob, cm, job):
    a = d["metadata"].get("annotations", {})
    f.check(a.get("helm.sh/hook") == "pre-install,pre-upgrade", f"{d['kind']}/{d['metadata']['name']}: not a pre-install,pre-upgrade hook")
    f.check(a.get("helm.sh/hook-delete-policy") == "before-hook-creation,hook-succeeded", f"{d['kind']}/{d['metadata']['name']}: hook-delete-policy")
    weights.append(int(a.get("helm.sh/hook-weight", "0")))
f.check(weights == sorted(set(weights)), f"hook weights topics Job < ACL config < ACL Job, got {weights}")
main = [d for d in docs if d["kind"] == "ConfigMap" and "shoal.toml" in d.get("data", {})]
c = pod(job)["containers"][0]
env = env_of(c)
path = env.get("SHOAL_CONFIG", {}).get("value", "")
mount = next((m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"] + "/")), None)
vol = next((v for v in pod(job)["volumes"] if mount and v["name"] == mount["name"]), {})
f.check(vol.get("configMap", {}).get("name") == cm["metadata"]["name"], f"SHOAL_CONFIG={path} is not in the ACL Job's hook ConfigMap")
toml = cm["data"].get(os.path.basename(path))
f.check(len(main) == 1 and toml == main[0]["data"]["shoal.toml"], "the ACL Job's config is not the release's shoal.toml")
f.check(c["command"] == ["shoal-acl"] and c["args"][:2] == ["--apply", "--list"], f"the Job runs {c['command'] + c['args'][:2]}, not shoal-acl --apply --list")
args = c["args"]
roles = [args[i + 1] for i, a in enumerate(args) if a == "--role"]
principals = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--principal")
orch = "User:shoal-orchestrator"
want = {"ingest": orch, "decisions": orch, "results": orch, "worker": "User:$(SHOAL_ACL_WORKER_USER)", "state": "User:shoal-state", "redrive": "User:shoal-dlq"}
f.check(principals == want and sorted(roles) == sorted(want), f"roles and principals: {principals}, expected {want}")
f.check(ref(env, "SHOAL_ACL_WORKER_USER") == ("shoal-worker", "username"), f"the workers' user name from their Secret: {env.get('SHOAL_ACL_WORKER_USER')}")
f.check(env.get("SHOAL__KAFKA__OPTIONS__SASL_USERNAME", {}).get("value") == "kafka-admin", "the Job logs in as acls.admin.username")
f.check(ref(env, "SHOAL__KAFKA__OPTIONS__SASL_PASSWORD") == ("kafka-admin", "password"), "the admin's password from acls.admin.existingSecret")
workers = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment") and d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]
f.check(env.get("SHOAL__WORKER__ID", {}).get("value") == workers[0]["metadata"]["name"], "SHOAL__WORKER__ID is the workers' name prefix")
f.check(ref(env_of(pod(tjob)["containers"][0]), "KAFKA_SASL_PASSWORD") == ("kafka-admin", "password"), "with acls.enabled the topics Job logs in as acls.admin")
for comp, secret, user in (("orchestrator", "shoal-orchestrator", {"value": "shoal-orchestrator"}), ("worker", "shoal-worker", ("shoal-worker", "username"))):
    d = next(d for d in docs if d["kind"] in ("StatefulSet", "Deployment") and d["metadata"]["labels"].get("app.kubernetes.io/component") == comp)
    e = env_of(pod(d)["containers"][0])
    got = ref(e, "SHOAL__KAFKA__OPTIONS__SASL_USERNAME") or {"value": e.get("SHOAL__KAFKA__OPTIONS__SASL_USERNAME", {}).get("value")}
    f.check(ref(e, "SHOAL__KAFKA__OPTIONS__SASL_PASSWORD") == (secret, "password") and got == user, f"the {comp} logs in with its own user ({got}, password {ref(e, 'SHOAL__KAFKA__OPTIONS__SASL_PASSWORD')})")
for s in pod(job)["containers"]:
    for e in s.get("env", []):
        f.check(not (re.search("PASSWORD", e["name"]) and "value" in e), f"{e['name']} has a literal value")
if len(sys.argv) > 2 and not f.items:
    # The Job's command, without a cluster: the roles printed as JSON.
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as fh:
        fh.write(toml)
        fh.flush()
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL")}
        run_env.update({k: v["value"] for k, v in env.items() if "value" in v})
        run_env.update(SHOAL_CONFIG=fh.name, SHOAL_ACL_WORKER_USER="shoal-worker")
        cmd = [os.path.join(sys.argv[2], "shoal-acl")] + [re.sub(r"\$\((\w+)\)", lambda m: run_env[m.group(1)], a) for a in args[2:]] + ["--format", "json"]
        out = subprocess.run(cmd, env=run_env, capture_output=True, text=True)
        if f.check(out.returncode == 0, f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.strip()}"):
            got = {r["role"]: r["principal"] for r in json.loads(out.stdout)["roles"]}
            f.check(set(got) == set(want), f"shoal-acl printed roles {sorted(got)}")
            print("note: " + ", ".join(f"{r['role']} {len(r['bindings'])}" for r in json.loads(out.stdout)["roles"]) + " bindings")
sys.exit(f.finish())
EOF_PY
}

acl_notes() { notes acls "${ACL_VALUES[@]}" && grep -q "shoal-acls (shoal-acl --apply, as acls.admin)" "$OUT_DIR/acls.notes.txt"; }

check_acls() {
  local bin_dir=target/debug
  printf '\n== Kafka ACLs (acls.enabled) and per-component users\n'
  check "helm lint --strict (acls: ${ACL_VALUES[*]})" \
    "$HELM" lint --strict --kube-version "${KUBE_VERSIONS[-1]}" "$CHART" "${ACL_VALUES[@]}"
  check "helm template (acls)" render acls "${ACL_VALUES[@]}"
  check "kubernetes schemas: acls" pycheck validate "$OUT_DIR/acls.yaml" "${KUBE_VERSIONS[@]}"
  check "conventions (acls)" pycheck conventions "$OUT_DIR/acls.yaml"
  check "the ACL Job: hooks after the topics Job, the release's config, each role's principal, the admin's and each component's credentials" \
    acl_expect "$OUT_DIR/acls.yaml"
  check "NOTES.txt names the ACL Job (acls)" acl_notes
  check "SASL with a user per component needs no shared kafka.sasl Secret" \
    render acls-own-users --set kafka.securityProtocol=sasl_ssl --set orchestrator.kafkaSasl.existingSecret=o \
    --set workers.kafkaSasl.existingSecret=w --set workers.keda.enabled=true
  if [[ ${CHART_CHECK_BINARIES:-auto} != no && -x $bin_dir/shoal-acl ]]; then
    check "shoal-acl ($bin_dir) accepts the ACL Job's config and arguments" acl_expect "$OUT_DIR/acls.yaml" "$bin_dir"
  else
    say "skip: no $bin_dir/shoal-acl (or CHART_CHECK_BINARIES=no), so the ACL Job's arguments are not run through it"
  fi
  refused "ACL Job with SASL but no admin Secret" 'acls.admin.existingSecret' \
    --set kafka.securityProtocol=sasl_ssl --set kafka.sasl.existingSecret=k --set acls.enabled=true
  refused "ACL Job over plaintext (every client is User:ANONYMOUS)" 'plaintext.*ANONYMOUS' --set acls.enabled=true
  refused "ACL Job over ssl without principals" 'acls.principals.orchestrator' \
    --set kafka.securityProtocol=ssl --set acls.enabled=true
  refused "a component's user name without its Secret" 'orchestrator.kafkaSasl.existingSecret too' \
    --set kafka.securityProtocol=sasl_ssl --set kafka.sasl.existingSecret=k --set orchestrator.kafkaSasl.username=o
  refused "a component's SASL Secret without SASL" 'workers.kafkaSasl.existingSecret is set but kafka.securityProtocol is plaintext' \
    --set workers.kafkaSasl.existingSecret=w
  refused "SASL with the workers on the shared user and no kafka.sasl Secret" 'kafka.sasl.existingSecret.*the workers' \
    --set kafka.securityProtocol=sasl_ssl --set orchestrator.kafkaSasl.existingSecret=o
  refused "schema: a principal with whitespace (acls.principals.state)" 'acls.*principals.*state' \
    --set 'acls.principals.state=User:a b'
}

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
  - Kafka ACLs and per-component users: the sasl-tls example with the ACL
    Job on (acls.enabled) and the workers' own user, linted, rendered,
    validated and checked like the examples, plus what the Job runs (hooks
    after the topics Job, the release's config, each role's principal, the
    admin's credentials) and, when the binaries were built, shoal-acl
    accepting the Job's config and arguments; bad ACL values refused.

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
check_acls
summary
