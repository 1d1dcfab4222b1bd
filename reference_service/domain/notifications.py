"""Order notifications: the `notifications.email` consumer.

When the order saga ends (CONFIRMED or CANCELLED) it writes a `notifications.email` message to
the outbox in the same transaction. This consumer renders the customer's message for that order
and records it in `notifications` (the tenant's mail gateway delivers from there; this service
holds no mail credentials), in one transaction with its inbox row: a redelivered message is
acknowledged without writing a second notification, and the table's unique (order, channel,
event) key backs that up.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from reference_service.db import repository
from reference_service.db.pool import Connection, Database
from reference_service.messaging import inbox, outbox
from reference_service.messaging.consumer import Delivery, Handler

QUEUE: Final = "notifications.email"
CHANNEL: Final = "email"
ACTOR: Final = "worker:notifications.email"
EVENTS: Final = {"CONFIRMED": "order.confirmed", "CANCELLED": "order.cancelled"}


async def announce(
    conn: Connection, tenant_id: uuid.UUID, order_id: uuid.UUID, status: str, *, actor: str
) -> None:
    """Queue the notification of an order's final status, in the caller's transaction."""
    await outbox.enqueue(
        conn, tenant_id, QUEUE, {"order_id": str(order_id), "event": EVENTS[status]}, actor=actor
    )


def render(order: dict[str, Any], event: str) -> tuple[str, str]:
    """The subject and text of the message about `order`."""
    amount = f"{order['total_minor']} {order['currency']} (minor units)"
    if event == "order.confirmed":
        return (
            f"Order {order['id']} confirmed",
            f"Your order of {order['quantity']} item(s) is confirmed; {amount} were charged.",
        )
    reason = order.get("status_reason") or "it could not be completed"
    return (
        f"Order {order['id']} cancelled",
        f"Your order of {order['quantity']} item(s) was cancelled: {reason}. Nothing was charged"
        " or any charge was refunded.",
    )


class OrderNotifications:
    def __init__(self, database: Database) -> None:
        self._db = database

    def handlers(self) -> dict[str, Handler]:
        return {QUEUE: self.handle}

    async def handle(self, delivery: Delivery) -> None:
        env = delivery.envelope
        event = env.payload.get("event")
        if event not in EVENTS.values():
            raise ValueError(f"no notification event {event!r}")
        try:
            order_id = uuid.UUID(str(env.payload.get("order_id")))
        except ValueError as exc:
            raise ValueError(f"bad order_id {env.payload.get('order_id')!r}") from exc
        async with self._db.transaction(env.tenant_id) as conn:
            if not await inbox.record(conn, env.tenant_id, delivery.queue, env.message_id):
                return
            order = await repository.get(conn, "orders", order_id)
            subject, body = render(order, str(event))
            await repository.insert(
                conn,
                "notifications",
                {
                    "tenant_id": env.tenant_id,
                    "order_id": order_id,
                    "channel": CHANNEL,
                    "event": event,
                    "subject": subject,
                    "body": body,
                },
                actor=ACTOR,
            )
