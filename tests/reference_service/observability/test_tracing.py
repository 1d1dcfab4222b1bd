"""Trace ids: every problem names the trace of its request, continuing the caller's trace."""

from __future__ import annotations

import re

from tests.reference_service.http.conftest import Callers, Service, assert_problem

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


async def test_problems_carry_the_callers_trace_id(service: Service, callers: Callers) -> None:
    headers = {**callers.a.headers, "traceparent": TRACEPARENT}
    response = await service.client.get("/api/v1/products/not-a-uuid", headers=headers)
    assert assert_problem(response, 400, "validation-error")["trace_id"] == TRACE
    missing = await service.client.get("/api/v1/nothing", headers=headers)
    assert assert_problem(missing, 404, "not-found")["trace_id"] == TRACE


async def test_without_a_caller_trace_each_request_gets_its_own(service: Service) -> None:
    first = assert_problem(await service.client.get("/api/v1/products"), 401, "unauthorized")
    second = assert_problem(await service.client.get("/api/v1/products"), 401, "unauthorized")
    assert re.fullmatch(r"[0-9a-f]{32}", first["trace_id"])
    assert first["trace_id"] != second["trace_id"]


async def test_a_500_carries_the_trace_id_too(service: Service, callers: Callers) -> None:
    async def boom() -> None:
        raise RuntimeError("secret detail")

    service.app.add_api_route("/api/v1/boom", boom)
    headers = {**callers.a.headers, "traceparent": TRACEPARENT}
    response = await service.client.get("/api/v1/boom", headers=headers)
    body = assert_problem(response, 500, "internal-error")
    assert body["trace_id"] == TRACE
    assert "secret detail" not in response.text
