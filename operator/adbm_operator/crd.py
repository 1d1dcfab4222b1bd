"""The BackendService CustomResourceDefinition, rendered from the Pydantic models in `model/`.

Kubernetes only accepts *structural* schemas: every node typed, no `$ref`, no `anyOf`/`oneOf`,
no `additionalProperties` beside `properties`. Pydantic's JSON Schema is none of that, so it is
rewritten here. Validating keywords that have no structural equivalent raise instead of being
dropped: a silently weakened schema would let the API server store objects the operator then
rejects.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from . import yamlout
from .model import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    BackendServiceSpec,
    BackendServiceStatus,
)
from .model import (
    BackendService as BackendServiceModel,
)

CRD_NAME = f"{PLURAL}.{GROUP}"
CATEGORIES = ("adbm",)

Schema = dict[str, Any]

# Copied unchanged: each means the same in JSON Schema and in a CRD's OpenAPI v3 schema.
_PLAIN_KEYWORDS = frozenset(
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
        "multipleOf",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "required",
    }
)
# Annotations that constrain nothing, so dropping them cannot let an invalid object through.
_IGNORED_KEYWORDS = frozenset(
    {"title", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "$defs"}
)

# A fixed key order keeps the YAML stable and puts what a reader needs first.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "items",
    "properties",
    "additionalProperties",
    "required",
    "default",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-validations",
)

_API_CONVENTIONS = (
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
)


def openapi_schema(model: type[BaseModel]) -> Schema:
    """The model as a structural OpenAPI v3 schema, ready for a CRD version's schema."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _convert(raw, raw.get("$defs", {}), ())
    _check_typed(schema, model.__name__)
    return schema


def _check_typed(node: Schema, path: str) -> None:
    # An untyped node (a field annotated `Any`, say) makes the whole CRD non-structural.
    if "type" not in node and not (
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise ValueError(f"{path} has no type, so the CRD schema would not be structural")
    for name, sub in node.get("properties", {}).items():
        _check_typed(sub, f"{path}.{name}")
    if "items" in node:
        _check_typed(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        _check_typed(node["additionalProperties"], f"{path}{{}}")


def _convert(node: Schema, defs: Schema, seen: tuple[str, ...]) -> Schema:
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        if name in seen:
            raise ValueError(f"recursive model {name} cannot be a structural schema")
        # Siblings of a $ref (the field's description and default) override the target's.
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _merge(_convert(defs[name], defs, (*seen, name)), _convert(siblings, defs, seen))
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) != 1 or len(branches) == len(node["anyOf"]):
            raise ValueError(f"only Optional[X] unions fit a structural schema, got {node}")
        # Optional means "may be left out", not "may be null": no `nullable`.
        siblings = {k: v for k, v in node.items() if k != "anyOf"}
        return _merge(_convert(branches[0], defs, seen), _convert(siblings, defs, seen))

    out: Schema = {}
    rules: list[Schema] = []
    for key, value in node.items():
        if key in _PLAIN_KEYWORDS:
            out[key] = value
        elif key in _IGNORED_KEYWORDS or key == "default":
            pass
        elif key.startswith("x-kubernetes-"):
            if key == "x-kubernetes-validations":
                # Rule first: it is what a reader of the YAML looks for.
                rules.extend({"rule": r["rule"], **r} for r in value)
            else:
                out[key] = value
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema's numeric form, rewritten to OpenAPI v3.0's boolean flag.
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if bound in node:
                raise ValueError(f"both {bound} and {key} set in {node}")
            out[bound] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _convert(sub, defs, seen) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, seen)
        elif key == "additionalProperties":
            # `false` only restates pruning, and a CRD forbids it beside `properties`.
            if isinstance(value, dict):
                out[key] = _convert(value, defs, seen)
            elif value is not False:
                raise ValueError(f"additionalProperties: {value} has no structural form")
        elif key == "propertyNames":
            rules.extend(_property_name_rules(value))
        elif key == "patternProperties" and len(value) == 1 and "additionalProperties" not in node:
            # Pydantic's form of a dict whose keys have a pattern: a map plus a rule on its keys.
            [(pattern, values)] = value.items()
            out["additionalProperties"] = _convert(values, defs, seen)
            rules.extend(_property_name_rules({"pattern": pattern}))
        else:
            raise ValueError(f"JSON Schema keyword {key!r} has no structural form: {node}")
    if "description" in out:
        out["description"] = _unwrap(out["description"])
    if rules:
        out["x-kubernetes-validations"] = rules
    if node.get("default") is not None:
        out["default"] = _default(node["default"], out)
    return _ordered(out)


def _merge(base: Schema, override: Schema) -> Schema:
    merged = {**base, **override}
    rules = base.get("x-kubernetes-validations", []) + override.get("x-kubernetes-validations", [])
    if rules:
        merged["x-kubernetes-validations"] = rules
    if "default" in override:
        # The sibling default was converted without the target's properties at hand.
        merged["default"] = _default(override["default"], merged)
    return _ordered(merged)


def _property_name_rules(names: Schema) -> list[Schema]:
    # A CRD has no propertyNames; CEL over the map's keys enforces the same bounds.
    rules: list[Schema] = []
    for key, value in names.items():
        if key == "maxLength":
            cel, message = f"self.all(k, k.size() <= {value})", f"be at most {value} characters"
        elif key == "minLength":
            cel, message = f"self.all(k, k.size() >= {value})", f"be at least {value} characters"
        elif key == "pattern":
            # A JSON string literal is a valid CEL string literal with the same value.
            cel, message = f"self.all(k, k.matches({json.dumps(value)}))", f"match {value}"
        elif key in _IGNORED_KEYWORDS:
            continue
        else:
            raise ValueError(f"propertyNames keyword {key!r} has no CEL translation")
        rules.append({"rule": cel, "message": f"every key must {message}"})
    return rules


def _default(value: Any, schema: Schema) -> Any:
    # The API server validates a default as written: it does not apply the defaults nested
    # inside it first, so `{}` would reach the node's rules without the fields they select.
    # Every default is written out in full.
    return _apply_defaults(_without_nulls(value), schema)


def defaults_of_fields(schema: Schema) -> Any:
    """What an object node's fields' own defaults make of it, or None for other nodes."""
    return _apply_defaults({}, schema) if "properties" in schema else None


def _apply_defaults(value: Any, schema: Schema) -> Any:
    """Structural defaulting as the API server does it: fill missing fields, then recurse."""
    if isinstance(value, dict) and "properties" in schema:
        filled = dict(value)
        for name, sub in schema["properties"].items():
            if name not in filled and "default" in sub:
                filled[name] = sub["default"]
            if name in filled:
                filled[name] = _apply_defaults(filled[name], sub)
        return filled
    if isinstance(value, list) and "items" in schema:
        return [_apply_defaults(item, schema["items"]) for item in value]
    return value


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _unwrap(text: str) -> str:
    # Docstrings wrap at the source's line length; kubectl explain wraps on its own.
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _ordered(node: Schema) -> Schema:
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def build_crd() -> Schema:
    """The BackendService CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    spec = openapi_schema(BackendServiceSpec)
    status = openapi_schema(BackendServiceStatus)
    root: Schema = {
        "description": "A backend service deployed to the ADBM standard and managed by the adbm"
        " operator.",
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of"
                " an object. More info: " + _API_CONVENTIONS + "#resources",
                "type": "string",
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object"
                " represents. More info: " + _API_CONVENTIONS + "#types-kinds",
                "type": "string",
            },
            # The API server owns metadata's schema: beyond `type: object`, a CRD may only
            # restrict name and generateName (not even a description is allowed).
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
        "x-kubernetes-validations": [
            {"rule": r.cel, "message": r.message} for r in BackendServiceModel.root_rules
        ],
    }
    ready = '.status.conditions[?(@.type=="Ready")]'
    crd: Schema = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Ready",
                            "type": "string",
                            "description": "Status of the Ready condition.",
                            "jsonPath": f"{ready}.status",
                        },
                        {
                            "name": "Replicas",
                            "type": "string",
                            "description": "Available/desired API replicas.",
                            "jsonPath": ".status.replicaSummary",
                        },
                        {
                            "name": "Reason",
                            "type": "string",
                            "description": "Reason of the Ready condition.",
                            "jsonPath": f"{ready}.reason",
                        },
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        },
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }
    # A JSON round trip leaves no shared sub-objects, which YAML would otherwise render as
    # anchors and aliases, and proves the result is plain JSON data.
    result: Schema = json.loads(json.dumps(crd))
    return result


HEADER = (
    "# Generated by `adbm-operator crd` from operator/adbm_operator/model/.\n"
    "# Do not edit by hand: change the model, then run\n"
    "# `adbm-operator crd > crds/backendservice.yaml`.\n"
)


def crd_yaml() -> str:
    """The CRD as YAML, byte for byte what `crds/backendservice.yaml` must contain."""
    return HEADER + yamlout.dump(build_crd())
