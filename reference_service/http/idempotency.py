"""`Idempotency-Key` for unsafe routes: a retried write runs once and gets the first answer.

A client sends `Idempotency-Key: <1..255 visible ASCII>` with a POST or PATCH. The first request
with a key takes an in-flight lock in Redis and runs; its response (status, selected headers,
body) is stored for `ttl_seconds` and replayed to every later request with the same key and the
same payload, marked `Idempotent-Replayed: true`. While the first still runs, others get 409 with
`Retry-After`; the same key with another payload gets 422. A handler exception or a 5xx releases
the lock without storing, so a retry can run. Keys are scoped per tenant.

Each request costs one Redis round trip to decide (new / in flight / done / mismatch: one Lua
script), which the service sends together with the request's rate-limit decision (one script,
`guards.idempotent`), and, for a new request, one more to store or release. A decision asked
again with the same claim token (its first answer lost to a timeout) is still "new". Without
Redis the answer is 503: running the side effect without the guarantee is what the client asked
us not to do.

Two pieces, because the tenant is known only after authentication (a route dependency) while
the response exists only outside the route:

- `decide`, run by the `guards.idempotent` dependency that the endpoint factory puts on every
  write a resource declares idempotent: validates the header, fingerprints the request, decides
  through Redis, raises the problems, and leaves a claim for the middleware.
- `IdempotencyMiddleware`, pure ASGI: buffers the response of a claimed request, stores it (or
  releases the lock) before sending it, and sends replays. A client therefore never sees a
  first response that a retry could not replay.

The engine (`Idempotency`) is built once by the lifespan, into `Services`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final
from uuid import UUID

from fastapi import Request
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reference_service.http.problems import (
    IDEMPOTENCY_IN_FLIGHT,
    IDEMPOTENCY_KEY_REQUIRED,
    IDEMPOTENCY_KEY_REUSED,
    SERVICE_UNAVAILABLE,
    Problem,
    retry_after,
)
from reference_service.observability import metrics
from reference_service.observability.tracing import client_span

log = logging.getLogger(__name__)

KEY_HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
DEFAULT_LOCK_SECONDS: Final = 30.0
# Visible ASCII only: the key goes into a Redis key and into logs.
_SPAN: Final = {"db.system.name": "redis", "db.operation.name": "EVALSHA"}
_KEY_PATTERN: Final = re.compile(r"[\x21-\x7e]{1,255}")
# What a replay must repeat to be the same answer; framing headers (length, date) are recomputed.
STORED_HEADERS: Final = frozenset(
    {"content-type", "etag", "location", "content-location", "last-modified", "cache-control"}
)
# The scope entry through which `decide` hands its claim to the middleware.
_SLOT: Final = "adbm.idempotency"


# The methods whose responses the middleware may have to hold back: the ones a write uses.
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The header as the OpenAPI document declares it on every idempotent write. The guard reads the
# header itself (instead of a FastAPI `Header` parameter) so that a missing or malformed key is
# the `idempotency-key-required` problem, not a generic validation error.
KEY_PARAMETER: Final[dict[str, Any]] = {
    "name": KEY_HEADER.lower(),
    "in": "header",
    "required": True,
    "description": "Unique per logical operation (e.g. a UUID); reuse it when retrying.",
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
}

SCRIPT: Final = resources.files(__package__).joinpath("idempotency.lua").read_text()


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class New:
    """The caller owns the lock and must `store` or `release` with `token`."""

    token: str


@dataclass(frozen=True)
class InFlight:
    retry_after_ms: int


@dataclass(frozen=True)
class Mismatch:
    pass


@dataclass(frozen=True)
class Done:
    response: StoredResponse


Outcome = New | InFlight | Mismatch | Done


def _bytes(value: Any) -> bytes:
    # The service's client returns bytes; a client with decode_responses returns str.
    return value if isinstance(value, bytes) else str(value).encode()


def canonical_body(body: bytes, content_type: str | None) -> bytes:
    """JSON bodies with whitespace and member order normalised, so a retry that serialises the
    same document differently is still the same request; anything else byte for byte."""
    if body and content_type is not None and "json" in content_type.lower():
        try:
            document = json.loads(body)
        except ValueError:
            return body
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    return body


def fingerprint(method: str, target: str, body: bytes) -> str:
    """SHA-256 over method, path (with query) and canonical body, unambiguously delimited."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), target.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def valid_key(value: str | None) -> bool:
    return value is not None and _KEY_PATTERN.fullmatch(value) is not None


def outcome(reply: Any, token: str) -> Outcome:
    """The `begin` reply of `SCRIPT` as an outcome; `token` is the one the call was sent with."""
    verdict = _bytes(reply[0])
    if verdict == b"new":
        return New(token)
    if verdict == b"mismatch":
        return Mismatch()
    if verdict == b"busy":
        return InFlight(max(0, int(reply[1])))
    headers = [(str(n), str(v)) for n, v in json.loads(_bytes(reply[2]))]
    return Done(StoredResponse(int(reply[1]), headers, _bytes(reply[3])))


class Idempotency:
    """The Redis side: one record per (tenant, key), decided by `idempotency.lua`."""

    def __init__(
        self,
        redis: Redis,
        key_prefix: str,
        ttl_seconds: int,
        lock_seconds: float = DEFAULT_LOCK_SECONDS,
    ) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.ttl_ms = int(ttl_seconds * 1000)
        self.lock_ms = int(lock_seconds * 1000)
        # EVALSHA, loading the script again only when the server has lost it.
        self._script = redis.register_script(SCRIPT)

    def record_key(self, tenant_id: UUID, key: str) -> str:
        return f"{self.key_prefix}idem:{tenant_id}:{key}"

    def begin_call(
        self, tenant_id: UUID, key: str, request_fingerprint: str, token: str
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of `SCRIPT` that `begin` sends, for a caller that sends them
        in a round trip of its own making and hands the reply to `outcome`."""
        return (
            [self.record_key(tenant_id, key)],
            ["begin", request_fingerprint, token, self.lock_ms],
        )

    async def begin(
        self, tenant_id: UUID, key: str, request_fingerprint: str, token: str | None = None
    ) -> Outcome:
        """Decide a request; `token` is the claim's owner (a new one if not given)."""
        token = token or secrets.token_hex(16)
        keys, args = self.begin_call(tenant_id, key, request_fingerprint, token)
        with client_span("redis idempotency begin", _SPAN):
            reply = await self._script(keys=keys, args=args)
        return outcome(reply, token)

    async def store(self, tenant_id: UUID, key: str, token: str, response: StoredResponse) -> bool:
        """Record the response; False when `token` no longer owns the lock (it expired and
        another request took the key over), in which case nothing is written."""
        with client_span("redis idempotency store", _SPAN):
            stored = await self._script(
                keys=[self.record_key(tenant_id, key)],
                args=[
                    "store",
                    token,
                    self.ttl_ms,
                    response.status,
                    json.dumps(response.headers),
                    response.body,
                ],
            )
        return int(stored) == 1

    async def release(self, tenant_id: UUID, key: str, token: str) -> bool:
        """Drop the lock so a retry can run; False when `token` does not own it."""
        with client_span("redis idempotency release", _SPAN):
            released = await self._script(
                keys=[self.record_key(tenant_id, key)], args=["release", token]
            )
        return int(released) == 1


@dataclass
class _Claim:
    engine: Idempotency
    tenant_id: UUID
    key: str
    token: str


@dataclass
class _Slot:
    claim: _Claim | None = None
    replay: StoredResponse | None = None


class _Replayed(Exception):
    """Raised by `decide` to skip the route; the middleware answers with the stored response."""


_OUTCOME_LABELS: Final[dict[type, str]] = {
    New: "new",
    Done: "replayed",
    InFlight: "in_flight",
    Mismatch: "mismatch",
}


def _unavailable() -> Problem:
    return Problem(
        SERVICE_UNAVAILABLE,
        "The idempotency store is unavailable, so the request was not processed.",
        headers={"Retry-After": retry_after(1)},
    )


@dataclass(frozen=True)
class Prepared:
    """A write's idempotency request, ready to be sent: see `prepare`."""

    key: str
    fingerprint: str
    token: str


async def prepare(request: Request) -> Prepared | None:
    """The request's key, fingerprint and a new claim token; None when the key header is
    missing or malformed (`key_required` is the answer, once the request was rate limited)."""
    key = request.headers.get(KEY_HEADER)
    if not valid_key(key):
        return None
    assert key is not None
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    body = canonical_body(await request.body(), request.headers.get("content-type"))
    return Prepared(key, fingerprint(request.method, target, body), secrets.token_hex(16))


def key_required() -> Problem:
    return Problem(
        IDEMPOTENCY_KEY_REQUIRED,
        f"Send `{KEY_HEADER}` with 1 to 255 visible ASCII characters, unique per operation.",
    )


async def decide(
    engine: Idempotency,
    request: Request,
    tenant_id: UUID,
    prepared: Prepared | None = None,
    reply: Any = None,
) -> None:
    """Decide a write before its route runs (see the module doc): return to let it run under
    a claim, or raise (a problem, or the replay the middleware sends). `prepared` is what
    `prepare` made of the request and `reply` the script's answer to its `begin_call`, when
    the caller sent it already (with the rate limit); otherwise this asks Redis itself."""
    slot = request.scope.get(_SLOT)
    assert isinstance(slot, _Slot), "the idempotency middleware did not see this request"
    prepared = prepared or await prepare(request)
    if prepared is None:
        raise key_required()
    key = prepared.key
    try:
        if reply is None:
            found = await engine.begin(tenant_id, key, prepared.fingerprint, prepared.token)
        else:
            found = outcome(reply, prepared.token)
    except (RedisError, OSError) as exc:
        log.warning("idempotency store unavailable: %s", exc)
        metrics.IDEMPOTENCY_OUTCOMES.labels("unavailable").inc()
        raise _unavailable() from exc
    metrics.IDEMPOTENCY_OUTCOMES.labels(_OUTCOME_LABELS[type(found)]).inc()
    if isinstance(found, New):
        slot.claim = _Claim(engine, tenant_id, key, found.token)
        return
    if isinstance(found, Mismatch):
        raise Problem(
            IDEMPOTENCY_KEY_REUSED, f"This {KEY_HEADER} was used with a different request."
        )
    if isinstance(found, InFlight):
        raise Problem(
            IDEMPOTENCY_IN_FLIGHT,
            f"A request with this {KEY_HEADER} is still in progress.",
            # Writes finish in milliseconds: an early retry is better than waiting out the lock.
            headers={"Retry-After": retry_after(min(1.0, found.retry_after_ms / 1000))},
        )
    slot.replay = found.response
    raise _Replayed()


def _keep(response_headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in response_headers
        if name.decode("latin-1").lower() in STORED_HEADERS
    ]


async def _send(send: Send, response: StoredResponse, *, replayed: bool) -> None:
    headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode()))
    if replayed:
        headers.append((REPLAYED_HEADER.lower().encode(), b"true"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


class IdempotencyMiddleware:
    """Finishes what `decide` began: stores or releases the claim, and sends replays."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        slot = _Slot()
        scope[_SLOT] = slot
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if slot.claim is None:
                await send(message)
            elif message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            else:
                await send(message)

        try:
            await self.app(scope, receive, capture)
        except _Replayed:
            assert slot.replay is not None
            await _send(send, slot.replay, replayed=True)
            return
        except BaseException:
            await self._release(slot.claim)
            raise
        claim = slot.claim
        if claim is None:
            return
        if start is None:
            await self._release(claim)
            return
        status = int(start["status"])
        response = StoredResponse(status, _keep(start.get("headers", [])), b"".join(chunks))
        # 5xx is the server's failure and 429 a refusal to run: neither is the operation's
        # outcome, so the retry must be allowed to run it.
        if status >= 500 or status == 429:
            await self._release(claim)
        else:
            try:
                if not await claim.engine.store(claim.tenant_id, claim.key, claim.token, response):
                    log.warning(
                        "idempotency lock for key %r expired before the response was stored",
                        claim.key,
                    )
            except (RedisError, OSError) as exc:
                # The side effect happened: the client gets its answer; a retry after the lock
                # expires would run again, which is the best left without the store.
                log.warning("idempotency store unavailable while storing: %s", exc)
        await send(start)
        await send({"type": "http.response.body", "body": response.body})

    async def _release(self, claim: _Claim | None) -> None:
        if claim is None:
            return
        try:
            await claim.engine.release(claim.tenant_id, claim.key, claim.token)
        except (RedisError, OSError) as exc:
            # The lock then expires by itself after lock_seconds.
            log.warning("idempotency lock could not be released: %s", exc)
