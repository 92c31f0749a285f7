"""Shared by the chart checks (scripts/chart/check.py): failures collected
for one report, and reading the manifests helm template rendered."""

from __future__ import annotations

import tomllib

import yaml

SHOAL_BINARIES = {"shoal-orchestrator", "shoal-worker"}  # binaries that read Shoal's config


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


def shoal_container(pod: dict) -> dict | None:
    """The pod's container that runs a Shoal binary (its command[0])."""
    for c in pod["containers"]:
        if c.get("command") and c["command"][0] in SHOAL_BINARIES:
            return c
    return None


def worker_workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def count_kinds(docs: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in docs:
        out[d["kind"]] = out.get(d["kind"], 0) + 1
    return out


def format_counts(counts: dict[str, int]) -> str:
    """"Deployment 2, Service 3": the counts by name, sorted."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
