"""The pool: tenant-scoped transactions, their round trips, exhaustion, stale connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from reference_service.config import Settings
from reference_service.db.pool import (
    Database,
    DatabaseUnavailable,
    PoolExhausted,
    Statement,
    TransactionAborted,
)
from reference_service.db.repository import insert, select_one
from tests.reference_service.conftest import DatabaseUrls, Tenants, conninfo

MakeDatabase = Callable[..., Awaitable[Database]]


def _account(tenant: uuid.UUID, name: str = "acc") -> dict[str, Any]:
    return {"tenant_id": tenant, "name": name, "currency": "EUR", "balance_minor": 0}


async def _count(database: Database, tenant: uuid.UUID) -> int:
    async with database.transaction(tenant) as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM accounts")
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def test_commits_on_success_and_rolls_back_on_error(
    database: Database, tenants: Tenants
) -> None:
    async with database.transaction(tenants.a) as conn:
        await insert(conn, "accounts", _account(tenants.a, "kept"), actor="test")
    with pytest.raises(RuntimeError, match="boom"):
        async with database.transaction(tenants.a) as conn:
            await insert(conn, "accounts", _account(tenants.a, "lost"), actor="test")
            raise RuntimeError("boom")
    async with database.transaction(tenants.a) as conn:
        rows = await (await conn.execute("SELECT name FROM accounts")).fetchall()
    assert rows == [{"name": "kept"}]
    assert database.stats()["in_use"] == 0


async def test_uses_the_configured_setting(
    make_database: MakeDatabase, database_urls: DatabaseUrls, tenants: Tenants
) -> None:
    db = await make_database(db_tenant_setting="shop.tenant")
    async with db.transaction(tenants.a) as conn:
        cur = await conn.execute("SELECT current_setting('shop.tenant') AS t")
        assert await cur.fetchone() == {"t": str(tenants.a)}


async def test_a_swallowed_error_is_not_committed(database: Database, tenants: Tenants) -> None:
    with pytest.raises(TransactionAborted):
        async with database.transaction(tenants.a) as conn:
            await insert(conn, "accounts", _account(tenants.a), actor="test")
            # The bug: carrying on as if the failed statement had not happened.
            with contextlib.suppress(psycopg.errors.DivisionByZero):
                await conn.execute("SELECT 1/0")
    assert await _count(database, tenants.a) == 0


async def test_savepoints_let_a_transaction_survive_an_expected_error(
    database: Database, tenants: Tenants
) -> None:
    product = {"tenant_id": tenants.a, "sku": "S", "name": "P", "price_minor": 1, "currency": "EUR"}
    async with database.transaction(tenants.a) as conn:
        await insert(conn, "products", product, actor="test")
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with conn.transaction():
                await insert(conn, "products", product, actor="test")
        await insert(conn, "accounts", _account(tenants.a), actor="test")
    assert await _count(database, tenants.a) == 1


async def test_pool_exhaustion_raises_within_the_acquire_timeout(
    make_database: MakeDatabase, tenants: Tenants
) -> None:
    db = await make_database(db_pool_max_size=1, db_pool_acquire_timeout_seconds=0.2)
    assert db.stats()["timeouts"] == 0
    async with db.transaction(tenants.a):
        assert db.stats()["in_use"] == 1
        with pytest.raises(PoolExhausted) as raised:
            async with db.transaction(tenants.b):
                pytest.fail("got a second connection from a pool of one")
        assert raised.value.retry_after == 0.2
        with pytest.raises(PoolExhausted):
            await db.read(tenants.b, Statement(psycopg.sql.SQL("SELECT 1")))
    stats = db.stats()
    assert stats["timeouts"] == 2
    assert stats["in_use"] == 0
    # The pool is fine afterwards.
    assert await _count(db, tenants.a) == 0


async def test_stats(make_database: MakeDatabase, tenants: Tenants) -> None:
    db = await make_database(db_pool_min_size=1, db_pool_max_size=3)
    assert db.stats() == {
        "max_size": 3,
        "size": 1,
        "in_use": 0,
        "idle": 1,
        "waiting": 0,
        "timeouts": 0,
    }
    async with db.transaction(tenants.a), db.transaction(tenants.b):
        stats = db.stats()
        assert stats["in_use"] == 2
        assert stats["size"] == 2
        assert stats["idle"] == 0


async def test_read_runs_one_read_only_statement(database: Database, tenants: Tenants) -> None:
    async with database.transaction(tenants.a) as conn:
        row = await insert(conn, "accounts", _account(tenants.a), actor="test")
    assert await database.read(tenants.a, select_one("accounts", row["id"])) == [row]
    assert await database.read(tenants.b, select_one("accounts", row["id"])) == []
    assert await database.read(None, select_one("accounts", row["id"])) == []
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        await database.read(
            tenants.a,
            Statement(
                psycopg.sql.SQL("UPDATE accounts SET name = 'x' WHERE id = %s RETURNING id"),
                (row["id"],),
            ),
        )
    with pytest.raises(psycopg.errors.DivisionByZero):
        await database.read(tenants.a, Statement(psycopg.sql.SQL("SELECT 1/0")))
    assert database.stats()["in_use"] == 0
    # The failed connections went back clean: the next transactions work.
    assert await database.read(tenants.a, select_one("accounts", row["id"])) == [row]
    assert await _count(database, tenants.a) == 1


async def test_a_cancelled_transaction_returns_its_connection(
    make_database: MakeDatabase, tenants: Tenants
) -> None:
    db = await make_database(db_pool_max_size=1)
    started = asyncio.Event()

    async def slow() -> None:
        async with db.transaction(tenants.a) as conn:
            await insert(conn, "accounts", _account(tenants.a), actor="test")
            started.set()
            await conn.execute("SELECT pg_sleep(10)")

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert db.stats()["in_use"] == 0
    assert await _count(db, tenants.a) == 0  # rolled back, and the only connection is usable


async def _backend_pids(database_urls: DatabaseUrls) -> list[int]:
    async with await psycopg.AsyncConnection.connect(
        database_urls.admin_url, autocommit=True
    ) as admin:
        cur = await admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE usename = %s", (database_urls.app_role,)
        )
        return [pid for (pid,) in await cur.fetchall()]


async def _terminate(database_urls: DatabaseUrls, pids: list[int]) -> None:
    async with await psycopg.AsyncConnection.connect(
        database_urls.admin_url, autocommit=True
    ) as admin:
        for pid in pids:
            await admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


async def test_a_stale_connection_is_replaced_transparently(
    make_database: MakeDatabase,
    database_urls: DatabaseUrls,
    tenants: Tenants,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="reference_service.db.pool")
    db = await make_database(db_pool_min_size=2, db_pool_max_size=2)
    async with db.transaction(tenants.a) as conn:
        await insert(conn, "accounts", _account(tenants.a), actor="test")
    # The server drops every idle connection (a restart, a failover, an idle timeout).
    pids = await _backend_pids(database_urls)
    assert len(pids) == 2
    await _terminate(database_urls, pids)
    assert await _count(db, tenants.a) == 1
    await _terminate(database_urls, await _backend_pids(database_urls))
    rows = await db.read(tenants.a, Statement(psycopg.sql.SQL("SELECT 1 AS one")))
    assert rows == [{"one": 1}]
    assert set(await _backend_pids(database_urls)).isdisjoint(pids)
    assert "database connection found broken; retrying on another one" in caplog.messages


async def test_ping(database: Database) -> None:
    await database.ping()
    assert database.stats()["in_use"] == 0


async def test_open_fails_clearly_when_the_database_is_unreachable() -> None:
    settings = Settings(
        database_url=conninfo("postgres", port=1, connect_timeout=1),
        db_pool_min_size=1,
    )
    db = Database(settings)
    with pytest.raises(DatabaseUnavailable, match="could not open 1 database connection"):
        await db.open(timeout=0.5)


def test_refuses_an_odd_tenant_setting() -> None:
    with pytest.raises(ValueError, match="custom setting"):
        Database(Settings(db_tenant_setting="tenant'; DROP TABLE x; --"))


# --- round trips ------------------------------------------------------------------------------


class RoundTripCounter:
    """A TCP proxy in front of Postgres counting round trips: each time the client starts
    sending again after the server has answered is one more."""

    def __init__(self) -> None:
        self.round_trips = 0
        self._last = ""
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
            server_r, server_w = await asyncio.open_connection(host, port)
            await asyncio.gather(
                self._pump(client_r, server_w, "up"),
                self._pump(server_r, client_w, "down"),
                return_exceptions=True,
            )

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_: int = self.server.sockets[0].getsockname()[1]
        return port_

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: str
    ) -> None:
        try:
            while data := await reader.read(65536):
                if way == "up" and self._last != "up":
                    self.round_trips += 1
                self._last = way
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def reset(self) -> None:
        self.round_trips = 0


@pytest.fixture
async def counted(
    database_urls: DatabaseUrls, make_database: MakeDatabase
) -> AsyncIterator[tuple[Database, RoundTripCounter, str]]:
    counter = RoundTripCounter()
    info = psycopg.conninfo.conninfo_to_dict(database_urls.app_url)
    port = await counter.start(str(info.get("host", "127.0.0.1")), int(str(info.get("port", 5432))))
    url = psycopg.conninfo.make_conninfo(database_urls.app_url, host="127.0.0.1", port=port)
    db = await make_database(database_url=url, db_pool_min_size=1, db_pool_max_size=1)
    async with db.transaction(None):
        pass  # connected, and psycopg's first-use queries done
    yield db, counter, url
    assert counter.server is not None
    counter.server.close()


async def test_round_trips(
    counted: tuple[Database, RoundTripCounter, str], tenants: Tenants
) -> None:
    db, counter, url = counted
    select = psycopg.sql.SQL("SELECT count(*) FROM accounts")

    # A bare psycopg transaction without any tenant: BEGIN, the query, COMMIT.
    async with await psycopg.AsyncConnection.connect(url) as bare:
        counter.reset()
        await (await bare.execute(select)).fetchall()
        await bare.commit()
        bare_round_trips = counter.round_trips
    assert bare_round_trips == 3

    # Setting the tenant costs no extra round trip: it travels with BEGIN.
    counter.reset()
    async with db.transaction(tenants.a) as conn:
        await (await conn.execute(select)).fetchall()
    assert counter.round_trips == bare_round_trips

    counter.reset()
    await db.read(tenants.a, Statement(select))
    assert counter.round_trips == 1
