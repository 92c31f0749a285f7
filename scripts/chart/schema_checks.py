"""Rendered manifests against the Kubernetes schemas (kubernetes-validate) and
custom resources against subsets of their CRD schemas."""

from __future__ import annotations

from manifests import Failures, format_counts, load_docs

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
# A Prometheus duration ("30s", "1m30s").
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}


def _resource(spec: dict, metadata: dict = _META) -> dict:
    """A custom resource: apiVersion, kind, metadata and spec, all required."""
    return _obj({"apiVersion": _STR, "kind": _STR, "metadata": metadata, "spec": spec}, ["apiVersion", "kind", "metadata", "spec"])


_SCALED_OBJECT_SPEC = _obj(
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
)
_TRIGGER_AUTHENTICATION_SPEC = _obj(
    {
        "secretTargetRef": {"type": "array", "items": _obj({"parameter": _STR, "name": _STR, "key": _STR}, ["parameter", "name", "key"])},
        "env": {"type": "array", "items": _obj({"parameter": _STR, "name": _STR, "containerName": _STR}, ["parameter", "name"])},
    }
)
_SERVICE_MONITOR_SPEC = _obj(
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
                    "interval": _DURATION,
                    "scrapeTimeout": _DURATION,
                    "honorLabels": {"type": "boolean"},
                }
            ),
        },
    },
    ["selector", "endpoints"],
)
_KAFKA_TOPIC = _resource(
    _obj(
        {
            "partitions": {"type": "integer", "minimum": 1},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
            "config": {"type": "object"},
            "topicName": _STR,
        }
    ),
    metadata={
        "type": "object",
        "required": ["name", "labels"],
        "properties": {"labels": {"type": "object", "required": ["strimzi.io/cluster"]}},
    },
)
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): _resource(_SCALED_OBJECT_SPEC),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): _resource(_TRIGGER_AUTHENTICATION_SPEC),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _resource(_SERVICE_MONITOR_SPEC),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): _KAFKA_TOPIC,
    ("kafka.strimzi.io/v1", "KafkaTopic"): _KAFKA_TOPIC,
}


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
                f.check(False, f"{name}: no schema for {api} {kind} in Kubernetes {version}, and no CRD subset in scripts/chart/schema_checks.py")
        builtin[kind] = builtin.get(kind, 0) + 1
    print(f"note: {sum(builtin.values())} manifests against the Kubernetes {' and '.join(versions)} schemas (strict): {format_counts(builtin)}")
    if custom:
        print(f"note: {sum(custom.values())} custom resources against the subsets of their CRD schemas in scripts/chart/schema_checks.py: {format_counts(custom)}")
    return f.finish()
