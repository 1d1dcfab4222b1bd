"""The dependencies the endpoint factory puts in front of routes: rate limits on every API
route, the idempotency decision on every write a resource declares idempotent.

Each route of the factory has exactly one guard among its dependencies, which authenticates the
caller, decides its rate limit (with its rider) and leaves the handler a `Caller` on the request
(`caller_of`): one FastAPI dependency (and the bearer credentials under it) instead of a chain
of five, which cost a GET about a sixth of its CPU in FastAPI's dependency solving
(`bench/RESULTS.md`). A route's own dependencies run in their order before its handler's
parameters are resolved, so the guard runs before any refusal of the body (`jsonbody`).
`rate_limited()` stays the composable dependency for a route outside the factory.

What a request does in Redis right after its rate limit travels with it, in one round trip
(`ratelimit.Rider`): an idempotent write's claim (and, creating a cached resource's row, the
new id's filter bits), a cached GET's read of its row."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final
from uuid import UUID

from fastapi import Depends, Request, Response

from reference_service.cache import readthrough
from reference_service.db.admin import Principal
from reference_service.db.uuid7 import uuid7
from reference_service.http import idempotency, ratelimit
from reference_service.http.auth import Bearer, CurrentPrincipal, authenticate_request
from reference_service.http.state import Services, Svc, app_services


@dataclass(frozen=True, slots=True)
class Caller:
    """What a route's guard admitted: who is calling, the app's services, and what travelled
    with the rate limit in its Redis round trip (a cached GET's read of its row), if anything."""

    principal: Principal
    services: Services
    carried: Any = None


# Where a guard leaves the `Caller` it admitted.
_CALLER: Final = "adbm.caller"


def caller_of(request: Request) -> Caller:
    """The `Caller` the route's guard admitted. A route without a guard is a wiring mistake,
    which fails here (a 500) rather than serving the caller unauthenticated."""
    found = request.scope.get(_CALLER)
    if not isinstance(found, Caller):
        raise RuntimeError(f"{request.url.path}: the route has no guard (see guards)")
    return found


async def _authenticated(
    request: Request, response: Response, credentials: Any
) -> tuple[Services, Principal, ratelimit.RateLimiter, str]:
    """Every guard's start: the app's services, the caller (or a 401/429), the limiter and the
    caller's rate-limit scope."""
    svc = app_services(request)
    principal = await authenticate_request(credentials, request, response, svc)
    limiter = svc.rate_limiter
    return svc, principal, limiter, ratelimit.principal_scope(limiter, principal)


def _admit(request: Request, caller: Caller) -> Caller:
    request.scope[_CALLER] = caller
    return caller


async def rate_limiter(svc: Svc) -> ratelimit.RateLimiter:
    """The app's limiter, as a dependency of its own so that a test app can supply another."""
    return svc.rate_limiter


Limiter = Annotated[ratelimit.RateLimiter, Depends(rate_limiter)]


def rate_limited(*, authenticated: bool = True) -> Callable[..., Awaitable[ratelimit.Decision]]:
    """A dependency enforcing the app's rate limits.

    `authenticated=True` limits per tenant or API key (per the policy's `scope`) and requires a
    valid API key (it depends on `current_principal`, once per request however many
    dependencies ask for it); `authenticated=False` limits per client IP and needs no key.
    Refused requests raise a `Problem` (429, or 503 under FailClosed).
    """
    if not authenticated:

        async def by_ip(
            request: Request, response: Response, limiter: Limiter
        ) -> ratelimit.Decision:
            return await ratelimit.enforce(
                limiter, request, response, ratelimit.client_scope(request)
            )

        return by_ip

    async def by_principal(
        request: Request, response: Response, principal: CurrentPrincipal, limiter: Limiter
    ) -> ratelimit.Decision:
        scope_id = ratelimit.principal_scope(limiter, principal)
        return await ratelimit.enforce(limiter, request, response, scope_id)

    return by_principal


# The idempotency decision, and the filter bits of a cached resource's new row, composed with
# the rate limit: one round trip for all three.
_CLAIM: Final = ratelimit.RiderScript(
    "idempotency begin",
    """
local claim = idempotency({KEYS[1]}, {ARGV[1], ARGV[2], ARGV[3], ARGV[4]})
if claim[1] == 'new' and KEYS[2] then
  local add = {'add'}
  for i = 5, #ARGV do add[#add + 1] = ARGV[i] end
  bloom({KEYS[2]}, add)
end
return claim
""",
    idempotency=idempotency.SCRIPT,
    bloom=readthrough.BLOOM_SCRIPT,
)
_CACHED_READ: Final = ratelimit.RiderScript("cache read", readthrough.READ_SCRIPT)
# Where `creates` leaves the collection a route creates rows of, for `idempotent`.
_CREATES: Final = "adbm.creates"
# Where `idempotent` leaves the id it reserved (and put in the filter) for the row to create.
_RESERVED: Final = "adbm.reserved_id"


def creates(collection: str) -> Callable[..., Awaitable[None]]:
    """A dependency naming the collection a route creates rows of: listed before `IDEMPOTENT`,
    it lets the claim also put the new row's id in the collection's filter, when cached."""

    async def mark(request: Request) -> None:
        request.scope[_CREATES] = collection

    return mark


def reserved_id(request: Request) -> UUID | None:
    """The id `idempotent` reserved for the row this request creates, already in its cache's
    filter; None when there is none (the handler then makes one and remembers it itself)."""
    found = request.scope.get(_RESERVED)
    return found if isinstance(found, UUID) else None


async def admitted(request: Request, response: Response, credentials: Bearer) -> Caller:
    """The guard of a route with nothing but its rate limit in Redis: authenticated, limited
    per tenant or API key (the policy's `scope`)."""
    svc, principal, limiter, scope_id = await _authenticated(request, response, credentials)
    await ratelimit.enforce(limiter, request, response, scope_id)
    return _admit(request, Caller(principal, svc))


async def idempotent(request: Request, response: Response, credentials: Bearer) -> Caller:
    """Rate limit the write and run it once per `Idempotency-Key` (see `idempotency`): the
    limit and the claim in one Redis round trip. A request without a valid key is charged like
    any other before it is refused."""
    svc, principal, limiter, scope_id = await _authenticated(request, response, credentials)
    prepared = await idempotency.prepare(request)
    if prepared is None:
        await ratelimit.enforce(limiter, request, response, scope_id)
        raise idempotency.key_required()
    keys, args = svc.idempotency.begin_call(
        principal.tenant_id, prepared.key, prepared.fingerprint, prepared.token
    )
    cache = svc.caches.get(request.scope.get(_CREATES, ""))
    if cache is not None:
        row_id = uuid7()
        bloom, positions = cache.remember_call(principal.tenant_id, row_id)
        keys, args = [*keys, bloom], [*args, *positions]
        request.scope[_RESERVED] = row_id
    rider = ratelimit.Rider(_CLAIM, tuple(keys), tuple(args))
    decision = await ratelimit.enforce(limiter, request, response, scope_id, rider)
    if decision.carried is None:
        # Redis did not decide the limit (the fallback did): nothing was claimed or reserved.
        request.scope.pop(_RESERVED, None)
    await idempotency.decide(
        svc.idempotency, request, principal.tenant_id, prepared, decision.carried
    )
    return _admit(request, Caller(principal, svc))


def cached_read(collection: str, path_param: str) -> Callable[..., Awaitable[Caller]]:
    """The guard of a cached resource's GET: the rate limit, with the cache read of its row in
    the same round trip. The `Caller` carries that read's reply for `TableCache.get(first=...)`,
    or None (the handler then reads on its own)."""

    async def guard(request: Request, response: Response, credentials: Bearer) -> Caller:
        svc, principal, limiter, scope_id = await _authenticated(request, response, credentials)
        cache = svc.caches.get(collection)
        try:
            row_id = UUID(request.path_params[path_param])
        except (KeyError, ValueError):
            cache = None  # the route answers the bad id (400) once the limit admitted it
        if cache is None:
            await ratelimit.enforce(limiter, request, response, scope_id)
            return _admit(request, Caller(principal, svc))
        keys, args = cache.read_call(principal.tenant_id, row_id)
        rider = ratelimit.Rider(_CACHED_READ, tuple(keys), tuple(args))
        decision = await ratelimit.enforce(limiter, request, response, scope_id, rider)
        return _admit(request, Caller(principal, svc, decision.carried))

    return guard


ADMITTED: Final = Depends(admitted)
IDEMPOTENT: Final = Depends(idempotent)
