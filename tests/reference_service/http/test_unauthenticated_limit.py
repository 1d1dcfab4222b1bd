"""Requests without a valid key are rate limited per client address before the key is looked
up; a valid key from another address is unaffected. Real Redis and Postgres."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from reference_service.policy import Policy, Quota, RateLimitPolicy
from tests.reference_service.http.conftest import Callers, OpenService, assert_problem

# Shaped like a key, so that without the limit each would cost a database lookup.
WRONG_KEY = {"Authorization": "Bearer adbm_0123abcd_" + "x" * 32}


def _policy(burst: int) -> Policy:
    return Policy(
        rate_limit=RateLimitPolicy(
            default=Quota(requests=1_000_000, period_seconds=1, burst=1_000_000),
            unauthenticated=Quota(requests=1, period_seconds=3600, burst=burst),
        )
    )


async def test_wrong_keys_from_one_address_get_429s_after_the_burst(
    open_service: OpenService, callers: Callers
) -> None:
    service = await open_service(policy=_policy(burst=20))
    statuses = [
        (await service.client.get("/api/v2/products", headers=WRONG_KEY)).status_code
        for _ in range(300)
    ]
    assert statuses[:20] == [401] * 20
    assert Counter(statuses[20:]) == {429: 280}
    refused = await service.client.get("/api/v2/products", headers=WRONG_KEY)
    body = assert_problem(refused, 429, "rate-limited")
    assert "unauthenticated" in body["detail"]
    assert refused.headers["Retry-After"].isdigit()
    # Without any key, the same address is refused the same way.
    assert_problem(await service.client.get("/api/v2/products"), 429, "rate-limited")

    # Another address with a valid key is served: the failures were charged to their address.
    transport = httpx.ASGITransport(app=service.app, client=("192.0.2.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as other:
        for _ in range(30):
            response = await other.get("/api/v2/products", headers=callers.a.headers)
            assert response.status_code == 200, response.text


async def test_a_valid_key_from_the_flooded_address_is_served_once_cached(
    open_service: OpenService, callers: Callers
) -> None:
    service = await open_service(policy=_policy(burst=2))
    # The key is looked up once (charged to the address), then served from the key cache.
    assert (await service.client.get("/api/v2/products", headers=callers.a.headers)).is_success
    for _ in range(5):
        await service.client.get("/api/v2/products", headers=WRONG_KEY)
    assert_problem(
        await service.client.get("/api/v2/products", headers=WRONG_KEY), 429, "rate-limited"
    )
    for _ in range(10):
        response = await service.client.get("/api/v2/products", headers=callers.a.headers)
        assert response.status_code == 200, response.text


async def test_wrong_keys_are_looked_up_once_per_cache_bound(
    open_service: OpenService, callers: Callers
) -> None:
    # The negative cache: the same wrong key from an address with quota left is answered
    # from the cache, which the cached entry shows.
    service = await open_service(policy=_policy(burst=100))
    key = "adbm_0123abcd_" + "y" * 32
    for _ in range(3):
        response = await service.client.get(
            "/api/v2/products", headers={"Authorization": f"Bearer {key}"}
        )
        assert_problem(response, 401, "unauthorized")
    assert service.services.key_cache.get(key) is not None


async def test_valid_keys_never_use_up_the_address_quota(
    open_service: OpenService, callers: Callers
) -> None:
    # Concurrent first requests of a valid key, more than the burst, before any is cached:
    # each looks at the address's bucket, none is charged.
    service = await open_service(policy=_policy(burst=2))
    responses = await asyncio.gather(
        *(service.client.get("/api/v2/products", headers=callers.b.headers) for _ in range(10))
    )
    assert [r.status_code for r in responses] == [200] * 10
    # The address still has its whole quota of failures.
    for _ in range(2):
        assert_problem(
            await service.client.get("/api/v2/products", headers=WRONG_KEY), 401, "unauthorized"
        )
    assert_problem(
        await service.client.get("/api/v2/products", headers=WRONG_KEY), 429, "rate-limited"
    )
