"""Fixtures of the contract tests: the real service as a process (see `live.py`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.contract import live

# The Pact core reports usage over the network unless told not to; tests never talk to it.
os.environ["PACT_DO_NOT_TRACK"] = "true"

# Limits no contract test reaches, except those that set their own.
GENEROUS_POLICY = (
    '{"rate_limit": {"default": {"requests": 100000, "period_seconds": 1, "burst": 100000}}}'
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live.Service]:
    """One running service for the module, with generous limits."""
    log = tmp_path_factory.mktemp("service") / "serve.log"
    with live.serve(log, policy=GENEROUS_POLICY) as svc:
        yield svc
