"""The transactional outbox: a message is a row written in the transaction of the state change
that causes it, so the two commit or roll back together; the relay publishes it afterwards."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from reference_service.db import repository
from reference_service.db.pool import Connection


async def enqueue(
    conn: Connection, tenant_id: uuid.UUID, topic: str, payload: dict[str, Any], *, actor: str
) -> uuid.UUID:
    """Write a message for `topic` (a logical queue name) in the caller's transaction; returns
    its id, which is also the message id consumers deduplicate on."""
    row = await repository.insert(
        conn,
        "outbox",
        {"tenant_id": tenant_id, "topic": topic, "payload": Jsonb(payload)},
        actor=actor,
    )
    message_id: uuid.UUID = row["id"]
    return message_id


@dataclass(frozen=True)
class Pending:
    id: uuid.UUID
    tenant_id: uuid.UUID
    topic: str
    payload: dict[str, Any]


async def claim(conn: Connection, batch: int) -> list[Pending]:
    """Lock up to `batch` unpublished messages of any tenant in the caller's transaction,
    skipping those another relay holds."""
    cur = await conn.execute(
        sql.SQL("SELECT id, tenant_id, topic, payload FROM {}(%s)").format(
            sql.Identifier("public", "adbm_outbox_claim")
        ),
        (batch,),
    )
    return [
        Pending(r["id"], r["tenant_id"], r["topic"], r["payload"]) for r in await cur.fetchall()
    ]


async def mark_published(conn: Connection, ids: list[uuid.UUID]) -> int:
    cur = await conn.execute(
        sql.SQL("SELECT {}(%s) AS marked").format(
            sql.Identifier("public", "adbm_outbox_mark_published")
        ),
        (ids,),
    )
    row = await cur.fetchone()
    assert row is not None
    marked: int = row["marked"]
    return marked
