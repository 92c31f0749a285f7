#!/usr/bin/env python3
"""Generates the chart README's values reference from the chart's values.yaml.

Each key of deploy/helm/shoal/values.yaml is described by the "# --" comment
above it (continued on the following "#" lines). This script turns every
leaf value (a scalar, a list, or an empty map) into a row of a Markdown table
with its dotted key, its default and its description, and puts the table in
the chart's README (deploy/helm/shoal/README.md) between the markers

    <!-- values-reference:start -->
    <!-- values-reference:end -->

Usage:
  scripts/chart/values_doc.py [--values FILE] --write [README]   replace the table
  scripts/chart/values_doc.py [--values FILE] --check [README]   exit 1 if it is out of date
  scripts/chart/values_doc.py [--values FILE]                    print the table
README defaults to deploy/helm/shoal/README.md.

Needs PyYAML (scripts/chart-check.sh runs it from its virtualenv).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

import yaml

START = "<!-- values-reference:start -->"
END = "<!-- values-reference:end -->"
DEFAULT_VALUES = "deploy/helm/shoal/values.yaml"
DEFAULT_README = "deploy/helm/shoal/README.md"


def descriptions(text: str) -> dict[str, str | None]:
    """Dotted key path -> description, from the "# --" comments; None for a
    key without one. Every key of the file is in the result, in file order
    (scripts/chart/values_checks.py uses it to find undocumented values)."""
    out: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        if not stripped:
            pending = None
            continue
        m = re.match(r"^( *)([A-Za-z0-9_.\"*-]+):(\s|$)", line)
        if not m or stripped.startswith("- "):
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = m.group(2).strip('"')
        path = ".".join([k for _, k in stack] + [key])
        out[path] = None if pending is None else " ".join(p for p in pending if p)
        pending = None
        stack.append((indent, key))
    return out


def leaves(node: object, path: str = "") -> list[tuple[str, object]]:
    if isinstance(node, dict) and node:
        return [leaf for key, value in node.items() for leaf in leaves(value, f"{path}.{key}" if path else str(key))]
    return [(path, node)]


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def table(values_path: Path) -> str:
    text = values_path.read_text()
    values = yaml.safe_load(text)
    docs = descriptions(text)
    rows = ["| key | default | description |", "|---|---|---|"]
    for path, default in leaves(values):
        shown = json.dumps(default, separators=(", ", ": "))
        rows.append(f"| `{path}` | `{cell(shown)}` | {cell(docs.get(path) or '')} |")
    return "\n".join(rows) + "\n"


def splice(readme: str, generated: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"values_doc: the README has no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{generated}{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", default=DEFAULT_VALUES)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="README", nargs="?", const=DEFAULT_README)
    group.add_argument("--check", metavar="README", nargs="?", const=DEFAULT_README)
    args = parser.parse_args()
    generated = table(Path(args.values))
    if args.write:
        path = Path(args.write)
        path.write_text(splice(path.read_text(), generated))
        print(f"values_doc: values reference in {path} updated ({generated.count(chr(10)) - 2} values)")
        return 0
    if args.check:
        path = Path(args.check)
        current = path.read_text()
        wanted = splice(current, generated)
        if current != wanted:
            diff = difflib.unified_diff(current.splitlines(), wanted.splitlines(), str(path), "generated", lineterm="", n=0)
            print("\n".join(list(diff)[:40]))
            print(f"error: the values reference in {path} is out of date: run scripts/chart/values_doc.py --write {path}")
            return 1
        print(f"note: {generated.count(chr(10)) - 2} values documented in {path}")
        return 0
    sys.stdout.write(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
