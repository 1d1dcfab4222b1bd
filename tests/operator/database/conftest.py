"""Fixtures for the operator's database provisioning, against the real PostgreSQL.

Each test gets its own database name and app role name (random), which the operator creates;
both are dropped afterwards, whatever the test left. The admin is the superuser of
`ADBM_TEST_POSTGRES_URL`, handed to the operator the way a cluster would: as the base64 data of
an admin Secret.

- `scratch` -> `Scratch(database, role, owner)`: names, cleaned up afterwards; `extra_roles`
  lists further roles a test creates.
- `server` -> the `Server` parsed from an admin Secret holding SERVER_URL.
- `desired(**changes)` -> a `Desired` for the scratch names (all tenant-scoped tables).
- `provisioned` -> the scratch database provisioned, migrated (as the migration Job would, by
  `reference_service.db.migrate`) and provisioned again: DatabaseReady=True.
- `ddl_log` -> installs an event trigger in the scratch database that records every committed
  DDL command; `DdlLog.read()` returns them: an independent count of what ran.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql

from adbm_operator.database.provision import Desired, Report, provision
from adbm_operator.database.target import Server, admin_server
from adbm_operator.specs.dbsecrets import generate_password
from reference_service.db.migrate import migrate
from reference_service.db.schema import TENANT_SCOPED
from tests.reference_service.conftest import SERVER_URL, conninfo


@dataclass
class Scratch:
    database: str
    role: str
    owner: str
    password: str
    extra_roles: list[str] = field(default_factory=list)


async def _drop(scratch: Scratch) -> None:
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(scratch.database)
            )
        )
        for role in [scratch.role, *scratch.extra_roles]:
            await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
async def scratch() -> AsyncIterator[Scratch]:
    suffix = uuid.uuid4().hex[:12]
    names = Scratch(
        database=f"adbm_op_{suffix}",
        role=f"adbm_op_app_{suffix}",
        owner=f"test/svc-{suffix}",
        password=generate_password(),
    )
    try:
        yield names
    finally:
        await _drop(names)


def admin_secret_data(url: str = SERVER_URL, key: str = "uri") -> dict[str, str]:
    return {key: base64.b64encode(url.encode()).decode()}


@pytest.fixture
def server() -> Server:
    return admin_server(admin_secret_data(), "uri")


@pytest.fixture
def desired(scratch: Scratch) -> Callable[..., Desired]:
    def make(**changes: Any) -> Desired:
        base = Desired(
            owner=scratch.owner,
            database=scratch.database,
            app_role=scratch.role,
            app_password=scratch.password,
            tables=TENANT_SCOPED,
            tenant_setting="app.tenant_id",
            tenant_column="tenant_id",
            wanted_connections=20,
            migrated=True,
        )
        return dataclasses.replace(base, **changes)

    return make


def admin_url(scratch: Scratch) -> str:
    return conninfo(scratch.database)


def app_url(scratch: Scratch) -> str:
    return conninfo(scratch.database, user=scratch.role, password=scratch.password)


async def run_migration(scratch: Scratch) -> list[str]:
    """What the migration Job runs, in process (the Job test runs it as the real command)."""
    return await migrate(admin_url(scratch), app_role=scratch.role)


@pytest.fixture
async def provisioned(server: Server, desired: Callable[..., Desired], scratch: Scratch) -> Report:
    first = await provision(server, desired(migrated=False))
    assert first.condition()[1] == "Migrating", first
    await run_migration(scratch)
    report = await provision(server, desired())
    assert report.condition()[0] == "True", report.condition()
    return report


@pytest.fixture
async def admin(
    scratch: Scratch, provisioned: Report
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(admin_url(scratch), autocommit=True) as conn:
        yield conn


_DDL_LOG = """
CREATE TABLE adbm_test_ddl_log (id bigserial PRIMARY KEY, tag text NOT NULL, object text);
CREATE FUNCTION adbm_test_log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        INSERT INTO adbm_test_ddl_log (tag, object) VALUES (r.command_tag, r.object_identity);
    END LOOP;
END $$;
CREATE EVENT TRIGGER adbm_test_ddl ON ddl_command_end EXECUTE FUNCTION adbm_test_log_ddl();
"""


class DdlLog:
    """Reads the DDL commands the event trigger recorded."""

    def __init__(self, admin: psycopg.AsyncConnection[Any]) -> None:
        self.admin = admin

    async def clear(self) -> None:
        """Forget what was recorded so far (a test's own drift statements)."""
        await self.admin.execute("TRUNCATE adbm_test_ddl_log")

    async def read(self) -> list[tuple[str, str]]:
        cur = await self.admin.execute(
            "SELECT tag, coalesce(object, '') FROM adbm_test_ddl_log ORDER BY id"
        )
        return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]


@pytest.fixture
async def ddl_log(admin: psycopg.AsyncConnection[Any]) -> DdlLog:
    """Every DDL command committed in the scratch database from now on, as (tag, object).
    Commands rolled back (the plan's probe, the canary) vanish with their transaction."""
    await admin.execute(_DDL_LOG)
    return DdlLog(admin)


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts TCP connections and never says a word (a hung server or proxy)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    srv = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = int(srv.sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        for writer in held:
            writer.close()
        srv.close()
        await srv.wait_closed()
