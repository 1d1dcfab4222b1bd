"""Products are declared `cached`: `GET /products/{id}` reads through the Redis cache, end to
end through the app on the real PostgreSQL and Redis.

A change made behind the API's back (as the admin, in SQL) is what shows where a read came
from: a read from the cache still sees the old row, a read from Postgres the new one.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from reference_service.db.admin import create_api_key, revoke_api_key
from reference_service.db.pool import Database, Statement
from reference_service.http.keycache import KEY_CACHE_SECONDS
from tests.reference_service.conftest import DatabaseUrls, Tenants
from tests.reference_service.http.conftest import Callers, OpenService, Service, assert_problem

PRODUCT = {"sku": "MUG-1", "name": "Mug", "price_minor": 1200, "currency": "EUR"}


async def rename_behind_the_api(admin_url: str, product_id: str, name: str) -> None:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute(
            sql.SQL("UPDATE {} SET name = %s WHERE id = %s").format(sql.Identifier("products")),
            (name, uuid.UUID(product_id)),
        )


async def create_product(service: Service, headers: dict[str, str], **fields: Any) -> str:
    created = await service.client.post(
        "/api/v1/products", json={**PRODUCT, **fields}, headers=headers
    )
    assert created.status_code == 201, created.text
    product_id: str = created.json()["id"]
    return product_id


class ReadCounter:
    """Counts the reads of the products table that reach PostgreSQL, around the app's real
    `Database.read` (which still runs them)."""

    def __init__(self, database: Database) -> None:
        self._read = database.read
        self.product_reads = 0

    async def read(self, tenant_id: uuid.UUID | None, statement: Statement) -> Any:
        if '"products"' in statement.query.as_string(None):
            self.product_reads += 1
        return await self._read(tenant_id, statement)


async def test_a_second_read_is_served_from_the_cache_and_a_patch_shows_on_the_next(
    open_service: OpenService, callers: Callers, database_urls: DatabaseUrls
) -> None:
    service = await open_service()
    headers = callers.a.headers
    product_id = await create_product(service, headers)
    url = f"/api/v1/products/{product_id}"

    first = await service.client.get(url, headers=headers)
    assert first.status_code == 200 and first.json()["name"] == "Mug"
    await rename_behind_the_api(database_urls.admin_url, product_id, "Renamed in SQL")
    second = await service.client.get(url, headers=headers)
    assert second.json() == first.json()  # not from Postgres, which holds the new name
    assert second.headers["etag"] == first.headers["etag"]

    patched = await service.client.patch(
        url, json={"name": "Cup"}, headers={**headers, "If-Match": first.headers["etag"]}
    )
    assert patched.status_code == 200, patched.text
    after = await service.client.get(url, headers=headers)
    assert after.json()["name"] == "Cup"
    assert after.headers["etag"] == patched.headers["etag"] == '"2"'
    # v2 reads the same entry, in its own shape.
    v2 = await service.client.get(f"/api/v2/products/{product_id}", headers=headers)
    assert v2.json()["name"] == "Cup" and v2.json()["price"] == {"amount": 1200, "currency": "EUR"}

    deleted = await service.client.delete(url, headers=headers)
    assert deleted.status_code == 204
    assert_problem(await service.client.get(url, headers=headers), 404, "not-found")


async def test_another_tenant_never_gets_the_cached_row(
    open_service: OpenService, callers: Callers
) -> None:
    service = await open_service()
    product_id = await create_product(service, callers.a.headers)
    url = f"/api/v1/products/{product_id}"
    assert (await service.client.get(url, headers=callers.a.headers)).status_code == 200
    for _ in range(2):  # the second time from B's own cached "no such row"
        assert_problem(await service.client.get(url, headers=callers.b.headers), 404, "not-found")
    # B's miss did not touch A's entry.
    again = await service.client.get(url, headers=callers.a.headers)
    assert again.status_code == 200 and again.json()["id"] == product_id
    redis = service.services.redis
    prefix = service.services.settings.redis_key_prefix
    entries = {key.decode() async for key in redis.scan_iter(match=f"{prefix}cache:product:*")}
    assert f"{prefix}cache:product:{callers.a.tenant_id}:{product_id}" in entries
    assert f"{prefix}cache:product:{callers.b.tenant_id}:{product_id}" in entries


async def test_a_revoked_key_is_refused_even_for_a_cached_row(
    open_service: OpenService, database_urls: DatabaseUrls, tenants: Tenants
) -> None:
    service = await open_service()
    cache = service.services.key_cache
    now = [1000.0]
    cache.clock = lambda: now[0]
    issued = await create_api_key(database_urls.admin_url, "tenant-a", actor="test")
    headers = {"Authorization": f"Bearer {issued.key}"}
    product_id = await create_product(service, headers)
    url = f"/api/v1/products/{product_id}"
    assert (await service.client.get(url, headers=headers)).status_code == 200
    redis = service.services.redis
    prefix = service.services.settings.redis_key_prefix
    entry = f"{prefix}cache:product:{tenants.a}:{product_id}"
    assert await redis.exists(entry)
    await revoke_api_key(database_urls.admin_url, str(issued.key_id), actor="test")
    # The key is checked before the row cache is read, so a cached row does not stretch the
    # key cache's stated bound (KEY_CACHE_SECONDS): once it has passed the key is refused,
    # although the row is still in the cache.
    now[0] += KEY_CACHE_SECONDS
    assert await redis.exists(entry)
    assert_problem(await service.client.get(url, headers=headers), 401, "unauthorized")


async def test_a_row_changed_behind_the_api_is_stale_at_most_the_ttl(
    open_service: OpenService, callers: Callers, database_urls: DatabaseUrls
) -> None:
    # The bound the README states: ADBM_CACHE_TTL_SECONDS (no jitter here, so exactly that).
    ttl = 0.5
    service = await open_service(cache_ttl_seconds=ttl, cache_ttl_jitter=0)
    headers = callers.a.headers
    product_id = await create_product(service, headers)
    url = f"/api/v1/products/{product_id}"
    assert (await service.client.get(url, headers=headers)).json()["name"] == "Mug"
    await rename_behind_the_api(database_urls.admin_url, product_id, "Renamed in SQL")
    await asyncio.sleep(ttl)  # the bound has passed
    assert (await service.client.get(url, headers=headers)).json()["name"] == "Renamed in SQL"


async def test_the_tenants_filter_is_built_and_then_refuses_unknown_ids_without_postgres(
    open_service: OpenService, callers: Callers, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = await open_service()
    headers = callers.a.headers
    known = await create_product(service, headers)
    assert (await service.client.get(f"/api/v1/products/{known}", headers=headers)).is_success
    # That first read found the filter unbuilt and started building it in the background.
    cache = service.services.caches["products"]
    built = cache.cache.keys(callers.a.tenant_id, "").built
    async with asyncio.timeout(30):  # a hang guard, not a measurement
        while not await service.services.redis.exists(built):
            await asyncio.sleep(0.02)

    counter = ReadCounter(service.services.database)
    monkeypatch.setattr(service.services.database, "read", counter.read)
    for _ in range(20):
        missing = await service.client.get(f"/api/v1/products/{uuid.uuid4()}", headers=headers)
        assert_problem(missing, 404, "not-found")
    assert counter.product_reads == 0
    # A product created after the filter was built is let through (remembered before commit).
    later = await create_product(service, headers, sku="MUG-2")
    found = await service.client.get(f"/api/v1/products/{later}", headers=headers)
    assert found.status_code == 200 and found.json()["sku"] == "MUG-2"
    assert counter.product_reads == 1
    # The filter is the tenant's own: B's is not built, so B's reads are not refused by A's.
    assert not await service.services.redis.exists(cache.cache.keys(callers.b.tenant_id, "").built)
