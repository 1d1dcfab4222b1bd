"""Products: what a tenant sells, at a price in one currency."""

from __future__ import annotations

from typing import Final
from uuid import UUID

from reference_service.db import repository
from reference_service.db.pool import Connection, Database
from reference_service.db.repository import Key
from reference_service.domain.common import (
    Changes,
    Currency,
    Input,
    MinorUnits,
    Name,
    Resource,
    Sku,
    read_one,
    read_page,
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


async def create(conn: Connection, tenant_id: UUID, data: ProductCreate, *, actor: str) -> Product:
    values = {"tenant_id": tenant_id, **data.model_dump()}
    return Product.model_validate(await repository.insert(conn, TABLE, values, actor=actor))


async def get(database: Database, tenant_id: UUID, product_id: UUID) -> Product:
    return Product.model_validate(await read_one(database, tenant_id, TABLE, product_id))


async def page(
    database: Database, tenant_id: UUID, *, after: Key | None, limit: int
) -> list[Product]:
    rows = await read_page(database, tenant_id, TABLE, after=after, limit=limit)
    return [Product.model_validate(row) for row in rows]


async def update(
    conn: Connection,
    product_id: UUID,
    data: ProductChanges,
    *,
    expected_version: int,
    actor: str,
) -> Product:
    row = await repository.update(
        conn,
        TABLE,
        product_id,
        expected_version=expected_version,
        changes=data.changes(),
        actor=actor,
    )
    return Product.model_validate(row)


async def delete(
    conn: Connection, product_id: UUID, *, expected_version: int | None, actor: str
) -> None:
    await repository.soft_delete(
        conn, TABLE, product_id, expected_version=expected_version, actor=actor
    )
