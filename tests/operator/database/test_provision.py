"""Provisioning against the real PostgreSQL: what it creates, that a second pass changes nothing,
and that each kind of drift is repaired and described. Everything is checked from the catalogs,
not from what the provisioner says it did."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from adbm_operator.database import roles
from adbm_operator.database.provision import Desired, Report, provision
from adbm_operator.database.target import Server
from reference_service.db import migrations, rls
from reference_service.db.schema import TENANT_SCOPED
from tests.operator.database.conftest import DdlLog, Scratch, admin_url, run_migration
from tests.reference_service.conftest import SERVER_URL


async def _role_attributes(role: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(SERVER_URL) as conn:
        cur = await conn.execute(
            "SELECT rolcanlogin, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb,"
            " rolreplication, rolinherit FROM pg_roles WHERE rolname = %s",
            (role,),
        )
        row = await cur.fetchone()
        assert row is not None, f"role {role} does not exist"
        names = ["login", "super", "bypassrls", "createrole", "createdb", "replication", "inherit"]
        return dict(zip(names, row, strict=True))


async def _table_privileges(
    conn: psycopg.AsyncConnection[Any], grantee: str
) -> dict[str, set[str]]:
    cur = await conn.execute(
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants"
        " WHERE grantee = %s AND table_schema = 'public'",
        (grantee,),
    )
    held: dict[str, set[str]] = {}
    for table, privilege in await cur.fetchall():
        held.setdefault(table, set()).add(privilege)
    return held


async def _catalog_snapshot(conn: psycopg.AsyncConnection[Any], role: str, database: str) -> Any:
    """Row versions (xmin) of every catalog row provisioning could write: any change to the
    role, the database, a governed table (RLS flags, ACL, owner) or a policy shows here."""
    cur = await conn.execute(
        "SELECT (SELECT xmin::text FROM pg_authid WHERE rolname = %s),"
        " (SELECT xmin::text FROM pg_database WHERE datname = %s),"
        " (SELECT array_agg(relname || ':' || xmin::text ORDER BY relname) FROM pg_class"
        "  WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'),"
        " (SELECT array_agg(polname || ':' || xmin::text ORDER BY polrelid, polname)"
        "  FROM pg_policy)",
        (role, database),
    )
    return await cur.fetchone()


async def test_first_pass_creates_the_database_and_a_least_privileged_role(
    server: Server, desired: Callable[..., Desired], scratch: Scratch
) -> None:
    report = await provision(server, desired(migrated=False))
    assert report.condition()[:2] == ("False", "Migrating")
    assert report.changes[:2] == (
        f"created database {scratch.database}",
        f"created role {scratch.role}",
    )
    assert report.event() is not None and report.event()[0] == "DatabaseProvisioned"  # type: ignore[index]
    assert await _role_attributes(scratch.role) == {
        "login": True,
        "super": False,
        "bypassrls": False,
        "createrole": False,
        "createdb": False,
        "replication": False,
        "inherit": True,
    }
    async with await psycopg.AsyncConnection.connect(SERVER_URL) as conn:
        assert await roles.created_by_adbm(conn, "database", scratch.database, scratch.owner)
        assert await roles.created_by_adbm(conn, "role", scratch.role, scratch.owner)
        assert not await roles.created_by_adbm(conn, "database", scratch.database, "other/x")
        cur = await conn.execute(
            "SELECT pg_get_userbyid(datdba) <> %s FROM pg_database WHERE datname = %s",
            (scratch.role, scratch.database),
        )
        assert await cur.fetchone() == (True,)
    # Nothing but the marker: the password is not stored in clear anywhere we can read.
    assert scratch.password not in repr(report) and scratch.password not in str(report.event())


async def test_migrated_database_is_provisioned_with_exact_grants(
    provisioned: Report, admin: psycopg.AsyncConnection[Any], scratch: Scratch
) -> None:
    status, reason, message = provisioned.condition()
    assert (status, reason) == ("True", "Provisioned")
    assert "isolation proven" in message
    # The newest migration the service ships is the schema version reported.
    shipped = sorted(Path(migrations.__file__).parent.glob("*.sql"))
    assert provisioned.schema_version == shipped[-1].stem == "0005_outbox_trace_context"
    privileges = await _table_privileges(admin, scratch.role)
    assert privileges == {table: {"SELECT", "INSERT", "UPDATE"} for table in TENANT_SCOPED}
    assert await roles.owned_objects(admin, scratch.role) == []
    cur = await admin.execute(
        "SELECT has_database_privilege(%s, current_database(), 'CONNECT'),"
        " has_table_privilege(%s, 'public.tenants', 'SELECT'),"
        " (SELECT count(*) FROM pg_auth_members WHERE member = %s::regrole)",
        (scratch.role, scratch.role, scratch.role),
    )
    assert await cur.fetchone() == (True, False, 0)
    for state in await rls.inspect(admin, TENANT_SCOPED):
        assert state.enabled and state.forced and state.policy(rls.POLICY) is not None
        assert state.owner != scratch.role


async def test_an_up_to_date_database_executes_zero_statements(
    server: Server,
    desired: Callable[..., Desired],
    scratch: Scratch,
    admin: psycopg.AsyncConnection[Any],
    ddl_log: DdlLog,
) -> None:
    before = await _catalog_snapshot(admin, scratch.role, scratch.database)
    report = await provision(server, desired())
    assert report.condition()[:2] == ("True", "Provisioned")
    assert report.changes == () and report.event() is None
    assert report.pending == "no pending changes"
    assert await ddl_log.read() == []
    assert await _catalog_snapshot(admin, scratch.role, scratch.database) == before


async def _repair(server: Server, desired: Desired) -> Report:
    report = await provision(server, desired)
    assert report.condition()[:2] == ("True", "Provisioned"), report.condition()
    event = report.event()
    assert event is not None and event[0] == "DatabaseDriftRepaired"
    return report


async def test_a_dropped_policy_is_recreated(
    server: Server, desired: Callable[..., Desired], admin: Any, ddl_log: DdlLog
) -> None:
    await admin.execute("DROP POLICY tenant_isolation ON products")
    await ddl_log.clear()
    report = await _repair(server, desired())
    assert report.pending == "public.products: create policy tenant_isolation"
    assert report.changes == ("public.products: create policy tenant_isolation",)
    assert await ddl_log.read() == [("CREATE POLICY", "tenant_isolation on public.products")]
    (state,) = await rls.inspect(admin, ["products"])
    assert state.policy(rls.POLICY) is not None


async def test_force_turned_off_is_turned_on(
    server: Server, desired: Callable[..., Desired], admin: Any, ddl_log: DdlLog
) -> None:
    await admin.execute("ALTER TABLE accounts NO FORCE ROW LEVEL SECURITY")
    await admin.execute("ALTER TABLE orders DISABLE ROW LEVEL SECURITY")
    await ddl_log.clear()
    report = await _repair(server, desired())
    assert report.changes == (
        "public.accounts: force row-level security",
        "public.orders: enable row-level security",
    )
    assert await ddl_log.read() == [
        ("ALTER TABLE", "public.accounts"),
        ("ALTER TABLE", "public.orders"),
    ]
    for state in await rls.inspect(admin, ["accounts", "orders"]):
        assert state.enabled and state.forced


async def test_an_altered_policy_is_replaced(
    server: Server, desired: Callable[..., Desired], admin: Any
) -> None:
    await admin.execute("ALTER POLICY tenant_isolation ON outbox USING (true)")
    report = await _repair(server, desired())
    assert report.changes == (
        "public.outbox: drop policy tenant_isolation",
        "public.outbox: recreate policy tenant_isolation",
    )


async def test_extra_grants_are_revoked(
    server: Server,
    desired: Callable[..., Desired],
    admin: Any,
    scratch: Scratch,
    ddl_log: DdlLog,
) -> None:
    role = sql.Identifier(scratch.role)
    await admin.execute(sql.SQL("GRANT DELETE, TRUNCATE ON accounts TO {}").format(role))
    await admin.execute("GRANT SELECT, DELETE ON orders TO PUBLIC")
    await admin.execute(sql.SQL("REVOKE UPDATE ON products FROM {}").format(role))
    await ddl_log.clear()
    report = await _repair(server, desired())
    assert report.changes == (
        f"public.accounts: revoke DELETE, TRUNCATE from {scratch.role}",
        f"public.products: grant UPDATE to {scratch.role}",
        "public.orders: revoke DELETE, SELECT from PUBLIC",
    )
    assert [tag for tag, _ in await ddl_log.read()] == ["REVOKE", "GRANT", "REVOKE"]
    privileges = await _table_privileges(admin, scratch.role)
    assert privileges == {table: {"SELECT", "INSERT", "UPDATE"} for table in TENANT_SCOPED}
    assert await _table_privileges(admin, "PUBLIC") == {}


async def test_role_attributes_ownership_and_membership_are_taken_back(
    server: Server, desired: Callable[..., Desired], admin: Any, scratch: Scratch
) -> None:
    role = sql.Identifier(scratch.role)
    await admin.execute(sql.SQL("ALTER ROLE {} CREATEDB BYPASSRLS").format(role))
    await admin.execute(sql.SQL("ALTER TABLE outbox OWNER TO {}").format(role))
    await admin.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(role))
    report = await _repair(server, desired())
    assert report.changes[0].startswith(f"reset the attributes of role {scratch.role}")
    assert f"took ownership of table outbox from {scratch.role}" in report.changes
    assert f"revoked membership of {scratch.role} in pg_read_all_data" in report.changes
    attributes = await _role_attributes(scratch.role)
    assert not attributes["createdb"] and not attributes["bypassrls"]
    assert await roles.owned_objects(admin, scratch.role) == []
    (state,) = await rls.inspect(admin, ["outbox"])
    assert state.owner != scratch.role


async def test_a_policy_adbm_did_not_create_is_reported_never_dropped(
    server: Server, desired: Callable[..., Desired], admin: Any, scratch: Scratch
) -> None:
    await admin.execute(
        sql.SQL("CREATE POLICY peek ON accounts FOR SELECT TO {} USING (true)").format(
            sql.Identifier(scratch.role)
        )
    )
    report = await provision(server, desired())
    status, reason, message = report.condition()
    assert (status, reason) == ("False", "IsolationBroken")
    assert "public.accounts: tenant A sees no other tenant's rows" in message
    assert "public.accounts: policy peek (not created by adbm, left in place)" in (
        report.unmanaged_policies
    )
    assert any("permissive policy peek" in d for d in report.observations.remaining_drift)
    (state,) = await rls.inspect(admin, ["accounts"])
    assert state.policy("peek") is not None
    assert report.changes == ()


async def test_another_tenant_setting_replaces_every_policy_once(
    server: Server, desired: Callable[..., Desired], admin: Any
) -> None:
    report = await _repair(server, desired(tenant_setting="shop.tenant"))
    assert len(report.changes) == 2 * len(TENANT_SCOPED)
    again = await provision(server, desired(tenant_setting="shop.tenant"))
    assert again.changes == ()


async def test_governed_tables_missing_after_migration_is_reported(
    server: Server, desired: Callable[..., Desired], provisioned: Report
) -> None:
    report = await provision(server, desired(tables=("accounts", "invoices")))
    assert report.condition() == (
        "False",
        "Migrating",
        "the migration has run, but governed tables do not exist: public.invoices",
    )


async def test_connection_budget_exceeded_is_a_condition_and_the_rest_proceeds(
    server: Server, desired: Callable[..., Desired], scratch: Scratch
) -> None:
    report = await provision(server, desired(migrated=False, wanted_connections=100_000))
    status, reason, message = report.condition()
    assert (status, reason) == ("False", "ConnectionBudgetExceeded")
    budget = report.observations.budget
    assert budget is not None and not budget.fits
    async with await psycopg.AsyncConnection.connect(SERVER_URL) as conn:
        cur = await conn.execute("SHOW max_connections")
        row = await cur.fetchone()
        assert row is not None and budget.max_connections == int(row[0])
    assert f"max_connections {budget.max_connections}" in message
    assert f"created role {scratch.role}" in report.changes


async def test_two_concurrent_provisioners_change_everything_exactly_once(
    server: Server, desired: Callable[..., Desired], scratch: Scratch
) -> None:
    first = await asyncio.gather(*(provision(server, desired(migrated=False)) for _ in range(2)))
    changes = [c for report in first for c in report.changes]
    assert changes.count(f"created database {scratch.database}") == 1
    assert changes.count(f"created role {scratch.role}") == 1
    await run_migration(scratch)
    # Take the migration's RLS away, so the converge has everything to do again.
    async with await psycopg.AsyncConnection.connect(admin_url(scratch), autocommit=True) as conn:
        for table in TENANT_SCOPED:
            await conn.execute(
                sql.SQL("DROP POLICY tenant_isolation ON {}").format(sql.Identifier(table))
            )
    second = await asyncio.gather(*(provision(server, desired()) for _ in range(2)))
    assert [r.condition()[:2] for r in second] == [("True", "Provisioned")] * 2
    applied = [c for report in second for c in report.changes]
    assert sorted(applied) == sorted(
        f"public.{t}: create policy tenant_isolation" for t in TENANT_SCOPED
    )
    assert sum(1 for r in second if r.changes) == 1


async def test_desired_never_shows_the_password(
    desired: Callable[..., Desired], scratch: Scratch
) -> None:
    value = dataclasses.replace(desired(), app_role="other")
    assert scratch.password not in repr(value)


async def test_a_held_migration_lock_is_migrating_not_a_hang(
    server: Server, desired: Callable[..., Desired], admin: Any, scratch: Scratch
) -> None:
    # A migration in progress holds the lock in its transaction.
    async with await psycopg.AsyncConnection.connect(admin_url(scratch)) as migrator:
        await migrator.execute("SELECT pg_advisory_xact_lock(%s)", (rls.LOCK,))
        report = await provision(server, desired(lock_wait=0.2))
        await migrator.rollback()
    status, reason, message = report.condition()
    assert (status, reason) == ("False", "Migrating")
    assert "is locked by a migration or another provisioner" in message
    assert report.observations.busy, "retried with backoff, no migration Job started"


async def test_rls_from_nothing_is_planned_applied_and_verified(
    server: Server, desired: Callable[..., Desired], admin: Any, ddl_log: DdlLog
) -> None:
    for table in TENANT_SCOPED:
        name = sql.Identifier(table)
        await admin.execute(sql.SQL("DROP POLICY tenant_isolation ON {}").format(name))
        await admin.execute(
            sql.SQL(
                "ALTER TABLE {} NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY"
            ).format(name)
        )
    await ddl_log.clear()
    report = await _repair(server, desired())
    per_table = [
        "enable row-level security",
        "force row-level security",
        "create policy tenant_isolation",
    ]
    assert report.pending == "; ".join(
        f"public.{t}: {what}" for t in TENANT_SCOPED for what in per_table
    )
    assert [tag for tag, _ in await ddl_log.read()] == [
        "ALTER TABLE",
        "ALTER TABLE",
        "CREATE POLICY",
    ] * len(TENANT_SCOPED)
    assert report.observations.remaining_drift == ()
    again = await provision(server, desired())
    assert again.changes == () and again.pending == "no pending changes"


async def test_an_empty_database_plans_nothing_until_migrated(
    server: Server, desired: Callable[..., Desired], scratch: Scratch
) -> None:
    await provision(server, desired(migrated=False))
    # Migrated by the Job's account, but the tables are not there: nothing is applied.
    report = await provision(server, desired())
    assert report.condition()[:2] == ("False", "Migrating")
    assert report.changes == ()
    async with await psycopg.AsyncConnection.connect(admin_url(scratch)) as conn:
        assert {s.exists for s in await rls.inspect(conn, TENANT_SCOPED)} == {False}
