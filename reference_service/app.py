"""The FastAPI application factory: wires the layers together and does nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from reference_service.config import Settings
from reference_service.domain.resources import RESOURCES
from reference_service.http import (
    endpoints,
    health,
    idempotency,
    limits,
    problems,
    ratelimit,
    versioning,
)
from reference_service.http.representation import V1, Representation
from reference_service.http.state import open_services
from reference_service.http.v2 import V2
from reference_service.observability import access, tracing

# Every API version, each an adapter over the same resource declarations.
VERSIONS: Final[tuple[Representation, ...]] = (V1, V2)

# FastAPI documents a 422 of its own shape on every operation with parameters; this service
# answers invalid requests with a 400 `validation-error` problem instead (each operation lists
# it), so those entries and their schemas would be false.
_FRAMEWORK_VALIDATION: Final = ("ValidationError", "HTTPValidationError")


class ServiceApp(FastAPI):
    def openapi(self) -> dict[str, Any]:
        document = super().openapi()
        ref = "#/components/schemas/HTTPValidationError"
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                framework = responses.get("422", {}).get("content", {}).get("application/json")
                if framework is not None and framework.get("schema", {}).get("$ref") == ref:
                    del responses["422"]
        schemas = document.get("components", {}).get("schemas", {})
        for name in _FRAMEWORK_VALIDATION:
            schemas.pop(name, None)
        return document


def create_app(
    settings: Settings | None = None, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """A new application; `adbm-service serve` runs it with uvicorn's `factory=True`.
    `tracer_provider` replaces the one built from the settings (a test's in-memory exporter)."""
    settings = settings or Settings()
    tracer_provider = tracer_provider or tracing.provider(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with open_services(settings) as services:
                app.state.services = services
                yield
        finally:
            # Flushes spans still batched for export, so the last requests' traces are kept.
            tracer_provider.shutdown()

    app = ServiceApp(
        title="ADBM reference service",
        version="1",
        lifespan=lifespan,
        # Never the debug traceback page: errors are problem+json whatever the settings.
        debug=False,
    )
    problems.install(app)
    app.include_router(health.router)
    deprecated = versioning.deprecated_versions(settings.policy.versioning)
    # Every version serves the same declarations through the same handlers; a deprecated one
    # is marked so in the OpenAPI document, and its responses carry the deprecation headers.
    # Every API route is rate limited first (one Redis round trip), then, on the idempotent
    # writes, decided by the idempotency store (one more); health and readiness stay unlimited.
    for version in VERSIONS:
        app.include_router(
            endpoints.version_router(version, RESOURCES),
            deprecated=version.name in deprecated or None,
        )
    app.add_middleware(idempotency.IdempotencyMiddleware)
    if deprecated:
        app.add_middleware(versioning.DeprecationMiddleware, policy=settings.policy.versioning)
    app.add_middleware(ratelimit.RateLimitHeaders)
    app.add_middleware(limits.BodyLimit, max_bytes=settings.max_body_bytes)
    # Inside the span, so the access line carries the trace id; outside everything else, so
    # it times and counts every response, errors included.
    app.add_middleware(access.RequestObservation, on_unhandled=problems.answer_unhandled)
    # Outermost: every response, errors included, is inside the request's span.
    app.add_middleware(
        tracing.RequestSpans,
        tracer_provider=tracer_provider,
        on_unhandled=problems.answer_unhandled,
    )
    return app
