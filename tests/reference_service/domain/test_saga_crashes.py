"""100 concurrent orders while worker processes are SIGKILLed at every step boundary and between
each step's committed effect and its ack: no double debit, no orphan debit, every order ends."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference_service.db.pool import Database
from reference_service.domain.sagas import order_placement
from reference_service.domain.sagas.order_placement import OrderPlace
from reference_service.messaging import faults, worker
from tests.reference_service import payment_provider
from tests.reference_service.conftest import DatabaseUrls, Tenants
from tests.reference_service.worker_support import (
    AMQP_URL,
    PUBLISHED_QUEUES,
    admin_rows,
    check_books,
    delete_queues,
    new_prefix,
    queue_names,
    seed,
    settings_for,
    start_worker,
    wait_ready,
    wait_until_terminal,
)

STEPS = ("reserve", "charge", "confirm", "refund", "release", "cancel")
CRASH_POINTS = [
    *(f"{when}:{step}" for step in STEPS for when in ("before_effect", "after_effect")),
    "after_ack:orders.place",
    "after_ack:orders.compensate",
]


async def terminal_count(admin_url: str) -> int:
    rows = await admin_rows(
        admin_url, "SELECT count(*) AS n FROM sagas WHERE state IN ('CONFIRMED', 'CANCELLED')"
    )
    n: int = rows[0]["n"]
    return n


@pytest.fixture
def provider() -> Iterator[tuple[payment_provider.Provider, str]]:
    with payment_provider.serve(slow_seconds=1.0) as served:
        yield served


async def test_orders_survive_workers_killed_at_every_step_boundary(
    database_urls: DatabaseUrls,
    make_database: object,
    tenants: Tenants,
    provider: tuple[payment_provider.Provider, str],
    tmp_path: Path,
) -> None:
    assert callable(make_database)
    database: Database = await make_database(db_pool_max_size=8)
    settings = settings_for(
        database_urls.app_url,
        amqp_url=AMQP_URL,
        prefix=new_prefix(),
        provider_url=provider[1],
        # Messages held by a killed worker come back by redelivery, not by the sweep; a short
        # step timeout still lets the sweep take part, as it would after a long outage.
        saga_step_timeout_seconds=5.0,
    )
    # 10 accounts that cannot pay for everything, and prices whose last digit picks the
    # provider's behaviour (0: charged, 1: declined, 2: too slow, 3: 500 after charging).
    shop = await seed(database, tenants.a, balances=[2_000] * 10, prices=[100, 230, 101, 102, 103])
    prices = [100, 230, 100, 101, 102, 103, 230, 100, 230, 100]
    initial = dict.fromkeys(shop.accounts, 2_000)
    await asyncio.gather(
        *(
            order_placement.place_order(
                database,
                tenants.a,
                OrderPlace(
                    account_id=shop.accounts[i % 10],
                    product_id=shop.products[prices[i % len(prices)]],
                    quantity=1 + i % 3,
                ),
                actor="test",
                deadline_seconds=600,
            )
            for i in range(100)
        )
    )
    crashed_at = []
    try:
        for point in CRASH_POINTS:
            log = tmp_path / f"{point}.log"
            process = await start_worker(settings, log, **{faults.ENV: f"{point}#2"})
            try:
                await asyncio.wait_for(process.wait(), timeout=45)
            except TimeoutError:
                process.kill()  # never reached the point in time: killed from outside instead
                await process.wait()
            assert process.returncode == -signal.SIGKILL, log.read_text()
            if f"SIGKILL at {point}" in log.read_text():
                crashed_at.append(point)
        # And once from outside, at no particular point, while it is busy.
        process = await start_worker(settings, tmp_path / "external.log")
        await wait_ready(settings.metrics_port)
        done_before = await terminal_count(database_urls.admin_url)
        async with asyncio.timeout(60):
            while await terminal_count(database_urls.admin_url) == done_before:
                await asyncio.sleep(0.02)
        process.kill()
        await process.wait()
        final_log = tmp_path / "final.log"
        final = await start_worker(settings, final_log)
        try:
            await wait_ready(settings.metrics_port)
            await wait_until_terminal(database_urls.admin_url, 100, limit_seconds=120)
        finally:
            final.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(final.wait(), timeout=30)
        assert code == 0, final_log.read_text()
    finally:
        await delete_queues(
            AMQP_URL, queue_names(settings.queue_prefix, PUBLISHED_QUEUES, worker.backoff(settings))
        )
    ends = await check_books(database_urls.admin_url, provider[0], initial)
    assert set(ends) == {"CONFIRMED", "CANCELLED"}
    # Each kill happened where it was meant to, not merely somewhere.
    assert crashed_at == CRASH_POINTS
