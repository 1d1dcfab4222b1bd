"""Fixtures for the builder tests: the two examples, and a factory of variants."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adbm_operator import model
from tests.operator.specs.support import example, variant


@pytest.fixture
def minimal() -> model.BackendService:
    return example("minimal")


@pytest.fixture
def full() -> model.BackendService:
    return example("full")


@pytest.fixture
def make() -> Callable[..., model.BackendService]:
    return variant
