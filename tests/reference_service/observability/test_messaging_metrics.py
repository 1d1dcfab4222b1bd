"""The worker's metrics move when their event happens: consume results per queue, relay
publishes and outbox lag, saga outcomes and compensations, against the real RabbitMQ and
PostgreSQL. Each test reads the default registry, which the worker's `/metrics` serves."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
from prometheus_client import REGISTRY

from reference_service.db.pool import Database
from reference_service.domain.orders import OrderPlace
from reference_service.domain.sagas import order_placement
from reference_service.messaging import inbox, outbox, worker
from reference_service.messaging.consumer import Delivery
from reference_service.messaging.relay import Relay
from tests.reference_service import payment_provider
from tests.reference_service.conftest import DatabaseUrls, Tenants
from tests.reference_service.messaging.test_consumer import (
    BACKOFF,
    connection,
    envelope,
    prefix,
    publish,
    start,
    take_dead,
    wait_for,
)
from tests.reference_service.worker_support import (
    AMQP_URL,
    PUBLISHED_QUEUES,
    SAGA_QUEUES,
    delete_queues,
    new_prefix,
    queue_names,
    seed,
    settings_for,
    wait_until_terminal,
)

__all__ = ["connection", "prefix"]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def consumed(result: str, queue: str = "jobs") -> float:
    return sample("adbm_messages_consumed_total", queue=queue, result=result)


async def test_applied_and_duplicate_deliveries(
    connection: aio_pika.abc.AbstractConnection,
    prefix: str,
    database: Database,
    tenants: Tenants,
) -> None:
    acked, duplicate = consumed("acked"), consumed("duplicate")
    handled = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal handled
        env = delivery.envelope
        async with database.transaction(env.tenant_id) as conn:
            await inbox.record(conn, env.tenant_id, delivery.queue, env.message_id)
        handled += 1

    consumer = await start(connection, prefix, handler, prefetch=1)
    env = envelope(tenants.a)
    for _ in range(3):  # the same message three times, as redeliveries would bring it
        await publish(connection, prefix, env)
    await wait_for(lambda: handled == 3)
    await consumer.stop(5)
    assert consumed("acked") == acked + 1
    assert consumed("duplicate") == duplicate + 2


async def test_retried_and_dead_lettered_deliveries(
    connection: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    retried, dead = consumed("retried"), consumed("dead_lettered")

    async def handler(delivery: Delivery) -> None:
        raise RuntimeError("always fails")

    consumer = await start(connection, prefix, handler)
    await publish(connection, prefix, envelope(uuid.uuid4()))
    await take_dead(connection, prefix)
    await wait_for(lambda: consumed("dead_lettered") == dead + 1)
    await consumer.stop(5)
    # BACKOFF allows 3 deliveries: two retries, then the dead-letter queue.
    assert BACKOFF.max_attempts == 3
    assert consumed("retried") == retried + 2
    assert consumed("dead_lettered") == dead + 1


async def test_an_unreadable_delivery_is_counted_dead_lettered(
    connection: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    dead = consumed("dead_lettered")

    async def handler(delivery: Delivery) -> None:
        raise AssertionError("never called")

    consumer = await start(connection, prefix, handler)
    channel = await connection.channel(publisher_confirms=True)
    await channel.default_exchange.publish(
        aio_pika.Message(b"not json", message_id=str(uuid.uuid4())),
        routing_key=f"{prefix}jobs",
    )
    await take_dead(connection, prefix)
    await wait_for(lambda: consumed("dead_lettered") == dead + 1)
    await consumer.stop(5)


async def test_a_delivery_unfinished_at_the_shutdown_deadline_is_counted_requeued(
    connection: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    requeued = consumed("requeued")
    started = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()  # never finishes

    consumer = await start(connection, prefix, handler)
    await publish(connection, prefix, envelope(uuid.uuid4()))
    async with asyncio.timeout(20):
        await started.wait()
    await consumer.stop(0.1)
    assert consumed("requeued") == requeued + 1


async def test_relay_publishes_and_the_outbox_lag(
    connection: aio_pika.abc.AbstractConnection,
    prefix: str,
    database: Database,
    tenants: Tenants,
) -> None:
    published = sample("adbm_outbox_published_total", queue="jobs")
    async with database.transaction(tenants.a) as conn:
        for n in range(3):
            await outbox.enqueue(conn, tenants.a, "jobs", {"n": n}, actor="test")
    # Rows that waited: the lag is their age by the database's clock, at least this long.
    await asyncio.sleep(0.2)
    relay = Relay(
        database, connection, prefix=prefix, backoff=BACKOFF, batch_size=10, poll_seconds=0.05
    )
    assert await relay.publish_batch() == 3
    assert sample("adbm_outbox_published_total", queue="jobs") == published + 3
    assert sample("adbm_outbox_lag_seconds") >= 0.2
    # Nothing waits any more: the next pass says so.
    assert await relay.publish_batch() == 0
    assert sample("adbm_outbox_lag_seconds") == 0


async def test_saga_outcomes_and_compensations(
    database_urls: DatabaseUrls, database: Database, tenants: Tenants
) -> None:
    def outcome(state: str) -> float:
        return sample("adbm_saga_outcomes_total", saga="order_placement", state=state)

    def compensation(step: str) -> float:
        return sample("adbm_saga_compensations_total", saga="order_placement", step=step)

    before = {
        "confirmed": outcome("confirmed"),
        "cancelled": outcome("cancelled"),
        **{step: compensation(step) for step in ("refund", "release", "cancel")},
    }
    # Prices whose last digit picks the provider's answer: 0 charged, 1 declined.
    shop = await seed(database, tenants.a, balances=[1_000, 10], prices=[100, 101])
    rich, poor = shop.accounts
    for account, price in ((rich, 100), (rich, 101), (poor, 100)):
        await order_placement.place_order(
            database,
            tenants.a,
            OrderPlace(account_id=account, product_id=shop.products[price], quantity=1),
            actor="test",
            deadline_seconds=600,
        )
    with payment_provider.serve() as (_, provider_url):
        settings = settings_for(
            database_urls.app_url, amqp_url=AMQP_URL, prefix=new_prefix(), provider_url=provider_url
        )
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(settings, SAGA_QUEUES, prefetch=8, stop=stop))
        try:
            await wait_until_terminal(database_urls.admin_url, 3, limit_seconds=60)
        finally:
            stop.set()
            await running
            await delete_queues(
                AMQP_URL,
                queue_names(settings.queue_prefix, PUBLISHED_QUEUES, worker.backoff(settings)),
            )
    # One confirmed; the declined one refunded, released and cancelled; the one without funds
    # released (nothing reserved) and cancelled.
    assert outcome("confirmed") == before["confirmed"] + 1
    assert outcome("cancelled") == before["cancelled"] + 2
    assert compensation("refund") == before["refund"] + 1
    assert compensation("release") == before["release"] + 2
    assert compensation("cancel") == before["cancel"] + 2
