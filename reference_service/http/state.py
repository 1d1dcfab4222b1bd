"""What the app holds while it runs: one `Services`, built by the lifespan and nowhere else.

Everything a request uses that outlives it (the pool, the Redis client and the engines over
them) is made here at start-up, so no request pays for building it and nothing hangs off
`app.state` but this one typed object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, Request
from redis.asyncio import Redis

from reference_service.config import Settings
from reference_service.db.pool import Database
from reference_service.http.idempotency import Idempotency
from reference_service.http.pagination import CursorCodec
from reference_service.http.ratelimit import RateLimiter
from reference_service.observability import metrics

# Redis answers in well under a millisecond when healthy; a request must not hang on it when it
# is not. The rate limiter and idempotency decide what a timeout means for them.
REDIS_TIMEOUT_SECONDS: Final = 0.5


@dataclass(frozen=True)
class Services:
    settings: Settings
    database: Database
    redis: Redis
    rate_limiter: RateLimiter
    idempotency: Idempotency
    cursors: CursorCodec


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """The app's services, open for as long as the context lasts."""
    database = Database(settings)
    # Without waiting for the first connections: a database that is down at start-up makes the
    # pod not ready (/ready) rather than crash-looping, and the pool keeps trying.
    await database.open(wait=False)
    # Read at scrape time; the collector holds it weakly, so a closed app's pool drops out.
    metrics.POOLS.watch(database)
    redis = Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
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
        )
    finally:
        await redis.aclose()
        await database.close()


async def services(request: Request) -> Services:
    """FastAPI dependency: the services of the app serving `request`. Async on purpose: a sync
    dependency runs in a worker thread, a thread hop on every request."""
    found: Services = request.app.state.services
    return found


Svc = Annotated[Services, Depends(services)]
