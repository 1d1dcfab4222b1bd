"""Migrations: applied once, in order, idempotently (a second run changes no catalog row), safe
to run concurrently; the app role gets exactly the privileges it needs and owns nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from reference_service.db import migrate as migrate_module
from reference_service.db.admin import create_api_key, create_tenant, hash_key
from reference_service.db.migrate import migrate, migrations, scram_matches
from reference_service.db.rls import verify
from reference_service.db.schema import SCHEMA, TABLES, TENANT_SCOPED
from tests.reference_service.conftest import (
    APP_PASSWORD,
    DatabaseUrls,
    Tenants,
    conninfo,
    create_scratch_database,
    drop_scratch,
)


async def _rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


def test_migration_files_come_from_the_package() -> None:
    versions = [m.version for m in migrations()]
    assert versions[:1] == ["0001_core"]
    assert versions == sorted(versions)
    assert b"CREATE TABLE tenants" in migrations()[0].script


async def test_applied_once_and_recorded(database_urls: DatabaseUrls) -> None:
    versions = await _rows(database_urls.admin_url, "SELECT version FROM schema_migrations")
    assert [v for (v,) in versions] == [m.version for m in migrations()]
    changes: list[str] = []
    again = await migrate(
        database_urls.admin_url,
        app_role=database_urls.app_role,
        app_password=APP_PASSWORD,
        on_change=changes.append,
    )
    assert again == []
    assert changes == []


# Catalog rows that any change by `migrate` would rewrite; xmin changes when a row is updated
# even if to identical values.
_CATALOG_SNAPSHOT = """
SELECT 'class', c.relname, c.xmin::text, c.relacl::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'
UNION ALL
SELECT 'policy', p.polname || ' on ' || p.polrelid::regclass::text, p.xmin::text, p.oid::text
FROM pg_policy p
UNION ALL
SELECT 'role', r.rolname, r.xmin::text, r.rolpassword FROM pg_authid r WHERE r.rolname = %s
UNION ALL
SELECT 'schema', n.nspname, n.xmin::text, n.nspacl::text FROM pg_namespace n
WHERE n.nspname = 'public'
UNION ALL
SELECT 'function', p.proname, p.xmin::text, p.proacl::text FROM pg_proc p
WHERE p.proname = 'adbm_authenticate'
ORDER BY 1, 2
"""


async def test_second_run_changes_nothing(database_urls: DatabaseUrls) -> None:
    before = await _rows(database_urls.admin_url, _CATALOG_SNAPSHOT, (database_urls.app_role,))
    assert (
        await migrate(
            database_urls.admin_url, app_role=database_urls.app_role, app_password=APP_PASSWORD
        )
        == []
    )
    after = await _rows(database_urls.admin_url, _CATALOG_SNAPSHOT, (database_urls.app_role,))
    assert after == before


async def test_concurrent_migrators_serialise() -> None:
    suffix = uuid.uuid4().hex
    name, role = f"adbm_test_{suffix}", f"adbm_app_{suffix}"
    await create_scratch_database(name)
    try:
        results = await asyncio.gather(*(migrate(conninfo(name), app_role=role) for _ in range(4)))
        # Exactly one migrator applied each file; the others found it done.
        applied = [v for result in results for v in result]
        assert sorted(applied) == [m.version for m in migrations()]
        roles = await _rows(conninfo(name), "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        assert len(roles) == 1
    finally:
        await drop_scratch(name, [role])


async def test_a_failing_migration_is_rolled_back_and_not_recorded(
    database_urls: DatabaseUrls, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = migrate_module.Migration(
        version="9999_broken", script=b"CREATE TABLE half_done (x int); SELECT 1/0;"
    )
    monkeypatch.setattr(migrate_module, "migrations", lambda: [*migrations(), broken])
    with pytest.raises(psycopg.errors.DivisionByZero):
        await migrate(database_urls.admin_url, app_role=database_urls.app_role)
    assert await _rows(
        database_urls.admin_url, "SELECT to_regclass('public.half_done') IS NULL"
    ) == [(True,)]
    assert await _rows(
        database_urls.admin_url,
        "SELECT count(*) FROM schema_migrations WHERE version = '9999_broken'",
    ) == [(0,)]


async def test_schema_matches_the_allow_list(database_urls: DatabaseUrls) -> None:
    rows = await _rows(
        database_urls.admin_url,
        "SELECT table_name, array_agg(column_name::text ORDER BY ordinal_position)"
        " FROM information_schema.columns WHERE table_schema = %s"
        " AND table_name <> 'schema_migrations' GROUP BY table_name",
        (SCHEMA,),
    )
    assert {table: tuple(columns) for table, columns in rows} == dict(TABLES)


async def test_every_tenant_scoped_table_has_the_keyset_index(
    database_urls: DatabaseUrls,
) -> None:
    rows = await _rows(
        database_urls.admin_url,
        "SELECT c.relname FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class x ON x.oid = i.indexrelid"
        " WHERE pg_get_indexdef(i.indexrelid) LIKE '%%(tenant_id, created_at, id)'",
    )
    assert sorted(r for (r,) in rows) == sorted(TENANT_SCOPED)


async def test_app_role_attributes_and_ownership(database_urls: DatabaseUrls) -> None:
    (role,) = await _rows(
        database_urls.admin_url,
        "SELECT rolcanlogin, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole, rolreplication"
        " FROM pg_roles WHERE rolname = %s",
        (database_urls.app_role,),
    )
    assert role == (True, False, False, False, False, False)
    owned = await _rows(
        database_urls.admin_url,
        "SELECT c.relname FROM pg_class c WHERE pg_get_userbyid(c.relowner) = %s"
        " UNION ALL SELECT p.proname FROM pg_proc p WHERE pg_get_userbyid(p.proowner) = %s",
        (database_urls.app_role, database_urls.app_role),
    )
    assert owned == []


async def test_app_role_privileges(database_urls: DatabaseUrls) -> None:
    for table in TENANT_SCOPED:
        privileges = await _rows(
            database_urls.admin_url,
            "SELECT p, has_table_privilege(%s, %s, p) FROM unnest(ARRAY["
            "'SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p",
            (database_urls.app_role, f"public.{table}"),
        )
        assert dict(privileges) == {
            "SELECT": True,
            "INSERT": True,
            "UPDATE": True,
            "DELETE": False,
            "TRUNCATE": False,
            "REFERENCES": False,
            "TRIGGER": False,
        }, table
    # Tenants and the migration ledger are the admin's alone.
    for table in ("tenants", "schema_migrations"):
        assert await _rows(
            database_urls.admin_url,
            "SELECT has_table_privilege(%s, %s, 'SELECT')",
            (database_urls.app_role, f"public.{table}"),
        ) == [(False,)]


async def test_app_role_cannot_delete_or_truncate(
    database_urls: DatabaseUrls, tenants: Tenants
) -> None:
    async with await psycopg.AsyncConnection.connect(database_urls.app_url) as app:
        await app.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenants.a),))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await app.execute("DELETE FROM accounts")
        await app.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await app.execute("TRUNCATE accounts")
        await app.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await app.execute("ALTER TABLE accounts NO FORCE ROW LEVEL SECURITY")


async def test_extra_privileges_are_revoked_and_lost_ones_restored(
    database_urls: DatabaseUrls,
) -> None:
    role = sql.Identifier(database_urls.app_role)
    async with await psycopg.AsyncConnection.connect(
        database_urls.admin_url, autocommit=True
    ) as admin:
        await admin.execute(sql.SQL("GRANT DELETE, TRUNCATE ON accounts TO {}").format(role))
        await admin.execute(sql.SQL("REVOKE UPDATE ON orders FROM {}").format(role))
    changes: list[str] = []
    await migrate(
        database_urls.admin_url, app_role=database_urls.app_role, on_change=changes.append
    )
    assert changes == [
        f"revoked DELETE, TRUNCATE on public.accounts from {database_urls.app_role}",
        f"granted UPDATE on public.orders to {database_urls.app_role}",
    ]


async def test_an_existing_role_with_wrong_attributes_is_corrected() -> None:
    suffix = uuid.uuid4().hex
    name, role = f"adbm_test_{suffix}", f"adbm_app_{suffix}"
    await create_scratch_database(name)
    try:
        async with await psycopg.AsyncConnection.connect(conninfo(name), autocommit=True) as c:
            await c.execute(
                sql.SQL("CREATE ROLE {} LOGIN BYPASSRLS CREATEDB").format(sql.Identifier(role))
            )
        changes: list[str] = []
        await migrate(conninfo(name), app_role=role, on_change=changes.append)
        assert f"reset the attributes of role {role}" in changes
        assert await _rows(
            conninfo(name),
            "SELECT rolbypassrls, rolcreatedb FROM pg_roles WHERE rolname = %s",
            (role,),
        ) == [(False, False)]
    finally:
        await drop_scratch(name, [role])


async def test_password_is_set_and_rotated_only_when_it_differs(
    database_urls: DatabaseUrls,
) -> None:
    query = "SELECT rolpassword FROM pg_authid WHERE rolname = %s"
    ((stored,),) = await _rows(database_urls.admin_url, query, (database_urls.app_role,))
    assert stored.startswith("SCRAM-SHA-256$")  # hashed on the client, never sent in clear
    assert scram_matches(stored, APP_PASSWORD)
    assert not scram_matches(stored, "something else")
    changes: list[str] = []
    await migrate(
        database_urls.admin_url,
        app_role=database_urls.app_role,
        app_password="rotated",
        on_change=changes.append,
    )
    assert changes == [f"set the password of role {database_urls.app_role}"]
    ((rotated,),) = await _rows(database_urls.admin_url, query, (database_urls.app_role,))
    assert scram_matches(rotated, "rotated")


def test_scram_matches_rejects_other_formats() -> None:
    assert not scram_matches("md5abcdef", "x")
    assert not scram_matches("SCRAM-SHA-256$nonsense", "x")


async def test_the_admin_may_not_be_the_app_role(database_urls: DatabaseUrls) -> None:
    with pytest.raises(ValueError, match="must not be the migrating admin"):
        await migrate(database_urls.admin_url, app_role="postgres")


async def test_a_non_superuser_database_owner_can_migrate() -> None:
    """The managed-Postgres shape (e.g. CloudNativePG's `app` owner): the admin owns the
    database and may create roles, but is no superuser, so FORCEd RLS binds it too."""
    suffix = uuid.uuid4().hex
    name, owner, role = f"adbm_test_{suffix}", f"adbm_owner_{suffix}", f"adbm_app_{suffix}"
    async with await psycopg.AsyncConnection.connect(conninfo("postgres"), autocommit=True) as conn:
        await conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD 'owner'").format(
                sql.Identifier(owner)
            )
        )
        await conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner)
            )
        )
    try:
        owner_url = conninfo(name, user=owner, password="owner")
        assert await migrate(owner_url, app_role=role) == [m.version for m in migrations()]
        assert await migrate(owner_url, app_role=role) == []

        await create_tenant(owner_url, "t", actor="test")
        issued = await create_api_key(owner_url, "t", actor="test")
        app_url = conninfo(name, user=role)
        async with await psycopg.AsyncConnection.connect(app_url) as app:
            cur = await app.execute(
                "SELECT tenant_id FROM adbm_authenticate(%s)",
                (hash_key(issued.key),),
            )
            assert await cur.fetchall() == [(issued.tenant_id,)]
        assert await verify(owner_url, app_url) == []

        # Pruning runs as that owner too (a definer function): FORCEd RLS would hide every
        # inbox row from it without its own policy, and nothing would ever be pruned.
        async with await psycopg.AsyncConnection.connect(app_url) as app:
            await app.execute(
                "SELECT set_config('app.tenant_id', %s, true)", (str(issued.tenant_id),)
            )
            await app.execute(
                "INSERT INTO inbox (id, tenant_id, consumer, message_id, created_by, updated_by,"
                " created_at) VALUES (%s, %s, 'q', %s, 't', 't', now() - interval '8 days')",
                (uuid.uuid4(), issued.tenant_id, uuid.uuid4()),
            )
            await app.commit()
            cur = await app.execute("SELECT adbm_inbox_prune(interval '7 days', 10)")
            assert await cur.fetchall() == [(1,)]
    finally:
        await drop_scratch(name, [role, owner])
