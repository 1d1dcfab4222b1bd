"""Accounts: a tenant's customer accounts, each holding a balance in one currency."""

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


RESOURCE: Final = ResourceSpec(
    Table(TABLE, Account),
    item="account",
    operations=EVERY_OPERATION,
    create=AccountCreate,
    changes=AccountChanges,
    idempotent=CREATE_AND_CHANGE,
    money="balance",
)
