"""The transactional outbox: a message is a row written in the transaction of the state change
that causes it, so the two commit or roll back together; the relay publishes it afterwards.

Each row keeps the W3C trace context of the span that wrote it (the request's, or the consuming
worker's), so the relay's publish span and the consumer's spans continue that trace."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from reference_service.db import repository
from reference_service.db.pool import Connection
from reference_service.observability.tracing import trace_headers


async def enqueue(
    conn: Connection, tenant_id: uuid.UUID, topic: str, payload: dict[str, Any], *, actor: str
) -> uuid.UUID:
    """Write a message for `topic` (a logical queue name) in the caller's transaction; returns
    its id, which is also the message id consumers deduplicate on."""
    context = trace_headers()
    row = await repository.insert(
        conn,
        "outbox",
        {
            "tenant_id": tenant_id,
            "topic": topic,
            "payload": Jsonb(payload),
            "traceparent": context.get("traceparent"),
            "tracestate": context.get("tracestate"),
        },
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
    trace_context: dict[str, str]
    """`traceparent` and `tracestate` of the span that wrote the row (empty: none)."""
    age_seconds: float
    """How long the row has waited, by the database's clock."""


async def claim(conn: Connection, batch: int) -> list[Pending]:
    """Lock up to `batch` unpublished messages of any tenant in the caller's transaction, oldest
    first, skipping those another relay holds."""
    cur = await conn.execute(
        sql.SQL(
            "SELECT id, tenant_id, topic, payload, traceparent, tracestate, age_seconds FROM {}(%s)"
        ).format(sql.Identifier("public", "adbm_outbox_claim")),
        (batch,),
    )
    return [
        Pending(
            r["id"],
            r["tenant_id"],
            r["topic"],
            r["payload"],
            {k: r[k] for k in ("traceparent", "tracestate") if r[k] is not None},
            r["age_seconds"],
        )
        for r in await cur.fetchall()
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
