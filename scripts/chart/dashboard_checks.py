"""The Grafana dashboard the chart ships (dashboards/shoal.json in the chart,
copied to deploy/grafana/shoal-dashboard.json): it parses, its panels use the
templated data source, every metric its queries name is one the binaries
register; and the ConfigMap that offers it to Grafana's dashboard sidecar."""

from __future__ import annotations

import json
import re
from pathlib import Path

from manifests import Failures, load_docs

# Where the binaries register their metrics (shoal-orchestrator, shoal-worker
# and the crates they share).
SOURCE_DIRS = ("common", "orchestrator", "worker")
# counter("shoal_x", ...) and the counters! macro's declarations: a counter,
# served as shoal_x_total. gauge("shoal_x", ...), metrics.gauge(s)(...): a
# gauge. registry.register("shoal_x", ...) is a labelled counter family;
# register_with_unit("shoal_x", ..., Unit::Seconds, ...) a histogram in seconds.
REGISTRATIONS = [
    (re.compile(r"\bcounter\(\s*\"(shoal_\w+)\""), ("_total",)),
    (re.compile(r"\bgauges?\(\s*\"(shoal_\w+)\""), ("",)),
    (re.compile(r"\.register\(\s*\"(shoal_\w+)\""), ("_total",)),
    (re.compile(r"\.register_with_unit\(\s*\"(shoal_\w+)\"[^;]*?Unit::Seconds"), ("_seconds_bucket", "_seconds_sum", "_seconds_count")),
]
METRIC = re.compile(r"\b(shoal_\w+)")
# PromQL selectors of the dashboard's variables, on every query.
SELECTOR = 'namespace=~"$namespace", job=~"$job", instance=~"$instance"'


def registered_metrics(root: Path) -> set[str]:
    """Every metric name (as served on /metrics) the Rust sources register,
    comments and unit tests (from a file's first #[cfg(test)] on) left out."""
    names: set[str] = set()
    for top in SOURCE_DIRS:
        for path in sorted((root / top).rglob("*.rs")):
            if "tests" in path.relative_to(root).parts:
                continue
            text = path.read_text().split("#[cfg(test)]", 1)[0]
            text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
            for pattern, suffixes in REGISTRATIONS:
                for m in pattern.finditer(text):
                    names.update(m.group(1) + s for s in suffixes)
    return names


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable."""
    out = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            out.append((f"panel {panel.get('title')!r}", target.get("expr", "")))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            out.append((f"variable {var.get('name')}", query.get("query", "") if isinstance(query, dict) else query))
    return out


def balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    in_string = False
    for ch in expr:
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack and not in_string


def cmd_dashboard(dashboard_path: str, copy_path: str, root: str = ".") -> int:
    f = Failures()
    text = Path(dashboard_path).read_text()
    f.check(Path(copy_path).read_text() == text, f"{copy_path} differs from {dashboard_path} (copy the chart's file over it)")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        print(f"error: {dashboard_path} is not JSON: {e}")
        return 1
    for key in ("title", "uid", "schemaVersion", "panels", "templating"):
        f.check(key in d, f"no {key!r} in the dashboard")
    f.check("id" not in d or d["id"] is None, "the dashboard has a fixed numeric id (Grafana assigns it; leave it out)")
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    f.check(ds.get("type") == "datasource" and ds.get("query") == "prometheus", "no templated data source variable 'datasource' of type prometheus")
    ids = [p.get("id") for p in d.get("panels", [])]
    f.check(len(ids) == len(set(ids)), f"panel ids repeat: {ids}")
    want_ds = {"type": "prometheus", "uid": "${datasource}"}
    for p in d.get("panels", []):
        grid = p.get("gridPos", {})
        f.check(grid.get("x", 0) + grid.get("w", 0) <= 24, f"panel {p.get('title')!r} is wider than the grid: {grid}")
        if p.get("type") == "row":
            continue
        f.check(p.get("datasource") == want_ds, f"panel {p.get('title')!r}: data source {p.get('datasource')}, expected {want_ds}")
        f.check(bool(p.get("targets")), f"panel {p.get('title')!r}: no queries")
        for t in p.get("targets", []):
            f.check(t.get("datasource") == want_ds, f"panel {p.get('title')!r}: a query's data source is {t.get('datasource')}")

    registered = registered_metrics(Path(root))
    f.check(len(registered) > 20, f"found only {len(registered)} registered metrics in {SOURCE_DIRS}: has the registration code moved?")
    used: set[str] = set()
    n = 0
    for where, expr in queries(d):
        n += 1
        f.check(balanced(expr), f"{where}: unbalanced brackets or quotes in {expr}")
        names = set(METRIC.findall(expr))
        f.check(bool(names), f"{where}: names no shoal_ metric: {expr}")
        for name in sorted(names - registered):
            f.check(False, f"{where}: {name} is not a metric the binaries register")
        used |= names
        if where.startswith("panel"):
            f.check(expr.count(SELECTOR) == len(re.findall(r"\bshoal_\w+\s*\{", expr)) and SELECTOR in expr,
                    f"{where}: every selector must carry the dashboard's variables ({SELECTOR}): {expr}")
        for m in re.finditer(r"histogram_quantile\(\s*[0-9.]+\s*,\s*sum by \(([^)]*)\)\s*\(rate\((shoal_\w+)", expr):
            f.check("le" in [s.strip() for s in m.group(1).split(",")], f"{where}: histogram_quantile without le in its by (): {expr}")
            f.check(m.group(2).endswith("_bucket"), f"{where}: histogram_quantile of {m.group(2)}, not a _bucket series")
        for m in re.finditer(r"\b(rate|increase)\((shoal_\w+)", expr):
            f.check(m.group(2).endswith(("_total", "_bucket", "_sum", "_count")), f"{where}: {m.group(1)}() of {m.group(2)}, which is not a counter")
    print(f"note: {sum(1 for p in d['panels'] if p.get('type') != 'row')} panels, {n} queries naming {len(used)} metrics, "
          f"{len(used & registered)} of them among the {len(registered)} the binaries register")
    return f.finish()


def cmd_dashboard_configmap(manifests: str, dashboard_path: str, expect: str, namespace: str = "", *meta: str) -> int:
    """expect is "absent" or "present"; META items are label:KEY=VALUE or
    annotation:KEY=VALUE that the ConfigMap must carry."""
    f = Failures()
    docs = load_docs(manifests)
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboard"]
    if expect == "absent":
        f.check(not maps, f"a dashboard ConfigMap is rendered although grafana.dashboard.enabled is false: {[m['metadata']['name'] for m in maps]}")
        return f.finish()
    if not f.check(len(maps) == 1, f"expected one dashboard ConfigMap, found {len(maps)}"):
        return f.finish()
    cm = maps[0]
    md = cm["metadata"]
    f.check(md.get("namespace") == namespace, f"namespace {md.get('namespace')!r}, expected {namespace!r}")
    for item in meta:
        kind, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        got = md.get("labels" if kind == "label" else "annotations", {}).get(key)
        f.check(got == value, f"{kind} {key}={got!r}, expected {value!r}")
    data = cm.get("data", {})
    f.check(list(data) == ["shoal.json"], f"data keys {list(data)}, expected ['shoal.json']")
    if "shoal.json" in data:
        try:
            rendered = json.loads(data["shoal.json"])
        except json.JSONDecodeError as e:
            f.check(False, f"the ConfigMap's shoal.json is not JSON: {e}")
        else:
            f.check(rendered == json.loads(Path(dashboard_path).read_text()), f"the ConfigMap's shoal.json differs from {dashboard_path}")
    extra = {k: v for k, v in md.get("labels", {}).items() if not k.startswith(("app.kubernetes.io/", "helm.sh/"))}
    print(f"note: ConfigMap {md['name']} in namespace {md.get('namespace')}, labels {extra}, {len(data.get('shoal.json', ''))} bytes of dashboard")
    return f.finish()
