"""Readiness fails, with the reason, when the service's role stops being bound by RLS."""

from __future__ import annotations

import psycopg
from psycopg import sql

from tests.reference_service.conftest import DatabaseUrls
from tests.reference_service.http.conftest import OpenService, assert_problem


async def test_not_ready_once_the_role_gets_bypassrls(
    open_service: OpenService, database_urls: DatabaseUrls
) -> None:
    service = await open_service()
    assert (await service.client.get("/ready")).status_code == 200
    async with await psycopg.AsyncConnection.connect(database_urls.admin_url, autocommit=True) as c:
        await c.execute(
            sql.SQL("ALTER ROLE {} BYPASSRLS").format(sql.Identifier(database_urls.app_role))
        )
    body = assert_problem(await service.client.get("/ready"), 503, "service-unavailable")
    assert body["failed"] == [f"database: database role {database_urls.app_role} has BYPASSRLS"]


async def test_not_ready_as_a_superuser(
    open_service: OpenService, database_urls: DatabaseUrls
) -> None:
    """The pool refuses every connection of a superuser; readiness says why."""
    service = await open_service(
        database_url=database_urls.admin_url, db_pool_acquire_timeout_seconds=0.3
    )
    body = assert_problem(await service.client.get("/ready"), 503, "service-unavailable")
    (failure,) = body["failed"]
    assert failure.startswith("database: database role postgres is a superuser")
