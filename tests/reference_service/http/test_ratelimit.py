"""The rate limiter against a real Redis (`ADBM_TEST_REDIS_URL`, default the local one).

Every test uses its own key prefix, so tests never share buckets. Tests that lose Redis start
their own `redis-server` on a free port and kill it; the shared Redis is never disturbed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from redis.asyncio import Redis

from reference_service.db.admin import Principal
from reference_service.http import problems
from reference_service.http.auth import current_principal
from reference_service.http.guards import rate_limited, rate_limiter
from reference_service.http.ratelimit import RateLimiter
from reference_service.http.state import redis_client
from reference_service.policy import RateLimitPolicy
from tests.reference_service.http.conftest import Callers, OpenService

REDIS_URL = os.environ.get("ADBM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PROBLEM = "application/problem+json"
POLICY_HEADER = re.compile(r'^"(?:[^"\\]|\\.)*";q=\d+;w=\d+;burst=\d+$')
STATE_HEADER = re.compile(r'^"(?:[^"\\]|\\.)*";r=\d+;t=\d+$')
ALGORITHMS = ["GCRA", "TokenBucket"]
# A quota that does not refill during a test: whatever is admitted comes from the burst.
NO_REFILL = {"requests": 1, "period_seconds": 3600}


@pytest.fixture
def prefix() -> str:
    return f"test:ratelimit:{uuid.uuid4().hex}:"


@pytest.fixture
async def redis(prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def own_redis() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A dedicated, disposable redis-server: (process, url)."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield proc, f"redis://127.0.0.1:{port}/0"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _policy(**changes: Any) -> RateLimitPolicy:
    return RateLimitPolicy.model_validate(changes)


def _app(limiter: RateLimiter) -> FastAPI:
    """A small app using the dependency as the service would; `X-Tenant`/`X-Key` headers stand
    in for authentication (the real `current_principal` is overridden), and `limiter` for the
    one the lifespan would build."""
    app = FastAPI()
    problems.install(app)

    async def this_limiter() -> RateLimiter:
        return limiter

    app.dependency_overrides[rate_limiter] = this_limiter

    def fake_principal(request: Request) -> Principal:
        return Principal(
            tenant_id=uuid.UUID(request.headers["x-tenant"]),
            key_id=uuid.UUID(request.headers["x-key"]),
        )

    app.dependency_overrides[current_principal] = fake_principal
    api = APIRouter(dependencies=[Depends(rate_limited())])

    @api.get("/items")
    async def list_items() -> dict[str, str]:
        return {"ok": "list"}

    @api.post("/items")
    async def create_item() -> dict[str, str]:
        return {"ok": "create"}

    @api.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    public = APIRouter(dependencies=[Depends(rate_limited(authenticated=False))])

    @public.get("/public")
    async def public_route() -> dict[str, str]:
        return {"ok": "public"}

    app.include_router(api)
    app.include_router(public)
    return app


def _caller(tenant: uuid.UUID | None = None, key: uuid.UUID | None = None) -> dict[str, str]:
    return {"x-tenant": str(tenant or uuid.uuid4()), "x-key": str(key or uuid.uuid4())}


# -- several processes, one bucket ------------------------------------------------------------

_WORKER = """
import asyncio, collections, json, sys, time
from redis.asyncio import Redis
from reference_service.http.ratelimit import RateLimiter
from reference_service.http.state import redis_client
from reference_service.policy import RateLimitPolicy

url, prefix, policy_json, start_at, attempts = sys.argv[1:6]

async def main():
    client = Redis.from_url(url)
    # A generous timeout: this test is about exactness under contention, not the fallback.
    limiter = RateLimiter(client, RateLimitPolicy.model_validate_json(policy_json), prefix,
                          timeout_seconds=5.0)
    await client.ping()  # connect before the start line, so everyone starts together
    await asyncio.sleep(max(0.0, float(start_at) - time.time()))
    decisions = await asyncio.gather(
        *(limiter.check("tenant:shared", "GET", "/items") for _ in range(int(attempts)))
    )
    await client.aclose()
    counts = collections.Counter(d.source for d in decisions)
    print(json.dumps({"admitted": sum(d.allowed for d in decisions), "sources": counts}))

asyncio.run(main())
"""


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_admits_exactly_burst_across_processes(
    algorithm: str, prefix: str, redis: Redis
) -> None:
    burst, processes, attempts = 25, 4, 30
    policy = _policy(algorithm=algorithm, default={**NO_REFILL, "burst": burst})
    start_at = time.time() + 2.0  # enough for every interpreter to start and connect
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            REDIS_URL,
            prefix,
            policy.model_dump_json(),
            str(start_at),
            str(attempts),
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    results = []
    for proc in procs:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0
        results.append(json.loads(out))
    assert all(r["sources"] == {"redis": attempts} for r in results), results
    assert sum(r["admitted"] for r in results) == burst, results


# -- refill ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_refills_at_the_configured_rate(algorithm: str, prefix: str, redis: Redis) -> None:
    rate, burst, window = 20, 5, 1.5
    policy = _policy(
        algorithm=algorithm, default={"requests": rate, "period_seconds": 1, "burst": burst}
    )
    limiter = RateLimiter(redis, policy, prefix, timeout_seconds=1.0)
    admitted = 0
    start = last = time.monotonic()
    while time.monotonic() - start < window:
        decision = await limiter.check("tenant:refill", "GET", "/items")
        last = time.monotonic()
        assert decision.source == "redis"
        admitted += decision.allowed
        await asyncio.sleep(0.005)
    # The full burst, then `rate` per second over the time the checks really spanned (a
    # loaded machine may stall the loop); the tolerance absorbs where the window's edges fall
    # between two emissions, not a rate error.
    expected = burst + rate * (last - start)
    assert abs(admitted - expected) <= 3, (admitted, expected)


async def test_keys_expire(prefix: str, redis: Redis) -> None:
    # A period of seconds, so that a loaded machine cannot let the key expire before it is
    # read: one request out of a 10-per-20-s bucket fills again after 2 s, and the key lives
    # exactly that long (plus the script's 1 ms of rounding), never the period or forever.
    for algorithm in ALGORITHMS:
        policy = _policy(
            algorithm=algorithm, default={"requests": 10, "period_seconds": 20, "burst": 5}
        )
        limiter = RateLimiter(redis, policy, f"{prefix}{algorithm}:")
        await limiter.check("tenant:ttl", "GET", "/items")
        keys = [key async for key in redis.scan_iter(match=f"{prefix}{algorithm}:*")]
        assert len(keys) == 1
        ttl = await redis.pttl(keys[0])
        assert 0 < ttl <= 2_001, ttl


async def _burn_cpu(stop: asyncio.Event, slice_seconds: float) -> None:
    """Keeps the event loop busy as a saturated service's handlers would: CPU work in slices,
    yielding between them."""
    while not stop.is_set():
        until = time.perf_counter() + slice_seconds
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(0)


async def test_a_saturated_loop_never_takes_the_redis_down_path(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # 64 requests in flight at a time, on a loop kept busy by 10 tasks of 2 ms CPU slices:
    # a check waits several turns of over 20 ms each for its turn, more than the 50 ms
    # deadline (the run at 32 connections had a p99 of 80-100 ms), while Redis answers
    # in well under a millisecond. The deadline must tell the two apart: every decision is
    # Redis's.
    redis = redis_client(REDIS_URL)  # the service's own client
    limiter = RateLimiter(redis, _policy(default={**NO_REFILL, "burst": 10_000}), prefix)
    # Connected before the load starts, as a service is after its first requests.
    await asyncio.gather(*(limiter.check("tenant:warm", "GET", "/items") for _ in range(64)))
    stop = asyncio.Event()
    burners = [asyncio.create_task(_burn_cpu(stop, 0.002)) for _ in range(10)]
    decisions = []
    try:
        await asyncio.sleep(0)
        for _ in range(5):
            decisions += await asyncio.gather(
                *(limiter.check(f"tenant:{i % 8}", "GET", "/items") for i in range(64))
            )
    finally:
        stop.set()
        await asyncio.gather(*burners)
        await redis.delete(*[key async for key in redis.scan_iter(match=prefix + "*")])
        await redis.aclose()
    assert [d.source for d in decisions] == ["redis"] * 320
    assert limiter.fallbacks == 0
    assert "Redis unavailable" not in caplog.text


# -- headers and problems, end to end --------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_headers_and_429(algorithm: str, prefix: str, redis: Redis) -> None:
    policy = _policy(algorithm=algorithm, default={**NO_REFILL, "burst": 3})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app(RateLimiter(redis, policy, prefix))),
        base_url="http://test",
    ) as client:
        caller = _caller()
        remaining = []
        for _ in range(3):
            response = await client.get("/items", headers=caller)
            assert response.status_code == 200
            assert response.headers["RateLimit-Policy"] == '"default";q=1;w=3600;burst=3'
            assert STATE_HEADER.match(response.headers["RateLimit"])
            remaining.append(response.headers["RateLimit"])
        assert remaining[0].startswith('"default";r=2;t=')
        assert remaining[2].startswith('"default";r=0;t=')
        # Full again after the three emissions of 3600 s each.
        assert remaining[2] == '"default";r=0;t=10800'

        refused = await client.get("/items", headers=caller)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == PROBLEM
        body = refused.json()
        assert body["type"] == "https://adbm.io/problems/rate-limited"
        assert body["status"] == 429
        assert refused.headers["Retry-After"].isdigit()
        # The next emission is ~3600 s away; rounded up, never early.
        assert 3590 <= int(refused.headers["Retry-After"]) <= 3600
        assert POLICY_HEADER.match(refused.headers["RateLimit-Policy"])
        assert refused.headers["RateLimit"].startswith('"default";r=0;t=')

        # Another tenant has its own bucket.
        assert (await client.get("/items", headers=_caller())).status_code == 200


@pytest.mark.parametrize(("scope", "shared"), [("Tenant", True), ("ApiKey", False)])
async def test_scope(scope: str, shared: bool, prefix: str, redis: Redis) -> None:
    policy = _policy(scope=scope, default={**NO_REFILL, "burst": 1})
    tenant = uuid.uuid4()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app(RateLimiter(redis, policy, prefix))),
        base_url="http://test",
    ) as client:
        assert (await client.get("/items", headers=_caller(tenant))).status_code == 200
        second = await client.get("/items", headers=_caller(tenant))  # same tenant, other key
        assert second.status_code == (429 if shared else 200)


async def test_unauthenticated_routes_are_limited_per_client_ip(prefix: str, redis: Redis) -> None:
    policy = _policy(default={**NO_REFILL, "burst": 2})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app(RateLimiter(redis, policy, prefix))),
        base_url="http://test",
    ) as client:
        statuses = [(await client.get("/public")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
    keys = [key.decode() async for key in redis.scan_iter(match=prefix + "*")]
    assert keys == [f"{prefix}ratelimit:default:ip:127.0.0.1"]


async def test_per_route_overrides(prefix: str, redis: Redis) -> None:
    policy = _policy(
        default={**NO_REFILL, "burst": 3},
        routes=[
            {**NO_REFILL, "method": "POST", "path": "/items", "burst": 1},
            {**NO_REFILL, "method": "*", "path": "/items/{item_id}", "burst": 2},
        ],
    )
    limiter = RateLimiter(redis, policy, prefix)
    assert limiter.quota_for("POST", "/items").name == "POST /items"
    assert limiter.quota_for("get", "/items").name == "default"
    assert limiter.quota_for("DELETE", "/items/{item_id}").name == "* /items/{item_id}"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app(limiter)), base_url="http://test"
    ) as client:
        caller = _caller()
        created = await client.post("/items", headers=caller)
        assert created.headers["RateLimit-Policy"] == '"POST /items";q=1;w=3600;burst=1'
        assert created.headers["RateLimit"].startswith('"POST /items";r=0;')
        assert (await client.post("/items", headers=caller)).status_code == 429
        # The default bucket is untouched by the POST override.
        listed = await client.get("/items", headers=caller)
        assert listed.status_code == 200
        assert listed.headers["RateLimit"].startswith('"default";r=2;')
        # Concrete URLs share their template's bucket.
        one = await client.get("/items/1", headers=caller)
        assert one.headers["RateLimit-Policy"] == '"* /items/{item_id}";q=1;w=3600;burst=2'
        assert (await client.get("/items/2", headers=caller)).status_code == 200
        assert (await client.get("/items/3", headers=caller)).status_code == 429


# -- Redis lost ------------------------------------------------------------------------------


async def _statuses(client: httpx.AsyncClient, caller: dict[str, str], n: int) -> list[int]:
    out = []
    for _ in range(n):
        # The decision must come back (no hang); how fast is not asserted here.
        response = await asyncio.wait_for(client.get("/items", headers=caller), timeout=5)
        out.append(response.status_code)
    return out


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_fail_open_uses_a_local_bucket_when_redis_dies(
    algorithm: str, own_redis: tuple[subprocess.Popen[bytes], str], prefix: str
) -> None:
    proc, url = own_redis
    redis = Redis.from_url(url)
    policy = _policy(
        algorithm=algorithm, on_redis_unavailable="FailOpen", default={**NO_REFILL, "burst": 3}
    )
    limiter = RateLimiter(redis, policy, prefix)
    caller = _caller()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_app(limiter)), base_url="http://test"
        ) as client:
            assert await _statuses(client, caller, 2) == [200, 200]
            assert (await limiter.check("tenant:probe", "GET", "/items")).source == "redis"
            proc.kill()
            proc.wait(timeout=10)
            # The local bucket starts full: the same burst of 3, then refusals, never a 500.
            assert await _statuses(client, caller, 5) == [200, 200, 200, 429, 429]
            fallback = await client.get("/items", headers=caller)
            assert fallback.status_code == 429
            assert fallback.headers["content-type"] == PROBLEM
            assert fallback.headers["Retry-After"].isdigit()
            assert POLICY_HEADER.match(fallback.headers["RateLimit-Policy"])
            assert STATE_HEADER.match(fallback.headers["RateLimit"])
            decision = await limiter.check("tenant:other", "GET", "/items")
            assert decision.source == "local"
            assert decision.allowed
    finally:
        await redis.aclose()


async def test_fail_closed_answers_503_when_redis_dies(
    own_redis: tuple[subprocess.Popen[bytes], str], prefix: str
) -> None:
    proc, url = own_redis
    redis = Redis.from_url(url)
    policy = _policy(on_redis_unavailable="FailClosed", default={**NO_REFILL, "burst": 3})
    limiter = RateLimiter(redis, policy, prefix)
    caller = _caller()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_app(limiter)), base_url="http://test"
        ) as client:
            assert await _statuses(client, caller, 1) == [200]
            proc.kill()
            proc.wait(timeout=10)
            assert await _statuses(client, caller, 3) == [503, 503, 503]
            refused = await client.get("/items", headers=caller)
            assert refused.headers["content-type"] == PROBLEM
            assert refused.json()["type"] == "https://adbm.io/problems/service-unavailable"
            assert refused.headers["Retry-After"].isdigit()
            assert POLICY_HEADER.match(refused.headers["RateLimit-Policy"])
    finally:
        await redis.aclose()


@pytest.mark.parametrize("mode", ["FailOpen", "FailClosed"])
async def test_hung_redis_is_decided_within_the_timeout_and_recovered_from(
    mode: str,
    own_redis: tuple[subprocess.Popen[bytes], str],
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc, url = own_redis
    redis = Redis.from_url(url)
    policy = _policy(on_redis_unavailable=mode, default={**NO_REFILL, "burst": 3})
    limiter = RateLimiter(redis, policy, prefix, timeout_seconds=0.05)
    try:
        assert (await limiter.check("tenant:t", "GET", "/items")).source == "redis"
        proc.send_signal(signal.SIGSTOP)  # connected, but never answers
        try:
            decision = await asyncio.wait_for(limiter.check("tenant:t", "GET", "/items"), timeout=2)
            assert decision.source == ("local" if mode == "FailOpen" else "unavailable")
            assert decision.allowed is (mode == "FailOpen")
            assert limiter.fallbacks == 1
            # The log states the back-off the limiter applies (0.25 s), not a rounding of it.
            assert f"{mode} for 0.25 s" in caplog.text
        finally:
            proc.send_signal(signal.SIGCONT)
        # After the back-off, Redis decides again over a fresh connection.
        await asyncio.sleep(0.5)
        decision = await limiter.check("tenant:t", "GET", "/items")
        assert decision.source == "redis"
        assert decision.allowed
    finally:
        await redis.aclose()


async def test_script_is_reloaded_after_a_flush(
    own_redis: tuple[subprocess.Popen[bytes], str], prefix: str
) -> None:
    _, url = own_redis
    redis = Redis.from_url(url)
    limiter = RateLimiter(redis, _policy(default={**NO_REFILL, "burst": 2}), prefix)
    try:
        assert (await limiter.check("tenant:t", "GET", "/items")).remaining == 1
        await redis.script_flush()
        decision = await limiter.check("tenant:t", "GET", "/items")
        assert (decision.source, decision.allowed, decision.remaining) == ("redis", True, 0)
    finally:
        await redis.aclose()


async def test_a_saturated_service_never_takes_the_redis_down_path(
    open_service: OpenService, callers: Callers
) -> None:
    # The whole app (authentication, the key cache, the rate limit, the RLS transaction) kept
    # saturated by 64 concurrent GETs, round after round, as a load test would: its own work
    # makes each turn of the loop long, as in the run at 32 connections. Every
    # decision is still Redis's.
    service = await open_service(db_pool_max_size=10)
    headers = callers.a.headers
    assert (await service.client.get("/api/v2/products", headers=headers)).status_code == 200
    for _ in range(5):
        responses = await asyncio.gather(
            *(service.client.get("/api/v2/products", headers=headers) for _ in range(64))
        )
        assert [r.status_code for r in responses] == [200] * 64
    assert service.services.rate_limiter.fallbacks == 0
