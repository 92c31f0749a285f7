"""The real binaries accept the rendered config (--print-config)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import tomllib
from pathlib import Path

from manifests import Failures, load_docs, pod_specs, shoal_container


def cmd_shoal_config(manifests: str, bin_dir: str) -> int:
    """Runs each Shoal binary the chart deploys with the rendered config and
    the environment its pod gets (secrets replaced by placeholders), with
    --print-config: the binary loads and validates it exactly as at start-up."""
    f = Failures()
    docs = load_docs(manifests)
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    with tempfile.TemporaryDirectory() as tmp:
        for doc, pod in pod_specs(docs):
            c = shoal_container(pod)
            if c is None:
                continue
            binary = c["command"][0]
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            pod_name = doc["metadata"]["name"] + ("-0" if doc["kind"] == "StatefulSet" else "-7d9f8b6c5d-x2x4q")
            pod_ip = "10.1.2.3"
            fields = {"metadata.name": pod_name, "metadata.namespace": "shoal", "spec.nodeName": "node-1", "status.podIP": pod_ip}
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
            if binary == "shoal-orchestrator":
                # The state API listens where the container port and the
                # Service point, and advertises the pod's own address.
                api = effective["api"]
                api_port = {p["name"]: p["containerPort"] for p in c.get("ports", [])}.get("http-api")
                if api_port is not None:
                    f.check(api["listen"] == f"0.0.0.0:{api_port}", f"{label}: api.listen is {api['listen']!r}, expected 0.0.0.0:{api_port} (the http-api port)")
                    f.check(api["advertised_url"] == f"http://{pod_ip}:{api_port}", f"{label}: api.advertised_url is {api['advertised_url']!r}, expected http://<pod IP>:{api_port}")
                elif "SHOAL__API__LISTEN" in env and not env["SHOAL__API__LISTEN"]:
                    f.check(api["listen"] == "", f"{label}: api.enabled=false but api.listen is {api['listen']!r}")
            ident = f"worker.id={effective['worker']['id']}" if binary == "shoal-worker" else f"orchestrator.id={effective['orchestrator']['id']}"
            print(f"note: {label}: accepted, {ident}, delivery={effective['delivery']['mode']}, topics.create={effective['topics']['create']}")
    return f.finish()
