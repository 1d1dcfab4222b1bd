"""The read-through cache's metrics move when their event happens: hits, cached absences,
misses, stale entries served during a rebuild, Bloom filter refusals and stampede waits,
against the real Redis and PostgreSQL."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY
from redis.asyncio import Redis

from reference_service.db.pool import Database
from tests.reference_service.cache.test_product_cache import (
    expire,
    one_product,
    prefix,
    product_cache,
    redis,
)
from tests.reference_service.conftest import Tenants

__all__ = ["prefix", "redis"]


def lookups(result: str) -> float:
    value = REGISTRY.get_sample_value(
        "adbm_cache_lookups_total", {"cache": "product", "result": result}
    )
    return value or 0.0


def waits() -> float:
    value = REGISTRY.get_sample_value("adbm_cache_stampede_waits_total", {"cache": "product"})
    return value or 0.0


async def test_a_miss_then_a_hit(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    product_id = await one_product(database, tenants.a)
    cache, _ = product_cache(redis, database, prefix)
    miss, hit = lookups("miss"), lookups("hit")
    assert await cache.find(tenants.a, product_id) is not None
    assert (lookups("miss"), lookups("hit")) == (miss + 1, hit)
    assert await cache.find(tenants.a, product_id) is not None
    assert (lookups("miss"), lookups("hit")) == (miss + 1, hit + 1)


async def test_a_cached_absence_is_a_negative_hit(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    cache, _ = product_cache(redis, database, prefix)
    unknown = uuid.uuid4()
    miss, negative = lookups("miss"), lookups("negative_hit")
    assert await cache.find(tenants.a, unknown) is None  # loaded: no such row
    assert await cache.find(tenants.a, unknown) is None  # the absence, from the cache
    assert (lookups("miss"), lookups("negative_hit")) == (miss + 1, negative + 1)


async def test_the_bloom_filter_refusing_an_unknown_id(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    await one_product(database, tenants.a)
    cache, db = product_cache(redis, database, prefix)
    await cache.build_filter(tenants.a)
    filtered = lookups("filtered")
    db.reads = 0
    assert await cache.find(tenants.a, uuid.uuid4()) is None
    assert db.reads == 0
    assert lookups("filtered") == filtered + 1


async def test_a_stale_entry_served_while_another_caller_rebuilds(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    product_id = await one_product(database, tenants.a)
    cache, _ = product_cache(redis, database, prefix)
    assert await cache.find(tenants.a, product_id) is not None
    keys = cache.cache.keys(tenants.a, str(product_id))
    await expire(redis, keys.entry)
    await redis.set(keys.lock, "another-caller", px=10_000)  # that caller is rebuilding
    stale = lookups("stale")
    assert await cache.find(tenants.a, product_id) is not None
    assert lookups("stale") == stale + 1


async def test_waiting_for_another_callers_rebuild_is_a_stampede_wait(
    redis: Redis, database: Database, tenants: Tenants, prefix: str
) -> None:
    product_id = await one_product(database, tenants.a)
    cache, _ = product_cache(redis, database, prefix, cache_lock_lease_ms=300)
    keys = cache.cache.keys(tenants.a, str(product_id))
    # No entry, and a rebuilder holds the mutex (then dies: its lease ends the wait).
    await redis.set(keys.lock, "dead-holder", px=300)
    before, miss = waits(), lookups("miss")
    assert await cache.find(tenants.a, product_id) is not None
    assert waits() == before + 1
    assert lookups("miss") == miss + 1
