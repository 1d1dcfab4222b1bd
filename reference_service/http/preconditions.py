"""`If-Match` preconditions: every resource response carries `ETag: "<version>"`, and a write
names the version it was computed from, so that two writers cannot silently overwrite each
other (RFC 9110 section 13.1.1)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from fastapi import Header

from reference_service.http.problems import PRECONDITION_FAILED, PRECONDITION_REQUIRED, Problem

IfMatch = Annotated[
    str | None,
    Header(
        max_length=64,
        description='The `ETag` of your last read, e.g. `"3"`: the change applies only to that '
        "version.",
    ),
]
# Where a missing If-Match is a 428, the header is declared required. The handler reads it
# itself: a FastAPI parameter would make its absence a validation error (400) instead.
IF_MATCH_REQUIRED: Final[dict[str, Any]] = {
    "name": "if-match",
    "in": "header",
    "required": True,
    "description": 'The `ETag` of your last read, e.g. `"3"`: the change applies only to that '
    "version; without it the answer is 428.",
    "schema": {"type": "string"},
}

# One strong entity tag holding a version number. A weak tag (`W/"3"`) never matches: If-Match
# uses strong comparison (RFC 9110 section 13.1.1).
_ETAG = re.compile(r'"([0-9]{1,18})"')


def etag(version: int) -> str:
    return f'"{version}"'


def _parse_etag(value: str) -> int:
    match = _ETAG.fullmatch(value)
    if match is None:
        raise Problem(
            PRECONDITION_FAILED,
            'If-Match must be exactly one ETag as this service sends it, e.g. "3".',
        )
    return int(match[1])


def required_version(if_match: str | None) -> int | None:
    """The version `If-Match` names where a write must be conditional, or None for `*`.

    `If-Match: *` is true whenever the resource has a current representation (RFC 9110
    section 13.1.1), and a request carrying it is a conditional request (RFC 9110 section
    13.1), which is all RFC 6585 section 3 lets a 428 demand; so `*` satisfies the requirement,
    and the change applies to whatever version is current if the resource exists (404 if not,
    as RFC 9110 section 13.2.1 ignores preconditions when the answer without them would not
    be a 2xx). A client sending `*` has explicitly chosen last-writer-wins.
    """
    value = None if if_match is None else if_match.strip()
    if value is None or value == "":
        raise Problem(
            PRECONDITION_REQUIRED,
            'Send If-Match with the ETag of your last read, e.g. If-Match: "3" '
            "(or If-Match: * to change whatever version is current).",
        )
    return None if value == "*" else _parse_etag(value)


def optional_version(if_match: str | None) -> int | None:
    """The version `If-Match` names, or None when it is absent or `*` (which asks only that
    the resource exist, as every write checks anyway)."""
    value = None if if_match is None else if_match.strip()
    if value is None or value == "*":
        return None
    return _parse_etag(value)
