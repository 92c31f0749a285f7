"""Assertions every render meets: labels, security context, probes, grace
period, identity, secrets only by reference; and the replicas and grace
period that given values produce."""

from __future__ import annotations

import re

from manifests import Failures, configmap_toml, env_of, load_docs, pod_specs, shoal_container, worker_workloads

STANDARD_LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
]


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

        c = shoal_container(pod)
        if c is None:
            continue
        binary = c["command"][0]
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
            if "http-api" in ports:
                names = [e["name"] for e in c["env"]]
                url = env.get("SHOAL__API__ADVERTISED_URL", {}).get("value", "")
                ip = env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                f.check(env.get("SHOAL__API__LISTEN", {}).get("value") == f"0.0.0.0:{ports['http-api']}", f"{cname}: SHOAL__API__LISTEN is not 0.0.0.0:<the http-api port>")
                f.check(url == f"http://$(POD_IP):{ports['http-api']}", f"{cname}: SHOAL__API__ADVERTISED_URL {url!r} is not http://$(POD_IP):<the http-api port>")
                f.check(ip == "status.podIP" and "SHOAL__API__ADVERTISED_URL" in names and names.index("POD_IP") < names.index("SHOAL__API__ADVERTISED_URL"), f"{cname}: POD_IP must come from status.podIP and be defined before SHOAL__API__ADVERTISED_URL")
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
        if shoal_container(pod):
            grace = pod.get("terminationGracePeriodSeconds")
            f.check(grace == int(seconds), f"{doc['kind']}/{doc['metadata']['name']}: terminationGracePeriodSeconds {grace}, expected {seconds}")
    print(f"note: shutdown.timeout_ms = {timeout_ms}, terminationGracePeriodSeconds = {seconds}")
    return f.finish()
