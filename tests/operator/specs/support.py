"""Inputs and checks shared by the builder tests."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from adbm_operator import model
from tests.operator import validation

EXAMPLES = Path(__file__).parents[3] / "examples"


def example_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return body


def example(name: str, changes: Mapping[str, Any] | None = None) -> model.BackendService:
    """An example BackendService with dotted-path changes (`spec.database.pool`) applied."""
    body = copy.deepcopy(example_body(name))
    for path, value in (changes or {}).items():
        *parents, leaf = path.split(".")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return model.parse(body)


def variant(name: str, **paths: Any) -> model.BackendService:
    """`example` with keyword paths: `spec__database__pool={...}`."""
    return example(name, {path.replace("__", "."): value for path, value in paths.items()})


def assert_valid(obj: dict[str, Any]) -> None:
    """Valid for the newest Kubernetes (with the API server's extra checks) and the oldest
    supported (`validation.MIN_K8S_VERSION`, the one minimum README and chart tests use too)."""
    validation.validate(obj)
    if (obj["apiVersion"], obj["kind"]) not in validation.CRD_FILES:
        kubernetes_validate.validate(obj, validation.MIN_K8S_VERSION, strict=True)
