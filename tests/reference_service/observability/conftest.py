"""Tracing is observed through the app's answers: the app fixtures of the HTTP tests."""

from __future__ import annotations

from tests.reference_service.http.conftest import callers, client, open_service, service

__all__ = ["callers", "client", "open_service", "service"]
