"""The isolation canary: proof, as the app role, that tenants cannot see or touch each other.

For every governed table, two synthetic tenants A and B each write a row and then:
- each sees its own row and no row of the other;
- A cannot insert a row for B, cannot update B's row (it affects nothing), and cannot move its
  own row to B (WITH CHECK);
- with no tenant set, nothing is visible.
And on a connection that logged in as the app role: with no tenant set, nothing is visible, and
after a committed transaction for tenant A the same connection (as a pool would reuse it)
carries no tenant and sees nothing.

The write proofs run in one transaction on the admin's connection with `SET LOCAL ROLE` to the
app role (RLS and privileges are then exactly the app role's), rolled back at the end, so no
synthetic row is ever committed. A superuser admin also sets `session_replication_role =
replica` for that transaction, which skips foreign-key checks: the synthetic tenants need no
parent rows. Row values are synthesised from column types; a table whose row cannot be
synthesised (an unknown type, a CHECK the filler violates) is reported as not exercised.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Json, Jsonb

from adbm_operator.database.connect import one_line
from reference_service.db.schema import SCHEMA, check_identifier, check_setting

Outcome = Literal["passed", "failed", "skipped"]

# Bounds every canary statement: a table locked by a migration must not stall the reconcile.
_TIMEOUTS = ("lock_timeout", "5s"), ("statement_timeout", "15s")

_FILLERS: dict[str, Callable[[], Any]] = {
    "uuid": uuid.uuid4,
    "text": lambda: "c",
    "varchar": lambda: "c",
    "bpchar": lambda: "c",
    "citext": lambda: "c",
    "int2": lambda: 1,
    "int4": lambda: 1,
    "int8": lambda: 1,
    "numeric": lambda: Decimal(1),
    "float4": lambda: 1.0,
    "float8": lambda: 1.0,
    "bool": lambda: False,
    "timestamptz": lambda: datetime.now(UTC),
    "timestamp": lambda: datetime.now(UTC).replace(tzinfo=None),
    "date": date.today,
    "json": lambda: Json({}),
    "jsonb": lambda: Jsonb({}),
    # 32 random bytes: fits a digest-sized CHECK and never collides with another row's.
    "bytea": lambda: os.urandom(32),
}


@dataclass(frozen=True)
class Check:
    table: str
    """`schema.table`, or `connection` for the checks of a pooled app connection."""
    name: str
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class IsolationResult:
    checks: tuple[Check, ...]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.outcome == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def message(self) -> str:
        """One line for the condition: the failures, else what was proven and what skipped."""
        if self.failures:
            return "; ".join(f"{c.table}: {c.name}: {c.detail}".rstrip(": ") for c in self.failures)
        skipped = [c for c in self.checks if c.outcome == "skipped"]
        passed = sum(c.outcome == "passed" for c in self.checks)
        text = f"isolation proven: {passed} checks passed"
        if skipped:
            text += "; not exercised: " + "; ".join(f"{c.table}: {c.detail}" for c in skipped)
        return text


class _Recorder:
    def __init__(self) -> None:
        self.checks: list[Check] = []

    def record(self, table: str, name: str, passed: bool, detail: str = "") -> None:
        self.checks.append(Check(table, name, "passed" if passed else "failed", detail))

    def skip(self, table: str, name: str, detail: str) -> None:
        self.checks.append(Check(table, name, "skipped", detail))


async def prove_isolation(
    admin: psycopg.AsyncConnection[Any],
    app: psycopg.AsyncConnection[Any],
    app_role: str,
    tables: Sequence[str],
    tenant_setting: str,
    tenant_column: str,
) -> IsolationResult:
    """Run every check; `admin` and `app` are autocommit connections to the app database, `app`
    logged in as `app_role`. Never raises for a failed proof: failures are in the result."""
    check_identifier(app_role, "app role")
    check_setting(tenant_setting)
    check_identifier(tenant_column, "tenant column")
    recorder = _Recorder()
    names = list(dict.fromkeys(check_identifier(t, "table") for t in tables))
    await _app_connection_checks(app, names, tenant_setting, recorder)
    await _write_checks(admin, app_role, names, tenant_setting, tenant_column, recorder)
    return IsolationResult(tuple(recorder.checks))


async def _set_timeouts(conn: psycopg.AsyncConnection[Any]) -> None:
    for name, value in _TIMEOUTS:
        await conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))


async def _sees_any(conn: psycopg.AsyncConnection[Any], table: str) -> bool:
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(SCHEMA, table))
    row = await (await conn.execute(query)).fetchone()
    return bool(row and row[0])


async def _app_connection_checks(
    app: psycopg.AsyncConnection[Any],
    tables: Sequence[str],
    tenant_setting: str,
    recorder: _Recorder,
) -> None:
    tenant = str(uuid.uuid4())
    try:
        async with app.transaction():
            await _set_timeouts(app)
            for table in tables:
                # A fresh session: the setting was never defined (current_setting gives NULL).
                seen = await _sees_any(app, table)
                recorder.record(
                    f"{SCHEMA}.{table}",
                    "no tenant set sees no rows",
                    not seen,
                    "rows are visible with no tenant set" if seen else "",
                )
        async with app.transaction():
            await app.execute(
                "SELECT pg_catalog.set_config(%s, %s, true)", (tenant_setting, tenant)
            )
        # The same connection, as a pool hands it to the next request.
        async with app.transaction():
            await _set_timeouts(app)
            row = await (
                await app.execute("SELECT pg_catalog.current_setting(%s, true)", (tenant_setting,))
            ).fetchone()
            carried = row is not None and row[0] not in (None, "")
            recorder.record(
                "connection",
                "a reused connection carries no tenant",
                not carried,
                f"{tenant_setting} is still {row[0]!r}" if carried and row else "",
            )
            leaking = [t for t in tables if await _sees_any(app, t)]
            recorder.record(
                "connection",
                "a reused connection sees no rows",
                not leaking,
                f"rows visible in {', '.join(leaking)}" if leaking else "",
            )
    except psycopg.Error as exc:
        recorder.record("connection", "app role queries", False, one_line(exc))


@dataclass(frozen=True)
class _Column:
    name: str
    type: str
    needs_value: bool
    # A value a single-column CHECK names (`kind IN ('reserve', 'release')` gives `reserve`):
    # the generic filler would break such a check.
    allowed: str | None = None


async def _columns(conn: psycopg.AsyncConnection[Any], table: str) -> list[_Column]:
    cur = await conn.execute(
        """
        SELECT a.attname, COALESCE(base.typname, t.typname),
               a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '',
               (SELECT substring(pg_catalog.pg_get_constraintdef(c.oid) FROM '''([^'']*)''')
                  FROM pg_catalog.pg_constraint c
                 WHERE c.conrelid = a.attrelid AND c.contype = 'c' AND c.conkey = ARRAY[a.attnum]
                 ORDER BY c.conname
                 LIMIT 1)
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_catalog.pg_type base ON t.typtype = 'd' AND base.oid = t.typbasetype
        WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (f"{SCHEMA}.{table}",),
    )
    return [
        _Column(str(r[0]), str(r[1]), bool(r[2]), None if r[3] is None else str(r[3]))
        for r in await cur.fetchall()
    ]


class _CannotSynthesise(Exception):
    pass


def _row_statement(
    table: str, columns: Sequence[_Column], tenant_column: str, tenant: uuid.UUID
) -> tuple[sql.Composed, list[Any]]:
    names: list[str] = []
    values: list[Any] = []
    for column in columns:
        if column.name == tenant_column:
            names.append(column.name)
            values.append(tenant)
        elif column.needs_value and column.allowed is not None:
            names.append(column.name)
            values.append(column.allowed)
        elif column.needs_value:
            filler = _FILLERS.get(column.type)
            if filler is None:
                raise _CannotSynthesise(
                    f"no synthetic value for column {column.name} ({column.type})"
                )
            names.append(column.name)
            values.append(filler())
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(SCHEMA, table),
        sql.SQL(", ").join(sql.Identifier(n) for n in names),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
    )
    return statement, values


async def _write_checks(
    admin: psycopg.AsyncConnection[Any],
    app_role: str,
    tables: Sequence[str],
    tenant_setting: str,
    tenant_column: str,
    recorder: _Recorder,
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    try:
        async with admin.transaction():
            await _set_timeouts(admin)
            row = await (
                await admin.execute(
                    "SELECT rolsuper, pg_catalog.pg_has_role(current_user, %s, 'MEMBER')"
                    " FROM pg_catalog.pg_roles WHERE rolname = current_user",
                    (app_role,),
                )
            ).fetchone()
            superuser, member = (bool(row[0]), bool(row[1])) if row else (False, False)
            if not member:
                recorder.skip(
                    "connection",
                    "write proofs as the app role",
                    f"the admin may not SET ROLE {app_role} (a superuser admin, or one that is"
                    " a member of the app role, runs them)",
                )
                return
            if superuser:
                await admin.execute("SET LOCAL session_replication_role = replica")
            layouts = {t: await _columns(admin, t) for t in tables}
            await admin.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(app_role)))
            for table in tables:
                await _table_write_checks(
                    admin, table, layouts[table], tenant_setting, tenant_column, a, b, recorder
                )
            raise psycopg.Rollback()
    except psycopg.Error as exc:
        recorder.record("connection", "write proofs as the app role", False, one_line(exc))


async def _set_tenant(conn: psycopg.AsyncConnection[Any], setting: str, tenant: Any) -> None:
    value = "" if tenant is None else str(tenant)
    await conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (setting, value))


async def _table_write_checks(
    conn: psycopg.AsyncConnection[Any],
    table: str,
    columns: Sequence[_Column],
    setting: str,
    column: str,
    a: uuid.UUID,
    b: uuid.UUID,
    recorder: _Recorder,
) -> None:
    qualified = f"{SCHEMA}.{table}"
    if not any(c.name == column for c in columns):
        recorder.record(qualified, "has the tenant column", False, f"no column {column}")
        return
    try:
        rows = {t: _row_statement(table, columns, column, t) for t in (a, b)}
    except _CannotSynthesise as exc:
        recorder.skip(qualified, "synthetic rows", str(exc))
        return
    target = sql.Identifier(SCHEMA, table)
    tenant_col = sql.Identifier(column)
    async with conn.transaction():  # a savepoint: this table's rows go away with it
        for tenant, (statement, values) in rows.items():
            await _set_tenant(conn, setting, tenant)
            try:
                async with conn.transaction():
                    await conn.execute(statement, values)
            except psycopg.errors.InsufficientPrivilege as exc:
                recorder.record(qualified, "a tenant writes its own row", False, one_line(exc))
                return
            except psycopg.Error as exc:
                recorder.skip(qualified, "synthetic rows", f"cannot write one: {one_line(exc)}")
                return
        recorder.record(qualified, "a tenant writes its own row", True)

        counts = sql.SQL(
            "SELECT count(*) FILTER (WHERE {col} = %s), count(*) FILTER (WHERE {col} <> %s"
            " OR {col} IS NULL) FROM {table}"
        ).format(col=tenant_col, table=target)
        for me in (a, b):
            await _set_tenant(conn, setting, me)
            row = await (await conn.execute(counts, (me, me))).fetchone()
            own, others = (int(row[0]), int(row[1])) if row else (0, 0)
            who = "A" if me == a else "B"
            recorder.record(qualified, f"tenant {who} sees its own row", own >= 1)
            recorder.record(
                qualified,
                f"tenant {who} sees no other tenant's rows",
                others == 0,
                f"{others} rows of other tenants visible" if others else "",
            )

        await _set_tenant(conn, setting, a)
        statement, values = _row_statement(table, columns, column, b)
        await _expect_rls_rejection(
            conn, recorder, qualified, "tenant A cannot insert a row for B", statement, values
        )
        cur = await conn.execute(
            sql.SQL("UPDATE {table} SET {col} = {col} WHERE {col} = %s").format(
                table=target, col=tenant_col
            ),
            (b,),
        )
        recorder.record(
            qualified,
            "tenant A cannot update B's rows",
            cur.rowcount == 0,
            f"{cur.rowcount} rows of B updated" if cur.rowcount else "",
        )
        await _expect_rls_rejection(
            conn,
            recorder,
            qualified,
            "tenant A cannot move its row to B",
            sql.SQL("UPDATE {table} SET {col} = %s WHERE {col} = %s").format(
                table=target, col=tenant_col
            ),
            [b, a],
        )
        await _set_tenant(conn, setting, None)
        seen = await _sees_any(conn, table)
        recorder.record(
            qualified,
            "no tenant (after one ended) sees no rows",
            not seen,
            "rows are visible with an empty tenant" if seen else "",
        )
        raise psycopg.Rollback()


async def _expect_rls_rejection(
    conn: psycopg.AsyncConnection[Any],
    recorder: _Recorder,
    table: str,
    name: str,
    statement: sql.Composed,
    values: Sequence[Any],
) -> None:
    try:
        async with conn.transaction():
            await conn.execute(statement, values)
    except psycopg.errors.InsufficientPrivilege:
        recorder.record(table, name, True)
        return
    except psycopg.Error as exc:
        recorder.record(table, name, False, f"failed for another reason: {one_line(exc)}")
        return
    recorder.record(table, name, False, "the database accepted it")
