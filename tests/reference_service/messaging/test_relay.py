"""The outbox relay against the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from reference_service.db.pool import Database
from reference_service.messaging import outbox, topology
from reference_service.messaging.envelope import from_message
from reference_service.messaging.relay import Relay
from tests.reference_service.conftest import DatabaseUrls, Tenants
from tests.reference_service.worker_support import (
    AMQP_URL,
    admin_rows,
    delete_queues,
    new_prefix,
    queue_names,
)

BACKOFF = topology.Backoff(max_attempts=2, base_seconds=0.1)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = new_prefix()
    yield value
    await delete_queues(AMQP_URL, queue_names(value, ["jobs"], BACKOFF))


async def drain(prefix: str, expected: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message on `<prefix>jobs`, waiting until `expected` arrived (then a little more, so
    a duplicate would be seen too)."""
    connection = await aio_pika.connect(AMQP_URL)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.queue_name(prefix, "jobs"))
        idle = 0
        while idle < 5:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                idle += 1 if len(got) >= expected else 0
                await asyncio.sleep(0.05)
                continue
            got.append(message)
    return got


async def test_two_relays_publish_every_committed_row_once(
    database: Database, tenants: Tenants, database_urls: DatabaseUrls, prefix: str
) -> None:
    written: dict[uuid.UUID, uuid.UUID] = {}
    for i in range(40):
        tenant = tenants.a if i % 2 else tenants.b
        async with database.transaction(tenant) as conn:
            written[await outbox.enqueue(conn, tenant, "jobs", {"n": i}, actor="t")] = tenant
    with pytest.raises(RuntimeError):
        async with database.transaction(tenants.a) as conn:
            await outbox.enqueue(conn, tenants.a, "jobs", {"n": "rolled back"}, actor="t")
            raise RuntimeError("the state change failed")

    connections = [await aio_pika.connect(AMQP_URL) for _ in range(2)]
    try:
        relays = [
            Relay(database, c, prefix=prefix, backoff=BACKOFF, batch_size=7, poll_seconds=0.05)
            for c in connections
        ]

        async def until_empty(relay: Relay) -> None:
            while await relay.publish_batch():
                pass

        await asyncio.gather(*(until_empty(r) for r in relays))
    finally:
        for c in connections:
            await c.close()
    assert sum(r.published_total for r in relays) == 40
    assert all(r.published_total > 0 for r in relays)  # they shared the work

    messages = [from_message(m) for m in await drain(prefix, 40)]
    assert sorted(m.message_id for m in messages) == sorted(written)
    assert {m.message_id: m.tenant_id for m in messages} == written
    assert all(m.topic == "jobs" and m.attempt == 1 for m in messages)
    rows = await admin_rows(
        database_urls.admin_url, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
    )
    assert rows[0]["n"] == 0


async def test_a_failed_publish_leaves_the_rows_pending(
    database: Database, tenants: Tenants, database_urls: DatabaseUrls, prefix: str
) -> None:
    async with database.transaction(tenants.a) as conn:
        await outbox.enqueue(conn, tenants.a, "jobs", {"n": 1}, actor="t")
    connection = await aio_pika.connect(AMQP_URL)
    relay = Relay(
        database, connection, prefix=prefix, backoff=BACKOFF, batch_size=10, poll_seconds=0.05
    )
    await connection.close()  # the broker is gone before the relay publishes
    with pytest.raises(Exception):  # noqa: B017 - whatever the client raises for a closed link
        await relay.publish_batch()
    rows = await admin_rows(
        database_urls.admin_url, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
    )
    assert rows[0]["n"] == 1
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        relay = Relay(
            database, connection, prefix=prefix, backoff=BACKOFF, batch_size=10, poll_seconds=0.05
        )
        assert await relay.publish_batch() == 1
    assert len(await drain(prefix, 1)) == 1


async def test_the_app_role_cannot_read_other_tenants_outbox_rows(
    database: Database, tenants: Tenants
) -> None:
    async with database.transaction(tenants.a) as conn:
        await outbox.enqueue(conn, tenants.a, "jobs", {"n": 1}, actor="t")
    async with database.transaction(tenants.b) as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM outbox")
        row = await cur.fetchone()
    assert row is not None and row["n"] == 0
