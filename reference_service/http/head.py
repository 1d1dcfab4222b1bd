"""`HEAD` wherever `GET` is (RFC 9110 section 9.3.2): the same handler, status and header
fields, without the content. Starlette adds HEAD to its own routes, FastAPI's routes do not.

The HEAD operations are not in the OpenAPI document: each is its `GET` without a body, which
the README states once rather than every operation twice.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Response


def head_of(get: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """A handler answering what `get` would, headers and all (`Content-Length` of the body it
    would send included, as RFC 9110 allows), with no content."""

    @functools.wraps(get)
    async def head(*args: Any, **kwargs: Any) -> Response:
        response = await get(*args, **kwargs)
        return Response(status_code=response.status_code, headers=dict(response.headers.items()))

    return head
