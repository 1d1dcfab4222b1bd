"""The saga's rows: reading one under lock, and moving it to its next state together with the
outcome of the step and the message of the next step (one transaction, the caller's)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from reference_service.db import repository
from reference_service.db.pool import Connection
from reference_service.db.uuid7 import uuid7
from reference_service.domain.sagas.order_placement.states import (
    ACTOR,
    QUEUE_OF,
    STEP_OF,
    TERMINAL,
    State,
)
from reference_service.messaging import outbox


@dataclass(frozen=True)
class Saga:
    id: uuid.UUID
    tenant_id: uuid.UUID
    version: int
    order_id: uuid.UUID
    account_id: uuid.UUID
    amount_minor: int
    currency: str
    state: State
    reason: str | None
    charge_attempted: bool
    past_deadline: bool


async def send(conn: Connection, tenant_id: uuid.UUID, saga_id: uuid.UUID, step: str) -> None:
    await outbox.enqueue(
        conn, tenant_id, QUEUE_OF[step], {"saga_id": str(saga_id), "step": step}, actor=ACTOR
    )


_LOCK = sql.SQL(
    "SELECT id, tenant_id, version, order_id, account_id, amount_minor, currency, state, reason,"
    " charge_attempted, deadline_at < now() AS past_deadline"
    " FROM {} WHERE id = %s AND NOT is_deleted FOR UPDATE"
).format(sql.Identifier("public", "sagas"))

_STEP = sql.SQL(
    "INSERT INTO {} (id, tenant_id, saga_id, step, outcome, detail, created_by, updated_by)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (saga_id, step) DO NOTHING"
).format(sql.Identifier("public", "saga_steps"))


async def lock(conn: Connection, saga_id: uuid.UUID) -> Saga | None:
    cur = await conn.execute(_LOCK, (saga_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    return Saga(**{**row, "state": State(row["state"])})


async def move(
    conn: Connection,
    saga: Saga,
    to: State,
    *,
    step: str,
    outcome: str,
    detail: str | None = None,
    reason: str | None = None,
    **changes: Any,
) -> None:
    """Record the step's outcome, move the saga to `to` and send the next step's message."""
    await conn.execute(
        _STEP, (uuid7(), saga.tenant_id, saga.id, step, outcome, detail, ACTOR, ACTOR)
    )
    if reason is not None:
        changes["reason"] = reason
    await repository.update(
        conn,
        "sagas",
        saga.id,
        expected_version=saga.version,
        changes={"state": to.value, **changes},
        actor=ACTOR,
    )
    if to not in TERMINAL:
        await send(conn, saga.tenant_id, saga.id, STEP_OF[to])


def compensation_start(saga: Saga) -> State:
    """Where compensating a saga that is going forward starts."""
    return State.REFUNDING if saga.charge_attempted else State.RELEASING
