"""Liveness and readiness, unauthenticated, outside the versioned API.

`/health` (liveness) answers from the process alone: restarting a pod cannot fix a database
outage, so liveness must not fail with one, or every pod would restart at once. It reports the
pool's numbers, which make exhaustion visible. `/ready` (readiness) checks the database and
Redis, each with a short timeout, so a pod that cannot serve is taken out of the Service
instead of failing requests; the database check also fails, with the reason, when the service's
role is no longer bound by row-level security (`db/role_check.py`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from reference_service.db.role_check import RoleNotIsolated
from reference_service.http.problems import (
    INTERNAL_ERROR,
    PAYLOAD_TOO_LARGE,
    SERVICE_UNAVAILABLE,
    openapi_responses,
    problem_response,
    retry_after,
)
from reference_service.http.state import Services, Svc

# Kubelet probes time out after 1 s by default; both checks run concurrently within this.
CHECK_TIMEOUT_SECONDS: Final = 0.5

router = APIRouter(tags=["health"])


@router.get("/health", responses=openapi_responses([PAYLOAD_TOO_LARGE, INTERNAL_ERROR]))
async def health(svc: Svc) -> JSONResponse:
    return JSONResponse({"status": "ok", "pool": svc.database.stats()})


async def _check(name: str, probe: Any) -> str | None:
    """None when `probe` completes in time, else why not (without the exception's text)."""
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"{name}: no answer within {CHECK_TIMEOUT_SECONDS} s"
    except RoleNotIsolated as exc:  # its text names only roles and tables
        return f"{name}: {exc}"
    except Exception as exc:  # any failure means "not ready"; the type is enough to act on
        return f"{name}: {type(exc).__name__}"
    return None


async def _check_database(svc: Services) -> str | None:
    stats = svc.database.stats()
    if stats["in_use"] >= stats["max_size"]:
        # Every connection is lent out, so the database is reachable, just busy, and requests
        # already get a fast 503 with Retry-After. Reporting "not ready" here would pull the
        # pod out of the Service, push its load onto the others and saturate them in turn.
        return None
    # The ping is the role check: one round trip that also proves tenant isolation still holds.
    return await _check("database", svc.database.check_isolation())


@router.get(
    "/ready", responses=openapi_responses([PAYLOAD_TOO_LARGE, INTERNAL_ERROR, SERVICE_UNAVAILABLE])
)
async def ready(request: Request, svc: Svc) -> JSONResponse:
    failures = [
        failure
        for failure in await asyncio.gather(
            _check_database(svc),
            _check("redis", svc.redis.ping()),
        )
        if failure is not None
    ]
    if failures:
        return problem_response(
            request,
            SERVICE_UNAVAILABLE,
            "Not ready: " + "; ".join(failures) + ".",
            headers={"Retry-After": retry_after(1)},
            extra={"failed": failures},
        )
    return JSONResponse({"status": "ready", "checks": {"database": "ok", "redis": "ok"}})
