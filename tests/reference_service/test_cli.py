"""`adbm-service migrate`, `tenants create` and `keys create` against a real database."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reference_service import cli
from reference_service.config import Settings
from reference_service.db.admin import KEY_PATTERN, Principal, authenticate
from reference_service.db.migrate import migrations
from reference_service.db.pool import Database
from tests.reference_service.conftest import (
    DatabaseUrls,
    conninfo,
    create_scratch_database,
    drop_scratch,
)


@pytest.fixture
async def scratch() -> AsyncIterator[tuple[str, str]]:
    """An empty database and the name of an app role to create in it."""
    suffix = uuid.uuid4().hex
    name, role = f"adbm_test_{suffix}", f"adbm_app_{suffix}"
    await create_scratch_database(name)
    yield name, role
    await drop_scratch(name, [role])


def test_migrate(
    scratch: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, role = scratch
    monkeypatch.setenv(cli.ADMIN_URL_ENV, conninfo(name))
    monkeypatch.setenv("APP_PW", "s3cret")
    assert cli.main(["migrate", "--app-role", role, "--app-password-env", "APP_PW"]) == 0
    out = capsys.readouterr().out
    assert f"changed: created role {role}" in out
    assert "changed: ALTER TABLE" in out
    for migration in migrations():
        assert f"applied: {migration.version}" in out
    assert "s3cret" not in out

    assert cli.main(["migrate", "--app-role", role, "--app-password-env", "APP_PW"]) == 0
    assert capsys.readouterr().out == "migrations: none pending\n"


def test_migrate_takes_the_app_role_from_the_database_url(
    scratch: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, role = scratch
    monkeypatch.setenv("ADBM_DATABASE_URL", f"postgresql://{role}:pw@db.example/{name}")
    assert cli.main(["migrate", "--admin-url", conninfo(name)]) == 0
    assert f"created role {role}" in capsys.readouterr().out


def test_migrate_needs_an_admin_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(cli.ADMIN_URL_ENV, raising=False)
    monkeypatch.delenv("ADBM_ENVIRONMENT", raising=False)  # development would default it
    assert cli.main(["migrate", "--app-role", "app"]) == 2
    assert f"set {cli.ADMIN_URL_ENV} or pass --admin-url" in capsys.readouterr().err


def test_migrate_reports_a_missing_password_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    code = cli.main(
        ["migrate", "--admin-url", "x", "--app-role", "app", "--app-password-env", "NO_SUCH_VAR"]
    )
    assert code == 2
    assert "NO_SUCH_VAR is not set" in capsys.readouterr().err


def test_migrate_connection_failure_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://admin:topsecret@127.0.0.1:1/adbm?connect_timeout=2"
    assert cli.main(["migrate", "--admin-url", url, "--app-role", "app"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot use the database as the admin:")
    assert "topsecret" not in err


def test_tenants_and_keys(
    database_urls: DatabaseUrls,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(cli.ADMIN_URL_ENV, database_urls.admin_url)
    assert cli.main(["tenants", "create", "acme"]) == 0
    tenant_id = uuid.UUID(capsys.readouterr().out.strip())

    assert cli.main(["tenants", "create", "acme"]) == 1
    assert "a tenant named 'acme' already exists" in capsys.readouterr().err

    assert cli.main(["keys", "create", "--tenant", "acme", "--name", "ci"]) == 0
    captured = capsys.readouterr()
    key = captured.out.strip()
    assert KEY_PATTERN.match(key)
    assert "shown only this once" in captured.err
    assert key not in captured.err

    async def resolve() -> Principal | None:
        async with Database(Settings(database_url=database_urls.app_url, db_pool_min_size=0)) as db:
            return await authenticate(db, key)

    principal = asyncio.run(resolve())
    assert principal is not None and principal.tenant_id == tenant_id

    assert cli.main(["keys", "create", "--tenant", "ghost"]) == 1
    assert "no tenant named 'ghost'" in capsys.readouterr().err


def test_serve_answers_health_over_real_http(database_urls: Any) -> None:
    """`adbm-service serve` as the pod runs it: a real process on a real port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    env = {
        **os.environ,
        "ADBM_DATABASE_URL": database_urls.app_url,
        "ADBM_HTTP_PORT": str(port),
        "ADBM_METRICS_PORT": str(metrics_port),
        # As the operator renders it: a key of its own, in the default (production) environment.
        "ADBM_CURSOR_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
    }
    env.pop("ADBM_ENVIRONMENT", None)
    exe = Path(sys.executable).parent / "adbm-service"
    process = subprocess.Popen(
        [str(exe), "serve", "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    assert r.status == 200
                    assert "max_size" in r.read().decode()
                    break
            except OSError:
                assert time.monotonic() < deadline, "adbm-service serve did not answer"
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=30)
