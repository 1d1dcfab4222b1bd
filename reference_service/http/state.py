"""What the app holds while it runs: one `Services`, built by the lifespan and nowhere else.

Everything a request uses that outlives it (the pool, the Redis client and the engines over
them) is made here at start-up, so no request pays for building it and nothing hangs off
`app.state` but this one typed object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from redis.asyncio import BlockingConnectionPool, Redis

from reference_service.cache.tables import TableCache
from reference_service.config import Settings
from reference_service.db.pool import Database
from reference_service.domain.common import ResourceSpec
from reference_service.domain.resources import RESOURCES
from reference_service.http.idempotency import Idempotency
from reference_service.http.keycache import KeyCache
from reference_service.http.pagination import CursorCodec
from reference_service.http.ratelimit import RateLimiter
from reference_service.observability import metrics

# Redis answers in well under a millisecond when healthy; a request must not hang on it when it
# is not. The rate limiter and idempotency decide what a timeout means for them.
REDIS_TIMEOUT_SECONDS: Final = 0.5
# Connections to Redis per process. More concurrent requests than this wait for a free one
# (within the timeout) instead of failing: a busy service is not a Redis outage.
REDIS_MAX_CONNECTIONS: Final = 100


def redis_client(url: str) -> Redis:
    """The app's Redis client: a bounded pool that makes a request wait for a free connection.

    redis-py's default pool raises `MaxConnectionsError` at its 100th concurrent command,
    which the rate limiter would have to treat as Redis being unavailable.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    return Redis.from_pool(pool)


@dataclass(frozen=True)
class Services:
    settings: Settings
    database: Database
    redis: Redis
    rate_limiter: RateLimiter
    idempotency: Idempotency
    cursors: CursorCodec
    key_cache: KeyCache
    caches: Mapping[str, TableCache[Any]]
    """The read-through cache of each resource declared `cached`, by collection name."""


@asynccontextmanager
async def open_services(
    settings: Settings, resources: Iterable[ResourceSpec[Any]] = RESOURCES
) -> AsyncIterator[Services]:
    """The app's services, open for as long as the context lasts."""
    database = Database(settings)
    # Without waiting for the first connections: a database that is down at start-up makes the
    # pod not ready (/ready) rather than crash-looping, and the pool keeps trying.
    await database.open(wait=False)
    # Read at scrape time; the collector holds it weakly, so a closed app's pool drops out.
    metrics.POOLS.watch(database)
    redis = redis_client(settings.redis_url.get_secret_value())
    caches: dict[str, TableCache[Any]] = {
        spec.name: TableCache(redis, database, settings, spec.table, spec.item)
        for spec in resources
        if spec.cached
    }
    try:
        yield Services(
            settings=settings,
            database=database,
            redis=redis,
            rate_limiter=RateLimiter(redis, settings.policy.rate_limit, settings.redis_key_prefix),
            idempotency=Idempotency(
                redis, settings.redis_key_prefix, settings.policy.idempotency.ttl_seconds
            ),
            cursors=CursorCodec(settings.cursor_secret.get_secret_value().encode()),
            key_cache=KeyCache(),
            caches=caches,
        )
    finally:
        for cache in caches.values():
            await cache.close()
        await redis.aclose()
        await database.close()


def app_services(request: Request) -> Services:
    """The services of the app serving `request`."""
    found: Services = request.app.state.services
    return found


async def services(request: Request) -> Services:
    """FastAPI dependency: the services of the app serving `request`. Async on purpose: a sync
    dependency runs in a worker thread, a thread hop on every request."""
    return app_services(request)


Svc = Annotated[Services, Depends(services)]
