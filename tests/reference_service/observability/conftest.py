"""Tracing is observed through the app's answers: the app fixtures of the HTTP tests. Log lines
are captured from the service's own JSON configuration (`output`) and parsed (`lines`)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from reference_service.observability import logging as service_logging
from tests.reference_service.http.conftest import callers, client, open_service, service

__all__ = ["callers", "client", "lines", "open_service", "output", "service"]


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    service_logging.configure("INFO", stream=stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)
    service_logging.clear_request()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]
