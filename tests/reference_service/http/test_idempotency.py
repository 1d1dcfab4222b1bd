"""Idempotency-Key against the real Redis and, through the real routes, the real PostgreSQL.

The app is `create_app`'s, with its lifespan; a few test-only routes behind the same guard make
failures, slowness and lock take-overs happen on demand.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from redis.asyncio import Redis
from starlette.requests import Request

from reference_service.app import VERSIONS, create_app
from reference_service.config import Settings
from reference_service.db.admin import create_api_key
from reference_service.domain.common import Operation
from reference_service.domain.resources import RESOURCES
from reference_service.http import guards, idempotency
from reference_service.http.endpoints import version_router
from reference_service.http.idempotency import (
    Done,
    Idempotency,
    InFlight,
    Mismatch,
    New,
    StoredResponse,
)
from reference_service.http.state import Services
from reference_service.policy import Policy, Quota, RateLimitPolicy
from tests.reference_service.conftest import DatabaseUrls, Tenants
from tests.reference_service.http.conftest import assert_problem

REDIS_URL = "redis://127.0.0.1:6379/0"
ACCOUNT = {"name": "Main", "currency": "EUR"}


def product(sku: str = "SKU-1") -> dict[str, Any]:
    return {"sku": sku, "name": "Widget", "price_minor": 1250, "currency": "EUR"}


@dataclass
class Probe:
    """State of the test-only routes."""

    calls: int = 0
    fail_first: bool = True
    delays: list[float] | None = None


def probe_router(probe: Probe) -> APIRouter:
    router = APIRouter(prefix="/test")

    @router.post("/flaky", status_code=201)
    async def flaky() -> JSONResponse:
        probe.calls += 1
        if probe.fail_first and probe.calls == 1:
            raise RuntimeError("first attempt fails")
        return JSONResponse({"call": probe.calls}, status_code=201)

    @router.post("/unavailable")
    async def unavailable() -> JSONResponse:
        probe.calls += 1
        if probe.calls == 1:
            return JSONResponse({"down": True}, status_code=503)
        return JSONResponse({"call": probe.calls}, status_code=201)

    @router.post("/slow", status_code=201)
    async def slow() -> JSONResponse:
        probe.calls += 1
        call = probe.calls
        delays = probe.delays or [0.3]
        await asyncio.sleep(delays[min(call, len(delays)) - 1])
        return JSONResponse({"call": call}, status_code=201, headers={"ETag": f'"{call}"'})

    return router


def build_app(settings: Settings, probe: Probe) -> FastAPI:
    """`create_app`'s app, with the test-only routes behind the idempotency guard."""
    app = create_app(settings)
    app.include_router(probe_router(probe), dependencies=[guards.IDEMPOTENT])
    return app


def with_lock_seconds(services: Services, lock_seconds: float) -> Services:
    """The services with an engine whose locks expire after `lock_seconds`, for take-overs."""
    engine = Idempotency(
        services.redis,
        services.settings.redis_key_prefix,
        services.settings.policy.idempotency.ttl_seconds,
        lock_seconds=lock_seconds,
    )
    return replace(services, idempotency=engine)


@dataclass(frozen=True)
class Env:
    client: httpx.AsyncClient
    app: FastAPI
    a: dict[str, str]
    b: dict[str, str]
    admin_url: str
    probe: Probe


OpenEnv = Callable[..., Awaitable[Env]]


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"adbm-test-{uuid.uuid4().hex}:"
    yield prefix
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture
async def open_env(
    database_urls: DatabaseUrls, tenants: Tenants, redis_prefix: str
) -> AsyncIterator[OpenEnv]:
    issued_a = await create_api_key(database_urls.admin_url, "tenant-a", actor="test")
    issued_b = await create_api_key(database_urls.admin_url, "tenant-b", actor="test")
    async with AsyncExitStack() as stack:

        async def open_(lock_seconds: float | None = None, **overrides: Any) -> Env:
            settings = Settings(
                **{
                    "database_url": database_urls.app_url,
                    "db_pool_min_size": 0,
                    "db_pool_max_size": 10,
                    "redis_key_prefix": redis_prefix,
                    "cursor_secret": "idempotency-tests-" + "k" * 32,
                    # Limits these tests never reach: they are about idempotency alone.
                    "policy": Policy(
                        rate_limit=RateLimitPolicy(
                            default=Quota(requests=1_000_000, period_seconds=1, burst=1_000_000)
                        )
                    ),
                    **overrides,
                }
            )
            probe = Probe()
            app = build_app(settings, probe)
            await stack.enter_async_context(app.router.lifespan_context(app))
            if lock_seconds is not None:
                app.state.services = with_lock_seconds(app.state.services, lock_seconds)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30)
            )
            return Env(
                client,
                app,
                {"Authorization": f"Bearer {issued_a.key}"},
                {"Authorization": f"Bearer {issued_b.key}"},
                database_urls.admin_url,
                probe,
            )

        yield open_


@pytest.fixture
async def env(open_env: OpenEnv) -> Env:
    return await open_env()


def with_key(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def count_rows(admin_url: str, table: str) -> int:
    async with await psycopg.AsyncConnection.connect(admin_url) as conn:
        cur = await conn.execute(f"SELECT count(*) FROM {table}")  # test-chosen table name
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


# The side-effect proof --------------------------------------------------------------------------


async def test_fifty_concurrent_posts_with_one_key_create_one_row(env: Env) -> None:
    headers = with_key(env.a, "concurrent-1")
    # Accounts have no unique column: without the guard every request would insert a row.
    responses = await asyncio.gather(
        *(env.client.post("/api/v1/accounts", json=ACCOUNT, headers=headers) for _ in range(50))
    )
    firsts = [
        r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    replays = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    in_flight = [r for r in responses if r.status_code == 409]
    assert len(firsts) == 1
    assert len(replays) + len(in_flight) == 49
    for replay in replays:
        assert replay.status_code == 201
        assert replay.content == firsts[0].content
        assert replay.headers["etag"] == firsts[0].headers["etag"]
    for busy in in_flight:
        assert_problem(busy, 409, "idempotency-in-flight")
        assert busy.headers["retry-after"] == "1"
    assert await count_rows(env.admin_url, "accounts") == 1

    # Once done, every retry is a replay, and still nothing new is written.
    again = await env.client.post("/api/v1/accounts", json=ACCOUNT, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == firsts[0].content
    assert await count_rows(env.admin_url, "accounts") == 1


# Replays and refusals ---------------------------------------------------------------------------


async def test_replay_repeats_status_body_and_headers(env: Env) -> None:
    headers = with_key(env.a, "replay-1")
    first = await env.client.post("/api/v1/products", json=product(), headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers

    # The same JSON document serialised differently is the same request.
    same = b'{ "currency":"EUR", "price_minor":1250, "name":"Widget", "sku":"SKU-1" }'
    replay = await env.client.post(
        "/api/v1/products",
        content=same,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    for name in ("etag", "location", "content-type"):
        assert replay.headers[name] == first.headers[name]
    assert await count_rows(env.admin_url, "products") == 1


async def test_patch_is_protected_and_a_stored_4xx_is_replayed(env: Env) -> None:
    created = await env.client.post(
        "/api/v1/products", json=product(), headers=with_key(env.a, "create")
    )
    url = created.headers["location"]
    missing = await env.client.patch(url, json={"name": "X"}, headers={**env.a, "If-Match": '"1"'})
    assert_problem(missing, 400, "idempotency-key-required")

    stale = with_key({**env.a, "If-Match": '"99"'}, "patch-stale")
    refused = await env.client.patch(url, json={"name": "X"}, headers=stale)
    assert_problem(refused, 412, "precondition-failed")
    # A 4xx is the operation's outcome: the retry gets the same answer.
    again = await env.client.patch(url, json={"name": "X"}, headers=stale)
    assert again.status_code == 412
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == refused.content

    ok = await env.client.patch(
        url, json={"name": "X"}, headers=with_key({**env.a, "If-Match": '"1"'}, "patch-ok")
    )
    assert ok.status_code == 200, ok.text
    assert ok.headers["etag"] == '"2"'


async def test_same_key_with_another_payload_is_422(env: Env) -> None:
    headers = with_key(env.a, "reused")
    first = await env.client.post("/api/v1/products", json=product("A"), headers=headers)
    assert first.status_code == 201
    other = await env.client.post("/api/v1/products", json=product("B"), headers=headers)
    assert_problem(other, 422, "idempotency-key-reused")
    # Another route with the same key and body is another request too.
    elsewhere = await env.client.post("/api/v1/accounts", json=product("A"), headers=headers)
    assert_problem(elsewhere, 422, "idempotency-key-reused")
    assert await count_rows(env.admin_url, "products") == 1


@pytest.mark.parametrize("key", [None, "", "has space", "del\x7f", "x" * 256])
async def test_missing_or_malformed_key_is_400(env: Env, key: str | None) -> None:
    headers = dict(env.a) if key is None else {**env.a, "Idempotency-Key": key}
    response = await env.client.post("/api/v1/accounts", json=ACCOUNT, headers=headers)
    assert_problem(response, 400, "idempotency-key-required")
    assert await count_rows(env.admin_url, "accounts") == 0


async def test_longest_valid_key_is_accepted(env: Env) -> None:
    key = "~" + "k" * 253 + "!"
    response = await env.client.post("/api/v1/accounts", json=ACCOUNT, headers=with_key(env.a, key))
    assert response.status_code == 201, response.text


async def test_unprotected_routes_need_no_key(env: Env) -> None:
    assert (await env.client.get("/api/v1/accounts", headers=env.a)).status_code == 200


async def test_keys_of_two_tenants_do_not_collide(env: Env) -> None:
    a = await env.client.post("/api/v1/accounts", json=ACCOUNT, headers=with_key(env.a, "k"))
    b = await env.client.post("/api/v1/accounts", json=ACCOUNT, headers=with_key(env.b, "k"))
    assert a.status_code == b.status_code == 201
    assert "idempotent-replayed" not in a.headers
    assert "idempotent-replayed" not in b.headers
    assert a.json()["id"] != b.json()["id"]
    assert await count_rows(env.admin_url, "accounts") == 2


async def test_unauthenticated_request_takes_no_lock(env: Env) -> None:
    refused = await env.client.post(
        "/api/v1/accounts", json=ACCOUNT, headers={"Idempotency-Key": "anon"}
    )
    assert_problem(refused, 401, "unauthorized")


# Failures release the key -----------------------------------------------------------------------


async def test_failed_first_attempt_releases_the_key(env: Env) -> None:
    headers = with_key(env.a, "flaky")
    failed = await env.client.post("/test/flaky", json={}, headers=headers)
    assert_problem(failed, 500, "internal-error")
    retried = await env.client.post("/test/flaky", json={}, headers=headers)
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert retried.json() == {"call": 2}
    assert env.probe.calls == 2


async def test_5xx_response_releases_the_key(env: Env) -> None:
    headers = with_key(env.a, "unavailable")
    first = await env.client.post("/test/unavailable", json={}, headers=headers)
    assert first.status_code == 503
    retried = await env.client.post("/test/unavailable", json={}, headers=headers)
    assert retried.status_code == 201
    assert retried.json() == {"call": 2}


async def test_in_flight_request_gets_409_then_the_replay(env: Env) -> None:
    headers = with_key(env.a, "slow")
    first = asyncio.create_task(env.client.post("/test/slow", json={}, headers=headers))
    # Once the first is known to be running (its lock taken before): no guess about how long
    # it took to get there on a loaded machine.
    async with asyncio.timeout(10):
        while env.probe.calls < 1:
            await asyncio.sleep(0.01)
    busy = await env.client.post("/test/slow", json={}, headers=headers)
    assert_problem(busy, 409, "idempotency-in-flight")
    assert busy.headers["retry-after"] == "1"
    done = await first
    assert done.status_code == 201
    replay = await env.client.post("/test/slow", json={}, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == done.content
    assert replay.headers["etag"] == done.headers["etag"] == '"1"'
    assert env.probe.calls == 1


async def test_only_the_lock_owner_stores_its_completion(open_env: OpenEnv) -> None:
    # The first request outlives its 0.2 s lock; the second takes the key over and finishes
    # first. The first's late completion must not replace the second's.
    env = await open_env(lock_seconds=0.2)
    env.probe.delays = [1.5, 0.0]
    headers = with_key(env.a, "takeover")
    first = asyncio.create_task(env.client.post("/test/slow", json={}, headers=headers))
    # From when the first is known to be running (its lock taken before), past the lock's TTL:
    # no guess about how long the request took to get there on a loaded machine.
    async with asyncio.timeout(10):
        while env.probe.calls < 1:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.4)
    second = await env.client.post("/test/slow", json={}, headers=headers)
    assert second.json() == {"call": 2}
    late = await first
    assert late.json() == {"call": 1}
    replay = await env.client.post("/test/slow", json={}, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == {"call": 2}
    assert replay.headers["etag"] == '"2"'


# Without Redis ----------------------------------------------------------------------------------


async def test_redis_unavailable_is_503_and_nothing_runs(open_env: OpenEnv) -> None:
    env = await open_env(redis_url="redis://127.0.0.1:1/0")
    response = await env.client.post(
        "/api/v1/accounts", json=ACCOUNT, headers=with_key(env.a, "no-redis")
    )
    assert_problem(response, 503, "service-unavailable")
    assert response.headers["retry-after"] == "1"
    assert await count_rows(env.admin_url, "accounts") == 0


# The Redis side on its own ----------------------------------------------------------------------


async def test_store_and_release_need_the_owner_token(redis_prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        engine = Idempotency(redis, redis_prefix, ttl_seconds=60, lock_seconds=0.1)
        tenant = uuid.uuid4()
        first = await engine.begin(tenant, "k", "fp")
        assert isinstance(first, New)
        await asyncio.sleep(0.15)  # the lock expires: a second request takes the key over
        second = await engine.begin(tenant, "k", "fp")
        assert isinstance(second, New)
        stale = StoredResponse(201, [("ETag", '"1"')], b"first")
        assert not await engine.store(tenant, "k", first.token, stale)
        assert not await engine.release(tenant, "k", first.token)
        fresh = StoredResponse(201, [("ETag", '"2"')], b"second")
        assert await engine.store(tenant, "k", second.token, fresh)
        assert await engine.begin(tenant, "k", "fp") == Done(fresh)
        # Done is final: neither owner can release or overwrite it.
        assert not await engine.release(tenant, "k", second.token)
        assert not await engine.store(tenant, "k", second.token, stale)
        ttl = await redis.pttl(engine.record_key(tenant, "k"))
        assert 55_000 < ttl <= 60_000
    finally:
        await redis.aclose()


async def test_a_claim_asked_again_with_its_token_is_still_new(redis_prefix: str) -> None:
    # The service sends the claim with the rate limit; when that call times out after Redis ran
    # it, the claim is asked again with the same token: it is the caller's, not "in flight".
    redis = Redis.from_url(REDIS_URL)
    try:
        engine = Idempotency(redis, redis_prefix, ttl_seconds=60)
        tenant = uuid.uuid4()
        assert await engine.begin(tenant, "k", "fp", "token-1") == New("token-1")
        assert await engine.begin(tenant, "k", "fp", "token-1") == New("token-1")
        other = await engine.begin(tenant, "k", "fp", "token-2")
        assert isinstance(other, InFlight)
        assert isinstance(await engine.begin(tenant, "k", "other-fp", "token-1"), Mismatch)
    finally:
        await redis.aclose()


def test_fingerprint_ignores_json_layout_but_not_content() -> None:
    a = idempotency.canonical_body(b'{"b": 1, "a": [1, 2]}', "application/json")
    b = idempotency.canonical_body(b'{"a":[1,2],"b":1}', "application/json")
    c = idempotency.canonical_body(b'{"a":[2,1],"b":1}', "application/json")
    assert a == b != c
    assert idempotency.canonical_body(b"not json", "application/json") == b"not json"
    assert idempotency.fingerprint("POST", "/x", a) != idempotency.fingerprint("PATCH", "/x", a)
    assert idempotency.fingerprint("POST", "/x", b"") != idempotency.fingerprint("POST", "/", b"x")


# Wiring mistakes are loud -----------------------------------------------------------------------


def test_exactly_the_declared_idempotent_writes_are_guarded() -> None:
    # The declarations are the only list of idempotent writes: a route is guarded if and only
    # if its resource declares its operation idempotent.
    declared = {
        (method, f"{version}/{spec.name}{below}")
        for spec in RESOURCES
        for operation, method, below in (
            (Operation.CREATE, "POST", ""),
            (Operation.CHANGE, "PATCH", f"/{{{spec.item}_id}}"),
        )
        if operation in spec.idempotent
        for version in ("/api/v1", "/api/v2")
    }
    guarded = set()
    for version in VERSIONS:
        for route in version_router(version, RESOURCES).routes:
            assert isinstance(route, APIRoute)
            calls = {d.call for d in route.dependant.dependencies}
            if guards.idempotent in calls:
                guarded |= {(method, route.path) for method in route.methods}
    assert guarded == declared
    assert len(declared) == 10  # products and accounts: create, change; orders: create


async def test_a_guard_without_the_middleware_fails_loudly() -> None:
    # The one wiring mistake left: the guard on a route the middleware never saw. It must not
    # run the write unprotected.
    redis = Redis.from_url(REDIS_URL)
    try:
        engine = Idempotency(redis, "unused:", ttl_seconds=60)
        request = Request(
            {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""}
        )
        with pytest.raises(AssertionError, match="idempotency middleware did not see"):
            await idempotency.decide(engine, request, uuid.uuid4())
    finally:
        await redis.aclose()
