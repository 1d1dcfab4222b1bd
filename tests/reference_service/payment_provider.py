"""A small real payment provider: an HTTP server the saga calls, in a thread of the test process.

It implements the API `reference_service.domain.sagas.payments` documents: charges and refunds,
both idempotent by the `Idempotency-Key` header, and refund-before-charge voiding the key. What a
charge does depends on the last digit of its amount, so a test picks an outcome per order by
its price:

- 1: declined (402);
- 2: slow: answers after `slow_seconds` (longer than the client's timeout), then charges unless
  the key was voided meanwhile;
- 3: fails after charging: the charge is recorded, and every answer is a 500;
- anything else: charged (201; 200 with the same charge for a repeated key).

`net_charged(key)` is what the provider holds, for the test to compare with the service's books.

The worker's pact of this API (`tests/contract/pacts/adbm-worker-payment-provider.json`) is
verified against this provider (`tests/contract/test_pact_payment_provider.py`), so what it
answers cannot drift from what the saga's client was written against.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DECLINE, SLOW, FAIL_AFTER_CHARGE = 1, 2, 3


@dataclass
class Charge:
    id: str
    amount_minor: int
    refunded: bool = False


@dataclass
class Provider:
    slow_seconds: float = 1.0
    charges: dict[str, Charge] = field(default_factory=dict)
    voided: set[str] = field(default_factory=set)
    charge_effects: dict[str, int] = field(default_factory=dict)
    """How many times a charge was actually made per key (must never exceed one)."""
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def net_charged(self, key: uuid.UUID) -> int:
        with self.lock:
            charge = self.charges.get(str(key))
            return 0 if charge is None or charge.refunded else charge.amount_minor

    def reset(self) -> None:
        """Forget every charge and voided key (a provider state's fresh start)."""
        with self.lock:
            self.charges.clear()
            self.voided.clear()
            self.charge_effects.clear()

    def void(self, key: str) -> None:
        """As a refund of `key` before any charge leaves it: a later charge is declined."""
        with self.lock:
            self.voided.add(key)

    def record_charge(self, key: str, amount: int) -> Charge | None:
        """Charge `amount` under `key` once (None: the key was voided); a repeat is the same."""
        with self.lock:
            if key in self.voided:
                return None
            if key not in self.charges:
                self.charges[key] = Charge(f"ch_{uuid.uuid4().hex[:12]}", amount)
                self.charge_effects[key] = self.charge_effects.get(key, 0) + 1
            return self.charges[key]

    async def charges_endpoint(self, request: Request) -> JSONResponse:
        self.requests += 1
        key = request.headers.get("idempotency-key")
        try:
            body = await request.json()
        except ClientDisconnect:  # the client timed out before the body was read
            return JSONResponse({"error": "client went away"}, status_code=499)
        if not key:
            return JSONResponse({"error": "Idempotency-Key required"}, status_code=400)
        amount = int(body["amount_minor"])
        behaviour = amount % 10
        if behaviour == DECLINE:
            return JSONResponse({"error": "card_declined"}, status_code=402)
        if behaviour == SLOW:
            await asyncio.sleep(self.slow_seconds)
        existed = key in self.charges
        charge = self.record_charge(key, amount)
        if charge is None:
            return JSONResponse({"error": "voided"}, status_code=402)
        if behaviour == FAIL_AFTER_CHARGE:
            return JSONResponse({"error": "internal"}, status_code=500)
        return JSONResponse({"id": charge.id}, status_code=200 if existed else 201)

    async def refunds_endpoint(self, request: Request) -> JSONResponse:
        self.requests += 1
        try:
            body = await request.json()
        except ClientDisconnect:
            return JSONResponse({"error": "client went away"}, status_code=499)
        key = str(body["charge_key"])
        with self.lock:
            charge = self.charges.get(key)
            if charge is None:
                self.voided.add(key)
                return JSONResponse({"status": "voided"})
            charge.refunded = True
        return JSONResponse({"status": "refunded"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve(slow_seconds: float = 1.0) -> Iterator[tuple[Provider, str]]:
    """Run a provider on a free port; yields it and its base URL."""
    provider = Provider(slow_seconds=slow_seconds)
    app = Starlette(
        routes=[
            Route("/charges", provider.charges_endpoint, methods=["POST"]),
            Route("/refunds", provider.refunds_endpoint, methods=["POST"]),
        ]
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the payment provider did not start")
        time.sleep(0.02)
    try:
        yield provider, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
