"""Orders: what a tenant's accounts bought, placed through the order saga."""

from __future__ import annotations

import uuid
from typing import Annotated, Final
from uuid import UUID

from pydantic import Field

from reference_service.config import Settings
from reference_service.db.pool import Database
from reference_service.domain.common import (
    READS,
    Input,
    Operation,
    Refused,
    Resource,
    ResourceSpec,
    Submission,
    Table,
)

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


# A JSON body carries ids as strings: strict mode would refuse every one of them.
_Id = Annotated[uuid.UUID, Field(strict=False)]


class OrderPlace(Input):
    account_id: _Id
    product_id: _Id
    quantity: int = Field(ge=1, le=10_000)


class OrderRejected(Refused):
    """The order cannot be placed as asked (currency mismatch, total out of range)."""


async def place(
    database: Database, tenant_id: UUID, data: OrderPlace, /, *, actor: str, settings: Settings
) -> Order:
    """The order PENDING, with its saga queued (`domain/sagas/order_placement/`)."""
    # Imported here, not above: the saga's modules import this one (the order's models).
    from reference_service.domain.sagas.order_placement.placing import place_order

    return await place_order(
        database, tenant_id, data, actor=actor, deadline_seconds=settings.saga_deadline_seconds
    )


def unavailable(settings: Settings) -> str | None:
    """Without a queue no worker would ever run the saga, and without the payment provider no
    charge could succeed: refused (503) rather than accepted and left PENDING."""
    if not settings.queue_enabled:
        return "orders need the queue, which is not configured"
    if settings.payment_provider_url is None:
        return "orders need the payment provider, which is not configured"
    return None


# Orders are read, and placed (asynchronously: the saga reserves the balance, charges the
# payment provider and confirms); they are never changed or deleted through the API.
RESOURCE: Final = ResourceSpec(
    Table(TABLE, Order),
    item="order",
    operations=READS | {Operation.CREATE},
    create=OrderPlace,
    idempotent=frozenset({Operation.CREATE}),
    money="total",
    submission=Submission(place, refusals=(OrderRejected,), unavailable=unavailable),
)
