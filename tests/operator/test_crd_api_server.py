"""What kube-apiserver checks when the CRD is created, encoded from its source (v1.29 to v1.33).

The emulator, `kubernetes-validate` and celpy alone accepted a CRD that a real API server
rejected. Each check below names the code it follows, in k8s.io/apiextensions-apiserver:
- `pkg/apiserver/schema/validation.go`, `validateStructuralMetadataInvariants`: the root
  `metadata` schema may restrict `name` and `generateName` and say nothing else;
  `pkg/apis/apiextensions/validation/validation.go`: no default in top-level metadata, kind or
  apiVersion, and `kind`/`apiVersion` are strings.
- `pkg/apiserver/schema/defaulting/validation.go`, `ValidateDefaults`: each `default` must be
  pruned (no unknown fields), valid against its node's schema, and pass the CEL rules of its node
  and of the nodes below it, all *as written*: the defaults nested inside it are not applied
  first.
- `pkg/apiserver/schema/cel/validation.go`: a rule that selects an absent field fails with
  `no such key`; it is not false. Objects reach the rules defaulted, but a default as written
  and a rule's own sub-objects can lack any optional field, so every rule must hold its ground
  with each optional field absent.
- `pkg/apis/apiextensions/validation/validation.go`, `StaticEstimatedCostLimit` and
  `StaticEstimatedCRDCostLimit`: each rule's estimated cost times the most times its node occurs
  stays within 10^7, the sum within 10^8. `cel_cost.py` computes an upper bound of cel-go's
  estimate (its docstring says where it rounds up).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from celpy import celtypes

from adbm_operator import model
from adbm_operator.crd import build_crd
from tests.operator import cel_cost
from tests.operator.cel import rule_outcomes
from tests.operator.test_crd import apply_defaults

Schema = dict[str, Any]


def root_schema() -> Schema:
    schema: Schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def nodes(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}" if path else name)
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


# --- root metadata -----------------------------------------------------------------------------

META_FIELDS = ("metadata", "kind", "apiVersion")


def root_metadata_errors(root: Schema) -> list[str]:
    """The API server's errors for the root's metadata, kind and apiVersion schemas."""
    errors = []
    props = root.get("properties", {})
    for name in ("kind", "apiVersion"):
        if name in props and props[name].get("type") != "string":
            errors.append(f"properties[{name}].type: must be string")
    if "metadata" in props:
        metadata = dict(props["metadata"])
        if metadata.get("type") != "object":
            errors.append("properties[metadata].type: must be object")
        # Only restrictions of name and generateName are allowed, and they are dropped before
        # the comparison; type and default are checked elsewhere. Whatever is left is too much.
        named = set(metadata.get("properties", {}))
        if named and named <= {"name", "generateName"}:
            del metadata["properties"]
        metadata.pop("type", None)
        metadata.pop("default", None)
        if metadata:
            errors.append(
                "properties[metadata]: Forbidden: must not specify anything other than name and"
                f" generateName, but metadata is implicitly specified ({sorted(metadata)})"
            )
    for name in META_FIELDS:
        for path, node in nodes(props.get(name, {}), name):
            if "default" in node:
                errors.append(f"{path}.default: Forbidden: not allowed in top-level {name}")
    return errors


@pytest.mark.parametrize(
    ("metadata", "allowed"),
    [
        ({"type": "object"}, True),
        ({"type": "object", "properties": {"name": {"type": "string", "maxLength": 63}}}, True),
        (
            {
                "type": "object",
                "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
            },
            True,
        ),
        ({"type": "object", "description": "Standard object metadata."}, False),
        ({"type": "object", "properties": {"labels": {"type": "object"}}}, False),
        (
            {
                "type": "object",
                "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
            },
            False,
        ),
        ({"type": "object", "x-kubernetes-validations": [{"rule": "true"}]}, False),
        ({"type": "object", "default": {}}, False),
        ({"type": "string"}, False),
    ],
)
def test_root_metadata_check_follows_the_api_server(metadata: Schema, allowed: bool) -> None:
    root = {"type": "object", "properties": {"metadata": metadata}}
    assert (root_metadata_errors(root) == []) == allowed


def test_root_metadata_kind_and_api_version_are_accepted() -> None:
    assert root_metadata_errors(root_schema()) == []


# --- defaults, as written ----------------------------------------------------------------------


def pruned(value: Any, schema: Schema) -> Any:
    """The value with every field the schema does not know removed (`pruning/algorithm.go`)."""
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: pruned(v, props[k]) for k, v in value.items() if k in props}
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: pruned(v, schema["additionalProperties"]) for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [pruned(item, schema["items"]) for item in value]
    return value


ROOT = root_schema()
DEFAULTED = [(p, n) for p, n in nodes(ROOT) if "default" in n]


def test_defaults_are_found() -> None:
    assert len(DEFAULTED) > 50
    assert {"spec.rateLimit", "spec.database.pool", "spec.versioning"} <= {p for p, _ in DEFAULTED}


@pytest.mark.parametrize(("path", "node"), DEFAULTED, ids=[p for p, _ in DEFAULTED])
def test_default_as_written_is_accepted(path: str, node: Schema) -> None:
    default = node["default"]
    assert default is not None
    assert pruned(default, node) == default, "must not have unknown fields"
    # Draft 4 reads exclusiveMinimum as a boolean, exactly like OpenAPI v3.0, and ignores the
    # x-kubernetes-* keys, as kube-openapi's validator does.
    jsonschema.Draft4Validator(node, format_checker=jsonschema.FormatChecker()).validate(default)
    outcomes = list(rule_outcomes(node, default, path))
    rejected = [o for o in outcomes if not (isinstance(o[2], celtypes.BoolType) and o[2])]
    assert rejected == [], "the API server rejects the CRD: default fails a rule as written"


def test_the_default_check_rejects_what_the_api_server_rejects() -> None:
    """The reported case: `default: {}` on a node whose rule selects a defaulted field."""
    node = {
        "type": "object",
        "properties": {"routes": {"type": "array", "items": {"type": "string"}, "default": []}},
        "x-kubernetes-validations": [{"rule": "self.routes.size() < 2", "message": "m"}],
        "default": {},
    }
    [(_, _, result)] = rule_outcomes(node, node["default"])
    assert not isinstance(result, celtypes.BoolType)
    [(_, _, result)] = rule_outcomes(node, apply_defaults(node["default"], node))
    assert result == celtypes.BoolType(True)


# --- every rule with each optional field absent ------------------------------------------------


def stored_object() -> dict[str, Any]:
    """A BackendService with every optional field set, as the API server stores it."""
    body = {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {"name": "shop"},
        "spec": {
            "autoscaling": {"maxReplicas": 4},
            "resources": {
                "requests": {"cpu": "250m", "memory": "256Mi"},
                "limits": {"cpu": "1", "memory": "512Mi"},
            },
            "database": {
                "name": "shop",
                "adminSecretRef": {"name": "pg"},
                "appRole": "shop_app",
            },
            "redis": {"secretRef": {"name": "redis"}, "keyPrefix": "shop:"},
            "rateLimit": {
                "routes": [{"method": "GET", "path": "/api/v2/orders"}, {"path": "/api/v2/x"}]
            },
            "queue": {
                "secretRef": {"name": "rabbit"},
                "workers": [
                    {"name": "mail", "queues": ["mail"]},
                    {
                        "name": "bulk",
                        "queues": ["bulk"],
                        "autoscaling": {
                            "minReplicas": 0,
                            "maxReplicas": 2,
                            "scaler": "QueueLength",
                        },
                    },
                ],
            },
            "versioning": {
                "deprecated": [
                    {
                        "version": "v1",
                        "deprecatedAt": "2025-01-01T00:00:00Z",
                        "sunsetAt": "2026-01-01T00:00:00Z",
                        "link": "https://example.com/migrate",
                    }
                ]
            },
            "observability": {
                "otelCollector": {"endpoint": "tempo:4317"},
                "serviceMonitor": {"labels": {"release": "prometheus"}},
            },
        },
    }
    return model.with_defaults(model.parse(body))


RULE_NODES = [(p, n) for p, n in nodes(ROOT) if "x-kubernetes-validations" in n]


def values_at(value: Any, schema: Schema, path: str) -> Iterator[Any]:
    """Every value the node at `path` (as `nodes` names it) takes in the object."""
    if path == "":
        yield value
        return
    head, _, rest = path.partition(".")
    name, brackets = head.split("[", 1) if "[" in head else (head, "")
    if not isinstance(value, dict) or name not in value:
        return
    values = [value[name]]
    sub = schema["properties"][name]
    for _ in range(brackets.count("]")):
        values = [item for v in values for item in v]
        sub = sub["items"]
    for v in values:
        yield from values_at(v, sub, rest)


def optional_fields(value: Any, schema: Schema, path: tuple[str | int, ...] = ()) -> Iterator[Any]:
    """The path of every field present in the value that the schema does not require."""
    if isinstance(value, dict) and "properties" in schema:
        required = set(schema.get("required", []))
        for name, sub in schema["properties"].items():
            if name in value:
                if name not in required:
                    yield (*path, name)
                yield from optional_fields(value[name], sub, (*path, name))
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from optional_fields(item, schema["items"], (*path, i))


def without(value: Any, path: tuple[str | int, ...]) -> Any:
    value = copy.deepcopy(value)
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return value


def only_required(value: Any, schema: Schema) -> Any:
    if isinstance(value, dict) and "properties" in schema:
        required = set(schema.get("required", []))
        props = schema["properties"]
        return {k: only_required(v, props[k]) for k, v in value.items() if k in required}
    if isinstance(value, list) and "items" in schema:
        return [only_required(item, schema["items"]) for item in value]
    return value


def test_the_sample_reaches_every_rule() -> None:
    stored = stored_object()
    assert [p for p, n in RULE_NODES if not list(values_at(stored, ROOT, p))] == []


def outcomes(node: Schema, value: Any, path: str) -> dict[tuple[str, str], Any]:
    return {(where, message): result for where, message, result in rule_outcomes(node, value, path)}


@pytest.mark.parametrize(("path", "node"), RULE_NODES, ids=[p or "<root>" for p, _ in RULE_NODES])
def test_rules_with_each_optional_field_absent(path: str, node: Schema) -> None:
    """No rule errors on an absent field, and an absent field counts as its default: the rule
    says the same with the field left out as the API server's defaulting would make it say."""
    problems = []
    for value in values_at(stored_object(), ROOT, path):
        assert all(r == celtypes.BoolType(True) for r in outcomes(node, value, path).values())
        sparse_values = [without(value, f) for f in optional_fields(value, node)]
        sparse_values.append(only_required(value, node))
        for sparse in sparse_values:
            written = outcomes(node, sparse, path)
            defaulted = outcomes(node, apply_defaults(sparse, node), path)
            for key, result in written.items():
                if not isinstance(result, celtypes.BoolType):
                    problems.append(f"{key}: {result!r} on {sparse}")
                elif result != defaulted[key]:
                    problems.append(f"{key}: {result} without defaults, else {defaulted[key]}")
    assert problems == []


def test_the_absent_field_check_catches_an_unguarded_rule() -> None:
    node = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 1}},
        "x-kubernetes-validations": [{"rule": "self.b <= 5", "message": "m"}],
    }
    [result] = outcomes(node, {"a": 1}, "").values()
    assert not isinstance(result, celtypes.BoolType)
    guarded = {**node, "x-kubernetes-validations": [{"rule": "!has(self.b) || self.b <= 5"}]}
    guarded["x-kubernetes-validations"][0]["message"] = "m"
    assert list(outcomes(guarded, {"a": 1}, "").values()) == [celtypes.BoolType(True)]


# --- rule cost ---------------------------------------------------------------------------------


def unbounded(schema: Schema, path: str) -> Iterator[str]:
    """Every list, map or string below a node that has no size bound."""
    kind = schema.get("type")
    if kind == "array" and "maxItems" not in schema:
        yield f"{path}: maxItems"
    if kind == "object" and "additionalProperties" in schema and "maxProperties" not in schema:
        yield f"{path}: maxProperties"
    free_string = "enum" not in schema and schema.get("format") != "date-time"
    if kind == "string" and free_string and "maxLength" not in schema:
        yield f"{path}: maxLength"
    for name, sub in schema.get("properties", {}).items():
        yield from unbounded(sub, f"{path}.{name}")
    if "items" in schema:
        yield from unbounded(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from unbounded(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize(
    ("path", "node"), [(p, n) for p, n in RULE_NODES if p], ids=[p for p, _ in RULE_NODES if p]
)
def test_everything_a_rule_can_reach_is_bounded(path: str, node: Schema) -> None:
    """The API server estimates each rule's worst-case cost from the declared bounds of what it
    can reach (`maxItems`, `maxProperties`, `maxLength`; without one it assumes the largest
    request) and rejects the CRD above 10^7 per rule or 10^8 in total
    (`StaticEstimatedCostLimit`, `StaticEstimatedCRDCostLimit` in validation.go). Beside the
    estimate below, this holds every rule's reach to declared bounds, so a rule added later
    cannot lean on an unbounded field. The root rule reads only `metadata.name`, which the API
    server types as a plain string unless the CRD declares both name and generateName
    (`cel/model/schemas.go`); it is left out here, and its estimate is checked below."""
    assert list(unbounded(node, path)) == []


RULES = [
    (path, node, rule["rule"])
    for path, node in RULE_NODES
    for rule in node["x-kubernetes-validations"]
]


def estimated_cost(path: str, node: Schema, rule: str) -> int:
    """The rule's cost bound times the most times its node occurs, as the API server counts."""
    cost = cel_cost.rule_cost(rule, cel_cost.as_cel_sees(node, is_root=path == ""))
    return cost * cel_cost.cardinality(ROOT, path)


@pytest.mark.parametrize(
    ("path", "node", "rule"), RULES, ids=[f"{p or '<root>'}:{r[:30]}" for p, _, r in RULES]
)
def test_rule_cost_is_within_the_per_rule_limit(path: str, node: Schema, rule: str) -> None:
    assert estimated_cost(path, node, rule) <= cel_cost.PER_RULE_LIMIT


def test_rule_costs_are_within_the_per_crd_limit() -> None:
    total = sum(estimated_cost(p, n, r) for p, n, r in RULES)
    assert total <= cel_cost.PER_CRD_LIMIT
    # Far below it: the bound leaves room for what the estimate rounds up.
    assert total <= cel_cost.PER_CRD_LIMIT // 10


def test_the_cost_bound_rejects_what_the_api_server_rejects() -> None:
    """The Kubernetes documentation's example: `self.all(x, x.matches(...))` over a list of
    strings is rejected without maxItems and maxLength, and accepted with small ones."""
    rule = "self.all(x, x.matches('^[a-zA-Z]*$'))"
    unbounded = {"type": "array", "items": {"type": "string"}}
    bounded = {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 10}}
    assert cel_cost.rule_cost(rule, unbounded) > cel_cost.PER_RULE_LIMIT
    assert cel_cost.rule_cost(rule, bounded) <= 1000
    # A rule under a list without maxItems occurs without bound.
    root = {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "object"}}}}
    assert cel_cost.cardinality(root, "xs[]") > cel_cost.PER_CRD_LIMIT
    # cel-go's matches: ceil(0.1 x (size + 1)) x ceil(0.25 x regex length).
    assert cel_cost.rule_cost("self.matches('abcd')", {"type": "string", "maxLength": 10}) == (
        math.ceil(0.1 * 41) * 1 + 1
    )
