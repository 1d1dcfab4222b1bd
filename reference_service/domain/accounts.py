"""Accounts: a tenant's customer accounts, each holding a balance in one currency."""

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
    read_one,
    read_page,
)

TABLE: Final = "accounts"


class AccountCreate(Input):
    name: Name
    currency: Currency
    balance_minor: MinorUnits = 0


class AccountChanges(Changes):
    # Only the name is edited directly. The currency is fixed because the balance is counted
    # in it; the balance moves only through orders, so that every change of it has a cause
    # recorded next to it.
    name: Name | None = None


class Account(Resource):
    name: str
    currency: str
    balance_minor: int


async def create(conn: Connection, tenant_id: UUID, data: AccountCreate, *, actor: str) -> Account:
    values = {"tenant_id": tenant_id, **data.model_dump()}
    return Account.model_validate(await repository.insert(conn, TABLE, values, actor=actor))


async def get(database: Database, tenant_id: UUID, account_id: UUID) -> Account:
    return Account.model_validate(await read_one(database, tenant_id, TABLE, account_id))


async def page(
    database: Database, tenant_id: UUID, *, after: Key | None, limit: int
) -> list[Account]:
    rows = await read_page(database, tenant_id, TABLE, after=after, limit=limit)
    return [Account.model_validate(row) for row in rows]


async def update(
    conn: Connection,
    account_id: UUID,
    data: AccountChanges,
    *,
    expected_version: int,
    actor: str,
) -> Account:
    row = await repository.update(
        conn,
        TABLE,
        account_id,
        expected_version=expected_version,
        changes=data.changes(),
        actor=actor,
    )
    return Account.model_validate(row)


async def delete(
    conn: Connection, account_id: UUID, *, expected_version: int | None, actor: str
) -> None:
    await repository.soft_delete(
        conn, TABLE, account_id, expected_version=expected_version, actor=actor
    )
