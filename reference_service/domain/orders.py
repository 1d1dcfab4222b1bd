"""Orders: read-only here; they are placed by the order saga, which debits the account."""

from __future__ import annotations

from typing import Final
from uuid import UUID

from reference_service.domain.common import Resource, Table

TABLE: Final = "orders"


class Order(Resource):
    account_id: UUID
    product_id: UUID
    quantity: int
    total_minor: int
    currency: str
    status: str
    status_reason: str | None = None
    """Why the order was cancelled; null otherwise."""


_ROWS: Final = Table(TABLE, Order)

get = _ROWS.get
page = _ROWS.page
