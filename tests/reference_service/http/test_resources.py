"""Products and accounts over HTTP: versions and ETags, soft delete, and tenant isolation."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from reference_service.db.pool import Database
from tests.reference_service.conftest import DatabaseUrls
from tests.reference_service.http.conftest import Callers, assert_problem, place_order

PRODUCT = {"sku": "MUG-1", "name": "Mug", "price_minor": 1200, "currency": "EUR"}
ACCOUNT = {"name": "Alice", "currency": "EUR", "balance_minor": 5000}


async def admin_row(database_urls: DatabaseUrls, table: str, row_id: str) -> dict[str, Any]:
    """The stored row as the admin sees it: soft-deleted rows included, no RLS."""
    async with await psycopg.AsyncConnection.connect(
        database_urls.admin_url, row_factory=dict_row
    ) as conn:
        cur = await conn.execute(f"SELECT * FROM {table} WHERE id = %s", (row_id,))
        row = await cur.fetchone()
    assert row is not None
    return row


async def create(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, body: dict[str, Any]
) -> httpx.Response:
    response = await client.post(f"/api/v1/{path}", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response


@pytest.mark.parametrize(
    ("path", "body", "change"),
    [("products", PRODUCT, {"price_minor": 999}), ("accounts", ACCOUNT, {"name": "Alicia"})],
)
async def test_create_read_update_delete(
    client: httpx.AsyncClient,
    callers: Callers,
    database_urls: DatabaseUrls,
    path: str,
    body: dict[str, Any],
    change: dict[str, Any],
) -> None:
    headers = callers.a.headers
    created = await create(client, headers, path, body)
    item = created.json()
    assert uuid.UUID(item["id"]).version == 7
    assert {k: item[k] for k in body} == body
    assert item["version"] == 1
    assert created.headers["etag"] == '"1"'
    assert created.headers["location"] == f"/api/v1/{path}/{item['id']}"
    assert "tenant_id" not in item and "is_deleted" not in item

    url = created.headers["location"]
    read = await client.get(url, headers=headers)
    assert read.status_code == 200
    assert read.json() == item
    assert read.headers["etag"] == '"1"'

    updated = await client.patch(url, json=change, headers={**headers, "If-Match": '"1"'})
    assert updated.status_code == 200, updated.text
    assert updated.json() == {
        **item,
        **change,
        "version": 2,
        "updated_at": updated.json()["updated_at"],
    }
    assert updated.headers["etag"] == '"2"'

    stored = await admin_row(database_urls, path, item["id"])
    assert stored["created_by"] == stored["updated_by"]
    assert stored["created_by"].startswith("api-key:")

    deleted = await client.delete(url, headers={**headers, "If-Match": '"2"'})
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(await client.get(url, headers=headers), 404, "not-found")
    listed = await client.get(f"/api/v1/{path}", headers=headers)
    assert listed.json() == {"items": [], "next": None}
    # Soft delete: the row is kept, flagged, and its version moved on.
    stored = await admin_row(database_urls, path, item["id"])
    assert stored["is_deleted"] is True
    assert stored["version"] == 3
    # Deleting again, or changing it, finds nothing.
    assert_problem(await client.delete(url, headers=headers), 404, "not-found")
    assert_problem(
        await client.patch(url, json=change, headers={**headers, "If-Match": '"3"'}),
        404,
        "not-found",
    )


async def test_delete_without_if_match_is_unconditional_and_stale_if_match_fails(
    client: httpx.AsyncClient, callers: Callers
) -> None:
    headers = callers.a.headers
    first = (await create(client, headers, "products", PRODUCT)).headers["location"]
    second = (await create(client, headers, "products", {**PRODUCT, "sku": "MUG-2"})).headers[
        "location"
    ]
    stale = await client.delete(first, headers={**headers, "If-Match": '"7"'})
    assert_problem(stale, 412, "precondition-failed")
    assert (await client.delete(first, headers=headers)).status_code == 204
    assert (await client.delete(second, headers={**headers, "If-Match": "*"})).status_code == 204


async def test_sku_is_free_again_after_its_product_is_deleted(
    client: httpx.AsyncClient, callers: Callers
) -> None:
    url = (await create(client, callers.a.headers, "products", PRODUCT)).headers["location"]
    assert (await client.delete(url, headers=callers.a.headers)).status_code == 204
    await create(client, callers.a.headers, "products", PRODUCT)


async def test_patch_needs_a_current_if_match(client: httpx.AsyncClient, callers: Callers) -> None:
    headers = callers.a.headers
    url = (await create(client, headers, "products", PRODUCT)).headers["location"]
    change = {"name": "Big mug"}
    assert_problem(
        await client.patch(url, json=change, headers=headers), 428, "precondition-required"
    )
    for bad in ('"2"', '"0"', "1", 'W/"1"', '"1", "2"'):
        response = await client.patch(url, json=change, headers={**headers, "If-Match": bad})
        assert_problem(response, 412, "precondition-failed")
    assert (await client.get(url, headers=headers)).json()["version"] == 1
    ok = await client.patch(url, json=change, headers={**headers, "If-Match": ' "1" '})
    assert ok.status_code == 200


async def test_if_match_star_changes_any_current_representation(
    client: httpx.AsyncClient, callers: Callers
) -> None:
    # RFC 9110 13.1.1: `*` is true when the resource has a current representation; it makes
    # the PATCH conditional, which is what the 428 requires (the README's decision).
    headers = callers.a.headers
    url = (await create(client, headers, "products", PRODUCT)).headers["location"]
    first = await client.patch(url, json={"name": "One"}, headers={**headers, "If-Match": "*"})
    assert (first.status_code, first.headers["ETag"]) == (200, '"2"')
    second = await client.patch(url, json={"name": "Two"}, headers={**headers, "If-Match": "*"})
    assert (second.status_code, second.json()["name"], second.headers["ETag"]) == (
        200,
        "Two",
        '"3"',
    )
    # No current representation: the answer without the precondition (404) stands.
    assert (await client.delete(url, headers=headers)).status_code == 204
    assert_problem(
        await client.patch(url, json={"name": "x"}, headers={**headers, "If-Match": "*"}),
        404,
        "not-found",
    )
    missing = url.rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000"
    assert_problem(
        await client.patch(missing, json={"name": "x"}, headers={**headers, "If-Match": "*"}),
        404,
        "not-found",
    )


async def test_concurrent_patches_with_one_version_make_exactly_one_update(
    client: httpx.AsyncClient, callers: Callers, database_urls: DatabaseUrls
) -> None:
    headers = callers.a.headers
    created = await create(client, headers, "products", PRODUCT)
    url = created.headers["location"]
    etag = created.headers["etag"]

    responses = await asyncio.gather(
        *(
            client.patch(url, json={"price_minor": 100 + n}, headers={**headers, "If-Match": etag})
            for n in range(20)
        )
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 19
    for response in responses:
        if response.status_code == 412:
            assert_problem(response, 412, "precondition-failed")
    winner = next(r for r in responses if r.status_code == 200).json()
    stored = await admin_row(database_urls, "products", created.json()["id"])
    # Exactly one update happened, and it is the one that was told it succeeded.
    assert stored["version"] == 2
    assert stored["price_minor"] == winner["price_minor"]


async def test_another_tenant_gets_404_for_everything_and_changes_nothing(
    client: httpx.AsyncClient, callers: Callers, database_urls: DatabaseUrls
) -> None:
    product = (await create(client, callers.a.headers, "products", PRODUCT)).json()
    account = (await create(client, callers.a.headers, "accounts", ACCOUNT)).json()
    b = callers.b.headers
    for path, item in (("products", product), ("accounts", account)):
        url = f"/api/v1/{path}/{item['id']}"
        for response in (
            await client.get(url, headers=b),
            await client.patch(url, json={"name": "mine"}, headers={**b, "If-Match": '"1"'}),
            await client.delete(url, headers=b),
            await client.delete(url, headers={**b, "If-Match": '"1"'}),
        ):
            body = assert_problem(response, 404, "not-found")
            assert item["id"] not in response.text.replace(body["instance"], "")
        listed = await client.get(f"/api/v1/{path}", headers=b)
        assert listed.json() == {"items": [], "next": None}
        stored = await admin_row(database_urls, path, item["id"])
        assert (stored["version"], stored["is_deleted"], stored["name"]) == (
            1,
            False,
            item["name"],
        )
    # Tenant A still sees its own.
    assert (
        await client.get(f"/api/v1/products/{product['id']}", headers=callers.a.headers)
    ).json() == product


async def test_rls_is_the_boundary_even_without_a_where_clause(
    client: httpx.AsyncClient, callers: Callers, database: Database
) -> None:
    for n in range(3):
        await create(client, callers.a.headers, "products", {**PRODUCT, "sku": f"A-{n}"})
    await create(client, callers.b.headers, "products", {**PRODUCT, "sku": "B-0"})
    # What a handler with a forgotten WHERE clause would run, as tenant B.
    async with database.transaction(callers.b.tenant_id) as conn:
        rows = await (await conn.execute("SELECT * FROM products")).fetchall()
        orders = await (await conn.execute("SELECT * FROM orders")).fetchall()
    assert [row["sku"] for row in rows] == ["B-0"]
    assert {row["tenant_id"] for row in rows} == {callers.b.tenant_id}
    assert orders == []
    # An UPDATE with no WHERE changes only B's rows; a row for A cannot be written (WITH CHECK).
    async with database.transaction(callers.b.tenant_id) as conn:
        cur = await conn.execute("UPDATE products SET name = 'stolen' RETURNING sku")
        assert [row["sku"] for row in await cur.fetchall()] == ["B-0"]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        async with database.transaction(callers.b.tenant_id) as conn:
            await conn.execute(
                "INSERT INTO products (id, tenant_id, sku, name, price_minor, currency,"
                " created_by, updated_by) VALUES (%s, %s, 'X', 'x', 1, 'EUR', 't', 't')",
                (uuid.uuid4(), callers.a.tenant_id),
            )
    a_items = (await client.get("/api/v1/products", headers=callers.a.headers)).json()["items"]
    assert sorted(item["name"] for item in a_items) == ["Mug"] * 3


async def test_orders_are_readable_and_isolated(
    client: httpx.AsyncClient, callers: Callers, database: Database
) -> None:
    account = (await create(client, callers.a.headers, "accounts", ACCOUNT)).json()
    product = (await create(client, callers.a.headers, "products", PRODUCT)).json()
    # Orders have no write route yet: one placed as tenant A.
    order = await place_order(
        database, callers.a.tenant_id, account["id"], product["id"], quantity=2, total_minor=2400
    )
    url = f"/api/v1/orders/{order['id']}"
    read = await client.get(url, headers=callers.a.headers)
    assert read.status_code == 200
    assert read.json()["total_minor"] == 2400
    assert read.json()["account_id"] == account["id"]
    assert read.headers["etag"] == '"1"'
    listed = await client.get("/api/v1/orders", headers=callers.a.headers)
    assert [item["id"] for item in listed.json()["items"]] == [str(order["id"])]
    assert_problem(await client.get(url, headers=callers.b.headers), 404, "not-found")
    assert (await client.get("/api/v1/orders", headers=callers.b.headers)).json()["items"] == []
    assert_problem(
        await client.patch(url, json={}, headers=callers.a.headers), 405, "method-not-allowed"
    )
