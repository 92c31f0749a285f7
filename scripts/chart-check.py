#!/usr/bin/env python3
"""Checks behind scripts/chart-check.sh: one subcommand per check.

Runs in the virtualenv chart-check.sh creates (PyYAML, jsonschema,
kubernetes-validate). Each subcommand prints what is wrong and exits 1, or
exits 0; lines starting with "note:" or "skip:" are shown by chart-check.sh
even when the check passes.

  dockerfile-build DOCKERFILE MAKEFILE     the image builds what the tests run
  dockerfile-runtime DOCKERFILE            runtime stage: base, user, entrypoint, libraries
  binaries DOCKERFILE CHART                binaries the chart runs = binaries the image has, all workspace binaries
  values-consistency CHART                 values.yaml documented, values.yaml and values.schema.json agree
  validate MANIFESTS K8S_VERSION...        Kubernetes schemas; CRD subsets for custom resources
  conventions MANIFESTS                    labels, security context, probes, grace period, identity, secrets
  replicas MANIFESTS KIND N                the worker workload is a KIND with N replicas
  grace MANIFESTS SECONDS                  every Shoal pod has that terminationGracePeriodSeconds
  expect NAME MANIFESTS                    what the example NAME must render
  shoal-config MANIFESTS BIN_DIR           the real binaries accept the rendered config (--print-config)
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

# The build the image must run: the tests' build (Makefile `test`:
# cargo build --workspace --bins) in release mode, with the lock file enforced.
IMAGE_BUILD = "cargo build --release --workspace --bins --locked"
TEST_BUILD = "cargo build --workspace --bins"
RUNTIME_BASE = "debian:bookworm-slim"
BUILD_PACKAGES = {"cmake", "g++", "libcurl4-openssl-dev", "libsasl2-dev", "libssl-dev", "pkg-config", "zlib1g-dev"}
RUNTIME_PACKAGES = {"ca-certificates", "libcurl4", "libsasl2-2", "libssl3"}

SHOAL_BINARIES = {"shoal-orchestrator", "shoal-worker"}  # binaries that read Shoal's config
STANDARD_LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
]


class Failures:
    """Collects failures so that one run reports all of them."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.items.append(message)
        return ok

    def finish(self) -> int:
        for item in self.items:
            print(f"error: {item}")
        return 1 if self.items else 0


# ---------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def shell_commands(run_args: str) -> list[str]:
    """The commands of a RUN instruction: --mount options dropped, split on && and ;."""
    args = re.sub(r"--mount=\S+\s*", "", run_args)
    return [" ".join(c.split()) for c in re.split(r"&&|;|\|\|", args) if c.strip()]


def apt_packages(stage: list[tuple[str, str]]) -> set[str]:
    packages: set[str] = set()
    for word, args in stage:
        if word != "RUN":
            continue
        for command in shell_commands(args):
            if command.startswith("apt-get install"):
                packages |= {w for w in command.split()[2:] if not w.startswith("-")}
    return packages


def cmd_dockerfile_build(dockerfile: str, makefile: str) -> int:
    f = Failures()
    builds = [
        c for word, args in dockerfile_instructions(dockerfile) if word == "RUN" for c in shell_commands(args) if "cargo build" in c
    ]
    f.check(len(builds) == 1, f"expected exactly one cargo build in {dockerfile}, found {builds}")
    if builds:
        f.check(builds[0] == IMAGE_BUILD, f"{dockerfile} runs `{builds[0]}`, expected `{IMAGE_BUILD}`")
        print(f"note: {dockerfile}: {builds[0]}")
    make = Path(makefile).read_text()
    # The recipe of `make test`: the build whose binaries the tests run.
    test_recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", make, re.M)
    recipe_builds = [" ".join(line.split()) for line in (test_recipe.group(1) if test_recipe else "").splitlines() if "cargo build" in line]
    f.check(TEST_BUILD in recipe_builds, f"`make test` no longer runs `{TEST_BUILD}` (found {recipe_builds}); update IMAGE_BUILD/TEST_BUILD here and the Dockerfile together")
    if builds:
        selection = builds[0].replace(" --release", "").replace(" --locked", "")
        f.check(selection == TEST_BUILD, f"the image's build selects `{selection}`, the tests' build `{TEST_BUILD}`")
        print(f"note: {makefile} test: {TEST_BUILD} (same packages and targets, debug profile)")
    f.check(
        "cargo build --release --workspace --bins" in " ".join(make.split()),
        f"{makefile} has no release build `cargo build --release --workspace --bins` (make bench)",
    )
    return f.finish()


def cmd_dockerfile_runtime(dockerfile: str) -> int:
    f = Failures()
    all_stages = stages(dockerfile_instructions(dockerfile))
    if not f.check(len(all_stages) >= 2, "expected a multi-stage Dockerfile (build, runtime)"):
        return f.finish()
    build, runtime = all_stages[0], all_stages[-1]
    build_from = build[0][1].split()
    f.check(re.fullmatch(r"rust:[0-9.]+-bookworm", build_from[0]) is not None, f"build stage FROM {build_from[0]}: expected the official rust image, a pinned version on bookworm")
    missing = BUILD_PACKAGES - apt_packages(build)
    f.check(not missing, f"build stage does not install {sorted(missing)}")
    f.check(runtime[0][1].split()[0] == RUNTIME_BASE, f"runtime stage FROM {runtime[0][1]}: expected {RUNTIME_BASE}")
    missing = RUNTIME_PACKAGES - apt_packages(runtime)
    f.check(not missing, f"runtime stage does not install {sorted(missing)}")
    users = [args for word, args in runtime if word == "USER"]
    if f.check(bool(users), "runtime stage sets no USER: the container would run as root"):
        user = users[-1].split(":")[0]
        f.check(user.isdigit() and int(user) != 0, f"runtime USER {users[-1]}: expected a numeric non-root uid (Kubernetes' runAsNonRoot needs a number)")
        f.check(user == "10001", f"runtime USER {users[-1]}: the chart's podSecurityContext runs as 10001")
        print(f"note: runtime stage FROM {runtime[0][1]}, USER {users[-1]}")
    for word in ("ENTRYPOINT", "CMD"):
        for args in (a for w, a in runtime if w == word):
            f.check(args.startswith("["), f"{word} {args}: use the exec (JSON) form, not a shell")
            if args.startswith("["):
                f.check(json.loads(args)[0] not in ("sh", "/bin/sh", "bash", "/bin/bash"), f"{word} {args}: no shell entrypoint")
    return f.finish()


def workspace_binaries(root: Path) -> dict[str, str]:
    """Binary target name -> package, as cargo discovers them for the workspace members."""
    workspace = tomllib.loads((root / "Cargo.toml").read_text())
    result: dict[str, str] = {}
    for member in workspace["workspace"]["members"]:
        manifest = tomllib.loads((root / member / "Cargo.toml").read_text())
        package = manifest["package"]["name"]
        for target in manifest.get("bin", []):
            result[target["name"]] = package
        if manifest["package"].get("autobins", True):
            if (root / member / "src/main.rs").exists() and not any(b.get("path") == "src/main.rs" for b in manifest.get("bin", [])):
                result[package] = package
            for path in sorted((root / member / "src/bin").glob("*.rs")):
                if not any(b.get("path") == f"src/bin/{path.name}" for b in manifest.get("bin", [])):
                    result[path.stem] = package
    return result


def cmd_binaries(dockerfile: str, chart: str) -> int:
    f = Failures()
    workspace = workspace_binaries(Path("."))
    copied = set()
    for word, args in dockerfile_instructions(dockerfile):
        if word == "RUN":
            for command in shell_commands(args):
                if command.startswith("cp "):
                    copied |= {Path(p).name for p in command.split()[1:-1] if p.startswith("target/release/")}
    chart_bins = set()
    for template in Path(chart, "templates").glob("*.yaml"):
        chart_bins |= set(re.findall(r"^\s*-\s*(shoal-[a-z-]+)\s*$", template.read_text(), re.M))
    f.check(bool(chart_bins), "found no binary in the chart's container commands")
    for name in sorted(chart_bins | copied):
        f.check(name in workspace, f"{name} is not a binary of the workspace (binaries: {sorted(workspace)})")
    f.check(chart_bins <= copied, f"the chart runs {sorted(chart_bins - copied)}, which the image does not contain")
    print(f"note: chart runs {sorted(chart_bins)}; image has {sorted(copied)}; all [[bin]] targets of " + ", ".join(sorted({workspace[b] for b in copied if b in workspace})))
    return f.finish()


# ---------------------------------------------------------------------------
# values.yaml and values.schema.json


def documented_keys(values_path: Path) -> tuple[list[str], list[str]]:
    """Dotted paths of all keys in values.yaml, and those without a "# --" comment above."""
    # One parser of the "# --" comments: the one that writes the README's
    # values reference.
    spec = importlib.util.spec_from_file_location("chart_values_doc", Path(__file__).with_name("chart-values-doc.py"))
    assert spec is not None and spec.loader is not None
    values_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(values_doc)
    docs = values_doc.descriptions(values_path.read_text())
    return list(docs), [path for path, text in docs.items() if text is None]


def cmd_values_consistency(chart: str) -> int:
    f = Failures()
    values_path = Path(chart, "values.yaml")
    values = yaml.safe_load(values_path.read_text())
    schema = json.loads(Path(chart, "values.schema.json").read_text())
    paths, undocumented = documented_keys(values_path)

    def value_at(path: str) -> object:
        node: object = values
        for key in path.split("."):
            node = node[key]  # type: ignore[index]
        return node

    # Every value needs a description; a key that only groups others (a
    # non-empty map) may go without.
    undocumented = [p for p in undocumented if not (isinstance(value_at(p), dict) and value_at(p))]
    f.check(not undocumented, f"values without a '# --' description in values.yaml: {undocumented}")

    def walk(node: object, sch: dict, path: str) -> None:
        if not isinstance(node, dict) or "properties" not in sch:
            return
        props = sch["properties"]
        for key in props:
            f.check(key in node, f"{path + key}: in values.schema.json but not in values.yaml (document its default there)")
        for key, value in node.items():
            if key not in props:
                if sch.get("additionalProperties") is False:
                    f.check(False, f"{path + key}: in values.yaml but not in values.schema.json")
                continue
            walk(value, props[key], f"{path}{key}.")
        if sch.get("additionalProperties") is not False:
            f.check(False, f"{path or '(root)'}: a chart object in the schema without additionalProperties: false")

    walk(values, schema, "")
    print(f"note: {len(paths)} keys in values.yaml; every value described and in the schema")
    return f.finish()


# ---------------------------------------------------------------------------
# Rendered manifests


def load_docs(path: str) -> list[dict]:
    with open(path) as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def configmap_toml(docs: list[dict]) -> dict:
    maps = [d for d in docs if d["kind"] == "ConfigMap" and "shoal.toml" in d.get("data", {})]
    if len(maps) != 1:
        raise SystemExit(f"error: expected one ConfigMap with shoal.toml, found {len(maps)}")
    return tomllib.loads(maps[0]["data"]["shoal.toml"])


def pod_specs(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(resource, pod spec) for every resource that runs pods."""
    return [(d, d["spec"]["template"]["spec"]) for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet")]


def shoal_binary(pod: dict) -> str | None:
    for c in pod["containers"]:
        if c.get("command") and c["command"][0] in SHOAL_BINARIES:
            return c["command"][0]
    return None


def worker_workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# Subsets of the custom resources' CRD schemas (KEDA 2.x, Prometheus Operator
# monitoring.coreos.com/v1, Strimzi kafka.strimzi.io v1beta2/v1), written for
# the fields this chart renders. The API server prunes unknown fields of a
# custom resource silently, so these refuse unknown fields where the chart
# writes them: a misspelt field fails here instead of vanishing in a cluster.
def _obj(props: dict, required: list[str] | None = None, extra: bool = False) -> dict:
    out = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        out["required"] = required
    return out


_META = {"type": "object", "required": ["name"]}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
_TARGET = _obj({"apiVersion": _STR, "kind": {"enum": ["Deployment", "StatefulSet"]}, "name": _STR, "envSourceContainerName": _STR}, ["name"])
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): _obj(
        {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": _META,
            "spec": _obj(
                {
                    "scaleTargetRef": _TARGET,
                    "pollingInterval": _INT,
                    "cooldownPeriod": _INT,
                    "idleReplicaCount": _INT,
                    "minReplicaCount": _INT,
                    "maxReplicaCount": _INT,
                    "fallback": _obj({"failureThreshold": _INT, "replicas": _INT}),
                    "advanced": _obj(
                        {
                            "restoreToOriginalReplicaCount": {"type": "boolean"},
                            "horizontalPodAutoscalerConfig": _obj({"name": _STR, "behavior": {"type": "object"}}),
                        }
                    ),
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": _obj(
                            {
                                "type": _STR,
                                "name": _STR,
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "useCachedMetrics": {"type": "boolean"},
                                # Every value of a trigger's metadata is a string in the CRD.
                                "metadata": _STRMAP,
                                "authenticationRef": _obj({"name": _STR, "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]}}, ["name"]),
                            },
                            ["type", "metadata"],
                        ),
                    },
                },
                ["scaleTargetRef", "triggers"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): _obj(
        {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": _META,
            "spec": _obj(
                {
                    "secretTargetRef": {"type": "array", "items": _obj({"parameter": _STR, "name": _STR, "key": _STR}, ["parameter", "name", "key"])},
                    "env": {"type": "array", "items": _obj({"parameter": _STR, "name": _STR, "containerName": _STR}, ["parameter", "name"])},
                }
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _obj(
        {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": _META,
            "spec": _obj(
                {
                    "selector": _obj({"matchLabels": _STRMAP, "matchExpressions": {"type": "array"}}),
                    "namespaceSelector": _obj({"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}}),
                    "jobLabel": _STR,
                    "endpoints": {
                        "type": "array",
                        "items": _obj(
                            {
                                "port": _STR,
                                "targetPort": {"type": ["string", "integer"]},
                                "path": _STR,
                                "scheme": {"enum": ["http", "https"]},
                                "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                                "scrapeTimeout": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                                "honorLabels": {"type": "boolean"},
                            }
                        ),
                    },
                },
                ["selector", "endpoints"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
}
for _version in ("kafka.strimzi.io/v1beta2", "kafka.strimzi.io/v1"):
    CRD_SCHEMAS[(_version, "KafkaTopic")] = _obj(
        {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": {
                "type": "object",
                "required": ["name", "labels"],
                "properties": {"labels": {"type": "object", "required": ["strimzi.io/cluster"]}},
            },
            "spec": _obj(
                {
                    "partitions": {"type": "integer", "minimum": 1},
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                    "config": {"type": "object"},
                    "topicName": _STR,
                }
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    )


def cmd_validate(manifests: str, *versions: str) -> int:
    import jsonschema
    import kubernetes_validate

    f = Failures()
    docs = load_docs(manifests)
    f.check(bool(docs), f"{manifests} holds no manifest")
    builtin: dict[str, int] = {}
    custom: dict[str, int] = {}
    for doc in docs:
        kind, api = doc.get("kind"), doc.get("apiVersion")
        name = f"{kind}/{doc.get('metadata', {}).get('name')}"
        if (api, kind) in CRD_SCHEMAS:
            errors = sorted(jsonschema.Draft7Validator(CRD_SCHEMAS[(api, kind)]).iter_errors(doc), key=lambda e: list(e.path))
            for e in errors:
                f.check(False, f"{name} ({api}, CRD subset): {'.'.join(map(str, e.path))}: {e.message}")
            custom[kind] = custom.get(kind, 0) + 1
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                f.check(False, f"{name} against Kubernetes {version}: {'.'.join(map(str, e.path))}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                f.check(False, f"{name}: no schema for {api} {kind} in Kubernetes {version}, and no CRD subset in chart-check.py")
        builtin[kind] = builtin.get(kind, 0) + 1
    count = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items()))  # noqa: E731
    print(f"note: {sum(builtin.values())} manifests against the Kubernetes {' and '.join(versions)} schemas (strict): {count(builtin)}")
    if custom:
        print(f"note: {sum(custom.values())} custom resources against the subsets of their CRD schemas in chart-check.py: {count(custom)}")
    return f.finish()


def cmd_conventions(manifests: str) -> int:
    f = Failures()
    docs = load_docs(manifests)
    config = configmap_toml(docs)
    timeout_s = config["shutdown"]["timeout_ms"] / 1000
    port = int(config["observability"]["listen"].rsplit(":", 1)[1])
    by_kind_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}

    f.check(not [d for d in docs if d["kind"] == "Secret"], "the chart renders a Secret; it must only reference existing ones")
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        labels = doc["metadata"].get("labels", {})
        missing = [label for label in STANDARD_LABELS if label not in labels]
        f.check(not missing, f"{name}: missing labels {missing}")
        if doc["kind"] not in ("ServiceAccount", "NetworkPolicy"):
            f.check("app.kubernetes.io/component" in labels, f"{name}: no app.kubernetes.io/component label")

    for doc, pod in pod_specs(docs):
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        psc = pod.get("securityContext", {})
        f.check(psc.get("runAsNonRoot") is True, f"{name}: pod securityContext.runAsNonRoot is not true")
        f.check(pod.get("automountServiceAccountToken") is False, f"{name}: the ServiceAccount token is mounted (Shoal never calls the API)")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod.get("initContainers", []) + pod["containers"]:
            cname = f"{name} container {c['name']}"
            sc = c.get("securityContext")
            if not f.check(bool(sc), f"{cname}: no securityContext"):
                continue
            f.check(sc.get("readOnlyRootFilesystem") is True, f"{cname}: readOnlyRootFilesystem is not true")
            f.check(sc.get("allowPrivilegeEscalation") is False, f"{cname}: allowPrivilegeEscalation is not false")
            f.check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{cname}: runAsNonRoot is not true")
            f.check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{cname}: capabilities.drop does not contain ALL")
            f.check(sc.get("privileged") is not True, f"{cname}: privileged")
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
            f.check(seccomp == "RuntimeDefault", f"{cname}: seccompProfile is {seccomp}, expected RuntimeDefault")
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            f.check(bool(tmp) and "emptyDir" in volumes.get(tmp[0]["name"], {}), f"{cname}: no writable emptyDir at /tmp (the root filesystem is read-only)")
            f.check(bool(c.get("resources", {}).get("requests")) and "memory" in c.get("resources", {}).get("limits", {}), f"{cname}: no resource requests and memory limit")
            for env in c.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|PRIVATE|_KEY$", env["name"]):
                    f.check("value" not in env, f"{cname}: {env['name']} has a literal value; credentials come only from existing Secrets")
                    f.check("secretKeyRef" in env.get("valueFrom", {}), f"{cname}: {env['name']} is not read from a Secret (secretKeyRef)")

        binary = shoal_binary(pod)
        if binary is None:
            continue
        c = next(c for c in pod["containers"] if c.get("command", [None])[0] == binary)
        cname = f"{name} ({binary})"
        grace = pod.get("terminationGracePeriodSeconds")
        f.check(grace is not None and grace > timeout_s + 1, f"{cname}: terminationGracePeriodSeconds {grace} is not longer than shutdown.timeout_ms ({timeout_s:g} s) plus the 1 s watchdog")
        probes = {p: c.get(p, {}).get("httpGet", {}) for p in ("livenessProbe", "readinessProbe", "startupProbe")}
        f.check(probes["livenessProbe"].get("path") == "/healthz", f"{cname}: liveness probe is not GET /healthz")
        f.check(probes["readinessProbe"].get("path") == "/readyz", f"{cname}: readiness probe is not GET /readyz")
        f.check(probes["startupProbe"].get("path") == "/healthz", f"{cname}: startup probe is not GET /healthz")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe, get in probes.items():
            f.check(get.get("port") in ports and ports[get.get("port")] == port, f"{cname}: {probe} port {get.get('port')} is not the observability port {port}")
        env = env_of(c)
        config_path = env.get("SHOAL_CONFIG", {}).get("value", "")
        mount = [m for m in c.get("volumeMounts", []) if config_path.startswith(m["mountPath"] + "/")]
        if f.check(bool(mount), f"{cname}: SHOAL_CONFIG={config_path!r} is not in a mounted volume"):
            cm = volumes.get(mount[0]["name"], {}).get("configMap", {}).get("name")
            key = config_path[len(mount[0]["mountPath"]) + 1 :]
            f.check(key in by_kind_name.get(("ConfigMap", cm), {}).get("data", {}), f"{cname}: SHOAL_CONFIG points at {key} of ConfigMap {cm}, which does not exist")
        if binary == "shoal-worker":
            wid = env.get("SHOAL__WORKER__ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            f.check(wid == "metadata.name", f"{cname}: SHOAL__WORKER__ID does not come from the pod name (downward API)")
        if binary == "shoal-orchestrator":
            f.check(doc["spec"].get("replicas") == 1, f"{cname}: replicas is {doc['spec'].get('replicas')}, must be 1")
            f.check(bool(config.get("orchestrator", {}).get("id")), f"{cname}: no stable orchestrator.id in the config")
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
            names = [e["name"] for e in c["env"]]
            attrs = env.get("OTEL_RESOURCE_ATTRIBUTES", {}).get("value", "")
            for attr, var, field in (("k8s.pod.name", "POD_NAME", "metadata.name"), ("k8s.namespace.name", "POD_NAMESPACE", "metadata.namespace")):
                f.check(f"{attr}=$({var})" in attrs, f"{cname}: OTEL_RESOURCE_ATTRIBUTES has no {attr}=$({var})")
                ref = env.get(var, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                f.check(ref == field and names.index(var) < names.index("OTEL_RESOURCE_ATTRIBUTES"), f"{cname}: {var} must come from {field} and be defined before OTEL_RESOURCE_ATTRIBUTES")
            f.check(bool(env.get("OTEL_SERVICE_NAME", {}).get("value")), f"{cname}: no OTEL_SERVICE_NAME")
            f.check(config["observability"].get("otlp_enabled") is True, f"{cname}: OTLP endpoint set but observability.otlp_enabled is not true")

    # Credentials never in the config file.
    def secret_keys(node: object, path: str = "") -> list[str]:
        if isinstance(node, dict):
            return [p for k, v in node.items() for p in secret_keys(v, f"{path}{k}.")]
        return [path[:-1]] if re.search(r"password|secret|jaas", path) else []

    f.check(not secret_keys(config), f"credentials in the rendered config: {secret_keys(config)}")

    # Topic provisioning: the binaries create topics only when nothing else does.
    provisioned = any(d["kind"] == "KafkaTopic" for d in docs) or any(
        d["kind"] == "Job" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "topics" for d in docs
    )
    if provisioned:
        f.check(config["topics"]["create"] is False, "topics are provisioned by the chart but topics.create is not false")
    for t in (d for d in docs if d["kind"] == "KafkaTopic"):
        key = next(k for k in config["topics"] if isinstance(config["topics"][k], dict) and config["topics"][k]["name"] == t["spec"]["topicName"])
        f.check(t["spec"]["partitions"] == config["topics"][key]["partitions"], f"KafkaTopic {t['spec']['topicName']}: partitions differ from the config")
        f.check(t["spec"]["replicas"] == config["topics"][key]["replication"], f"KafkaTopic {t['spec']['topicName']}: replicas differ from the config")

    # Services, PDBs and autoscalers point at what exists.
    workers = worker_workloads(docs)
    f.check(len(workers) == 1, f"expected one worker workload, found {len(workers)}")
    pods = [(d, d["spec"]["template"]) for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for svc in (d for d in docs if d["kind"] == "Service"):
        sel = svc["spec"]["selector"]
        match = [p for _, p in pods if sel.items() <= p["metadata"]["labels"].items()]
        if f.check(bool(match), f"Service/{svc['metadata']['name']}: its selector matches no pod template"):
            names = {p["name"] for c in match[0]["spec"]["containers"] for p in c.get("ports", [])}
            for p in svc["spec"]["ports"]:
                f.check(p["targetPort"] in names, f"Service/{svc['metadata']['name']}: targetPort {p['targetPort']} is no container port")
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        f.check(
            bool(workers) and sel.items() <= workers[0]["spec"]["template"]["metadata"]["labels"].items(),
            f"PodDisruptionBudget/{pdb['metadata']['name']}: its selector does not match the workers",
        )
    if workers:
        w = workers[0]
        if w["kind"] == "StatefulSet":
            f.check(("Service", w["spec"].get("serviceName")) in by_kind_name, f"StatefulSet/{w['metadata']['name']}: serviceName names no Service")
        partitions = config["topics"]["commands"]["partitions"]
        for scaler in (d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")):
            ref = scaler["spec"]["scaleTargetRef"]
            sname = f"{scaler['kind']}/{scaler['metadata']['name']}"
            f.check((ref.get("kind"), ref["name"]) == (w["kind"], w["metadata"]["name"]), f"{sname}: scaleTargetRef {ref} is not the worker {w['kind']}")
            most = scaler["spec"].get("maxReplicas", scaler["spec"].get("maxReplicaCount"))
            f.check(most is not None and most <= partitions, f"{sname}: at most {most} workers, more than the {partitions} partitions of the commands topic")
            f.check("replicas" not in w["spec"], f"{sname}: the worker {w['kind']} also sets replicas, which every upgrade would reset")
            if scaler["kind"] == "ScaledObject":
                meta = scaler["spec"]["triggers"][0]["metadata"]
                f.check(meta.get("consumerGroup") == config["worker"]["group_id"], f"{sname}: consumerGroup {meta.get('consumerGroup')} is not worker.group_id")
                f.check(meta.get("topic") == config["topics"]["commands"]["name"], f"{sname}: topic {meta.get('topic')} is not the commands topic")
                f.check(meta.get("bootstrapServers") == config["kafka"]["bootstrap_servers"], f"{sname}: bootstrapServers differ from the config")
                f.check(meta.get("allowIdleConsumers") == "false", f"{sname}: allowIdleConsumers must be false")
                if config["kafka"]["security_protocol"] != "plaintext":
                    auth = scaler["spec"]["triggers"][0].get("authenticationRef", {}).get("name")
                    f.check(("TriggerAuthentication", auth) in by_kind_name, f"{sname}: Kafka is {config['kafka']['security_protocol']} but the trigger has no TriggerAuthentication")
    return f.finish()


def cmd_replicas(manifests: str, kind: str, n: str) -> int:
    f = Failures()
    workers = worker_workloads(load_docs(manifests))
    if f.check(len(workers) == 1, f"expected one worker workload, found {len(workers)}"):
        w = workers[0]
        f.check(w["kind"] == kind, f"the worker workload is a {w['kind']}, expected {kind}")
        f.check(w["spec"].get("replicas") == int(n), f"{w['kind']}/{w['metadata']['name']} has replicas: {w['spec'].get('replicas')}, expected {n}")
        print(f"note: {w['kind']}/{w['metadata']['name']} replicas: {w['spec'].get('replicas')}")
    return f.finish()


def cmd_grace(manifests: str, seconds: str) -> int:
    f = Failures()
    docs = load_docs(manifests)
    timeout_ms = configmap_toml(docs)["shutdown"]["timeout_ms"]
    for doc, pod in pod_specs(docs):
        if shoal_binary(pod):
            grace = pod.get("terminationGracePeriodSeconds")
            f.check(grace == int(seconds), f"{doc['kind']}/{doc['metadata']['name']}: terminationGracePeriodSeconds {grace}, expected {seconds}")
    print(f"note: shutdown.timeout_ms = {timeout_ms}, terminationGracePeriodSeconds = {seconds}")
    return f.finish()


def count_kinds(docs: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in docs:
        out[d["kind"]] = out.get(d["kind"], 0) + 1
    return out


def cmd_expect(name: str, manifests: str) -> int:
    """What each values file must produce, beyond the conventions every render meets."""
    f = Failures()
    docs = load_docs(manifests)
    kinds = count_kinds(docs)
    config = configmap_toml(docs)
    workers = worker_workloads(docs)
    w = workers[0] if workers else {"kind": None, "spec": {"template": {"spec": {"containers": [{}]}}}}
    wc = w["spec"]["template"]["spec"]["containers"][0]
    env = env_of(wc)

    def has(kind: str, n: int) -> None:
        f.check(kinds.get(kind, 0) == n, f"expected {n} {kind}, rendered {kinds.get(kind, 0)}")

    def secret_ref(var: str, secret: str, key: str) -> None:
        ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef", {})
        f.check(ref == {"name": secret, "key": key}, f"{var}: expected secretKeyRef {secret}/{key}, got {env.get(var)}")

    optional = ["HorizontalPodAutoscaler", "ScaledObject", "TriggerAuthentication", "ServiceMonitor", "NetworkPolicy", "Job", "KafkaTopic"]
    if name == "default":
        for kind in optional:
            has(kind, 0)
        f.check(w["kind"] == "StatefulSet" and w["spec"].get("replicas") == 3, "default: a worker StatefulSet with 3 replicas")
        f.check(config["topics"]["create"] is True, "default: the binaries create the topics")
        f.check(config["log"]["format"] == "json", "default: JSON logs")
        f.check("OTEL_EXPORTER_OTLP_ENDPOINT" not in env, "default: no OTLP export")
    elif name == "sasl-tls":
        values = yaml.safe_load(Path("deploy/helm/examples/sasl-tls.yaml").read_text())
        secret = values["kafka"]["sasl"]["existingSecret"]
        secret_ref("SHOAL__KAFKA__OPTIONS__SASL_PASSWORD", secret, values["kafka"]["sasl"]["passwordKey"])
        f.check(env.get("SHOAL__KAFKA__OPTIONS__SASL_USERNAME", {}).get("value") == values["kafka"]["sasl"]["username"], "the SASL user name is passed as a value")
        f.check(config["kafka"]["security_protocol"] == "sasl_ssl", "security_protocol sasl_ssl")
        f.check(config["kafka"]["options"].get("sasl_mechanism") == "SCRAM-SHA-512", "sasl_mechanism SCRAM-SHA-512 in the config")
        f.check(config["kafka"]["options"].get("ssl_ca_location") == "/etc/shoal/kafka-tls/ca.crt", "ssl_ca_location points at the mounted CA")
        mounts = {m["mountPath"] for m in wc.get("volumeMounts", [])}
        f.check("/etc/shoal/kafka-tls" in mounts, "the CA Secret is mounted at /etc/shoal/kafka-tls")
        job = [d for d in docs if d["kind"] == "Job"]
        if f.check(len(job) == 1, "the topics Job is rendered"):
            jenv = env_of(job[0]["spec"]["template"]["spec"]["containers"][0])
            ref = jenv.get("KAFKA_SASL_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef", {})
            f.check(ref.get("name") == secret, "the topics Job reads the SASL password from the Secret")
            f.check(job[0]["metadata"]["annotations"].get("helm.sh/hook") == "pre-install,pre-upgrade", "the topics Job is a pre-install,pre-upgrade hook")
        f.check(config["topics"]["commands"]["replication"] == 3, "replication 3")
        has("ServiceMonitor", 2)
        has("NetworkPolicy", 1)
        f.check(env.get("OTEL_EXPORTER_OTLP_PROTOCOL", {}).get("value") in ("grpc", "http/protobuf"), "OTLP protocol set")
        secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in wc.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        print(f"note: SASL password from secretKeyRef {sorted(secrets)}; no literal credential anywhere in the output")
    elif name == "keda":
        has("ScaledObject", 1)
        has("TriggerAuthentication", 1)
        has("HorizontalPodAutoscaler", 0)
        so = next(d for d in docs if d["kind"] == "ScaledObject")
        trig = so["spec"]["triggers"][0]
        f.check(trig["type"] == "kafka", "a kafka trigger")
        f.check(so["spec"]["maxReplicaCount"] <= config["topics"]["commands"]["partitions"], "maxReplicaCount within the partitions")
        f.check(trig["metadata"].get("tls") == "enable", "KEDA connects with TLS")
        ta = next(d for d in docs if d["kind"] == "TriggerAuthentication")
        params = {r["parameter"] for r in ta["spec"].get("secretTargetRef", [])}
        f.check({"ca", "cert", "key"} <= params, f"TriggerAuthentication has ca, cert and key from Secrets (has {sorted(params)})")
        f.check(config["kafka"]["options"].get("ssl_certificate_location", "").startswith("/etc/shoal/kafka-tls-client/"), "client certificate configured")
        print(f"note: ScaledObject {so['metadata']['name']}: {so['spec']['minReplicaCount']}..{so['spec']['maxReplicaCount']} workers, lag target {trig['metadata']['lagThreshold']}")
    elif name == "hpa":
        has("HorizontalPodAutoscaler", 1)
        has("ScaledObject", 0)
        f.check(w["kind"] == "Deployment", "workers as a Deployment")
        f.check("replicas" not in w["spec"], "no replicas on an autoscaled Deployment")
        strategy = w["spec"].get("strategy", {})
        f.check(strategy.get("rollingUpdate", {}).get("maxUnavailable") == 0, "rolling update with maxUnavailable 0")
    elif name == "strimzi-topics":
        has("KafkaTopic", 5)
        has("Job", 0)
        f.check(config["topics"]["create"] is False, "topics.create = false")
        topics = [d for d in docs if d["kind"] == "KafkaTopic"]
        f.check(all(t["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep" for t in topics), "KafkaTopics kept on uninstall")
        f.check(all(t["metadata"]["labels"].get("strimzi.io/cluster") for t in topics), "strimzi.io/cluster label")
    elif name == "simulator":
        sims = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "simulator"]
        f.check(len(sims) == 1, "the simulator Deployment")
        f.check(config["feed"].get("url", "").startswith("ws://") and config["feed"]["url"].endswith(":9001"), f"the orchestrator reads the simulator ({config['feed'].get('url')})")
    elif name == "variant-a":
        has("Deployment", 1)  # the workers only: orchestrator.enabled=false
        has("ServiceAccount", 0)
        f.check(w["kind"] == "Deployment" and "replicas" not in w["spec"], "KEDA-scaled worker Deployment without replicas")
        f.check(w["spec"]["template"]["spec"]["serviceAccountName"] == "default", "the namespace's default ServiceAccount")
        f.check(wc.get("image", "").endswith("@sha256:" + "0123456789abcdef" * 4), f"image pinned by digest ({wc.get('image')})")
        secret_ref("SHOAL__KAFKA__OPTIONS__SASL_USERNAME", "kafka-user", "username")
        secret_ref("SHOAL__KAFKA__OPTIONS__SASL_PASSWORD", "kafka-user", "password")
        so = next((d for d in docs if d["kind"] == "ScaledObject"), None)
        ta = next((d for d in docs if d["kind"] == "TriggerAuthentication"), None)
        if f.check(so is not None and ta is not None, "ScaledObject and TriggerAuthentication"):
            f.check(so["spec"]["triggers"][0]["metadata"].get("sasl") == "plaintext", "KEDA sasl mode plaintext for PLAIN")
            f.check("tls" not in so["spec"]["triggers"][0]["metadata"], "no TLS for sasl_plaintext")
            refs = {r["parameter"]: (r["name"], r["key"]) for r in ta["spec"]["secretTargetRef"]}
            f.check(refs == {"username": ("kafka-user", "username"), "password": ("kafka-user", "password")}, f"KEDA credentials from the Secret ({refs})")
        f.check(config["topics"]["create"] is False, "provisioning none: topics.create = false")
    elif name == "variant-b":
        has("NetworkPolicy", 2)
        has("PodDisruptionBudget", 0)
        has("ServiceMonitor", 2)
        has("KafkaTopic", 5)
        f.check(all(d["apiVersion"] == "kafka.strimzi.io/v1" for d in docs if d["kind"] == "KafkaTopic"), "KafkaTopic kafka.strimzi.io/v1")
        f.check(env.get("OTEL_EXPORTER_OTLP_PROTOCOL", {}).get("value") == "http/protobuf", "OTLP over http/protobuf")
        f.check(config["orchestrator"]["stages"] == ["decisions", "results"], "orchestrator stages from the values")
        sim_np = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "simulator"]
        f.check(len(sim_np) == 1, "a NetworkPolicy for the simulator")
    else:
        f.check(False, f"no expectations written for example {name!r} in chart-check.py (cmd_expect)")
    print(f"note: rendered {', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}")
    return f.finish()


def cmd_shoal_config(manifests: str, bin_dir: str) -> int:
    """Runs each Shoal binary the chart deploys with the rendered config and
    the environment its pod gets (secrets replaced by placeholders), with
    --print-config: the binary loads and validates it exactly as at start-up."""
    f = Failures()
    docs = load_docs(manifests)
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    with tempfile.TemporaryDirectory() as tmp:
        for doc, pod in pod_specs(docs):
            binary = shoal_binary(pod)
            if binary is None:
                continue
            c = next(c for c in pod["containers"] if c.get("command", [None])[0] == binary)
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            pod_name = doc["metadata"]["name"] + ("-0" if doc["kind"] == "StatefulSet" else "-7d9f8b6c5d-x2x4q")
            fields = {"metadata.name": pod_name, "metadata.namespace": "shoal", "spec.nodeName": "node-1"}
            for e in c.get("env", []):
                if "value" in e:
                    value = e["value"]
                    value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)
                    env[e["name"]] = value
                elif "fieldRef" in e.get("valueFrom", {}):
                    env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
                elif "secretKeyRef" in e.get("valueFrom", {}):
                    env[e["name"]] = "placeholder-from-secret"
            config_path = env.get("SHOAL_CONFIG", "")
            for m in c.get("volumeMounts", []):
                if config_path.startswith(m["mountPath"] + "/"):
                    data = maps[volumes[m["name"]]["configMap"]["name"]]
                    local = Path(tmp, config_path[len(m["mountPath"]) + 1 :])
                    local.write_text(data[local.name])
                    env["SHOAL_CONFIG"] = str(local)
            run = subprocess.run([str(Path(bin_dir, binary)), "--print-config"], env=env, capture_output=True, text=True, timeout=60)
            label = f"{doc['kind']}/{doc['metadata']['name']} ({binary})"
            if not f.check(run.returncode == 0, f"{label} refuses the rendered config (exit {run.returncode}): {run.stderr.strip()}"):
                continue
            effective = json.loads(run.stdout)
            rendered = tomllib.loads(Path(env["SHOAL_CONFIG"]).read_text())
            f.check(effective["kafka"]["bootstrap_servers"] == rendered["kafka"]["bootstrap_servers"], f"{label}: bootstrap servers not taken from the file")
            # The probes and the metrics Service reach what the binary serves.
            f.check(effective["observability"]["listen"] == rendered["observability"]["listen"], f"{label}: observability.listen not taken from the file")
            f.check(effective["observability"]["otlp_enabled"] == rendered["observability"]["otlp_enabled"], f"{label}: observability.otlp_enabled not taken from the file")
            f.check(effective["topics"]["create"] == rendered["topics"]["create"], f"{label}: topics.create not taken from the file")
            f.check(effective["delivery"]["transactional_id_prefix"] == rendered["delivery"]["transactional_id_prefix"], f"{label}: transactional id prefix not taken from the file")
            if binary == "shoal-worker":
                f.check(effective["worker"]["id"] == pod_name, f"{label}: worker.id is {effective['worker']['id']!r}, expected the pod name {pod_name!r}")
            if "SHOAL__KAFKA__OPTIONS__SASL_PASSWORD" in env:
                f.check(effective["kafka"]["options"].get("sasl_password") == "<redacted>", f"{label}: the SASL password from the environment is not in kafka.options")
            ident = f"worker.id={effective['worker']['id']}" if binary == "shoal-worker" else f"orchestrator.id={effective['orchestrator']['id']}"
            print(f"note: {label}: accepted, {ident}, delivery={effective['delivery']['mode']}, topics.create={effective['topics']['create']}")
    return f.finish()


COMMANDS = {
    "dockerfile-build": cmd_dockerfile_build,
    "dockerfile-runtime": cmd_dockerfile_runtime,
    "binaries": cmd_binaries,
    "values-consistency": cmd_values_consistency,
    "validate": cmd_validate,
    "conventions": cmd_conventions,
    "replicas": cmd_replicas,
    "grace": cmd_grace,
    "expect": cmd_expect,
    "shoal-config": cmd_shoal_config,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
