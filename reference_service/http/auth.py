"""API key authentication: `Authorization: Bearer <key>` -> the tenant and key it belongs to.

Only the SHA-256 of a key is stored and compared. The lookup (`db.admin.authenticate`) runs
with no tenant set, through `adbm_authenticate`, a SECURITY DEFINER function: the app role
cannot read `api_keys` across tenants (RLS), yet must find a key's tenant before it knows any
tenant. It is one pipelined round trip; a value that is not shaped like a key costs none.

Answers are cached in the process for `keycache.KEY_CACHE_SECONDS` (a revoked key is refused
within that bound). Failed authentications count against the client address's
`unauthenticated` rate limit, which is consulted before a lookup (`ratelimit`), so wrong keys
are refused with 429s before they cost lookups.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reference_service.db.admin import Principal, authenticate
from reference_service.http import ratelimit
from reference_service.http.keycache import Unknown
from reference_service.http.problems import UNAUTHORIZED, Problem
from reference_service.http.state import Services, Svc
from reference_service.observability.access import bind_tenant

__all__ = [
    "Bearer",
    "CurrentPrincipal",
    "Principal",
    "actor",
    "authenticate_request",
    "current_principal",
]

_bearer = HTTPBearer(
    auto_error=False, description="An API key issued by `adbm-service keys create` (adbm_...)."
)


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
"""The `Authorization: Bearer` credentials, if any (and the security scheme in the OpenAPI
document of every operation that depends on it)."""


def _refused(detail: str) -> Problem:
    return Problem(UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


async def current_principal(
    credentials: Bearer, request: Request, response: Response, svc: Svc
) -> Principal:
    """FastAPI dependency: who is calling (every query then runs as its tenant), a 401, or a
    429 when this address sent too many requests without a valid key."""
    return await authenticate_request(credentials, request, response, svc)


async def authenticate_request(
    credentials: HTTPAuthorizationCredentials | None,
    request: Request,
    response: Response,
    svc: Services,
) -> Principal:
    """`current_principal`'s answer, called directly by the endpoint factory's route guards
    (one dependency per route instead of a chain: each costs FastAPI a solving step)."""
    key = None if credentials is None else credentials.credentials
    cached = None if key is None else svc.key_cache.get(key)
    if cached is not None and not isinstance(cached, Unknown):
        bind_tenant(request.scope, str(cached.tenant_id))
        return cached
    limiter = svc.rate_limiter
    if key is None or cached is not None:
        # No key, or one known to be bad: a failure now, charged as one.
        await ratelimit.enforce_unauthenticated(limiter, request, response)
        raise _refused(
            "Send an API key as `Authorization: Bearer <key>`."
            if key is None
            else "The API key is not valid."
        )
    if not svc.key_cache.in_flight(key):
        # An address that used up its failures is refused before the lookup costs anything;
        # joining a lookup already under way costs nothing more.
        await ratelimit.enforce_unauthenticated(limiter, request, response, charge=False)
    # One lookup per key at a time in the process; it fills the cache.
    principal = await asyncio.shield(
        svc.key_cache.resolve(key, lambda: authenticate(svc.database, key))
    )
    if principal is None:
        await ratelimit.enforce_unauthenticated(limiter, request, response)
        # The same answer for a malformed, unknown or revoked key: nothing to probe for.
        raise _refused("The API key is not valid.")
    bind_tenant(request.scope, str(principal.tenant_id))
    return principal


def actor(principal: Principal) -> str:
    """What the audit columns (`created_by`, `updated_by`) record for this caller."""
    return f"api-key:{principal.key_id}"


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
