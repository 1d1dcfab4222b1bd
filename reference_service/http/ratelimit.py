"""Rate limiting: one Redis round trip per request, shared by every replica.

Algorithm
---------
`RateLimitPolicy.algorithm` picks GCRA (default) or a token bucket; both run in
`ratelimit.lua`, one EVALSHA per request, on the Redis server's clock (`TIME`), so all replicas
measure a bucket against the same clock. A quota of `requests` per `period_seconds` with `burst`
admits `burst` requests back to back from an idle bucket, then one every
`period_seconds / requests`. Bucket keys are `<key_prefix>ratelimit:<policy name>:<scope id>`
and expire as soon as the bucket is full again.

Which quota applies
-------------------
A `RouteQuota` whose `path` equals the route template (`/v1/products/{product_id}`, not the
concrete URL) and whose `method` equals the request's method wins; then one with method `*`;
otherwise the `default` quota. A route quota replaces the default (it is not applied on top of
it) and has its own bucket, named `"<METHOD> <path>"` (`method` as written in the policy).

The scope is the principal's tenant (`scope: Tenant`) or API key (`scope: ApiKey`); routes
without authentication are limited per client IP.

Requests without a valid key
----------------------------
Requests to authenticated routes that fail authentication count against the `unauthenticated`
quota of their client address (bucket `unauthenticated`, scope `ip:<address>`). A request with
no key, or a key the process's key cache (`keycache`) knows to be bad, is charged at once (one
Redis round trip) and refused with a 429 once the quota is used up. A key the cache does not
know costs one look at that bucket first (nothing counted) and is refused with a 429 before its
lookup if the address has used up its quota; a lookup that fails is then charged. So wrong keys
cannot make the database work faster than that quota, valid keys never use it up, a valid key
seen in the last `KEY_CACHE_SECONDS` goes straight to its tenant's bucket (one Redis round trip
per request), and another address's failures never touch a caller's buckets.

Response headers (draft-ietf-httpapi-ratelimit-headers, structured fields, RFC 9651)
-----------------------------------------------------------------------------------
Every response of a rate-limited route carries, for the quota that applied::

    RateLimit-Policy: "default";q=100;w=1;burst=50
    RateLimit: "default";r=49;t=1

- `RateLimit-Policy`: the policy name (an sf-string), `q` = `requests`, `w` = `period_seconds`,
  and `burst` (an extension parameter the draft lets clients ignore: how many requests may come
  back to back).
- `RateLimit`: `r` = requests still admitted right now (an integer >= 0), `t` = whole seconds,
  rounded up, until the bucket is full again (0 when it already is).

A rejected request is a 429 `rate-limited` problem with both headers and `Retry-After` (whole
seconds, rounded up, at least 1).

When Redis is unavailable
-------------------------
A Redis error, or no answer within `timeout_seconds` (50 ms by default) of time Redis had to
answer, decides by `on_redis_unavailable`. The deadline measures Redis, not the event loop:
time the loop spent running other requests' work while the reply may already have been queued
does not count, and a reply already queued at the deadline is still read (see
`RateLimiter._redis_in_time`), up to `patience_seconds` (2 s) in all, so a saturated but
healthy service does not take this path:

- `FailOpen`: a GCRA bucket in this process's memory with the same quota decides instead. It
  is per process: with N replicas (times workers) the effective limit is up to N times the
  configured one while Redis is down.
- `FailClosed`: a 503 `service-unavailable` problem with `Retry-After`.

After a failure, Redis is not asked again for 0.25 s (`_REDIS_RETRY_SECONDS`), so a hung
Redis does not add the whole timeout to every request. No outcome of Redis is ever a 500.

Wiring
------
The lifespan builds the app's one `RateLimiter` into `Services`; every route of the endpoint
factory has one guard (`guards.admitted`, `guards.idempotent`, `guards.cached_read`) that
authenticates the caller and then calls `enforce`, so an unauthenticated call is refused (401)
before it costs a Redis round trip. `guards.rate_limited()` is the same decision as a
composable dependency (on `current_principal`) for a route outside the factory. The admitted
request's headers are kept in `request.state`, and the pure ASGI middleware `RateLimitHeaders`
puts them on whatever response goes out: a route's own Response, or a problem raised after
admission (a 404, say).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final, Literal

from fastapi import Request, Response
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reference_service.db.admin import Principal
from reference_service.http.problems import (
    RATE_LIMITED,
    SERVICE_UNAVAILABLE,
    Problem,
    retry_after,
)
from reference_service.observability import metrics
from reference_service.observability.tracing import client_span
from reference_service.policy import Quota, RateLimitPolicy

__all__ = [
    "RATE_LIMITED",
    "Decision",
    "LimitedQuota",
    "RateLimitHeaders",
    "RateLimiter",
    "Rider",
    "RiderScript",
    "client_scope",
    "enforce",
    "principal_scope",
]

log = logging.getLogger(__name__)

SCRIPT: Final = resources.files(__package__).joinpath("ratelimit.lua").read_text("utf-8")
SCRIPT_SHA: Final = hashlib.sha1(SCRIPT.encode("utf-8")).hexdigest()

# How long a failed Redis is left alone: long enough that a hung server does not add the
# timeout to every request, short enough that one slow reply under FailClosed refuses
# requests only briefly and recovery is noticed at once.
_REDIS_RETRY_SECONDS: Final = 0.25
# Local buckets are pruned once there are this many, dropping those that are full again
# (which hold no information), so a flood of distinct scopes cannot grow memory without bound.
_LOCAL_PRUNE_AT: Final = 10_000
# The shortest wait of one round of `_redis_in_time`: below it, rounds would be mostly overhead.
_MIN_ROUND_SECONDS: Final = 0.001
# Turns of the event loop granted at the deadline to a reply that has arrived but is queued
# behind other work: reading it and finishing the call take one turn each.
_QUEUED_REPLY_TURNS: Final = 3

Source = Literal["redis", "local", "unavailable"]


def _sf_string(value: str) -> str:
    """An RFC 9651 sf-string: quoted, with `\\` and `"` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SPAN: Final = {"db.system.name": "redis", "db.operation.name": "EVALSHA"}


@dataclass(frozen=True)
class LimitedQuota:
    """A quota with the name its bucket and headers use."""

    name: str
    quota: Quota

    @property
    def interval_us(self) -> int:
        # Whole microseconds keep the script's arithmetic exact; the rounding is < 1 µs per
        # request.
        return max(1, round(self.quota.period_seconds * 1_000_000 / self.quota.requests))

    @property
    def policy_header(self) -> str:
        q = self.quota
        return f"{_sf_string(self.name)};q={q.requests};w={q.period_seconds};burst={q.burst}"


class RiderScript:
    """`ratelimit.lua` and a rider's script composed into one, so that what a request does in
    Redis after its rate limit (read its cached row, claim its idempotency key) travels in the
    same round trip. The rider's script runs only for an admitted request, with its own KEYS
    and ARGV (what follows the bucket and the four arguments of `ratelimit.lua`), and may call
    the `helpers`, each a script of its own wrapped as a Lua function of (KEYS, ARGV). The
    reply is `{decision}` for a refused request, `{decision, rider's reply}` otherwise."""

    def __init__(self, name: str, rider: str, **helpers: str) -> None:
        # The one span of the call names both parts: `redis ratelimit, <name>`.
        self.span = f"redis ratelimit, {name}"
        parts = [_as_function("ratelimit", SCRIPT)]
        parts += [_as_function(name, text) for name, text in helpers.items()]
        parts += [_as_function("rider", rider), _COMPOSED]
        self.text = "\n".join(parts)
        self.sha = hashlib.sha1(self.text.encode("utf-8")).hexdigest()


def _as_function(name: str, script: str) -> str:
    # A script's top-level KEYS, ARGV and `return` become a function's parameters and return.
    return f"local function {name}(KEYS, ARGV)\n{script}\nend"


_COMPOSED: Final = """
local decision = ratelimit({KEYS[1]}, {ARGV[1], ARGV[2], ARGV[3], ARGV[4]})
if decision[1] == 0 then return {decision} end
local keys, args = {}, {}
for i = 2, #KEYS do keys[i - 1] = KEYS[i] end
for i = 5, #ARGV do args[i - 4] = ARGV[i] end
return {decision, rider(keys, args)}
"""


@dataclass(frozen=True)
class Rider:
    """One request's work for a `RiderScript`: its keys and arguments."""

    script: RiderScript
    keys: tuple[str, ...]
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Decision:
    """The outcome of one check. `source` says who decided: Redis, the local fallback bucket,
    or nobody (Redis unavailable under FailClosed: `allowed` is False)."""

    allowed: bool
    quota: LimitedQuota
    remaining: int
    reset_seconds: float
    retry_after_seconds: float
    source: Source = "redis"
    carried: Any = None
    """The reply of the `Rider` that travelled with the decision; None when none ran (none
    given, the request refused, or Redis did not decide)."""
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        headers = {"RateLimit-Policy": self.quota.policy_header}
        if self.source != "unavailable":
            reset = max(0, math.ceil(self.reset_seconds))
            headers["RateLimit"] = (
                f"{_sf_string(self.quota.name)};r={max(0, self.remaining)};t={reset}"
            )
        if not self.allowed:
            headers["Retry-After"] = retry_after(self.retry_after_seconds)
        object.__setattr__(self, "headers", headers)

    def problem(self) -> Problem:
        """The problem to answer a refused request with."""
        if self.source == "unavailable":
            return Problem(
                SERVICE_UNAVAILABLE,
                "The rate limiter's store is unavailable; retry later.",
                headers=self.headers,
            )
        return Problem(
            RATE_LIMITED,
            f"Rate limit {self.quota.name!r} exceeded; retry after "
            f"{self.headers['Retry-After']} seconds.",
            headers=self.headers,
        )


class _LocalBuckets:
    """Per-process GCRA buckets on the monotonic clock: the FailOpen fallback."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}

    def check(self, key: str, limited: LimitedQuota, charge: bool = True) -> Decision:
        now = time.monotonic()
        interval = limited.quota.period_seconds / limited.quota.requests
        capacity = interval * limited.quota.burst
        tat = max(self._tat.get(key, now), now)
        new_tat = tat + interval
        allow_at = new_tat - capacity
        if now < allow_at:
            return Decision(False, limited, 0, tat - now, allow_at - now, "local")
        if len(self._tat) >= _LOCAL_PRUNE_AT:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        if charge:
            self._tat[key] = new_tat
        remaining = math.floor((now - allow_at) / interval + 1e-9)
        retry = 0.0 if remaining >= 1 else new_tat + interval - capacity - now
        return Decision(True, limited, remaining, new_tat - now, retry, "local")


class RateLimiter:
    """Decides whether a request may proceed; `check` never raises."""

    def __init__(
        self,
        redis_client: Redis,
        policy: RateLimitPolicy,
        key_prefix: str,
        timeout_seconds: float = 0.05,
        patience_seconds: float = 2.0,
    ) -> None:
        self._redis = redis_client
        self._policy = policy
        self._prefix = f"{key_prefix}ratelimit:"
        self._timeout = timeout_seconds
        self._patience = max(timeout_seconds, patience_seconds)
        self._default = LimitedQuota("default", policy.default)
        self._unauthenticated = LimitedQuota("unauthenticated", policy.unauthenticated)
        self._routes: dict[tuple[str, str], LimitedQuota] = {}
        for route in policy.routes:
            quota = Quota(
                requests=route.requests, period_seconds=route.period_seconds, burst=route.burst
            )
            # The first entry for a (method, path) wins, as a reader of the policy would expect.
            self._routes.setdefault(
                (route.method, route.path), LimitedQuota(f"{route.method} {route.path}", quota)
            )
        self._local = _LocalBuckets()
        self._redis_skip_until = 0.0
        # Decisions not taken by Redis (local bucket or 503), for tests and metrics: a healthy
        # but saturated service must keep this at 0.
        self.fallbacks = 0

    @property
    def policy(self) -> RateLimitPolicy:
        return self._policy

    def quota_for(self, method: str, route_template: str) -> LimitedQuota:
        """The quota for a route: exact method, then `*`, then the default. HEAD is a GET
        without the content, so it shares GET's quota."""
        method = "GET" if method == "HEAD" else method
        return (
            self._routes.get((method.upper(), route_template))
            or self._routes.get(("*", route_template))
            or self._default
        )

    async def check(
        self, scope_id: str, method: str, route_template: str, rider: Rider | None = None
    ) -> Decision:
        """The decision for a request; with `rider`, its work done in the same round trip for
        an admitted request (`Decision.carried`; None when Redis did not decide, and the caller
        then does that work on its own)."""
        return await self._decide(scope_id, self.quota_for(method, route_template), rider=rider)

    async def check_unauthenticated(self, scope_id: str, *, charge: bool = True) -> Decision:
        """The decision for a request without a valid key; with `charge=False` only whether
        one would be admitted, with nothing counted (before a key's lookup, which is charged
        only if it fails)."""
        return await self._decide(scope_id, self._unauthenticated, charge=charge)

    async def _decide(
        self,
        scope_id: str,
        limited: LimitedQuota,
        *,
        charge: bool = True,
        rider: Rider | None = None,
    ) -> Decision:
        key = f"{self._prefix}{limited.name}:{scope_id}"
        if time.monotonic() >= self._redis_skip_until:
            try:
                reply = await self._redis_in_time(key, limited, charge, rider)
            except (RedisError, OSError, TimeoutError) as exc:
                # TimeoutError covers both our deadline and the client's socket timeout.
                self._redis_skip_until = time.monotonic() + _REDIS_RETRY_SECONDS
                log.warning(
                    "rate limiter: Redis unavailable (%s: %s); %s for %g s",
                    type(exc).__name__,
                    exc,
                    self._policy.on_redis_unavailable,
                    _REDIS_RETRY_SECONDS,
                )
            else:
                carried = None
                if rider is not None:
                    carried = reply[1] if len(reply) > 1 else None
                    reply = reply[0]
                allowed, remaining, reset_us, retry_us = (int(v) for v in reply)
                return Decision(
                    bool(allowed),
                    limited,
                    remaining,
                    reset_us / 1e6,
                    retry_us / 1e6,
                    "redis",
                    carried,
                )
        self.fallbacks += 1
        if self._policy.on_redis_unavailable == "FailOpen":
            return self._local.check(key, limited, charge)
        return Decision(False, limited, 0, 0.0, _REDIS_RETRY_SECONDS, "unavailable")

    async def _redis_in_time(
        self, key: str, limited: LimitedQuota, charge: bool, rider: Rider | None = None
    ) -> list[Any]:
        """The script's reply, or TimeoutError once Redis itself has had `timeout` to answer.

        The deadline must measure Redis, not the event loop: on a saturated loop a reply that
        arrived in a millisecond waits behind other requests' work before this coroutine runs
        again, and a plain `asyncio.timeout` would call a healthy Redis unavailable. So the
        wait is split into rounds, and of each round only the part the loop was free to notice
        a reply counts: a wake-up that comes late by `lateness` means the loop was busy with
        other work for that long, and a reply that came meanwhile was queued, not missing.
        `asyncio.wait` never cancels the call, and at the deadline a few more turns of the loop
        let a reply that is already queued be read. A loop that stays saturated is given up to
        `patience` in all.
        """
        loop = asyncio.get_running_loop()
        call = asyncio.ensure_future(self._eval(key, limited, charge, rider))
        budget = self._timeout
        give_up_at = loop.time() + self._patience
        try:
            while True:
                asked = max(budget, _MIN_ROUND_SECONDS)
                started = loop.time()
                done, _ = await asyncio.wait((call,), timeout=asked)
                if done:
                    return call.result()
                now = loop.time()
                lateness = now - started - asked
                budget -= max(0.0, asked - max(0.0, lateness))
                if budget <= 0 or now >= give_up_at:
                    # A reply already in the socket is read within a turn or two of the loop,
                    # however busy: give it those turns before calling Redis unavailable.
                    for _ in range(_QUEUED_REPLY_TURNS):
                        await asyncio.sleep(0)
                        if call.done():
                            return call.result()
                    raise TimeoutError("Redis did not answer within the rate limiter's deadline")
        finally:
            if not call.done():
                call.cancel()

    async def _eval(
        self, key: str, limited: LimitedQuota, charge: bool = True, rider: Rider | None = None
    ) -> list[Any]:
        args: tuple[Any, ...] = (
            self._policy.algorithm,
            limited.interval_us,
            limited.quota.burst,
            "0" if charge else "1",
        )
        text, sha, span = SCRIPT, SCRIPT_SHA, "redis ratelimit"
        keys: tuple[str, ...] = (key,)
        if rider is not None:
            text, sha, span = rider.script.text, rider.script.sha, rider.script.span
            keys, args = (key, *rider.keys), (*args, *rider.args)
        with client_span(span, _SPAN):
            try:
                reply: list[Any] = await self._redis.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                # A restarted or flushed Redis forgot the script: load it once, then go on by
                # hash.
                await self._redis.script_load(text)
                reply = await self._redis.evalsha(sha, len(keys), *keys, *args)
        return reply


async def enforce(
    limiter: RateLimiter,
    request: Request,
    response: Response,
    scope_id: str,
    rider: Rider | None = None,
) -> Decision:
    """Admit the request or raise the refusal; `scope_id` names the bucket's owner, `rider`
    is work to do in the same round trip (see `RateLimiter.check`)."""
    route = request.scope.get("route")
    template: str = getattr(route, "path", request.url.path)
    decision = await limiter.check(scope_id, request.method, template, rider)
    _count(decision)
    return admit(request, response, decision)


def _count(decision: Decision) -> None:
    metrics.RATE_LIMIT_DECISIONS.labels(
        "admitted" if decision.allowed else "limited", decision.source
    ).inc()


async def enforce_unauthenticated(
    limiter: RateLimiter, request: Request, response: Response, *, charge: bool = True
) -> Decision:
    """Admit a request without a valid key (none, unknown or revoked) from this client address,
    or raise the refusal; `charge=False` (before a key's lookup) counts nothing."""
    decision = await limiter.check_unauthenticated(client_scope(request), charge=charge)
    if charge:  # a look that counts nothing is no decision either
        _count(decision)
    return admit(request, response, decision)


def admit(request: Request, response: Response, decision: Decision) -> Decision:
    """Raise the refusal, or keep the decision's headers for the response."""
    if not decision.allowed:
        raise decision.problem()
    # Routes that return their own Response drop an injected one's headers, and an error
    # raised after admission has none: RateLimitHeaders adds these to whatever goes out.
    request.state.rate_limit_headers = decision.headers
    response.headers.update(decision.headers)
    return decision


def client_scope(request: Request) -> str:
    """The bucket of an unauthenticated caller: its IP."""
    # Behind a proxy, uvicorn's --forwarded-allow-ips makes this the original client.
    return f"ip:{request.client.host if request.client is not None else 'unknown'}"


def principal_scope(limiter: RateLimiter, principal: Principal) -> str:
    """The bucket of an authenticated caller, per the policy's `scope`."""
    if limiter.policy.scope == "ApiKey":
        return f"key:{principal.key_id}"
    return f"tenant:{principal.tenant_id}"


class RateLimitHeaders:
    """Pure ASGI middleware: every response of an admitted request carries its `RateLimit`
    headers, whatever produced it (a route's own Response, a problem raised later)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = (scope.get("state") or {}).get("rate_limit_headers")
                if extra:
                    headers = MutableHeaders(scope=message)
                    for name, value in extra.items():
                        if name not in headers:
                            headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
