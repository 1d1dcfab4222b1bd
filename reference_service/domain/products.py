"""Products: what a tenant sells, at a price in one currency."""

from __future__ import annotations

from typing import Final

from reference_service.domain.common import (
    CREATE_AND_CHANGE,
    EVERY_OPERATION,
    Changes,
    Currency,
    Input,
    MinorUnits,
    Name,
    Resource,
    ResourceSpec,
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


RESOURCE: Final = ResourceSpec(
    Table(TABLE, Product),
    item="product",
    operations=EVERY_OPERATION,
    create=ProductCreate,
    changes=ProductChanges,
    idempotent=CREATE_AND_CHANGE,
    unique=frozenset({"sku"}),
    money="price",
    cached=True,
)
