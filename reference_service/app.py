"""The FastAPI application factory: wires the layers together and does nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from reference_service.config import Settings, serving_problems
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
from reference_service.policy import RateLimitPolicy

# Every API version, each an adapter over the same resource declarations.
VERSIONS: Final[tuple[Representation, ...]] = (V1, V2)

# FastAPI documents a 422 of its own shape on every operation with parameters; this service
# answers invalid requests with a 400 `validation-error` problem instead (each operation lists
# it), so those entries and their schemas would be false.
_FRAMEWORK_VALIDATION: Final = ("ValidationError", "HTTPValidationError")


class ServingRefused(ValueError):
    """The settings must not serve requests; the message is one line naming the setting."""


def unknown_route_overrides(policy: RateLimitPolicy, app: FastAPI) -> list[str]:
    """The policy's per-route quotas that name no route of `app`: each would silently never
    apply, so they are refused where the policy is loaded instead."""
    if not policy.routes:
        return []
    # The OpenAPI document is the public list of every route template and its methods (FastAPI
    # keeps included routers nested, so `app.routes` does not list them); not kept, so that it
    # is built again with any route added after this check.
    document = app.openapi()
    app.openapi_schema = None
    served = {
        (method.upper(), path)
        for path, operations in document.get("paths", {}).items()
        for method in operations
    }
    paths = {path for _, path in served}
    unknown = []
    for index, route in enumerate(policy.routes):
        found = route.path in paths if route.method == "*" else (route.method, route.path) in served
        if not found:
            unknown.append(
                f"ADBM_POLICY: rate_limit.routes[{index}]: the service has no route "
                f"{route.method} {route.path} (write the route template, e.g. "
                "/api/v2/products/{product_id})"
            )
    return unknown


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
    """A new application; `adbm-service serve` runs it, or uvicorn's `--factory`.
    `tracer_provider` replaces the one built from the settings (a test's in-memory exporter).

    Raises `ServingRefused` for a policy that names routes the service does not serve. The
    app refuses to start (its lifespan raises `ServingRefused`) on settings that must not serve,
    such as the public development cursor key outside `ADBM_ENVIRONMENT=development`; building
    it without serving (the OpenAPI document) needs no secret.
    """
    settings = settings or Settings()
    tracer_provider = tracer_provider or tracing.provider(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        refused = serving_problems(settings)
        if refused:
            tracer_provider.shutdown()
            raise ServingRefused("refusing to serve: " + "; ".join(refused))
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
        # The service's telemetry is its own (tracing.RequestSpans, access, metrics): FastAPI's
        # native OpenTelemetry would add its own spans if a global provider were ever set, and
        # looks the global providers up on every request to find out (up to 9 % of a cached
        # GET's CPU in a py-spy profile, bench/RESULTS.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    problems.install(app)
    app.include_router(health.router)
    deprecated = versioning.deprecated_versions(settings.policy.versioning)
    # Every version serves the same declarations through the same handlers; a deprecated one
    # is marked so in the OpenAPI document, and its responses carry the deprecation headers.
    # Every API route is rate limited first (one Redis round trip), then, on the idempotent
    # writes, decided by the idempotency store (one more); health and readiness stay unlimited.
    # The current version's routes first: routing tries routes in order, so the version most
    # requests name is matched without trying every route of the others first.
    current = settings.policy.versioning.current
    for version in sorted(VERSIONS, key=lambda v: v.name != current):
        gone = versioning.may_be_gone(settings.policy.versioning, version.name)
        app.include_router(
            endpoints.version_router(version, RESOURCES),
            deprecated=version.name in deprecated or None,
            # Past its sunset a retired version answers 410 on every operation.
            responses=problems.openapi_responses([problems.GONE]) if gone else None,
        )
    unknown = unknown_route_overrides(settings.policy.rate_limit, app)
    if unknown:
        raise ServingRefused("; ".join(unknown))
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
