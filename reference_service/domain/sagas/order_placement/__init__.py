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

from reference_service.domain.orders import OrderPlace, OrderRejected
from reference_service.domain.sagas.order_placement.placing import place_order
from reference_service.domain.sagas.order_placement.recovery import sweep
from reference_service.domain.sagas.order_placement.states import (
    COMPENSATE_QUEUE,
    KIND,
    PLACE_QUEUE,
    TERMINAL,
    State,
)
from reference_service.domain.sagas.order_placement.steps import OrderSaga

__all__ = [
    "COMPENSATE_QUEUE",
    "KIND",
    "PLACE_QUEUE",
    "TERMINAL",
    "OrderPlace",
    "OrderRejected",
    "OrderSaga",
    "State",
    "place_order",
    "sweep",
]
