"""Whether the role the service connects as is bound by row-level security.

RLS is the tenant isolation boundary, and Postgres silently exempts some roles from it: a
superuser and a role with BYPASSRLS skip every policy, and a table's owner (or a member of the
owner role) can switch its policies off. A service connected as such a role would answer one
tenant's key with another tenant's rows and nothing would look wrong, so the service checks its
own role: `adbm-service serve` refuses to start, the pool refuses to hand out a connection, and
`/ready` reports not-ready when the check fails.

The check runs as the role itself, in one round trip, from catalogs every role may read
(`pg_roles`, `pg_class`), so it needs no admin credentials. Unlike `rls.verify` (the operator's
full audit, as the admin, with a canary) it is cheap enough for every readiness probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from reference_service.db.schema import SCHEMA, TENANT_SCOPED

_QUERY = sql.SQL(
    """
    SELECT r.rolname::text AS role, r.rolsuper AS superuser, r.rolbypassrls AS bypassrls,
           ARRAY(
               SELECT c.relname::text FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %(schema)s AND c.relname::text = ANY(%(tables)s)
                 AND c.relkind IN ('r', 'p')
                 AND pg_catalog.pg_has_role(r.oid, c.relowner, 'MEMBER')
               ORDER BY 1
           ) AS owned,
           ARRAY(
               SELECT c.relname::text FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %(schema)s AND c.relname::text = ANY(%(tables)s)
                 AND c.relkind IN ('r', 'p')
                 AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
               ORDER BY 1
           ) AS unprotected
    FROM pg_catalog.pg_roles r
    WHERE r.rolname = current_user
    """
)


class RoleNotIsolated(Exception):
    """The connected role is not bound by row-level security; `problems` says why.

    Its text is safe to show (role and table names only): `/ready` reports it."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def problems_of(row: dict[str, Any]) -> list[str]:
    """The problems one result row of the check describes (empty: the role is isolated)."""
    role = row["role"]
    if row["superuser"]:
        # A superuser bypasses every policy; what it owns adds nothing to that.
        return [f"database role {role} is a superuser, which bypasses row-level security"]
    problems: list[str] = []
    if row["bypassrls"]:
        problems.append(f"database role {role} has BYPASSRLS")
    problems += [
        f"database role {role} owns {SCHEMA}.{table} (or is a member of its owner),"
        " so it can switch the table's row-level security off"
        for table in row["owned"]
    ]
    problems += [
        f"{SCHEMA}.{table}: row-level security is not enabled and forced (run adbm-service migrate)"
        for table in row["unprotected"]
    ]
    return problems


async def isolation_problems(
    conn: psycopg.AsyncConnection[Any], tables: Sequence[str] = TENANT_SCOPED
) -> list[str]:
    """Why the role of `conn` is not bound by the tenant policies (empty: it is). One round
    trip; in autocommit mode it leaves no transaction open. Tables that do not exist yet are
    not reported: they hold no rows to leak."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_QUERY, {"schema": SCHEMA, "tables": list(tables)})
        row = await cur.fetchone()
    if row is None:  # only if the role was dropped since it logged in
        return ["the database role no longer exists"]
    return problems_of(row)


async def check_url(url: str, *, connect_timeout: int = 5) -> list[str]:
    """`isolation_problems` for a role given by its libpq URI, on a connection of its own.
    Raises psycopg.OperationalError when the database cannot be reached."""
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, connect_timeout=connect_timeout
    ) as conn:
        return await isolation_problems(conn)
