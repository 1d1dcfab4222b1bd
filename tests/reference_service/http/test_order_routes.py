"""`POST /api/v1|v2/orders`: 202 Accepted with the order to poll, and the saga behind it."""

from __future__ import annotations

import asyncio

import httpx

from reference_service.messaging import worker
from tests.reference_service import payment_provider
from tests.reference_service.conftest import DatabaseUrls
from tests.reference_service.http.conftest import Callers, OpenService, assert_problem
from tests.reference_service.worker_support import (
    AMQP_URL,
    PUBLISHED_QUEUES,
    SAGA_QUEUES,
    delete_queues,
    new_prefix,
    queue_names,
    settings_for,
)


async def shop(
    client: httpx.AsyncClient, headers: dict[str, str], balance: int = 1_000
) -> tuple[str, str, str]:
    account = await client.post(
        "/api/v1/accounts",
        json={"name": "a", "currency": "EUR", "balance_minor": balance},
        headers=headers,
    )
    product = await client.post(
        "/api/v1/products",
        json={"sku": "s", "name": "p", "price_minor": 300, "currency": "EUR"},
        headers=headers,
    )
    usd = await client.post(
        "/api/v1/products",
        json={"sku": "u", "name": "u", "price_minor": 5, "currency": "USD"},
        headers=headers,
    )
    return account.json()["id"], product.json()["id"], usd.json()["id"]


async def test_an_order_is_accepted_then_confirmed_by_the_saga(
    open_service: OpenService, callers: Callers, database_urls: DatabaseUrls
) -> None:
    with payment_provider.serve() as (_, provider_url):
        settings = settings_for(
            database_urls.app_url, amqp_url=AMQP_URL, prefix=new_prefix(), provider_url=provider_url
        )
        service = await open_service(
            queue_prefix=settings.queue_prefix, payment_provider_url=provider_url
        )
        client, headers = service.client, callers.a.headers
        account, product, _ = await shop(client, headers, balance=2_000)
        body = {"account_id": account, "product_id": product, "quantity": 2}

        missing_key = await client.post(
            "/api/v1/orders", json=body, headers={**headers, "Idempotency-Key": ""}
        )
        assert_problem(missing_key, 400, "idempotency-key-required")

        accepted = await client.post(
            "/api/v1/orders", json=body, headers={**headers, "Idempotency-Key": "order-1"}
        )
        assert accepted.status_code == 202, accepted.text
        order = accepted.json()
        assert order["status"] == "PENDING" and order["total_minor"] == 600
        assert accepted.headers["location"] == f"/api/v1/orders/{order['id']}"
        again = await client.post(
            "/api/v1/orders", json=body, headers={**headers, "Idempotency-Key": "order-1"}
        )
        assert again.json()["id"] == order["id"]  # a retried POST places one order

        v2 = await client.post("/api/v2/orders", json=body, headers=headers)
        assert v2.status_code == 202
        assert v2.json()["total"] == {"amount": 600, "currency": "EUR"}

        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(settings, SAGA_QUEUES, prefetch=8, stop=stop))
        try:
            async with asyncio.timeout(60):  # a hang guard, not a measurement
                while True:
                    polled = [
                        await client.get(placed.headers["location"], headers=headers)
                        for placed in (accepted, v2)
                    ]
                    if all(p.json()["status"] != "PENDING" for p in polled):
                        break
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            await running
            await delete_queues(
                AMQP_URL,
                queue_names(settings.queue_prefix, PUBLISHED_QUEUES, worker.backoff(settings)),
            )
        assert [p.json()["status"] for p in polled] == ["CONFIRMED", "CONFIRMED"]
        assert polled[1].json()["total"] == {"amount": 600, "currency": "EUR"}
        balance = await client.get(f"/api/v1/accounts/{account}", headers=headers)
        assert balance.json()["balance_minor"] == 2_000 - 2 * 600


# Orders are accepted only with a payment provider configured; none is called without a worker.
UNCALLED_PROVIDER = "http://127.0.0.1:9"


async def test_an_order_that_cannot_be_placed_is_refused(
    open_service: OpenService, callers: Callers
) -> None:
    service = await open_service(payment_provider_url=UNCALLED_PROVIDER)
    client, headers = service.client, callers.a.headers
    account, _, usd = await shop(client, headers)
    rejected = await client.post(
        "/api/v1/orders",
        json={"account_id": account, "product_id": usd, "quantity": 1},
        headers=headers,
    )
    assert_problem(rejected, 422, "order-rejected")
    other_tenant = await client.post(
        "/api/v1/orders",
        json={"account_id": account, "product_id": usd, "quantity": 1},
        headers=callers.b.headers,
    )
    assert_problem(other_tenant, 404, "not-found")


async def test_orders_are_refused_without_a_queue(
    open_service: OpenService, callers: Callers
) -> None:
    service = await open_service(queue_enabled=False, payment_provider_url=UNCALLED_PROVIDER)
    client, headers = service.client, callers.a.headers
    account, product, _ = await shop(client, headers)
    refused = await client.post(
        "/api/v1/orders",
        json={"account_id": account, "product_id": product, "quantity": 1},
        headers=headers,
    )
    body = assert_problem(refused, 503, "service-unavailable")
    assert "queue" in body["detail"]
    listed = await client.get("/api/v1/orders", headers=headers)
    assert listed.json()["items"] == []  # nothing was placed


async def test_orders_are_refused_without_a_payment_provider(
    open_service: OpenService, callers: Callers
) -> None:
    service = await open_service()  # ADBM_PAYMENT_PROVIDER_URL unset
    client, headers = service.client, callers.a.headers
    account, product, _ = await shop(client, headers)
    refused = await client.post(
        "/api/v2/orders",
        json={"account_id": account, "product_id": product, "quantity": 1},
        headers=headers,
    )
    body = assert_problem(refused, 503, "service-unavailable")
    assert "payment provider" in body["detail"]
    listed = await client.get("/api/v2/orders", headers=headers)
    assert listed.json()["items"] == []
