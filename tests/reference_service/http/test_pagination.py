"""Cursor codec and page shaping, without a database."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest
from pydantic import BaseModel
from starlette.requests import Request

from reference_service.config import Settings, describe
from reference_service.db.uuid7 import uuid7
from reference_service.http.pagination import CursorCodec, page_response
from reference_service.http.problems import INVALID_CURSOR, Problem

KEY = (datetime(2026, 11, 26, 14, 0, 0, 123456, tzinfo=UTC), uuid7())


@pytest.fixture
def codec() -> CursorCodec:
    return CursorCodec(b"test-secret")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip_keeps_microseconds_and_id(codec: CursorCodec) -> None:
    token = codec.encode("products", KEY)
    assert codec.decode("products", token) == KEY
    # URL-safe without escaping: it goes into query strings and Link headers as is.
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_other_time_zones_are_the_same_instant(codec: CursorCodec) -> None:
    local = KEY[0].astimezone(timezone(timedelta(hours=5)))
    assert codec.decode("products", codec.encode("products", (local, KEY[1])))[0] == KEY[0]


def _refused(codec: CursorCodec, collection: str, token: str) -> None:
    with pytest.raises(Problem) as caught:
        codec.decode(collection, token)
    assert caught.value.kind is INVALID_CURSOR
    assert caught.value.status == 400


def test_edited_payload_is_refused(codec: CursorCodec) -> None:
    body, signature = codec.encode("products", KEY).split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["t"] = "2000-01-01T00:00:00+00:00"  # an attempt to jump elsewhere in the keyset
    forged = _b64(json.dumps(data, separators=(",", ":")).encode())
    _refused(codec, "products", f"{forged}.{signature}")


def test_edited_signature_is_refused(codec: CursorCodec) -> None:
    body, signature = codec.encode("products", KEY).split(".")
    flipped = "A" if signature[0] != "A" else "B"
    _refused(codec, "products", f"{body}.{flipped}{signature[1:]}")


def test_cursor_of_another_collection_or_secret_is_refused(codec: CursorCodec) -> None:
    token = codec.encode("products", KEY)
    _refused(codec, "accounts", token)
    _refused(CursorCodec(b"another-secret"), "products", token)


@pytest.mark.parametrize(
    "token", ["", ".", "abc", "a.b.c", "!!!.???", "x" * 600, _b64(b"{}") + "." + _b64(b"x" * 32)]
)
def test_malformed_cursors_are_refused(codec: CursorCodec, token: str) -> None:
    _refused(codec, "products", token)


def test_signed_but_unreadable_payload_is_refused(codec: CursorCodec) -> None:
    # A payload carrying a valid signature but not our layout (as after a format change).
    payload = b'{"c":"products","t":"yesterday","i":"nope"}'
    token = f"{_b64(payload)}.{_b64(codec._sign(payload))}"
    _refused(codec, "products", token)


def test_naive_timestamps_cannot_be_encoded(codec: CursorCodec) -> None:
    with pytest.raises(ValueError, match="timezone"):
        codec.encode("products", (datetime(2026, 1, 1), KEY[1]))


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        CursorCodec(b"")


class Item(BaseModel):
    id: UUID
    created_at: datetime
    name: str


def _request(query: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": "http",
            "server": ("testserver", 80),
            "path": "/api/v1/products",
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(b"host", b"testserver")],
        }
    )


def _items(count: int) -> list[Item]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        Item(id=uuid7(), created_at=start + timedelta(seconds=n), name=f"n{n}")
        for n in range(count)
    ]


def test_page_with_more_rows_links_to_the_next(codec: CursorCodec) -> None:
    rows = _items(3)  # fetched with limit + 1
    response = page_response(_request("limit=2&cursor=old&x=1"), codec, "products", rows, 2)
    body = json.loads(bytes(response.body))
    assert [item["name"] for item in body["items"]] == ["n0", "n1"]
    path, _, query = body["next"].partition("?")
    assert path == "/api/v1/products"
    params = dict(part.split("=", 1) for part in query.split("&"))
    # The old cursor is replaced, other parameters are kept.
    assert params["limit"] == "2" and params["x"] == "1"
    assert codec.decode("products", params["cursor"]) == (rows[1].created_at, rows[1].id)
    assert response.headers["link"] == f'<{body["next"]}>; rel="next"'


def test_last_page_has_no_next(codec: CursorCodec) -> None:
    response = page_response(_request(""), codec, "products", _items(2), 2)
    body = json.loads(bytes(response.body))
    assert len(body["items"]) == 2
    assert body["next"] is None
    assert "link" not in response.headers


def test_the_cursor_secret_is_never_printed() -> None:
    # `adbm-service config` shows secret URLs without their passwords; a secret that is not a
    # URL has nothing safe to show.
    shown = describe(Settings(cursor_secret="s3cret-cursor-key"))
    assert shown["cursor_secret"] == "***"
    assert "s3cret-cursor-key" not in json.dumps(shown)
