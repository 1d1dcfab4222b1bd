"""The `notifications.email` consumer on the real PostgreSQL: one notification per order and
event, however often the message is delivered."""

from __future__ import annotations

import uuid

from reference_service.db.pool import Database
from reference_service.domain import notifications
from reference_service.messaging.consumer import Delivery
from reference_service.messaging.envelope import Envelope
from tests.reference_service.conftest import DatabaseUrls, Tenants
from tests.reference_service.http.conftest import place_order
from tests.reference_service.worker_support import admin_rows, seed


async def test_a_redelivered_message_notifies_once(
    database: Database, tenants: Tenants, database_urls: DatabaseUrls
) -> None:
    shop = await seed(database, tenants.a, balances=[1_000], prices=[300])
    order = await place_order(
        database,
        tenants.a,
        str(shop.accounts[0]),
        str(shop.products[300]),
        quantity=2,
        total_minor=600,
    )
    envelope = Envelope(
        message_id=uuid.uuid4(),
        tenant_id=tenants.a,
        topic=notifications.QUEUE,
        payload={"order_id": str(order["id"]), "event": "order.confirmed"},
    )
    consumer = notifications.OrderNotifications(database)
    for final in (False, True):  # delivered, then redelivered
        await consumer.handle(Delivery(envelope, notifications.QUEUE, final))
    rows = await admin_rows(database_urls.admin_url, "SELECT * FROM notifications")
    assert len(rows) == 1
    assert rows[0]["order_id"] == order["id"] and rows[0]["tenant_id"] == tenants.a
    assert rows[0]["subject"] == f"Order {order['id']} confirmed"
    assert "600 EUR" in rows[0]["body"]
    inbox = await admin_rows(database_urls.admin_url, "SELECT * FROM inbox")
    assert [(r["consumer"], r["message_id"]) for r in inbox] == [
        (notifications.QUEUE, envelope.message_id)
    ]
