"""The HTTP contract through the app as `create_app` wires it: rate limits and idempotency on
the real routes, in front of the real database (the modules' own tests cover their details)."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from reference_service.policy import Policy, Quota, RateLimitPolicy
from tests.reference_service.http.conftest import Callers, OpenService, Service, assert_problem

PRODUCT = {"sku": "MUG-1", "name": "Mug", "price_minor": 1200, "currency": "EUR"}


async def test_writes_without_an_idempotency_key_are_refused(
    service: Service, callers: Callers
) -> None:
    # A bare client: no hook adding keys.
    transport = httpx.ASGITransport(app=service.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as bare:
        response = await bare.post("/api/v1/products", json=PRODUCT, headers=callers.a.headers)
    assert_problem(response, 400, "idempotency-key-required")
    listed = await service.client.get("/api/v1/products", headers=callers.a.headers)
    assert listed.json()["items"] == []


async def test_concurrent_retries_of_one_create_make_one_product(
    service: Service, callers: Callers
) -> None:
    headers = {**callers.a.headers, "Idempotency-Key": uuid.uuid4().hex}
    responses = await asyncio.gather(
        *(service.client.post("/api/v1/products", json=PRODUCT, headers=headers) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1, "every 201 is the same product, replayed"
    listed = await service.client.get("/api/v1/products", headers=callers.a.headers)
    assert [p["id"] for p in listed.json()["items"]] == list(created)
    other = await service.client.post(
        "/api/v1/products", json={**PRODUCT, "sku": "MUG-2"}, headers=headers
    )
    assert_problem(other, 422, "idempotency-key-reused")


async def test_every_public_route_is_rate_limited_with_headers(
    open_service: OpenService, callers: Callers
) -> None:
    tight = Policy(
        rate_limit=RateLimitPolicy(default=Quota(requests=1, period_seconds=60, burst=2))
    )
    service = await open_service(policy=tight)
    first = await service.client.get("/api/v2/products", headers=callers.a.headers)
    assert first.status_code == 200
    assert first.headers["RateLimit-Policy"].startswith('"default";q=1;w=60')
    assert first.headers["RateLimit"].startswith('"default";r=')
    await service.client.get("/api/v1/accounts", headers=callers.a.headers)
    third = await service.client.get("/api/v1/products", headers=callers.a.headers)
    problem = assert_problem(third, 429, "rate-limited")
    assert int(third.headers["Retry-After"]) >= 1
    assert problem["status"] == 429
    # Another tenant has its own quota; health is never limited.
    assert (
        await service.client.get("/api/v1/products", headers=callers.b.headers)
    ).status_code == 200
    assert (await service.client.get("/health")).status_code == 200
