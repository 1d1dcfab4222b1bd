"""Pruning the outbox and the inbox, against the real PostgreSQL, as the app role: old
processed rows go, unpublished and recent ones stay, a redelivered recent message is still
deduplicated, and pruning works in batches that skip what another transaction holds."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pydantic import ValidationError

from reference_service.config import Settings, retry_schedule_seconds
from reference_service.db.pool import Database
from reference_service.messaging import inbox, outbox
from reference_service.messaging.retention import Pruner
from tests.reference_service.conftest import DatabaseUrls, Tenants

DAY = 86_400.0
CONSUMER = "orders.place"


async def _message(database: Database, tenant: uuid.UUID, *, published: bool) -> uuid.UUID:
    async with database.transaction(tenant) as conn:
        message_id = await outbox.enqueue(conn, tenant, "orders.place", {}, actor="test")
    if published:
        async with database.transaction(None) as conn:
            assert await outbox.mark_published(conn, [message_id]) == 1
    return message_id


async def _applied(database: Database, tenant: uuid.UUID, message_id: uuid.UUID) -> bool:
    """The consumer's inbox write, as each handler makes it in its effect's transaction."""
    async with database.transaction(tenant) as conn:
        return await inbox.record(conn, tenant, CONSUMER, message_id)


async def _age(
    urls: DatabaseUrls, table: str, column: str, ids: list[uuid.UUID], days: float
) -> None:
    """Move rows `days` into the past, as the admin (the app role cannot write audit columns)."""
    key = "message_id" if table == "inbox" else "id"
    async with await psycopg.AsyncConnection.connect(urls.admin_url, autocommit=True) as admin:
        await admin.execute(
            sql.SQL(
                "UPDATE {} SET {} = now() - make_interval(secs => %s) WHERE {} = ANY(%s)"
            ).format(sql.Identifier(table), sql.Identifier(column), sql.Identifier(key)),
            (days * DAY, ids),
        )


async def _ids(urls: DatabaseUrls, table: str) -> set[uuid.UUID]:
    column = "message_id" if table == "inbox" else "id"
    async with await psycopg.AsyncConnection.connect(urls.admin_url) as admin:
        cur = await admin.execute(
            sql.SQL("SELECT {} FROM {}").format(sql.Identifier(column), sql.Identifier(table))
        )
        return {row[0] for row in await cur.fetchall()}


def _pruner(database: Database, **kw: Any) -> Pruner:
    return Pruner(database, outbox_retention_seconds=DAY, inbox_retention_seconds=7 * DAY, **kw)


async def test_old_processed_rows_go_and_unpublished_or_recent_ones_stay(
    database: Database, tenants: Tenants, database_urls: DatabaseUrls
) -> None:
    a, b = tenants.a, tenants.b
    # Published and applied long ago, in both tenants: nothing can bring them back.
    old = [await _message(database, t, published=True) for t in (a, b, a)]
    for message_id, tenant in zip(old, (a, b, a), strict=True):
        assert await _applied(database, tenant, message_id)
    await _age(database_urls, "outbox", "published_at", old, days=2)
    await _age(database_urls, "inbox", "created_at", old, days=8)
    # Applied long ago, but its outbox row is still unpublished (the relay published it and its
    # commit failed): the relay will publish it again, so the consumer must still know it.
    republished = await _message(database, a, published=False)
    assert await _applied(database, a, republished)
    await _age(database_urls, "outbox", "created_at", [republished], days=30)
    await _age(database_urls, "inbox", "created_at", [republished], days=30)
    # Published and applied recently, within both retentions.
    recent = await _message(database, b, published=True)
    assert await _applied(database, b, recent)
    await _age(database_urls, "outbox", "published_at", [recent], days=0.5)
    await _age(database_urls, "inbox", "created_at", [recent], days=6)
    # Not published yet, not applied yet.
    pending = await _message(database, a, published=False)

    pruned = await _pruner(database).prune()

    assert (pruned.outbox, pruned.inbox) == (3, 3)
    assert await _ids(database_urls, "outbox") == {republished, recent, pending}
    assert await _ids(database_urls, "inbox") == {republished, recent}
    # A redelivered copy of what the inbox still holds is recognised, not applied again.
    assert not await _applied(database, b, recent)
    assert not await _applied(database, a, republished)
    assert await inbox.seen(database, b, CONSUMER, recent)
    # What the relay claims is untouched: the unpublished rows, oldest first.
    async with database.transaction(None) as conn:
        assert [p.id for p in await outbox.claim(conn, 10)] == [republished, pending]
    # A second run finds nothing more to do.
    again = await _pruner(database).prune()
    assert (again.outbox, again.inbox) == (0, 0)


async def test_pruning_goes_in_batches_and_skips_rows_another_transaction_holds(
    database: Database, tenants: Tenants, database_urls: DatabaseUrls
) -> None:
    old = [await _message(database, tenants.a, published=True) for _ in range(7)]
    for message_id in old:
        assert await _applied(database, tenants.a, message_id)
    await _age(database_urls, "inbox", "created_at", old, days=8)
    pruner = _pruner(database, batch_size=3)
    assert await pruner.prune_batch("inbox") == 3

    # Another transaction holds one of the old rows (a consumer's, say): pruning does not wait
    # for it, and leaves it.
    async with await psycopg.AsyncConnection.connect(database_urls.admin_url) as holder:
        await holder.execute("SELECT 1 FROM inbox WHERE message_id = %s FOR UPDATE", (old[-1],))
        pruned = await asyncio.wait_for(pruner.prune(), timeout=60)
        await holder.rollback()
    assert pruned.inbox == 3  # a full batch, then an empty one: the held row is skipped
    assert await _ids(database_urls, "inbox") == {old[-1]}


def test_the_inbox_retention_must_outlive_the_retry_schedule() -> None:
    settings = Settings()
    schedule = retry_schedule_seconds(
        settings.worker_max_attempts, settings.worker_retry_base_seconds
    )
    assert settings.inbox_retention_seconds == 7 * DAY > schedule
    # 9 deliveries, the first retry after 1 h, doubling: 255 h in delay queues, past 7 days.
    assert retry_schedule_seconds(9, 3600) == 255 * 3600
    with pytest.raises(ValidationError, match="inbox_retention_seconds"):
        Settings(worker_max_attempts=9, worker_retry_base_seconds=3600)
    assert Settings(
        worker_max_attempts=9, worker_retry_base_seconds=3600, inbox_retention_seconds=11 * DAY
    )
