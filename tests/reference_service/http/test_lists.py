"""Cursor pagination over HTTP: a walk sees every row exactly once while rows are added."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg

from reference_service.db.uuid7 import uuid7
from tests.reference_service.conftest import DatabaseUrls
from tests.reference_service.http.conftest import Callers, assert_problem

ROWS = 10_000
START = datetime(2026, 1, 1, tzinfo=UTC)


async def copy_products(
    database_urls: DatabaseUrls, tenant_id: uuid.UUID, created: list[datetime], tag: str
) -> list[uuid.UUID]:
    """Insert products with the given `created_at`s in one COPY, as the admin."""
    ids = [uuid7() for _ in created]
    # Ids in random order relative to created_at: ties on created_at are broken by id alone.
    random.shuffle(ids)
    async with await psycopg.AsyncConnection.connect(database_urls.admin_url) as conn:
        async with (
            conn.cursor() as cur,
            cur.copy(
                "COPY products (id, tenant_id, created_at, updated_at, created_by, updated_by,"
                " sku, name, price_minor, currency) FROM STDIN"
            ) as copy,
        ):
            for n, (row_id, at) in enumerate(zip(ids, created, strict=True)):
                await copy.write_row(
                    (row_id, tenant_id, at, at, "test", "test", f"{tag}-{n}", tag, n, "EUR")
                )
        await conn.commit()
    return ids


async def test_walk_returns_every_existing_row_once_during_inserts(
    client: httpx.AsyncClient, callers: Callers, database_urls: DatabaseUrls
) -> None:
    # Three rows per millisecond: many created_at ties for the id to break.
    created = [START + timedelta(milliseconds=n // 3) for n in range(ROWS)]
    existing = set(await copy_products(database_urls, callers.a.tenant_id, created, "old"))
    # Another tenant's rows interleave in time and must never show up.
    await copy_products(database_urls, callers.b.tenant_id, created[::10], "other")

    walking = True

    async def insert_meanwhile() -> int:
        """Rows committed during the walk: new ones through the API, and "late" ones whose
        created_at falls inside the range already walked or still ahead (as a long
        transaction committing late would leave them)."""
        count = 0
        while walking:
            response = await client.post(
                "/api/v1/products",
                json={"sku": f"new-{count}", "name": "new", "price_minor": 1, "currency": "EUR"},
                headers=callers.a.headers,
            )
            assert response.status_code == 201
            late = [random.choice(created) for _ in range(5)]
            await copy_products(database_urls, callers.a.tenant_id, late, f"late{count}")
            count += 1
            await asyncio.sleep(0)
        return count

    inserter = asyncio.create_task(insert_meanwhile())
    seen: list[str] = []
    url: str | None = "/api/v1/products?limit=100"
    pages = 0
    while url is not None:
        response = await client.get(url, headers=callers.a.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [item["id"] for item in body["items"]]
        url = body["next"]
        if url is not None:
            assert response.headers["link"] == f'<{url}>; rel="next"'
            assert parse_qs(urlsplit(url).query)["limit"] == ["100"]
        pages += 1
        await asyncio.sleep(0)
    walking = False
    rounds = await inserter

    assert rounds > 0, "nothing was inserted during the walk"
    assert len(seen) == len(set(seen)), "a row was returned twice"
    returned = {uuid.UUID(i) for i in seen}
    assert existing <= returned, f"{len(existing - returned)} existing rows were skipped"
    assert pages >= ROWS // 100
    # Every row returned is tenant A's, in keyset order.
    async with await psycopg.AsyncConnection.connect(database_urls.admin_url) as conn:
        cur = await conn.execute(
            "SELECT id FROM products WHERE id = ANY(%s) ORDER BY created_at, id",
            (list(returned),),
        )
        ordered = [str(row[0]) for row in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT count(*) FROM products WHERE id = ANY(%s) AND tenant_id <> %s",
            (list(returned), callers.a.tenant_id),
        )
        foreign = await cur.fetchone()
    assert ordered == seen
    assert foreign == (0,)


async def test_tampered_or_foreign_cursor_is_a_400_problem(
    client: httpx.AsyncClient, callers: Callers, database_urls: DatabaseUrls
) -> None:
    await copy_products(database_urls, callers.a.tenant_id, [START] * 3, "p")
    first = await client.get("/api/v1/products?limit=2", headers=callers.a.headers)
    next_url = first.json()["next"]
    cursor = parse_qs(urlsplit(next_url).query)["cursor"][0]
    assert (await client.get(next_url, headers=callers.a.headers)).status_code == 200

    body, signature = cursor.split(".")
    tampered: list[dict[str, Any]] = [
        {"cursor": body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + signature},
        {"cursor": body + "." + signature[::-1]},
        {"cursor": "garbage"},
        {"cursor": "x" * 1000},
    ]
    for params in tampered:
        response = await client.get(
            "/api/v1/products", params={**params, "limit": 2}, headers=callers.a.headers
        )
        assert_problem(response, 400, "invalid-cursor")
    # A products cursor is refused by accounts.
    response = await client.get(
        "/api/v1/accounts", params={"cursor": cursor}, headers=callers.a.headers
    )
    assert_problem(response, 400, "invalid-cursor")


async def test_limit_defaults_to_50(
    client: httpx.AsyncClient, callers: Callers, database_urls: DatabaseUrls
) -> None:
    await copy_products(database_urls, callers.a.tenant_id, [START] * 51, "p")
    first = await client.get("/api/v1/products", headers=callers.a.headers)
    assert len(first.json()["items"]) == 50
    second = await client.get(first.json()["next"], headers=callers.a.headers)
    assert len(second.json()["items"]) == 1
    assert second.json()["next"] is None
