"""Row-level security: the app role sees and writes only the rows of the tenant its transaction
is set to, and `verify` notices when the setup is weakened.

The queries here are deliberately plain (`SELECT * FROM accounts`, no WHERE): isolation must come
from the policies alone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from reference_service.db import rls
from reference_service.db.pool import Database
from reference_service.db.repository import insert, select_page
from tests.reference_service.conftest import DatabaseUrls, Tenants


async def _seed(database: Database, tenant: uuid.UUID, *names: str) -> list[uuid.UUID]:
    ids = []
    async with database.transaction(tenant) as conn:
        for name in names:
            row = await insert(
                conn,
                "accounts",
                {"tenant_id": tenant, "name": name, "currency": "EUR", "balance_minor": 100},
                actor="test",
            )
            ids.append(row["id"])
    return ids


@pytest.fixture
async def seeded(database: Database, tenants: Tenants) -> dict[str, list[uuid.UUID]]:
    return {
        "a": await _seed(database, tenants.a, "a1", "a2"),
        "b": await _seed(database, tenants.b, "b1", "b2", "b3"),
    }


@pytest.fixture
async def admin(database_urls: DatabaseUrls) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(
        database_urls.admin_url, autocommit=True
    ) as conn:
        yield conn


async def test_plain_select_sees_only_the_current_tenant(
    database: Database, tenants: Tenants, seeded: dict[str, list[uuid.UUID]]
) -> None:
    async with database.transaction(tenants.a) as conn:
        rows = await (await conn.execute("SELECT * FROM accounts")).fetchall()
    assert sorted(r["name"] for r in rows) == ["a1", "a2"]
    assert {r["tenant_id"] for r in rows} == {tenants.a}
    async with database.transaction(tenants.b) as conn:
        rows = await (await conn.execute("SELECT * FROM accounts")).fetchall()
    assert sorted(r["name"] for r in rows) == ["b1", "b2", "b3"]


async def test_no_tenant_sees_nothing(
    database: Database, database_urls: DatabaseUrls, seeded: dict[str, list[uuid.UUID]]
) -> None:
    async with database.transaction(None) as conn:
        rows = await (await conn.execute("SELECT * FROM accounts")).fetchall()
    assert rows == []
    # A fresh session where the setting was never defined (current_setting gives NULL)...
    async with await psycopg.AsyncConnection.connect(database_urls.app_url) as app:
        assert await (await app.execute("SELECT * FROM accounts")).fetchall() == []
        await app.rollback()
        # ...and one where a transaction-local value has ended (it gives '', not NULL).
        await app.execute("SELECT set_config('app.tenant_id', %s, true)", (str(uuid.uuid4()),))
        await app.commit()
        cur = await app.execute("SELECT current_setting('app.tenant_id', true)")
        assert await cur.fetchone() == ("",)
        assert await (await app.execute("SELECT * FROM accounts")).fetchall() == []


async def test_the_tenant_does_not_outlive_its_transaction(
    make_database: Any, tenants: Tenants, seeded: dict[str, list[uuid.UUID]]
) -> None:
    single: Database = await make_database(db_pool_max_size=1)
    async with single.transaction(tenants.a) as conn:
        assert len(await (await conn.execute("SELECT id FROM accounts")).fetchall()) == 2
    # Same (only) pooled connection, no tenant: nothing.
    async with single.transaction(None) as conn:
        assert await (await conn.execute("SELECT id FROM accounts")).fetchall() == []
        cur = await conn.execute("SELECT current_setting('app.tenant_id', true) AS v")
        assert await cur.fetchone() == {"v": ""}


async def test_insert_for_another_tenant_is_rejected(database: Database, tenants: Tenants) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        async with database.transaction(tenants.a) as conn:
            await conn.execute(
                "INSERT INTO accounts (id, tenant_id, created_by, updated_by, name, currency,"
                " balance_minor) VALUES (%s, %s, 'test', 'test', 'x', 'EUR', 0)",
                (uuid.uuid4(), tenants.b),
            )


async def test_update_of_another_tenants_row_affects_nothing(
    database: Database, tenants: Tenants, seeded: dict[str, list[uuid.UUID]]
) -> None:
    victim = seeded["b"][0]
    async with database.transaction(tenants.a) as conn:
        cur = await conn.execute("UPDATE accounts SET balance_minor = 0 WHERE id = %s", (victim,))
        assert cur.rowcount == 0
        # Nor can a row of A be moved to B (WITH CHECK applies to the new row).
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with conn.transaction():
                await conn.execute(
                    "UPDATE accounts SET tenant_id = %s WHERE id = %s", (tenants.b, seeded["a"][0])
                )
    async with database.transaction(tenants.b) as conn:
        cur = await conn.execute("SELECT balance_minor FROM accounts WHERE id = %s", (victim,))
        assert await cur.fetchone() == {"balance_minor": 100}


async def test_orders_cannot_reference_another_tenants_account(
    database: Database, tenants: Tenants, seeded: dict[str, list[uuid.UUID]]
) -> None:
    async with database.transaction(tenants.a) as conn:
        product = await insert(
            conn,
            "products",
            {"tenant_id": tenants.a, "sku": "S", "name": "P", "price_minor": 1, "currency": "EUR"},
            actor="test",
        )
    # Foreign key checks ignore RLS; the composite (tenant_id, account_id) key does not.
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        async with database.transaction(tenants.a) as conn:
            await insert(
                conn,
                "orders",
                {
                    "tenant_id": tenants.a,
                    "account_id": seeded["b"][0],
                    "product_id": product["id"],
                    "quantity": 1,
                    "total_minor": 1,
                    "currency": "EUR",
                    "status": "placed",
                },
                actor="test",
            )


async def test_policy_is_an_initplan_and_keyset_pages_are_one_index_range(
    database: Database, database_urls: DatabaseUrls, tenants: Tenants
) -> None:
    async with await psycopg.AsyncConnection.connect(
        database_urls.admin_url, autocommit=True
    ) as admin:
        for tenant in (tenants.a, tenants.b):
            await admin.execute(
                "INSERT INTO accounts (id, tenant_id, created_by, updated_by, name, currency,"
                " balance_minor, created_at) SELECT gen_random_uuid(), %s, 'test', 'test', 'n',"
                " 'EUR', 0, now() - g * interval '1 second' FROM generate_series(1, 5000) g",
                (tenant,),
            )
        await admin.execute("ANALYZE accounts")
    statement = select_page(
        "accounts", after=(datetime(2000, 1, 1, tzinfo=UTC), uuid.uuid4()), limit=50
    )
    async with database.transaction(tenants.a) as conn:
        cur = await conn.execute(sql.SQL("EXPLAIN {}").format(statement.query), statement.params)
        plan = "\n".join(r["QUERY PLAN"] for r in await cur.fetchall())
    # current_setting is evaluated once per statement ($0), not per row, and both the tenant
    # and the keyset position bound one range of the (tenant_id, created_at, id) index.
    assert "InitPlan 1 (returns $0)" in plan
    assert "Index Scan using accounts_keyset" in plan
    assert "Index Cond: ((tenant_id = $0) AND (ROW(created_at, id) > ROW(" in plan


def test_plan_statements() -> None:
    statements = [s.as_string() for s in rls.plan(["accounts"], "app.tenant_id", "tenant_id")]
    expression = (
        "\"tenant_id\" = (SELECT NULLIF(pg_catalog.current_setting('app.tenant_id', true),"
        " '')::uuid)"
    )
    assert statements == [
        'ALTER TABLE "public"."accounts" ENABLE ROW LEVEL SECURITY',
        'ALTER TABLE "public"."accounts" FORCE ROW LEVEL SECURITY',
        'DROP POLICY IF EXISTS "tenant_isolation" ON "public"."accounts"',
        'CREATE POLICY "tenant_isolation" ON "public"."accounts" AS PERMISSIVE FOR ALL TO PUBLIC'
        f" USING ({expression}) WITH CHECK ({expression})",
    ]


@pytest.mark.parametrize(
    ("tables", "setting", "column"),
    [
        (["accounts; DROP TABLE x"], "app.tenant_id", "tenant_id"),
        (["accounts"], "app.tenant_id'); --", "tenant_id"),
        (["accounts"], "tenant", "tenant_id"),
        (["accounts"], "app.tenant_id", 'tenant"id'),
    ],
)
def test_plan_refuses_odd_names(tables: list[str], setting: str, column: str) -> None:
    with pytest.raises(ValueError):
        rls.plan(tables, setting, column)


async def test_verify_finds_nothing_on_a_migrated_database(
    database_urls: DatabaseUrls, seeded: dict[str, list[uuid.UUID]]
) -> None:
    assert await rls.verify(database_urls.admin_url, database_urls.app_url) == []


async def test_verify_reports_rls_not_forced(
    database_urls: DatabaseUrls, admin: psycopg.AsyncConnection[Any]
) -> None:
    await admin.execute("ALTER TABLE accounts NO FORCE ROW LEVEL SECURITY")
    assert await rls.verify(database_urls.admin_url, database_urls.app_url) == [
        "public.accounts: row-level security is not forced (the table owner bypasses it)"
    ]


async def test_verify_reports_disabled_and_missing_and_altered_policies(
    database_urls: DatabaseUrls, admin: psycopg.AsyncConnection[Any]
) -> None:
    await admin.execute("ALTER TABLE orders DISABLE ROW LEVEL SECURITY")
    await admin.execute("DROP POLICY tenant_isolation ON products")
    await admin.execute("ALTER POLICY tenant_isolation ON outbox USING (true) WITH CHECK (true)")
    problems = await rls.verify(database_urls.admin_url, database_urls.app_url)
    assert "public.orders: row-level security is not enabled" in problems
    assert "public.products: policy tenant_isolation is missing" in problems
    assert any(p.startswith("public.outbox: policy tenant_isolation differs") for p in problems)


async def test_verify_canary_catches_a_widening_policy(
    database_urls: DatabaseUrls,
    admin: psycopg.AsyncConnection[Any],
    seeded: dict[str, list[uuid.UUID]],
) -> None:
    await admin.execute(
        sql.SQL("CREATE POLICY peek ON accounts FOR SELECT TO {} USING (true)").format(
            sql.Identifier(database_urls.app_role)
        )
    )
    problems = await rls.verify(database_urls.admin_url, database_urls.app_url)
    assert problems == [
        "public.accounts: permissive policy peek also applies to the app role and widens what"
        " it can see",
        "public.accounts: app role sees rows with no tenant set",
        "public.accounts: app role with a tenant set sees rows of other tenants",
    ]


async def test_verify_reports_a_privileged_or_owning_app_role(
    database_urls: DatabaseUrls, admin: psycopg.AsyncConnection[Any]
) -> None:
    role = sql.Identifier(database_urls.app_role)
    await admin.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(role))
    await admin.execute(sql.SQL("ALTER TABLE outbox OWNER TO {}").format(role))
    await admin.execute(sql.SQL("GRANT TRUNCATE ON api_keys TO {}").format(role))
    problems = await rls.verify(database_urls.admin_url, database_urls.app_url)
    app = database_urls.app_role
    assert f"app role {app} has BYPASSRLS" in problems
    assert (
        f"public.outbox: app role {app} owns the table or is a member of its owner {app}"
        in problems
    )
    assert (
        f"public.api_keys: app role {app} may TRUNCATE, which ignores row-level security"
        in problems
    )


async def test_verify_reports_a_missing_table(database_urls: DatabaseUrls) -> None:
    problems = await rls.verify(
        database_urls.admin_url, database_urls.app_url, tables=["accounts", "nope"]
    )
    assert problems == ["public.nope: table does not exist"]


async def test_apply_repairs_only_what_drifted(
    admin: psycopg.AsyncConnection[Any], database_urls: DatabaseUrls
) -> None:
    async with admin.transaction():
        assert await rls.apply(admin) == []
    await admin.execute("ALTER TABLE accounts NO FORCE ROW LEVEL SECURITY")
    await admin.execute("ALTER POLICY tenant_isolation ON orders USING (true)")
    async with admin.transaction():
        executed = await rls.apply(admin)
    assert executed == [
        'ALTER TABLE "public"."accounts" FORCE ROW LEVEL SECURITY',
        'DROP POLICY IF EXISTS "tenant_isolation" ON "public"."orders"',
        next(s.as_string() for s in rls.plan(["orders"]) if s.as_string().startswith("CREATE")),
    ]
    assert await rls.verify(database_urls.admin_url, database_urls.app_url) == []


async def test_apply_with_another_setting_replaces_the_policies(
    admin: psycopg.AsyncConnection[Any], database_urls: DatabaseUrls, database: Database
) -> None:
    async with admin.transaction():
        executed = await rls.apply(admin, ["accounts"], "shop.tenant", "tenant_id")
    assert len(executed) == 2  # drop + create; still enabled and forced
    assert (
        await rls.verify(
            database_urls.admin_url, database_urls.app_url, ["accounts"], "shop.tenant"
        )
        == []
    )
    problems = await rls.verify(database_urls.admin_url, database_urls.app_url, ["accounts"])
    assert problems and "differs from the plan" in problems[0]


async def test_apply_refuses_a_missing_table(admin: psycopg.AsyncConnection[Any]) -> None:
    with pytest.raises(LookupError, match=r"public\.nope does not exist"):
        async with admin.transaction():
            await rls.apply(admin, ["nope"])


async def test_inspect_reports_state(admin: psycopg.AsyncConnection[Any]) -> None:
    (state,) = await rls.inspect(admin, ["api_keys"])
    assert state.exists and state.enabled and state.forced
    policy = state.policy(rls.POLICY)
    assert policy is not None and policy.roles == ["public"] and policy.command == "*"
    # The owner's own lookup policy (see the migration) is scoped to the owner.
    owner_policy = state.policy("owner_authenticate")
    assert owner_policy is not None and owner_policy.roles == ["postgres"]


async def test_plan_changes_summarises_and_reports_foreign_policies(
    admin: psycopg.AsyncConnection[Any], database_urls: DatabaseUrls
) -> None:
    plan = await rls.plan_changes(admin, ["api_keys"], app_role=database_urls.app_role)
    assert plan.up_to_date and plan.summary() == "no pending changes"
    assert plan.unmanaged_policies == (
        "public.api_keys: policy owner_authenticate (not created by adbm, left in place)",
    )
    await admin.execute("ALTER TABLE api_keys NO FORCE ROW LEVEL SECURITY")
    await admin.execute("GRANT TRUNCATE ON api_keys TO PUBLIC")
    plan = await rls.plan_changes(admin, ["api_keys", "nope"], app_role=database_urls.app_role)
    assert plan.summary() == (
        "public.nope: table does not exist; public.api_keys: force row-level security;"
        " public.api_keys: revoke TRUNCATE from PUBLIC"
    )


async def test_converge_applies_then_finds_nothing_left(
    admin: psycopg.AsyncConnection[Any], database_urls: DatabaseUrls
) -> None:
    await admin.execute("DROP POLICY tenant_isolation ON accounts")
    first = await rls.converge(admin, ["accounts"], app_role=database_urls.app_role)
    assert [c.description for c in first.before.changes] == ["create policy tenant_isolation"]
    assert len(first.executed) == 1 and first.after.up_to_date
    second = await rls.converge(admin, ["accounts"], app_role=database_urls.app_role)
    assert second.executed == () and second.before.up_to_date
    missing = await rls.converge(admin, ["nope"])
    assert missing.executed == () and missing.before.missing_tables == ("nope",)
