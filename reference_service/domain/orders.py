"""Orders: read-only here; they are placed by the order saga, which debits the account."""

from __future__ import annotations

from typing import Final
from uuid import UUID

from reference_service.db.pool import Database
from reference_service.db.repository import Key
from reference_service.domain.common import Resource, read_one, read_page

TABLE: Final = "orders"


class Order(Resource):
    account_id: UUID
    product_id: UUID
    quantity: int
    total_minor: int
    currency: str
    status: str


async def get(database: Database, tenant_id: UUID, order_id: UUID) -> Order:
    return Order.model_validate(await read_one(database, tenant_id, TABLE, order_id))


async def page(
    database: Database, tenant_id: UUID, *, after: Key | None, limit: int
) -> list[Order]:
    rows = await read_page(database, tenant_id, TABLE, after=after, limit=limit)
    return [Order.model_validate(row) for row in rows]
