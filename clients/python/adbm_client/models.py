"""The resources as the client reads them. Unknown fields are ignored (a tolerant reader: the
service may add fields without breaking its consumers)."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Money(_Model):
    amount: int
    """In minor units (cents)."""
    currency: str


class _Resource(_Model):
    id: UUID
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def etag(self) -> str:
        """The `If-Match` value that applies a change to exactly this version."""
        return f'"{self.version}"'


class Product(_Resource):
    sku: str
    name: str
    price: Money


class Account(_Resource):
    name: str
    balance: Money


class Order(_Resource):
    account_id: UUID
    product_id: UUID
    quantity: int
    total: Money
    status: str


T = TypeVar("T", bound=_Model)


class Page(_Model, Generic[T]):
    items: list[T]
    next: str | None
    """The relative URL of the next page (it carries the cursor); None on the last."""
