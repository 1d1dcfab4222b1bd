"""The dependencies the endpoint factory puts in front of routes: rate limits on every API
route, the idempotency decision on every write a resource declares idempotent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Final

from fastapi import Depends, Request, Response

from reference_service.http import idempotency, ratelimit
from reference_service.http.auth import CurrentPrincipal
from reference_service.http.state import Svc


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


async def idempotent(request: Request, principal: CurrentPrincipal, svc: Svc) -> None:
    """Run the write once per `Idempotency-Key` (see `idempotency`)."""
    await idempotency.decide(svc.idempotency, request, principal.tenant_id)


RATE_LIMITED: Final = Depends(rate_limited())
IDEMPOTENT: Final = Depends(idempotent)
