"""The inbox: which messages a consumer has applied, written in the transaction of the effect.

A redelivered message (the worker died after committing but before acking, the broker restarted,
a relay published twice) finds its row and is acknowledged without being applied again. Rows are
pruned once no copy can come any more (`retention` states that bound).
"""

from __future__ import annotations

import uuid

from psycopg import sql

from reference_service.db.pool import Connection, Database, Statement
from reference_service.db.uuid7 import uuid7
from reference_service.messaging.consumer import note_duplicate

_RECORD = sql.SQL(
    "INSERT INTO {} (id, tenant_id, consumer, message_id, created_by, updated_by)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (consumer, message_id) DO NOTHING"
    " RETURNING id"
).format(sql.Identifier("public", "inbox"))

_SEEN = sql.SQL("SELECT 1 AS seen FROM {} WHERE consumer = %s AND message_id = %s").format(
    sql.Identifier("public", "inbox")
)


async def record(
    conn: Connection, tenant_id: uuid.UUID, consumer: str, message_id: uuid.UUID
) -> bool:
    """Record the message as applied in the caller's transaction. False when it already was:
    the caller must then not apply it (its transaction would conflict with nothing, but repeat
    the effect)."""
    actor = f"worker:{consumer}"
    cur = await conn.execute(_RECORD, (uuid7(), tenant_id, consumer, message_id, actor, actor))
    if await cur.fetchone() is None:
        note_duplicate()
        return False
    return True


async def seen(
    database: Database, tenant_id: uuid.UUID, consumer: str, message_id: uuid.UUID
) -> bool:
    """Whether the message was applied already: a cheap check before work that is not inside
    the effect's transaction (a call to an external API)."""
    rows = await database.read(tenant_id, Statement(_SEEN, (consumer, message_id)))
    if rows:
        note_duplicate()
    return bool(rows)
