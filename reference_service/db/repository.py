"""Row helpers every domain module uses: audit fields, optimistic versions, soft delete, keyset
pages.

- `insert` generates the id (UUIDv7) and fills `created_by`/`updated_by`; the database fills the
  timestamps, `version = 1` and `is_deleted = false`.
- `update` and `soft_delete` are one statement each, guarded by `version = expected` and bumping
  it: of many writers holding the same version exactly one wins; the others get StaleVersion.
- Soft-deleted rows are invisible to `select_one`, `select_page`, `update` and `soft_delete`.
- `select_page` is keyset pagination on `(created_at, id)`; its cost does not grow with depth.

Tenant isolation is not done here: no statement names a tenant. Row-level security restricts
every statement to the tenant of the transaction (see `pool.Database.transaction`).

Table and column names are checked against `schema.TABLES` and composed with `psycopg.sql`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from reference_service.db.pool import Statement
from reference_service.db.schema import MANAGED_COLUMNS, SCHEMA, TABLES, TENANT_SCOPED
from reference_service.db.uuid7 import uuid7

Row = dict[str, Any]
Key = tuple[datetime, uuid.UUID]
"""Keyset position: the `(created_at, id)` of the last row of the previous page."""

MAX_PAGE_LIMIT = 1000


class NotFound(LookupError):
    """No live row with this id is visible: it never existed, was soft-deleted, or belongs to
    another tenant (RLS hides it, and nothing here can tell these cases apart)."""

    def __init__(self, table: str, id: uuid.UUID) -> None:
        super().__init__(f"{table} {id} not found")
        self.table = table
        self.id = id


class StaleVersion(Exception):
    """The row exists but its version is not the expected one: someone changed it first.

    `current_version` is the version now stored (None if it could not be read)."""

    def __init__(
        self, table: str, id: uuid.UUID, expected_version: int, current_version: int | None
    ) -> None:
        super().__init__(f"{table} {id} is at version {current_version}, not {expected_version}")
        self.table = table
        self.id = id
        self.expected_version = expected_version
        self.current_version = current_version


def _table(table: str) -> tuple[sql.Identifier, tuple[str, ...]]:
    try:
        columns = TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}") from None
    return sql.Identifier(SCHEMA, table), columns


def _check_columns(table: str, names: Mapping[str, Any], *, writable: bool) -> None:
    columns = TABLES[table]
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise ValueError(f"unknown columns of {table}: {', '.join(unknown)}")
    if writable:
        managed = [n for n in names if n in MANAGED_COLUMNS]
        if managed:
            raise ValueError(f"columns managed by the repository: {', '.join(managed)}")


def _select_list(columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, columns))


# The text of each read statement's shape, rendered once: composing and rendering it again on
# every read cost more than a tenth of a GET's CPU (`bench/RESULTS.md`). Its keys are the
# shapes (table, keyset or not, filtered columns), a few dozen in all; values stay parameters.
_RENDERED: dict[tuple[Any, ...], sql.SQL] = {}


def _rendered(shape: tuple[Any, ...], compose: Callable[[], sql.Composed]) -> sql.SQL:
    found = _RENDERED.get(shape)
    if found is None:
        # Identifiers here are the schema's own names (checked against TABLES), so their
        # quoting does not depend on a connection's encoding.
        found = _RENDERED[shape] = sql.SQL(compose().as_string())
    return found


def select_one(table: str, id: uuid.UUID) -> Statement:
    """The live row with this id (zero or one row)."""
    name, columns = _table(table)
    query = _rendered(
        ("one", table),
        lambda: sql.SQL("SELECT {columns} FROM {table} WHERE id = %s AND NOT is_deleted").format(
            columns=_select_list(columns), table=name
        ),
    )
    return Statement(query, (id,))


def select_page(
    table: str,
    *,
    after: Key | None,
    limit: int,
    filters: Mapping[str, Any] | None = None,
) -> Statement:
    """Up to `limit` live rows after the keyset position `after` (None: from the start), in
    (created_at, id) order; the next page starts after the last row's `(created_at, id)`.
    `filters` are equalities on columns (None matches NULL)."""
    name, columns = _table(table)
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_LIMIT}, not {limit}")
    filters = filters or {}
    _check_columns(table, filters, writable=False)
    conditions: list[sql.Composable] = [sql.SQL("NOT is_deleted")]
    params: list[Any] = []
    if after is not None:
        # A row comparison, which Postgres turns into one index range condition on
        # (tenant_id, created_at, id) below the RLS equality on tenant_id.
        conditions.append(sql.SQL("(created_at, id) > (%s, %s)"))
        params += [after[0], after[1]]
    for column, value in filters.items():
        if value is None:
            conditions.append(sql.SQL("{} IS NULL").format(sql.Identifier(column)))
        else:
            conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    params.append(limit)
    shape = ("page", table, after is not None, *((c, v is None) for c, v in filters.items()))
    query = _rendered(
        shape,
        lambda: sql.SQL(
            "SELECT {columns} FROM {table} WHERE {conditions} ORDER BY created_at, id LIMIT %s"
        ).format(
            columns=_select_list(columns),
            table=name,
            conditions=sql.SQL(" AND ").join(conditions),
        ),
    )
    return Statement(query, tuple(params))


async def _fetch_one(conn: AsyncConnection[Any], statement: Statement) -> Row | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement.query, statement.params)
        return await cur.fetchone()


async def insert(
    conn: AsyncConnection[Any], table: str, values: Mapping[str, Any], *, actor: str
) -> Row:
    """Insert a row and return it as stored. `values` may carry an `id` (a UUID the caller
    generated in advance); otherwise a UUIDv7 is generated. Tenant-scoped tables need
    `tenant_id` in `values`, and RLS rejects any tenant but the transaction's."""
    name, columns = _table(table)
    _check_columns(table, values, writable=True)
    if table in TENANT_SCOPED and values.get("tenant_id") is None:
        raise ValueError(f"inserting into {table} needs a tenant_id")
    row = {"id": uuid7(), **values, "created_by": actor, "updated_by": actor}
    statement = Statement(
        sql.SQL("INSERT INTO {table} ({names}) VALUES ({values}) RETURNING {columns}").format(
            table=name,
            names=sql.SQL(", ").join(map(sql.Identifier, row)),
            values=sql.SQL(", ").join(sql.Placeholder() * len(row)),
            columns=_select_list(columns),
        ),
        tuple(row.values()),
    )
    inserted = await _fetch_one(conn, statement)
    assert inserted is not None  # INSERT ... RETURNING of one row returns it or raises
    return inserted


async def get(conn: AsyncConnection[Any], table: str, id: uuid.UUID) -> Row:
    """The live row with this id, or NotFound, inside the caller's transaction (a read that
    must see the transaction's own writes, or lock nothing but read consistently with them)."""
    row = await _fetch_one(conn, select_one(table, id))
    if row is None:
        raise NotFound(table, id)
    return row


async def update(
    conn: AsyncConnection[Any],
    table: str,
    id: uuid.UUID,
    *,
    expected_version: int | None,
    changes: Mapping[str, Any],
    actor: str,
) -> Row:
    """Apply `changes` if the row is still at `expected_version` (any version: None, for
    `If-Match: *`); returns the new row (its version bumped by one). NotFound if there is no
    live row, StaleVersion if the version moved.

    One statement: under concurrent writers, Postgres re-checks `version = expected` on the
    newest row version after waiting for the lock, so exactly one of them matches.
    """
    _check_columns(table, changes, writable=True)
    immutable = [c for c in ("id", "tenant_id") if c in changes]
    if immutable:
        raise ValueError(f"columns that never change: {', '.join(immutable)}")
    assignments = [sql.SQL("{} = %s").format(sql.Identifier(column)) for column in changes]
    return await _guarded_update(
        conn,
        table,
        id,
        assignments=assignments,
        params=list(changes.values()),
        expected_version=expected_version,
        actor=actor,
    )


async def soft_delete(
    conn: AsyncConnection[Any],
    table: str,
    id: uuid.UUID,
    *,
    expected_version: int | None,
    actor: str,
) -> Row:
    """Mark the row deleted (bumping its version) and return it; it disappears from every
    read. `expected_version=None` deletes whatever the version (an unconditional DELETE)."""
    return await _guarded_update(
        conn,
        table,
        id,
        assignments=[sql.SQL("is_deleted = true")],
        params=[],
        expected_version=expected_version,
        actor=actor,
    )


async def _guarded_update(
    conn: AsyncConnection[Any],
    table: str,
    id: uuid.UUID,
    *,
    assignments: Sequence[sql.Composable],
    params: Sequence[Any],
    expected_version: int | None,
    actor: str,
) -> Row:
    name, columns = _table(table)
    settings = [
        *assignments,
        sql.SQL("version = version + 1"),
        sql.SQL("updated_at = now()"),
        sql.SQL("updated_by = %s"),
    ]
    conditions = [sql.SQL("id = %s"), sql.SQL("NOT is_deleted")]
    values = [*params, actor, id]
    if expected_version is not None:
        conditions.append(sql.SQL("version = %s"))
        values.append(expected_version)
    statement = Statement(
        sql.SQL("UPDATE {table} SET {assignments} WHERE {conditions} RETURNING {columns}").format(
            table=name,
            assignments=sql.SQL(", ").join(settings),
            conditions=sql.SQL(" AND ").join(conditions),
            columns=_select_list(columns),
        ),
        tuple(values),
    )
    row = await _fetch_one(conn, statement)
    if row is not None:
        return row
    # Only on failure: one more read to tell "gone" from "changed by someone else".
    current = await _fetch_one(
        conn,
        Statement(
            sql.SQL("SELECT version FROM {} WHERE id = %s AND NOT is_deleted").format(name),
            (id,),
        ),
    )
    if current is None or expected_version is None:
        raise NotFound(table, id)
    raise StaleVersion(table, id, expected_version, current["version"])
