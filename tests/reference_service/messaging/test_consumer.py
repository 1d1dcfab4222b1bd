"""The consumer: acks, retries through delay queues, dead letters, inbox deduplication and
shutdown, against the real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from reference_service.db.pool import Database
from reference_service.messaging import inbox, topology
from reference_service.messaging.consumer import Consumer, Delivery, Handler
from reference_service.messaging.envelope import ATTEMPT_HEADER, Envelope, from_message
from tests.reference_service.conftest import Tenants
from tests.reference_service.worker_support import (
    AMQP_URL,
    delete_queues,
    new_prefix,
    queue_names,
    seed,
)

BACKOFF = topology.Backoff(max_attempts=3, base_seconds=0.05)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = new_prefix()
    yield value
    await delete_queues(AMQP_URL, queue_names(value, ["jobs"], BACKOFF))


@pytest.fixture
async def connection() -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    conn = await aio_pika.connect(AMQP_URL)
    async with conn:
        yield conn


async def publish(conn: aio_pika.abc.AbstractConnection, prefix: str, env: Envelope) -> None:
    channel = await conn.channel(publisher_confirms=True)
    await channel.default_exchange.publish(
        env.to_message(), routing_key=topology.queue_name(prefix, "jobs")
    )
    await channel.close()


async def wait_for(condition: object, limit: float = 20) -> None:
    assert callable(condition)
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.02)


async def take_dead(
    conn: aio_pika.abc.AbstractConnection, prefix: str
) -> aio_pika.abc.AbstractIncomingMessage:
    channel = await conn.channel()
    queue = await channel.get_queue(topology.dead_queue_name(topology.queue_name(prefix, "jobs")))
    async with asyncio.timeout(20):
        while (message := await queue.get(no_ack=True, fail=False)) is None:
            await asyncio.sleep(0.05)
    return message


def envelope(tenant: uuid.UUID, **payload: object) -> Envelope:
    return Envelope(uuid.uuid4(), tenant, "jobs", dict(payload))


async def start(
    conn: aio_pika.abc.AbstractConnection, prefix: str, handler: Handler, prefetch: int = 4
) -> Consumer:
    consumer = Consumer(conn, {"jobs": handler}, prefix=prefix, prefetch=prefetch, backoff=BACKOFF)
    await consumer.start()
    return consumer


async def test_a_failing_message_is_retried_then_dead_lettered(
    connection: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    attempts: list[tuple[int, bool]] = []

    async def handler(delivery: Delivery) -> None:
        attempts.append((delivery.envelope.attempt, delivery.final))
        raise RuntimeError("always fails")

    consumer = await start(connection, prefix, handler)
    env = envelope(uuid.uuid4(), n=1)
    await publish(connection, prefix, env)
    dead = await take_dead(connection, prefix)
    await consumer.stop(5)
    assert attempts == [(1, False), (2, False), (3, True)]
    assert from_message(dead).message_id == env.message_id
    assert (dead.headers or {})[ATTEMPT_HEADER] == 3


async def test_a_transient_failure_is_retried_until_it_succeeds(
    connection: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    attempts: list[int] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        attempts.append(delivery.envelope.attempt)
        if delivery.envelope.attempt < 2:
            raise RuntimeError("transient")
        done.set()

    consumer = await start(connection, prefix, handler)
    await publish(connection, prefix, envelope(uuid.uuid4()))
    async with asyncio.timeout(20):
        await done.wait()
    await consumer.stop(5)
    assert attempts == [1, 2]
    channel = await connection.channel()
    work = await channel.get_queue(topology.queue_name(prefix, "jobs"))
    dead = await channel.get_queue(topology.dead_queue_name(topology.queue_name(prefix, "jobs")))
    assert await work.get(fail=False) is None  # acked, not requeued
    assert await dead.get(fail=False) is None


async def test_an_unreadable_message_goes_to_the_dead_letter_queue_at_once(
    connection: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    calls: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        calls.append(delivery)

    consumer = await start(connection, prefix, handler)
    channel = await connection.channel(publisher_confirms=True)
    await channel.default_exchange.publish(
        aio_pika.Message(b"not json", message_id=str(uuid.uuid4())),
        routing_key=topology.queue_name(prefix, "jobs"),
    )
    dead = await take_dead(connection, prefix)
    await consumer.stop(5)
    assert dead.body == b"not json"
    assert "x-error" in (dead.headers or {})
    assert calls == []


async def test_a_redelivered_message_applies_its_effect_once(
    connection: aio_pika.abc.AbstractConnection,
    prefix: str,
    database: Database,
    tenants: Tenants,
) -> None:
    shop = await seed(database, tenants.a, balances=[0], prices=[1])
    account = shop.accounts[0]
    handled = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal handled
        env = delivery.envelope
        async with database.transaction(env.tenant_id) as conn:
            if await inbox.record(conn, env.tenant_id, delivery.queue, env.message_id):
                await conn.execute(
                    "UPDATE accounts SET balance_minor = balance_minor + 1 WHERE id = %s",
                    (account,),
                )
        handled += 1

    consumer = await start(connection, prefix, handler)
    env = envelope(tenants.a)
    for _ in range(3):  # the same message three times, as redeliveries would bring it
        await publish(connection, prefix, env)
    await publish(connection, prefix, envelope(tenants.a))  # and another message
    await wait_for(lambda: handled == 4)
    await consumer.stop(5)
    async with database.transaction(tenants.a) as conn:
        cur = await conn.execute("SELECT balance_minor FROM accounts WHERE id = %s", (account,))
        row = await cur.fetchone()
    assert row is not None and row["balance_minor"] == 2


async def test_shutdown_finishes_in_flight_messages_or_requeues_them(
    connection: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[uuid.UUID] = []

    async def handler(delivery: Delivery) -> None:
        started.set()
        await release.wait()
        finished.append(delivery.envelope.message_id)

    # Within the grace period: the handler finishes and its message is acked.
    consumer = await start(connection, prefix, handler)
    first = envelope(uuid.uuid4())
    await publish(connection, prefix, first)
    async with asyncio.timeout(20):
        await started.wait()
    stopping = asyncio.create_task(consumer.stop(10))
    await asyncio.sleep(0.1)
    release.set()
    await stopping
    assert finished == [first.message_id]

    # Past it: the handler is cancelled, never acks, and the broker requeues the message.
    started.clear()
    release.clear()
    consumer = await start(connection, prefix, handler)
    second = envelope(uuid.uuid4())
    await publish(connection, prefix, second)
    async with asyncio.timeout(20):
        await started.wait()
    await consumer.stop(0.1)
    assert finished == [first.message_id]
    channel = await connection.channel()
    work = await channel.get_queue(topology.queue_name(prefix, "jobs"))
    async with asyncio.timeout(20):
        while (message := await work.get(no_ack=True, fail=False)) is None:
            await asyncio.sleep(0.05)
    assert from_message(message).message_id == second.message_id
    assert message.redelivered
