"""Tenants and API keys: issued as the admin, resolved to a tenant as the app role."""

from __future__ import annotations

import getpass
import hashlib

import psycopg
import pytest

from reference_service.db import admin, repository
from reference_service.db.admin import (
    KEY_PATTERN,
    Principal,
    TenantNotFound,
    authenticate,
    create_api_key,
    create_tenant,
    generate_key,
    hash_key,
)
from reference_service.db.pool import Database
from tests.reference_service.conftest import DatabaseUrls, Tenants


def test_key_format_and_hash() -> None:
    key, prefix = generate_key()
    match = KEY_PATTERN.match(key)
    assert match is not None and match.group(1) == prefix
    assert len(key) == len("adbm_") + 8 + 1 + 32
    assert hash_key(key) == hashlib.sha256(key.encode()).digest()
    assert len({generate_key()[0] for _ in range(1000)}) == 1000


async def test_tenant_names_are_unique(database_urls: DatabaseUrls) -> None:
    tenant = await create_tenant(database_urls.admin_url, "acme", actor="test")
    assert tenant.version == 7
    with pytest.raises(psycopg.errors.UniqueViolation):
        await create_tenant(database_urls.admin_url, "acme", actor="test")


async def test_a_key_resolves_to_its_tenant_as_the_app_role(
    database_urls: DatabaseUrls, database: Database, tenants: Tenants
) -> None:
    issued = await create_api_key(database_urls.admin_url, "tenant-a", key_name="ci", actor="t")
    assert issued.tenant_id == tenants.a
    assert KEY_PATTERN.match(issued.key)
    expected = Principal(tenant_id=tenants.a, key_id=issued.key_id)
    assert await authenticate(database, issued.key) == expected
    # The same through the SQL function, as the app role with no tenant set.
    async with database.transaction(None) as conn:
        cur = await conn.execute(
            "SELECT tenant_id, key_id FROM adbm_authenticate(%s)", (hash_key(issued.key),)
        )
        assert await cur.fetchall() == [{"tenant_id": tenants.a, "key_id": issued.key_id}]
        # ...while api_keys itself stays behind RLS.
        assert await (await conn.execute("SELECT * FROM api_keys")).fetchall() == []


async def test_only_the_hash_is_stored(database_urls: DatabaseUrls, tenants: Tenants) -> None:
    issued = await create_api_key(database_urls.admin_url, "tenant-a", actor="t")
    async with await psycopg.AsyncConnection.connect(database_urls.admin_url) as conn:
        cur = await conn.execute("SELECT key_hash, prefix, name, created_by FROM api_keys")
        rows = await cur.fetchall()
    assert rows == [(hash_key(issued.key), issued.prefix, "default", "t")]


async def test_unknown_revoked_and_malformed_keys_resolve_to_nothing(
    database_urls: DatabaseUrls, database: Database, tenants: Tenants
) -> None:
    issued = await create_api_key(database_urls.admin_url, "tenant-b", actor="t")
    assert await authenticate(database, generate_key()[0]) is None
    assert await authenticate(database, "not a key") is None
    assert await authenticate(database, issued.key + "x") is None
    async with database.transaction(tenants.b) as conn:
        await repository.soft_delete(conn, "api_keys", issued.key_id, expected_version=1, actor="t")
    assert await authenticate(database, issued.key) is None


async def test_a_key_for_an_unknown_tenant(database_urls: DatabaseUrls) -> None:
    with pytest.raises(TenantNotFound, match="no tenant named 'ghost'"):
        await create_api_key(database_urls.admin_url, "ghost", actor="t")


async def test_authenticate_function_is_not_public(database_urls: DatabaseUrls) -> None:
    async with await psycopg.AsyncConnection.connect(database_urls.admin_url) as conn:
        cur = await conn.execute(
            "SELECT has_function_privilege('public', 'adbm_authenticate(bytea)', 'EXECUTE'),"
            " p.prosecdef, p.proconfig FROM pg_proc p WHERE p.proname = 'adbm_authenticate'"
        )
        assert await cur.fetchone() == (False, True, ["search_path=pg_catalog, public"])


def test_cli_actor_names_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "ops")
    assert admin.cli_actor() == "cli:ops"

    def nobody() -> str:
        raise OSError("no user")

    monkeypatch.setattr(getpass, "getuser", nobody)
    assert admin.cli_actor() == "cli:unknown"
