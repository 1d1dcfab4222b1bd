"""Every route of the endpoint factory has exactly one guard, solved before any refusal of its
body, and its handler finds the guard's `Caller`; a route without one fails loudly."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.requests import Request

from reference_service.app import VERSIONS
from reference_service.domain.resources import RESOURCES
from reference_service.http import guards
from reference_service.http.endpoints import version_router
from reference_service.http.jsonbody import refuse_unreadable_body


def _is_guard(call: Any) -> bool:
    return call in (guards.admitted, guards.idempotent) or (
        getattr(call, "__qualname__", "") == "cached_read.<locals>.guard"
    )


def _routes() -> list[APIRoute]:
    found = []
    for version in VERSIONS:
        for route in version_router(version, RESOURCES).routes:
            assert isinstance(route, APIRoute)
            found.append(route)
    return found


@pytest.mark.parametrize("route", _routes(), ids=lambda r: f"{sorted(r.methods)[0]} {r.path}")
def test_each_route_has_one_guard_before_the_body_refusal(route: APIRoute) -> None:
    calls = [d.call for d in route.dependant.dependencies]
    positions = [i for i, call in enumerate(calls) if _is_guard(call)]
    assert len(positions) == 1, calls
    if refuse_unreadable_body in calls:
        assert calls.index(refuse_unreadable_body) > positions[0]
    # Nothing else authenticates or limits the route a second time.
    assert guards.rate_limited not in calls


def test_cached_gets_read_their_cache_in_the_guard_and_others_do_not() -> None:
    for route in _routes():
        calls = [d.call for d in route.dependant.dependencies]
        cached = any(getattr(c, "__qualname__", "") == "cached_read.<locals>.guard" for c in calls)
        spec = next(s for s in RESOURCES if route.path.split("/")[3] == s.name)
        is_item_get = route.methods & {"GET", "HEAD"} and route.path.endswith("_id}")
        assert cached == bool(spec.cached and is_item_get), route.path


def test_a_handler_without_a_guard_is_a_500_not_an_anonymous_request() -> None:
    request = Request(
        {"type": "http", "path": "/api/v2/products", "headers": [], "query_string": b""}
    )
    with pytest.raises(RuntimeError, match="has no guard"):
        guards.caller_of(request)
