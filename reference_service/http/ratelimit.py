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
A Redis error, or no answer within `timeout_seconds` (50 ms by default), decides by
`on_redis_unavailable`:

- `FailOpen`: a GCRA bucket in this process's memory with the same quota decides instead. It
  is per process: with N replicas (times workers) the effective limit is up to N times the
  configured one while Redis is down.
- `FailClosed`: a 503 `service-unavailable` problem with `Retry-After`.

After a failure, Redis is not asked again for 0.25 s (`_REDIS_RETRY_SECONDS`), so a hung
Redis does not add the whole timeout to every request. No outcome of Redis is ever a 500.

Wiring
------
The lifespan builds the app's one `RateLimiter` into `Services`; `guards.rate_limited()` is the
dependency the endpoint factory puts on every API route. It depends on `current_principal`;
FastAPI resolves a dependency once per request, so a route that also takes `CurrentPrincipal`
authenticates once, and an unauthenticated call is refused (401) before it costs a Redis round
trip. The admitted request's headers are kept in `request.state`, and the pure ASGI middleware
`RateLimitHeaders` puts them on whatever response goes out: a route's own Response, or a
problem raised after admission (a 404, say).
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

    def check(self, key: str, limited: LimitedQuota) -> Decision:
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
    ) -> None:
        self._redis = redis_client
        self._policy = policy
        self._prefix = f"{key_prefix}ratelimit:"
        self._timeout = timeout_seconds
        self._default = LimitedQuota("default", policy.default)
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

    @property
    def policy(self) -> RateLimitPolicy:
        return self._policy

    def quota_for(self, method: str, route_template: str) -> LimitedQuota:
        """The quota for a route: exact method, then `*`, then the default."""
        return (
            self._routes.get((method.upper(), route_template))
            or self._routes.get(("*", route_template))
            or self._default
        )

    async def check(self, scope_id: str, method: str, route_template: str) -> Decision:
        limited = self.quota_for(method, route_template)
        key = f"{self._prefix}{limited.name}:{scope_id}"
        if time.monotonic() >= self._redis_skip_until:
            try:
                async with asyncio.timeout(self._timeout):
                    reply = await self._eval(key, limited)
            except (RedisError, OSError, TimeoutError) as exc:
                # TimeoutError covers both our deadline and the client's socket timeout.
                self._redis_skip_until = time.monotonic() + _REDIS_RETRY_SECONDS
                log.warning(
                    "rate limiter: Redis unavailable (%s); %s for %.1f s",
                    type(exc).__name__,
                    self._policy.on_redis_unavailable,
                    _REDIS_RETRY_SECONDS,
                )
            else:
                allowed, remaining, reset_us, retry_us = (int(v) for v in reply)
                return Decision(
                    bool(allowed), limited, remaining, reset_us / 1e6, retry_us / 1e6, "redis"
                )
        if self._policy.on_redis_unavailable == "FailOpen":
            return self._local.check(key, limited)
        return Decision(False, limited, 0, 0.0, _REDIS_RETRY_SECONDS, "unavailable")

    async def _eval(self, key: str, limited: LimitedQuota) -> list[Any]:
        with client_span("redis ratelimit", _SPAN):
            return await self._eval_script(key, limited)

    async def _eval_script(self, key: str, limited: LimitedQuota) -> list[Any]:
        args = (self._policy.algorithm, limited.interval_us, limited.quota.burst)
        try:
            reply: list[Any] = await self._redis.evalsha(SCRIPT_SHA, 1, key, *args)
        except NoScriptError:
            # A restarted or flushed Redis forgot the script: load it once, then go on by hash.
            await self._redis.script_load(SCRIPT)
            reply = await self._redis.evalsha(SCRIPT_SHA, 1, key, *args)
        return reply


async def enforce(
    limiter: RateLimiter, request: Request, response: Response, scope_id: str
) -> Decision:
    """Admit the request or raise the refusal; `scope_id` names the bucket's owner."""
    route = request.scope.get("route")
    template: str = getattr(route, "path", request.url.path)
    decision = await limiter.check(scope_id, request.method, template)
    metrics.RATE_LIMIT_DECISIONS.labels(
        "admitted" if decision.allowed else "limited", decision.source
    ).inc()
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
