"""The service as a client sees it: `create_app` behind httpx's ASGI transport, on a fresh
migrated database (the shared fixtures in `tests/reference_service/conftest.py`) and the real
Redis, with API keys issued as the admin would issue them."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from reference_service.app import create_app
from reference_service.config import Settings
from reference_service.db.admin import create_api_key
from reference_service.db.pool import Database
from reference_service.db.repository import insert
from reference_service.http.state import Services
from reference_service.policy import Policy, Quota, RateLimitPolicy
from tests.reference_service.conftest import DatabaseUrls, Tenants

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Service:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def services(self) -> Services:
        found: Services = self.app.state.services
        return found


@dataclass(frozen=True)
class Caller:
    """One tenant's API key, as request headers."""

    tenant_id: Any
    headers: dict[str, str]


@dataclass(frozen=True)
class Callers:
    a: Caller
    b: Caller


OpenService = Callable[..., Awaitable[Service]]


async def _fresh_idempotency_key(request: httpx.Request) -> None:
    """Writes are idempotent by contract; tests that are not about it send a new key each
    time, as a client would for a new operation. Tests about it set the header themselves."""
    if request.method in ("POST", "PUT", "PATCH") and "idempotency-key" not in request.headers:
        request.headers["Idempotency-Key"] = uuid.uuid4().hex


@pytest.fixture
async def open_service(database_urls: DatabaseUrls) -> AsyncIterator[OpenService]:
    """Factory: a started app (lifespan entered) and a client for it; `Settings` overrides as
    keyword arguments (and `tracer_provider`, for the app's spans). Everything is shut down
    after the test."""
    async with AsyncExitStack() as stack:

        async def open_(tracer_provider: TracerProvider | None = None, **overrides: Any) -> Service:
            defaults: dict[str, Any] = {
                "database_url": database_urls.app_url,
                "db_pool_min_size": 0,
                # Each test its own Redis keys; and limits these tests never reach, except
                # where a test sets a policy of its own to test them.
                "redis_key_prefix": f"test-{uuid.uuid4().hex}:",
                # A key of its own: the app refuses the public development key in production.
                "cursor_secret": secrets.token_urlsafe(32),
                "policy": Policy(
                    rate_limit=RateLimitPolicy(
                        default=Quota(requests=1_000_000, period_seconds=1, burst=1_000_000),
                        unauthenticated=Quota(
                            requests=1_000_000, period_seconds=1, burst=1_000_000
                        ),
                    )
                ),
            }
            settings = Settings(**{**defaults, **overrides})
            app = create_app(settings, tracer_provider)
            await stack.enter_async_context(app.router.lifespan_context(app))
            # raise_app_exceptions=False: see the 500 response, as a real client would, instead
            # of the exception Starlette re-raises for the server to log.
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=transport,
                    base_url="http://test",
                    event_hooks={"request": [_fresh_idempotency_key]},
                )
            )
            return Service(app, client)

        yield open_


@pytest.fixture
async def service(open_service: OpenService) -> Service:
    return await open_service()


@pytest.fixture
def client(service: Service) -> httpx.AsyncClient:
    return service.client


@pytest.fixture
async def callers(database_urls: DatabaseUrls, tenants: Tenants) -> Callers:
    issued_a = await create_api_key(database_urls.admin_url, "tenant-a", actor="test")
    issued_b = await create_api_key(database_urls.admin_url, "tenant-b", actor="test")
    assert (issued_a.tenant_id, issued_b.tenant_id) == (tenants.a, tenants.b)
    return Callers(
        a=Caller(tenants.a, {"Authorization": f"Bearer {issued_a.key}"}),
        b=Caller(tenants.b, {"Authorization": f"Bearer {issued_b.key}"}),
    )


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The response is a problem of type `slug`; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://adbm.io/problems/{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    return body


async def place_order(
    database: Database,
    tenant_id: uuid.UUID,
    account_id: str,
    product_id: str,
    *,
    quantity: int,
    total_minor: int,
) -> dict[str, Any]:
    """An order row as tenant `tenant_id`: orders have no write route yet (the order saga
    places them)."""
    async with database.transaction(tenant_id) as conn:
        return await insert(
            conn,
            "orders",
            {
                "tenant_id": tenant_id,
                "account_id": uuid.UUID(account_id),
                "product_id": uuid.UUID(product_id),
                "quantity": quantity,
                "total_minor": total_minor,
                "currency": "EUR",
                "status": "placed",
            },
            actor="test",
        )
