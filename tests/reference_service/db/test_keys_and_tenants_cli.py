"""`adbm-service tenants list`, `keys list` and `keys revoke`, run as processes against a real
database; a revoked key is refused from its next lookup on."""

from __future__ import annotations

import asyncio

from reference_service.config import Settings
from reference_service.db.admin import Principal, authenticate
from reference_service.db.pool import Database
from tests.reference_service.cli_process import run_cli
from tests.reference_service.conftest import DatabaseUrls


def _ok(*args: str, admin_url: str) -> str:
    result = run_cli(*args, ADBM_ADMIN_DATABASE_URL=admin_url)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _resolve(urls: DatabaseUrls, key: str) -> Principal | None:
    async def resolve() -> Principal | None:
        async with Database(Settings(database_url=urls.app_url, db_pool_min_size=0)) as db:
            return await authenticate(db, key)

    return asyncio.run(resolve())


def _rows(table: str) -> list[list[str]]:
    """The lines of a printed table, split into cells (no cell here contains two spaces)."""
    header, *rows = table.splitlines()
    assert header.split()[0] == "ID"
    return [[cell.strip() for cell in row.split("  ") if cell.strip()] for row in rows]


def test_tenants_list(database_urls: DatabaseUrls) -> None:
    admin = database_urls.admin_url
    acme = _ok("tenants", "create", "acme", admin_url=admin).strip()
    globex = _ok("tenants", "create", "globex", admin_url=admin).strip()
    _ok("keys", "create", "--tenant", "acme", admin_url=admin)
    _ok("keys", "create", "--tenant", "acme", "--name", "ci", admin_url=admin)
    rows = _rows(_ok("tenants", "list", admin_url=admin))
    assert [(r[0], r[1], r[2]) for r in rows] == [(acme, "acme", "2"), (globex, "globex", "0")]


def test_keys_list_and_revoke(database_urls: DatabaseUrls) -> None:
    admin = database_urls.admin_url
    _ok("tenants", "create", "acme", admin_url=admin)
    _ok("tenants", "create", "globex", admin_url=admin)
    key = _ok("keys", "create", "--tenant", "acme", "--name", "ci", admin_url=admin).strip()
    other = _ok("keys", "create", "--tenant", "globex", admin_url=admin).strip()
    prefix = key[: len("adbm_") + 8]
    assert _resolve(database_urls, key) is not None

    listed = _ok("keys", "list", admin_url=admin)
    assert key not in listed and other not in listed
    rows = _rows(listed)
    assert [(r[1], r[2], r[3], r[5]) for r in rows] == [
        ("acme", "ci", prefix, "active"),
        ("globex", "default", other[: len("adbm_") + 8], "active"),
    ]
    key_id = rows[0][0]

    revoked = _ok("keys", "revoke", prefix, admin_url=admin)
    assert revoked == f"revoked API key 'ci' ({prefix}, id {key_id}) of tenant 'acme'\n"
    assert _resolve(database_urls, key) is None
    assert _resolve(database_urls, other) is not None

    (row,) = _rows(_ok("keys", "list", "--tenant", "acme", admin_url=admin))
    assert row[0] == key_id and row[5].startswith("revoked ")
    assert _rows(_ok("tenants", "list", admin_url=admin))[0][2] == "0"

    again = run_cli("keys", "revoke", key_id, ADBM_ADMIN_DATABASE_URL=admin)
    assert again.returncode == 1
    assert again.stderr == f"error: no live API key with id or prefix {key_id!r}\n"


def test_keys_list_of_an_unknown_tenant(database_urls: DatabaseUrls) -> None:
    result = run_cli(
        "keys", "list", "--tenant", "ghost", ADBM_ADMIN_DATABASE_URL=database_urls.admin_url
    )
    assert result.returncode == 1
    assert result.stderr == "error: no tenant named 'ghost'\n"
