"""The BackendService field reference in Markdown, generated from the model.

It walks the CRD's structural schema (no `$ref`, no unions), so it documents exactly what the
API server enforces. The README embeds this output between markers and a test keeps the two
equal, so the reference can never describe a field, default or bound the API does not have.
"""

from __future__ import annotations

import json
from typing import Any

from adbm_operator import crd, model

# Long patterns read better by name; they are Kubernetes' and Prometheus' own formats.
NAMED_PATTERNS = {
    model.DNS_LABEL: "DNS-1035 label",
    model.DNS_SUBDOMAIN: "DNS-1123 subdomain",
    model.QUANTITY: "Kubernetes quantity",
    model.PROM_DURATION: "Prometheus duration (e.g. `30s`, `1m`)",
    model.SQL_IDENTIFIER: "lower-case SQL identifier",
    model.PG_CUSTOM_SETTING: "Postgres custom setting `prefix.name`",
    model.API_VERSION_NAME: "API version (`v1`, `v2`, ...)",
    model.LABEL_VALUE: "label value",
}

REFERENCE = "adbm-operator docs"


def begin(section: str) -> str:
    return f"<!-- BEGIN GENERATED: {section} -->"


def end(section: str) -> str:
    return f"<!-- END GENERATED: {section} -->"


def _type(node: dict[str, Any]) -> str:
    kind = node.get("type", "object")
    if kind == "array":
        return "list"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return "map"
    if node.get("format") == "date-time":
        return "timestamp"
    return str(kind)


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append(" or ".join(f"`{v}`" for v in node["enum"]))
    # OpenAPI v3.0 bounds: `exclusiveMinimum` is a flag on `minimum`, not a number.
    if "minimum" in node:
        parts.append(f"{'>' if node.get('exclusiveMinimum') else '≥'} {node['minimum']}")
    if "maximum" in node:
        parts.append(f"{'<' if node.get('exclusiveMaximum') else '≤'} {node['maximum']}")
    if "minLength" in node and node["minLength"] > 1:
        parts.append(f"length ≥ {node['minLength']}")
    if "maxLength" in node:
        parts.append(f"length ≤ {node['maxLength']}")
    if "minItems" in node:
        parts.append(f"items ≥ {node['minItems']}")
    if "maxItems" in node:
        parts.append(f"items ≤ {node['maxItems']}")
    if "maxProperties" in node:
        parts.append(f"entries ≤ {node['maxProperties']}")
    if "pattern" in node:
        named = NAMED_PATTERNS.get(node["pattern"])
        parts.append(named or f"pattern `{node['pattern']}`")
    if "x-kubernetes-list-map-keys" in node:
        parts.append("unique by " + ", ".join(node["x-kubernetes-list-map-keys"]))
    return "; ".join(parts)


def _default(node: dict[str, Any]) -> str:
    # An object default made of its fields' own defaults is what their rows show already.
    if "default" not in node or node["default"] == crd.defaults_of_fields(node):
        return ""
    return f"`{json.dumps(node['default'])}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _walk(node: dict[str, Any], path: str, required: bool, rows: list[str]) -> None:
    flag = "**required**" if required else ""
    constraints = _constraints(node)
    rows.append(
        f"| `{path}` | {_type(node)} | {flag or _default(node)} | {_cell(constraints)} "
        f"| {_cell(node.get('description', ''))} |"
    )
    for rule in node.get("x-kubernetes-validations", []):
        rows.append(f"| `{path}` | rule | | `{_cell(rule['rule'])}` | {_cell(rule['message'])} |")
    children = node.get("properties", {})
    if node.get("type") == "array":
        item = node["items"]
        children = item.get("properties", {})
        for rule in item.get("x-kubernetes-validations", []):
            rows.append(
                f"| `{path}[]` | rule | | `{_cell(rule['rule'])}` | {_cell(rule['message'])} |"
            )
        needed = set(item.get("required", []))
        for name, child in children.items():
            _walk(child, f"{path}[].{name}", name in needed, rows)
        return
    needed = set(node.get("required", []))
    for name, child in children.items():
        _walk(child, f"{path}.{name}", name in needed, rows)


def field_reference() -> str:
    """Markdown table of every spec field: type, default, constraints, description, rules."""
    schema = crd.openapi_schema(model.BackendServiceSpec)
    rows = [
        "| Field | Type | Default | Constraints | Description |",
        "|---|---|---|---|---|",
    ]
    _walk(schema, "spec", True, rows)
    return "\n".join(rows) + "\n"


def embed(readme: str, sections: dict[str, str]) -> str:
    """The README with each generated section (between its markers) replaced."""
    for section, content in sections.items():
        head, found, rest = readme.partition(begin(section))
        if not found or end(section) not in rest:
            raise ValueError(f"no generated section {section!r} ({begin(section)} ... )")
        _, _, tail = rest.partition(end(section))
        readme = f"{head}{begin(section)}\n{content}{end(section)}{tail}"
    return readme
