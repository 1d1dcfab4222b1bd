"""Tenant isolation by PostgreSQL row-level security: plan, apply and verify.

Each governed table gets RLS enabled and FORCEd (so even the table owner is subject to it) and one
permissive policy, `tenant_isolation`, for every command and every role:

    USING / WITH CHECK
        (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))

- The scalar subquery makes Postgres evaluate the setting once per statement (an InitPlan) and
  compare the column with a constant, so the predicate can use the `(tenant_id, ...)` indexes.
- `current_setting(..., true)` yields NULL when the setting was never defined in the session, and
  `''` once a transaction-local value has ended; NULLIF maps both to NULL, which matches no row.
  Without it, a pooled connection reused without a tenant would fail with a uuid cast error
  instead of seeing nothing.
- WITH CHECK rejects writing a row for any other tenant.

`plan_changes` reads the catalogs (RLS flags, policies, and optionally the app role's table
privileges) and returns the pending changes with a summary; `apply` runs them; `converge` plans,
applies and re-plans in one transaction under the migration lock; `verify` checks the result
and runs a read-only canary. Policies adbm did not create are reported, never dropped.

This module is shared with the operator, so it knows nothing of HTTP or of the service's settings.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from reference_service.db.schema import (
    APP_PRIVILEGES,
    SCHEMA,
    TENANT_SCOPED,
    check_identifier,
    check_setting,
)

log = logging.getLogger(__name__)

POLICY = "tenant_isolation"
DEFAULT_TABLES: tuple[str, ...] = TENANT_SCOPED
DEFAULT_TENANT_SETTING = "app.tenant_id"
DEFAULT_TENANT_COLUMN = "tenant_id"

_PROBE_TABLE = "adbm_rls_probe"


def policy_expression(tenant_setting: str, tenant_column: str) -> sql.Composed:
    """The USING and WITH CHECK expression of the tenant policy."""
    return sql.SQL(
        "{column} = (SELECT NULLIF(pg_catalog.current_setting({setting}, true), '')::uuid)"
    ).format(
        column=sql.Identifier(check_identifier(tenant_column, "tenant column")),
        setting=sql.Literal(check_setting(tenant_setting)),
    )


@dataclass(frozen=True)
class TablePlan:
    """The statements that bring one table under the tenant policy."""

    table: str
    enable: sql.Composed
    force: sql.Composed
    drop_policy: sql.Composed
    create_policy: sql.Composed


def _table_plan(table: str, tenant_setting: str, tenant_column: str) -> TablePlan:
    name = sql.Identifier(SCHEMA, check_identifier(table, "table"))
    expression = policy_expression(tenant_setting, tenant_column)
    return TablePlan(
        table=table,
        enable=sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(name),
        force=sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(name),
        drop_policy=sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(POLICY), name),
        create_policy=sql.SQL(
            "CREATE POLICY {policy} ON {table} AS PERMISSIVE FOR ALL TO PUBLIC"
            " USING ({expression}) WITH CHECK ({expression})"
        ).format(policy=sql.Identifier(POLICY), table=name, expression=expression),
    )


def plan(
    tables: Sequence[str] = DEFAULT_TABLES,
    tenant_setting: str = DEFAULT_TENANT_SETTING,
    tenant_column: str = DEFAULT_TENANT_COLUMN,
) -> list[sql.Composed]:
    """Every statement that puts `tables` under the tenant policy, from scratch.

    Running them all again is harmless (the policy is dropped and recreated), but takes an
    ACCESS EXCLUSIVE lock on each table; `apply` runs only the statements that are needed.
    """
    statements: list[sql.Composed] = []
    for table in _unique(tables):
        p = _table_plan(table, tenant_setting, tenant_column)
        statements += [p.enable, p.force, p.drop_policy, p.create_policy]
    return statements


@dataclass(frozen=True)
class Policy:
    name: str
    command: str
    permissive: bool
    roles: list[str]
    using: str | None
    with_check: str | None


@dataclass(frozen=True)
class TableState:
    """What the catalog says about one table's row-level security."""

    table: str
    exists: bool
    enabled: bool = False
    forced: bool = False
    owner: str | None = None
    policies: tuple[Policy, ...] = ()

    def policy(self, name: str) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)


async def inspect(conn: psycopg.AsyncConnection[Any], tables: Sequence[str]) -> list[TableState]:
    """The RLS state of `tables` in the migration schema."""
    states: list[TableState] = []
    async with conn.cursor(row_factory=dict_row) as cur:
        for table in _unique(tables):
            await cur.execute(
                """
                SELECT c.oid, c.relrowsecurity, c.relforcerowsecurity,
                       pg_catalog.pg_get_userbyid(c.relowner) AS owner
                FROM pg_catalog.pg_class c
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
                """,
                (SCHEMA, check_identifier(table, "table")),
            )
            row = await cur.fetchone()
            if row is None:
                states.append(TableState(table=table, exists=False))
                continue
            states.append(
                TableState(
                    table=table,
                    exists=True,
                    enabled=row["relrowsecurity"],
                    forced=row["relforcerowsecurity"],
                    owner=row["owner"],
                    policies=tuple(await _policies(cur, row["oid"])),
                )
            )
    return states


async def _policies(cur: psycopg.AsyncCursor[dict[str, Any]], relid: int) -> list[Policy]:
    await cur.execute(
        """
        SELECT p.polname, p.polcmd::text AS command, p.polpermissive,
               ARRAY(
                   SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(r) END
                   FROM unnest(p.polroles) AS r ORDER BY 1
               ) AS roles,
               pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS using_expr,
               pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr
        FROM pg_catalog.pg_policy p
        WHERE p.polrelid = %s
        ORDER BY p.polname
        """,
        (relid,),
    )
    return [
        Policy(
            name=r["polname"],
            command=r["command"],
            permissive=r["polpermissive"],
            roles=list(r["roles"]),
            using=r["using_expr"],
            with_check=r["check_expr"],
        )
        for r in await cur.fetchall()
    ]


async def expected_policy(
    conn: psycopg.AsyncConnection[Any], tenant_setting: str, tenant_column: str
) -> Policy:
    """The tenant policy as the catalog would show it.

    Postgres stores a policy as a parse tree and shows it re-printed (casts and parentheses
    added, formatting version-dependent), so the expected text is obtained from Postgres itself:
    the policy is created on a temporary table with the same column, read back, and rolled back.
    Nothing outside the session is locked or changed.
    """
    probe = sql.Identifier(_PROBE_TABLE)
    statements = [
        sql.SQL("CREATE TEMPORARY TABLE {} ({} uuid)").format(
            probe, sql.Identifier(check_identifier(tenant_column, "tenant column"))
        ),
        sql.SQL(
            "CREATE POLICY {policy} ON pg_temp.{table} AS PERMISSIVE FOR ALL TO PUBLIC"
            " USING ({expression}) WITH CHECK ({expression})"
        ).format(
            policy=sql.Identifier(POLICY),
            table=probe,
            expression=policy_expression(tenant_setting, tenant_column),
        ),
    ]
    found: list[Policy] = []
    async with conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cur:
            for statement in statements:
                await cur.execute(statement)
            await cur.execute(
                "SELECT c.oid FROM pg_catalog.pg_class c"
                " WHERE c.relname = %s AND c.relnamespace = pg_catalog.pg_my_temp_schema()",
                (_PROBE_TABLE,),
            )
            row = await cur.fetchone()
            assert row is not None
            found = await _policies(cur, row["oid"])
        # Undo the probe (a savepoint when called inside a transaction); psycopg swallows it.
        raise psycopg.Rollback()
    (policy,) = found
    return policy


def _matches(actual: Policy | None, expected: Policy) -> bool:
    return actual is not None and (
        actual.command,
        actual.permissive,
        actual.roles,
        actual.using,
        actual.with_check,
    ) == (
        expected.command,
        expected.permissive,
        expected.roles,
        expected.using,
        expected.with_check,
    )


@dataclass(frozen=True)
class Change:
    """One statement the plan needs, and what it does in words (for status and Events)."""

    table: str
    description: str
    statement: sql.Composed


@dataclass(frozen=True)
class Plan:
    """The difference between the catalogs and the tenant policy, read before anything changes.

    `unmanaged_policies` are other policies on the governed tables: adbm did not create them, so
    they are reported (`verify` says whether one widens what the app role sees), never dropped.
    """

    changes: tuple[Change, ...] = ()
    missing_tables: tuple[str, ...] = ()
    unmanaged_policies: tuple[str, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return not self.changes and not self.missing_tables

    def summary(self) -> str:
        """One line of pending changes, e.g. `public.accounts: force row-level security`."""
        parts = [f"{SCHEMA}.{t}: table does not exist" for t in self.missing_tables]
        parts += [f"{SCHEMA}.{c.table}: {c.description}" for c in self.changes]
        return "; ".join(parts) if parts else "no pending changes"


_ALLOWED_PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}
)


async def plan_changes(
    conn: psycopg.AsyncConnection[Any],
    tables: Sequence[str] = DEFAULT_TABLES,
    tenant_setting: str = DEFAULT_TENANT_SETTING,
    tenant_column: str = DEFAULT_TENANT_COLUMN,
    *,
    app_role: str | None = None,
    app_privileges: Sequence[str] = APP_PRIVILEGES,
) -> Plan:
    """What `apply` would change, from the catalogs only (`pg_class`, `pg_policy`, the ACLs).

    With `app_role`, the plan also makes the app role's table privileges on the governed tables
    exactly `app_privileges`, and takes every privilege PUBLIC holds on them (a grant to PUBLIC
    is a grant to the app role): DELETE would defeat soft deletion, TRUNCATE ignores RLS.
    """
    if app_role is not None:
        check_identifier(app_role, "app role")
    wanted = set(app_privileges)
    if not wanted <= _ALLOWED_PRIVILEGES:
        raise ValueError(f"unknown table privileges {sorted(wanted - _ALLOWED_PRIVILEGES)}")
    expected = await expected_policy(conn, tenant_setting, tenant_column)
    changes: list[Change] = []
    missing: list[str] = []
    unmanaged: list[str] = []
    for state in await inspect(conn, tables):
        if not state.exists:
            missing.append(state.table)
            continue
        p = _table_plan(state.table, tenant_setting, tenant_column)
        if not state.enabled:
            changes.append(Change(state.table, "enable row-level security", p.enable))
        if not state.forced:
            changes.append(Change(state.table, "force row-level security", p.force))
        current = state.policy(POLICY)
        if current is None:
            changes.append(Change(state.table, f"create policy {POLICY}", p.create_policy))
        elif not _matches(current, expected):
            changes.append(Change(state.table, f"drop policy {POLICY}", p.drop_policy))
            changes.append(Change(state.table, f"recreate policy {POLICY}", p.create_policy))
        unmanaged += [
            f"{SCHEMA}.{state.table}: policy {other.name} (not created by adbm, left in place)"
            for other in state.policies
            if other.name != POLICY
        ]
        if app_role is not None:
            changes += await _privilege_changes(conn, state.table, app_role, wanted)
    return Plan(tuple(changes), tuple(missing), tuple(unmanaged))


async def _privilege_changes(
    conn: psycopg.AsyncConnection[Any], table: str, app_role: str, wanted: set[str]
) -> list[Change]:
    # Explicit ACL entries (aclexplode), grantee 0 being PUBLIC.
    cur = await conn.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee) END,"
        " a.privilege_type"
        " FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a"
        " WHERE c.oid = %s::regclass"
        " AND (a.grantee = 0 OR a.grantee = (SELECT oid FROM pg_catalog.pg_roles"
        " WHERE rolname = %s))",
        (f"{SCHEMA}.{table}", app_role),
    )
    rows = await cur.fetchall()
    held = {str(r[1]) for r in rows if r[0] is not None}
    public = {str(r[1]) for r in rows if r[0] is None}
    target = sql.Identifier(SCHEMA, table)
    role = sql.Identifier(app_role)
    changes: list[Change] = []
    if missing := sorted(wanted - held):
        changes.append(
            Change(
                table,
                f"grant {', '.join(missing)} to {app_role}",
                sql.SQL("GRANT {} ON TABLE {} TO {}").format(_privileges(missing), target, role),
            )
        )
    if extra := sorted(held - wanted):
        changes.append(
            Change(
                table,
                f"revoke {', '.join(extra)} from {app_role}",
                sql.SQL("REVOKE {} ON TABLE {} FROM {}").format(_privileges(extra), target, role),
            )
        )
    if public:
        changes.append(
            Change(
                table,
                f"revoke {', '.join(sorted(public))} from PUBLIC",
                sql.SQL("REVOKE {} ON TABLE {} FROM PUBLIC").format(
                    _privileges(sorted(public)), target
                ),
            )
        )
    return changes


def _privileges(names: Sequence[str]) -> sql.Composed:
    # Privileges are keywords, not identifiers: only known ones are composed (checked above).
    unknown = [n for n in names if n not in _ALLOWED_PRIVILEGES]
    if unknown:
        raise ValueError(f"unknown table privileges {unknown}")
    return sql.SQL(", ").join(sql.SQL(n) for n in names)


async def execute(conn: psycopg.AsyncConnection[Any], plan: Plan) -> list[str]:
    """Run the plan's statements; returns their text. Refuses a plan with missing tables."""
    if plan.missing_tables:
        raise LookupError(f"table {SCHEMA}.{plan.missing_tables[0]} does not exist")
    executed: list[str] = []
    for change in plan.changes:
        await conn.execute(change.statement)
        text = change.statement.as_string(conn)
        log.info("row-level security: %s", text)
        executed.append(text)
    return executed


async def apply(
    conn: psycopg.AsyncConnection[Any],
    tables: Sequence[str] = DEFAULT_TABLES,
    tenant_setting: str = DEFAULT_TENANT_SETTING,
    tenant_column: str = DEFAULT_TENANT_COLUMN,
) -> list[str]:
    """Bring `tables` under the tenant policy; returns the statements it had to run.

    Only what differs from the plan is executed: ALTER TABLE and CREATE/DROP POLICY take an
    ACCESS EXCLUSIVE lock, and the operator re-applies on every reconcile, so an up-to-date
    database must not be locked (or have its catalog rewritten) for nothing. Run it in a
    transaction as the tables' owner or a superuser.
    """
    return await execute(conn, await plan_changes(conn, tables, tenant_setting, tenant_column))


LOCK = 0x6164_626D_6D69_6772
"""Advisory lock key of everything that changes a database's schema or policies: the same key
as `migrate.MIGRATION_LOCK`, so a converge never interleaves with a migration."""


@dataclass(frozen=True)
class Convergence:
    """One converge: the plan read first, what was run, and the plan re-read afterwards."""

    before: Plan
    executed: tuple[str, ...]
    after: Plan


async def converge(
    conn: psycopg.AsyncConnection[Any],
    tables: Sequence[str] = DEFAULT_TABLES,
    tenant_setting: str = DEFAULT_TENANT_SETTING,
    tenant_column: str = DEFAULT_TENANT_COLUMN,
    *,
    app_role: str | None = None,
    app_privileges: Sequence[str] = APP_PRIVILEGES,
) -> Convergence:
    """Plan, apply and re-plan in one transaction, under the migration lock.

    Concurrent convergers (two operator replicas, or the operator and a migration Job) queue on
    the lock, so the second plans after the first committed and finds nothing to do. With
    missing tables nothing is applied (the schema is not migrated yet). `after` must be up to
    date; if it is not, something the plan does not model interferes, and the caller reports it.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (LOCK,))

        async def read() -> Plan:
            return await plan_changes(
                conn,
                tables,
                tenant_setting,
                tenant_column,
                app_role=app_role,
                app_privileges=app_privileges,
            )

        before = await read()
        if before.missing_tables:
            return Convergence(before, (), before)
        executed = await execute(conn, before)
        after = await read() if executed else before
    return Convergence(before, tuple(executed), after)


async def verify(
    admin_url: str,
    app_url: str,
    tables: Sequence[str] = DEFAULT_TABLES,
    tenant_setting: str = DEFAULT_TENANT_SETTING,
    tenant_column: str = DEFAULT_TENANT_COLUMN,
) -> list[str]:
    """Problems with the tenant isolation of `tables`; an empty list means none were found.

    Checks the catalog as the admin (RLS enabled and forced, the policy as planned, no other
    permissive policy that applies to the app role, the app role neither superuser nor BYPASSRLS
    nor owner of a table, nor allowed to TRUNCATE, which ignores RLS), then runs a canary as the
    app role: with no tenant set it must see no row, and with a tenant set it must see no row of
    any other tenant. The canary only reads, inside transactions that are rolled back.
    """
    problems: list[str] = []
    async with await psycopg.AsyncConnection.connect(app_url, autocommit=True) as app:
        cur = await app.execute("SELECT current_user")
        row = await cur.fetchone()
        assert row is not None
        app_role = str(row[0])
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
            states = await inspect(admin, tables)
            problems += await _catalog_problems(
                admin, app_role, states, tenant_setting, tenant_column
            )
        existing = [state.table for state in states if state.exists]
        problems += await _canary_problems(app, app_role, existing, tenant_setting, tenant_column)
    for problem in problems:
        log.warning("row-level security: %s", problem)
    return problems


async def _catalog_problems(
    admin: psycopg.AsyncConnection[Any],
    app_role: str,
    states: Sequence[TableState],
    tenant_setting: str,
    tenant_column: str,
) -> list[str]:
    problems: list[str] = []
    cur = await admin.execute(
        "SELECT rolsuper, rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = %s", (app_role,)
    )
    role = await cur.fetchone()
    if role is None:  # only if the role was dropped since it logged in
        return [f"app role {app_role} does not exist"]
    if role[0]:
        problems.append(f"app role {app_role} is a superuser, which bypasses row-level security")
    if role[1]:
        problems.append(f"app role {app_role} has BYPASSRLS")

    expected = await expected_policy(admin, tenant_setting, tenant_column)
    for state in states:
        name = f"{SCHEMA}.{state.table}"
        if not state.exists:
            problems.append(f"{name}: table does not exist")
            continue
        if not state.enabled:
            problems.append(f"{name}: row-level security is not enabled")
        if not state.forced:
            problems.append(
                f"{name}: row-level security is not forced (the table owner bypasses it)"
            )
        policy = state.policy(POLICY)
        if policy is None:
            problems.append(f"{name}: policy {POLICY} is missing")
        elif not _matches(policy, expected):
            problems.append(
                f"{name}: policy {POLICY} differs from the plan"
                f" (USING {policy.using}, WITH CHECK {policy.with_check})"
            )
        for other in state.policies:
            if other.name != POLICY and other.permissive:
                cur = await admin.execute(
                    "SELECT bool_or(r = 'public' OR pg_catalog.pg_has_role(%s, r, 'MEMBER'))"
                    " FROM unnest(%s::text[]) AS r",
                    (app_role, other.roles),
                )
                applies = await cur.fetchone()
                if applies is not None and applies[0]:
                    problems.append(
                        f"{name}: permissive policy {other.name} also applies to the app role"
                        " and widens what it can see"
                    )
        cur = await admin.execute(
            "SELECT pg_catalog.pg_has_role(%s, %s, 'MEMBER'),"
            " pg_catalog.has_table_privilege(%s, %s, 'TRUNCATE')",
            (app_role, state.owner, app_role, name),
        )
        owner_row = await cur.fetchone()
        assert owner_row is not None
        if owner_row[0]:
            problems.append(
                f"{name}: app role {app_role} owns the table or is a member of its owner"
                f" {state.owner}"
            )
        if owner_row[1]:
            problems.append(
                f"{name}: app role {app_role} may TRUNCATE, which ignores row-level security"
            )
    return problems


async def _canary_problems(
    app: psycopg.AsyncConnection[Any],
    app_role: str,
    tables: Sequence[str],
    tenant_setting: str,
    tenant_column: str,
) -> list[str]:
    problems: list[str] = []
    canary_tenant = str(uuid.uuid4())
    for table in _unique(tables):
        name = sql.Identifier(SCHEMA, check_identifier(table, "table"))
        column = sql.Identifier(check_identifier(tenant_column, "tenant column"))
        try:
            async with app.transaction():
                # No tenant: the setting is undefined (NULL) for the first table and '' for the
                # next ones, after the previous transaction-local value ended.
                cur = await app.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(name))
                row = await cur.fetchone()
                if row is not None and row[0]:
                    problems.append(f"{SCHEMA}.{table}: app role sees rows with no tenant set")
                await app.execute(
                    "SELECT pg_catalog.set_config(%s, %s, true)",
                    (check_setting(tenant_setting), canary_tenant),
                )
                cur = await app.execute(
                    sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {} IS DISTINCT FROM %s)").format(
                        name, column
                    ),
                    (canary_tenant,),
                )
                row = await cur.fetchone()
                if row is not None and row[0]:
                    problems.append(
                        f"{SCHEMA}.{table}: app role with a tenant set sees rows of other tenants"
                    )
                raise psycopg.Rollback()
        except psycopg.Error as exc:
            problems.append(f"{SCHEMA}.{table}: canary query as {app_role} failed: {exc}")
    return problems


def _unique(tables: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(tables))
