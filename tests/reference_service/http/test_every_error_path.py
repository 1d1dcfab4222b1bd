"""Every error path of the API, through the app as `create_app` wires it: each answers valid
problem+json (RFC 9457) with no internal detail, whatever produced it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from reference_service.policy import Policy, Quota, RateLimitPolicy
from tests.reference_service.http.conftest import Callers, OpenService, Service, assert_problem

PRODUCT = {"sku": "MUG-1", "name": "Mug", "price_minor": 1200, "currency": "EUR"}
LEAKS = ("Traceback", "psycopg", 'File "', "redis.", "Error(")

Case = Callable[[Service, Callers], Awaitable[httpx.Response]]


async def _create(service: Service, callers: Callers) -> dict[str, Any]:
    response = await service.client.post(
        "/api/v1/products", json=PRODUCT, headers=callers.a.headers
    )
    assert response.status_code == 201
    body: dict[str, Any] = response.json()
    return body


async def unknown_route(s: Service, c: Callers) -> httpx.Response:
    return await s.client.get("/api/v1/nothing-here", headers=c.a.headers)


async def wrong_method(s: Service, c: Callers) -> httpx.Response:
    return await s.client.put("/api/v1/products", json=PRODUCT, headers=c.a.headers)


async def bad_json(s: Service, c: Callers) -> httpx.Response:
    headers = {**c.a.headers, "Content-Type": "application/json"}
    return await s.client.post("/api/v1/products", content=b'{"sku": ', headers=headers)


async def wrong_types(s: Service, c: Callers) -> httpx.Response:
    body = {**PRODUCT, "price_minor": "lots"}
    return await s.client.post("/api/v1/products", json=body, headers=c.a.headers)


async def extra_fields(s: Service, c: Callers) -> httpx.Response:
    body = {**PRODUCT, "is_admin": True}
    return await s.client.post("/api/v1/products", json=body, headers=c.a.headers)


async def oversize_body(s: Service, c: Callers) -> httpx.Response:
    body = {**PRODUCT, "name": "x" * 10_000}
    return await s.client.post("/api/v1/products", json=body, headers=c.a.headers)


async def oversize_chunked_body(s: Service, c: Callers) -> httpx.Response:
    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    headers = {**c.a.headers, "Content-Type": "application/json"}
    return await s.client.post("/api/v1/products", content=chunks(), headers=headers)


async def missing_auth(s: Service, c: Callers) -> httpx.Response:
    return await s.client.get("/api/v1/products")


async def bad_key(s: Service, c: Callers) -> httpx.Response:
    return await s.client.get("/api/v1/products", headers={"Authorization": "Bearer nope"})


async def missing_idempotency_key(s: Service, c: Callers) -> httpx.Response:
    transport = httpx.ASGITransport(app=s.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as bare:
        return await bare.post("/api/v1/products", json=PRODUCT, headers=c.a.headers)


async def stale_if_match(s: Service, c: Callers) -> httpx.Response:
    product = await _create(s, c)
    headers = {**c.a.headers, "If-Match": '"7"'}
    return await s.client.patch(
        f"/api/v1/products/{product['id']}", json={"name": "Cup"}, headers=headers
    )


async def missing_if_match(s: Service, c: Callers) -> httpx.Response:
    product = await _create(s, c)
    return await s.client.patch(
        f"/api/v1/products/{product['id']}", json={"name": "Cup"}, headers=c.a.headers
    )


async def unexpected_exception(s: Service, c: Callers) -> httpx.Response:
    async def boom() -> None:
        raise RuntimeError("password=hunter2 in SELECT * FROM secrets")

    s.app.add_api_route("/api/v1/boom", boom)
    return await s.client.get("/api/v1/boom", headers=c.a.headers)


CASES: list[tuple[Case, int, str]] = [
    (unknown_route, 404, "not-found"),
    (wrong_method, 405, "method-not-allowed"),
    (bad_json, 400, "validation-error"),
    (wrong_types, 400, "validation-error"),
    (extra_fields, 400, "validation-error"),
    (oversize_body, 413, "payload-too-large"),
    (oversize_chunked_body, 413, "payload-too-large"),
    (missing_auth, 401, "unauthorized"),
    (bad_key, 401, "unauthorized"),
    (missing_idempotency_key, 400, "idempotency-key-required"),
    (stale_if_match, 412, "precondition-failed"),
    (missing_if_match, 428, "precondition-required"),
    (unexpected_exception, 500, "internal-error"),
]


def assert_clean(response: httpx.Response, status: int, slug: str) -> None:
    body = assert_problem(response, status, slug)
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["type"].startswith("https://")
    assert "hunter2" not in response.text
    for leak in LEAKS:
        assert leak not in response.text, leak


@pytest.mark.parametrize(("case", "status", "slug"), CASES, ids=[c.__name__ for c, _, _ in CASES])
async def test_error_path_is_a_clean_problem(
    open_service: OpenService, callers: Callers, case: Case, status: int, slug: str
) -> None:
    service = await open_service(max_body_bytes=4096)
    assert_clean(await case(service, callers), status, slug)


async def test_rate_limited_is_a_clean_problem(open_service: OpenService, callers: Callers) -> None:
    tight = Policy(
        rate_limit=RateLimitPolicy(default=Quota(requests=1, period_seconds=60, burst=1))
    )
    service = await open_service(policy=tight)
    assert (await service.client.get("/api/v1/products", headers=callers.a.headers)).is_success
    response = await service.client.get("/api/v1/products", headers=callers.a.headers)
    assert_clean(response, 429, "rate-limited")
    assert response.headers["Retry-After"].isdigit()


async def test_pool_exhausted_is_a_clean_problem(
    open_service: OpenService, callers: Callers
) -> None:
    service = await open_service(db_pool_max_size=1, db_pool_acquire_timeout_seconds=0.2)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with service.services.database.transaction(None):
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    try:
        key = {"Idempotency-Key": uuid.uuid4().hex}
        response = await service.client.get(
            "/api/v1/products", headers={**callers.a.headers, **key}
        )
        assert_clean(response, 503, "service-unavailable")
        assert response.headers["Retry-After"] == "1"
    finally:
        release.set()
        await holder
