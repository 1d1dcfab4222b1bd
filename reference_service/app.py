"""The FastAPI application factory: wires the layers together and does nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from fastapi import Depends, FastAPI
from redis.asyncio import Redis

from reference_service.config import Settings
from reference_service.db.pool import Database

# idempotency and ratelimit register their problem types on import: before the route modules,
# whose OpenAPI error tables are built from the registry.
from reference_service.http import idempotency, limits, ratelimit  # isort: skip
from reference_service.http import health, order_routes, problems, routes_v1, routes_v2, versioning
from reference_service.http.pagination import CursorCodec
from reference_service.http.state import Services
from reference_service.observability import tracing

# Redis answers in well under a millisecond when healthy; a request must not hang on it when it
# is not. Later layers (rate limits, idempotency) decide what a timeout means for them.
REDIS_TIMEOUT_SECONDS: Final = 0.5


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new application; `adbm-service serve` runs it with uvicorn's `factory=True`."""
    settings = settings or Settings()
    tracer_provider = tracing.provider(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings)
        # Without waiting for the first connections: a database that is down at start-up makes
        # the pod not ready (/ready) rather than crash-looping, and the pool keeps trying.
        await database.open(wait=False)
        redis = Redis.from_url(
            settings.redis_url.get_secret_value(),
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        app.state.rate_limiter = ratelimit.RateLimiter(
            redis, settings.policy.rate_limit, settings.redis_key_prefix
        )
        app.state.services = Services(
            settings=settings,
            database=database,
            redis=redis,
            cursors=CursorCodec(settings.cursor_secret.get_secret_value().encode()),
        )
        try:
            yield
        finally:
            await redis.aclose()
            await database.close()
            # Flushes spans still batched for export, so the last requests' traces are kept.
            tracer_provider.shutdown()

    app = FastAPI(
        title="ADBM reference service",
        version="1",
        lifespan=lifespan,
        # Never the debug traceback page: errors are problem+json whatever the settings.
        debug=False,
    )
    problems.install(app)
    idempotency.install(
        app, routes=idempotency.V1_WRITES | idempotency.V2_WRITES | order_routes.WRITES
    )
    app.include_router(health.router)
    deprecated = versioning.deprecated_versions(settings.policy.versioning)
    # Both versions call the same domain functions; a deprecated one is marked so in the
    # OpenAPI document, and its responses carry the deprecation headers.
    # Every public route: rate limited first (one Redis round trip), then, on the critical
    # writes, the idempotency decision (one more); health and readiness stay unlimited.
    guards = [Depends(ratelimit.rate_limited()), idempotency.GUARD]
    placing = {
        "v1": order_routes.router(routes_v1.PREFIX, lambda order: order),
        "v2": order_routes.router(routes_v2.PREFIX, routes_v2.OrderV2.of),
    }
    for version, router in (("v1", routes_v1.router), ("v2", routes_v2.router)):
        app.include_router(router, deprecated=version in deprecated or None, dependencies=guards)
        app.include_router(
            placing[version], deprecated=version in deprecated or None, dependencies=guards
        )
    if deprecated:
        app.add_middleware(versioning.DeprecationMiddleware, policy=settings.policy.versioning)
    app.add_middleware(ratelimit.RateLimitHeaders)
    app.add_middleware(limits.BodyLimit, max_bytes=settings.max_body_bytes)
    # Outermost: every response, errors included, is inside the request's span.
    app.add_middleware(tracing.RequestSpans, tracer_provider=tracer_provider)
    return app
