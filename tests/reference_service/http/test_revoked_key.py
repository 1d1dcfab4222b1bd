"""A revoked key is refused on the next request: keys are looked up on every request (no
cache), so the bound is zero. A key cache must keep this test true within its own bound."""

from __future__ import annotations

from reference_service.db.admin import create_api_key, revoke_api_key
from tests.reference_service.conftest import DatabaseUrls, Tenants
from tests.reference_service.http.conftest import OpenService, assert_problem


async def test_a_revoked_key_is_refused_on_the_next_request(
    open_service: OpenService, database_urls: DatabaseUrls, tenants: Tenants
) -> None:
    service = await open_service()
    issued = await create_api_key(database_urls.admin_url, "tenant-a", actor="test")
    headers = {"Authorization": f"Bearer {issued.key}"}
    assert (await service.client.get("/api/v2/products", headers=headers)).status_code == 200
    await revoke_api_key(database_urls.admin_url, str(issued.key_id), actor="test")
    assert_problem(
        await service.client.get("/api/v2/products", headers=headers), 401, "unauthorized"
    )
