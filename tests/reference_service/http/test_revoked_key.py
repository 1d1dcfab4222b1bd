"""A revoked key is refused once the key cache's bound has passed (`KEY_CACHE_SECONDS`), the
bound the README states: keys are cached per process, positive and negative, for that long."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

from reference_service.db.admin import Principal, create_api_key, revoke_api_key
from reference_service.http.keycache import KEY_CACHE_SECONDS, KeyCache
from tests.reference_service.conftest import DatabaseUrls, Tenants
from tests.reference_service.http.conftest import OpenService, assert_problem

README = Path(__file__).resolve().parents[3] / "README.md"


async def test_a_revoked_key_is_refused_once_the_cache_bound_has_passed(
    open_service: OpenService, database_urls: DatabaseUrls, tenants: Tenants
) -> None:
    service = await open_service()
    cache = service.services.key_cache
    now = [1000.0]
    cache.clock = lambda: now[0]
    issued = await create_api_key(database_urls.admin_url, "tenant-a", actor="test")
    headers = {"Authorization": f"Bearer {issued.key}"}
    assert (await service.client.get("/api/v2/products", headers=headers)).status_code == 200
    await revoke_api_key(database_urls.admin_url, str(issued.key_id), actor="test")
    now[0] += KEY_CACHE_SECONDS
    assert_problem(
        await service.client.get("/api/v2/products", headers=headers), 401, "unauthorized"
    )
    # And it stays refused: the refusal is cached as such, not the earlier acceptance.
    assert_problem(
        await service.client.get("/api/v2/products", headers=headers), 401, "unauthorized"
    )


async def test_a_key_is_not_looked_up_again_within_the_bound(
    open_service: OpenService, database_urls: DatabaseUrls, tenants: Tenants
) -> None:
    # The other side of the bound: within it the cached answer stands (so this is a bound,
    # not zero), which is what makes a valid key's request cost no lookup.
    service = await open_service()
    cache = service.services.key_cache
    now = [1000.0]
    cache.clock = lambda: now[0]
    issued = await create_api_key(database_urls.admin_url, "tenant-a", actor="test")
    headers = {"Authorization": f"Bearer {issued.key}"}
    assert (await service.client.get("/api/v2/products", headers=headers)).status_code == 200
    await revoke_api_key(database_urls.admin_url, str(issued.key_id), actor="test")
    now[0] += KEY_CACHE_SECONDS / 2
    assert (await service.client.get("/api/v2/products", headers=headers)).status_code == 200


def test_the_readme_states_the_bound() -> None:
    text = README.read_text("utf-8")
    seconds = f"{KEY_CACHE_SECONDS:g}"
    assert re.search(rf"revoked key is refused within {seconds} s", text), seconds


async def test_requests_arriving_together_share_one_lookup() -> None:
    # An entry that expires under load: every request in flight finds none. They must share
    # one lookup (which fills the cache), not each send their own to the database.
    cache = KeyCache()
    key = "adbm_0123abcd_" + "z" * 32
    principal = Principal(tenant_id=uuid.uuid4(), key_id=uuid.uuid4())
    lookups = 0
    release = asyncio.Event()

    async def lookup() -> Principal | None:
        nonlocal lookups
        lookups += 1
        await release.wait()
        return principal

    waiting = [asyncio.ensure_future(cache.resolve(key, lookup)) for _ in range(50)]
    await asyncio.sleep(0)
    assert cache.in_flight(key)
    release.set()
    assert await asyncio.gather(*waiting) == [principal] * 50
    assert lookups == 1
    assert cache.get(key) == principal and not cache.in_flight(key)
