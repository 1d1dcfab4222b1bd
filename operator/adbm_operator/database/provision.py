"""One provisioning pass: the database, the app role, RLS planned then applied, the proof.

`provision` is what the reconcile calls, on every reconcile and on the verify timer. It never
raises for the database's sake: an unreachable server, refused credentials or a broken proof
are observations in the returned `Report`, which maps to condition DatabaseReady.

Order, each step only if the previous one allowed it:
1. On the maintenance database: read the connection budget; create the database and the app
   role if missing (serialised per database by a session advisory lock: CREATE DATABASE cannot
   run in a transaction).
2. On the app database, in one transaction under the migration lock: the app role may connect,
   owns nothing, is in no role; then, once the current image's migration has run, the RLS plan
   is read, applied and re-read (`reference_service.db.rls.converge`).
3. `rls.verify` (catalog problems, e.g. another policy widening what the app role sees) and the
   isolation canary as the app role.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from adbm_operator.database import roles
from adbm_operator.database.budget import OPERATOR_RESERVE, read_budget
from adbm_operator.database.canary import prove_isolation
from adbm_operator.database.condition import Observations, Reason, Status, database_ready
from adbm_operator.database.connect import Unreachable, connect, one_line
from adbm_operator.database.target import (
    CONNECT_TIMEOUT_SECONDS,
    MAINTENANCE_DATABASE,
    Server,
    app_uri,
)
from adbm_operator.model import BackendService, max_connections
from adbm_operator.specs import labels
from reference_service.db import rls
from reference_service.db.schema import SCHEMA

log = logging.getLogger(__name__)

LOCK_WAIT_SECONDS = 10.0
"""Default longest wait for a lock (the migration lock, a table's): a long migration or a stuck
transaction makes the pass report `Migrating` and retry later, never hang the reconcile."""


@dataclass(frozen=True)
class Desired:
    """What the BackendService asks of its database (see `desired_from_spec`)."""

    owner: str
    """`namespace/name` of the BackendService: marks what adbm creates."""
    database: str
    app_role: str
    app_password: str
    tables: tuple[str, ...]
    tenant_setting: str
    tenant_column: str
    wanted_connections: int
    migrated: bool
    """Whether the migration Job of the current image has succeeded."""
    reserve: int = OPERATOR_RESERVE
    timeout: float = CONNECT_TIMEOUT_SECONDS
    lock_wait: float = LOCK_WAIT_SECONDS

    @property
    def lock_timeout(self) -> str:
        return f"{max(int(self.lock_wait * 1000), 1)}ms"

    def __repr__(self) -> str:  # never print the password
        return f"Desired(owner={self.owner!r}, database={self.database!r}, role={self.app_role!r})"


@dataclass(frozen=True)
class Report:
    observations: Observations
    pending: str
    """The plan's summary of what differed before applying (for status)."""
    changes: tuple[str, ...]
    """Everything this pass changed, in order; empty when the database was as planned."""
    unmanaged_policies: tuple[str, ...] = ()
    created: bool = False
    """Whether this pass created the database or the role (first provisioning, not drift)."""
    schema_version: str | None = None
    """The newest migration recorded in `schema_migrations` (for status), once migrated."""

    def condition(self) -> tuple[Status, Reason, str]:
        return database_ready(self.observations)

    def event(self) -> tuple[str, str] | None:
        """(reason, message) of the Event to record for this pass's changes, if any."""
        if not self.changes:
            return None
        reason = "DatabaseProvisioned" if self.created else "DatabaseDriftRepaired"
        return reason, "; ".join(self.changes)[:1024]


def app_conninfo(server: Server, desired: Desired) -> str:
    uri = app_uri(
        server, dbname=desired.database, role=desired.app_role, password=desired.app_password
    )
    return make_conninfo(uri, connect_timeout=int(desired.timeout))


CREATION_LOCK_CLASS = 0x6164_626D
"""First half of the two-key advisory lock that serialises creating one database and its role
("adbm"); the second half is the database name's hash. Keyed per database, so provisioners of
different BackendServices never queue behind each other: one cluster-wide key made 32
reconciles in flight wait ~0.2 s each for every CREATE DATABASE before theirs, past the lock
timeout at start-up (bench/operator_scale.py). Two-key locks never collide with `rls.LOCK`."""


@asynccontextmanager
async def _session_lock(
    conn: psycopg.AsyncConnection[Any], database: str, lock_timeout: str
) -> AsyncIterator[None]:
    key = (CREATION_LOCK_CLASS, database)
    await conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, false)", (lock_timeout,))
    await conn.execute(
        "SELECT pg_catalog.pg_advisory_lock(%s::integer, pg_catalog.hashtext(%s))", key
    )
    try:
        yield
    finally:
        await conn.execute(
            "SELECT pg_catalog.pg_advisory_unlock(%s::integer, pg_catalog.hashtext(%s))", key
        )


async def provision(server: Server, desired: Desired) -> Report:
    changes: list[str] = []

    def changed(what: str) -> None:
        log.info("database %s: %s", desired.database, what)
        changes.append(what)

    timeout = desired.timeout
    try:
        async with await connect(
            server.conninfo(MAINTENANCE_DATABASE, timeout=int(timeout)),
            server.describe(MAINTENANCE_DATABASE),
            timeout=timeout,
        ) as maintenance:
            budget = await read_budget(maintenance, desired.wanted_connections, desired.reserve)
            async with _session_lock(maintenance, desired.database, desired.lock_timeout):
                created_database = await roles.ensure_database(
                    maintenance, desired.database, desired.owner, changed
                )
                created_role = await roles.ensure_role(
                    maintenance, desired.app_role, desired.app_password, desired.owner, changed
                )
        created = created_database or created_role
        async with await connect(
            server.conninfo(desired.database, timeout=int(timeout)),
            server.describe(desired.database),
            timeout=timeout,
        ) as admin:
            convergence = await _converge(admin, desired, changed)
            if convergence is None or convergence.before.missing_tables:
                return Report(
                    Observations(
                        budget=budget,
                        migrated=False,
                        migration_message=_migration_message(desired, convergence),
                    ),
                    pending="",
                    changes=tuple(changes),
                    created=created,
                )
            app = await _app_login(server, desired, admin, changed)
            async with app:
                isolation = await prove_isolation(
                    admin,
                    app,
                    desired.app_role,
                    desired.tables,
                    desired.tenant_setting,
                    desired.tenant_column,
                )
            schema_version = await _schema_version(admin)
        problems = await rls.verify(
            server.conninfo(desired.database, timeout=int(timeout)),
            app_conninfo(server, desired),
            desired.tables,
            desired.tenant_setting,
            desired.tenant_column,
        )
    except Unreachable as exc:
        return Report(Observations(unreachable=str(exc)), pending="", changes=tuple(changes))
    except psycopg.errors.LockNotAvailable:
        message = (
            f"{desired.database} is locked by a migration or another provisioner"
            f" (waited {desired.lock_wait:g} s); retrying later"
        )
        observations = Observations(migrated=False, migration_message=message, busy=True)
        return Report(observations, pending="", changes=tuple(changes))
    except psycopg.Error as exc:
        # Refused by the server as the admin (e.g. not allowed to create roles): not a bug of
        # ours, and not one to retry in a hot loop; the message says what the admin lacks.
        message = f"the admin cannot provision {desired.database}: {one_line(exc)}"
        return Report(Observations(unreachable=message), pending="", changes=tuple(changes))
    remaining = [] if convergence.after.up_to_date else [convergence.after.summary()]
    return Report(
        Observations(
            budget=budget,
            migrated=True,
            remaining_drift=tuple(remaining + problems),
            isolation=isolation,
        ),
        pending=convergence.before.summary(),
        changes=tuple(changes),
        unmanaged_policies=convergence.before.unmanaged_policies,
        created=created,
        schema_version=schema_version,
    )


async def _schema_version(admin: psycopg.AsyncConnection[Any]) -> str | None:
    """The newest applied migration, as `adbm-service migrate` records it (None for an image
    whose migrations keep no such table)."""
    table = f"{SCHEMA}.schema_migrations"
    cur = await admin.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (table,))
    row = await cur.fetchone()
    if not (row and row[0]):
        return None
    cur = await admin.execute(
        sql.SQL("SELECT max(version) FROM {}").format(sql.Identifier(SCHEMA, "schema_migrations"))
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else str(row[0])


async def _converge(
    admin: psycopg.AsyncConnection[Any], desired: Desired, changed: roles.Changed
) -> rls.Convergence | None:
    async with admin.transaction():
        await admin.execute(
            "SELECT pg_catalog.set_config('lock_timeout', %s, true)", (desired.lock_timeout,)
        )
        await admin.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (rls.LOCK,))
        await roles.ensure_least_privilege(admin, desired.app_role, desired.database, changed)
        if not desired.migrated:
            return None
        convergence = await rls.converge(
            admin,
            desired.tables,
            desired.tenant_setting,
            desired.tenant_column,
            app_role=desired.app_role,
        )
    if convergence.executed:
        for change in convergence.before.changes:
            changed(f"{SCHEMA}.{change.table}: {change.description}")
    return convergence


def _migration_message(desired: Desired, convergence: rls.Convergence | None) -> str:
    if convergence is None:
        return "waiting for the migration Job of the current image"
    missing = ", ".join(f"{SCHEMA}.{t}" for t in convergence.before.missing_tables)
    return f"the migration has run, but governed tables do not exist: {missing}"


async def _app_login(
    server: Server,
    desired: Desired,
    admin: psycopg.AsyncConnection[Any],
    changed: roles.Changed,
) -> psycopg.AsyncConnection[Any]:
    """A connection as the app role. If the admin can connect but the app role cannot, its
    password drifted from its Secret: it is set again (once) and the login retried."""
    what = f"{desired.app_role}@{server.host}:{server.port}/{desired.database}"
    try:
        return await connect(app_conninfo(server, desired), what, timeout=desired.timeout)
    except Unreachable:
        async with admin.transaction():
            await roles.ensure_role(
                admin,
                desired.app_role,
                desired.app_password,
                desired.owner,
                changed,
                reset_password=True,
            )
    return await connect(app_conninfo(server, desired), what, timeout=desired.timeout)


def desired_from_spec(obj: BackendService, *, app_password: str, migrated: bool) -> Desired:
    """What `obj` asks of its database, with the app role's password from its Secret and
    whether the migration Job of `obj.spec.image` has succeeded."""
    db = obj.spec.database
    rls_spec = db.row_level_security
    return Desired(
        owner=f"{obj.namespace}/{obj.name}",
        database=db.name,
        app_role=labels.app_role(obj),
        app_password=app_password,
        tables=tuple(rls_spec.tables),
        tenant_setting=rls_spec.tenant_setting,
        tenant_column=rls_spec.tenant_column,
        wanted_connections=max_connections(obj.spec),
        migrated=migrated,
    )


RETRY_DELAYS_SECONDS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def retry_delay(failures: int) -> float:
    """Seconds before the next pass after `failures` consecutive Unreachable results: a down
    server is retried with backoff, never in a hot loop."""
    return RETRY_DELAYS_SECONDS[min(max(failures, 1), len(RETRY_DELAYS_SECONDS)) - 1]
