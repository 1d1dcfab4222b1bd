"""Accounts: a tenant's customer accounts, each holding a balance in one currency."""

from __future__ import annotations

from typing import Final

from reference_service.domain.common import (
    Changes,
    Currency,
    Input,
    MinorUnits,
    Name,
    Resource,
    Table,
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


_ROWS: Final = Table(TABLE, Account)

create = _ROWS.create
get = _ROWS.get
page = _ROWS.page
update = _ROWS.update
delete = _ROWS.delete
