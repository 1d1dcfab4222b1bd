"""The FastAPI application factory: wires the layers together and does nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from fastapi import FastAPI
from redis.asyncio import Redis

from reference_service.config import Settings
from reference_service.db.pool import Database
from reference_service.http import health, problems, routes_v1
from reference_service.http.pagination import CursorCodec
from reference_service.http.state import Services

# Redis answers in well under a millisecond when healthy; a request must not hang on it when it
# is not. Later layers (rate limits, idempotency) decide what a timeout means for them.
REDIS_TIMEOUT_SECONDS: Final = 0.5


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new application; `adbm-service serve` runs it with uvicorn's `factory=True`."""
    settings = settings or Settings()

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

    app = FastAPI(
        title="ADBM reference service",
        version="1",
        lifespan=lifespan,
        # Never the debug traceback page: errors are problem+json whatever the settings.
        debug=False,
    )
    problems.install(app)
    app.include_router(health.router)
    app.include_router(routes_v1.router)
    return app
