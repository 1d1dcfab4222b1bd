"""Recovery: sagas that stopped moving are driven again, or compensated past their deadline."""

from __future__ import annotations

import logging
from datetime import timedelta

from psycopg import sql

from reference_service.db.pool import Database
from reference_service.domain.sagas.order_placement.records import (
    compensation_start,
    lock,
    move,
    send,
)
from reference_service.domain.sagas.order_placement.states import STEP_OF, TERMINAL, State

log = logging.getLogger(__name__)

_CLAIM_STALE = sql.SQL("SELECT tenant_id, saga_id FROM {}(%s, %s)").format(
    sql.Identifier("public", "adbm_sagas_claim_stale")
)


async def sweep(database: Database, *, stale_after_seconds: float, batch: int = 100) -> int:
    """Drive again every saga that has not moved for `stale_after_seconds`; returns how many.

    Safe with several sweepers at once (the claim skips locked rows and bumps `updated_at`),
    and with the step's own message still on its way (the step runs once, then ignores the
    other copy: it no longer finds the state it expects)."""
    async with database.transaction(None) as conn:
        cur = await conn.execute(_CLAIM_STALE, (timedelta(seconds=stale_after_seconds), batch))
        claimed = [(row["tenant_id"], row["saga_id"]) for row in await cur.fetchall()]
    for tenant_id, saga_id in claimed:
        async with database.transaction(tenant_id) as conn:
            saga = await lock(conn, saga_id)
            if saga is None or saga.state in TERMINAL:
                continue
            forward = saga.state in (State.PENDING, State.RESERVED)
            if forward and saga.past_deadline:
                log.info("saga %s passed its deadline in %s: compensating", saga.id, saga.state)
                await move(
                    conn,
                    saga,
                    compensation_start(saga),
                    step=STEP_OF[saga.state],
                    outcome="timed_out",
                    reason=f"timed out in {saga.state.value}",
                )
            else:
                log.info(
                    "saga %s stuck in %s: driving %s again",
                    saga.id,
                    saga.state,
                    STEP_OF[saga.state],
                )
                await send(conn, tenant_id, saga.id, STEP_OF[saga.state])
    return len(claimed)
