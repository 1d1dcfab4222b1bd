"""What tracing costs per request: the service's hand-written spans against the maintained
`opentelemetry-instrumentation-*` packages (asgi, psycopg, redis).

    python bench/tracing_cost.py [--requests 2000] [--rounds 3]

The instrumentation packages are not dependencies of the project: run this from a venv that
has them as well (`pip install -e . opentelemetry-instrumentation-asgi
opentelemetry-instrumentation-psycopg opentelemetry-instrumentation-redis`); variants whose
packages are missing are skipped. Needs the local PostgreSQL (superuser `postgres`) and Redis.

Each variant serves the same authenticated `GET /api/v1/products/{id}` (an API-key lookup, a
rate-limit EVALSHA, the product's read: two database round trips and one Redis one) through
httpx's in-process ASGI transport, and reports the process CPU time per request (the client's
share is the same in every variant: read differences against `untraced`). Spans go through a
`BatchSpanProcessor` to an exporter that drops them, as the OTLP one would ship them.

- `no-access`: as `untraced`, with the access line and request metrics middleware passing
  requests straight through (what `observability.access` costs);
- `untraced`: sampler ALWAYS_OFF (the unsampled majority at the default 10 % ratio);
- `hand`: every request sampled, the service's own spans (server span + one per database unit of
  work and Redis call);
- `packages`: every request sampled, the service's server span, psycopg's and redis's
  instrumentors instead of the hand-written client spans;
- `asgi+packages`: as `packages`, with the asgi package's middleware in place of `RequestSpans`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import psycopg
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from psycopg import sql

from reference_service.app import create_app
from reference_service.config import Settings
from reference_service.db import pool
from reference_service.db.admin import create_api_key, create_tenant
from reference_service.db.migrate import migrate
from reference_service.http import idempotency, ratelimit
from reference_service.observability import access, tracing
from reference_service.observability import logging as service_logging
from reference_service.policy import Policy, Quota, RateLimitPolicy

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


class Dropping(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


@contextlib.contextmanager
def _no_span(name: str, attributes: Any) -> Iterator[None]:
    yield


@contextlib.contextmanager
def hand_written(enabled: bool) -> Iterator[None]:
    """The service's client spans on (as shipped) or off (the packages make them instead)."""
    modules = (pool, ratelimit, idempotency)
    saved = [m.client_span for m in modules]
    if not enabled:
        for m in modules:
            m.client_span = _no_span  # type: ignore[assignment]
    try:
        yield
    finally:
        for m, original in zip(modules, saved, strict=True):
            m.client_span = original  # type: ignore[assignment]


@contextlib.contextmanager
def no_access_middleware() -> Iterator[None]:
    original = access.RequestObservation.__call__

    async def through(self: access.RequestObservation, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    access.RequestObservation.__call__ = through  # type: ignore[method-assign]
    try:
        yield
    finally:
        access.RequestObservation.__call__ = original  # type: ignore[method-assign]


@contextlib.contextmanager
def packages(provider: TracerProvider) -> Iterator[None]:
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    PsycopgInstrumentor().instrument(tracer_provider=provider, enable_commenter=False)
    RedisInstrumentor().instrument(tracer_provider=provider)
    try:
        yield
    finally:
        PsycopgInstrumentor().uninstrument()
        RedisInstrumentor().uninstrument()


def asgi_app(app: Any, provider: TracerProvider) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    # The server span from the package, around an app whose own `RequestSpans` is unsampled.
    return OpenTelemetryMiddleware(app, tracer_provider=provider)


async def run_variant(
    name: str, settings: Settings, key: str, product: str, requests: int
) -> tuple[float, float]:
    exporter = Dropping()
    sampled = name not in ("untraced", "no-access")
    provider = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    inner_provider = provider
    if name == "asgi+packages":
        inner_provider = TracerProvider(sampler=ALWAYS_OFF)
    with contextlib.ExitStack() as stack:
        stack.enter_context(hand_written(name in ("untraced", "no-access", "hand")))
        if name == "no-access":
            stack.enter_context(no_access_middleware())
        if "packages" in name:
            stack.enter_context(packages(provider))
        app = create_app(settings, inner_provider)
        served = asgi_app(app, provider) if name == "asgi+packages" else app
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=served)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                headers = {"Authorization": f"Bearer {key}"}
                for _ in range(200):  # warm-up: pool filled, caches and code paths hot
                    (
                        await client.get(f"/api/v1/products/{product}", headers=headers)
                    ).raise_for_status()
                started = time.process_time()
                for _ in range(requests):
                    await client.get(f"/api/v1/products/{product}", headers=headers)
                cpu = time.process_time() - started
        provider.force_flush()
    provider.shutdown()
    return cpu / requests * 1e6, exporter.spans / (requests + 200)


async def setup() -> tuple[str, str, Callable[[], Any]]:
    suffix = uuid.uuid4().hex[:12]
    name, role = f"adbm_bench_{suffix}", f"adbm_bench_app_{suffix}"
    async with await psycopg.AsyncConnection.connect(SERVER, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin = f"postgresql://postgres@127.0.0.1:5432/{name}"
    await migrate(admin, app_role=role, app_password="bench")
    await create_tenant(admin, "bench")
    issued = await create_api_key(admin, "bench")

    async def drop() -> None:
        async with await psycopg.AsyncConnection.connect(SERVER, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
            )
            await conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))

    return f"postgresql://{role}:bench@127.0.0.1:5432/{name}", issued.key, drop


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", help="only these, in this order")
    args = parser.parse_args(argv)
    # Every access line rendered as in production, to a sink: its cost is part of a request's.
    service_logging.configure("INFO", stream=open(os.devnull, "w"))  # noqa: SIM115
    app_url, key, drop = await setup()
    try:
        settings = Settings(
            database_url=app_url,
            environment="development",
            redis_key_prefix=f"bench-{uuid.uuid4().hex}:",
            policy=Policy(
                rate_limit=RateLimitPolicy(
                    default=Quota(requests=1_000_000, period_seconds=1, burst=1_000_000)
                )
            ),
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                created = await client.post(
                    "/api/v1/products",
                    json={"sku": "B-1", "name": "Bench", "price_minor": 100, "currency": "EUR"},
                    headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "bench"},
                )
                created.raise_for_status()
                product = created.json()["id"]
        variants = ["no-access", "untraced", "hand", "packages", "asgi+packages"]
        try:
            import opentelemetry.instrumentation.asgi
            import opentelemetry.instrumentation.psycopg
            import opentelemetry.instrumentation.redis  # noqa: F401
        except ImportError:
            variants = variants[:3]
            print("instrumentation packages not installed: their variants are skipped")
        if args.variants:
            variants = [v for v in args.variants if v in variants]
        best: dict[str, tuple[float, float]] = {}
        for round_ in range(args.rounds):
            # Interleaved, so a noisy neighbour hits every variant, and rotated: the first
            # variant of a round measured faster here, whichever it was.
            shift = round_ % len(variants)
            for name in variants[shift:] + variants[:shift]:
                result = await run_variant(name, settings, key, product, args.requests)
                if name not in best or result[0] < best[name][0]:
                    best[name] = result
        base = best["untraced"][0] if "untraced" in best else 0.0
        print(f"{'variant':<16}{'CPU us/request':>16}{'vs untraced':>14}{'spans/request':>16}")
        for name in variants:
            cpu, spans = best[name]
            print(f"{name:<16}{cpu:>16.0f}{cpu - base:>+14.0f}{spans:>16.1f}")
    finally:
        await drop()


if __name__ == "__main__":
    # The hand-written spans are the module attribute the pool and the engines call.
    assert tracing.client_span is pool.client_span
    asyncio.run(main())
