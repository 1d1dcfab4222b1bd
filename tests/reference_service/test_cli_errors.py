"""Expected errors of `adbm-service`, run as a process: one line naming what to fix, exit
code 2, never a traceback."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.reference_service.cli_process import one_error_line, run_cli
from tests.reference_service.conftest import (
    DatabaseUrls,
    conninfo,
    create_scratch_database,
    drop_scratch,
)

CURSOR_SECRET = "a-test-cursor-secret-of-at-least-32-characters"


def test_a_policy_that_is_not_json() -> None:
    line = one_error_line(run_cli("config", ADBM_POLICY='{"version": 1,\n  "rate_limit": }'))
    assert line.startswith("error: ADBM_POLICY: not valid JSON: Expecting value")
    assert line.endswith("at line 2, column 17")


def test_a_policy_of_another_version() -> None:
    line = one_error_line(run_cli("config", ADBM_POLICY=json.dumps({"version": 2})))
    assert line == "error: ADBM_POLICY: version: Input should be 1 (got 2)"


def test_a_policy_error_names_its_place_in_the_document() -> None:
    policy = {"rate_limit": {"routes": [{"path": "/api/v2/orders", "requests": 0}]}}
    line = one_error_line(run_cli("config", ADBM_POLICY=json.dumps(policy)))
    assert line == (
        "error: ADBM_POLICY: rate_limit.routes[0].requests:"
        " Input should be greater than or equal to 1 (got 0)"
    )


@pytest.fixture
async def scratch_database() -> AsyncIterator[str]:
    name = f"adbm_test_{uuid.uuid4().hex}"
    await create_scratch_database(name)
    yield name
    await drop_scratch(name, [])


def test_migrate_when_the_app_role_is_the_admin(scratch_database: str) -> None:
    line = one_error_line(
        run_cli(
            "migrate", "--app-role", "postgres", ADBM_ADMIN_DATABASE_URL=conninfo(scratch_database)
        )
    )
    assert line.startswith("error: the app role postgres must not be the migrating admin")


def test_migrate_when_the_database_url_is_the_admin(scratch_database: str) -> None:
    """The default shape of the mistake: both URLs name the superuser."""
    admin = conninfo(scratch_database)
    line = one_error_line(
        run_cli("migrate", ADBM_ADMIN_DATABASE_URL=admin, ADBM_DATABASE_URL=admin)
    )
    assert "must not be the migrating admin" in line


def test_serve_refuses_a_superuser(database_urls: DatabaseUrls) -> None:
    line = one_error_line(
        run_cli(
            "serve",
            ADBM_DATABASE_URL=database_urls.admin_url,
            ADBM_CURSOR_SECRET=CURSOR_SECRET,
            ADBM_HTTP_PORT="1",  # never reached: it must refuse before binding
        )
    )
    assert line == (
        "error: refusing to serve: database role postgres is a superuser,"
        " which bypasses row-level security"
    )


def test_serve_refuses_the_development_cursor_key_outside_development(
    database_urls: DatabaseUrls,
) -> None:
    line = one_error_line(
        run_cli("serve", ADBM_DATABASE_URL=database_urls.app_url, ADBM_HTTP_PORT="1")
    )
    assert line.startswith("error: refusing to serve: ADBM_CURSOR_SECRET is not set")
    assert "ADBM_ENVIRONMENT=development" in line


def test_an_unknown_environment_is_refused() -> None:
    line = one_error_line(run_cli("config", ADBM_ENVIRONMENT="staging"))
    assert line.startswith("error: ADBM_ENVIRONMENT: Input should be 'production' or 'development'")


def test_an_admin_url_that_is_not_a_uri_is_not_echoed() -> None:
    line = one_error_line(run_cli("tenants", "list", ADBM_ADMIN_DATABASE_URL="host=db password"))
    assert line == "error: ADBM_ADMIN_DATABASE_URL is not a libpq connection URI"


def test_admin_commands_before_the_first_migrate(scratch_database: str) -> None:
    line = one_error_line(
        run_cli("tenants", "list", ADBM_ADMIN_DATABASE_URL=conninfo(scratch_database))
    )
    assert line == (
        'error: relation "public.tenants" does not exist: the database is not migrated yet'
        " (run adbm-service migrate)"
    )


def test_serve_refuses_a_database_url_that_is_not_a_uri() -> None:
    line = one_error_line(
        run_cli("serve", ADBM_DATABASE_URL="nonsense", ADBM_CURSOR_SECRET=CURSOR_SECRET)
    )
    assert line == "error: refusing to serve: ADBM_DATABASE_URL is not a libpq connection URI"
