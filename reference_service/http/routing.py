"""What the versioned route modules share: dependencies, `If-Match` handling, the resource
response and the error table of the OpenAPI document. Every API version shapes its bodies its
own way but keeps these rules identical, so they live here once."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from fastapi import Depends, Header, Response
from fastapi.responses import JSONResponse

from reference_service.domain.common import Resource
from reference_service.http.problems import (
    MEDIA_TYPE,
    PRECONDITION_FAILED,
    PRECONDITION_REQUIRED,
    REGISTRY,
    Problem,
)
from reference_service.http.state import Services, services

Svc = Annotated[Services, Depends(services)]
IfMatch = Annotated[
    str | None,
    Header(
        max_length=64,
        description='The `ETag` of your last read, e.g. `"3"`: the change applies only to that '
        "version.",
    ),
]

# One strong entity tag holding a version number. A weak tag (`W/"3"`) never matches: If-Match
# uses strong comparison (RFC 9110 section 13.1.1).
_ETAG = re.compile(r'"([0-9]{1,18})"')


def _error_responses() -> dict[int | str, dict[str, Any]]:
    """Every registered problem, by status, for the OpenAPI document."""
    titles: dict[int, list[str]] = {}
    for kind in REGISTRY.values():
        titles.setdefault(kind.status, []).append(f"{kind.title} ({kind.uri})")
    return {
        status: {"description": "; ".join(names), "content": {MEDIA_TYPE: {}}}
        for status, names in sorted(titles.items())
    }


ERRORS: Final = _error_responses()


def etag(version: int) -> str:
    return f'"{version}"'


def resource_response(model: Resource, status_code: int = 200, **headers: str) -> Response:
    return JSONResponse(
        model.model_dump(mode="json"),
        status_code=status_code,
        headers={"ETag": etag(model.version), **headers},
    )


def _parse_etag(value: str) -> int:
    match = _ETAG.fullmatch(value)
    if match is None:
        raise Problem(
            PRECONDITION_FAILED,
            'If-Match must be exactly one ETag as this service sends it, e.g. "3".',
        )
    return int(match[1])


def required_version(if_match: str | None) -> int:
    """The version `If-Match` names, where a write must name one."""
    value = None if if_match is None else if_match.strip()
    # `*` names no version, so it cannot stand in for one.
    if value is None or value == "*":
        raise Problem(
            PRECONDITION_REQUIRED,
            'Send If-Match with the ETag of your last read, e.g. If-Match: "3".',
        )
    return _parse_etag(value)


def optional_version(if_match: str | None) -> int | None:
    """The version `If-Match` names, or None when it is absent or `*` (which asks only that
    the resource exist, as every write checks anyway)."""
    value = None if if_match is None else if_match.strip()
    if value is None or value == "*":
        return None
    return _parse_etag(value)
