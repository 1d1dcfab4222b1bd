"""`AdbmClient`: the v2 API over httpx.

Retries are safe by construction: every write that is not naturally idempotent carries an
`Idempotency-Key` made once per logical operation (one method call) and sent again on each
retry, so a retried create never creates twice; a change or delete carries the `If-Match` of the
version it was computed from. 429 and 503 answers, and 409 `idempotency-in-flight`, are retried
after their `Retry-After`; connection failures are retried for requests that are safe to repeat.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel

from adbm_client import problems
from adbm_client.models import Account, Money, Order, Page, Product

API = "/api/v2"
IDEMPOTENCY_KEY = "Idempotency-Key"
M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=Page[Any])


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    """Sends of one operation at most, the first included."""
    backoff_seconds: float = 0.25
    """The first wait when the answer names none (connection failures), doubling each time."""
    max_wait_seconds: float = 30.0
    """A `Retry-After` longer than this is not waited out: the problem is raised instead."""


def _retryable(problem: problems.Problem) -> bool:
    return problem.status in (429, 503) or isinstance(problem, problems.IdempotencyInFlight)


class AdbmClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        new_key: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._new_key = new_key

    def __enter__(self) -> AdbmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- products ------------------------------------------------------------------------------

    def create_product(self, sku: str, name: str, price: Money) -> Product:
        body = {"sku": sku, "name": name, "price": price.model_dump()}
        return self._write(Product, "POST", f"{API}/products", body)

    def get_product(self, product_id: UUID) -> Product:
        return self._read(Product, f"{API}/products/{product_id}")

    def update_product(
        self, product: Product, *, name: str | None = None, price: Money | None = None
    ) -> Product:
        """Changes `product` as read: `PreconditionFailed` if it changed since."""
        body = _changes(name=name, price=price.model_dump() if price else None)
        return self._write(
            Product, "PATCH", f"{API}/products/{product.id}", body, if_match=product.etag
        )

    def delete_product(self, product: Product) -> None:
        self._send("DELETE", f"{API}/products/{product.id}", if_match=product.etag)

    def products_page(self, *, limit: int | None = None) -> Page[Product]:
        """The first page; `next_page` gives the following ones."""
        return self._page(Page[Product], f"{API}/products", {"limit": limit})

    def products(self, *, limit: int | None = None) -> Iterator[Product]:
        """Every item, page after page."""
        return self._walk(self.products_page(limit=limit))

    # --- accounts ------------------------------------------------------------------------------

    def create_account(self, name: str, balance: Money) -> Account:
        body = {"name": name, "balance": balance.model_dump()}
        return self._write(Account, "POST", f"{API}/accounts", body)

    def get_account(self, account_id: UUID) -> Account:
        return self._read(Account, f"{API}/accounts/{account_id}")

    def update_account(self, account: Account, *, name: str) -> Account:
        return self._write(
            Account, "PATCH", f"{API}/accounts/{account.id}", {"name": name}, if_match=account.etag
        )

    def delete_account(self, account: Account) -> None:
        self._send("DELETE", f"{API}/accounts/{account.id}", if_match=account.etag)

    def accounts_page(self, *, limit: int | None = None) -> Page[Account]:
        return self._page(Page[Account], f"{API}/accounts", {"limit": limit})

    def accounts(self, *, limit: int | None = None) -> Iterator[Account]:
        return self._walk(self.accounts_page(limit=limit))

    # --- orders --------------------------------------------------------------------------------

    def get_order(self, order_id: UUID) -> Order:
        return self._read(Order, f"{API}/orders/{order_id}")

    def orders_page(self, *, limit: int | None = None) -> Page[Order]:
        return self._page(Page[Order], f"{API}/orders", {"limit": limit})

    def orders(self, *, limit: int | None = None) -> Iterator[Order]:
        return self._walk(self.orders_page(limit=limit))

    # --- the plumbing --------------------------------------------------------------------------

    def _read(self, model: type[M], path: str) -> M:
        return model.model_validate_json(self._send("GET", path).content)

    def _write(
        self,
        model: type[M],
        method: str,
        path: str,
        body: Mapping[str, Any],
        *,
        if_match: str | None = None,
    ) -> M:
        # One key per logical operation: made here, once, and reused by every retry below.
        headers = {IDEMPOTENCY_KEY: self._new_key()}
        response = self._send(method, path, json=body, headers=headers, if_match=if_match)
        return model.model_validate_json(response.content)

    def next_page(self, page: P) -> P | None:
        """The page after `page`, or None after the last. The service's `next` is a relative
        URL carrying the signed cursor and the limit: followed as given, never rebuilt."""
        if page.next is None:
            return None
        return type(page).model_validate_json(self._send("GET", page.next).content)

    def _page(self, model: type[M], path: str, params: Mapping[str, Any]) -> M:
        given = {k: v for k, v in params.items() if v is not None}
        return model.model_validate_json(self._send("GET", path, params=given).content)

    def _walk(self, first: P) -> Iterator[Any]:
        page: P | None = first
        while page is not None:
            yield from page.items
            page = self.next_page(page)

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        if_match: str | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if if_match is not None:
            sent["If-Match"] = if_match
        # Safe to send again after a lost answer: reads, deletes (idempotent, and pinned to a
        # version), and writes carrying their operation's key.
        repeatable = method in ("GET", "DELETE") or IDEMPOTENCY_KEY in sent
        policy = self._retry
        for attempt in range(1, policy.attempts + 1):
            last = attempt == policy.attempts
            try:
                response = self._http.request(method, path, json=json, params=params, headers=sent)
            except httpx.TransportError:
                if last or not repeatable:
                    raise
                self._sleep(policy.backoff_seconds * 2 ** (attempt - 1))
                continue
            if response.status_code < 400:
                return response
            problem = problems.from_response(response)
            if last or not _retryable(problem):
                raise problem
            wait = problem.retry_after
            if wait is None:
                wait = policy.backoff_seconds * 2 ** (attempt - 1)
            if wait > policy.max_wait_seconds:
                raise problem
            self._sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _changes(**fields: Any) -> dict[str, Any]:
    """A PATCH body: only the fields being changed."""
    return {k: v for k, v in fields.items() if v is not None}
