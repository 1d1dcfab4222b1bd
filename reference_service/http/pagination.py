"""Cursor pagination over the keyset `(created_at, id)`: opaque, tamper-evident, never OFFSET.

A cursor is `base64url(JSON).base64url(HMAC-SHA256)`. The JSON holds the collection and the
key of the last row served; the signature (keyed with `Settings.cursor_secret`) makes cursors
opaque in practice: a client cannot forge or edit a position, so the keyset query only ever
starts from a row the service itself served. A cursor names its collection, so one minted for
products is refused by accounts. A cursor does not name its tenant: RLS already limits every
query to the caller's rows, and a position reveals nothing about another tenant's data.

Each page costs one index range scan whatever its depth (an OFFSET scan grows with depth), and
rows inserted or deleted during a walk never shift the rows still ahead of the cursor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Final, Generic, Protocol, TypeVar
from uuid import UUID

from fastapi import Query, Request
from pydantic import BaseModel, ConfigDict

from reference_service.db.repository import Key
from reference_service.http.json_response import FastJSONResponse
from reference_service.http.problems import INVALID_CURSOR, Problem

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100
# A real cursor is ~170 characters; refusing long ones early bounds the work a client can cause.
MAX_CURSOR_LENGTH: Final = 512
# Prefixed to what is signed, so a cursor signature can never be replayed as any other MAC made
# with the same secret.
_DOMAIN: Final = b"adbm-cursor-v1\x00"

Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1 to 100, default 50).")
]
CursorParam = Annotated[
    str | None,
    # No max_length here: an over-long cursor is refused by the codec as `invalid-cursor`,
    # like any other cursor we did not issue.
    Query(description="Opaque position from a previous page's `next`; omit for the first page."),
]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Signs and checks cursors with one secret."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the cursor secret must not be empty")
        self._secret = secret

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _DOMAIN + payload, hashlib.sha256).digest()

    def encode(self, collection: str, key: Key) -> str:
        created_at, row_id = key
        if created_at.utcoffset() is None:
            raise ValueError("cursor timestamps must be timezone-aware")
        payload = json.dumps(
            {"c": collection, "t": created_at.isoformat(), "i": str(row_id)},
            separators=(",", ":"),
        ).encode()
        return f"{_b64encode(payload)}.{_b64encode(self._sign(payload))}"

    def decode(self, collection: str, token: str) -> Key:
        """The key a cursor carries; `Problem(INVALID_CURSOR)` when it is not one we issued."""
        invalid = Problem(
            INVALID_CURSOR, "The cursor is not valid here; start again from the first page."
        )
        if len(token) > MAX_CURSOR_LENGTH or token.count(".") != 1:
            raise invalid
        body, signature = token.split(".")
        try:
            payload = _b64decode(body)
            given = _b64decode(signature)
        except (binascii.Error, ValueError):
            raise invalid from None
        # The signature is checked before the payload is parsed: nothing a client made up is
        # ever interpreted. compare_digest keeps the check constant-time.
        if not hmac.compare_digest(given, self._sign(payload)):
            raise invalid
        try:
            data = json.loads(payload)
            created_at = datetime.fromisoformat(data["t"])
            row_id = UUID(data["i"])
            owner = data["c"]
        except (ValueError, KeyError, TypeError):
            # Signed but unreadable: only possible across an incompatible format change.
            raise invalid from None
        if owner != collection or created_at.utcoffset() is None:
            raise invalid
        return created_at, row_id


class PageItem(Protocol):
    """What a page item must offer: its keyset position, and its JSON form."""

    @property
    def id(self) -> UUID: ...

    @property
    def created_at(self) -> datetime: ...

    def model_dump(self, *, mode: str) -> dict[str, Any]: ...


ItemT = TypeVar("ItemT", bound=BaseModel)
RowT = TypeVar("RowT", bound=PageItem)


class Page(BaseModel, Generic[ItemT]):
    """The body of every list response (for the OpenAPI document; `page_response` builds it)."""

    model_config = ConfigDict(extra="forbid")

    items: list[ItemT]
    next: str | None
    """Relative URL of the next page, or null on the last page."""


def _as_json(item: PageItem) -> dict[str, Any]:
    return item.model_dump(mode="json")


def page_response(
    request: Request,
    codec: CursorCodec,
    collection: str,
    rows: Sequence[RowT],
    limit: int,
    dump: Callable[[RowT], dict[str, Any]] = _as_json,
    dump_all: Callable[[Sequence[RowT]], list[dict[str, Any]]] | None = None,
) -> FastJSONResponse:
    """The page response for `rows`, fetched with `limit + 1`, each item shown by `dump`, or
    all of them at once by `dump_all` (one serialiser call for the page instead of one each).

    The one extra row says whether another page exists without a second query and without
    ever handing out a cursor that leads to an empty page.
    """
    items = rows[:limit]
    next_url: str | None = None
    headers: dict[str, str] = {}
    if len(rows) > limit:
        last = items[-1]
        token = codec.encode(collection, (last.created_at, last.id))
        url = request.url.include_query_params(cursor=token, limit=limit)
        # Relative, so it stays right behind any proxy or ingress that rewrites the host.
        next_url = f"{url.path}?{url.query}"
        headers["Link"] = f'<{next_url}>; rel="next"'
    shown = dump_all(items) if dump_all is not None else [dump(item) for item in items]
    body = {"items": shown, "next": next_url}
    return FastJSONResponse(body, headers=headers)
