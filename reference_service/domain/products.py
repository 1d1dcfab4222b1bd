"""Products: what a tenant sells, at a price in one currency."""

from __future__ import annotations

from typing import Final

from reference_service.domain.common import (
    Changes,
    Currency,
    Input,
    MinorUnits,
    Name,
    Resource,
    Sku,
    Table,
)

TABLE: Final = "products"


class ProductCreate(Input):
    sku: Sku
    name: Name
    price_minor: MinorUnits
    currency: Currency


class ProductChanges(Changes):
    # The sku is the product's identity in the tenant's catalogue and in past orders: it is
    # fixed at creation. A new sku is a new product.
    name: Name | None = None
    price_minor: MinorUnits | None = None
    currency: Currency | None = None


class Product(Resource):
    sku: str
    name: str
    price_minor: int
    currency: str


_ROWS: Final = Table(TABLE, Product)

create = _ROWS.create
get = _ROWS.get
page = _ROWS.page
update = _ROWS.update
delete = _ROWS.delete
