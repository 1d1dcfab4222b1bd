"""`POST /api/v1/orders` and `/api/v2/orders`: place an order, answer 202 Accepted.

Placing an order reaches the payment provider, so it never runs in the request: the route
creates the order `PENDING`, its saga and the saga's first outbox message in one transaction
and answers 202 with `Location` of the order, whose `status` the client polls until it is
`CONFIRMED` or `CANCELLED` (the saga: `domain/sagas/order_placement/`). `Idempotency-Key` is
required (`WRITES`), so a retried POST places one order.

Kept apart from `routes_v1`/`routes_v2` so that it can be wired in wherever the routes are
declared: include `router(prefix, shape)` for each version and protect `WRITES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from fastapi import APIRouter, Request, Response

from reference_service.domain import orders
from reference_service.domain.common import Resource
from reference_service.domain.sagas import order_placement
from reference_service.domain.sagas.order_placement import OrderPlace, OrderRejected
from reference_service.http.auth import CurrentPrincipal, actor
from reference_service.http.problems import SERVICE_UNAVAILABLE, Problem, register
from reference_service.http.routing import ERRORS, Svc, resource_response

ORDER_REJECTED: Final = register(
    "order-rejected",
    "Order rejected",
    422,
    "The order cannot be placed as asked: the product's currency differs from the account's,"
    " or the total is out of range.",
)


def writes(prefix: str) -> frozenset[tuple[str, str]]:
    """The routes `idempotency.install` must protect."""
    return frozenset({("POST", f"{prefix}/orders")})


WRITES: Final = writes("/api/v1") | writes("/api/v2")


def router(prefix: str, shape: Callable[[orders.Order], Resource]) -> APIRouter:
    """The order placement route under `prefix`; `shape` renders an order in that version."""
    placed = APIRouter(prefix=prefix)

    @placed.post(
        "/orders",
        status_code=202,
        responses=ERRORS,
        tags=["orders"],
        summary="Place an order (asynchronous: poll the Location until CONFIRMED or CANCELLED)",
    )
    async def place_order(
        data: OrderPlace, request: Request, principal: CurrentPrincipal, svc: Svc
    ) -> Response:
        if not svc.settings.queue_enabled:
            # Without a queue no worker would ever run the saga: refuse rather than accept
            # work that stays PENDING forever.
            raise Problem(SERVICE_UNAVAILABLE, "orders need the queue, which is not configured")
        try:
            order = await order_placement.place_order(
                svc.database,
                principal.tenant_id,
                data,
                actor=actor(principal),
                deadline_seconds=svc.settings.saga_deadline_seconds,
            )
        except OrderRejected as exc:
            raise Problem(ORDER_REJECTED, str(exc)) from exc
        return resource_response(shape(order), 202, Location=f"{request.url.path}/{order.id}")

    return placed
