"""values.yaml: every key documented, and in values.schema.json and back."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

import values_doc
from manifests import Failures


def cmd_values_consistency(chart: str) -> int:
    f = Failures()
    values_path = Path(chart, "values.yaml")
    values = yaml.safe_load(values_path.read_text())
    schema = json.loads(Path(chart, "values.schema.json").read_text())
    # One parser of the "# --" comments: the one that writes the chart
    # README's values reference.
    docs = values_doc.descriptions(values_path.read_text())
    paths = list(docs)
    undocumented = [path for path, text in docs.items() if text is None]

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
