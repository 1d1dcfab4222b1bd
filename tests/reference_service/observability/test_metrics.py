"""Every metric the API process exports moves when its event happens: each test causes the
event through the real app (real PostgreSQL and Redis) and reads the default registry, which is
what the metrics listener serves."""

from __future__ import annotations

import asyncio
import json
import uuid

from prometheus_client import REGISTRY

from reference_service.http.idempotency import canonical_body, fingerprint
from reference_service.policy import Policy, Quota, RateLimitPolicy
from tests.reference_service.http.conftest import Callers, OpenService, Service, assert_problem

ACCOUNT = {"name": "Main", "currency": "EUR"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_requests_and_their_duration_by_route_template(
    service: Service, callers: Callers
) -> None:
    labels = {"route": "/api/v2/products/{product_id}", "method": "GET", "status_class": "4xx"}
    count = sample("adbm_http_requests_total", **labels)
    observed = sample("adbm_http_request_duration_seconds_count", **labels)
    await service.client.get(f"/api/v2/products/{uuid.uuid4()}", headers=callers.a.headers)
    assert sample("adbm_http_requests_total", **labels) == count + 1
    assert sample("adbm_http_request_duration_seconds_count", **labels) == observed + 1
    assert sample("adbm_http_request_duration_seconds_sum", **labels) > 0


async def test_problems_by_type_and_status(service: Service) -> None:
    before = sample("adbm_http_problems_total", problem="unauthorized", status="401")
    assert_problem(await service.client.get("/api/v1/products"), 401, "unauthorized")
    assert sample("adbm_http_problems_total", problem="unauthorized", status="401") == before + 1


async def test_rate_limit_decisions(open_service: OpenService, callers: Callers) -> None:
    tight = Policy(
        rate_limit=RateLimitPolicy(default=Quota(requests=1, period_seconds=60, burst=1))
    )
    service = await open_service(policy=tight)
    admitted = sample("adbm_ratelimit_decisions_total", decision="admitted", source="redis")
    limited = sample("adbm_ratelimit_decisions_total", decision="limited", source="redis")
    assert (await service.client.get("/api/v1/products", headers=callers.a.headers)).is_success
    assert_problem(
        await service.client.get("/api/v1/products", headers=callers.a.headers),
        429,
        "rate-limited",
    )
    assert sample("adbm_ratelimit_decisions_total", decision="admitted", source="redis") == (
        admitted + 1
    )
    assert sample("adbm_ratelimit_decisions_total", decision="limited", source="redis") == (
        limited + 1
    )


def outcome(name: str) -> float:
    return sample("adbm_idempotency_outcomes_total", outcome=name)


async def test_idempotency_new_replayed_and_mismatch(service: Service, callers: Callers) -> None:
    before = {name: outcome(name) for name in ("new", "replayed", "mismatch")}
    headers = {**callers.a.headers, "Idempotency-Key": uuid.uuid4().hex}
    assert (await service.client.post("/api/v1/accounts", json=ACCOUNT, headers=headers)).is_success
    assert (await service.client.post("/api/v1/accounts", json=ACCOUNT, headers=headers)).is_success
    other = {**ACCOUNT, "name": "Other"}
    response = await service.client.post("/api/v1/accounts", json=other, headers=headers)
    assert response.status_code == 422
    assert outcome("new") == before["new"] + 1
    assert outcome("replayed") == before["replayed"] + 1
    assert outcome("mismatch") == before["mismatch"] + 1


async def test_idempotency_in_flight(service: Service, callers: Callers) -> None:
    before = outcome("in_flight")
    key = uuid.uuid4().hex
    body = json.dumps(ACCOUNT).encode()
    # Another replica holds the claim for the same request.
    await service.services.idempotency.begin(
        callers.a.tenant_id,
        key,
        fingerprint("POST", "/api/v1/accounts", canonical_body(body, "application/json")),
    )
    response = await service.client.post(
        "/api/v1/accounts",
        content=body,
        headers={**callers.a.headers, "Idempotency-Key": key, "Content-Type": "application/json"},
    )
    assert response.status_code == 409, response.text
    assert outcome("in_flight") == before + 1


async def test_idempotency_unavailable_and_the_local_rate_limit(
    open_service: OpenService, callers: Callers
) -> None:
    # Nothing listens on port 1: Redis is down for this app (FailOpen: the local bucket admits).
    service = await open_service(redis_url="redis://127.0.0.1:1/0")
    unavailable = outcome("unavailable")
    local = sample("adbm_ratelimit_decisions_total", decision="admitted", source="local")
    headers = {**callers.a.headers, "Idempotency-Key": uuid.uuid4().hex}
    response = await service.client.post("/api/v1/accounts", json=ACCOUNT, headers=headers)
    assert_problem(response, 503, "service-unavailable")
    assert outcome("unavailable") == unavailable + 1
    assert sample("adbm_ratelimit_decisions_total", decision="admitted", source="local") == (
        local + 1
    )


async def test_pool_gauges_and_acquire_timeouts(
    open_service: OpenService, callers: Callers
) -> None:
    service = await open_service(db_pool_max_size=1, db_pool_acquire_timeout_seconds=0.2)
    database = service.services.database
    # Each app's pool has its own name, so the series of two apps do not mix.
    database.name = f"test-{uuid.uuid4().hex[:8]}"
    pool = {"pool": database.name}
    assert sample("adbm_db_pool_max_connections", **pool) == 1
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with database.transaction(None):
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    try:
        assert sample("adbm_db_pool_connections_in_use", **pool) == 1
        assert sample("adbm_db_pool_connections", **pool) == 1
        waiter = asyncio.create_task(
            service.client.get("/api/v1/products", headers=callers.a.headers)
        )
        while sample("adbm_db_pool_requests_waiting", **pool) == 0 and not waiter.done():
            await asyncio.sleep(0.01)
        assert sample("adbm_db_pool_requests_waiting", **pool) == 1
        assert_problem(await waiter, 503, "service-unavailable")
        assert sample("adbm_db_pool_acquire_timeouts_total", **pool) == 1
    finally:
        release.set()
        await holder
    assert sample("adbm_db_pool_connections_in_use", **pool) == 0
