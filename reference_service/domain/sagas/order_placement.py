"""The order placement saga: reserve the balance, charge the payment provider, confirm.

States (persisted in `sagas.state`; each step's outcome in `saga_steps`):

    PENDING --reserve--> RESERVED --charge--> CHARGED --confirm--> CONFIRMED
       |                    |
       | refused            | declined, provider unreachable, deadline passed
       v                    v
    RELEASING <--refund-- REFUNDING
       |
       +--release--> CANCELLING --cancel--> CANCELLED

Every step is its own transaction, started by a message (`orders.place` for the forward steps,
`orders.compensate` for the compensations) and ending with the message of the next step written
to the outbox in the same transaction. Each step:

- records its message in the inbox (a redelivery is acknowledged and ignored);
- locks the saga row and acts only if the saga is in the state the step expects, so a step
  driven twice (a redelivery, or the recovery sweep) does nothing the second time;
- moves money only through `account_entries`, whose unique (saga, kind) key makes a second
  debit or a second release impossible.

The charge is an external call and runs outside any transaction, with the saga id as the
provider's idempotency key; `charge_attempted` is committed before the first call, and from
then on a compensation refunds by that key (which voids the key if no charge happened).

Recovery: the sweep picks sagas that have not moved for `saga_step_timeout_seconds` and drives
their current step again, or, for a saga still going forward past its deadline, starts the
compensations. So a lost message or a message dead-lettered after its last attempt never leaves
a saga where it is: every saga ends CONFIRMED or CANCELLED.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final

from psycopg import sql
from pydantic import Field

from reference_service.db import repository
from reference_service.db.pool import Connection, Database
from reference_service.db.uuid7 import uuid7
from reference_service.domain import orders
from reference_service.domain.common import INT64_MAX, Input
from reference_service.domain.sagas.payments import Outcome, PaymentProvider, Result
from reference_service.messaging import inbox, outbox
from reference_service.messaging.consumer import Delivery, Handler, Retry
from reference_service.messaging.faults import crash_point

log = logging.getLogger(__name__)

KIND: Final = "order_placement"
PLACE_QUEUE: Final = "orders.place"
COMPENSATE_QUEUE: Final = "orders.compensate"
ACTOR: Final = "saga:order_placement"


class State(enum.StrEnum):
    PENDING = "PENDING"
    RESERVED = "RESERVED"
    CHARGED = "CHARGED"
    CONFIRMED = "CONFIRMED"
    REFUNDING = "REFUNDING"
    RELEASING = "RELEASING"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


TERMINAL: Final = frozenset({State.CONFIRMED, State.CANCELLED})

# The step that moves a saga out of each live state, and the queue it runs on.
STEP_OF: Final[dict[State, str]] = {
    State.PENDING: "reserve",
    State.RESERVED: "charge",
    State.CHARGED: "confirm",
    State.REFUNDING: "refund",
    State.RELEASING: "release",
    State.CANCELLING: "cancel",
}
QUEUE_OF: Final[dict[str, str]] = {
    "reserve": PLACE_QUEUE,
    "charge": PLACE_QUEUE,
    "confirm": PLACE_QUEUE,
    "refund": COMPENSATE_QUEUE,
    "release": COMPENSATE_QUEUE,
    "cancel": COMPENSATE_QUEUE,
}


# A JSON body carries ids as strings: strict mode would refuse every one of them.
_Id = Annotated[uuid.UUID, Field(strict=False)]


class OrderPlace(Input):
    account_id: _Id
    product_id: _Id
    quantity: int = Field(ge=1, le=10_000)


class OrderRejected(ValueError):
    """The order cannot be placed as asked (currency mismatch, total out of range)."""


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


async def place_order(
    database: Database,
    tenant_id: uuid.UUID,
    data: OrderPlace,
    *,
    actor: str,
    deadline_seconds: float,
) -> orders.Order:
    """Create the order PENDING, its saga, and the saga's first message, in one transaction.
    Raises repository.NotFound for an unknown account or product, OrderRejected."""
    async with database.transaction(tenant_id) as conn:
        product = await repository.get(conn, "products", data.product_id)
        account = await repository.get(conn, "accounts", data.account_id)
        if product["currency"] != account["currency"]:
            raise OrderRejected(
                f"the product is priced in {product['currency']}, the account holds"
                f" {account['currency']}"
            )
        total = product["price_minor"] * data.quantity
        if total > INT64_MAX:
            raise OrderRejected("the order total is out of range")
        order = await repository.insert(
            conn,
            "orders",
            {
                "tenant_id": tenant_id,
                "account_id": data.account_id,
                "product_id": data.product_id,
                "quantity": data.quantity,
                "total_minor": total,
                "currency": product["currency"],
                "status": "PENDING",
            },
            actor=actor,
        )
        saga = await repository.insert(
            conn,
            "sagas",
            {
                "tenant_id": tenant_id,
                "kind": KIND,
                "order_id": order["id"],
                "account_id": data.account_id,
                "amount_minor": total,
                "currency": product["currency"],
                "state": State.PENDING.value,
                "deadline_at": await _deadline(conn, deadline_seconds),
            },
            actor=actor,
        )
        await _send(conn, tenant_id, saga["id"], "reserve")
    return orders.Order.model_validate(order)


async def _deadline(conn: Connection, seconds: float) -> Any:
    # The database's clock, the one the sweep compares with.
    cur = await conn.execute("SELECT now() + %s AS deadline", (timedelta(seconds=seconds),))
    row = await cur.fetchone()
    assert row is not None
    return row["deadline"]


async def _send(conn: Connection, tenant_id: uuid.UUID, saga_id: uuid.UUID, step: str) -> None:
    await outbox.enqueue(
        conn, tenant_id, QUEUE_OF[step], {"saga_id": str(saga_id), "step": step}, actor=ACTOR
    )


_LOCK = sql.SQL(
    "SELECT id, tenant_id, version, order_id, account_id, amount_minor, currency, state, reason,"
    " charge_attempted, deadline_at < now() AS past_deadline"
    " FROM {} WHERE id = %s AND NOT is_deleted FOR UPDATE"
).format(sql.Identifier("public", "sagas"))

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

_STEP = sql.SQL(
    "INSERT INTO {} (id, tenant_id, saga_id, step, outcome, detail, created_by, updated_by)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (saga_id, step) DO NOTHING"
).format(sql.Identifier("public", "saga_steps"))


async def _lock(conn: Connection, saga_id: uuid.UUID) -> Saga | None:
    cur = await conn.execute(_LOCK, (saga_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    return Saga(**{**row, "state": State(row["state"])})


async def _move(
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
        await _send(conn, saga.tenant_id, saga.id, STEP_OF[to])


def _compensation_start(saga: Saga) -> State:
    """Where compensating a saga that is going forward starts."""
    return State.REFUNDING if saga.charge_attempted else State.RELEASING


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
        await steps[step](delivery, saga_id)
        crash_point(f"after_effect:{step}")

    async def _begin_step(
        self, conn: Connection, delivery: Delivery, saga_id: uuid.UUID, expected: State
    ) -> Saga | None:
        """Inbox record and saga lock: the saga if this step should act, else None."""
        env = delivery.envelope
        if not await inbox.record(conn, env.tenant_id, delivery.queue, env.message_id):
            return None
        saga = await _lock(conn, saga_id)
        if saga is None or saga.state is not expected:
            return None
        return saga

    async def _reserve(self, delivery: Delivery, saga_id: uuid.UUID) -> None:
        async with self._db.transaction(delivery.envelope.tenant_id) as conn:
            saga = await self._begin_step(conn, delivery, saga_id, State.PENDING)
            if saga is None:
                return
            if saga.past_deadline:
                await _move(
                    conn,
                    saga,
                    State.RELEASING,
                    step="reserve",
                    outcome="timed_out",
                    reason="timed out before the balance was reserved",
                )
                return
            params = {"amount": saga.amount_minor, "account": saga.account_id, "actor": ACTOR}
            cur = await conn.execute(_DEBIT, params)
            if await cur.fetchone() is None:
                await _move(
                    conn,
                    saga,
                    State.RELEASING,
                    step="reserve",
                    outcome="refused",
                    reason="insufficient balance",
                )
                return
            await self._entry(conn, saga, "reserve")
            await _move(conn, saga, State.RESERVED, step="reserve", outcome="reserved")

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

    async def _charge(self, delivery: Delivery, saga_id: uuid.UUID) -> None:
        env = delivery.envelope
        if await inbox.seen(self._db, env.tenant_id, delivery.queue, env.message_id):
            return
        async with self._db.transaction(env.tenant_id) as conn:
            saga = await _lock(conn, saga_id)
            if saga is None or saga.state is not State.RESERVED:
                return
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
                return
            await self._after_charge(conn, delivery, current, result)

    async def _after_charge(
        self, conn: Connection, delivery: Delivery, saga: Saga, result: Result
    ) -> None:
        if result.outcome is Outcome.SUCCEEDED:
            await _move(
                conn,
                saga,
                State.CHARGED,
                step="charge",
                outcome="charged",
                detail=result.detail,
                charge_id=result.charge_id,
            )
        elif result.outcome is Outcome.DECLINED:
            await _move(
                conn,
                saga,
                State.REFUNDING,
                step="charge",
                outcome="declined",
                detail=result.detail,
                reason=f"payment {result.detail}",
            )
        elif not delivery.final and not saga.past_deadline:
            # Rolls back this transaction, inbox row included: the retry runs the step again.
            raise Retry(result.detail)
        else:
            await _move(
                conn,
                saga,
                State.REFUNDING,
                step="charge",
                outcome="gave_up",
                detail=result.detail,
                reason=f"payment provider unavailable ({result.detail})",
            )

    async def _confirm(self, delivery: Delivery, saga_id: uuid.UUID) -> None:
        async with self._db.transaction(delivery.envelope.tenant_id) as conn:
            saga = await self._begin_step(conn, delivery, saga_id, State.CHARGED)
            if saga is None:
                return
            await self._set_order(conn, saga, "CONFIRMED", None)
            await _move(conn, saga, State.CONFIRMED, step="confirm", outcome="confirmed")

    async def _refund(self, delivery: Delivery, saga_id: uuid.UUID) -> None:
        env = delivery.envelope
        if await inbox.seen(self._db, env.tenant_id, delivery.queue, env.message_id):
            return
        result = await self._payments.refund(saga_id)
        if result.outcome is not Outcome.SUCCEEDED:
            # Never given up: the balance is released only once the provider confirmed. After
            # the last attempt the message is dead-lettered and the sweep drives it again.
            raise Retry(result.detail)
        async with self._db.transaction(env.tenant_id) as conn:
            saga = await self._begin_step(conn, delivery, saga_id, State.REFUNDING)
            if saga is None:
                return
            await _move(conn, saga, State.RELEASING, step="refund", outcome=result.detail)

    async def _release(self, delivery: Delivery, saga_id: uuid.UUID) -> None:
        async with self._db.transaction(delivery.envelope.tenant_id) as conn:
            saga = await self._begin_step(conn, delivery, saga_id, State.RELEASING)
            if saga is None:
                return
            cur = await conn.execute(_ENTRIES, (saga.id,))
            kinds = {row["kind"] for row in await cur.fetchall()}
            if "reserve" in kinds and "release" not in kinds:
                params = {"amount": saga.amount_minor, "account": saga.account_id, "actor": ACTOR}
                await conn.execute(_CREDIT, params)
                await self._entry(conn, saga, "release")
                outcome = "released"
            else:
                outcome = "nothing reserved"
            await _move(conn, saga, State.CANCELLING, step="release", outcome=outcome)

    async def _cancel(self, delivery: Delivery, saga_id: uuid.UUID) -> None:
        async with self._db.transaction(delivery.envelope.tenant_id) as conn:
            saga = await self._begin_step(conn, delivery, saga_id, State.CANCELLING)
            if saga is None:
                return
            await self._set_order(conn, saga, "CANCELLED", saga.reason or "cancelled")
            await _move(conn, saga, State.CANCELLED, step="cancel", outcome="cancelled")

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
            saga = await _lock(conn, saga_id)
            if saga is None or saga.state in TERMINAL:
                continue
            forward = saga.state in (State.PENDING, State.RESERVED)
            if forward and saga.past_deadline:
                log.info("saga %s passed its deadline in %s: compensating", saga.id, saga.state)
                await _move(
                    conn,
                    saga,
                    _compensation_start(saga),
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
                await _send(conn, tenant_id, saga.id, STEP_OF[saga.state])
    return len(claimed)
