"""The isolation canary: it passes on a provisioned database, and each way of breaking
isolation makes it fail (it is called directly here, so nothing repairs the break first)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from adbm_operator.database.canary import IsolationResult, prove_isolation
from adbm_operator.database.provision import Report
from reference_service.db.schema import TENANT_SCOPED
from tests.operator.database.conftest import Scratch, app_url


@pytest.fixture
async def app(scratch: Scratch, provisioned: Report) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(app_url(scratch), autocommit=True) as conn:
        yield conn


async def _canary(admin: Any, app: Any, scratch: Scratch) -> IsolationResult:
    return await prove_isolation(
        admin, app, scratch.role, TENANT_SCOPED, "app.tenant_id", "tenant_id"
    )


def _failed(result: IsolationResult) -> set[tuple[str, str]]:
    return {(c.table, c.name) for c in result.failures}


async def test_the_canary_proves_every_check_on_every_governed_table(
    admin: Any, app: Any, scratch: Scratch
) -> None:
    result = await _canary(admin, app, scratch)
    assert result.ok, result.message()
    assert not [c for c in result.checks if c.outcome == "skipped"]
    per_table = {
        "no tenant set sees no rows",
        "a tenant writes its own row",
        "tenant A sees its own row",
        "tenant A sees no other tenant's rows",
        "tenant B sees its own row",
        "tenant B sees no other tenant's rows",
        "tenant A cannot insert a row for B",
        "tenant A cannot update B's rows",
        "tenant A cannot move its row to B",
        "no tenant (after one ended) sees no rows",
    }
    for table in TENANT_SCOPED:
        assert {c.name for c in result.checks if c.table == f"public.{table}"} == per_table
    assert {c.name for c in result.checks if c.table == "connection"} == {
        "a reused connection carries no tenant",
        "a reused connection sees no rows",
    }
    # Nothing it wrote survives.
    for table in TENANT_SCOPED:
        cur = await admin.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        assert await cur.fetchone() == (0,)


async def test_rls_disabled_is_caught(admin: Any, app: Any, scratch: Scratch) -> None:
    await admin.execute("ALTER TABLE accounts DISABLE ROW LEVEL SECURITY")
    failed = _failed(await _canary(admin, app, scratch))
    assert ("public.accounts", "tenant A sees no other tenant's rows") in failed
    assert ("public.accounts", "tenant A cannot insert a row for B") in failed
    assert ("public.accounts", "tenant A cannot move its row to B") in failed
    assert ("public.accounts", "no tenant (after one ended) sees no rows") in failed
    assert {table for table, _ in failed} == {"public.accounts"}


async def test_a_permissive_policy_is_caught(admin: Any, app: Any, scratch: Scratch) -> None:
    await admin.execute("ALTER POLICY tenant_isolation ON orders USING (true) WITH CHECK (true)")
    result = await _canary(admin, app, scratch)
    failed = _failed(result)
    assert ("public.orders", "tenant B sees no other tenant's rows") in failed
    assert ("public.orders", "tenant A cannot insert a row for B") in failed
    # B's own row and the one A was let insert for B.
    assert "public.orders: tenant A cannot update B's rows: 2 rows of B updated" in result.message()


async def test_a_tenant_carried_by_every_session_is_caught(
    admin: Any, scratch: Scratch, provisioned: Report
) -> None:
    # A role-level default makes every new session (and every reused one) carry a tenant.
    await admin.execute(
        sql.SQL("ALTER ROLE {} SET app.tenant_id = {}").format(
            sql.Identifier(scratch.role), sql.Literal(str(uuid.uuid4()))
        )
    )
    async with await psycopg.AsyncConnection.connect(app_url(scratch), autocommit=True) as app:
        result = await _canary(admin, app, scratch)
    assert ("connection", "a reused connection carries no tenant") in _failed(result)


async def test_a_missing_privilege_shows_as_a_failed_write(
    admin: Any, app: Any, scratch: Scratch
) -> None:
    await admin.execute(
        sql.SQL("REVOKE INSERT ON outbox FROM {}").format(sql.Identifier(scratch.role))
    )
    result = await _canary(admin, app, scratch)
    (failure,) = result.failures
    assert (failure.table, failure.name) == ("public.outbox", "a tenant writes its own row")
    assert "permission denied" in failure.detail


async def test_an_admin_that_may_not_become_the_app_role_skips_the_write_proofs(
    admin: Any, app: Any, scratch: Scratch
) -> None:
    other = f"{scratch.role}_ops"
    scratch.extra_roles.append(other)
    await admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(other)))
    from tests.reference_service.conftest import conninfo

    async with await psycopg.AsyncConnection.connect(
        conninfo(scratch.database, user=other), autocommit=True
    ) as limited:
        result = await _canary(limited, app, scratch)
    assert result.ok
    (skipped,) = [c for c in result.checks if c.outcome == "skipped"]
    assert skipped.name == "write proofs as the app role"
    assert "not exercised" in result.message()
