"""Schema migrations, the app role and its grants, and row-level security, as the admin.

Migrations are the `NNNN_name.sql` files next to this module, applied in name order, each once
(recorded in `schema_migrations`) and each in its own transaction. Every transaction first takes
a transaction-scoped advisory lock, so concurrent migrators (several replicas starting, or the
operator and a person) run one after the other and the second finds the work done.

Then the app role is created if missing and given exactly what it needs: USAGE on the schema,
SELECT/INSERT/UPDATE on the tenant-scoped tables (never DELETE: rows are soft-deleted; never
TRUNCATE: it ignores RLS) and EXECUTE on `adbm_authenticate`. It owns nothing. Finally RLS is
applied to the configured tables.

Everything is compared with the catalog before it is changed, so a second run applies nothing
and changes nothing (no catalog row is rewritten, no table lock is taken for nothing).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from reference_service.db import rls
from reference_service.db.schema import (
    APP_PRIVILEGES,
    DEFINER_FUNCTIONS,
    SCHEMA,
    TENANT_SCOPED,
    check_identifier,
)

log = logging.getLogger(__name__)

DEFAULT_RLS_TABLES: tuple[str, ...] = rls.DEFAULT_TABLES

MIGRATION_LOCK = 0x6164_626D_6D69_6772  # "adbmmigr": one key for every migrator of a database
"""Key of the `pg_advisory_xact_lock` serialising migrators (advisory locks are per database)."""

_ROLE_ATTRIBUTES = sql.SQL("LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION")


@dataclass(frozen=True)
class Migration:
    version: str
    """File name without `.sql`, e.g. `0001_core`; versions sort in application order."""
    script: bytes


def migrations() -> list[Migration]:
    """The migration files shipped in the package, in order."""
    folder = resources.files("reference_service.db.migrations")
    found = [
        Migration(version=entry.name.removesuffix(".sql"), script=entry.read_bytes())
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".sql")
    ]
    return sorted(found, key=lambda m: m.version)


MAINTENANCE_DATABASE = "postgres"
"""The database every PostgreSQL server has, to connect to while the target does not exist."""


async def create_database(admin_url: str) -> bool:
    """Create the database `admin_url` names, owned by its user, unless it exists; True when
    it was created. For a developer machine: in production the operator creates the database.
    """
    name = conninfo_to_dict(admin_url).get("dbname")
    if not name:
        raise ValueError("the admin URL names no database to create")
    maintenance = make_conninfo(admin_url, dbname=MAINTENANCE_DATABASE)
    async with await psycopg.AsyncConnection.connect(maintenance, autocommit=True) as conn:
        exists = await _scalar(
            conn, sql.SQL("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s"), (name,)
        )
        if exists:
            return False
        try:
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
        except psycopg.errors.DuplicateDatabase:  # another migrator was first
            return False
    log.info("migrate: created database %s", name)
    return True


class AppRoleIsAdmin(ValueError):
    """The app role would be the migrating admin, the owner of every table."""


async def migrate(
    admin_url: str,
    *,
    app_role: str,
    app_password: str | None = None,
    tenant_setting: str = rls.DEFAULT_TENANT_SETTING,
    tenant_column: str = rls.DEFAULT_TENANT_COLUMN,
    rls_tables: Sequence[str] = DEFAULT_RLS_TABLES,
    on_change: Callable[[str], None] | None = None,
) -> list[str]:
    """Apply pending migrations, provision the app role and apply RLS; returns the versions
    applied by this call (empty when the schema was up to date).

    `on_change` is called with a description of every other change made (role created, grant
    added, RLS statement run); it is never called when the database was already as planned.
    """
    check_identifier(app_role, "app role")
    changes: list[str] = []

    def changed(what: str) -> None:
        log.info("migrate: %s", what)
        changes.append(what)
        if on_change is not None:
            on_change(what)

    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        current_user = await _scalar(conn, sql.SQL("SELECT current_user"))
        if current_user == app_role:
            raise AppRoleIsAdmin(
                f"the app role {app_role} must not be the migrating admin (the admin URL's user):"
                " it would own every table and could switch row-level security off;"
                " give the service a role of its own"
            )
        async with conn.transaction():
            await _lock(conn)
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " version text PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(SCHEMA, "schema_migrations"))
            )
        for migration in migrations():
            async with conn.transaction():
                await _lock(conn)
                cur = await conn.execute(
                    sql.SQL("SELECT 1 FROM {} WHERE version = %s").format(
                        sql.Identifier(SCHEMA, "schema_migrations")
                    ),
                    (migration.version,),
                )
                if await cur.fetchone() is not None:
                    continue
                # Several statements in one string: sent with the simple query protocol, which
                # is what psycopg uses for a query without parameters.
                await conn.execute(migration.script)
                await conn.execute(
                    sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(
                        sql.Identifier(SCHEMA, "schema_migrations")
                    ),
                    (migration.version,),
                )
            log.info("migrate: applied %s", migration.version)
            applied.append(migration.version)
        async with conn.transaction():
            await _lock(conn)
            await _ensure_role(conn, app_role, app_password, changed)
            await _ensure_grants(conn, app_role, changed)
            for statement in await rls.apply(conn, rls_tables, tenant_setting, tenant_column):
                changed(statement)
    return applied


async def _lock(conn: psycopg.AsyncConnection[Any]) -> None:
    # Pinning search_path keeps unqualified names in the migration files in the schema even
    # when the admin has a schema of its own name ("$user" comes first by default).
    await conn.execute(
        "SELECT pg_catalog.pg_advisory_xact_lock(%s),"
        " pg_catalog.set_config('search_path', %s, true)",
        (MIGRATION_LOCK, SCHEMA),
    )


async def _scalar(
    conn: psycopg.AsyncConnection[Any], query: sql.SQL | sql.Composed, params: Sequence[Any] = ()
) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return None if row is None else row[0]


async def _ensure_role(
    conn: psycopg.AsyncConnection[Any],
    role: str,
    password: str | None,
    changed: Callable[[str], None],
) -> None:
    cur = await conn.execute(
        "SELECT rolcanlogin AND NOT rolsuper AND NOT rolbypassrls AND NOT rolcreatedb"
        " AND NOT rolcreaterole AND NOT rolreplication"
        " FROM pg_catalog.pg_roles WHERE rolname = %s",
        (role,),
    )
    row = await cur.fetchone()
    name = sql.Identifier(role)
    if row is None:
        statement = sql.SQL("CREATE ROLE {} ").format(name) + _ROLE_ATTRIBUTES
        if password is not None:
            statement += sql.SQL(" PASSWORD {}").format(_verifier(conn, role, password))
        await conn.execute(statement)
        changed(f"created role {role}")
        return
    if not row[0]:
        await conn.execute(sql.SQL("ALTER ROLE {} ").format(name) + _ROLE_ATTRIBUTES)
        changed(f"reset the attributes of role {role}")
    if password is not None and not await _password_matches(conn, role, password):
        await conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(name, _verifier(conn, role, password))
        )
        changed(f"set the password of role {role}")


def _verifier(conn: psycopg.AsyncConnection[Any], role: str, password: str) -> sql.Literal:
    # Hash on the client (as libpq's PQencryptPasswordConn does for psql's \password) so the
    # password never reaches the server in clear, where statement logging could record it.
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    return sql.Literal(verifier.decode())


async def _password_matches(conn: psycopg.AsyncConnection[Any], role: str, password: str) -> bool:
    """Whether `role` already has `password` (so it is not rewritten on every run).

    Reading the stored verifier needs a superuser; other admins cannot tell, and set it anyway.
    """
    if not await _scalar(
        conn, sql.SQL("SELECT pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT')")
    ):
        return False
    stored = await _scalar(
        conn,
        sql.SQL("SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = %s"),
        (role,),
    )
    return isinstance(stored, str) and scram_matches(stored, password)


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a stored `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` verifier
    was made from `password` (RFC 5802 / RFC 7677). ASCII passwords only: others need SASLprep,
    and are reported as not matching, which only costs a rewrite."""
    try:
        method, params, keys = verifier.split("$")
        iterations, salt = params.split(":")
        stored_key, _server_key = keys.split(":")
        if method != "SCRAM-SHA-256" or not password.isascii():
            return False
        salted = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(salt), int(iterations)
        )
    except ValueError:
        return False
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored_key))


async def _ensure_grants(
    conn: psycopg.AsyncConnection[Any], role: str, changed: Callable[[str], None]
) -> None:
    name = sql.Identifier(role)
    # Explicit grants only (aclexplode of the ACL), so PUBLIC's default USAGE on `public` does
    # not hide a missing grant that would matter once PUBLIC's is revoked.
    has_usage = await _scalar(
        conn,
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n,"
            " aclexplode(n.nspacl) a"
            " WHERE n.nspname = %s AND a.grantee = %s::regrole AND a.privilege_type = 'USAGE')"
        ),
        (SCHEMA, role),
    )
    if not has_usage:
        await conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA), name)
        )
        changed(f"granted USAGE on schema {SCHEMA} to {role}")

    wanted = set(APP_PRIVILEGES)
    for table in TENANT_SCOPED:
        qualified = f"{SCHEMA}.{table}"
        cur = await conn.execute(
            "SELECT a.privilege_type FROM pg_catalog.pg_class c, aclexplode(c.relacl) a"
            " WHERE c.oid = %s::regclass AND a.grantee = %s::regrole",
            (qualified, role),
        )
        held = {str(r[0]) for r in await cur.fetchall()}
        target = sql.Identifier(SCHEMA, table)
        if missing := sorted(wanted - held):
            await conn.execute(
                sql.SQL("GRANT {} ON TABLE {} TO {}").format(_privileges(missing), target, name)
            )
            changed(f"granted {', '.join(missing)} on {qualified} to {role}")
        if extra := sorted(held - wanted):
            await conn.execute(
                sql.SQL("REVOKE {} ON TABLE {} FROM {}").format(_privileges(extra), target, name)
            )
            changed(f"revoked {', '.join(extra)} on {qualified} from {role}")

    for signature in DEFINER_FUNCTIONS:
        function = f"{SCHEMA}.{signature}"
        if not await _scalar(
            conn,
            sql.SQL("SELECT pg_catalog.has_function_privilege(%s, %s, 'EXECUTE')"),
            (role, function),
        ):
            # The signature is a constant of schema.DEFINER_FUNCTIONS: a plain name and a list
            # of type keywords, never input.
            function_name, arguments = signature.removesuffix(")").split("(")
            await conn.execute(
                sql.SQL("GRANT EXECUTE ON FUNCTION {}({}) TO {}").format(
                    sql.Identifier(SCHEMA, check_identifier(function_name, "function")),
                    sql.SQL(arguments),
                    name,
                )
            )
            changed(f"granted EXECUTE on {function} to {role}")


_KNOWN_PRIVILEGES = {
    "SELECT": sql.SQL("SELECT"),
    "INSERT": sql.SQL("INSERT"),
    "UPDATE": sql.SQL("UPDATE"),
    "DELETE": sql.SQL("DELETE"),
    "TRUNCATE": sql.SQL("TRUNCATE"),
    "REFERENCES": sql.SQL("REFERENCES"),
    "TRIGGER": sql.SQL("TRIGGER"),
    "MAINTAIN": sql.SQL("MAINTAIN"),
}


def _privileges(names: Sequence[str]) -> sql.Composed:
    """A privilege list. Privileges are keywords, not identifiers, so only known ones are
    accepted (they come from the catalog, but are composed into a statement)."""
    unknown = [n for n in names if n not in _KNOWN_PRIVILEGES]
    if unknown:
        raise ValueError(f"unknown table privileges {unknown}")
    return sql.SQL(", ").join(_KNOWN_PRIVILEGES[n] for n in names)
