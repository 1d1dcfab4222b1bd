"""Helpers for tests of the worker, the relay and the order saga against real services.

Each test gets its own queue prefix (so its queues are its own on the shared broker) and deletes
its queues afterwards; databases come from the `database_urls` fixture of the parent conftest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
from psycopg.rows import dict_row

from reference_service.config import Settings
from reference_service.db.pool import Database
from reference_service.domain import accounts, products
from reference_service.messaging import topology

AMQP_URL = os.environ.get("ADBM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SAGA_QUEUES = ("orders.place", "orders.compensate")
# Every queue the saga's messages reach (its end announces the order on notifications.email):
# what a test deletes afterwards.
PUBLISHED_QUEUES = (*SAGA_QUEUES, "notifications.email")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def new_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}."


def queue_names(prefix: str, logical: Sequence[str], backoff: topology.Backoff) -> list[str]:
    names = []
    for q in logical:
        work = topology.queue_name(prefix, q)
        names += [work, topology.dead_queue_name(work)]
        names += [
            topology.delay_queue_name(work, backoff.delay_ms(a))
            for a in range(1, backoff.max_attempts)
        ]
    return names


async def delete_queues(amqp_url: str, names: Sequence[str]) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for name in names:
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):  # never declared
                await channel.queue_delete(name)
            if not channel.is_closed:
                await channel.close()


def settings_for(
    app_url: str, *, amqp_url: str, prefix: str, provider_url: str, **overrides: Any
) -> Settings:
    """Worker settings for a test: small timeouts so failure paths finish quickly."""
    values: dict[str, Any] = {
        "database_url": app_url,
        "db_pool_min_size": 0,
        "db_pool_max_size": 6,
        "amqp_url": amqp_url,
        "queue_prefix": prefix,
        "metrics_port": free_port(),
        "payment_provider_url": provider_url,
        "payment_connect_timeout_seconds": 1.0,
        "payment_timeout_seconds": 0.4,
        "worker_max_attempts": 3,
        "worker_retry_base_seconds": 0.1,
        "worker_shutdown_grace_seconds": 10.0,
        "relay_poll_seconds": 0.05,
        "saga_step_timeout_seconds": 30.0,
        "saga_sweep_interval_seconds": 1.0,
        **overrides,
    }
    return Settings(**values)


def environment(settings: Settings) -> dict[str, str]:
    """The settings as the `ADBM_*` variables a worker process reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADBM_")}
    for name, value in settings:
        if name == "policy":
            continue
        raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        env[f"ADBM_{name.upper()}"] = str(raw)
    return env


@dataclass(frozen=True)
class Shop:
    accounts: list[uuid.UUID]
    products: dict[int, uuid.UUID]
    """Product id by price."""


async def seed(
    database: Database, tenant: uuid.UUID, *, balances: Sequence[int], prices: Sequence[int]
) -> Shop:
    async with database.transaction(tenant) as conn:
        account_ids = [
            (
                await accounts.RESOURCE.table.create(
                    conn,
                    tenant,
                    accounts.AccountCreate(name=f"a{i}", currency="EUR", balance_minor=b),
                    actor="test",
                )
            ).id
            for i, b in enumerate(balances)
        ]
        product_ids = {
            price: (
                await products.RESOURCE.table.create(
                    conn,
                    tenant,
                    products.ProductCreate(
                        sku=f"sku-{price}", name=f"p{price}", price_minor=price, currency="EUR"
                    ),
                    actor="test",
                )
            ).id
            for price in prices
        }
    return Shop(account_ids, product_ids)


async def admin_rows(
    admin_url: str, query: str, params: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(admin_url, row_factory=dict_row) as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall()


async def wait_until_terminal(admin_url: str, expected: int, *, limit_seconds: float) -> None:
    """Return once `expected` sagas are all CONFIRMED or CANCELLED; fail after the limit (a
    guard against a hang, not a measurement)."""
    deadline = time.monotonic() + limit_seconds
    while True:
        rows = await admin_rows(
            admin_url,
            "SELECT count(*) FILTER (WHERE state IN ('CONFIRMED', 'CANCELLED')) AS done,"
            " count(*) AS total FROM sagas",
        )
        if rows[0]["done"] == expected == rows[0]["total"]:
            return
        if time.monotonic() > deadline:
            states = await admin_rows(
                admin_url, "SELECT state, count(*) AS n FROM sagas GROUP BY state"
            )
            raise AssertionError(f"sagas not all terminal after {limit_seconds}s: {states}")
        await asyncio.sleep(0.2)


async def check_books(
    admin_url: str, provider: Any, initial: dict[uuid.UUID, int]
) -> dict[str, int]:
    """Every invariant of the saga, checked on what Postgres and the provider hold; returns the
    count of sagas per end state."""
    sagas = await admin_rows(
        admin_url,
        "SELECT s.id, s.state, s.amount_minor, s.account_id, o.status, o.status_reason,"
        " (SELECT count(*) FROM account_entries e WHERE e.saga_id = s.id AND e.kind = 'reserve')"
        "   AS reserves,"
        " (SELECT count(*) FROM account_entries e WHERE e.saga_id = s.id AND e.kind = 'release')"
        "   AS releases"
        " FROM sagas s JOIN orders o ON o.id = s.order_id",
    )
    balances = {
        r["id"]: r["balance_minor"]
        for r in await admin_rows(admin_url, "SELECT id, balance_minor FROM accounts")
    }
    spent = dict.fromkeys(initial, 0)
    ends: dict[str, int] = {}
    for s in sagas:
        ends[s["state"]] = ends.get(s["state"], 0) + 1
        assert s["state"] in ("CONFIRMED", "CANCELLED"), s
        assert s["status"] == s["state"], s
        assert s["reserves"] <= 1 and s["releases"] <= 1, f"double debit or release: {s}"
        net = provider.net_charged(s["id"])
        if s["state"] == "CONFIRMED":
            assert (s["reserves"], s["releases"]) == (1, 0), s
            assert net == s["amount_minor"], f"confirmed but not charged once: {s}"
            spent[s["account_id"]] += s["amount_minor"]
        else:
            assert s["reserves"] == s["releases"], f"orphan debit: {s}"
            assert net == 0, f"cancelled but the provider kept {net}: {s}"
            assert s["status_reason"], s
    for key, effects in provider.charge_effects.items():
        assert effects == 1, f"provider charged key {key} {effects} times"
    for account, start in initial.items():
        assert balances[account] == start - spent[account], (account, start, spent[account])
    return ends


def service_command() -> str:
    """The `adbm-service` console script of this environment."""
    beside = Path(sys.executable).parent / "adbm-service"
    found = str(beside) if beside.exists() else shutil.which("adbm-service")
    assert found, "adbm-service is not installed in this environment"
    return found


async def start_worker(
    settings: Settings,
    log: Path,
    queues: Sequence[str] = SAGA_QUEUES,
    *,
    prefetch: int = 32,
    **env: str,
) -> asyncio.subprocess.Process:
    """`adbm-service worker --queues=... --prefetch N` as a process, as the operator renders it;
    its stderr (the logs) appended to `log`, never to a pipe that could fill and block it."""
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            service_command(),
            "worker",
            f"--queues={','.join(queues)}",
            "--prefetch",
            str(prefetch),
            env={**environment(settings), **env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """Status and body of `GET path` on 127.0.0.1:port (what a kubelet probe does)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def wait_ready(port: int, *, limit_seconds: float = 60) -> None:
    deadline = time.monotonic() + limit_seconds
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = await http_get(port, "/ready")
            if status == 200:
                return
            last = body
        except OSError as exc:
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"worker not ready after {limit_seconds}s: {last!r}")
