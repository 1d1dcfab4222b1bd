"""The product read-through cache against the real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from reference_service.cache.bloom import BloomShape
from reference_service.cache.readthrough import CachePolicy, ReadThrough
from reference_service.cache.tables import TableCache
from reference_service.config import Settings
from reference_service.db.pool import Database, Statement
from reference_service.domain import products
from tests.reference_service.conftest import Tenants
from tests.reference_service.worker_support import seed

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    # A bounded pool, as the service uses: 1,000 concurrent readers share 50 connections.
    client = Redis(connection_pool=BlockingConnectionPool.from_url(REDIS_URL, max_connections=50))
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    value = f"test-{uuid.uuid4().hex[:10]}:"
    yield value
    keys = [key async for key in redis.scan_iter(match=f"{value}*")]
    if keys:
        await redis.delete(*keys)


class CountingDatabase:
    """The real Database, counting the reads that reach PostgreSQL."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self.reads = 0

    async def read(self, tenant_id: uuid.UUID | None, statement: Statement) -> Any:
        self.reads += 1
        return await self._database.read(tenant_id, statement)


def product_cache(
    redis: Redis, database: Database, prefix: str, **overrides: Any
) -> tuple[TableCache[products.Product], CountingDatabase]:
    counting = CountingDatabase(database)
    settings = Settings(redis_key_prefix=prefix, **overrides)
    # Filters are built explicitly here, so every read counted is one the test made.
    cache = TableCache(
        redis,
        counting,  # type: ignore[arg-type]
        settings,
        products.RESOURCE.table,
        "product",
        build_filters=False,
    )
    return cache, counting


async def one_product(database: Database, tenant: uuid.UUID) -> uuid.UUID:
    shop = await seed(database, tenant, balances=[], prices=[250])
    return shop.products[250]


async def expire(redis: Redis, key: str) -> None:
    """Move an entry's logical expiry into the past, as time passing would (the entry stays
    in Redis for its stale window)."""
    entry = json.loads(await redis.get(key))
    entry["exp"] = time.time() * 1000 - 1
    await redis.set(key, json.dumps(entry), keepttl=True)


async def test_1000_concurrent_reads_of_an_expired_hot_key_read_the_database_once(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    product_id = await one_product(database, tenants.a)
    cache, db = product_cache(redis, database, prefix, cache_lock_lease_ms=20_000)
    first = await cache.find(tenants.a, product_id)
    assert first is not None and db.reads == 1
    await expire(redis, cache.cache.keys(tenants.a, str(product_id)).entry)
    db.reads = 0
    results = await asyncio.gather(*(cache.find(tenants.a, product_id) for _ in range(1000)))
    assert db.reads == 1
    assert all(r == first for r in results)
    assert cache.cache.stats.stale_served > 0  # the others were not kept waiting


async def test_1000_concurrent_reads_of_a_missing_hot_key_read_the_database_once(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    product_id = await one_product(database, tenants.a)
    # One rebuild per lease is the promise: the lease is made longer than 1,000 waiters can
    # keep a loaded machine's loop busy, so a second rebuild here is a defect, not a lapse.
    cache, db = product_cache(redis, database, prefix, cache_lock_lease_ms=20_000)
    results = await asyncio.gather(*(cache.find(tenants.a, product_id) for _ in range(1000)))
    assert db.reads == 1
    assert {r.id for r in results if r is not None} == {product_id}
    assert None not in results
    # The misses share the process's one wait instead of each polling Redis: the first built
    # the entry under the mutex, so nobody had to wait on Redis at all (without the sharing,
    # every caller that found the mutex taken waited). Callers whose read came back after the
    # entry was stored found it there instead.
    assert cache.cache.stats.coalesced > 0
    assert cache.cache.stats.waits == 0


async def test_unknown_ids_never_reach_the_database_once_the_filter_is_built(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    shop = await seed(database, tenants.a, balances=[], prices=list(range(1, 51)))
    cache, db = product_cache(redis, database, prefix)
    assert await cache.build_filter(tenants.a) == 50
    db.reads = 0
    unknown = await asyncio.gather(*(cache.find(tenants.a, uuid.uuid4()) for _ in range(1000)))
    assert unknown == [None] * 1000
    assert db.reads == 0
    assert cache.cache.stats.refused_by_filter == 1000
    # No false negatives: every existing product is still found.
    found = [await cache.find(tenants.a, pid) for pid in shop.products.values()]
    assert [p.id for p in found if p is not None] == list(shop.products.values())


async def test_a_product_created_after_the_filter_was_built_is_found(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    cache, _ = product_cache(redis, database, prefix)
    await cache.build_filter(tenants.a)
    async with database.transaction(tenants.a) as conn:
        created = await products.RESOURCE.table.create(
            conn,
            tenants.a,
            products.ProductCreate(sku="new", name="new", price_minor=1, currency="EUR"),
            actor="test",
        )
        await cache.remember(tenants.a, created.id)  # before the commit
    assert await cache.find(tenants.a, created.id) == created


async def test_a_dead_mutex_holder_blocks_the_key_only_until_its_lease_ends(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    product_id = await one_product(database, tenants.a)
    cache, db = product_cache(redis, database, prefix, cache_lock_lease_ms=300)
    keys = cache.cache.keys(tenants.a, str(product_id))
    # A rebuilder took the mutex and died: its token stays until the lease runs out.
    await redis.set(keys.lock, "dead-holder", px=300)
    async with asyncio.timeout(10):  # a guard against waiting forever, not a measurement
        product = await cache.find(tenants.a, product_id)
    assert product is not None and product.id == product_id
    assert db.reads == 1
    assert cache.cache.stats.waits >= 1  # it did wait for the holder first
    assert await redis.get(keys.lock) is None  # and released the mutex it took over


async def test_the_mutex_is_released_only_by_its_owner(redis: Redis, prefix: str) -> None:
    cache = ReadThrough(
        redis,
        prefix=prefix,
        namespace="t",
        policy=CachePolicy(ttl_seconds=60, null_ttl_seconds=5, jitter=0, lease_ms=1000),
        shape=BloomShape.for_capacity(100, 0.01),
    )
    keys = cache.keys(uuid.uuid4(), "x")
    token = await cache._lock(keys)
    assert token is not None
    assert await cache._lock(keys) is None  # SET NX: one holder at a time
    await redis.set(keys.lock, "someone-else", px=1000)  # our lease ran out; theirs began
    await cache._unlock(keys=[keys.lock], args=[token])
    assert await redis.get(keys.lock) == b"someone-else"


async def test_another_tenant_never_sees_a_cached_value(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    product_id = await one_product(database, tenants.a)
    cache, db = product_cache(redis, database, prefix)
    assert await cache.find(tenants.a, product_id) is not None
    assert await cache.find(tenants.b, product_id) is None  # RLS: not B's product
    assert db.reads == 2  # B's read went to the database, not to A's entry
    assert await cache.find(tenants.b, product_id) is None
    assert db.reads == 2  # and B's "no such row" is cached for B
    assert await cache.find(tenants.a, product_id) is not None


async def test_missing_rows_are_cached_and_writes_invalidate(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    product_id = await one_product(database, tenants.a)
    cache, db = product_cache(redis, database, prefix)
    missing = uuid.uuid4()
    assert await cache.find(tenants.a, missing) is None
    assert await cache.find(tenants.a, missing) is None
    assert db.reads == 1
    keys = cache.cache.keys(tenants.a, str(missing))
    assert 0 < await redis.pttl(keys.entry) <= 2 * 30_000  # the short null TTL (+ stale)

    before = await cache.find(tenants.a, product_id)
    assert before is not None
    async with database.transaction(tenants.a) as conn:
        await products.RESOURCE.table.update(
            conn,
            product_id,
            products.ProductChanges(name="renamed"),
            expected_version=before.version,
            actor="test",
        )
    await cache.invalidate(tenants.a, product_id)
    after = await cache.find(tenants.a, product_id)
    assert after is not None and after.name == "renamed"


async def test_a_load_that_raced_a_write_does_not_store_the_old_row(
    redis: Redis, prefix: str
) -> None:
    cache = ReadThrough(
        redis,
        prefix=prefix,
        namespace="t",
        policy=CachePolicy(ttl_seconds=60, null_ttl_seconds=5, jitter=0, lease_ms=5000),
        shape=BloomShape.for_capacity(100, 0.01),
    )
    tenant = uuid.uuid4()
    loading = asyncio.Event()
    finish = asyncio.Event()
    loads = 0

    async def old_row() -> dict[str, Any]:
        nonlocal loads
        loads += 1
        loading.set()
        await finish.wait()
        return {"name": "old"}

    reader = asyncio.create_task(cache.get(tenant, "x", old_row))
    await loading.wait()
    await cache.invalidate(tenant, "x")  # the write committed while the reader was loading
    finish.set()
    assert await reader == {"name": "old"}  # that reader got what it read

    async def new_row() -> dict[str, Any]:
        return {"name": "new"}

    assert await cache.get(tenant, "x", new_row) == {"name": "new"}  # nothing old was stored


async def test_ttls_are_jittered(redis: Redis, prefix: str) -> None:
    cache = ReadThrough(
        redis,
        prefix=prefix,
        namespace="t",
        policy=CachePolicy(ttl_seconds=100, null_ttl_seconds=5, jitter=0.2, lease_ms=1000),
        shape=BloomShape.for_capacity(100, 0.01),
    )
    tenant = uuid.uuid4()

    async def row() -> dict[str, Any]:
        return {"n": 1}

    expiries = []
    for i in range(20):
        await cache.get(tenant, str(i), row)
        entry = json.loads(await redis.get(cache.keys(tenant, str(i)).entry))
        expiries.append(entry["exp"] - time.time() * 1000)
        lifetime = await redis.pttl(cache.keys(tenant, str(i)).entry)
        assert 2 * 80_000 - 1000 <= lifetime <= 2 * 100_000  # ttl in [80 s, 100 s], x2 stale
    assert max(expiries) - min(expiries) > 1000  # spread, not all equal


def test_xfetch_refreshes_early_only_with_a_probability_growing_near_expiry() -> None:
    def decide(draw: float, remaining_ms: float, delta_ms: float) -> bool:
        cache = ReadThrough(
            Redis(),  # never contacted: only the decision is computed
            prefix="p:",
            namespace="t",
            policy=CachePolicy(ttl_seconds=60, null_ttl_seconds=5, jitter=0, lease_ms=1000),
            shape=BloomShape.for_capacity(100, 0.01),
            rng=lambda: draw,
        )
        entry = {"v": 1, "exp": time.time() * 1000 + remaining_ms, "d": delta_ms}
        return cache._should_refresh(entry)

    assert not decide(0.0, remaining_ms=1000, delta_ms=100)  # -ln(1) = 0: never early
    assert decide(0.99999, remaining_ms=1000, delta_ms=100)  # -ln(1e-5) * 100 ms > 1 s
    assert not decide(0.99999, remaining_ms=60_000, delta_ms=100)  # far from expiry
    assert decide(0.0, remaining_ms=-1, delta_ms=100)  # expired: always


def test_bloom_shape_follows_the_standard_formulas() -> None:
    shape = BloomShape.for_capacity(100_000, 0.01)
    assert shape.bits == 958_506  # ceil(-n ln p / ln^2 2)
    assert shape.hashes == 7  # round(m / n * ln 2)
    positions = shape.positions("some-id")
    assert len(set(positions)) == 7 and all(0 <= p < shape.bits for p in positions)
    with pytest.raises(ValueError):
        BloomShape.for_capacity(0, 0.01)
