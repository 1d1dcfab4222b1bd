"""`adbm-service migrate --create-database`: a developer's first run creates the database."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from reference_service import cli
from reference_service.db.migrate import create_database
from tests.reference_service.conftest import conninfo, drop_scratch


def test_migrate_creates_the_database_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    suffix = uuid.uuid4().hex
    name, role = f"adbm_test_{suffix}", f"adbm_app_{suffix}"
    monkeypatch.setenv(cli.ADMIN_URL_ENV, conninfo(name))
    try:
        assert cli.main(["migrate", "--create-database", "--app-role", role]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"changed: created database {name}\n")
        assert f"changed: created role {role}" in out
        assert cli.main(["migrate", "--create-database", "--app-role", role]) == 0
        assert capsys.readouterr().out == "migrations: none pending\n"
    finally:
        asyncio.run(drop_scratch(name, [role]))


def test_create_database_needs_a_database_name() -> None:
    with pytest.raises(ValueError, match="names no database"):
        asyncio.run(create_database("postgresql://postgres@127.0.0.1:5432"))
