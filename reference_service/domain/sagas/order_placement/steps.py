"""The saga's message handlers: each step and compensation, one transaction each.

Each step runs in a span of its own (`saga order_placement <step>`), child of the delivery's
consume span, so the trace of the request that placed the order shows every step it drove. A
step returns the state it moved the saga to (None: it did nothing, the message was a duplicate
or stale), and once its transaction committed the saga metrics count it.
"""

from __future__ import annotations

import uuid

from psycopg import sql

from reference_service.db import repository
from reference_service.db.pool import Connection, Database
from reference_service.db.uuid7 import uuid7
from reference_service.domain import notifications
from reference_service.domain.sagas.order_placement.records import Saga, lock, move
from reference_service.domain.sagas.order_placement.states import (
    ACTOR,
    COMPENSATE_QUEUE,
    KIND,
    PLACE_QUEUE,
    QUEUE_OF,
    TERMINAL,
    State,
)
from reference_service.domain.sagas.payments import Outcome, PaymentProvider, Result
from reference_service.messaging import inbox
from reference_service.messaging.consumer import Delivery, Handler, Retry
from reference_service.messaging.faults import crash_point
from reference_service.observability import metrics, tracing

_COMPENSATIONS = frozenset({"refund", "release", "cancel"})

_DEBIT = sql.SQL(
    "UPDATE {} SET balance_minor = balance_minor - %(amount)s, version = version + 1,"
    " updated_at = now(), updated_by = %(actor)s"
    " WHERE id = %(account)s AND NOT is_deleted AND balance_minor >= %(amount)s RETURNING id"
).format(sql.Identifier("public", "accounts"))

_CREDIT = sql.SQL(
    "UPDATE {} SET balance_minor = balance_minor + %(amount)s, version = version + 1,"
    " updated_at = now(), updated_by = %(actor)s WHERE id = %(account)s RETURNING id"
).format(sql.Identifier("public", "accounts"))

_ENTRY = sql.SQL(
    "INSERT INTO {} (id, tenant_id, account_id, saga_id, kind, amount_minor, created_by,"
    " updated_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (saga_id, kind) DO NOTHING RETURNING id"
).format(sql.Identifier("public", "account_entries"))

_ENTRIES = sql.SQL("SELECT kind FROM {} WHERE saga_id = %s AND NOT is_deleted").format(
    sql.Identifier("public", "account_entries")
)


class OrderSaga:
    """The saga's message handlers, bound to the database and the payment provider."""

    def __init__(self, database: Database, payments: PaymentProvider) -> None:
        self._db = database
        self._payments = payments

    def handlers(self) -> dict[str, Handler]:
        return {PLACE_QUEUE: self.handle, COMPENSATE_QUEUE: self.handle}

    async def handle(self, delivery: Delivery) -> None:
        payload = delivery.envelope.payload
        step = payload.get("step")
        try:
            saga_id = uuid.UUID(str(payload.get("saga_id")))
        except ValueError as exc:
            raise ValueError(f"bad saga_id {payload.get('saga_id')!r}") from exc
        steps = {
            "reserve": self._reserve,
            "charge": self._charge,
            "confirm": self._confirm,
            "refund": self._refund,
            "release": self._release,
            "cancel": self._cancel,
        }
        if step not in steps or QUEUE_OF[step] != delivery.queue:
            raise ValueError(f"no step {step!r} on {delivery.queue}")
        crash_point(f"before_effect:{step}")
        with tracing.tracer().start_as_current_span(
            f"saga {KIND} {step}",
            attributes={
                "adbm.saga.kind": KIND,
                "adbm.saga.id": str(saga_id),
                "adbm.saga.step": step,
            },
        ) as span:
            moved = await steps[step](delivery, saga_id)
            span.set_attribute("adbm.saga.state", moved.value if moved else "unchanged")
        if moved is not None and step in _COMPENSATIONS:
            metrics.SAGA_COMPENSATIONS.labels(KIND, step).inc()
        if moved in TERMINAL:
            metrics.SAGA_OUTCOMES.labels(KIND, moved.value.lower()).inc()
        crash_point(f"after_effect:{step}")

    async def _begin_step(
        self, conn: Connection, delivery: Delivery, saga_id: uuid.UUID, expected: State
    ) -> Saga | None:
        """Inbox record and saga lock: the saga if this step should act, else None."""
        env = delivery.envelope
        if not await inbox.record(conn, env.tenant_id, delivery.queue, env.message_id):
            return None
        saga = await lock(conn, saga_id)
        if saga is None or saga.state is not expected:
            return None
        return saga

    async def _reserve(self, delivery: Delivery, saga_id: uuid.UUID) -> State | None:
        async with self._db.transaction(delivery.envelope.tenant_id) as conn:
            saga = await self._begin_step(conn, delivery, saga_id, State.PENDING)
            if saga is None:
                return None
            if saga.past_deadline:
                await move(
                    conn,
                    saga,
                    State.RELEASING,
                    step="reserve",
                    outcome="timed_out",
                    reason="timed out before the balance was reserved",
                )
                return State.RELEASING
            params = {"amount": saga.amount_minor, "account": saga.account_id, "actor": ACTOR}
            cur = await conn.execute(_DEBIT, params)
            if await cur.fetchone() is None:
                await move(
                    conn,
                    saga,
                    State.RELEASING,
                    step="reserve",
                    outcome="refused",
                    reason="insufficient balance",
                )
                return State.RELEASING
            await self._entry(conn, saga, "reserve")
            await move(conn, saga, State.RESERVED, step="reserve", outcome="reserved")
        return State.RESERVED

    async def _entry(self, conn: Connection, saga: Saga, kind: str) -> None:
        cur = await conn.execute(
            _ENTRY,
            (
                uuid7(),
                saga.tenant_id,
                saga.account_id,
                saga.id,
                kind,
                saga.amount_minor,
                ACTOR,
                ACTOR,
            ),
        )
        if await cur.fetchone() is None:
            # The state check above makes this unreachable; the unique key makes it harmless.
            raise RuntimeError(f"saga {saga.id} already has a {kind} entry")

    async def _charge(self, delivery: Delivery, saga_id: uuid.UUID) -> State | None:
        env = delivery.envelope
        if await inbox.seen(self._db, env.tenant_id, delivery.queue, env.message_id):
            return None
        async with self._db.transaction(env.tenant_id) as conn:
            saga = await lock(conn, saga_id)
            if saga is None or saga.state is not State.RESERVED:
                return None
            if not saga.charge_attempted:
                await repository.update(
                    conn,
                    "sagas",
                    saga.id,
                    expected_version=saga.version,
                    changes={"charge_attempted": True},
                    actor=ACTOR,
                )
        result = await self._payments.charge(
            saga.id,
            amount_minor=saga.amount_minor,
            currency=saga.currency,
            reference=saga.order_id,
        )
        async with self._db.transaction(env.tenant_id) as conn:
            current = await self._begin_step(conn, delivery, saga_id, State.RESERVED)
            if current is None:
                return None
            return await self._after_charge(conn, delivery, current, result)

    async def _after_charge(
        self, conn: Connection, delivery: Delivery, saga: Saga, result: Result
    ) -> State:
        if result.outcome is Outcome.SUCCEEDED:
            await move(
                conn,
                saga,
                State.CHARGED,
                step="charge",
                outcome="charged",
                detail=result.detail,
                charge_id=result.charge_id,
            )
            return State.CHARGED
        if result.outcome is Outcome.DECLINED:
            await move(
                conn,
                saga,
                State.REFUNDING,
                step="charge",
                outcome="declined",
                detail=result.detail,
                reason=f"payment {result.detail}",
            )
            return State.REFUNDING
        if not delivery.final and not saga.past_deadline:
            # Rolls back this transaction, inbox row included: the retry runs the step again.
            raise Retry(result.detail)
        await move(
            conn,
            saga,
            State.REFUNDING,
            step="charge",
            outcome="gave_up",
            detail=result.detail,
            reason=f"payment provider unavailable ({result.detail})",
        )
        return State.REFUNDING

    async def _confirm(self, delivery: Delivery, saga_id: uuid.UUID) -> State | None:
        async with self._db.transaction(delivery.envelope.tenant_id) as conn:
            saga = await self._begin_step(conn, delivery, saga_id, State.CHARGED)
            if saga is None:
                return None
            await self._set_order(conn, saga, "CONFIRMED", None)
            await move(conn, saga, State.CONFIRMED, step="confirm", outcome="confirmed")
            await notifications.announce(
                conn, saga.tenant_id, saga.order_id, "CONFIRMED", actor=ACTOR
            )
        return State.CONFIRMED

    async def _refund(self, delivery: Delivery, saga_id: uuid.UUID) -> State | None:
        env = delivery.envelope
        if await inbox.seen(self._db, env.tenant_id, delivery.queue, env.message_id):
            return None
        result = await self._payments.refund(saga_id)
        if result.outcome is not Outcome.SUCCEEDED:
            # Never given up: the balance is released only once the provider confirmed. After
            # the last attempt the message is dead-lettered and the sweep drives it again.
            raise Retry(result.detail)
        async with self._db.transaction(env.tenant_id) as conn:
            saga = await self._begin_step(conn, delivery, saga_id, State.REFUNDING)
            if saga is None:
                return None
            await move(conn, saga, State.RELEASING, step="refund", outcome=result.detail)
        return State.RELEASING

    async def _release(self, delivery: Delivery, saga_id: uuid.UUID) -> State | None:
        async with self._db.transaction(delivery.envelope.tenant_id) as conn:
            saga = await self._begin_step(conn, delivery, saga_id, State.RELEASING)
            if saga is None:
                return None
            cur = await conn.execute(_ENTRIES, (saga.id,))
            kinds = {row["kind"] for row in await cur.fetchall()}
            if "reserve" in kinds and "release" not in kinds:
                params = {"amount": saga.amount_minor, "account": saga.account_id, "actor": ACTOR}
                await conn.execute(_CREDIT, params)
                await self._entry(conn, saga, "release")
                outcome = "released"
            else:
                outcome = "nothing reserved"
            await move(conn, saga, State.CANCELLING, step="release", outcome=outcome)
        return State.CANCELLING

    async def _cancel(self, delivery: Delivery, saga_id: uuid.UUID) -> State | None:
        async with self._db.transaction(delivery.envelope.tenant_id) as conn:
            saga = await self._begin_step(conn, delivery, saga_id, State.CANCELLING)
            if saga is None:
                return None
            await self._set_order(conn, saga, "CANCELLED", saga.reason or "cancelled")
            await move(conn, saga, State.CANCELLED, step="cancel", outcome="cancelled")
            await notifications.announce(
                conn, saga.tenant_id, saga.order_id, "CANCELLED", actor=ACTOR
            )
        return State.CANCELLED

    async def _set_order(
        self, conn: Connection, saga: Saga, status: str, reason: str | None
    ) -> None:
        order = await repository.get(conn, "orders", saga.order_id)
        await repository.update(
            conn,
            "orders",
            saga.order_id,
            expected_version=order["version"],
            changes={"status": status, "status_reason": reason},
            actor=ACTOR,
        )
