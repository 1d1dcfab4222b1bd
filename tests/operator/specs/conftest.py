"""Shared inputs for the builder tests: the examples, and variants of them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from adbm_operator import model

EXAMPLES = Path(__file__).parents[3] / "examples"


def example_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return body


def variant(name: str, **paths: Any) -> model.BackendService:
    """An example with dotted paths (`spec__database__pool__maxSize=5`) replaced."""
    body = copy.deepcopy(example_body(name))
    for dotted, value in paths.items():
        *parents, leaf = dotted.split("__")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return model.parse(body)


@pytest.fixture
def minimal() -> model.BackendService:
    return model.parse(example_body("minimal"))


@pytest.fixture
def full() -> model.BackendService:
    return model.parse(example_body("full"))


@pytest.fixture
def make() -> Callable[..., model.BackendService]:
    return variant
