"""Deletion policy: Delete drops what adbm created (and only that), Retain leaves everything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from adbm_operator.database.deletion import deprovision
from adbm_operator.database.provision import Desired, provision
from adbm_operator.database.target import Server
from adbm_operator.model import DeletionPolicy
from reference_service.db import rls
from reference_service.db.schema import TENANT_SCOPED
from tests.operator.database.conftest import Scratch, admin_url, run_migration
from tests.reference_service.conftest import SERVER_URL


async def _exists(kind: str, name: str) -> bool:
    query = {
        "database": "SELECT 1 FROM pg_database WHERE datname = %s",
        "role": "SELECT 1 FROM pg_roles WHERE rolname = %s",
    }[kind]
    async with await psycopg.AsyncConnection.connect(SERVER_URL) as conn:
        return await (await conn.execute(query, (name,))).fetchone() is not None


async def _delete(server: Server, scratch: Scratch, policy: DeletionPolicy) -> Any:
    return await deprovision(
        server,
        policy=policy,
        owner=scratch.owner,
        database=scratch.database,
        app_role=scratch.role,
        tables=TENANT_SCOPED,
    )


async def test_delete_drops_the_database_and_role_adbm_created(
    server: Server, scratch: Scratch, provisioned: Any
) -> None:
    report = await _delete(server, scratch, DeletionPolicy.DELETE)
    assert report.dropped == (f"database {scratch.database}", f"role {scratch.role}")
    assert report.left == ()
    assert not await _exists("database", scratch.database)
    assert not await _exists("role", scratch.role)
    # Deleting again (a retried finalizer) finds nothing to do and fails on nothing.
    again = await _delete(server, scratch, DeletionPolicy.DELETE)
    assert again.dropped == ()


async def test_retain_leaves_everything(server: Server, scratch: Scratch, provisioned: Any) -> None:
    report = await _delete(server, scratch, DeletionPolicy.RETAIN)
    assert report.dropped == ()
    assert await _exists("database", scratch.database)
    assert await _exists("role", scratch.role)
    async with await psycopg.AsyncConnection.connect(admin_url(scratch)) as conn:
        for state in await rls.inspect(conn, TENANT_SCOPED):
            assert state.policy(rls.POLICY) is not None


async def test_delete_in_a_database_adbm_found_drops_only_its_policies_and_role(
    server: Server, scratch: Scratch, desired: Callable[..., Desired]
) -> None:
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch.database)))
    await provision(server, desired(migrated=False))
    await run_migration(scratch)
    assert (await provision(server, desired())).condition()[0] == "True"

    report = await _delete(server, scratch, DeletionPolicy.DELETE)
    assert report.dropped == (
        *(f"policy tenant_isolation on public.{t}" for t in TENANT_SCOPED),
        f"role {scratch.role}",
    )
    assert report.left == (f"database {scratch.database} (adbm did not create it)",)
    assert not await _exists("role", scratch.role)
    async with await psycopg.AsyncConnection.connect(admin_url(scratch)) as conn:
        for state in await rls.inspect(conn, TENANT_SCOPED):
            # The tables stay, still closed to every non-owner: RLS on, no policy.
            assert state.exists and state.enabled and state.forced
            assert state.policy(rls.POLICY) is None
        # The migration's own policy was not adbm's to drop.
        (keys,) = await rls.inspect(conn, ["api_keys"])
        assert keys.policy("owner_authenticate") is not None


async def test_delete_leaves_a_role_adbm_did_not_create(
    server: Server, scratch: Scratch, desired: Callable[..., Desired]
) -> None:
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(scratch.role)))
    report = await provision(server, desired(migrated=False))
    assert f"created role {scratch.role}" not in report.changes
    deleted = await _delete(server, scratch, DeletionPolicy.DELETE)
    assert deleted.dropped == (f"database {scratch.database}",)
    assert deleted.left == (f"role {scratch.role} (adbm did not create it)",)
    assert await _exists("role", scratch.role)
