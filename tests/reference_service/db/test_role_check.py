"""The service's check of its own role: bound by row-level security, or refused."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql

from reference_service.config import Settings
from reference_service.db.pool import Database, PoolExhausted, Statement
from reference_service.db.role_check import RoleNotIsolated, check_url
from tests.reference_service.conftest import SERVER_URL, DatabaseUrls


async def _as_admin(urls: DatabaseUrls, statement: sql.Composable) -> None:
    async with await psycopg.AsyncConnection.connect(urls.admin_url, autocommit=True) as conn:
        await conn.execute(statement)


async def test_the_migrated_app_role_is_isolated(database_urls: DatabaseUrls) -> None:
    assert await check_url(database_urls.app_url) == []


async def test_a_superuser_is_refused(database_urls: DatabaseUrls) -> None:
    (problem,) = await check_url(database_urls.admin_url)
    assert "is a superuser, which bypasses row-level security" in problem


async def test_bypassrls_is_refused(database_urls: DatabaseUrls) -> None:
    role = sql.Identifier(database_urls.app_role)
    await _as_admin(database_urls, sql.SQL("ALTER ROLE {} BYPASSRLS").format(role))
    assert await check_url(database_urls.app_url) == [
        f"database role {database_urls.app_role} has BYPASSRLS"
    ]


async def test_owning_a_tenant_table_is_refused(database_urls: DatabaseUrls) -> None:
    role = sql.Identifier(database_urls.app_role)
    await _as_admin(database_urls, sql.SQL("ALTER TABLE public.accounts OWNER TO {}").format(role))
    try:
        (problem,) = await check_url(database_urls.app_url)
        assert f"database role {database_urls.app_role} owns public.accounts" in problem
    finally:
        # Or dropping the role at teardown would drop the table (DROP OWNED).
        await _as_admin(database_urls, sql.SQL("ALTER TABLE public.accounts OWNER TO postgres"))


async def test_membership_of_a_table_owner_is_refused(database_urls: DatabaseUrls) -> None:
    """The owner's rights come with membership of the owner role (SET ROLE)."""
    owner = f"adbm_owner_{uuid.uuid4().hex}"
    try:
        await _as_admin(database_urls, sql.SQL("CREATE ROLE {}").format(sql.Identifier(owner)))
        await _as_admin(
            database_urls,
            sql.SQL("ALTER TABLE public.orders OWNER TO {}").format(sql.Identifier(owner)),
        )
        await _as_admin(
            database_urls,
            sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(owner), sql.Identifier(database_urls.app_role)
            ),
        )
        (problem,) = await check_url(database_urls.app_url)
        assert "owns public.orders (or is a member of its owner)" in problem
    finally:
        await _as_admin(database_urls, sql.SQL("ALTER TABLE public.orders OWNER TO postgres"))
        await _as_admin(database_urls, sql.SQL("DROP ROLE {}").format(sql.Identifier(owner)))


async def test_a_table_without_forced_rls_is_reported(database_urls: DatabaseUrls) -> None:
    await _as_admin(
        database_urls, sql.SQL("ALTER TABLE public.products NO FORCE ROW LEVEL SECURITY")
    )
    assert await check_url(database_urls.app_url) == [
        "public.products: row-level security is not enabled and forced (run adbm-service migrate)"
    ]


async def test_tables_not_yet_created_are_not_problems() -> None:
    """Before the first migration nothing can leak; the server's own database has no tables."""
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
        role = f"adbm_app_{uuid.uuid4().hex}"
        await conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        try:
            url = psycopg.conninfo.make_conninfo(SERVER_URL, user=role)
            assert await check_url(url) == []
        finally:
            await conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
async def superuser_pool(database_urls: DatabaseUrls) -> AsyncIterator[Database]:
    db = Database(
        Settings(
            database_url=database_urls.admin_url,
            db_pool_min_size=0,
            db_pool_acquire_timeout_seconds=0.5,
        )
    )
    await db.open()
    yield db
    await db.close()


async def test_the_pool_never_lends_out_a_superuser_connection(superuser_pool: Database) -> None:
    with pytest.raises(PoolExhausted):
        await superuser_pool.read(None, Statement(sql.SQL("SELECT 1")))
    assert superuser_pool.refused is not None
    assert "is a superuser" in str(superuser_pool.refused)
    with pytest.raises(RoleNotIsolated, match="is a superuser"):
        await superuser_pool.check_isolation()


async def test_check_isolation_sees_a_change_at_run_time(
    database: Database, database_urls: DatabaseUrls
) -> None:
    await database.check_isolation()
    role = sql.Identifier(database_urls.app_role)
    await _as_admin(database_urls, sql.SQL("ALTER ROLE {} BYPASSRLS").format(role))
    with pytest.raises(RoleNotIsolated, match="has BYPASSRLS"):
        await database.check_isolation()
    assert database.stats()["in_use"] == 0
