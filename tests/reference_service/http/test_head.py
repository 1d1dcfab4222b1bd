"""HEAD is answered wherever GET is: the same status and fields, no content."""

from __future__ import annotations

import httpx

from tests.reference_service.http.conftest import Callers, assert_problem

PRODUCT = {"sku": "MUG-1", "name": "Mug", "price_minor": 1200, "currency": "EUR"}


async def test_head_answers_like_get_without_content(
    client: httpx.AsyncClient, callers: Callers
) -> None:
    headers = callers.a.headers
    created = await client.post("/api/v1/products", json=PRODUCT, headers=headers)
    assert created.status_code == 201, created.text
    for url in (created.headers["Location"], "/api/v1/products", "/api/v2/products"):
        got = await client.get(url, headers=headers)
        head = await client.head(url, headers=headers)
        assert head.status_code == got.status_code == 200
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.content))
        assert head.headers.get("etag") == got.headers.get("etag")
        assert "RateLimit" in head.headers


async def test_head_refuses_like_get(client: httpx.AsyncClient, callers: Callers) -> None:
    response = await client.head("/api/v1/products")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    missing = "/api/v1/products/00000000-0000-4000-8000-000000000000"
    response = await client.head(missing, headers=callers.a.headers)
    assert response.status_code == 404
    # A method the route has not is still a 405, HEAD included in what it has.
    assert_problem(await client.put("/api/v1/products/" + "0" * 8), 405, "method-not-allowed")
