"""One access line and the request metrics per HTTP request, from one pure ASGI middleware.

Both are keyed by the route template the router matched (`scope["route"]`), never the raw
path: an id in a label or a log field would make one series, or one distinct value, per
object. The request id (`X-Request-Id`, the caller's when it is a sane token, else a new one)
is echoed on the response and bound, with the tenant once authentication knows it, to every
line the request writes.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any, Final

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reference_service.observability import metrics
from reference_service.observability.logging import get_logger
from reference_service.observability.tracing import Unhandled

REQUEST_ID_HEADER: Final = b"x-request-id"
SCOPE_KEY: Final = "adbm.request"
"""Where the middleware keeps the request's `RequestRecord` in the ASGI scope."""

UNMATCHED: Final = "unmatched"
"""The route label of a request no route matched (a 404 or 405 of the router)."""

# A caller's id is kept only when it cannot break a log line or a header, or grow unbounded.
_SANE_ID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# Methods outside this set share one label value: a client cannot create series at will.
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

log = get_logger("adbm.access")


@dataclass(slots=True)
class RequestRecord:
    """What the request's later layers tell the access line (the tenant, once known)."""

    request_id: str
    tenant: str | None = None


def bind_tenant(scope: Scope, tenant: str) -> None:
    """Called by authentication: the tenant on the access line and on every later line."""
    record = scope.get(SCOPE_KEY)
    if isinstance(record, RequestRecord):
        record.tenant = tenant
    route = scope.get("route")
    fields: dict[str, Any] = {"tenant": tenant}
    if route is not None:
        fields["route"] = route.path
    structlog.contextvars.bind_contextvars(**fields)


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER and _SANE_ID.fullmatch(value):
            return value.decode("ascii")
    return os.urandom(16).hex()


class _Series:
    """The request metrics' children per (route, method, status class), looked up once each:
    `labels()` takes a lock and builds a key on every call, which the hot path need not pay."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, metrics.status_class(status))
        children = self._children.get(key)
        if children is None:
            children = (metrics.REQUESTS.labels(*key), metrics.REQUEST_SECONDS.labels(*key))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class RequestObservation:
    """Pure ASGI middleware: request id in and out, the access line, the request metrics.

    It runs inside the request's span (`tracing.RequestSpans`), so the access line carries the
    trace id. An exception escaping the app is answered here by `on_unhandled` (the HTTP
    layer's 500, as `tracing.RequestSpans` does), so that 500 too has its request id, is counted
    and has its access line.
    """

    def __init__(self, app: ASGIApp, on_unhandled: Unhandled) -> None:
        self.app = app
        self.on_unhandled = on_unhandled
        self._series = _Series()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        record = RequestRecord(_request_id(scope["headers"]))
        scope[SCOPE_KEY] = record
        tokens = structlog.contextvars.bind_contextvars(request_id=record.request_id)
        status = 500
        started = False
        echoed = (REQUEST_ID_HEADER, record.request_id.encode("ascii"))

        async def observed_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception as exc:
            await self.on_unhandled(exc, scope, receive, observed_send, started=started)
        finally:
            seconds = time.perf_counter() - began
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = route_template(scope)
            self._series.observe(route, method, status, seconds)
            log.info(
                "request",
                method=method,
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 3),
                tenant=record.tenant,
            )
            structlog.contextvars.reset_contextvars(**tokens)
            # The tenant and route bound by authentication end with the request too.
            structlog.contextvars.unbind_contextvars("tenant", "route")
