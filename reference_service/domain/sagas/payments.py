"""The payment provider's HTTP API, as the order saga uses it.

Two calls, both idempotent at the provider by the `Idempotency-Key` header (the saga id), so a
retry after a lost answer never charges twice:

- `POST /charges` `{"amount_minor", "currency", "reference"}`: 201/200 with `{"id"}` when
  charged (200: this key was charged before), 402 when declined (final), anything else unknown.
- `POST /refunds` `{"charge_key"}`: 200 once the charge under that key is refunded, or voided
  when there was none (a charge arriving later under a voided key is declined), else unknown.

"Unknown" (timeout, connection error, 5xx) means the charge may or may not have happened: the
saga retries with the same key, and a compensation always refunds by key.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

import httpx


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    detail: str
    charge_id: str | None = None


class PaymentProvider:
    def __init__(self, base_url: str | None, *, connect_timeout: float, timeout: float) -> None:
        # None: no provider is configured. Orders are then refused at the API, but a saga
        # accepted before the setting was removed still gets an answer: UNKNOWN, so it is
        # retried and compensated rather than failing the worker.
        self._configured = base_url is not None
        self._client = httpx.AsyncClient(
            base_url=base_url or "",
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            # The saga retries through the queue with backoff; no hidden retries here.
            transport=httpx.AsyncHTTPTransport(retries=0),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def charge(
        self, key: uuid.UUID, *, amount_minor: int, currency: str, reference: uuid.UUID
    ) -> Result:
        response = await self._post(
            "/charges",
            key,
            {"amount_minor": amount_minor, "currency": currency, "reference": str(reference)},
        )
        if isinstance(response, Result):
            return response
        if response.status_code in (200, 201):
            charge_id = _field(response, "id")
            if charge_id is None:
                return Result(Outcome.UNKNOWN, "charge answer without an id")
            return Result(Outcome.SUCCEEDED, f"charged ({response.status_code})", charge_id)
        if response.status_code == 402:
            return Result(Outcome.DECLINED, f"declined: {_field(response, 'error') or 'no reason'}")
        return Result(Outcome.UNKNOWN, f"provider answered {response.status_code}")

    async def refund(self, key: uuid.UUID) -> Result:
        response = await self._post("/refunds", key, {"charge_key": str(key)})
        if isinstance(response, Result):
            return response
        if response.status_code == 200:
            return Result(Outcome.SUCCEEDED, _field(response, "status") or "refunded")
        return Result(Outcome.UNKNOWN, f"provider answered {response.status_code}")

    async def _post(
        self, path: str, key: uuid.UUID, body: dict[str, object]
    ) -> httpx.Response | Result:
        if not self._configured:
            return Result(Outcome.UNKNOWN, f"{path}: no payment provider configured")
        try:
            return await self._client.post(path, json=body, headers={"Idempotency-Key": str(key)})
        except httpx.TimeoutException:
            return Result(Outcome.UNKNOWN, f"{path}: timed out")
        except httpx.TransportError as exc:
            return Result(Outcome.UNKNOWN, f"{path}: {type(exc).__name__}")


def _field(response: httpx.Response, name: str) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    value = body.get(name) if isinstance(body, dict) else None
    return None if value is None else str(value)
