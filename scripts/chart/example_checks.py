"""What each example values file (and each variant) must render, beyond the
conventions every render meets."""

from __future__ import annotations

from pathlib import Path

import yaml

from manifests import Failures, configmap_toml, count_kinds, env_of, format_counts, load_docs, worker_workloads


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

    # The orchestrator's container and Service, for the state API.
    orch = next((d for d in docs if d["kind"] == "Deployment" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "orchestrator"), None)
    oc = orch["spec"]["template"]["spec"]["containers"][0] if orch else {}
    oenv = env_of(oc)
    oports = {p["name"]: p["containerPort"] for p in oc.get("ports", [])}
    osvc = next((d for d in docs if d["kind"] == "Service" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "orchestrator"), None)
    svc_ports = {p["name"]: p["port"] for p in osvc["spec"]["ports"]} if osvc else {}

    def api_served(port: int, auth: str, tokens: tuple[str, str] | None) -> None:
        f.check(oports.get("http-api") == port and svc_ports.get("http-api") == port, f"the state API on container and Service port {port} (container {oports}, Service {svc_ports})")
        f.check(oenv.get("SHOAL__API__AUTH", {}).get("value") == auth, f"SHOAL__API__AUTH is {oenv.get('SHOAL__API__AUTH')}, expected {auth}")
        ref = oenv.get("SHOAL_API_TOKENS", {}).get("valueFrom", {}).get("secretKeyRef")
        if tokens is None:
            f.check("SHOAL_API_TOKENS" not in oenv, f"no API tokens rendered without a Secret, got {oenv.get('SHOAL_API_TOKENS')}")
        else:
            f.check(ref == {"name": tokens[0], "key": tokens[1]}, f"SHOAL_API_TOKENS: expected secretKeyRef {tokens[0]}/{tokens[1]}, got {oenv.get('SHOAL_API_TOKENS')}")

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
        api_served(8780, "tokens", None)
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
        api_served(8780, "tokens", (values["api"]["tokens"]["existingSecret"], values["api"]["tokens"]["key"]))
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
        has("KafkaTopic", 6)
        has("Job", 0)
        f.check(config["topics"]["create"] is False, "topics.create = false")
        topics = [d for d in docs if d["kind"] == "KafkaTopic"]
        f.check(all(t["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep" for t in topics), "KafkaTopics kept on uninstall")
        f.check(all(t["metadata"]["labels"].get("strimzi.io/cluster") for t in topics), "strimzi.io/cluster label")
    elif name == "simulator":
        sims = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "simulator"]
        f.check(len(sims) == 1, "the simulator Deployment")
        f.check(config["feed"].get("url", "").startswith("ws://") and config["feed"]["url"].endswith(":9001"), f"the orchestrator reads the simulator ({config['feed'].get('url')})")
        api_served(8780, "none", None)
    elif name == "llm":
        values = yaml.safe_load(Path("deploy/helm/examples/llm.yaml").read_text())["workers"]["llm"]
        llm = config["llm"]
        f.check(llm["enabled"] is True and llm["model"] == values["model"] and llm["endpoint"] == values["endpoint"], f"[llm] enabled with the example's model and endpoint ({llm})")
        f.check(llm["state_api_url"] == "http://shoal-orchestrator:8780", f"the tools ask this release's orchestrator ({llm['state_api_url']})")
        f.check(config["worker"]["handler_timeout_ms"] >= llm["call_timeout_ms"], "worker.handler_timeout_ms covers a model call")
        secret_ref("SHOAL_LLM_API_KEY", values["apiKey"]["existingSecret"], "api-key")
        secret_ref("SHOAL_LLM_STATE_API_TOKEN", values["stateApi"]["existingSecret"], "token")
        secret_keys = {"api_key_file", "api_key_env", "state_api_token_file", "state_api_token_env"}
        f.check(not secret_keys & set(llm), "the secrets' places are left to their defaults (the Secrets' variables)")
    elif name == "variant-a":
        has("Deployment", 1)  # the workers only: orchestrator.enabled=false
        f.check(not svc_ports and not oports, "no orchestrator, so no state API port")
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
        has("KafkaTopic", 6)
        f.check(all(d["apiVersion"] == "kafka.strimzi.io/v1" for d in docs if d["kind"] == "KafkaTopic"), "KafkaTopic kafka.strimzi.io/v1")
        f.check(env.get("OTEL_EXPORTER_OTLP_PROTOCOL", {}).get("value") == "http/protobuf", "OTLP over http/protobuf")
        f.check(config["orchestrator"]["stages"] == ["decisions", "results"], "orchestrator stages from the values")
        sim_np = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "simulator"]
        f.check(len(sim_np) == 1, "a NetworkPolicy for the simulator")
        api_served(8780, "tokens", None)
        shoal_np = [d for d in docs if d["kind"] == "NetworkPolicy" and d not in sim_np]
        api_rules = [r for d in shoal_np for r in d["spec"].get("ingress", []) if any(p.get("port") == "http-api" for p in r.get("ports", []))]
        f.check(len(api_rules) == 1, "the NetworkPolicy lets callers reach the state API port (http-api)")
    else:
        f.check(False, f"no expectations written for example {name!r} in scripts/chart/example_checks.py (cmd_expect)")
    print(f"note: rendered {format_counts(kinds)}")
    return f.finish()
