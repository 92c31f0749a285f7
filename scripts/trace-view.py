#!/usr/bin/env python3
"""Renders one trace stored in Jaeger as a static HTML waterfall.

Usage: scripts/trace-view.py TRACE_ID [--jaeger http://127.0.0.1:16686] [--out FILE]

Jaeger built from its Go module has no UI assets (the UI is an npm build
from Jaeger's own repository), so its /trace page is a placeholder. Its
query API works, though: this script reads GET /api/traces/TRACE_ID and
draws the spans (service, name, timing, parent/child nesting, the
attributes that tell a decision's story), standard library only.
"""

import argparse
import html
import json
import sys
import urllib.request

SHOWN = [
    "command.kind", "command.key", "command.seq", "command.id", "shoal.worker.id", "shoal.result.status",
    "messaging.destination.name", "messaging.destination.partition.id", "messaging.kafka.offset",
    "messaging.consumer.group.name", "symbol", "shoal.end_to_end_ms", "shoal.handler.attempt",
]
COLOURS = {"shoal-orchestrator": "#7e57c2", "shoal-worker": "#26a69a"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace_id")
    parser.add_argument("--jaeger", default="http://127.0.0.1:16686")
    parser.add_argument("--out", default="-")
    args = parser.parse_args()
    with urllib.request.urlopen(f"{args.jaeger}/api/traces/{args.trace_id}", timeout=10) as response:
        data = json.load(response)["data"]
    if not data:
        print(f"trace-view: trace {args.trace_id} not found", file=sys.stderr)
        return 1
    trace = data[0]
    services = {k: v["serviceName"] for k, v in trace["processes"].items()}
    spans = {s["spanID"]: s for s in trace["spans"]}
    children = {}
    roots = []
    for s in trace["spans"]:
        parent = next((r["spanID"] for r in s["references"] if r["refType"] == "CHILD_OF"), None)
        if parent in spans:
            children.setdefault(parent, []).append(s)
        else:
            roots.append(s)
    start = min(s["startTime"] for s in trace["spans"])
    end = max(s["startTime"] + s["duration"] for s in trace["spans"])
    total = max(end - start, 1)
    rows = []

    def walk(span, depth):
        tags = {t["key"]: t["value"] for t in span["tags"]}
        service = services[span["processID"]]
        left = 100.0 * (span["startTime"] - start) / total
        width = max(100.0 * span["duration"] / total, 0.3)
        shown = " ".join(f"<b>{html.escape(k)}</b>={html.escape(str(tags[k]))}" for k in SHOWN if k in tags)
        kind = tags.get("span.kind", "")
        rows.append(
            f'<tr><td class="svc" style="color:{COLOURS.get(service, "#555")}">{html.escape(service)}</td>'
            f'<td class="name" style="padding-left:{8 + 18 * depth}px">{html.escape(span["operationName"])}'
            f' <span class="kind">{html.escape(kind)}</span></td>'
            f'<td class="bar"><div style="margin-left:{left:.2f}%;width:{width:.2f}%;'
            f'background:{COLOURS.get(service, "#888")}"></div></td>'
            f'<td class="dur">{span["duration"] / 1000:.2f} ms</td></tr>'
            f'<tr class="tags"><td></td><td colspan="3" style="padding-left:{8 + 18 * depth}px">{shown}</td></tr>'
        )
        for child in sorted(children.get(span["spanID"], []), key=lambda c: c["startTime"]):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda r: r["startTime"]):
        walk(root, 0)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>trace {args.trace_id}</title><style>
body{{font-family:DejaVu Sans,sans-serif;font-size:13px;margin:16px;color:#222}}
h1{{font-size:18px;margin:0 0 4px}} .sub{{color:#666;margin-bottom:12px}}
table{{border-collapse:collapse;width:100%}} td{{padding:3px 6px;vertical-align:middle}}
.svc{{width:140px;font-weight:bold}} .name{{width:330px;white-space:nowrap}} .kind{{color:#999;font-size:11px}}
.bar{{background:#f4f4f4}} .bar div{{height:14px;border-radius:2px}} .dur{{width:80px;text-align:right;color:#444}}
tr.tags td{{font-size:11px;color:#555;padding-top:0;border-bottom:1px solid #eee}}
</style></head><body>
<h1>Trace {html.escape(args.trace_id)}</h1>
<div class="sub">{len(trace["spans"])} spans, {len(set(services.values()))} services, {total / 1000:.1f} ms &mdash;
read from Jaeger's query API ({html.escape(args.jaeger)}/api/traces/{html.escape(args.trace_id)})</div>
<table>{"".join(rows)}</table></body></html>"""
    if args.out == "-":
        sys.stdout.write(page)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
