"""API key authentication: `Authorization: Bearer <key>` -> the tenant and key it belongs to.

Only the SHA-256 of a key is stored and compared. The lookup (`db.admin.authenticate`) runs
with no tenant set, through `adbm_authenticate`, a SECURITY DEFINER function: the app role
cannot read `api_keys` across tenants (RLS), yet must find a key's tenant before it knows any
tenant. It is one pipelined round trip; a value that is not shaped like a key costs none.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reference_service.db.admin import Principal, authenticate
from reference_service.http.problems import UNAUTHORIZED, Problem
from reference_service.http.state import Svc
from reference_service.observability.access import bind_tenant

__all__ = ["CurrentPrincipal", "Principal", "actor", "current_principal"]

_bearer = HTTPBearer(
    auto_error=False, description="An API key issued by `adbm-service keys create` (adbm_...)."
)


def _refused(detail: str) -> Problem:
    return Problem(UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    svc: Svc,
) -> Principal:
    """FastAPI dependency: who is calling (every query then runs as its tenant), or a 401."""
    if credentials is None:
        raise _refused("Send an API key as `Authorization: Bearer <key>`.")
    principal = await authenticate(svc.database, credentials.credentials)
    if principal is None:
        # The same answer for a malformed, unknown or revoked key: nothing to probe for.
        raise _refused("The API key is not valid.")
    bind_tenant(request.scope, str(principal.tenant_id))
    return principal


def actor(principal: Principal) -> str:
    """What the audit columns (`created_by`, `updated_by`) record for this caller."""
    return f"api-key:{principal.key_id}"


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
