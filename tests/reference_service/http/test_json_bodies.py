"""Bodies are JSON, parsed strictly: 415 for another media type, line and column for a syntax
error, duplicate members refused with their pointers; each refusal only after the caller was
authenticated and counted by the rate limiter. Through `create_app`'s app."""

from __future__ import annotations

import httpx
import pytest

from reference_service.policy import Policy, Quota, RateLimitPolicy
from tests.reference_service.http.conftest import Callers, OpenService, Service, assert_problem

PRODUCT = b'{"sku": "MUG-1", "name": "Mug", "price_minor": 1200, "currency": "EUR"}'


async def _post(
    client: httpx.AsyncClient, callers: Callers, content: bytes, content_type: str | None
) -> httpx.Response:
    headers = dict(callers.a.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await client.post("/api/v1/products", content=content, headers=headers)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, callers: Callers, content_type: str | None
) -> None:
    response = await _post(client, callers, PRODUCT, content_type)
    body = assert_problem(response, 415, "unsupported-media-type")
    assert "application/json" in body["detail"]
    assert response.headers["Accept-Post"] == "application/json"


async def test_a_patch_that_is_not_json_names_accept_patch(
    client: httpx.AsyncClient, callers: Callers
) -> None:
    created = await _post(client, callers, PRODUCT, "application/json")
    assert created.status_code == 201, created.text
    response = await client.patch(
        created.headers["Location"],
        content=b"name=Cup",
        headers={
            **callers.a.headers,
            "Content-Type": "application/x-www-form-urlencoded",
            "If-Match": created.headers["ETag"],
        },
    )
    assert_problem(response, 415, "unsupported-media-type")
    assert response.headers["Accept-Patch"] == "application/json"


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/merge-patch+json"]
)
async def test_json_media_types_are_taken(
    client: httpx.AsyncClient, callers: Callers, content_type: str
) -> None:
    assert (await _post(client, callers, PRODUCT, content_type)).status_code == 201


async def test_malformed_json_says_where(client: httpx.AsyncClient, callers: Callers) -> None:
    content = b'{\n  "sku": "MUG-1",\n  "name": "Mug"\n  "price_minor": 1200\n}'
    body = assert_problem(
        await _post(client, callers, content, "application/json"), 400, "validation-error"
    )
    (error,) = body["errors"]
    assert (error["in"], error["pointer"], error["line"], error["column"]) == ("body", "", 4, 3)
    assert "line 4, column 3" in error["detail"]
    assert "line 4, column 3" in body["detail"]


async def test_duplicate_members_are_refused_with_their_pointers(
    client: httpx.AsyncClient, callers: Callers, service: Service
) -> None:
    content = (
        b'{"sku": "MUG-1", "name": "Mug", "price_minor": 1200, "currency": "EUR",'
        b' "price_minor": 1, "currency": "USD", "currency": "GBP"}'
    )
    body = assert_problem(
        await _post(client, callers, content, "application/json"), 400, "validation-error"
    )
    assert sorted(e["pointer"] for e in body["errors"]) == ["/currency", "/price_minor"]
    # And nothing was written.
    listed = await client.get("/api/v1/products", headers=callers.a.headers)
    assert listed.json()["items"] == []


async def test_duplicates_inside_nested_objects_are_located(
    client: httpx.AsyncClient, callers: Callers
) -> None:
    content = (
        b'{"sku": "MUG-2", "name": "Mug", "price": {"amount": 1, "amount": 2, "currency": "EUR"}}'
    )
    response = await client.post(
        "/api/v2/products",
        content=content,
        headers={**callers.a.headers, "Content-Type": "application/json"},
    )
    body = assert_problem(response, 400, "validation-error")
    assert [e["pointer"] for e in body["errors"]] == ["/price/amount"]


@pytest.mark.parametrize("content", [b'{"price_minor": NaN}', b"\xff\xfe{}"])
async def test_what_is_not_json_is_refused(
    client: httpx.AsyncClient, callers: Callers, content: bytes
) -> None:
    assert_problem(
        await _post(client, callers, content, "application/json"), 400, "validation-error"
    )


async def test_a_currency_outside_iso_4217_is_refused_in_both_versions(
    client: httpx.AsyncClient, callers: Callers
) -> None:
    v1 = await client.post(
        "/api/v1/accounts", json={"name": "A", "currency": "XXY"}, headers=callers.a.headers
    )
    assert [e["pointer"] for e in assert_problem(v1, 400, "validation-error")["errors"]] == [
        "/currency"
    ]
    v2 = await client.post(
        "/api/v2/accounts",
        json={"name": "A", "balance": {"amount": 0, "currency": "XXY"}},
        headers=callers.a.headers,
    )
    assert [e["pointer"] for e in assert_problem(v2, 400, "validation-error")["errors"]] == [
        "/balance/currency"
    ]
    for code in ("EUR", "JPY", "CHF"):
        taken = await client.post(
            "/api/v1/accounts", json={"name": "A", "currency": code}, headers=callers.a.headers
        )
        assert taken.status_code == 201, taken.text


# --- a refused body is judged after authentication and the rate limit (fuzzer finding F1) ----

REFUSED_BODIES = [
    pytest.param(b"\x00", "application/json", 400, "validation-error", id="not-json"),
    pytest.param(b"\xd9V\xe3Z_\xff", "application/json", 400, "validation-error", id="not-utf8"),
    pytest.param(PRODUCT, "text/plain", 415, "unsupported-media-type", id="not-json-media"),
]


@pytest.mark.parametrize(("content", "content_type", "status", "slug"), REFUSED_BODIES)
async def test_a_refused_body_is_counted_and_carries_the_rate_limit_headers(
    open_service: OpenService,
    callers: Callers,
    content: bytes,
    content_type: str,
    status: int,
    slug: str,
) -> None:
    # Two requests a day: the refused body is the first, so the valid one after it is the last.
    tight = Policy(
        rate_limit=RateLimitPolicy(default=Quota(requests=2, period_seconds=86400, burst=2))
    )
    client = (await open_service(policy=tight)).client
    refused = await _post(client, callers, content, content_type)
    assert_problem(refused, status, slug)
    assert refused.headers["RateLimit-Policy"] == '"default";q=2;w=86400;burst=2'
    assert refused.headers["RateLimit"].startswith('"default";r=1;')
    assert (await _post(client, callers, PRODUCT, "application/json")).status_code == 201
    over = await _post(client, callers, content, content_type)
    assert_problem(over, 429, "rate-limited")


@pytest.mark.parametrize(("content", "content_type", "status", "slug"), REFUSED_BODIES)
async def test_a_refused_body_without_a_key_is_401(
    client: httpx.AsyncClient, content: bytes, content_type: str, status: int, slug: str
) -> None:
    response = await client.post(
        "/api/v2/products", content=content, headers={"Content-Type": content_type}
    )
    assert_problem(response, 401, "unauthorized")
    assert response.headers["RateLimit-Policy"].startswith('"unauthenticated";')
