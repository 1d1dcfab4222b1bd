"""The order placement saga end to end in one process: the real worker (consumers, relay,
sweep) against the real PostgreSQL and RabbitMQ, and a real HTTP payment provider."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from reference_service.config import Settings
from reference_service.db.pool import Database
from reference_service.db.repository import NotFound
from reference_service.domain.sagas import order_placement
from reference_service.domain.sagas.order_placement import OrderPlace, OrderRejected, sweep
from reference_service.messaging import worker
from tests.reference_service import payment_provider
from tests.reference_service.conftest import DatabaseUrls, Tenants
from tests.reference_service.worker_support import (
    AMQP_URL,
    PUBLISHED_QUEUES,
    SAGA_QUEUES,
    admin_rows,
    check_books,
    delete_queues,
    new_prefix,
    queue_names,
    seed,
    settings_for,
    wait_until_terminal,
)


@dataclass
class Harness:
    settings: Settings
    provider: payment_provider.Provider


@pytest.fixture
def provider() -> Iterator[tuple[payment_provider.Provider, str]]:
    with payment_provider.serve(slow_seconds=1.0) as served:
        yield served


@pytest.fixture
async def harness(
    database_urls: DatabaseUrls, provider: tuple[payment_provider.Provider, str]
) -> AsyncIterator[Harness]:
    settings = settings_for(
        database_urls.app_url, amqp_url=AMQP_URL, prefix=new_prefix(), provider_url=provider[1]
    )
    yield Harness(settings, provider[0])
    await delete_queues(
        AMQP_URL, queue_names(settings.queue_prefix, PUBLISHED_QUEUES, worker.backoff(settings))
    )


async def run_worker(settings: Settings) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(settings, SAGA_QUEUES, prefetch=16, stop=stop))
    return stop, task


async def place(
    database: Database, tenant: uuid.UUID, account: uuid.UUID, product: uuid.UUID, qty: int = 1
) -> uuid.UUID:
    order = await order_placement.place_order(
        database,
        tenant,
        OrderPlace(account_id=account, product_id=product, quantity=qty),
        actor="test",
        deadline_seconds=600,
    )
    return order.id


async def test_every_outcome_ends_terminal_with_consistent_books(
    harness: Harness, database: Database, tenants: Tenants, database_urls: DatabaseUrls
) -> None:
    shop = await seed(database, tenants.a, balances=[10_000, 50], prices=[100, 101, 102, 103, 60])
    rich, poor = shop.accounts
    placed = {
        "ok": await place(database, tenants.a, rich, shop.products[100]),
        "declined": await place(database, tenants.a, rich, shop.products[101]),
        "slow": await place(database, tenants.a, rich, shop.products[102]),
        "charged_then_500": await place(database, tenants.a, rich, shop.products[103]),
        "no_funds": await place(database, tenants.a, poor, shop.products[60]),
    }
    stop, task = await run_worker(harness.settings)
    try:
        await wait_until_terminal(database_urls.admin_url, len(placed), limit_seconds=60)
    finally:
        stop.set()
        await task
    ends = await check_books(database_urls.admin_url, harness.provider, {rich: 10_000, poor: 50})
    assert ends == {"CONFIRMED": 1, "CANCELLED": 4}
    orders = {r["id"]: r for r in await admin_rows(database_urls.admin_url, "SELECT * FROM orders")}
    assert orders[placed["ok"]]["status"] == "CONFIRMED"
    assert "declined" in orders[placed["declined"]]["status_reason"]
    assert "unavailable" in orders[placed["slow"]]["status_reason"]
    assert "unavailable" in orders[placed["charged_then_500"]]["status_reason"]
    assert orders[placed["no_funds"]]["status_reason"] == "insufficient balance"
    # The charge that happened before the 500s was refunded, not forgotten.
    charged_then_500 = (
        await admin_rows(
            database_urls.admin_url,
            "SELECT id FROM sagas WHERE order_id = %s",
            (placed["charged_then_500"],),
        )
    )[0]["id"]
    assert harness.provider.charges[str(charged_then_500)].refunded
    steps = await admin_rows(
        database_urls.admin_url,
        "SELECT st.step, st.outcome FROM saga_steps st JOIN sagas s ON s.id = st.saga_id"
        " WHERE s.order_id = %s ORDER BY st.created_at",
        (placed["declined"],),
    )
    assert [(s["step"], s["outcome"]) for s in steps] == [
        ("reserve", "reserved"),
        ("charge", "declined"),
        ("refund", "voided"),
        ("release", "released"),
        ("cancel", "cancelled"),
    ]


async def test_a_lost_message_is_driven_again_by_the_sweep(
    harness: Harness, database: Database, tenants: Tenants, database_urls: DatabaseUrls
) -> None:
    shop = await seed(database, tenants.a, balances=[1_000], prices=[100])
    order_id = await place(database, tenants.a, shop.accounts[0], shop.products[100])
    # The message is lost: marked published, never sent; and the saga has not moved for a while.
    admin = database_urls.admin_url
    await admin_rows(admin, "UPDATE outbox SET published_at = now() RETURNING id")
    await admin_rows(admin, "UPDATE sagas SET updated_at = now() - interval '1 hour' RETURNING id")
    assert await sweep(database, stale_after_seconds=60) == 1
    assert await sweep(database, stale_after_seconds=60) == 0  # claimed: left alone for a while
    stop, task = await run_worker(harness.settings)
    try:
        await wait_until_terminal(admin, 1, limit_seconds=30)
    finally:
        stop.set()
        await task
    rows = await admin_rows(admin, "SELECT status FROM orders WHERE id = %s", (order_id,))
    assert rows[0]["status"] == "CONFIRMED"
    await check_books(admin, harness.provider, {shop.accounts[0]: 1_000})


async def test_a_saga_past_its_deadline_is_compensated(
    harness: Harness, database: Database, tenants: Tenants, database_urls: DatabaseUrls
) -> None:
    shop = await seed(database, tenants.a, balances=[1_000], prices=[100])
    order_id = await place(database, tenants.a, shop.accounts[0], shop.products[100])
    admin = database_urls.admin_url
    await admin_rows(admin, "UPDATE outbox SET published_at = now() RETURNING id")
    await admin_rows(
        admin,
        "UPDATE sagas SET updated_at = now() - interval '1 hour',"
        " deadline_at = now() - interval '1 minute' RETURNING id",
    )
    assert await sweep(database, stale_after_seconds=60) == 1
    stop, task = await run_worker(harness.settings)
    try:
        await wait_until_terminal(admin, 1, limit_seconds=30)
    finally:
        stop.set()
        await task
    rows = await admin_rows(
        admin, "SELECT status, status_reason FROM orders WHERE id = %s", (order_id,)
    )
    assert rows[0]["status"] == "CANCELLED"
    assert rows[0]["status_reason"] == "timed out in PENDING"
    await check_books(admin, harness.provider, {shop.accounts[0]: 1_000})


async def test_placing_checks_the_account_and_the_currency(
    database: Database, tenants: Tenants
) -> None:
    shop = await seed(database, tenants.a, balances=[1_000], prices=[100])
    with pytest.raises(NotFound):
        await place(database, tenants.b, shop.accounts[0], shop.products[100])
    async with database.transaction(tenants.a) as conn:
        from reference_service.domain import products

        usd = await products.RESOURCE.table.create(
            conn,
            tenants.a,
            products.ProductCreate(sku="usd", name="usd", price_minor=5, currency="USD"),
            actor="test",
        )
    with pytest.raises(OrderRejected, match="USD"):
        await place(database, tenants.a, shop.accounts[0], usd.id)
