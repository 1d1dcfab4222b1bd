"""The database and the app role, as the admin: created when missing, kept least-privileged.

The app role is `LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION`, owns
nothing, is a member of no role, and may CONNECT to its database; its table privileges are part
of the RLS plan (`reference_service.db.rls`). What adbm created carries a comment naming the
BackendService, so deletion drops only what adbm made, never a database or role it found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

ROLE_ATTRIBUTES = sql.SQL("LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION")

Changed = Callable[[str], None]


def marker(owner: str) -> str:
    """The comment put on what adbm creates for the BackendService `owner` (`namespace/name`)."""
    return f"created by adbm for BackendService {owner}"


async def _scalar(
    conn: psycopg.AsyncConnection[Any], query: sql.SQL | sql.Composed, *params: Any
) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return None if row is None else row[0]


async def ensure_database(
    conn: psycopg.AsyncConnection[Any], name: str, owner: str, changed: Changed
) -> bool:
    """Create database `name` if it does not exist (on a maintenance-database connection);
    whether it was created."""
    query = sql.SQL("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s")
    if await _scalar(conn, query, name):
        return False
    database = sql.Identifier(name)
    try:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(database))
    except psycopg.errors.DuplicateDatabase:
        return False  # another provisioner created it in between: theirs, and marked by them
    await conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(database, sql.Literal(marker(owner)))
    )
    changed(f"created database {name}")
    return True


def _verifier(conn: psycopg.AsyncConnection[Any], role: str, password: str) -> sql.Literal:
    # Hashed on the client (libpq's PQencryptPasswordConn), so the password never reaches the
    # server in clear, where statement logging could record it.
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    return sql.Literal(verifier.decode())


async def ensure_role(
    conn: psycopg.AsyncConnection[Any],
    role: str,
    password: str,
    owner: str,
    changed: Changed,
    *,
    reset_password: bool = False,
) -> bool:
    """Create the app role with `password`, or reset its attributes if they drifted; whether
    it was created.

    An existing role's password is set again only with `reset_password` (the caller found it
    cannot log in with the one in its Secret): reading the stored verifier needs a superuser.
    """
    name = sql.Identifier(role)
    cur = await conn.execute(
        "SELECT rolcanlogin AND NOT rolsuper AND NOT rolbypassrls AND NOT rolcreatedb"
        " AND NOT rolcreaterole AND NOT rolreplication"
        " FROM pg_catalog.pg_roles WHERE rolname = %s",
        (role,),
    )
    row = await cur.fetchone()
    if row is None:
        statement = sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(
            name, ROLE_ATTRIBUTES, _verifier(conn, role, password)
        )
        try:
            await conn.execute(statement)
        except psycopg.errors.DuplicateObject:
            pass  # created concurrently; fall through to checking its attributes
        else:
            await conn.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(name, sql.Literal(marker(owner)))
            )
            changed(f"created role {role}")
            return True
        row = (False,)
    if not row[0]:
        await conn.execute(sql.SQL("ALTER ROLE {} {}").format(name, ROLE_ATTRIBUTES))
        changed(f"reset the attributes of role {role} to {ROLE_ATTRIBUTES.as_string()}")
    if reset_password:
        await conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(name, _verifier(conn, role, password))
        )
        changed(f"set the password of role {role} to the one in its Secret")
    return False


async def ensure_least_privilege(
    conn: psycopg.AsyncConnection[Any], role: str, database: str, changed: Changed
) -> None:
    """In the app database (as the admin): the role may connect, owns nothing, is in no role.

    Ownership bypasses privileges and (without FORCE) RLS, and membership inherits another
    role's, so both are taken away rather than only reported.
    """
    name = sql.Identifier(role)
    if not await _scalar(
        conn, sql.SQL("SELECT pg_catalog.has_database_privilege(%s, %s, 'CONNECT')"), role, database
    ):
        await conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), name)
        )
        changed(f"granted CONNECT on database {database} to {role}")
    owned = await owned_objects(conn, role)
    if owned:
        await conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(name))
        changed(f"took ownership of {', '.join(owned)} from {role}")
    cur = await conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(m.roleid) FROM pg_catalog.pg_auth_members m"
        " WHERE m.member = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s) ORDER BY 1",
        (role,),
    )
    for (group,) in await cur.fetchall():
        await conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), name))
        changed(f"revoked membership of {role} in {group}")


async def owned_objects(conn: psycopg.AsyncConnection[Any], role: str) -> list[str]:
    """Objects `role` owns in the connected database (and databases it owns), by name."""
    cur = await conn.execute(
        """
        WITH r AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s)
        SELECT 'table ' || c.oid::regclass::text FROM pg_catalog.pg_class c, r
            WHERE c.relowner = r.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        UNION ALL
        SELECT 'schema ' || n.nspname FROM pg_catalog.pg_namespace n, r WHERE n.nspowner = r.oid
        UNION ALL
        SELECT 'function ' || p.oid::regprocedure::text FROM pg_catalog.pg_proc p, r
            WHERE p.proowner = r.oid
        UNION ALL
        SELECT 'database ' || d.datname FROM pg_catalog.pg_database d, r WHERE d.datdba = r.oid
        ORDER BY 1
        """,
        (role,),
    )
    return [str(row[0]) for row in await cur.fetchall()]


async def created_by_adbm(
    conn: psycopg.AsyncConnection[Any], kind: str, name: str, owner: str
) -> bool:
    """Whether the database or role `name` carries adbm's marker for `owner`."""
    if kind == "database":
        query = sql.SQL(
            "SELECT pg_catalog.shobj_description(oid, 'pg_database')"
            " FROM pg_catalog.pg_database WHERE datname = %s"
        )
    else:
        query = sql.SQL(
            "SELECT pg_catalog.shobj_description(oid, 'pg_authid')"
            " FROM pg_catalog.pg_roles WHERE rolname = %s"
        )
    return bool(await _scalar(conn, query, name) == marker(owner))
