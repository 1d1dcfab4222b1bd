"""The defaults are safe where they are wrong: production-safe unless told `development`, and
never a database role that row-level security does not bind."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from reference_service.config import (
    DEVELOPMENT_ADMIN_URL,
    Settings,
    serving_problems,
)


@pytest.fixture(autouse=True)
def _no_adbm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ADBM_ENVIRONMENT", "ADBM_DATABASE_URL", "ADBM_ADMIN_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ADBM_CURSOR_SECRET", raising=False)


def test_the_default_database_role_is_the_app_role_not_the_superuser() -> None:
    url = conninfo_to_dict(Settings().database_url.get_secret_value())
    assert url["user"] == "adbm_app"
    assert url["dbname"] == conninfo_to_dict(DEVELOPMENT_ADMIN_URL)["dbname"]
    assert conninfo_to_dict(DEVELOPMENT_ADMIN_URL)["user"] != url["user"]


def test_the_default_environment_is_production() -> None:
    settings = Settings()
    assert settings.environment == "production"
    assert settings.admin_url() is None
    (problem,) = serving_problems(settings)
    assert problem.startswith("ADBM_CURSOR_SECRET is not set")


def test_development_accepts_the_development_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADBM_ENVIRONMENT", "development")
    settings = Settings()
    assert serving_problems(settings) == []
    assert settings.admin_url() == DEVELOPMENT_ADMIN_URL


def test_a_cursor_secret_of_its_own_may_serve_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADBM_CURSOR_SECRET", "k" * 44)
    assert serving_problems(Settings()) == []


def test_an_explicit_admin_url_wins_in_every_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADBM_ADMIN_DATABASE_URL", "postgresql://owner@db/shop")
    assert Settings().admin_url() == "postgresql://owner@db/shop"
    assert Settings(environment="development").admin_url() == "postgresql://owner@db/shop"
