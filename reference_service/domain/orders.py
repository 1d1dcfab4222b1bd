"""Orders: what a tenant's accounts bought."""

from __future__ import annotations

from typing import Final
from uuid import UUID

from reference_service.domain.common import READS, Resource, ResourceSpec, Table

TABLE: Final = "orders"


class Order(Resource):
    account_id: UUID
    product_id: UUID
    quantity: int
    total_minor: int
    currency: str
    status: str


# Read-only here: orders are placed by the order saga, which debits the account.
RESOURCE: Final = ResourceSpec(Table(TABLE, Order), item="order", operations=READS, money="total")
