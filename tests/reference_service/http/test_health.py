"""Liveness, readiness and pool exhaustion, against the real database and Redis."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.reference_service.http.conftest import Callers, OpenService, Service, assert_problem


async def test_health_reports_the_pool(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {"max_size", "size", "in_use", "waiting", "timeouts"} <= set(body["pool"])
    assert body["pool"]["max_size"] == 10


async def test_ready_when_database_and_redis_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_not_ready_without_redis(open_service: OpenService) -> None:
    # A port nothing listens on: a real refused connection, not a stand-in.
    service = await open_service(redis_url="redis://127.0.0.1:1/0")
    started = time.monotonic()
    response = await service.client.get("/ready")
    assert time.monotonic() - started < 2
    body = assert_problem(response, 503, "service-unavailable")
    assert [failure.split(":")[0] for failure in body["failed"]] == ["redis"]
    assert "Retry-After" in response.headers
    # Liveness does not depend on Redis: restarting the pod would not bring Redis back.
    assert (await service.client.get("/health")).status_code == 200


async def test_not_ready_without_database(open_service: OpenService) -> None:
    service = await open_service(
        database_url="postgresql://nobody@127.0.0.1:1/none", db_pool_acquire_timeout_seconds=0.3
    )
    body = assert_problem(await service.client.get("/ready"), 503, "service-unavailable")
    assert [failure.split(":")[0] for failure in body["failed"]] == ["database"]
    assert (await service.client.get("/health")).status_code == 200


async def test_exhausted_pool_is_a_fast_503_and_counted(
    open_service: OpenService, callers: Callers
) -> None:
    service: Service = await open_service(db_pool_max_size=1, db_pool_acquire_timeout_seconds=0.2)
    client = service.client
    assert (await client.get("/api/v1/products", headers=callers.a.headers)).status_code == 200

    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold_the_only_connection() -> None:
        async with service.services.database.transaction(None):
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold_the_only_connection())
    await holding.wait()
    try:
        started = time.monotonic()
        response = await client.get("/api/v1/products", headers=callers.a.headers)
        elapsed = time.monotonic() - started
        assert_problem(response, 503, "service-unavailable")
        assert response.headers["retry-after"] == "1"  # 0.2 s rounded up to whole seconds
        assert elapsed < 1.0
        pool = (await client.get("/health")).json()["pool"]
        assert pool["timeouts"] >= 1
        assert pool["in_use"] == 1 and pool["max_size"] == 1
        # Saturated is not down: readiness stays green, so load is not shifted elsewhere.
        assert (await client.get("/ready")).status_code == 200
    finally:
        release.set()
        await holder
    assert (await client.get("/api/v1/products", headers=callers.a.headers)).status_code == 200
