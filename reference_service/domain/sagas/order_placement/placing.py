"""Placing an order: the order PENDING, its saga and the first message, in one transaction."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from reference_service.db import repository
from reference_service.db.pool import Connection, Database
from reference_service.domain import orders
from reference_service.domain.common import INT64_MAX
from reference_service.domain.orders import OrderPlace, OrderRejected
from reference_service.domain.sagas.order_placement.records import send
from reference_service.domain.sagas.order_placement.states import KIND, State


async def place_order(
    database: Database,
    tenant_id: uuid.UUID,
    data: OrderPlace,
    *,
    actor: str,
    deadline_seconds: float,
) -> orders.Order:
    """Create the order PENDING, its saga, and the saga's first message, in one transaction.
    Raises repository.NotFound for an unknown account or product, OrderRejected."""
    async with database.transaction(tenant_id) as conn:
        product = await repository.get(conn, "products", data.product_id)
        account = await repository.get(conn, "accounts", data.account_id)
        if product["currency"] != account["currency"]:
            raise OrderRejected(
                f"the product is priced in {product['currency']}, the account holds"
                f" {account['currency']}"
            )
        total = product["price_minor"] * data.quantity
        if total > INT64_MAX:
            raise OrderRejected("the order total is out of range")
        order = await repository.insert(
            conn,
            "orders",
            {
                "tenant_id": tenant_id,
                "account_id": data.account_id,
                "product_id": data.product_id,
                "quantity": data.quantity,
                "total_minor": total,
                "currency": product["currency"],
                "status": "PENDING",
            },
            actor=actor,
        )
        saga = await repository.insert(
            conn,
            "sagas",
            {
                "tenant_id": tenant_id,
                "kind": KIND,
                "order_id": order["id"],
                "account_id": data.account_id,
                "amount_minor": total,
                "currency": product["currency"],
                "state": State.PENDING.value,
                "deadline_at": await _deadline(conn, deadline_seconds),
            },
            actor=actor,
        )
        await send(conn, tenant_id, saga["id"], "reserve")
    return orders.Order.model_validate(order)


async def _deadline(conn: Connection, seconds: float) -> Any:
    # The database's clock, the one the sweep compares with.
    cur = await conn.execute("SELECT now() + %s AS deadline", (timedelta(seconds=seconds),))
    row = await cur.fetchone()
    assert row is not None
    return row["deadline"]
