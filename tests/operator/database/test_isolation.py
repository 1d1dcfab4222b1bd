"""Tenant isolation proven independently of the operator's canary: real rows of two tenants
written by the admin, then plain SQL as the app role, logged in with its own password.

The queries carry no tenant filter: isolation must come from the policies alone."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from adbm_operator.database.provision import Report
from reference_service.db.schema import TENANT_SCOPED
from tests.operator.database.conftest import Scratch, app_url

A, B = uuid.uuid4(), uuid.uuid4()

# One row per governed table, for a tenant: (columns, values) with the tenant as {t}.
_ROWS: dict[str, tuple[str, str]] = {
    "api_keys": ("name, key_hash, prefix", "'k', {hash}, 'p'"),
    "accounts": ("name, currency, balance_minor", "'acct', 'EUR', 100"),
    "products": ("sku, name, price_minor, currency", "'sku', 'prod', 5, 'EUR'"),
    "orders": (
        "account_id, product_id, quantity, total_minor, currency, status",
        "(SELECT id FROM accounts WHERE tenant_id = {t}), (SELECT id FROM products WHERE"
        " tenant_id = {t}), 1, 5, 'EUR', 'placed'",
    ),
    "outbox": ("topic, payload", "'topic', '{{}}'"),
    "inbox": ("consumer, message_id", "'c', gen_random_uuid()"),
    "sagas": (
        "kind, order_id, account_id, amount_minor, currency, state, deadline_at",
        "'order_placement', (SELECT id FROM orders WHERE tenant_id = {t}), (SELECT id FROM"
        " accounts WHERE tenant_id = {t}), 5, 'EUR', 'PENDING', now()",
    ),
    "saga_steps": (
        "saga_id, step, outcome",
        "(SELECT id FROM sagas WHERE tenant_id = {t}), 'reserve', 'done'",
    ),
    "account_entries": (
        "account_id, saga_id, kind, amount_minor",
        "(SELECT id FROM accounts WHERE tenant_id = {t}), (SELECT id FROM sagas WHERE"
        " tenant_id = {t}), 'reserve', 5",
    ),
    "notifications": (
        "order_id, channel, event, subject, body",
        "(SELECT id FROM orders WHERE tenant_id = {t}), 'email', 'order.confirmed', 's', 'b'",
    ),
}


def _insert(table: str, tenant: uuid.UUID) -> sql.Composed:
    columns, values = _ROWS[table]
    digest = hashlib.sha256(os.urandom(16)).digest()
    return sql.SQL(
        "INSERT INTO {} (id, tenant_id, created_by, updated_by, " + columns + ")"
        " VALUES (gen_random_uuid(), {t}, 'test', 'test', " + values + ")"
    ).format(sql.Identifier(table), t=sql.Literal(tenant), hash=sql.Literal(digest))


@pytest.fixture
async def seeded(admin: psycopg.AsyncConnection[Any]) -> None:
    for tenant, name in ((A, "a"), (B, "b")):
        await admin.execute(
            "INSERT INTO tenants (id, created_by, updated_by, name) VALUES (%s, 't', 't', %s)",
            (tenant, name),
        )
        for table in TENANT_SCOPED:
            await admin.execute(_insert(table, tenant))


@pytest.fixture
async def app(
    scratch: Scratch, provisioned: Report, seeded: None
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(app_url(scratch)) as conn:
        yield conn


async def _as(app: psycopg.AsyncConnection[Any], tenant: uuid.UUID | None) -> None:
    if tenant is not None:
        await app.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))


@pytest.mark.parametrize("table", TENANT_SCOPED)
async def test_each_tenant_reads_only_its_own_rows(
    app: psycopg.AsyncConnection[Any], table: str
) -> None:
    for tenant in (A, B):
        await _as(app, tenant)
        cur = await app.execute(sql.SQL("SELECT tenant_id FROM {}").format(sql.Identifier(table)))
        assert [r[0] for r in await cur.fetchall()] == [tenant]
        await app.rollback()


@pytest.mark.parametrize("table", TENANT_SCOPED)
async def test_no_tenant_reads_nothing(app: psycopg.AsyncConnection[Any], table: str) -> None:
    cur = await app.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    assert await cur.fetchone() == (0,)


@pytest.mark.parametrize("table", TENANT_SCOPED)
async def test_a_tenant_cannot_update_another_tenants_rows(
    app: psycopg.AsyncConnection[Any], admin: psycopg.AsyncConnection[Any], table: str
) -> None:
    name = sql.Identifier(table)
    await _as(app, A)
    cur = await app.execute(sql.SQL("UPDATE {} SET updated_by = 'intruder'").format(name))
    assert cur.rowcount == 1  # its own row only
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        await app.execute(sql.SQL("UPDATE {} SET tenant_id = %s").format(name), (B,))
    await app.rollback()
    cur = await admin.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE updated_by = 'intruder'").format(name)
    )
    assert await cur.fetchone() == (0,)


@pytest.mark.parametrize("table", TENANT_SCOPED)
async def test_a_tenant_cannot_insert_for_another_tenant(
    app: psycopg.AsyncConnection[Any], table: str
) -> None:
    await _as(app, A)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        await app.execute(_insert(table, B))
    await app.rollback()


@pytest.mark.parametrize("table", TENANT_SCOPED)
async def test_the_app_role_cannot_delete_or_truncate(
    app: psycopg.AsyncConnection[Any], table: str
) -> None:
    name = sql.Identifier(table)
    await _as(app, A)
    for statement in ("DELETE FROM {}", "TRUNCATE {}"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            await app.execute(sql.SQL(statement).format(name))
        await app.rollback()
        await _as(app, A)
    await app.rollback()
