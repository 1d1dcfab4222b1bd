"""The saga's states, the step that leaves each live one, and the queue each step runs on."""

from __future__ import annotations

import enum
from typing import Final

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
