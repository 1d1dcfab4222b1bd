"""Request bodies: JSON only, parsed strictly, with errors that say where.

Every route that reads a body uses `JsonBodyRoute`, which runs before FastAPI parses it:

- a body whose `Content-Type` is not `application/json` (or `application/<x>+json`) is a 415
  `unsupported-media-type` problem, with `Accept-Post` / `Accept-Patch` naming what is taken
  (FastAPI would otherwise validate the raw bytes and answer an unhelpful 400);
- a body that is not JSON is a 400 `validation-error` whose entry gives the line and column
  (`line`, `column`, 1-based) of the first error;
- an object with the same member twice is refused (400, a `pointer` per duplicate), where
  Python's parser would silently keep the last value (RFC 8259 section 4 leaves it undefined);
- so are `NaN` and `Infinity`, which are not JSON, and a body that is not UTF-8 (RFC 8259
  section 8.1).

The parsed document is kept on the request, so FastAPI does not parse the body a second time.

A refused body is judged where FastAPI judges a body that fails validation: after the route's
dependencies. The route checks the media type and parses before FastAPI does, but keeps the
refusal on the request, and `refuse_unreadable_body`, the last dependency of every route that
takes a body, raises it. So a request is first authenticated (401 without a valid key) and
counted by the rate limiter (a 429 when over its quota), and its 415 or 400 carries the
`RateLimit` headers like any other answer; on an idempotent write it is also the answer the
`Idempotency-Key` replays, as a body failing validation is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any, Final

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from reference_service.http.problems import (
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION_ERROR,
    Problem,
    json_pointer,
)

ACCEPTED: Final = "application/json"
# The fields RFC 5789 (PATCH) and the W3C LDP (POST) define to name the media types taken.
_ACCEPT_FIELD: Final = {"PATCH": "Accept-Patch", "POST": "Accept-Post", "PUT": "Accept-Put"}
# The scope entry holding a body's refusal until `refuse_unreadable_body` raises it.
_REFUSAL: Final = "adbm.body_refusal"


def is_json(content_type: str) -> bool:
    message = Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _invalid(detail: str, **where: Any) -> Problem:
    return Problem(
        VALIDATION_ERROR,
        detail,
        errors=[{"in": "body", "pointer": "", "detail": detail, **where}],
    )


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def parse(body: bytes) -> Any:
    """The JSON document in `body`, or a `validation-error` Problem saying what and where."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"The body is not UTF-8 (byte {exc.start}).") from None
    duplicates: list[tuple[dict[str, Any], list[str]]] = []

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        repeated: list[str] = []
        for name, value in pairs:
            if name in obj and name not in repeated:
                repeated.append(name)
            obj[name] = value
        if repeated:
            duplicates.append((obj, repeated))
        return obj

    try:
        document = json.loads(text, object_pairs_hook=members, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise _invalid(
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except ValueError as exc:
        raise _invalid(f"The body is not valid JSON: {exc}.") from None
    if duplicates:
        raise _duplicates(document, duplicates)
    return document


def _duplicates(document: Any, found: list[tuple[dict[str, Any], list[str]]]) -> Problem:
    by_id = {id(obj): names for obj, names in found}
    errors: list[dict[str, Any]] = []

    def walk(node: Any, path: list[int | str]) -> None:
        if isinstance(node, dict):
            for name in by_id.get(id(node), ()):
                errors.append(
                    {
                        "in": "body",
                        "pointer": json_pointer([*path, name]),
                        "detail": f"Member {name!r} appears more than once in this object.",
                    }
                )
            for name, value in node.items():
                walk(value, [*path, name])
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, [*path, index])

    walk(document, [])
    noun = "member" if len(errors) == 1 else "members"
    return Problem(
        VALIDATION_ERROR, f"The body repeats {len(errors)} object {noun}.", errors=errors
    )


class JsonBodyRequest(Request):
    """A request whose `json()` is the strictly parsed body (`parse`), parsed once. A body that
    is not JSON is kept as the refusal `refuse_unreadable_body` raises (the document is then
    None, and nothing reads it: that dependency runs before the body is validated)."""

    _document: Any

    async def json(self) -> Any:
        if not hasattr(self, "_document"):
            try:
                self._document = parse(await self.body())
            except Problem as refusal:
                self.scope[_REFUSAL] = refusal
                self._document = None
        return self._document


async def refuse_unreadable_body(request: Request) -> None:
    """The last dependency of a route that takes a body: raises the refusal of a body that is
    not JSON, once authentication and the rate limit have run (see the module's docstring)."""
    refusal = request.scope.get(_REFUSAL)
    if isinstance(refusal, Problem):
        raise refusal


_BODY_METHODS: Final = frozenset(_ACCEPT_FIELD)


class JsonBodyRoute(APIRoute):
    """A route whose body, if it reads one, must be JSON (see the module's docstring)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if _BODY_METHODS & {m.upper() for m in kwargs.get("methods") or ()}:
            # After the route's own dependencies (authentication and the rate limit come first);
            # FastAPI resolves the endpoint's parameters and validates the body after it.
            kwargs["dependencies"] = [
                *(kwargs.get("dependencies") or ()),
                Depends(refuse_unreadable_body),
            ]
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict_handler(request: Request) -> Response:
            request = JsonBodyRequest(request.scope, request.receive)
            content_type = request.headers.get("content-type")
            body = await request.body()
            if content_type is None and not body:
                # No body at all: the body's validation says what is missing.
                return await handler(request)
            if content_type is None or not is_json(content_type):
                field = _ACCEPT_FIELD.get(request.method)
                request.scope[_REFUSAL] = Problem(
                    UNSUPPORTED_MEDIA_TYPE,
                    f"Send the body as {ACCEPTED}"
                    + (f", not {content_type}." if content_type else " (no Content-Type)."),
                    headers={field: ACCEPTED} if field else None,
                )
            # FastAPI parses a JSON body (through `JsonBodyRequest.json`, which keeps a refusal
            # instead of raising), then resolves the dependencies, the last of which raises it.
            return await handler(request)

        return strict_handler
