"""The rendered CRD: committed copy current, schema structural, defaults valid, rules in place."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from pydantic import BaseModel, Field

from adbm_operator import model
from adbm_operator.crd import build_crd, crd_yaml, openapi_schema

CRD_FILE = Path(__file__).parents[2] / "crds" / "backendservice.yaml"

Schema = dict[str, Any]

# What a CRD's structural schema accepts (JSONSchemaProps), minus what this project never needs:
# `nullable` (Optional means "may be omitted"), `title`, `example`, `externalDocs`, `uniqueItems`.
STRUCTURAL_KEYWORDS = frozenset(
    {
        "description",
        "type",
        "format",
        "enum",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "required",
        "items",
        "properties",
        "additionalProperties",
        "default",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-validations",
    }
)
RULE_KEYS = frozenset({"rule", "message", "messageExpression", "reason", "fieldPath"})


def root_schema() -> Schema:
    schema: Schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def nodes(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with a dotted path: `[]` for list items, `{}` for map values."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}" if path else name)
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


ALL_NODES = list(nodes(root_schema()))


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Structural defaulting as the API server does it: fill missing fields, then recurse."""
    if isinstance(value, dict) and "properties" in schema:
        value = dict(value)
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(value[name], sub)
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        value = {k: apply_defaults(v, schema["additionalProperties"]) for k, v in value.items()}
    elif isinstance(value, list) and "items" in schema:
        value = [apply_defaults(item, schema["items"]) for item in value]
    return value


# --- the committed file ------------------------------------------------------------------------


def test_committed_crd_is_current() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), (
        "crds/backendservice.yaml is stale; run `adbm-operator crd > crds/backendservice.yaml`"
    )


def test_yaml_round_trips_to_the_crd() -> None:
    assert yaml.safe_load(crd_yaml()) == build_crd()


def test_yaml_is_deterministic() -> None:
    assert crd_yaml() == crd_yaml()


# --- the resource definition ---------------------------------------------------------------


def test_names_scope_and_version() -> None:
    crd = build_crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "backendservices.adbm.io"
    spec = crd["spec"]
    assert spec["group"] == model.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "BackendService",
        "listKind": "BackendServiceList",
        "plural": "backendservices",
        "singular": "backendservice",
        "shortNames": ["bsvc"],
        "categories": ["adbm"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (model.VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    [version] = build_crd()["spec"]["versions"]
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Ready": ("string", '.status.conditions[?(@.type=="Ready")].status'),
        "Replicas": ("string", ".status.replicaSummary"),
        "Reason": ("string", '.status.conditions[?(@.type=="Ready")].reason'),
        "Age": ("date", ".metadata.creationTimestamp"),
    }


def test_root_schema_shape() -> None:
    root = root_schema()
    assert root["type"] == "object"
    assert list(root["properties"]) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert root["required"] == ["spec"]
    # The API server owns metadata's schema; a CRD may only say it is an object.
    assert root["properties"]["metadata"] == {"type": "object"}
    assert root["properties"]["spec"] == openapi_schema(model.BackendServiceSpec)
    assert root["properties"]["status"] == openapi_schema(model.BackendServiceStatus)


@pytest.mark.parametrize("version", sorted({"1.33", latest_version()}))
def test_crd_is_a_valid_kubernetes_object(version: str) -> None:
    kubernetes_validate.validate(build_crd(), version, strict=True)


# --- structural schema -----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "node"), ALL_NODES, ids=[p or "<root>" for p, _ in ALL_NODES])
def test_node_is_structural(path: str, node: Schema) -> None:
    assert (
        "type" in node
        or node.get("x-kubernetes-int-or-string") is True
        or node.get("x-kubernetes-preserve-unknown-fields") is True
    )
    assert set(node) <= STRUCTURAL_KEYWORDS, (
        f"not allowed in a CRD: {set(node) - STRUCTURAL_KEYWORDS}"
    )
    assert not ("properties" in node and "additionalProperties" in node)
    assert node.get("additionalProperties") is not False
    if node.get("type") == "object":
        assert "items" not in node
    if node.get("type") == "array":
        assert "items" in node and "properties" not in node
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if flag in node:
            # OpenAPI v3.0 form: a boolean beside the bound, never JSON Schema's number.
            assert node[flag] is True and bound in node
    for name in node.get("required", []):
        assert name in node.get("properties", {}), f"required {name} is not a property"


def test_no_json_schema_only_keywords_anywhere() -> None:
    banned = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "nullable", "const", "title"}

    def keys(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for key, sub in value.items():
                # Defaults are data, not schema, and could hold any key.
                if key != "default":
                    yield key
                    yield from keys(sub)
        elif isinstance(value, list):
            for item in value:
                yield from keys(item)

    assert banned.isdisjoint(keys(root_schema()))


@pytest.mark.parametrize(
    ("path", "node"),
    [(p, n) for p, n in ALL_NODES if "x-kubernetes-list-type" in n],
    ids=[p for p, n in ALL_NODES if "x-kubernetes-list-type" in n],
)
def test_list_types(path: str, node: Schema) -> None:
    assert node["type"] == "array"
    items = node["items"]
    if node["x-kubernetes-list-type"] == "set":
        assert items["type"] in ("string", "integer", "number", "boolean")
    else:
        assert node["x-kubernetes-list-type"] == "map"
        assert items["type"] == "object"
        for key in node["x-kubernetes-list-map-keys"]:
            # The API server merges on these keys, so each item must end up with every one.
            assert key in items.get("required", []) or "default" in items["properties"][key], key


def test_every_property_has_a_description() -> None:
    missing = [
        f"{path}.{name}" if path else name
        for path, node in ALL_NODES
        for name, sub in node.get("properties", {}).items()
        if not sub.get("description")
    ]
    # The API server forbids a description on the root metadata (test_crd_api_server.py).
    assert missing == ["metadata"]


def test_descriptions_are_unwrapped() -> None:
    # Docstrings are wrapped for the source; kubectl explain wraps on its own.
    assert all("\n" not in n.get("description", "") for _, n in ALL_NODES)
    spec = root_schema()["properties"]["spec"]["properties"]
    assert spec["autoscaling"]["description"].startswith("API autoscaling")
    # The field's docstring wins over the docstring of the model it refers to.
    assert spec["database"]["description"] == "PostgreSQL."


# --- defaults ----------------------------------------------------------------------------------


def test_object_defaults_are_written_in_full() -> None:
    """The API server validates a default as written, without first applying the defaults of
    the fields inside it, so an object default spells out every field that has a default."""
    db = root_schema()["properties"]["spec"]["properties"]["database"]["properties"]
    assert db["pool"]["default"] == {
        "minSize": 1,
        "maxSize": 10,
        "acquireTimeoutSeconds": 2.0,
    }
    assert db["pool"]["default"] == apply_defaults({}, db["pool"])
    # Resources' defaults differ from the model's empty default, and carry no nulls for the
    # unset quantities.
    spec = root_schema()["properties"]["spec"]["properties"]
    assert spec["resources"]["default"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert spec["rateLimit"]["default"]["routes"] == []
    assert spec["versioning"]["default"] == {"current": "v2", "deprecated": []}
    # Optional fields have no default: leaving them out is what None means.
    assert "default" not in spec["autoscaling"]
    assert "default" not in spec["queue"]


def minimal_body() -> dict[str, Any]:
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {"name": "shop"},
        "spec": {
            "database": {"name": "shop", "adminSecretRef": {"name": "pg-superuser"}},
            "redis": {"secretRef": {"name": "redis"}},
            "observability": {"otelCollector": {"endpoint": "tempo:4317"}},
        },
    }


def rich_body() -> dict[str, Any]:
    body = minimal_body()
    body["spec"] |= {
        "autoscaling": {"maxReplicas": 4},
        "queue": {
            "secretRef": {"name": "rabbit"},
            "workers": [
                {"name": "mail", "queues": ["mail"]},
                {"name": "bulk", "queues": ["bulk"], "autoscaling": {"maxReplicas": 3}},
            ],
        },
        "rateLimit": {"routes": [{"path": "/api/v2/orders"}]},
        "versioning": {
            "deprecated": [
                {
                    "version": "v1",
                    "deprecatedAt": "2025-01-01T00:00:00Z",
                    "sunsetAt": "2026-01-01T00:00:00Z",
                }
            ]
        },
    }
    return body


@pytest.mark.parametrize("body", [minimal_body(), rich_body()], ids=["minimal", "rich"])
def test_api_server_defaults_match_the_model(body: dict[str, Any]) -> None:
    """What the API server stores equals what the operator's model fills in."""
    defaulted = apply_defaults(body, root_schema())
    jsonschema.Draft4Validator(root_schema(), format_checker=jsonschema.FormatChecker()).validate(
        defaulted
    )
    assert defaulted["spec"] == model.with_defaults(model.parse(body))["spec"]


# --- CEL rules ---------------------------------------------------------------------------------


def rules_by_path() -> dict[str, list[str]]:
    return {
        path: [r["rule"] for r in node["x-kubernetes-validations"]]
        for path, node in ALL_NODES
        if "x-kubernetes-validations" in node
    }


def cels(cls: type[model.ApiModel]) -> list[str]:
    return [r.cel for r in cls.rules]


def test_rules_sit_on_the_node_of_their_model() -> None:
    assert rules_by_path() == {
        "": [r.cel for r in model.BackendService.root_rules],
        "spec": cels(model.BackendServiceSpec),
        "spec.autoscaling": cels(model.Autoscaling),
        "spec.database.pool": cels(model.Pool),
        "spec.database.rowLevelSecurity": cels(model.RowLevelSecurity),
        "spec.rateLimit": cels(model.RateLimit),
        "spec.queue": cels(model.Queue),
        "spec.queue.workers[].autoscaling": cels(model.WorkerAutoscaling),
        "spec.versioning": cels(model.Versioning),
        "spec.versioning.deprecated[]": cels(model.DeprecatedVersion),
        "spec.observability.otelCollector": cels(model.OtelCollector),
        "spec.resources": cels(model.Resources),
        "spec.queue.workers[].resources": cels(model.Resources),
        "spec.observability.otelCollector.resources": cels(model.Resources),
        "spec.observability.serviceMonitor": cels(model.ServiceMonitorSpec),
        # No CRD keyword bounds map keys; crd.py turns propertyNames into CEL.
        "spec.observability.serviceMonitor.labels": [
            f"self.all(k, k.matches({json.dumps(model.LABEL_KEY)}))",
            "self.all(k, k.size() <= 317)",
        ],
    }


def test_expected_rules_are_present() -> None:
    rules = rules_by_path()
    assert "connectionBudget" in rules["spec"][0] and ".sum()" in rules["spec"][0]
    for path in ("spec.autoscaling", "spec.queue.workers[].autoscaling"):
        assert any("self.minReplicas <= self.maxReplicas" in r for r in rules[path]), path
    assert any("sunsetAt" in r for r in rules["spec.versioning.deprecated[]"])
    assert any("has(self.endpoint)" in r for r in rules["spec.observability.otelCollector"])
    assert any("self.metadata.name" in r for r in rules[""])
    for path in ("spec.rateLimit", "spec.queue", "spec.database.rowLevelSecurity"):
        assert any("exists_one" in r for r in rules[path]), path
    assert sum("exists_one" in r for r in rules["spec.versioning"]) == 1


def test_every_rule_has_rule_and_message() -> None:
    entries = [r for _, n in ALL_NODES for r in n.get("x-kubernetes-validations", [])]
    assert len(entries) >= 14
    for entry in entries:
        assert set(entry) <= RULE_KEYS
        assert isinstance(entry["rule"], str) and entry["rule"].strip()
        assert isinstance(entry["message"], str) and entry["message"].strip()
        # The API server rejects messages that span lines.
        assert "\n" not in entry["message"]


# --- the converter on small models -----------------------------------------------------------


class Leaf(BaseModel):
    """Leaf docstring."""

    model_config = {"use_attribute_docstrings": True}

    size: int = 3
    """Size."""


class Sample(BaseModel):
    """Sample."""

    model_config = {"use_attribute_docstrings": True, "extra": "forbid"}

    ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Ratio."""
    note: str | None = None
    """Optional note."""
    leaf: Leaf = Leaf()
    """Field docstring."""
    leaves: list[Leaf] = []
    """Leaves."""
    big_leaf: Leaf = Leaf(size=4)
    """A leaf with a non-default size."""
    at: datetime
    """Timestamp."""
    tags: dict[str, str] = {}
    """Tags."""


def test_converter_on_a_small_model() -> None:
    schema = openapi_schema(Sample)
    props = schema["properties"]
    assert "additionalProperties" not in schema and "title" not in schema
    assert props["ratio"] == {
        "description": "Ratio.",
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "default": 0.5,
    }
    assert props["note"] == {"description": "Optional note.", "type": "string"}
    assert props["leaf"]["description"] == "Field docstring."
    assert props["leaf"]["default"] == {"size": 3}
    assert props["leaves"]["items"]["description"] == "Leaf docstring."
    assert props["big_leaf"]["default"] == {"size": 4}
    assert props["at"] == {"description": "Timestamp.", "type": "string", "format": "date-time"}
    assert props["tags"]["additionalProperties"] == {"type": "string"}
    assert schema["required"] == ["at"]


def test_converter_rejects_what_a_structural_schema_cannot_say() -> None:
    class Union_(BaseModel):
        value: int | str

    class Untyped(BaseModel):
        value: Any

    class Unique(BaseModel):
        value: Annotated[list[int], Field(json_schema_extra={"uniqueItems": True})]

    for cls in (Union_, Untyped, Unique):
        with pytest.raises(ValueError):
            openapi_schema(cls)
