"""The service as the Pact verifier drives it: the product app, plus a provider-state route.

This factory exists only under `tests/`: the route creates tenants and API keys as the admin,
which no product app may ever do. It builds the product app with `create_app` unchanged and
mounts one route on it; everything the verifier replays goes through the product's own stack.

Run: `uvicorn tests.contract.provider_app:create --factory` with the service's `ADBM_*`
environment and `ADBM_ADMIN_DATABASE_URL`.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from reference_service.app import create_app
from reference_service.config import Settings
from reference_service.db.admin import create_api_key, create_tenant

STATE_PATH = "/_pact/provider-states"


async def _api(app: FastAPI, key: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
    """A request through the product app itself, as a client of that tenant."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://provider") as client:
        response = await client.request(
            method,
            path,
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
            **kw,
        )
    assert response.status_code < 300, response.text
    body: dict[str, Any] = response.json()
    return body


async def _tenant_with_key(settings: Settings) -> str:
    """A new tenant of its own (no state sees another's rows) and its API key."""
    admin_url = os.environ["ADBM_ADMIN_DATABASE_URL"]
    name = f"pact-{uuid.uuid4().hex[:12]}"
    await create_tenant(admin_url, name, actor="pact")
    issued = await create_api_key(
        admin_url, name, actor="pact", tenant_setting=settings.db_tenant_setting
    )
    return issued.key


def _product(n: int) -> dict[str, Any]:
    return {
        "sku": f"SKU-{uuid.uuid4().hex[:8]}-{n}",
        "name": f"Product {n}",
        "price": {"amount": 1200, "currency": "EUR"},
    }


async def set_state(
    app: FastAPI, settings: Settings, state: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Bring the provider into `state`; returns the values the interaction's request uses.
    The empty state is Pact's generic set-up of an interaction that names none: nothing to do."""
    if state == "":
        return {}
    key = await _tenant_with_key(settings)
    values: dict[str, Any] = {"api_key": key}
    if state == "a tenant with an API key":
        return values
    if state == "a tenant with products":
        created = [
            await _api(app, key, "POST", "/api/v2/products", json=_product(n))
            for n in range(int(params.get("count", 1)))
        ]
        values["product_id"] = created[0]["id"]
        return values
    if state == "a tenant with a product changed since version 1":
        product = await _api(app, key, "POST", "/api/v2/products", json=_product(0))
        await _patch(app, key, product["id"])
        values["product_id"] = product["id"]
        return values
    raise LookupError(f"unknown provider state {state!r}")


async def _patch(app: FastAPI, key: str, product_id: str) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://provider") as client:
        response = await client.patch(
            f"/api/v2/products/{product_id}",
            json={"name": "Changed"},
            headers={
                "Authorization": f"Bearer {key}",
                "Idempotency-Key": uuid.uuid4().hex,
                "If-Match": '"1"',
            },
        )
    assert response.status_code == 200, response.text


def create() -> FastAPI:
    settings = Settings()
    app = create_app(settings)

    @app.post(STATE_PATH, include_in_schema=False)
    async def provider_state(request: Request) -> JSONResponse:
        change = await request.json()
        if change.get("action", "setup") != "setup":
            return JSONResponse({})
        try:
            state, params = change.get("state", ""), change.get("params") or {}
            values = await set_state(app, settings, state, params)
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(values)

    return app
