"""Deletion policy `Delete`: drop what adbm created for a BackendService, and say what is left.

Only objects carrying adbm's marker for this BackendService are dropped: a database adbm
created goes as a whole; in a database adbm found, only the tenant policies adbm applies are
dropped (RLS stays enabled, so the tables stay closed to every non-owner). The app role goes
if adbm created it, after its privileges are revoked (DROP OWNED BY). `Retain` touches nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from adbm_operator.database import roles
from adbm_operator.database.connect import connect, one_line
from adbm_operator.database.target import CONNECT_TIMEOUT_SECONDS, MAINTENANCE_DATABASE, Server
from adbm_operator.model import DeletionPolicy
from reference_service.db import rls
from reference_service.db.schema import SCHEMA


@dataclass(frozen=True)
class DeletionReport:
    dropped: tuple[str, ...]
    left: tuple[str, ...]
    """What remains, and why (for the Event when the finalizer is removed)."""


async def deprovision(
    server: Server,
    *,
    policy: DeletionPolicy,
    owner: str,
    database: str,
    app_role: str,
    tables: Sequence[str],
    timeout: float = CONNECT_TIMEOUT_SECONDS,
) -> DeletionReport:
    """Apply the deletion policy. Raises `Unreachable` if the server cannot be reached (the
    caller retries a bounded number of times); errors of single drops go to `left`."""
    if policy is DeletionPolicy.RETAIN:
        return DeletionReport((), (f"database {database} and role {app_role} (Retain)",))
    dropped: list[str] = []
    left: list[str] = []
    maintenance_info = server.conninfo(MAINTENANCE_DATABASE, timeout=int(timeout))
    async with await connect(
        maintenance_info, server.describe(MAINTENANCE_DATABASE), timeout=timeout
    ) as maintenance:
        cur = await maintenance.execute(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (database,)
        )
        exists = await cur.fetchone() is not None
        ours_db = exists and await roles.created_by_adbm(maintenance, "database", database, owner)
        ours_role = await roles.created_by_adbm(maintenance, "role", app_role, owner)
        if exists and not ours_db:
            async with await connect(
                server.conninfo(database, timeout=int(timeout)),
                server.describe(database),
                timeout=timeout,
            ) as admin:
                await _drop_policies(admin, tables, dropped, left)
                if ours_role:
                    await admin.execute(
                        sql.SQL("DROP OWNED BY {}").format(sql.Identifier(app_role))
                    )
            left.append(f"database {database} (adbm did not create it)")
        if ours_db:
            await maintenance.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database))
            )
            dropped.append(f"database {database}")
        if ours_role:
            try:
                await maintenance.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(app_role)))
                dropped.append(f"role {app_role}")
            except psycopg.Error as exc:
                left.append(f"role {app_role}: {one_line(exc)}")
        else:
            left.append(f"role {app_role} (adbm did not create it)")
    return DeletionReport(tuple(dropped), tuple(left))


async def _drop_policies(
    admin: psycopg.AsyncConnection[psycopg.rows.TupleRow],
    tables: Sequence[str],
    dropped: list[str],
    left: list[str],
) -> None:
    for state in await rls.inspect(admin, tables):
        if state.policy(rls.POLICY) is None:
            continue
        name = f"{SCHEMA}.{state.table}"
        try:
            await admin.execute(
                sql.SQL("DROP POLICY {} ON {}").format(
                    sql.Identifier(rls.POLICY), sql.Identifier(SCHEMA, state.table)
                )
            )
            dropped.append(f"policy {rls.POLICY} on {name}")
        except psycopg.Error as exc:
            left.append(f"policy {rls.POLICY} on {name}: {one_line(exc)}")
