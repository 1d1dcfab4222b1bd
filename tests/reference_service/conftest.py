"""Fixtures for tests of the reference service against a real PostgreSQL.

The server is `ADBM_TEST_POSTGRES_URL` (default `postgresql://postgres@127.0.0.1:5432/postgres`,
a superuser). Every test that asks for a database gets its own, freshly created and migrated,
with its own app role, and both are dropped afterwards, so tests never see each other's rows and
can run in any order.

- `database_urls` -> `DatabaseUrls(admin_url, app_url, app_role, name)`: a migrated database.
  `admin_url` connects as the superuser (owner of the schema), `app_url` as the app role (the
  non-owner, NOSUPERUSER, NOBYPASSRLS role the service uses, subject to RLS).
- `database` -> an opened `reference_service.db.pool.Database` for the app role
  (min 0, max 4 connections, 2 s acquire timeout), closed afterwards.
- `make_database(**settings)` -> opens another `Database` for the app role with `Settings`
  overrides (e.g. `db_pool_max_size=20`); all are closed afterwards.
- `tenants` -> `Tenants(a, b)`: two tenants created as the admin in the test's database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from reference_service.config import Settings
from reference_service.db.admin import create_tenant
from reference_service.db.migrate import migrate
from reference_service.db.pool import Database

SERVER_URL = os.environ.get(
    "ADBM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
APP_PASSWORD = "app-test-password"


@dataclass(frozen=True)
class DatabaseUrls:
    admin_url: str
    app_url: str
    app_role: str
    name: str


@dataclass(frozen=True)
class Tenants:
    a: uuid.UUID
    b: uuid.UUID


def conninfo(dbname: str, **changes: Any) -> str:
    """SERVER_URL pointed at another database (and optionally another user/password)."""
    return make_conninfo(SERVER_URL, dbname=dbname, **changes)


async def create_scratch_database(name: str) -> None:
    try:
        async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        pytest.fail(f"these tests need PostgreSQL at {SERVER_URL}: {exc}")


async def drop_scratch(name: str, roles: list[str]) -> None:
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
        existing = []
        for role in roles:
            cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if await cur.fetchone():
                existing.append(role)
        if existing:
            # Privileges of a role live in each database's catalog: revoke them there, or
            # DROP ROLE refuses.
            async with await psycopg.AsyncConnection.connect(conninfo(name), autocommit=True) as db:
                for role in existing:
                    await db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        for role in existing:
            await conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
async def database_urls() -> AsyncIterator[DatabaseUrls]:
    """A fresh, migrated database and its app role, dropped after the test."""
    suffix = uuid.uuid4().hex
    name = f"adbm_test_{suffix}"
    app_role = f"adbm_app_{suffix}"
    await create_scratch_database(name)
    try:
        admin_url = conninfo(name)
        await migrate(admin_url, app_role=app_role, app_password=APP_PASSWORD)
        yield DatabaseUrls(
            admin_url=admin_url,
            app_url=conninfo(name, user=app_role, password=APP_PASSWORD),
            app_role=app_role,
            name=name,
        )
    finally:
        await drop_scratch(name, [app_role])


@pytest.fixture
async def make_database(
    database_urls: DatabaseUrls,
) -> AsyncIterator[Callable[..., Awaitable[Database]]]:
    """Factory of opened `Database`s for the app role; `Settings` fields as keyword overrides."""
    opened: list[Database] = []

    async def make(**overrides: Any) -> Database:
        settings = Settings(
            **{
                "database_url": database_urls.app_url,
                "db_pool_min_size": 0,
                "db_pool_max_size": 4,
                "db_pool_acquire_timeout_seconds": 2.0,
                **overrides,
            },
        )
        db = Database(settings, name="adbm-test")
        await db.open()
        opened.append(db)
        return db

    yield make
    for db in opened:
        await db.close()


@pytest.fixture
async def database(make_database: Callable[..., Awaitable[Database]]) -> Database:
    """An opened `Database` for the app role (max 4 connections)."""
    return await make_database()


@pytest.fixture
async def tenants(database_urls: DatabaseUrls) -> Tenants:
    """Two tenants, created as the admin."""
    return Tenants(
        a=await create_tenant(database_urls.admin_url, "tenant-a", actor="test"),
        b=await create_tenant(database_urls.admin_url, "tenant-b", actor="test"),
    )
