"""The access line, the request id and the span names, as the app writes them for real
requests: route templates (never raw ids), the tenant bound once authenticated, the trace id."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from reference_service.http.auth import CurrentPrincipal
from tests.reference_service.http.conftest import Callers, OpenService, Service, assert_problem
from tests.reference_service.observability.conftest import lines

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(open_service: OpenService, spans: InMemorySpanExporter) -> AsyncIterator[Service]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield await open_service(tracer_provider=provider)


async def noisy(principal: CurrentPrincipal) -> dict[str, str]:
    """A route of the app's kind (authenticated, so the tenant is bound) that logs."""
    logging.getLogger("a.library").warning("inside the handler")
    return {}


def access_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in lines(stream) if line["logger"] == "adbm.access"]


async def test_one_access_line_per_request_with_the_route_template(
    traced: Service, callers: Callers, output: io.StringIO
) -> None:
    product_id = uuid.uuid4()
    headers = {**callers.a.headers, "traceparent": TRACEPARENT, "X-Request-Id": "req-42"}
    response = await traced.client.get(f"/api/v2/products/{product_id}", headers=headers)
    body = assert_problem(response, 404, "not-found")
    assert response.headers["x-request-id"] == "req-42"
    (line,) = access_lines(output)
    assert line["event"] == "request"
    assert line["route"] == "/api/v2/products/{product_id}"
    assert str(product_id) not in json.dumps(line)
    assert line["method"] == "GET" and line["status"] == 404
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["request_id"] == "req-42"
    assert line["tenant"] == str(callers.a.tenant_id)
    assert line["trace_id"] == TRACE == body["trace_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"])


async def test_every_line_of_a_request_carries_its_tenant_and_request_id(
    traced: Service, callers: Callers, output: io.StringIO
) -> None:
    traced.app.add_api_route("/api/v1/noisy", noisy)
    response = await traced.client.get("/api/v1/noisy", headers=callers.a.headers)
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    inside, access = (line for line in lines(output) if line.get("request_id") == request_id)
    assert inside["event"] == "inside the handler"
    assert inside["tenant"] == access["tenant"] == str(callers.a.tenant_id)
    assert inside["route"] == access["route"] == "/api/v1/noisy"
    assert inside["trace_id"] == access["trace_id"]
    # Nothing of this request leaks into the next one's lines.
    await traced.client.get("/health")
    last = access_lines(output)[-1]
    assert last["route"] == "/health" and last["tenant"] is None
    assert last["request_id"] != request_id


async def test_an_unusable_request_id_is_replaced(traced: Service, output: io.StringIO) -> None:
    response = await traced.client.get("/health", headers={"X-Request-Id": "a b\tc" + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert access_lines(output)[-1]["request_id"] == response.headers["x-request-id"]


async def test_an_unmatched_path_is_logged_as_unmatched(
    traced: Service, output: io.StringIO
) -> None:
    secret_path = f"/nothing/{uuid.uuid4()}"
    await traced.client.get(secret_path)
    (line,) = access_lines(output)
    assert line["route"] == "unmatched" and line["status"] == 404


async def test_a_500_has_its_access_line_and_request_id(
    traced: Service, callers: Callers, output: io.StringIO
) -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    traced.app.add_api_route("/api/v1/boom", boom)
    response = await traced.client.get("/api/v1/boom", headers={"X-Request-Id": "r-500"})
    assert_problem(response, 500, "internal-error")
    assert response.headers["x-request-id"] == "r-500"
    (line,) = access_lines(output)
    assert line["status"] == 500 and line["route"] == "/api/v1/boom"


async def test_span_names_are_route_templates(
    traced: Service, callers: Callers, spans: InMemorySpanExporter
) -> None:
    product_id = uuid.uuid4()
    await traced.client.get(f"/api/v2/products/{product_id}", headers=callers.a.headers)
    await traced.client.get(f"/nothing/{product_id}")
    names = [span.name for span in spans.get_finished_spans() if span.kind.name == "SERVER"]
    assert names == ["GET /api/v2/products/{product_id}", "GET"]
    server = next(s for s in spans.get_finished_spans() if s.kind.name == "SERVER")
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/api/v2/products/{product_id}"
    assert server.attributes["http.response.status_code"] == 404
    assert all(str(product_id) not in span.name for span in spans.get_finished_spans())


async def test_database_and_redis_calls_are_child_spans_of_the_request(
    traced: Service, callers: Callers, spans: InMemorySpanExporter
) -> None:
    headers = {**callers.a.headers, "Idempotency-Key": uuid.uuid4().hex}
    response = await traced.client.post(
        "/api/v1/accounts", json={"name": "Main", "currency": "EUR"}, headers=headers
    )
    assert response.status_code == 201, response.text
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind.name == "SERVER"]
    assert server.name == "POST /api/v1/accounts"
    children = [s for s in finished if s.kind.name == "CLIENT"]
    assert {s.name for s in children} >= {
        "postgresql read",  # the API key's lookup
        "postgresql transaction",  # the insert
        # The rate limit and the idempotency claim: one script, one round trip.
        "redis ratelimit, idempotency begin",
        "redis idempotency store",
    }
    assert server.context is not None
    for child in children:
        assert child.context is not None and child.parent is not None
        assert child.context.trace_id == server.context.trace_id
        assert child.parent.span_id == server.context.span_id
