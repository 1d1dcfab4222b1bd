"""The connection pool, and tenant-scoped transactions on it.

Every query runs in a transaction that first sets the tenant setting transaction-locally
(`set_config(setting, tenant, true)`, i.e. SET LOCAL), so a connection returned to the pool
carries no tenant into its next use, and RLS policies compare rows with it.

Round trips (measured, see the performance notes: each costs ~50 µs of latency plus Python CPU):

- `transaction()`: BEGIN and set_config go out together in one message, then the caller's
  statements (one round trip each), then COMMIT: N + 2 for N statements, the same as a bare
  psycopg transaction without any tenant. To allow that, pool connections are in autocommit mode
  at the driver level and the transaction is opened and closed here explicitly (psycopg's own
  implicit BEGIN is a round trip of its own).
- `read()`: BEGIN READ ONLY, set_config, one statement and COMMIT in one message: one round trip.
  For the hot single-statement reads (get by id, one page, key lookup).

Both send their opening as one simple-query message of several statements rather than a
pipeline: the same single round trip, at about half of psycopg's CPU (see bench/RESULTS.md).
Postgres runs such a message as written; a statement that fails skips the rest, leaving the
explicit transaction aborted, which the error path rolls back.

There is no health check on checkout (it would be one more round trip per transaction). A stale
connection (server restarted, idle connection cut) is found by the first statement sent on it,
which is the transaction's own opening; that failure happens before any caller statement ran, so
the transaction is transparently reopened on another connection, within the acquire timeout.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg import AsyncClientCursor, AsyncConnection, AsyncCursor, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from reference_service.config import Settings
from reference_service.db.role_check import RoleNotIsolated, isolation_problems
from reference_service.db.schema import check_setting
from reference_service.observability.tracing import client_span

log = logging.getLogger(__name__)

Connection = AsyncConnection[DictRow]
"""A pooled connection: rows are dicts keyed by column name."""

_SET_TENANT = sql.SQL("SELECT pg_catalog.set_config(%s, %s, true)")
_BEGIN = sql.SQL("BEGIN")
_BEGIN_READ_ONLY = sql.SQL("BEGIN READ ONLY")
_COMMIT = sql.SQL("COMMIT")
_STATEMENTS = sql.SQL("; ")
# Span attributes: one span per pooled unit of work (a read is one round trip), not one per
# statement: in pipeline mode a statement's own time says nothing.
_READ: Final = {"db.system.name": "postgresql", "db.operation.name": "read"}
_TRANSACTION: Final = {"db.system.name": "postgresql", "db.operation.name": "transaction"}
_PING: Final = {"db.system.name": "postgresql", "db.operation.name": "ping"}


class PoolExhausted(Exception):
    """No connection became free within the acquire timeout.

    `retry_after` is a hint, in seconds, for when to try again (an HTTP `Retry-After`).
    """

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        super().__init__(message or f"no database connection was free within {retry_after:g}s")
        self.retry_after = retry_after


class DatabaseUnavailable(Exception):
    """The pool could not open its minimum number of connections in time."""


class TransactionAborted(RuntimeError):
    """A statement failed inside `transaction()` and its error was caught and not re-raised.

    Postgres answers COMMIT of a failed transaction with a silent ROLLBACK; this turns the lost
    writes into an error instead of a success."""


@dataclass(frozen=True)
class Statement:
    """One SQL statement and its parameters, e.g. from `repository.select_one`."""

    query: sql.Composed | sql.SQL
    params: Sequence[Any] = field(default_factory=tuple)


def _message(begin: sql.SQL, statement: Statement | None) -> sql.Composed | bytes:
    """The statements of one `_begin` message; for a statement of fixed ASCII text (the
    repository's reads), its bytes, rendered once per shape: the same bytes object also hits
    psycopg's own cache of parsed queries, so a read only quotes its parameters."""
    if statement is None:
        return _opening(begin.as_string())
    if isinstance(statement.query, sql.SQL):
        text = statement.query.as_string()
        if text.isascii():  # the same bytes in whatever encoding the server uses
            return _with_statement(begin.as_string(), text)
    return _STATEMENTS.join([begin, _SET_TENANT, statement.query, _COMMIT])


@functools.lru_cache(maxsize=8)
def _opening(begin: str) -> bytes:
    return _STATEMENTS.join([sql.SQL(begin), _SET_TENANT]).as_string().encode()


@functools.lru_cache(maxsize=256)
def _with_statement(begin: str, text: str) -> bytes:
    parts = [sql.SQL(begin), _SET_TENANT, sql.SQL(text), _COMMIT]
    return _STATEMENTS.join(parts).as_string().encode()


class Database:
    """A psycopg connection pool for the app role, configured from `Settings`."""

    def __init__(self, settings: Settings, *, name: str = "adbm") -> None:
        self.name = name
        self._tenant_setting = check_setting(settings.db_tenant_setting)
        self._acquire_timeout = settings.db_pool_acquire_timeout_seconds
        self._in_use = 0
        self._timeouts = 0
        self._refused: RoleNotIsolated | None = None
        self.pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            settings.database_url.get_secret_value(),
            connection_class=Connection,
            kwargs={"autocommit": True, "row_factory": dict_row, "application_name": name},
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            timeout=self._acquire_timeout,
            name=name,
            open=False,
            configure=self._refuse_unisolated,
        )

    @property
    def tenant_setting(self) -> str:
        return self._tenant_setting

    async def open(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Open the pool; with `wait`, until `min_size` connections are up (or
        DatabaseUnavailable after `timeout` seconds, the pool then being closed)."""
        try:
            await self.pool.open(wait=wait, timeout=timeout)
        except PoolTimeout as exc:
            raise DatabaseUnavailable(
                f"could not open {self.pool.min_size} database connection(s) in {timeout:g}s"
            ) from exc

    async def close(self) -> None:
        await self.pool.close()

    @property
    def refused(self) -> RoleNotIsolated | None:
        """Why the last connection opened was refused, or None if it was accepted."""
        return self._refused

    async def _refuse_unisolated(self, conn: Connection) -> None:
        # Every new connection, before the pool lends it out: a role that RLS does not bind
        # (a superuser, BYPASSRLS, a table owner) never serves a request, even when it became
        # one while the service was running or the database was down at start-up. The pool
        # discards the connection and retries with backoff; callers meanwhile get PoolExhausted.
        problems = await isolation_problems(conn)
        if not problems:
            self._refused = None
            return
        self._refused = RoleNotIsolated(problems)
        log.error("database connection refused: %s", self._refused)
        await conn.close()
        raise self._refused

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def transaction(self, tenant_id: uuid.UUID | None) -> AsyncIterator[Connection]:
        """A connection inside a transaction for `tenant_id` (None: no tenant, RLS shows nothing).

        Commits when the block ends normally, rolls back when it raises. Raises PoolExhausted
        when no connection is free within the acquire timeout. Do not call `commit()` or
        `rollback()` on the connection; use `conn.transaction()` for a savepoint.
        """
        with client_span("postgresql transaction", _TRANSACTION):
            conn, _ = await self._begin(tenant_id, _BEGIN, None)
            try:
                try:
                    yield conn
                except BaseException:
                    await _rollback_quietly(conn)
                    raise
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                    await _rollback_quietly(conn)
                    raise TransactionAborted(
                        "a statement failed in this transaction and its error was swallowed;"
                        " the transaction was rolled back"
                    )
                await conn.commit()
            finally:
                await self._checkin(conn)

    async def read(self, tenant_id: uuid.UUID | None, statement: Statement) -> list[DictRow]:
        """Run one read-only statement for `tenant_id` in its own transaction, in one round trip.

        The transaction is READ ONLY: a statement that writes fails instead of committing.
        Raises PoolExhausted like `transaction()`, and the statement's own errors.
        """
        with client_span("postgresql read", _READ):
            conn, cur = await self._begin(tenant_id, _BEGIN_READ_ONLY, statement)
            try:
                assert cur is not None
                return await cur.fetchall()
            finally:
                await self._checkin(conn)

    async def ping(self) -> None:
        """One round trip to the database on a pooled connection.

        Raises PoolExhausted when no connection is free, psycopg.OperationalError when the
        database does not answer.
        """
        with client_span("postgresql ping", _PING):
            conn = await self._getconn(time.monotonic() + self._acquire_timeout)
            try:
                await conn.execute("SELECT 1")
            finally:
                await self._checkin(conn)

    async def check_isolation(self) -> None:
        """One round trip on a pooled connection: RoleNotIsolated when the role is not (or is
        no longer) bound by row-level security, also when that is why no connection could be
        opened; otherwise the errors of `ping`."""
        try:
            conn = await self._getconn(time.monotonic() + self._acquire_timeout)
        except PoolExhausted:
            if self._refused is not None:
                raise self._refused from None
            raise
        try:
            problems = await isolation_problems(conn)
        finally:
            await self._checkin(conn)
        if problems:
            raise RoleNotIsolated(problems)

    def stats(self) -> dict[str, int]:
        """Pool gauges and counters, for metrics and the health endpoint.

        - max_size: the most connections the pool may open;
        - size: connections open or being opened;
        - in_use: connections lent out by `transaction()`, `read()` and `ping()`;
        - idle: connections ready in the pool;
        - waiting: callers queued for a connection;
        - timeouts: acquisitions that gave up (PoolExhausted) since start.
        """
        s = self.pool.get_stats()
        return {
            "max_size": s["pool_max"],
            "size": s["pool_size"],
            "in_use": self._in_use,
            "idle": s["pool_available"],
            "waiting": s.get("requests_waiting", 0),
            "timeouts": self._timeouts,
        }

    def pool_stats(self) -> dict[str, int]:
        """What the metrics' pool collector reads at scrape time (`metrics.PoolStats`)."""
        s = self.stats()
        return {
            "size": s["size"],
            "in_use": s["in_use"],
            "waiting": s["waiting"],
            "max_size": s["max_size"],
            "acquire_timeouts": s["timeouts"],
        }

    # --- internals ----------------------------------------------------------------------------

    async def _begin(
        self, tenant_id: uuid.UUID | None, begin: sql.SQL, statement: Statement | None
    ) -> tuple[Connection, AsyncCursor[DictRow] | None]:
        """A connection with a transaction open for `tenant_id`; with `statement`, also that
        statement run and the transaction committed, and the cursor holding its result."""
        deadline = time.monotonic() + self._acquire_timeout
        # '' rather than leaving the setting alone: a session-level value, however it got
        # there, must not stand in for "no tenant".
        tenant = "" if tenant_id is None else str(tenant_id)
        while True:
            conn = await self._getconn(deadline)
            try:
                cur: AsyncCursor[DictRow] | None = None
                params: list[Any] = [self._tenant_setting, tenant]
                if statement is not None:
                    params += statement.params
                # One simple-query message holding every statement: one round trip, and one
                # execute for psycopg (a pipeline costs a Python round of its own per
                # statement, measured at 150 us a read here). The parameters are bound on the
                # client as SQL literals, psycopg's own quoting (`ClientCursor`).
                multi = AsyncClientCursor(conn, row_factory=dict_row)
                await multi.execute(_message(begin, statement), params)
                if statement is not None:
                    # Past the results of BEGIN and set_config, to the statement's own.
                    multi.nextset()
                    multi.nextset()
                    cur = multi
            except psycopg.OperationalError:
                stale = conn.broken
                await _rollback_quietly(conn)
                await self._checkin(conn)
                # Nothing of the caller's has run (or only a read-only statement), so another
                # connection can take over; the pool replaces the broken one.
                if stale and time.monotonic() < deadline:
                    log.info("database connection found broken; retrying on another one")
                    continue
                raise
            except BaseException:
                await _rollback_quietly(conn)
                await self._checkin(conn)
                raise
            return conn, cur

    async def _getconn(self, deadline: float) -> Connection:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise PoolTimeout()
            conn = await self.pool.getconn(timeout=remaining)
        except PoolTimeout as exc:
            self._timeouts += 1
            raise PoolExhausted(retry_after=self._acquire_timeout) from exc
        self._in_use += 1
        return conn

    async def _checkin(self, conn: Connection) -> None:
        self._in_use -= 1
        await self.pool.putconn(conn)


async def _rollback_quietly(conn: Connection) -> None:
    """Roll back whatever is open; a connection too broken for that is discarded by the pool."""
    if conn.closed:
        return
    try:
        await conn.rollback()
    except psycopg.Error as exc:
        log.info("rollback failed (%s); the pool will discard the connection", exc)
